"""ONNX Runtime's profiler read per node and per operator type (optkit.runtimes.onnxrt.profiling)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optkit.core.errors import OptkitError
from optkit.runtimes import onnxrt as ox


def _tiny(path):
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: five operator types, named nodes."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, .3, (8, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, .3, (8, 4)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="gemm")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w, fc])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_per_op_times_cover_every_operator_and_add_up_to_at_most_the_call(tmp_path):
    path = _tiny(tmp_path / "tiny.onnx")
    feed = {"x": np.random.default_rng(1).random((4, 3, 16, 16), dtype=np.float32)}
    ops = ox.op_times(path, feed, runs=5, threads=1, optimization="disable")
    assert set(ops) == {"Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"}
    assert all(ms > 0 for ms in ops.values()) and list(ops.values()) == sorted(ops.values(), reverse=True)
    nodes = ox.node_times(path, feed, runs=5, threads=1, optimization="disable")
    assert set(nodes) == {"conv", "relu", "pool", "flatten", "gemm"} and nodes["conv"][0] == "Conv"
    prof = ox.profile(path, [feed, feed], runs=6, threads=1)  # fused graph: Conv+Relu run as one kernel
    assert prof.runs == 6 and prof.wall_ms > 0
    assert 0 < sum(prof.ops.values()) <= prof.wall_ms
    assert sum(ms for _, ms in prof.nodes.values()) == pytest.approx(sum(prof.ops.values()))
    assert "Relu" not in prof.ops and prof.top(1)[0][0] in ("Conv", "FusedConv")


def test_bad_feeds_and_settings_are_clear_errors(tmp_path):
    path = _tiny(tmp_path / "tiny.onnx")
    with pytest.raises(OptkitError, match="^feeds="):
        ox.profile(path, [], runs=1)
    with pytest.raises(OptkitError, match="^runs="):
        ox.profile(path, {"x": np.zeros((1, 3, 16, 16), np.float32)}, runs=0)
    with pytest.raises(OptkitError, match="could not be profiled"):
        ox.profile(path, {"x": np.zeros((1, 5), np.float32)}, runs=1)


def test_a_session_can_be_told_not_to_spin_and_reads_it_back(tmp_path):
    """Interleaved timing turns ORT's spinning workers off; ORT's own default (spinning) stays the default."""
    from optkit.runtimes import onnxrt

    path = Path(__file__).resolve().parents[2] / "data" / "capstone" / "reference_cnn.onnx"
    assert onnxrt.session_options_of(onnxrt.session(path, threads=1))["spinning"] is True
    assert onnxrt.session_options_of(onnxrt.session(path, threads=1, spinning=False))["spinning"] is False
