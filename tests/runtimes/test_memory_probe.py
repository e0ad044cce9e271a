"""optkit.runtimes.memory_probe: a fresh process's peak resident memory, per runtime and batch size."""
from __future__ import annotations

import pytest

from optkit.core.errors import OptkitError
from optkit.runtimes import memory_probe


def test_numpy_probe_is_monotonic_in_allocated_size():
    small, large = (memory_probe.probe("numpy", None, allocate_mb=mb) for mb in (20, 220))
    # the 200 MB more the second process allocated show up in its peak, and not in its start
    assert large.peak_rss_bytes - small.peak_rss_bytes > 150e6
    assert abs(large.rss_start_bytes - small.rss_start_bytes) < 20e6
    for p in (small, large):
        assert p.rss_start_bytes <= p.rss_before_load_bytes <= p.peak_rss_bytes
        assert p.peak_mb == pytest.approx(p.peak_rss_bytes / 1e6)
    assert large.model_mb > 200


def test_probe_sizes_one_process_peaks_never_decrease():
    rows = memory_probe.probe_sizes("numpy", None, [32, 1, 8], allocate_mb=5)
    assert [r.batch_size for r in rows] == [1, 8, 32]  # smallest first
    assert all(a.peak_rss_bytes <= b.peak_rss_bytes for a, b in zip(rows, rows[1:]))
    assert len({r.rss_start_bytes for r in rows}) == 1  # one process
    assert set(rows[0].to_dict()) >= {"peak_mb", "runtime_mb", "model_mb", "kind", "batch_size"}


def test_unknown_kind_names_the_parameter_and_the_fix():
    with pytest.raises(OptkitError) as e:
        memory_probe.probe("pytorch", "model.pt")
    assert e.value.parameter == "kind" and "onnxruntime" in e.value.fix


def test_missing_file_names_the_parameter_and_the_fix(tmp_path):
    with pytest.raises(OptkitError) as e:
        memory_probe.probe("onnxruntime", tmp_path / "absent.onnx")
    assert e.value.parameter == "artifact_path" and "Fix:" in str(e.value)


def test_wrong_suffix_points_to_the_kind_that_loads_it(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"x")
    with pytest.raises(OptkitError) as e:
        memory_probe.probe("onnxruntime", f)
    assert e.value.parameter == "artifact_path" and "'tflite'" in e.value.fix
    with pytest.raises(OptkitError) as e:
        memory_probe.probe("saved_model", tmp_path)
    assert "saved_model.pb" in e.value.problem


def test_torch_program_needs_an_input_shape(tmp_path):
    f = tmp_path / "m.pt2"
    f.write_bytes(b"x")
    with pytest.raises(OptkitError) as e:
        memory_probe.probe("torch_export", f)
    assert e.value.parameter == "input_shape"


def test_a_file_that_does_not_load_reports_the_child_error(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    f = tmp_path / "broken.onnx"
    f.write_bytes(b"not a model")
    with pytest.raises(OptkitError) as e:
        memory_probe.probe("onnxruntime", f)
    assert "probe process failed" in e.value.problem


def test_onnxruntime_probe_counts_the_runtime_and_grows_with_the_batch(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    onnx = pytest.importorskip("onnx", reason="onnx is not installed")
    from onnx import TensorProto, helper

    # y = x @ W with a 64 x 4096 weight: each batch row makes a 16 KB output
    w = helper.make_tensor("W", TensorProto.FLOAT, [64, 4096], [0.5] * (64 * 4096))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4096])], [w])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    small, large = memory_probe.probe_sizes("onnxruntime", path, [1, 4096])
    assert small.runtime_mb > 5  # importing onnxruntime is not free
    assert large.peak_rss_bytes - small.peak_rss_bytes > 40e6  # 4096 x 4096 x 4 bytes = 67 MB of output


def test_probe_many_collects_rows_and_failures_and_plots(tmp_path):
    items = [("small", "numpy", None, None), ("missing", "onnxruntime", tmp_path / "absent.onnx", None)]
    frame, failed = memory_probe.probe_many(items, [1, 4], workers=2)
    assert list(frame.runtime) == ["small", "small"] and list(frame.batch_size) == [1, 4]
    assert set(failed) == {"missing"} and "no such file" in failed["missing"]
    fig = memory_probe.plot_probes(frame)
    assert len(fig.axes) == 2 and all(len(ax.patches) == 3 for ax in fig.axes)  # three stacked parts per bar
    with pytest.raises(OptkitError):
        memory_probe.plot_probes(frame.iloc[:0])
