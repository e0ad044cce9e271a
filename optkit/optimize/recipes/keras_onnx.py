"""The capstone's ONNX Runtime route for Keras models and ``.tflite`` files: convert with tf2onnx
(:func:`optkit.runtimes.onnxrt.from_tensorflow` for a Keras model, ``tf2onnx.convert.from_tflite``
for a float ``.tflite``), once per run, then run the ONNX file in ONNX Runtime (fp32), and let
ONNX Runtime's int8 recipes (static QDQ, the search) work on it the way they work on a torch
program's export (:func:`optkit.optimize.recipes.onnx_runtime._onnx_source` finds the file).

A full-integer ``.tflite`` (int8 inputs and kernels) has no float graph to convert: the recipes
say so in one line and the file keeps LiteRT.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from optkit.optimize.recipes.onnx_runtime import ort_candidate
from optkit.optimize.recipes.registry import Candidate, Context, RecipeSkipped

__all__ = ["keras_to_onnx", "tflite_to_onnx"]

#: The ONNX opset the conversions target (per-channel QDQ needs 13).
OPSET = 17


def _named_inputs(path: Path, names: list[str]) -> Path:
    """Rename the ONNX file's graph inputs, in order, to the model's own input names (the feeds use them)."""
    import onnx

    model = onnx.load(str(path))
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != len(names) or [i.name for i in inputs] == names:
        return path
    mapping = {i.name: n for i, n in zip(inputs, names)}
    for i in inputs:
        i.name = mapping[i.name]
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in mapping:
                node.input[k] = mapping[name]
    onnx.save(model, str(path))
    return path


def keras_to_onnx(ctx: Context) -> Path:
    """The run's Keras model converted to ONNX with tf2onnx (a dynamic batch dimension, the model's
    own input names), written into the artifacts folder.

    Taught in 10_optimize_your_own_model.
    """
    from optkit.runtimes import onnxrt as ox
    from optkit.runtimes import tflow as otf

    model = ctx.cache.get("keras_model")
    if model is None:
        raise RecipeSkipped("no Keras model loaded (a SavedModel folder converts with "
                            "`python -m tf2onnx.convert --saved-model`)")
    tf = otf.import_tensorflow()
    signature = [tf.TensorSpec([None] + list(t.shape[1:]), t.dtype, name=s.name)
                 for t, s in zip(model.inputs, ctx.summary.inputs)]
    dst = ox.from_tensorflow(model, ctx.artifact("model.from-keras.onnx"), input_signature=signature, opset=OPSET)
    return _named_inputs(Path(dst), [s.name for s in ctx.summary.inputs])


def _full_integer(path: Path) -> str | None:
    """Why a ``.tflite`` file has no float path (its inputs are int8 or uint8), or None."""
    from optkit.runtimes import tflow as otf

    runner = otf.LiteRT(path, num_threads=1)
    for d in runner.input_details:
        dtype = getattr(d["dtype"], "__name__", str(d["dtype"]))
        if dtype in ("int8", "uint8") and (d.get("quantization") or (0.0, 0))[0]:
            return (f"the .tflite file is full-integer (input {d['name']!r} is {dtype}): it has no float graph to "
                    "convert to ONNX, and LiteRT already runs its int8 kernels")
    return None


def tflite_to_onnx(ctx: Context) -> Path:
    """The run's float ``.tflite`` file converted to ONNX with ``tf2onnx.convert.from_tflite``,
    its inputs named as in the file. A full-integer file raises :class:`RecipeSkipped` (no float path).

    Taught in 10_optimize_your_own_model.
    """
    src = Path(ctx.summary.path)
    why = _full_integer(src)
    if why:
        raise RecipeSkipped(why)
    from optkit.runtimes.model_files import atomic_write

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tf2onnx

        proto, _ = tf2onnx.convert.from_tflite(str(src), opset=OPSET)
    dst = ctx.artifact("model.from-tflite.onnx")
    with atomic_write(dst) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return _named_inputs(dst, [s.name for s in ctx.summary.inputs])


def _converted_source(ctx: Context) -> Path | Exception:
    """The Keras model's or ``.tflite`` file's ONNX conversion, or the exception that stopped it
    (cached by the caller, so every ONNX Runtime recipe reports the same reason)."""
    try:
        return keras_to_onnx(ctx) if ctx.summary.format == "keras" else tflite_to_onnx(ctx)
    except Exception as e:  # RecipeSkipped included: the reason is reported by each recipe
        return e


def _converted_to_ort(ctx: Context) -> Candidate:
    from optkit.optimize.recipes.onnx_runtime import _onnx_source

    src = _onnx_source(ctx)
    what = "Keras model" if ctx.summary.format == "keras" else ".tflite file"
    tool = "from_tensorflow (tf2onnx)" if ctx.summary.format == "keras" else "tf2onnx.convert.from_tflite"
    name = "keras-onnx" if ctx.summary.format == "keras" else "tflite-onnx"
    return ort_candidate(ctx, name, name, "converted to ONNX (tf2onnx), fp32 in ORT", src,
                         config={"converter": tool, "opset": OPSET},
                         notes=[f"The {what} converted to ONNX with {tool} (opset {OPSET}, dynamic batch) and run "
                                "in ONNX Runtime; the ONNX Runtime int8 recipes start from this file."])
