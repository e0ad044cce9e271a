"""optkit.runtimes.onnxrt: export round-trips, dynamic batch, sessions, graph optimization, ORT quantization.

One trained reference CNN is exported once per module; every check runs on real Fashion-MNIST
images. No wall-clock assertions: speed is measured in notebook 06, not here.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optkit.data import models
from optkit.runtimes import onnxrt as ox
from optkit.core.errors import OptkitError
from optkit.core.verify import ParityError


@pytest.fixture(scope="module")
def cnn():
    return models.pretrained("small_cnn")


@pytest.fixture(scope="module")
def test_xy(fmnist):
    sub = fmnist.test.subset(512)
    return np.array(sub.x), np.array(sub.y)


@pytest.fixture(scope="module")
def calib(fmnist):
    x = np.array(fmnist.calib.x[:256])
    return [x[i:i + 64] for i in range(0, len(x), 64)]


@pytest.fixture(scope="module")
def exported(cnn, fmnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return ox.export(cnn, fmnist.example_batch(4), folder / "cnn.onnx")


def _accuracy(fn, x, y):
    return float(np.mean(np.argmax(fn(x), axis=1) == y))


# --------------------------------------------------------------------------- export

def test_export_round_trip_parity_on_real_images(cnn, exported, test_xy):
    assert exported.exporter == "dynamo" and exported.opset >= 17 and exported.dynamic_batch
    assert exported.parity.max_abs <= 1e-4 and exported.path.is_file()
    assert "dynamo" in repr(exported)
    x, _ = test_xy
    parity = ox.verify(cnn, exported.path, x, atol=1e-4, min_top1=1.0, batch_size=128)
    assert parity.max_abs <= 1e-4 and parity.top1_agreement == 1.0 and parity.sqnr_db > 80


@pytest.mark.parametrize("batch", [1, 7, 33])
def test_dynamic_batch_works_at_unseen_sizes(cnn, exported, test_xy, batch):
    x = test_xy[0][:batch]
    out = ox.Runner(exported.path, threads=1)(x)
    with torch.inference_mode():
        ref = cnn(torch.from_numpy(x.copy())).numpy()
    assert out.shape == (batch, 10)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_inspect_reports_the_graph(exported):
    info = ox.inspect(exported.path)
    assert [s.name for s in info.inputs] == ["x"] and info.inputs[0].dtype == "float32"
    assert info.inputs[0].shape == ("batch", 1, 28, 28)
    assert info.outputs[0].shape == ("batch", 10)
    assert sum(info.op_counts.values()) == info.node_count and info.op_counts["Conv"] == 2
    assert info.size_bytes == exported.path.stat().st_size and not info.has_external_data
    assert "opset" in repr(info)
    assert ox.check(exported.path).node_count == info.node_count


def test_external_data_and_overwrite(cnn, fmnist, tmp_path, test_xy):
    res = ox.export(cnn, fmnist.example_batch(2), tmp_path / "ext.onnx", external_data=True, check=False)
    assert (tmp_path / "ext.onnx.data").is_file()
    info = ox.inspect(res.path)
    assert info.has_external_data and info.size_bytes > res.path.stat().st_size
    x = test_xy[0][:16]
    ox.verify(cnn, res.path, x)
    with pytest.raises(OptkitError, match="already exists"):
        ox.export(cnn, fmnist.example_batch(2), tmp_path / "ext.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.onnx", "ext.onnx.data"]  # nothing left behind


class _Branchy(torch.nn.Module):
    """Data-dependent control flow: torch.export refuses it, the legacy tracer records one branch."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class _FixedBatch(torch.nn.Module):
    """A tensor built with a literal batch size: the exporter silently fixes the batch at 2."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) + torch.zeros(2, 3)


def test_legacy_fallback_records_why(tmp_path):
    res = ox.export(_Branchy(), torch.rand(3, 4), tmp_path / "b.onnx")
    assert res.exporter == "legacy"
    joined = " ".join(res.warnings)
    assert "dynamo exporter failed" in joined and "legacy TorchScript-based ONNX export" in joined
    assert "TracerWarning" in joined
    with pytest.raises(OptkitError, match="fallback=True"):
        ox.export(_Branchy(), torch.rand(3, 4), tmp_path / "c.onnx", fallback=False)


def test_fixed_batch_is_caught(tmp_path):
    with pytest.raises(ParityError, match="batch dimension came out fixed"):
        ox.export(_FixedBatch(), torch.rand(2, 4), tmp_path / "f.onnx")
    res = ox.export(_FixedBatch(), torch.rand(2, 4), tmp_path / "g.onnx", dynamic_batch=False)
    assert not res.dynamic_batch and ox.inspect(res.path).inputs[0].shape == (2, 4)


def test_export_bad_arguments(cnn, tmp_path):
    with pytest.raises(OptkitError, match=".onnx"):
        ox.export(cnn, torch.rand(2, 1, 28, 28), tmp_path / "m.pt")
    with pytest.raises(OptkitError, match="not a torch.Tensor"):
        ox.export(cnn, np.zeros((2, 1, 28, 28), np.float32), tmp_path / "m.onnx")
    with pytest.raises(OptkitError, match="opset"):
        ox.export(cnn, torch.rand(2, 1, 28, 28), tmp_path / "m.onnx", opset=3)


# --------------------------------------------------------------------------- bad files and inputs

def test_not_onnx_and_checker_failures(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    for fn in (ox.inspect, ox.session, ox.Runner, ox.check):
        with pytest.raises(OptkitError, match="junk.onnx"):
            fn(junk)
    with pytest.raises(OptkitError, match="no such file"):
        ox.session(tmp_path / "missing.onnx")
    # a graph whose node reads a tensor nobody defines
    node = helper.make_node("Relu", ["nowhere"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(bad))
    with pytest.raises(OptkitError, match="checker"):
        ox.check(bad)


def test_runner_rejects_wrong_inputs(exported):
    run = ox.Runner(exported.path)
    good = np.zeros((2, 1, 28, 28), np.float32)
    assert run(good).shape == (2, 10) and run({"x": good}).shape == (2, 10)
    assert run(torch.from_numpy(good)).shape == (2, 10)
    assert len(run.run_all(good)) == 1
    with pytest.raises(OptkitError, match="rank 3") as e:
        run(good[0])
    assert "'x'" in str(e.value)
    with pytest.raises(OptkitError, match="float32"):
        run(good.astype(np.float64))
    with pytest.raises(OptkitError, match="dimension 2"):
        run(np.zeros((2, 1, 27, 28), np.float32))
    with pytest.raises(OptkitError, match="takes 1 inputs"):
        run(good, good)
    with pytest.raises(OptkitError, match="not inputs"):
        run({"image": good})
    assert "x: float32[batch, 1, 28, 28]" in repr(run)


# --------------------------------------------------------------------------- sessions

def test_session_options_are_applied(exported):
    sess = ox.session(exported.path, threads=2, inter_op_threads=2, optimization="basic",
                      execution_mode="parallel", enable_mem_pattern=False, enable_cpu_mem_arena=False,
                      providers=["CPUExecutionProvider"])
    opts = ox.session_options_of(sess)
    assert opts == {"threads": 2, "inter_op_threads": 2, "optimization": "basic", "execution_mode": "parallel",
                    "enable_mem_pattern": False, "enable_cpu_mem_arena": False,
                    "providers": ["CPUExecutionProvider"], "spinning": True}
    # with one inter-op thread there is nothing to run in parallel: ORT falls back to sequential
    demoted = ox.session(exported.path, inter_op_threads=1, execution_mode="parallel")
    assert ox.session_options_of(demoted)["execution_mode"] == "sequential"
    default = ox.session_options_of(ox.session(exported.path))
    assert default["optimization"] == "all" and default["providers"][-1] == "CPUExecutionProvider"
    assert ox.default_providers()[-1] == "CPUExecutionProvider"


def test_session_bad_options(exported):
    with pytest.raises(OptkitError, match="optimization"):
        ox.session(exported.path, optimization="max")
    with pytest.raises(OptkitError, match="threads"):
        ox.session(exported.path, threads=0)
    with pytest.raises(OptkitError, match="not in this onnxruntime build"):
        ox.session(exported.path, providers=["NoSuchExecutionProvider"])


# --------------------------------------------------------------------------- verify

def test_verify_fails_loudly(cnn, test_xy):
    x = test_xy[0][:64]

    def noisy(arr):
        with torch.inference_mode():
            return cnn(torch.from_numpy(arr.copy())).numpy() + 1e-3

    with pytest.raises(ParityError, match="max_abs"):
        ox.verify(cnn, noisy, x)
    parity = ox.verify(cnn, noisy, x, atol=2e-3, max_rel=1.0, min_sqnr_db=30)
    assert parity.top1_agreement == 1.0
    with pytest.raises(ParityError, match="max_rel"):
        ox.verify(cnn, noisy, x, atol=1.0, max_rel=1e-6)
    with pytest.raises(OptkitError, match="no examples"):
        ox.verify(cnn, noisy, x[:0])


# --------------------------------------------------------------------------- optimize and simplify

def test_optimize_and_simplify_keep_parity(cnn, exported, tmp_path, test_xy):
    x = test_xy[0][:128]
    before = ox.inspect(exported.path).node_count
    for level in ("basic", "extended"):
        dst = ox.optimize(exported.path, tmp_path / f"{level}.onnx", level=level)
        ox.verify(cnn, ox.Runner(dst, optimization="disable"), x)
    assert ox.inspect(tmp_path / "extended.onnx").node_count < before   # Conv+Relu fused
    assert "FusedConv" in ox.inspect(tmp_path / "extended.onnx").op_counts
    slim = ox.simplify(exported.path, tmp_path / "slim.onnx")
    ox.verify(cnn, slim, x)
    with pytest.raises(OptkitError, match="level"):
        ox.optimize(exported.path, tmp_path / "x.onnx", level="disable")


# --------------------------------------------------------------------------- quantization

def test_static_qdq_within_tolerance_on_real_data(cnn, exported, calib, test_xy, tmp_path):
    x, y = test_xy
    dst = ox.quantize_static(exported.path, tmp_path / "qdq.onnx", calib)
    info = ox.inspect(dst)
    assert info.op_counts.get("QuantizeLinear", 0) > 0 and info.op_counts.get("DequantizeLinear", 0) > 0
    assert ox.inspect(exported.path).size_bytes / info.size_bytes > 3.0
    parity = ox.verify(cnn, dst, x, atol=math.inf, min_top1=0.97, min_sqnr_db=20)
    fp32, int8 = ox.Runner(exported.path), ox.Runner(dst)
    assert _accuracy(int8, x, y) >= _accuracy(fp32, x, y) - 0.02
    assert parity.sqnr_db > 20


def test_static_qoperator_and_layer_errors(cnn, exported, calib, test_xy, tmp_path):
    dst = ox.quantize_static(exported.path, tmp_path / "qop.onnx", calib[:1], quant_format="qoperator")
    assert "QLinearConv" in ox.inspect(dst).op_counts
    ox.verify(cnn, dst, test_xy[0][:256], atol=math.inf, min_top1=0.95)
    pre = ox.preprocess(exported.path, tmp_path / "pre.onnx")
    qdq = ox.quantize_static(pre, tmp_path / "q.onnx", calib[:1], preprocess=False)
    rows = ox.layer_errors(pre, qdq, calib[:1])
    assert rows and all(isinstance(n, str) for n, _ in rows)
    sqnrs = [s for _, s in rows]
    assert sqnrs == sorted(sqnrs) and all(s > 10 for s in sqnrs)


def test_entropy_calibration_differs_from_minmax(exported, calib, tmp_path):
    import onnx

    def activation_scales(path):
        proto = onnx.load(str(path))
        init = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
        return {n.input[0]: float(init[n.input[1]]) for n in proto.graph.node
                if n.op_type == "QuantizeLinear" and n.input[1] in init and init[n.input[1]].size == 1}

    a = activation_scales(ox.quantize_static(exported.path, tmp_path / "mm.onnx", calib[:1]))
    b = activation_scales(ox.quantize_static(exported.path, tmp_path / "en.onnx", calib[:1], method="entropy",
                                             entropy_bins=256))
    assert a.keys() == b.keys()
    assert any(not math.isclose(a[k], b[k], rel_tol=1e-3) for k in a)  # entropy clips: smaller scales
    assert all(b[k] <= a[k] * 1.001 for k in a)


def test_dynamic_quantization_of_linear_layers(tmp_path, fmnist):
    mlp = models.pretrained("mlp")
    x = np.array(fmnist.test.x[:256])
    res = ox.export(mlp, torch.from_numpy(x[:4].copy()), tmp_path / "mlp.onnx")
    dst = ox.quantize_dynamic(res.path, tmp_path / "mlp_dyn.onnx")
    ops = ox.inspect(dst).op_counts
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert ox.inspect(res.path).size_bytes / ox.inspect(dst).size_bytes > 3.0
    ox.verify(mlp, dst, x, atol=math.inf, min_top1=0.97, min_sqnr_db=20)


def test_calibration_errors(exported, tmp_path):
    with pytest.raises(OptkitError, match="no batches"):
        ox.quantize_static(exported.path, tmp_path / "e.onnx", [])
    with pytest.raises(OptkitError, match="no batches"):
        ox.quantize_static(exported.path, tmp_path / "e.onnx", iter(()))
    with pytest.raises(OptkitError, match="iterable of batches"):
        ox.calibration_reader(np.zeros((4, 1, 28, 28), np.float32), ["x"])
    with pytest.raises(OptkitError, match="input names"):
        ox.calibration_reader([np.zeros((4, 2), np.float32)], ["a", "b"])
    with pytest.raises(OptkitError, match="method"):
        ox.quantize_static(exported.path, tmp_path / "e.onnx", [np.zeros((1, 1, 28, 28), np.float32)],
                           method="kl")
    with pytest.raises(OptkitError, match="could not be quantized"):
        ox.quantize_static(exported.path, tmp_path / "e.onnx", [{"x": np.zeros((1, 28, 28), np.float32)}])
    assert not (tmp_path / "e.onnx").exists()
    reader = ox.calibration_reader([np.zeros((1, 1, 28, 28), np.float32)] * 3, ["x"])
    assert len(reader) == 3 and set(reader.get_next()) == {"x"}


def test_u8s8_matmul_saturates_without_vnni():
    a = np.array([[255, 255, 1, 2]], np.uint8)
    w = np.array([[127], [127], [3], [-4]], np.int8)
    assert ox.u8s8_matmul(a, w)[0, 0] == 255 * 254 + 3 - 8
    assert ox.u8s8_matmul(a, w, vnni=False)[0, 0] == 32767 + 3 - 8   # the first pair saturates at int16
    # 7-bit weights (ORT's reduce_range) never saturate
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 33)).astype(np.uint8)
    w = rng.integers(-64, 64, (33, 5)).astype(np.int8)
    np.testing.assert_array_equal(ox.u8s8_matmul(a, w, vnni=False), a.astype(np.int32) @ w.astype(np.int32))
    with pytest.raises(OptkitError, match="uint8"):
        ox.u8s8_matmul(a.astype(np.int8), w)


def test_module_stays_light():
    import subprocess
    import sys

    code = ("import sys, optkit.runtimes.onnxrt, optkit.runtimes.trt_engines; "
            "print(any(m in sys.modules for m in ('tensorflow', 'tensorrt', 'onnxruntime', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_exercise_checkers_accept_references_and_reject_mistakes(capsys):
    from optkit.course.exercises import nb06 as ex

    assert ex.check_parity_metrics(ex.reference_parity_metrics)
    assert ex.check_calibration_reader(ex.reference_calibration_reader())
    assert ex.check_fake_quantize(ex.reference_fake_quantize)

    def rounds_half_up(x, s, z):
        return (np.clip(np.floor(x / s + 0.5) + z, 0, 255) - z) * s

    def unwritten(*args):
        raise NotImplementedError

    from optkit.course.exercises import nb08

    assert nb08.check_profile_shapes(nb08.reference_profile_shapes)
    assert nb08.check_is_symmetric(nb08.reference_is_symmetric)
    assert not nb08.check_is_symmetric(lambda path: True)
    assert not ex.check_fake_quantize(rounds_half_up)
    assert not ex.check_parity_metrics(unwritten)
    assert not ex.check_calibration_reader(lambda x, b, n: iter([x]))
    assert capsys.readouterr().out.count("✗") == 4


def test_export_leaves_no_local_paths_in_the_file(tmp_path):
    """The dynamo exporter records Python stack traces per node; export drops them."""
    import onnx as onnx_lib

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    res = ox.export(model, torch.randn(2, 4), tmp_path / "m.onnx")
    proto = onnx_lib.load(str(res.path))
    keys = {p.key for n in proto.graph.node for p in n.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys
    assert str(Path(__file__).resolve().parents[2]) not in proto.SerializeToString().decode("latin-1")


# --------------------------------------------------------------------------- comparisons (variant.evaluate)

def test_to_variant_goes_through_the_one_measurement_path(cnn, exported, test_xy):
    from optkit.core import report, variant

    x, y = test_xy
    timing = {4: torch.from_numpy(x[:4].copy())}
    ort = ox.to_variant(exported.path, "ORT fp32", threads=1, optimization="extended", inputs=timing)
    assert ort.runtime == ox.RUNTIME and ort.precision == "fp32" and ort.artifact == exported.path
    assert ort.size_bytes == ox.inspect(exported.path).size_bytes
    assert ort.config == {"optimization": "extended", "threads": 1}
    assert isinstance(ort.inputs[4], np.ndarray) and ort.inputs[4].flags.c_contiguous  # converted once, not per call
    eager = variant.Variant("PyTorch fp32 eager", cnn)
    workload = variant.Workload("SmallCNN", "Fashion-MNIST classification", "test (512)")
    records = variant.evaluate([eager, ort], workload, data=(x, y), inputs=timing,
                               convert={"PyTorch fp32 eager": torch.from_numpy}, max_time_s=0.01, rounds=1,
                               progress=False, memory=False)
    by_name = {r.name: r for r in records}
    assert by_name["ORT fp32"].accuracy == by_name["PyTorch fp32 eager"].accuracy == _accuracy(ox.Runner(exported.path), x, y)
    assert by_name["ORT fp32"].parity["top1_agreement"] == 1.0 and by_name["ORT fp32"].parity["sqnr_db"] > 80
    assert by_name["ORT fp32"].extra["artifact"] == str(exported.path)
    assert ox.fastest_source_float(records) == "PyTorch fp32 eager"  # the only float variant outside ORT
    assert report.table(records, baseline=ox.fastest_source_float(records)).loc["PyTorch fp32 eager", "speedup"] == 1.0
    runner = ox.Runner(exported.path)
    with pytest.raises(OptkitError, match="existing Runner"):
        ox.to_variant(runner, "r", threads=2)
    assert ox.to_variant(runner, "r").predict(x[:3]).shape == (3, 10)


def test_fastest_source_float_ignores_ort_and_int8():
    from optkit.core.record import Record

    def rec(name, ms, runtime, precision):
        return Record(name=name, latency_ms=ms, runtime=runtime, extra={"precision": precision})

    records = [rec("eager", 9.0, "pytorch eager", "fp32"), rec("compiled", 5.0, "inductor", "fp32"),
               rec("torch int8", 1.0, "inductor", "int8"), rec("ORT fp32", 2.0, ox.RUNTIME, "fp32"),
               rec("ORT int8", 0.5, ox.RUNTIME, "int8")]
    assert ox.fastest_source_float(records) == "compiled"
    assert ox.fastest_source_float(records[3:]) is None


def test_linear_head_matches_the_classifier():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 6)).astype(np.float32)
    binary = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(int)
    clf = LogisticRegression().fit(features, binary)
    scores = ox.linear_head(clf)(features)
    assert scores.shape == (200, 2) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores.argmax(1), clf.predict(features))
    soft = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    np.testing.assert_allclose(soft, clf.predict_proba(features), atol=1e-5)
    three = np.digitize(features[:, 0], [-0.5, 0.5])
    clf3 = LogisticRegression().fit(features, three)
    np.testing.assert_array_equal(ox.linear_head(clf3)(torch.from_numpy(features)).argmax(1), clf3.predict(features))
    with pytest.raises(OptkitError, match="coef_"):
        ox.linear_head(object())
    with pytest.raises(OptkitError, match="are not 0"):
        ox.linear_head(LogisticRegression().fit(features, binary + 1))
    with pytest.raises(OptkitError, match=r"\[n, 6\]"):
        ox.linear_head(clf)(features[:, :5])


def test_with_head_feeds_modules_and_runners_alike(tmp_path):
    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, a, b):
            return self.fc(a * b)

    model = TwoInputs().eval()
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    res = ox.export(model, (a, b), tmp_path / "two.onnx")
    names = [s.name for s in ox.Runner(res.path).inputs]
    batch = dict(zip(names, (a.numpy(), b.numpy())))
    double = lambda out: 2 * np.asarray(out)  # noqa: E731
    with torch.inference_mode():
        expected = 2 * model(a, b).numpy()
    np.testing.assert_allclose(ox.with_head(model, double)(batch), expected, atol=1e-5)      # dict -> positional
    np.testing.assert_allclose(ox.with_head(ox.Runner(res.path), double)(batch), expected, atol=1e-5)  # by name
    np.testing.assert_allclose(ox.with_head(ox.Runner(res.path))((a.numpy(), b.numpy())), expected / 2, atol=1e-5)
    with pytest.raises(OptkitError, match="training mode"):
        ox.with_head(TwoInputs().train())
    with pytest.raises(OptkitError, match="head"):
        ox.with_head(model, head="softmax")


def test_quantize_static_variants_record_every_setting(exported, calib, test_xy, tmp_path):
    settings = {"QDQ per-channel, min-max": {}, "QDQ per-tensor": {"per_channel": False},
                "QOperator S8S8": {"quant_format": "qoperator", "activation_type": "int8"}}
    variants = ox.quantize_static_variants(exported.path, tmp_path / "q", calib[:2], settings, threads=1,
                                           inputs={8: test_xy[0][:8]})
    assert [v.name for v in variants] == list(settings)
    paths = [Path(v.artifact) for v in variants]
    assert len(set(paths)) == 3 and all(p.is_file() and p.parent == tmp_path / "q" for p in paths)
    first, per_tensor, qop = variants
    assert first.precision == "int8" and first.technique == "ORT static int8 (QDQ)"
    assert first.config["per_channel"] is True and first.config["method"] == "minmax"
    assert first.config["activation_type"] == "uint8" and first.config["calibration_batches"] == 2
    assert per_tensor.config["per_channel"] is False
    assert qop.technique == "ORT static int8 (QOperator)" and qop.config["activation_type"] == "int8"
    assert "QLinearConv" in ox.inspect(qop.artifact).op_counts
    assert all(v.size_bytes == ox.inspect(v.artifact).size_bytes for v in variants)
    assert variants[0].predict(test_xy[0][:8]).shape == (8, 10)
    with pytest.raises(OptkitError, match="not keywords"):
        ox.quantize_static_variants(exported.path, tmp_path, calib[:1], {"x": {"per_chanel": False}})
    with pytest.raises(OptkitError, match="already taken"):
        ox.quantize_static_variants(exported.path, tmp_path, calib[:1], {"a-b": {}, "ab": {}})
    with pytest.raises(OptkitError, match="non-empty"):
        ox.quantize_static_variants(exported.path, tmp_path, calib[:1], {})
