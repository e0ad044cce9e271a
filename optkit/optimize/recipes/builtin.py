"""The built-in recipes, registered in the order a run tries them: ONNX Runtime first, then the
torch.export recipes, then Keras and TFLite (see :mod:`optkit.optimize.recipes` for what each does).

Importing :mod:`optkit.optimize.recipes` registers them once.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from typing import Callable

from optkit.optimize.recipes.keras_onnx import _converted_to_ort
from optkit.optimize.recipes.onnx_runtime import (_ort_fp16, _ort_int8_dynamic, _ort_int8_static, _ort_one_thread,
                                                  _ort_optimized, _tensorrt, _torch_to_ort)
from optkit.optimize.recipes.registry import Candidate, Context, Recipe, register
from optkit.optimize.recipes.search import ort_int8_search
from optkit.optimize.recipes.tflite import _keras_xla, _litert_one_thread, _tflite
from optkit.optimize.recipes.torch_programs import _bf16, _pt2e_dynamic, _pt2e_static, _torch_compile

def _renamed(c: Candidate, name: str, recipe: str) -> Candidate:
    c.name, c.recipe = name, recipe
    return c


def _converted(build: Callable[[Context], Candidate], name: str, recipe: str) -> Callable[[Context], Candidate]:
    """``build`` (an ONNX recipe) on the run's ONNX conversion, its candidate renamed."""
    return lambda ctx: _renamed(build(ctx), name, recipe)


_BUILTIN = [
    Recipe("ort-optimized", ("onnx",), "onnxruntime", "graph optimized offline", _ort_optimized,
           "ONNX Runtime's graph optimizations (constant folding, fusions) saved into the file."),
    Recipe("ort-1-thread", ("onnx",), "onnxruntime", "fp32, 1 thread", _ort_one_thread,
           "The same model on one intra-op thread."),
    Recipe("ort-int8-dynamic", ("onnx",), "onnxruntime", "int8 dynamic", _ort_int8_dynamic,
           "ONNX Runtime dynamic quantization of MatMul/Gemm/RNN weights."),
    Recipe("ort-int8-static", ("onnx",), "onnxruntime", "int8 static QDQ", _ort_int8_static,
           "ONNX Runtime static QDQ quantization, per-channel, U8S8, calibrated on your data."),
    Recipe("ort-int8-search", ("onnx",), "onnxruntime", "int8 static QDQ, searched", ort_int8_search,
           "Static int8 repaired when it loses: calibration methods, the worst nodes kept in float, "
           "per-tensor, S8S8, fewer operator types; the fastest eligible setting wins."),
    Recipe("ort-fp16", ("onnx",), "onnxruntime", "fp16 (GPU)", _ort_fp16, "fp16 weights and compute on a GPU."),
    Recipe("tensorrt", ("onnx",), "tensorrt", "TensorRT fp16", _tensorrt, "TensorRT through ONNX Runtime."),
    Recipe("torch-compile", ("torch_export",), "pytorch", "torch.compile", _torch_compile,
           "torch.compile (inductor) of the exported program."),
    Recipe("torch-to-onnx", ("torch_export",), "onnxruntime", "ONNX Runtime fp32", _torch_to_ort,
           "Export the program to ONNX and run it in ONNX Runtime."),
    Recipe("pt2e-int8-static", ("torch_export",), "pytorch", "int8 static (PT2E)", _pt2e_static,
           "PT2E post-training int8 with the x86 inductor quantizer, compiled with freezing."),
    Recipe("pt2e-int8-dynamic", ("torch_export",), "pytorch", "int8 dynamic (PT2E)", _pt2e_dynamic,
           "PT2E dynamic int8 of linear layers, compiled with freezing."),
    Recipe("torch-reduced-float", ("torch_export",), "pytorch", "bf16/fp16 autocast", _bf16,
           "Reduced-precision matrix products under torch.autocast, compiled."),
    Recipe("torch-to-onnx-int8-static", ("torch_export",), "onnxruntime", "ONNX Runtime int8 static",
           _converted(_ort_int8_static, "onnx-ort-int8-static", "torch-to-onnx-int8-static"),
           "Export to ONNX, then ONNX Runtime static QDQ int8 calibrated on your data."),
    Recipe("torch-to-onnx-int8-search", ("torch_export",), "onnxruntime", "ONNX Runtime int8, searched",
           _converted(ort_int8_search, "onnx-ort-int8-search", "torch-to-onnx-int8-search"),
           "Export to ONNX, then the searched ONNX Runtime static int8 (tried while time is left)."),
    Recipe("keras-xla", ("keras",), "tensorflow", "XLA", _keras_xla, "The Keras model compiled with XLA."),
    Recipe("keras-onnx", ("keras",), "onnxruntime", "tf2onnx, ONNX Runtime fp32", _converted_to_ort,
           "Convert the Keras model to ONNX with tf2onnx and run it in ONNX Runtime."),
    Recipe("keras-onnx-int8-static", ("keras",), "onnxruntime", "tf2onnx, ONNX Runtime int8 static",
           _converted(_ort_int8_static, "keras-onnx-int8-static", "keras-onnx-int8-static"),
           "Convert to ONNX with tf2onnx, then ONNX Runtime static QDQ int8 calibrated on your data."),
    Recipe("tflite-float32", ("keras",), "tflite", "TFLite float32", _tflite("float32"),
           "Conversion to TFLite, float32."),
    Recipe("tflite-dynamic", ("keras",), "tflite", "TFLite dynamic-range int8", _tflite("dynamic"),
           "TFLite dynamic-range quantization (int8 weights)."),
    Recipe("tflite-float16", ("keras",), "tflite", "TFLite float16", _tflite("float16"),
           "TFLite with fp16 weights."),
    Recipe("tflite-int8", ("keras",), "tflite", "TFLite full int8", _tflite("int8"),
           "TFLite full-integer quantization calibrated on your data."),
    Recipe("keras-onnx-int8-search", ("keras",), "onnxruntime", "tf2onnx, ONNX Runtime int8, searched",
           _converted(ort_int8_search, "keras-onnx-int8-search", "keras-onnx-int8-search"),
           "Convert to ONNX with tf2onnx, then the searched ONNX Runtime static int8 (tried while time is left)."),
    Recipe("litert-1-thread", ("tflite",), "tflite", "LiteRT, 1 thread", _litert_one_thread,
           "The same .tflite file on one interpreter thread."),
    Recipe("tflite-onnx", ("tflite",), "onnxruntime", "tf2onnx, ONNX Runtime fp32", _converted_to_ort,
           "Convert a float .tflite file to ONNX with tf2onnx and run it in ONNX Runtime."),
    Recipe("tflite-onnx-int8-static", ("tflite",), "onnxruntime", "tf2onnx, ONNX Runtime int8 static",
           _converted(_ort_int8_static, "tflite-onnx-int8-static", "tflite-onnx-int8-static"),
           "Convert a float .tflite file to ONNX, then ONNX Runtime static QDQ int8 calibrated on your data."),
    Recipe("tflite-onnx-int8-search", ("tflite",), "onnxruntime", "tf2onnx, ONNX Runtime int8, searched",
           _converted(ort_int8_search, "tflite-onnx-int8-search", "tflite-onnx-int8-search"),
           "Convert a float .tflite file to ONNX, then the searched ONNX Runtime static int8."),
]


for _r in _BUILTIN:
    register(_r)
