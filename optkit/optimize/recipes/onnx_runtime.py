"""The capstone's ONNX Runtime recipes: offline graph optimization, one thread, dynamic and
static int8, fp16 and TensorRT on an ONNX model, and the ONNX Runtime route for a torch program
(exported to ONNX once per run, then fp32 or static int8 in ORT).

Each one calls :mod:`optkit.runtimes.onnxrt` for the work (``optimize``, ``quantize_dynamic``,
``quantize_static``, ``convert_fp16``, ``Runner``); :func:`ort_candidate` wraps an ONNX file in a
:class:`~optkit.optimize.recipes.registry.Candidate`.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Sequence

from optkit.core.deprecation import renamed_keyword
from optkit.optimize.recipes.registry import Candidate, Context, RecipeSkipped, _first_line, _size
from optkit.optimize.recipes.torch_programs import _export_program_to_onnx

__all__ = ["ort_candidate"]

#: ONNX operators whose constant weights int8 quantization turns into integer arithmetic.
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention", "MultiHeadAttention"}
_DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]


def _weighted_ops(path: Path, kinds: Iterable[str]) -> dict[str, int]:
    """Operators of ``kinds`` in the graph with at least one constant (initializer) input."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    consts = {t.name for t in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    kinds = set(kinds)
    found: dict[str, int] = {}
    for n in proto.graph.node:
        if n.op_type in kinds and any(i in consts for i in n.input[1:] or n.input):
            found[n.op_type] = found.get(n.op_type, 0) + 1
    return found


def _require_weights(ctx: Context, path: Path, kinds: Iterable[str]) -> dict[str, int]:
    found = _weighted_ops(path, kinds)
    if not found:
        from optkit.runtimes.onnxrt import op_counts

        have = ", ".join(sorted(op_counts(path))[:12]) or "none"
        raise RecipeSkipped(f"nothing to quantize: no {'/'.join(sorted(set(kinds)))} with constant weights "
                            f"(the model's operators: {have})")
    return found


def _quantized_ops(path: Path) -> dict[str, int]:
    from optkit.runtimes.onnxrt import op_counts

    return {k: v for k, v in op_counts(path).items()
            if "Quant" in k or "Integer" in k or k.startswith("QLinear") or k in ("QGemm", "QAttention")}


@renamed_keyword("info", "config")
def ort_candidate(ctx: Context, name: str, recipe: str, technique: str, path: Path, *,
                  precision: str = "fp32", threads: int | None = None, artifact: bool = True,
                  notes: Sequence[str] = (), config: dict | None = None,
                  providers: Sequence | None = None) -> Candidate:
    """A :class:`Candidate` running the ONNX file ``path`` in an ONNX Runtime session
    (``threads`` intra-op threads, default the context's; workers do not spin between calls, so
    that one candidate's idle threads do not slow the next one in the interleaved timing).
    ``precision`` is what the file computes
    in (``"fp32"``, ``"int8"``, ``"int8-dynamic"``, ``"fp16"``); ``config`` the recipe's settings,
    to which the thread count and how long the session took to load (``load_s``) are added.

    Taught in 10_optimize_your_own_model.
    """
    from optkit.runtimes import onnxrt as ox

    start = time.perf_counter()
    runner = ox.Runner(path, threads=threads or ctx.threads, providers=providers, spinning=False)
    load_s = time.perf_counter() - start
    seen: dict = {}

    def run(feed: dict) -> list:
        # the Runner checks names, ranks and dtypes (a clear error naming the input); once a feed
        # has passed, later calls with the same arrays go straight to the session, so timing
        # measures ONNX Runtime, not the checks
        if seen.get("feed") is not feed:
            out = runner.run_all(feed)
            seen["feed"] = feed
            return out
        return runner.session.run(None, feed)

    return Candidate(name=name, predict=run, recipe=recipe, technique=technique, runtime="onnxruntime",
                     precision=precision, artifact=path if artifact else None, size_bytes=_size(path),
                     notes=list(notes), config={**(config or {}), "threads": threads or ctx.threads, "spinning": False,
                                             "load_s": load_s})


