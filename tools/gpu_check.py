"""The GPU paths of the curriculum, in one run of at most about 8 minutes on one NVIDIA GPU.

    bash tools/gpu_check.sh            # or: python3 tools/gpu_check.py [--out DIR]

CI and most learners have no GPU, so the notebooks skip these paths with a printed reason; this
script runs them where a GPU exists and prints, per section, what ran, what skipped and why, and
the headline figures. It needs torch (a CUDA build), numpy, onnx and onnxruntime; it uses
whatever else is installed (onnxruntime-gpu, TensorRT) and says what is missing.

Sections: the CUDA paths of ``optkit.core.bench`` (synchronised timing, CUDA peak memory); 01 (cuDNN
autotuning, fp16 autocast, CUDA graphs via :mod:`optkit.runtimes.gpu`); 02 (fp16 weights: accuracy and
speed against fp32 on the Fashion-MNIST test split); 06 (ONNX Runtime's CUDA provider and IO
binding); 08 (a TensorRT fp16 engine from ONNX); 10 (the capstone's GPU recipes).

Exit status: 0 when no section failed (skips are fine), 1 otherwise. ``--out DIR`` also writes
``gpu_check.json`` there.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Skip(Exception):
    """A section that cannot run here; the message says why."""


RESULTS: list[dict] = []


def section(title: str):
    def wrap(fn):
        def run(ctx):
            print(f"\n=== {title} ===", flush=True)
            start = time.perf_counter()
            figures: dict = {}
            try:
                fn(ctx, figures)
                status, why = "ran", ""
            except Skip as exc:
                status, why = "skipped", str(exc)
                print(f"skipped: {why}")
            except Exception as exc:  # a broken GPU path is what this script exists to find
                status, why = "FAILED", f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            seconds = time.perf_counter() - start
            RESULTS.append({"section": title, "status": status, "why": why, "seconds": round(seconds, 1),
                            "figures": figures})
            print(f"--- {title}: {status} in {seconds:.0f} s", flush=True)
        return run
    return wrap


@section("environment")
def environment(ctx, figures):
    from optkit.core import bench
    from optkit.runtimes import gpu

    print("Measured on:", bench.environment_line())
    ok, why = gpu.available()
    if not ok:
        raise Skip(why + ". Nothing below can run; on a CPU machine the notebooks skip these paths too")
    print(gpu.describe())
    figures["gpu"] = why


def _need_gpu():
    from optkit.runtimes import gpu

    ok, why = gpu.available()
    if not ok:
        raise Skip(why)
    import torch

    return torch


def _data_and_model(ctx):
    if "cnn" not in ctx:
        from optkit import data
        from optkit.data import models

        ctx["data"] = data.fashion_mnist()
        ctx["cnn"] = models.pretrained("resnet_cnn").eval()
    return ctx["data"], ctx["cnn"]


@section("bench: CUDA timing and memory")
def bench_cuda(ctx, figures):
    torch = _need_gpu()
    from optkit.core import bench
    from optkit.runtimes import gpu

    a = torch.randn(4096, 4096, device="cuda")
    m = bench.measure(lambda: a @ a, name="4096^2 fp32 matmul", max_time_s=1.0, sync=gpu.synchronize)
    unsynced = bench.measure(lambda: a @ a, name="same, without sync", max_time_s=1.0)
    print(m)
    print(unsynced, " <- launch time only: GPU work is asynchronous")
    tflops = 2 * 4096 ** 3 / (m.median_ms / 1e3) / 1e12
    print(f"fp32 matmul: {tflops:.1f} TFLOP/s (TF32 allowed: {torch.backends.cuda.matmul.allow_tf32})")
    mem = bench.peak_memory(lambda: torch.empty(256 * 2 ** 20, dtype=torch.uint8, device="cuda"))
    print(mem)
    if mem.cuda_peak_bytes is None or mem.cuda_peak_bytes < 256 * 2 ** 20:
        raise AssertionError(f"CUDA peak {mem.cuda_peak_bytes} B is below the 256 MiB just allocated")
    figures.update(matmul_tflops=round(tflops, 1), cuda_peak_mib=round(mem.cuda_peak_bytes / 2 ** 20, 1))


@section("01: cuDNN benchmark, fp16 autocast, CUDA graphs")
def nb01(ctx, figures):
    _need_gpu()
    from optkit.core import bench
    from optkit.runtimes import gpu

    ds, cnn = _data_and_model(ctx)
    for batch in (1, 32):
        variants = gpu.cuda_variants(cnn, ds.example_batch(batch))
        cmp = bench.compare(variants, batch_size=batch, max_time_s=3.0, sync=gpu.synchronize)
        print(f"batch {batch}:")
        print(cmp)
        for name, m in cmp.measurements.items():
            figures[f"b{batch} {name} ms"] = round(m.median_ms, 4)


@section("02: fp16 weights on the GPU")
def nb02(ctx, figures):
    _need_gpu()
    from optkit.data import models
    from optkit.techniques import quantize

    ds, cnn = _data_and_model(ctx)
    fp32 = cnn.cuda().eval()
    acc32 = models.evaluate(fp32, ds).accuracy
    cnn.cpu()
    half = quantize.reduced_float(cnn, "float16", device="cuda")
    acc16 = models.evaluate(half.module, ds).accuracy
    print(f"test accuracy on {len(ds.test):,} images: fp32 {acc32:.2%}, fp16 {acc16:.2%} "
          f"({(acc16 - acc32) * 100:+.2f} points); fp16 weights {half.size_bytes:,} B")
    figures.update(fp32_accuracy=acc32, fp16_accuracy=acc16)
    if abs(acc16 - acc32) > 0.005:
        raise AssertionError("fp16 moved accuracy by more than 0.5 point: check the cast of the inputs")


@section("06: ONNX Runtime CUDA provider and IO binding")
def nb06(ctx, figures):
    torch = _need_gpu()
    import numpy as np
    import onnxruntime as ort

    from optkit.core import bench
    from optkit.runtimes import onnxrt as okonnx

    providers = ort.get_available_providers()
    print("onnxruntime", ort.__version__, "providers:", providers)
    if "CUDAExecutionProvider" not in providers:
        raise Skip("this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)")
    ds, cnn = _data_and_model(ctx)
    path = Path(ctx["tmp"]) / "resnet_cnn.onnx"
    okonnx.export(cnn.cpu(), ds.example_batch(1), path)
    ctx["onnx"] = path
    sess = okonnx.session(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    x = ds.example_batch(32).numpy()
    name = sess.get_inputs()[0].name
    ref = cnn.cpu()(torch.from_numpy(x)).detach().numpy()
    out = sess.run(None, {name: x})[0]
    err = float(np.abs(out - ref).max())
    binding = sess.io_binding()
    x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    binding.bind_ortvalue_input(name, x_gpu)
    binding.bind_output(sess.get_outputs()[0].name, "cuda")
    cmp = bench.compare({"ORT CUDA, numpy in/out": lambda: sess.run(None, {name: x}),
                         "ORT CUDA, IO binding": lambda: sess.run_with_iobinding(binding)},
                        batch_size=32, max_time_s=2.0)
    print(f"max abs error against torch fp32: {err:.2e}")
    print(cmp)
    figures["max_abs_error"] = err


@section("08: TensorRT fp16 engine")
def nb08(ctx, figures):
    _need_gpu()
    from optkit.runtimes import trt_engines

    ok, why = trt_engines.available()
    if not ok:
        raise Skip(why)
    if "onnx" not in ctx:
        from optkit.runtimes import onnxrt as okonnx

        ds, cnn = _data_and_model(ctx)
        ctx["onnx"] = Path(ctx["tmp"]) / "resnet_cnn.onnx"
        okonnx.export(cnn.cpu(), ds.example_batch(1), ctx["onnx"])
    engine = Path(ctx["tmp"]) / "resnet_cnn.fp16.engine"
    result = trt_engines.build_engine(ctx["onnx"], engine, precision="fp16", min_batch=1, opt_batch=32, max_batch=64)
    print(result)
    figures["engine_bytes"] = engine.stat().st_size


@section("10: the capstone's GPU recipes")
def nb10(ctx, figures):
    _need_gpu()
    from optkit import optimize

    opt = optimize.optimize(output_dir=Path(ctx["tmp"]) / "capstone", time_budget_s=60.0, batch_sizes=[1, 32],
                            log=None)
    print(opt.table())
    print("recommendation:", opt.recommendation)
    for outcome in opt.outcomes:  # fp16 and TensorRT say here why they did or did not run
        print(" ", outcome)
    figures["recommendation"] = str(opt.recommendation)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="optkit-gpu-") as tmp:
        ctx = {"tmp": tmp}
        for step in (environment, bench_cuda, nb01, nb02, nb06, nb08, nb10):
            step(ctx)
    print("\n=== summary ===")
    for r in RESULTS:
        print(f"{r['section']:<50} {r['status']:<8} {r['seconds']:6.0f} s  {r['why']}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    return 1 if any(r["status"] == "FAILED" for r in RESULTS) else 0


if __name__ == "__main__":
    sys.exit(main())
