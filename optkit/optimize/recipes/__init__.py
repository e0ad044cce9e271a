"""The capstone's recipe registry: what a recipe is, and the recipes optkit tries on each format.

A :class:`Recipe` is a small frozen record: a ``name``, the model ``formats`` it applies to, the
``runtime`` it produces a candidate for, and a ``build(context) -> Candidate`` function. A
:class:`Candidate` is an :class:`optkit.core.variant.Variant` (callable on a batch:
``predict(feed) -> outputs``, with its precision, the recipe's settings in ``config``, the artifact
it wrote if any and its size) that also names its recipe and how long it took to build. :func:`register` adds a
recipe of your own; :func:`recipes_for` lists the ones that apply to a format.

A recipe that cannot apply here raises :class:`RecipeSkipped` with the reason (no GPU, nothing to
quantize); any other exception is a failure. :class:`optkit.optimize.Optimization` catches both
per recipe, reports the reason and goes on with the others.

Built-in recipes, by format:

- ONNX: ORT offline graph optimization, ORT with one thread, ORT dynamic int8 (MatMul/Gemm/RNN
  weights), ORT static QDQ int8 (per-channel, uint8 activations, calibrated on your data), the
  searched int8 (:mod:`~optkit.optimize.recipes.search`: repairs static int8 when it loses), fp16
  and TensorRT (skipped with a reason unless a GPU and the provider are present);
- torch.export programs (``.pt2``): ``torch.compile`` and the ONNX Runtime route (export to ONNX,
  then fp32, static int8 and the searched int8 in ORT) first, so that the fairest fp32 baselines
  are always measured; then PT2E static and dynamic int8 (x86 inductor quantizer, compiled with
  freezing) and bf16 (where the CPU or GPU has it);
- Keras: XLA (``jit_compile``), TFLite float32, dynamic-range, float16 and full int8, and tf2onnx
  into ONNX Runtime (fp32, static int8, searched int8);
- TFLite: LiteRT with one thread (the baseline already runs XNNPACK with the run's threads), and a
  float ``.tflite`` converted by tf2onnx into ONNX Runtime (fp32, static int8, searched int8); a
  full-integer file has no float graph to convert, and the report says so.

The search profiles the fp32 and plain int8 graphs per operator type
(:mod:`optkit.runtimes.onnxrt.profiling`) and keeps in float the types int8 makes slower; it
tries reduce-range only on a CPU without VNNI.

Submodules: :mod:`~optkit.optimize.recipes.registry` (Recipe, Candidate, Context, the registry),
:mod:`~optkit.optimize.recipes.onnx_runtime` (the ORT recipes, :func:`ort_candidate`),
:mod:`~optkit.optimize.recipes.torch_programs` (the torch.export recipes, :func:`torch_runner`),
:mod:`~optkit.optimize.recipes.tflite` (Keras and TFLite, :func:`litert_candidate`),
:mod:`~optkit.optimize.recipes.keras_onnx` (Keras and TFLite through tf2onnx) and
:mod:`~optkit.optimize.recipes.builtin` (registers the built-in recipes, in the order they are tried).

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from optkit.optimize.recipes import builtin  # noqa: F401  (registers the built-in recipes)
from optkit.optimize.recipes.onnx_runtime import ort_candidate
from optkit.optimize.recipes.registry import (FORMATS, RUNTIMES, Candidate, Context, Recipe, RecipeSkipped,
                                              all_recipes, get_recipe, recipes_for, register, unregister)
from optkit.optimize.recipes.tflite import litert_candidate
from optkit.optimize.recipes.torch_programs import torch_runner

__all__ = [
    "FORMATS", "RUNTIMES", "Recipe", "Candidate", "Context", "RecipeSkipped",
    "register", "unregister", "recipes_for", "all_recipes", "get_recipe",
    "ort_candidate", "torch_runner", "litert_candidate",
]
