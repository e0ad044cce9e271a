"""The arithmetic of quantization as plain tensor functions (torchao's ``quant_primitives``): no
modules, no models.

- :func:`qrange` is the integer range of a bit width; :func:`choose_qparams` picks ``scale`` and
  ``zero_point`` for a tensor, per tensor or per channel (``axis``), symmetric or asymmetric, for
  any bit width from 2 to 8;
- :func:`quantize` / :func:`dequantize` map floats to integers and back (round, clamp);
  :func:`fake_quantize` does both, :func:`quantization_error` returns what was lost and
  :func:`sqnr` (:func:`optkit.core.verify.sqnr`, the one implementation) measures it in decibels.

The recipes that quantize whole models build on these (:mod:`.recipes`, :mod:`.analysis`).

Taught in 02_quantization.
"""
from __future__ import annotations

import torch

from optkit.core.errors import OptkitError
from optkit.core.verify import sqnr  # noqa: F401  (re-exported: quantize.sqnr is verify.sqnr)

# sqnr is optkit.core.verify.sqnr itself (one implementation for the package), named here where 02
# teaches it. +6 dB per extra bit is the rule of thumb; 8-bit weights typically give 35-45 dB, a
# whole int8 model's logits 20-35 dB; ``inf`` when the two are identical.

__all__ = ["qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize", "quantization_error", "sqnr"]


def qrange(bits: int = 8) -> tuple[int, int]:
    """The signed integer range ``(qmin, qmax)`` of a ``bits``-bit integer: (-128, 127) for 8 bits.

    Taught in 02_quantization.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise OptkitError("bits", bits, "must be a whole number from 2 to 8",
                          "pass bits=8 (int8), or 4 or 2 to see what fewer bits cost")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _check_axis(x: torch.Tensor, axis: int | None) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.dim() <= axis < x.dim():
        raise OptkitError("axis", axis, f"is not a dimension of a {x.dim()}-d tensor",
                          "pass None for one scale per tensor, or 0 for one per output channel")
    return axis % x.dim()


def _reduce_dims(x: torch.Tensor, axis: int | None) -> list[int]:
    return [d for d in range(x.dim()) if d != axis]


def _broadcast(v: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of ``x``."""
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def choose_qparams(x: torch.Tensor, bits: int = 8, symmetric: bool = False,
                   axis: int | None = None, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` mapping the range of ``x`` onto ``bits``-bit signed integers.

    - asymmetric (``symmetric=False``): the range ``[min(x, 0), max(x, 0)]`` is spread over
      ``[qmin, qmax]``: ``scale = (max - min) / (qmax - qmin)``, ``zero_point = round(qmin - min / scale)``
      (the integer that stands for 0.0, so zero is exact: padding and ReLU outputs stay exact);
    - symmetric: ``scale = max|x| / qmax`` and ``zero_point = 0`` (the range ``[-qmax, qmax]``;
      cheaper integer arithmetic, the usual choice for weights).

    ``axis=None`` gives one scale for the whole tensor (0-d tensors); ``axis=k`` one per slice
    along dimension ``k`` (shape ``(x.shape[k],)``), e.g. one per output channel of a weight.
    ``eps`` keeps the scale positive for an all-zero tensor or channel.

    Taught in 02_quantization.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise OptkitError("x", type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype,
                          "must be a floating-point tensor", "pass e.g. layer.weight.detach()")
    if x.numel() == 0:
        raise OptkitError("x", tuple(x.shape), "is empty", "pass a tensor with at least one element")
    qmin, qmax = qrange(bits)
    axis = _check_axis(x, axis)
    xf = x.detach().float()
    if axis is None:
        lo, hi = xf.min(), xf.max()
    else:
        dims = _reduce_dims(xf, axis)
        lo = xf.amin(dim=dims) if dims else xf
        hi = xf.amax(dim=dims) if dims else xf
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    if symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / qmax, min=eps)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=eps)
        zero_point = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


def _check_qparams(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None):
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    axis = _check_axis(x, axis)
    if axis is None and scale.numel() != 1:
        raise OptkitError("axis", None, f"but scale holds {scale.numel()} values (per-channel parameters)",
                          "pass the axis the scales were chosen along, e.g. axis=0")
    if axis is not None and scale.numel() not in (1, x.shape[axis]):
        raise OptkitError("scale", tuple(scale.shape), f"does not match dimension {axis} of x (size {x.shape[axis]})",
                          "choose the parameters with choose_qparams(x, axis=axis)")
    if zero_point.numel() != scale.numel():
        raise OptkitError("zero_point", tuple(zero_point.shape), f"does not match scale {tuple(scale.shape)}",
                          "pass the pair returned by choose_qparams")
    if scale.numel() == 1:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    return scale, zero_point, axis


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8,
             axis: int | None = None) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, qmin, qmax)`` as an ``int8`` tensor.

    ``round`` is round-half-to-even (``torch.round``). Values beyond the range clamp to the
    nearest integer end: that is the *clipping* error, as opposed to the *rounding* error of
    at most ``scale / 2`` for values inside it. Fewer than 8 bits are still stored one per byte.

    Taught in 02_quantization.
    """
    qmin, qmax = qrange(bits)
    scale, zero_point, axis = _check_qparams(x, scale, zero_point, axis)
    s = _broadcast(scale, x, axis)
    z = _broadcast(zero_point.to(torch.float32), x, axis)
    q = torch.clamp(torch.round(x.detach().float() / s) + z, qmin, qmax)
    return q.to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
               axis: int | None = None) -> torch.Tensor:
    """``(q - zero_point) * scale`` as float32: the value each integer stands for.

    Taught in 02_quantization.
    """
    scale, zero_point, axis = _check_qparams(q, scale, zero_point, axis)
    s = _broadcast(scale, q, axis)
    z = _broadcast(zero_point.to(torch.float32), q, axis)
    return (q.to(torch.float32) - z) * s


def fake_quantize(x: torch.Tensor, bits: int = 8, symmetric: bool = False,
                  axis: int | None = None) -> torch.Tensor:
    """Quantize then dequantize ``x`` with parameters chosen from ``x`` itself: float values
    that lie on the integer grid, i.e. what the quantized model actually computes with.

    Taught in 02_quantization.
    """
    scale, zp = choose_qparams(x, bits, symmetric, axis)
    return dequantize(quantize(x, scale, zp, bits, axis), scale, zp, axis).to(x.dtype)


def quantization_error(x: torch.Tensor, bits: int = 8, symmetric: bool = False,
                       axis: int | None = None) -> torch.Tensor:
    """``x - fake_quantize(x)``, element by element (at most ``scale / 2`` in magnitude).

    Taught in 02_quantization.
    """
    return x.detach().float() - fake_quantize(x.detach().float(), bits, symmetric, axis)