def _onnx_source(ctx: Context) -> Path:
    """The ONNX file the ORT recipes work on: the model itself, the export of a torch program, or
    the tf2onnx conversion of a Keras model or a float ``.tflite`` file (made once per run)."""
    fmt = ctx.summary.format
    if fmt == "onnx":
        return Path(ctx.summary.path)
    if "onnx_export" not in ctx.cache:
        if fmt in ("keras", "tflite"):
            from optkit.optimize.recipes.keras_onnx import _converted_source

            ctx.cache["onnx_export"] = _converted_source(ctx)
        else:
            ctx.cache["onnx_export"] = _export_program_to_onnx(ctx)
    result = ctx.cache["onnx_export"]
    if isinstance(result, RecipeSkipped):
        raise RecipeSkipped(str(result))
    if isinstance(result, Exception):
        what = {"keras": "the Keras model could not be converted to ONNX by tf2onnx",
                "tflite": "the .tflite file could not be converted to ONNX by tf2onnx"}.get(
                    fmt, "the torch program could not be exported to ONNX")
        raise RecipeSkipped(f"{what}: {_first_line(result)}")
    return result


def _ort_optimized(ctx: Context) -> Candidate:
    from optkit.runtimes import onnxrt as ox

    dst = ox.optimize(_onnx_source(ctx), ctx.artifact("model.ort-optimized.onnx"), level="extended")
    return ort_candidate(ctx, "ort-optimized", "ort-optimized", "graph optimized offline (extended)", dst,
                         config={"level": "extended"},
                         notes=["ONNX Runtime's fusions saved into the file: the session loads faster; "
                                "run-time speed matches the default session, which applies them at load."])


def _ort_one_thread(ctx: Context) -> Candidate:
    if ctx.threads <= 1:
        raise RecipeSkipped("the baseline already runs on one thread")
    src = _onnx_source(ctx)
    return ort_candidate(ctx, "ort-1-thread", "ort-1-thread", "fp32, 1 intra-op thread", src, threads=1,
                         artifact=False, notes=["Same file, one thread: slower per call on a quiet machine, "
                                                "but leaves the other cores to other work (and wins when "
                                                "the cores are already busy)."])


def _ort_int8_dynamic(ctx: Context) -> Candidate:
    from optkit.runtimes import onnxrt as ox

    src = _onnx_source(ctx)
    found = _require_weights(ctx, src, _DYNAMIC_OPS)
    dst = ox.quantize_dynamic(src, ctx.artifact("model.int8-dynamic.onnx"), op_types=_DYNAMIC_OPS)
    if not _quantized_ops(dst):
        raise RecipeSkipped("ONNX Runtime's dynamic quantizer left every operator in float")
    return ort_candidate(ctx, "ort-int8-dynamic", "ort-int8-dynamic", "int8 dynamic (MatMul/Gemm/RNN)", dst,
                         precision="int8-dynamic", config={"op_types": _DYNAMIC_OPS, "quantized_ops": found},
                         notes=["int8 weights, activations quantized per batch at run time; convolutions are "
                                "left in float (ORT's dynamic ConvInteger is slower than fp32 on x86)."])


#: Per-channel QDQ (DequantizeLinear with ``axis``) needs opset 13 of the default domain.
PER_CHANNEL_OPSET = 13


