"""Weight-only quantization (int8 and int4) and what 4-bit storage really costs.

Weight-only quantization stores weights as integers and computes in float: each call
dequantizes the weights it needs (or a fused kernel does it on the fly). It saves memory and
memory bandwidth, which is what limits batch-1 generation of large language models; it does not
make the arithmetic cheaper, so on a compute-bound batch it is rarely faster than float.

- :func:`weight_only`: torchao's current API, ``quantize_(model, IntxWeightOnlyConfig(...))``, on
  ``nn.Linear`` and/or ``nn.Embedding`` layers: int8 with one scale per output row, or int4 with
  one scale per group of ``group_size`` weights;
- :func:`pack_int4` / :func:`unpack_int4`: two 4-bit codes per byte. torchao's CPU path keeps int4
  codes one per byte (``IntxUnpackedToInt8Tensor``); a packed file holds half of that, which
  :func:`weight_only` reports as ``info["packed_bytes"]``.

Taught in 02_quantization.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from optkit.core.errors import OptkitError, check_choice, check_int
from optkit.techniques.quantize.recipes import _check_model, _require_layers, quiet_torchao
from optkit.techniques.quantize.result import Quantized

__all__ = ["weight_only", "pack_int4", "unpack_int4"]

_WEIGHT_ONLY_KINDS = {"linear": nn.Linear, "embedding": nn.Embedding}


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Signed 4-bit codes (an integer tensor with values in [-8, 7]) packed two per byte.

    Flattened, code ``2i`` goes in the low nibble of byte ``i`` and code ``2i+1`` in the high
    nibble (an odd count is padded with a 0). Returns a ``uint8`` tensor of ``ceil(n / 2)`` bytes;
    :func:`unpack_int4` reverses it.

    Taught in 02_quantization.
    """
    if not isinstance(q, torch.Tensor) or q.is_floating_point() or q.is_complex():
        raise OptkitError("q", getattr(q, "dtype", type(q).__name__), "must be an integer tensor of 4-bit codes",
                          "quantize first, e.g. quantize.quantize(w, scale, zp, bits=4)")
    flat = q.reshape(-1).to(torch.int16)
    if flat.numel() and (int(flat.min()) < -8 or int(flat.max()) > 7):
        raise OptkitError("q", f"values in [{int(flat.min())}, {int(flat.max())}]", "do not fit in 4 signed bits",
                          "quantize with bits=4 (codes -8 ... 7)")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    nibbles = (flat & 0xF).to(torch.uint8)  # two's complement in 4 bits
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The ``numel`` signed 4-bit codes in ``packed`` (from :func:`pack_int4`), as an int8 tensor.

    Taught in 02_quantization.
    """
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise OptkitError("packed", getattr(packed, "dtype", type(packed).__name__), "must be a uint8 tensor",
                          "pass the result of pack_int4")
    numel = check_int("numel", numel, 0, 2 * packed.numel())
    low = (packed & 0xF).to(torch.int16)
    high = (packed >> 4).to(torch.int16)
    codes = torch.stack([low, high], dim=1).reshape(-1)[:numel]
    return torch.where(codes > 7, codes - 16, codes).to(torch.int8)


def _code_bytes(module: nn.Module) -> int:
    """Bytes of integer weight codes stored in ``module``'s quantized weights (torchao subclasses)."""
    total = 0
    for m in module.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and type(w) is not torch.Tensor and hasattr(w, "__tensor_flatten__"):
            names, _ = w.__tensor_flatten__()
            for n in names:
                t = getattr(w, n)
                if isinstance(t, torch.Tensor) and t.dtype in (torch.int8, torch.uint8) and t.numel() == w.numel():
                    total += t.numel() * t.element_size()
    return total


def weight_only(model: nn.Module, bits: int = 8, kinds: Sequence[str] | str = ("linear",), *,
                group_size: int = 32) -> Quantized:
    """Weight-only quantization with torchao: integer weights, float activations and arithmetic.

    ``bits=8``: int8, one symmetric scale per output row (``IntxWeightOnlyConfig(torch.int8,
    PerAxis(0))``); ``bits=4``: int4, one scale per group of ``group_size`` consecutive weights of
    a row (``PerGroup(group_size)``, the usual choice for 4 bits: a per-row scale would waste most
    of the 16 levels). ``kinds``: the layer types, ``"linear"`` and/or ``"embedding"`` (an
    embedding is a lookup: its rows are dequantized as they are read). The input model is not
    modified.

    ``info["packed_bytes"]`` is the model's size with int4 codes packed two per byte
    (:func:`pack_int4`); torchao on CPU stores them one per byte, so ``size_bytes`` counts that.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    bits = check_int("bits", bits, 4, 8)
    if bits not in (4, 8):
        raise OptkitError("bits", bits, "weight-only quantization here is int8 or int4",
                          "pass bits=8 or bits=4")
    group_size = check_int("group_size", group_size, 1)
    names = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not names:
        raise OptkitError("kinds", kinds, "is empty", "pass ('linear',), ('embedding',) or both")
    types = tuple(_WEIGHT_ONLY_KINDS[check_choice("kinds", k, list(_WEIGHT_ONLY_KINDS))] for k in names)
    found = _require_layers(model, types, "kinds", kinds)
    if bits == 4:
        short = [n for n, m in found if m.weight.shape[-1] % group_size]
        if short:
            raise OptkitError("group_size", group_size, f"does not divide the rows of {', '.join(short[:3])}",
                              "pick a group size that divides every row length (32 or 64 usually do)")
    with quiet_torchao():
        from torchao.quantization import IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerAxis, PerGroup

        config = IntxWeightOnlyConfig(weight_dtype=torch.int8 if bits == 8 else torch.int4,
                                      granularity=PerAxis(0) if bits == 8 else PerGroup(group_size))
        q = copy.deepcopy(model).eval()
        quantize_(q, config, filter_fn=lambda m, _fqn: isinstance(m, types))
    out = Quantized(model=q, module=q, technique=f"int{bits} weight-only (torchao)", runtime="pytorch eager",
                    info={"bits": bits, "kinds": list(names), "layers": [n for n, _ in found],
                          "group_size": group_size if bits == 4 else None})
    codes = _code_bytes(q)
    out.info["packed_bytes"] = int(out.size_bytes - (codes - (codes + 1) // 2 if bits == 4 else 0))
    return out
