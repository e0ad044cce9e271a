"""The built-in recipes, registered in the order a run tries them: ONNX Runtime first, then the
torch.export recipes, then Keras and TFLite (see :mod:`optkit.optimize.recipes` for what each does).

Importing :mod:`optkit.optimize.recipes` registers them once.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from optkit.optimize.recipes.onnx_runtime import (_ort_fp16, _ort_int8_dynamic, _ort_int8_static, _ort_one_thread,
                                                  _ort_optimized, _tensorrt, _torch_to_ort)
from optkit.optimize.recipes.registry import Candidate, Recipe, register
from optkit.optimize.recipes.search import ort_int8_search
from optkit.optimize.recipes.tflite import _keras_xla, _litert_one_thread, _tflite
from optkit.optimize.recipes.torch_programs import _bf16, _pt2e_dynamic, _pt2e_static, _torch_compile

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
    Recipe("pt2e-int8-static", ("torch_export",), "pytorch", "int8 static (PT2E)", _pt2e_static,
           "PT2E post-training int8 with the x86 inductor quantizer, compiled with freezing."),
    Recipe("pt2e-int8-dynamic", ("torch_export",), "pytorch", "int8 dynamic (PT2E)", _pt2e_dynamic,
           "PT2E dynamic int8 of linear layers, compiled with freezing."),
    Recipe("torch-reduced-float", ("torch_export",), "pytorch", "bf16/fp16 autocast", _bf16,
           "Reduced-precision matrix products under torch.autocast, compiled."),
    Recipe("torch-to-onnx", ("torch_export",), "onnxruntime", "ONNX Runtime fp32", _torch_to_ort,
           "Export the program to ONNX and run it in ONNX Runtime."),
    Recipe("torch-to-onnx-int8-static", ("torch_export",), "onnxruntime", "ONNX Runtime int8 static",
           lambda ctx: _renamed(_ort_int8_static(ctx), "onnx-ort-int8-static", "torch-to-onnx-int8-static"),
           "Export to ONNX, then ONNX Runtime static QDQ int8 calibrated on your data."),
    Recipe("keras-xla", ("keras",), "tensorflow", "XLA", _keras_xla, "The Keras model compiled with XLA."),
    Recipe("tflite-float32", ("keras",), "tflite", "TFLite float32", _tflite("float32"),
           "Conversion to TFLite, float32."),
    Recipe("tflite-dynamic", ("keras",), "tflite", "TFLite dynamic-range int8", _tflite("dynamic"),
           "TFLite dynamic-range quantization (int8 weights)."),
    Recipe("tflite-float16", ("keras",), "tflite", "TFLite float16", _tflite("float16"),
           "TFLite with fp16 weights."),
    Recipe("tflite-int8", ("keras",), "tflite", "TFLite full int8", _tflite("int8"),
           "TFLite full-integer quantization calibrated on your data."),
    Recipe("litert-1-thread", ("tflite",), "tflite", "LiteRT, 1 thread", _litert_one_thread,
           "The same .tflite file on one interpreter thread."),
]


def _renamed(c: Candidate, name: str, recipe: str) -> Candidate:
    c.name, c.recipe = name, recipe
    return c


for _r in _BUILTIN:
    register(_r)