def _default_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _per_channel_source(ctx: Context, src: Path) -> tuple[Path, bool, str | None]:
    """The file to quantize, whether per-channel weights are possible, and a note saying what was done.

    A model below opset 13 cannot hold per-channel QDQ: convert it with onnx's version converter
    (kept only if ONNX Runtime loads the result), else quantize per tensor."""
    opset = _default_opset(src)
    if opset >= PER_CHANNEL_OPSET:
        return src, True, None
    import onnx
    from onnx import version_converter

    from optkit.runtimes import onnxrt as ox

    try:
        converted = version_converter.convert_version(onnx.load(str(src)), PER_CHANNEL_OPSET)
        dst = ctx.artifact(f"model.opset{PER_CHANNEL_OPSET}.onnx")
        onnx.save(converted, str(dst))
        ox.session(dst, threads=1)  # the converted file must load
        return dst, True, (f"the model is opset {opset}; per-channel QDQ needs {PER_CHANNEL_OPSET}, so it was "
                           f"converted with onnx's version converter first")
    except Exception as exc:  # the converter does not cover every operator and opset
        return src, False, (f"the model is opset {opset} and could not be converted to {PER_CHANNEL_OPSET} "
                            f"({_first_line(exc)}): weights are quantized per tensor instead of per channel")


def _ort_int8_static(ctx: Context) -> Candidate:
    from optkit.runtimes import onnxrt as ox

    src = _onnx_source(ctx)
    found = _require_weights(ctx, src, _WEIGHTED_OPS)
    calib = ctx.calibration(batch_size=16)
    src, per_channel, opset_note = _per_channel_source(ctx, src)
    dst = ox.quantize_static(src, ctx.artifact("model.int8-static-qdq.onnx"), calib, per_channel=per_channel,
                             activation_type="uint8", weight_type="int8", method="minmax")
    if "QuantizeLinear" not in ox.op_counts(dst):
        raise RecipeSkipped("ONNX Runtime's static quantizer inserted no QuantizeLinear node")
    n = sum(len(next(iter(b.values()))) for b in calib)
    granularity = "per-channel" if per_channel else "per-tensor"
    return ort_candidate(ctx, "ort-int8-static", "ort-int8-static", f"int8 static QDQ ({granularity}, U8S8)", dst,
                         precision="int8", config={"per_channel": per_channel, "activation_type": "uint8",
                                                   "weight_type": "int8", "method": "minmax",
                                                   "calibration_examples": n, "quantized_ops": found},
                         notes=[f"Activation ranges calibrated on {n} of your examples (min-max); uint8 "
                                f"activations with int8 {granularity} weights, the fast combination on x86."]
                         + ([opset_note[0].upper() + opset_note[1:] + "."] if opset_note else []))


def _ort_fp16(ctx: Context) -> Candidate:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RecipeSkipped("no GPU: this onnxruntime build has no CUDA provider, and fp16 pays only on a GPU "
                            "(a CPU without native fp16 arithmetic emulates it)")
    from optkit.runtimes import onnxrt as ox

    dst = ox.convert_fp16(_onnx_source(ctx), ctx.artifact("model.fp16.onnx"), keep_io_types=True)
    return ort_candidate(ctx, "ort-fp16", "ort-fp16", "fp16 weights and compute (GPU)", dst, precision="fp16",
                         config={"keep_io_types": True, "provider": "CUDAExecutionProvider"}, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def _tensorrt(ctx: Context) -> Candidate:
    import importlib.util

    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        why = ("TensorRT is not installed" if importlib.util.find_spec("tensorrt") is None
               else "this onnxruntime build has no TensorRT provider")
        raise RecipeSkipped(f"{why}: it needs an NVIDIA GPU and NVIDIA's own package index")
    src = _onnx_source(ctx)
    return ort_candidate(ctx, "tensorrt-fp16", "tensorrt", "TensorRT fp16 (via ORT)", src, artifact=False,
                         precision="fp16", config={"provider": "TensorrtExecutionProvider", "trt_fp16_enable": True},
                         providers=[("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                                    "CUDAExecutionProvider", "CPUExecutionProvider"])


# ------------------------------------------------------------------------------- a torch program, through ONNX

def _torch_to_ort(ctx: Context) -> Candidate:
    src = _onnx_source(ctx)
    return ort_candidate(ctx, "onnx-ort", "torch-to-onnx", "exported to ONNX, fp32 in ORT", src,
                         notes=["The program exported with optkit.runtimes.onnxrt.export (dynamo exporter, dynamic batch) "
                                "and run in ONNX Runtime."])
