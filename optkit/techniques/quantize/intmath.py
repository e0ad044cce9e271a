"""Integer-only int8 arithmetic, computed in numpy: what an int8 kernel does inside.

A quantized linear layer never multiplies floats. With an input ``x ≈ s_x (q_x - z_x)`` (uint8,
asymmetric), weights ``w ≈ s_w q_w`` (int8, symmetric, one ``s_w`` per output channel) and an
output quantized with ``(s_y, z_y)``:

1. **accumulate in int32**: ``acc = sum (q_x - z_x) q_w + q_b``, where the bias is stored as int32
   on the accumulator's scale ``s_x s_w`` (``q_b = round(b / (s_x s_w))``);
2. **requantize**: ``q_y = z_y + round(M acc)`` with ``M = s_x s_w / s_y``, a real number below 1,
   applied as a **fixed-point multiply and shift**: ``M = m0 2^-shift`` with ``m0`` a 31-bit
   integer, so ``round(M acc) = (acc m0 + 2^(shift-1)) >> shift`` in 64-bit integer arithmetic;
3. **clamp** to the output type's range (a fused ReLU is ``clamp`` at ``z_y``).

:func:`fixed_point_multiplier` splits ``M``; :func:`integer_linear` runs the three steps and
returns every intermediate (:class:`IntegerLinear`), so a notebook can show them and compare the
result with the float layer.

Taught in 02_quantization.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optkit.core.errors import OptkitError, check_int

__all__ = ["fixed_point_multiplier", "integer_linear", "IntegerLinear"]


def fixed_point_multiplier(multiplier, bits: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """``(m0, shift)`` with ``multiplier ≈ m0 * 2**-shift`` and ``2**(bits-1) <= m0 < 2**bits``.

    ``multiplier`` is a positive real (or an array of them, one per output channel), typically the
    requantization scale ``s_x s_w / s_y``. ``m0`` keeps ``bits`` significant bits, so the relative
    error is below ``2**-bits``. Integer kernels (gemmlowp, oneDNN, TFLite) store exactly this pair.

    Taught in 02_quantization.
    """
    bits = check_int("bits", bits, 8, 31)
    m = np.asarray(multiplier, dtype=np.float64)
    if m.size == 0 or not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise OptkitError("multiplier", multiplier, "must be positive and finite",
                          "pass the requantization scale s_x * s_w / s_y (one per output channel)")
    mantissa, exponent = np.frexp(m)  # m = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = np.round(mantissa * 2.0 ** bits).astype(np.int64)
    carry = m0 == 2 ** bits  # mantissa rounded up to 1.0
    m0 = np.where(carry, m0 // 2, m0)
    exponent = np.where(carry, exponent + 1, exponent)
    return m0, (bits - exponent).astype(np.int64)


def _rounding_shift(values: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``round(values / 2**shift)`` with halves rounded up, in integer arithmetic (an arithmetic shift)."""
    shift = np.broadcast_to(shift, values.shape)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return np.right_shift(values + half, shift)


@dataclass(frozen=True)
class IntegerLinear:
    """The steps of one integer-only linear layer: ``acc`` (int32 accumulators, bias included),
    ``bias_q`` (the int32 bias), ``multiplier`` (the real ``M`` per output channel), ``m0`` and
    ``shift`` (its fixed-point form), ``q`` (the requantized output codes) and ``y``
    (``q`` dequantized: what the next layer sees, as a float)."""

    acc: np.ndarray
    bias_q: np.ndarray
    multiplier: np.ndarray
    m0: np.ndarray
    shift: np.ndarray
    q: np.ndarray
    y: np.ndarray


def integer_linear(x_q, x_scale: float, x_zero_point: int, w_q, w_scale, bias, y_scale: float,
                   y_zero_point: int, *, qmin: int = 0, qmax: int = 255, relu: bool = False) -> IntegerLinear:
    """A quantized linear layer in integer arithmetic only (numpy), step by step.

    ``x_q``: input codes ``(batch, in)`` with ``(x_scale, x_zero_point)``; ``w_q``: int8 weight codes
    ``(out, in)``, symmetric, with ``w_scale`` (a number, or one per output channel); ``bias``: float
    ``(out,)`` or None; ``(y_scale, y_zero_point)``: the output's quantization, codes in
    ``[qmin, qmax]`` (uint8 by default); ``relu`` clamps at the zero point (a fused ReLU).
    Returns an :class:`IntegerLinear`; ``q`` is within one step of quantizing the float result
    ``(x_scale (x_q - z_x)) (w_scale w_q)^T + bias`` (the fixed-point ``M`` is exact to 2^-31).

    Taught in 02_quantization.
    """
    x_q = np.asarray(x_q)
    w_q = np.asarray(w_q)
    if x_q.ndim != 2 or w_q.ndim != 2 or x_q.shape[1] != w_q.shape[1]:
        raise OptkitError("x_q", getattr(x_q, "shape", x_q), f"does not match weights of shape {w_q.shape}",
                          "pass x_q of shape (batch, in) and w_q of shape (out, in)")
    if not (np.issubdtype(x_q.dtype, np.integer) and np.issubdtype(w_q.dtype, np.integer)):
        raise OptkitError("x_q", x_q.dtype, "codes must be integers",
                          "quantize first, e.g. quantize.quantize(x, scale, zero_point).numpy()")
    n_out = w_q.shape[0]
    w_scale = np.broadcast_to(np.asarray(w_scale, dtype=np.float64).reshape(-1), (n_out,))
    acc_scale = float(x_scale) * w_scale  # the scale of one accumulator unit, per output channel
    bias_q = (np.zeros(n_out, np.int64) if bias is None
              else np.round(np.asarray(bias, dtype=np.float64) / acc_scale).astype(np.int64))
    acc = (x_q.astype(np.int64) - int(x_zero_point)) @ w_q.astype(np.int64).T + bias_q
    if np.abs(acc).max(initial=0) >= 2 ** 31:
        raise OptkitError("x_q", "the inputs", "overflow a 32-bit accumulator",
                          "use 8-bit codes; int8 kernels accumulate in int32")
    multiplier = acc_scale / float(y_scale)
    m0, shift = fixed_point_multiplier(multiplier)
    q = int(y_zero_point) + _rounding_shift(acc * m0, shift)
    q = np.clip(q, max(qmin, int(y_zero_point)) if relu else qmin, qmax)
    y = (q - int(y_zero_point)) * float(y_scale)
    return IntegerLinear(acc=acc.astype(np.int32), bias_q=bias_q.astype(np.int32), multiplier=multiplier, m0=m0,
                         shift=shift, q=q.astype(np.uint8 if qmin >= 0 else np.int8), y=y.astype(np.float32))
