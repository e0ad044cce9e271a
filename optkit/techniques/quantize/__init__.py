"""Quantization: the arithmetic as plain tensor functions, and one function per recipe.

Split the way torchao splits ``quant_primitives`` from ``quant_api``:

- :mod:`.primitives`: the arithmetic (pure functions on tensors, no modules): :func:`qrange`,
  :func:`choose_qparams` (per tensor or per channel, symmetric or asymmetric, 2 to 8 bits),
  :func:`quantize` / :func:`dequantize`, :func:`fake_quantize`, :func:`quantization_error` and
  :func:`sqnr` (the same function as :func:`optkit.core.verify.sqnr`);
- :mod:`.recipes`: one function per way of quantizing a model: :func:`dynamic_int8` (torchao
  dynamic or weight-only, or legacy ``torch.ao`` for LSTMs), :func:`static_int8` (PT2E with
  calibration), :func:`legacy_static_int8` (the deprecated eager path, kept to explain its
  warning), :func:`qat_int8`, :func:`reduced_float` (bf16/fp16), with :func:`int8_reduce_range`,
  :func:`compile_frozen` and :func:`quiet_torchao`;
- :mod:`.lowbit`: :func:`weight_only` (torchao int8 / int4 weight-only, on Linear and Embedding
  layers) and 4-bit packing (:func:`pack_int4`, :func:`unpack_int4`);
- :mod:`.intmath`: integer-only int8 arithmetic in numpy (:func:`integer_linear`: int32
  accumulation, the requantization multiplier as a fixed-point multiply and shift,
  :func:`fixed_point_multiplier`);
- :mod:`.result`: :class:`Quantized`, what every recipe returns (evaluate it, turn it into a
  :class:`optkit.core.variant.Variant` for ``variant.evaluate``, or time it alone into a
  :class:`optkit.core.record.Record`), :func:`parity` and :func:`fixed_batches`;
- :mod:`.analysis`: :func:`sensitivity` (one layer at a time), :func:`mixed_precision` (keep the
  most sensitive layers in float), what a model really stores (:func:`weight_storage`,
  :func:`int8_tensors`), and the fp32 baselines an int8 model must beat (:func:`float_variants`).

Layer types are chosen with ``kinds=`` (``"linear"``, ``"conv2d"``); ``layers=`` names a model's
own modules everywhere in optkit (the 0.1 keyword ``layers=`` of :func:`dynamic_int8` and
:func:`sensitivity` still works, with a ``DeprecationWarning``). torchao and torch.export are
imported inside functions, so ``import optkit.techniques.quantize`` stays light.

Taught in 02_quantization.
"""
from __future__ import annotations

from optkit.techniques.quantize.primitives import (choose_qparams, dequantize, fake_quantize, qrange, quantization_error,
                                                   quantize, sqnr)
from optkit.techniques.quantize.result import Quantized, fixed_batches, parity
from optkit.techniques.quantize import recipes as _recipes
from optkit.techniques.quantize.recipes import (FrozenCompiled, compile_frozen, drop_dead_weights_, dynamic_int8, int8_reduce_range,
                                                legacy_static_int8, pt2e_int8, qat_int8, quiet_torchao, reduced_float,
                                                static_int8)
from optkit.techniques.quantize.lowbit import pack_int4, unpack_int4, weight_only
from optkit.techniques.quantize.intmath import IntegerLinear, fixed_point_multiplier, integer_linear
from optkit.techniques.quantize.analysis import (LayerSensitivity, float_variants, int8_tensors, mixed_precision,
                                                 sensitivity, state_dict_size, weight_storage)

__all__ = [
    # arithmetic
    "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize", "quantization_error", "sqnr",
    # recipes
    "Quantized", "dynamic_int8", "static_int8", "pt2e_int8", "drop_dead_weights_", "legacy_static_int8", "qat_int8", "reduced_float",
    "compile_frozen", "FrozenCompiled", "weight_only", "pack_int4", "unpack_int4",
    # integer-only arithmetic
    "fixed_point_multiplier", "integer_linear", "IntegerLinear",
    "LayerSensitivity", "sensitivity", "mixed_precision",
    # helpers
    "state_dict_size", "weight_storage", "int8_tensors", "quiet_torchao", "parity", "int8_reduce_range",
    # comparisons (variant.evaluate)
    "float_variants", "fixed_batches",
]

#: private, but 02_quantization builds its PT2E walk-through on it as ``quantize._x86_quantizer``
_x86_quantizer = _recipes._x86_quantizer
