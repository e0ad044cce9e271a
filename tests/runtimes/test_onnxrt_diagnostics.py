"""optkit.runtimes.onnxrt diagnostics: resolved thread counts, per-node quantization error and
excluding the worst nodes, the transformer optimizer, and the comparison plots.

Small graphs built here (no training), and the bundled capstone text transformer. No wall-clock
assertions.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from optkit.core import verify
from optkit.core.errors import OptkitError
from optkit.core.record import Record
from optkit.runtimes import onnxrt as ox

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outlier_mlp(tmp_path_factory):
    """x[n, 16] -> MatMul -> Relu -> Mul (channel 0 x 300: an outlier) -> MatMul -> y[n, 8]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, 8)).astype(np.float32)
    gain = np.ones(32, np.float32)
    gain[0] = 300.0
    w2[0] /= 300.0  # channel 0 contributes as much as any other, but its range starves the rest
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "gain"], ["s"], name="outlier"),
             helper.make_node("MatMul", ["s", "w2"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(gain, "gain")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    onnx.save(model, str(path))
    x = rng.normal(0, 1, (256, 16)).astype(np.float32)
    return path, x


def test_resolved_threads_counts_what_was_asked():
    if not sys.platform.startswith("linux"):
        pytest.skip("threads are listed from /proc/self/task (Linux only)")
    model = ROOT / "data" / "capstone" / "reference_cnn.onnx"
    one = ox.resolved_threads(model, threads=1)
    two = ox.resolved_threads(model, threads=2)
    assert (one["requested"], one["threads"], one["pinned"]) == (1, 1, [])
    assert (two["requested"], two["threads"]) == (2, 2)
    default = ox.resolved_threads(model)
    assert default["requested"] == 0 and default["threads"] >= 1
    assert default["available_cores"] >= 1
    with pytest.raises(OptkitError):
        ox.resolved_threads(model, threads=0)


def test_excluding_the_worst_node_raises_sqnr(outlier_mlp, tmp_path):
    path, x = outlier_mlp
    calib, held_out = [x[:64], x[64:128]], x[128:]
    quant = ox.quantize_dynamic(path, tmp_path / "q.onnx", preprocess=False)
    rows = ox.node_errors(path, quant, calib)
    by_name = {r.name: r for r in rows}
    assert by_name["first"].quantized and by_name["second"].quantized and not by_name["relu"].quantized
    assert by_name["second"].input_db < by_name["first"].input_db  # the outlier starves the second MatMul
    worst = ox.worst_nodes(path, quant, calib, top=1)
    assert worst == ["second"]
    kept = ox.quantize_dynamic(path, tmp_path / "q_kept.onnx", preprocess=False, nodes_to_exclude=worst)
    ref = ox.Runner(path)(held_out)
    before = verify.sqnr(ref, ox.Runner(quant)(held_out))
    after = verify.sqnr(ref, ox.Runner(kept)(held_out))
    assert after > before + 3.0, (before, after)
    assert ox.inspect(kept).op_counts.get("MatMul", 0) == 1  # "second" stayed float
    with pytest.raises(OptkitError):
        ox.worst_nodes(path, quant, calib, by="output")
    with pytest.raises(OptkitError):
        ox.worst_nodes(path, quant, calib, top=0)


def test_static_percentile_is_checked(outlier_mlp, tmp_path):
    path, x = outlier_mlp
    with pytest.raises(OptkitError, match="percentile"):
        ox.quantize_static(path, tmp_path / "p.onnx", [x[:64]], method="percentile", percentile=120.0,
                           preprocess=False)
    low = ox.quantize_static(path, tmp_path / "p99.onnx", [x[:64], x[64:128]], method="percentile",
                             percentile=99.0, preprocess=False)
    assert verify.sqnr(ox.Runner(path)(x[128:]), ox.Runner(low)(x[128:])) > 5.0


def test_optimize_transformer_keeps_the_outputs(tmp_path):
    model = ROOT / "data" / "capstone" / "text_transformer.onnx"
    ids = np.load(ROOT / "data" / "capstone" / "rotten_tomatoes_512.npz")["x"][:16]
    ids = np.minimum(ids, 1999)
    fused, counts = ox.optimize_transformer(model, tmp_path / "fused.onnx", num_heads=4, hidden_size=48)
    assert set(counts) == set(ox.FUSED_OPS)
    assert all(isinstance(b, int) and isinstance(a, int) for b, a in counts.values())
    parity = verify.compare_outputs(ox.Runner(model)(ids), ox.Runner(fused)(ids))
    assert parity.max_abs < 1e-3
    with pytest.raises(OptkitError):
        ox.optimize_transformer(model, tmp_path / "x.onnx", model_type="llama")


def test_plots_return_closed_figures(outlier_mlp, tmp_path):
    import matplotlib.pyplot as plt

    path, x = outlier_mlp
    quant = ox.quantize_dynamic(path, tmp_path / "q.onnx", preprocess=False)
    fig = ox.plot_node_errors(ox.node_errors(path, quant, [x[:64]]), top=5)
    assert fig.axes and fig.number not in plt.get_fignums()
    records = [Record(name=n, batch_size=32, latency_ms=ms, p95_ms=ms * 1.2) for n, ms in [("a", 2.0), ("b", 1.0)]]
    fig = ox.plot_records(records, baseline="a", title="t")
    assert len(fig.axes[0].patches) == 2
    with pytest.raises(OptkitError):
        ox.plot_records([])
