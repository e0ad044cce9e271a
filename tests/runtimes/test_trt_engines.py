"""optkit.runtimes.trt_engines: the availability guard everywhere; engine build/run/parity only where TensorRT and
a GPU exist (skipped with the reason otherwise)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from optkit.runtimes import trt_engines as trt_mod
from optkit.core.errors import OptkitError

AVAILABLE, REASON = trt_mod.available()
needs_trt = pytest.mark.skipif(not AVAILABLE, reason=f"TensorRT unavailable: {REASON}")


def test_available_explains_itself():
    ok, reason = trt_mod.available()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    if not ok:
        with pytest.raises(trt_mod.TensorRTUnavailable) as e:
            trt_mod.require()
        assert isinstance(e.value, OptkitError) and e.value.reason == reason
        with pytest.raises(trt_mod.TensorRTUnavailable):
            trt_mod.build_engine("model.onnx", "model.engine")


def test_metadata_and_compatibility_checks(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(OptkitError, match="no metadata"):
        trt_mod.engine_metadata(engine)
    meta = {"tensorrt_version": "10.13.0", "gpu": "NVIDIA H100", "compute_capability": "90", "precision": "fp16",
            "batch_profile": [1, 8, 32], "onnx": "m.onnx"}
    (tmp_path / "m.engine.json").write_text(json.dumps(meta))
    assert trt_mod.check_compatible(engine, tensorrt_version="10.13.0", compute_capability="90") == meta
    with pytest.raises(OptkitError, match="built by TensorRT 10.13.0, this is 11.0.0"):
        trt_mod.check_compatible(engine, tensorrt_version="11.0.0", compute_capability="90")
    with pytest.raises(OptkitError, match="sm_90"):
        trt_mod.check_compatible(engine, tensorrt_version="10.13.0", compute_capability="89", gpu="NVIDIA L4")


def test_qdq_problems_wants_symmetric_int8(tmp_path, fmnist):
    from optkit.data import models
    from optkit.runtimes import onnxrt as ox

    cnn = models.pretrained("small_cnn")
    res = ox.export(cnn, fmnist.example_batch(2), tmp_path / "cnn.onnx", check=False)
    assert trt_mod.qdq_problems(res.path) == ["no QuantizeLinear/DequantizeLinear nodes: the model is not "
                                              "explicitly quantized"]
    calib = [np.array(fmnist.calib.x[:64])]
    u8 = ox.quantize_static(res.path, tmp_path / "u8.onnx", calib)
    assert any("uint8 zero point" in p for p in trt_mod.qdq_problems(u8))
    sym = ox.quantize_static(res.path, tmp_path / "sym.onnx", calib, activation_type="int8", symmetric=True)
    assert trt_mod.qdq_problems(sym) == []
    ox.verify(cnn, sym, np.array(fmnist.test.x[:256]), atol=float("inf"), min_top1=0.97, min_sqnr_db=20)


def test_fp16_conversion_keeps_io_and_top1(tmp_path, fmnist):
    from optkit.data import models
    from optkit.runtimes import onnxrt as ox

    cnn = models.pretrained("small_cnn")
    res = ox.export(cnn, fmnist.example_batch(2), tmp_path / "cnn.onnx", check=False)
    half = ox.convert_fp16(res.path, tmp_path / "half.onnx")
    info = ox.inspect(half)
    assert info.inputs[0].dtype == "float32" and info.size_bytes < 0.6 * ox.inspect(res.path).size_bytes
    ox.verify(cnn, half, np.array(fmnist.test.x[:128]), atol=0.05, min_top1=0.99, min_sqnr_db=40)


@needs_trt
def test_build_and_run_matches_onnx_runtime(tmp_path, fmnist):
    from optkit.data import models
    from optkit.runtimes import onnxrt as ox

    cnn = models.pretrained("small_cnn")
    res = ox.export(cnn, fmnist.example_batch(4), tmp_path / "cnn.onnx")
    built = trt_mod.build_engine(res.path, tmp_path / "cnn.engine", precision="fp32", max_batch=64,
                                 timing_cache=tmp_path / "timing.cache")
    assert built.path.is_file() and (tmp_path / "timing.cache").is_file()
    engine = trt_mod.Engine(built.path)
    x = np.array(fmnist.test.x[:37])  # a batch size inside the profile but not the opt size
    ox.verify(ox.Runner(res.path), engine, x, atol=1e-3)
    with pytest.raises(OptkitError, match="profile"):
        engine(np.zeros((65, 1, 28, 28), np.float32))


@needs_trt
def test_fp16_and_qdq_engines_keep_top1(tmp_path, fmnist):
    import math

    from optkit.data import models
    from optkit.runtimes import onnxrt as ox

    cnn = models.pretrained("small_cnn")
    res = ox.export(cnn, fmnist.example_batch(4), tmp_path / "cnn.onnx")
    x = np.array(fmnist.test.x[:256])
    fp16 = trt_mod.Engine(trt_mod.build_engine(res.path, tmp_path / "fp16.engine", precision="fp16").path)
    ox.verify(cnn, fp16, x, atol=math.inf, min_top1=0.99, min_sqnr_db=30)
    calib = [np.array(fmnist.calib.x[i:i + 64]) for i in range(0, 256, 64)]
    qdq = ox.quantize_static(res.path, tmp_path / "qdq.onnx", calib, activation_type="int8", symmetric=True)
    int8 = trt_mod.Engine(trt_mod.build_engine(qdq, tmp_path / "int8.engine", precision="int8-qdq").path)
    ox.verify(cnn, int8, x, atol=math.inf, min_top1=0.97, min_sqnr_db=20)


def test_evaluate_runtimes_runs_the_closing_comparison_on_a_cpu(tmp_path):
    """08's closing comparison without a GPU: PyTorch and ONNX Runtime on the CPU through the same
    path (variant.evaluate, report.tables); the engines join it only where TensorRT runs."""
    import torch

    from optkit.core import report, variant
    from optkit.data import models
    from optkit.runtimes import onnxrt

    rng = np.random.default_rng(0)
    x = rng.random((48, 1, 28, 28), dtype=np.float32)
    cnn = models.build("small_cnn").eval()
    with torch.inference_mode():
        y = cnn(torch.from_numpy(x)).argmax(1).numpy()  # labels the model gets right, so accuracy is exact
    path = onnxrt.export(cnn, torch.from_numpy(x[:2]), tmp_path / "small.onnx").path
    workload = variant.Workload("small_cnn", "classification", "random images")
    records = trt_mod.evaluate_runtimes(workload, (x, y), batch_sizes=(1, 8), device="cpu",
                                        torch_models={"PyTorch fp32": (cnn, torch.float32)},
                                        ort_runners={"ORT fp32": (onnxrt.Runner(path, threads=1), "fp32")},
                                        max_time_s=0.05, rounds=2, min_repeats=2, warmup=1, progress=False)
    assert sorted((r.name, r.batch_size) for r in records) == [("ORT fp32", 1), ("ORT fp32", 8),
                                                               ("PyTorch fp32", 1), ("PyTorch fp32", 8)]
    for r in records:
        assert r.accuracy == pytest.approx(1.0) and r.parity["top1_agreement"] == pytest.approx(1.0)
        assert r.latency_ms > 0 and r.p95_ms >= r.latency_ms and r.peak_mem_bytes is not None
    tables = report.tables(records, baseline=report.fastest_float, columns=["runtime", "latency_ms", "p95_ms",
                                                                            "speedup", "peak_mem_mb", "accuracy"])
    assert sorted(bs for _, bs in tables) == [1, 8]
    for frame in tables.values():
        assert frame["speedup"].max() == pytest.approx(1.0)  # the baseline is the fastest float
    if not torch.cuda.is_available():
        with pytest.raises(OptkitError, match="CUDA"):
            trt_mod.evaluate_runtimes(workload, (x, y), batch_sizes=(1,), device="cuda",
                                      torch_models={"PyTorch fp32": (cnn, torch.float32)})
    with pytest.raises(OptkitError, match="device"):
        trt_mod.evaluate_runtimes(workload, (x, y), batch_sizes=(1,), device="tpu")
