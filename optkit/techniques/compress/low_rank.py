"""Low-rank factorization by SVD: a layer replaced by two thin ones whose product is the best
rank-``r`` approximation of its weight.

:func:`singular_values` shows the spectrum, :func:`choose_rank` picks a rank (by retained energy
or by a target compression), :func:`factorize_linear` / :func:`factorize_conv2d` build the drop-in
:class:`LowRankLinear` / :class:`LowRankConv2d`, and :func:`factorize` does a whole model.

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from optkit.core.errors import OptkitError, check_range
from optkit.techniques.compress._select import _LAYER_TYPES, _layers, _set_module

__all__ = ["singular_values", "choose_rank", "LowRankLinear", "LowRankConv2d", "factorize_linear",
           "factorize_conv2d", "factorize"]


def _matrix(module_or_weight: nn.Module | torch.Tensor) -> torch.Tensor:
    if isinstance(module_or_weight, torch.Tensor):
        w = module_or_weight
    elif isinstance(module_or_weight, _LAYER_TYPES):
        if isinstance(module_or_weight, nn.Conv2d) and module_or_weight.groups != 1:
            raise OptkitError("module", module_or_weight, f"is a grouped conv (groups={module_or_weight.groups})",
                              "factorize ordinary convolutions (groups=1) only")
        w = module_or_weight.weight
    else:
        raise OptkitError("module", type(module_or_weight).__name__, "is not a Linear, a Conv2d or a weight tensor",
                          "pass e.g. model.fc1")
    if w.dim() < 2:
        raise OptkitError("weight", tuple(w.shape), "must have at least 2 dimensions", "pass a layer's weight")
    return w.detach().reshape(w.shape[0], -1).to(torch.float32)


def singular_values(module_or_weight: nn.Module | torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of a layer's weight as a matrix ``(out, in * kh * kw)``.

    Taught in 05_compression_and_efficient_architectures.
    """
    return torch.linalg.svdvals(_matrix(module_or_weight))


def _factor_params(out_f: int, in_f: int, rank: int) -> int:
    return rank * (in_f + out_f)


def choose_rank(module_or_weight: nn.Module | torch.Tensor, *, energy: float | None = None,
                compression: float | None = None) -> int:
    """The rank to keep, from exactly one of two rules.

    - ``energy`` in (0, 1]: the smallest rank whose singular values hold that fraction of the
      squared Frobenius norm, ``sum(s[:r]^2) / sum(s^2) >= energy``;
    - ``compression`` > 1: the largest rank whose two factors hold at most ``1 / compression`` of
      the weight's entries, ``r * (in + out) <= in * out / compression``.

    Taught in 05_compression_and_efficient_architectures.
    """
    mat = _matrix(module_or_weight)
    out_f, in_f = mat.shape
    if (energy is None) == (compression is None):
        raise OptkitError("energy/compression", (energy, compression), "exactly one of them must be given",
                          "pass energy=0.9 (keep 90 % of the spectrum's energy) or compression=2.0 (half the weights)")
    if energy is not None:
        check_range("energy", energy, 0, 1, low_open=True)
        s2 = singular_values(mat) ** 2
        cum = torch.cumsum(s2, 0) / s2.sum()
        return int(min(int(torch.searchsorted(cum, torch.tensor(float(energy) - 1e-12)).item()) + 1, len(s2)))
    check_range("compression", compression, 1, low_open=True)
    r = math.floor(out_f * in_f / float(compression) / (in_f + out_f))
    if r < 1:
        raise OptkitError("compression", compression, f"cannot be reached: even rank 1 keeps {in_f + out_f} of "
                          f"{in_f * out_f} weights", "ask for less compression, or leave this layer alone")
    return min(r, min(out_f, in_f))


def _check_rank(rank: Any, full: int, what: str) -> int:
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise OptkitError("rank", rank, "must be a whole number >= 1", f"pass 1 to {full} for {what}")
    if rank > full:
        raise OptkitError("rank", rank, f"is above the full rank of {what} ({full} = min(out, in))",
                          f"pass a rank between 1 and {full}")
    return int(rank)


def _svd_factors(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A (out, r), B (r, in))`` with ``A @ B`` the best rank-r approximation; sqrt(s) split evenly."""
    u, s, vh = torch.linalg.svd(mat.to(torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(torch.float32), (root[:, None] * vh[:rank]).to(torch.float32)


class LowRankLinear(nn.Module):
    """``Linear(in, out)`` as ``second(first(x))``: ``Linear(in, r, bias=False)`` then ``Linear(r, out)``.

    Parameters ``r * (in + out) (+ out)`` instead of ``in * out (+ out)``; fewer only when
    ``r < in * out / (in + out)``. The sizes are ``first.in_features`` and ``second.out_features``
    (the wrapper deliberately has no ``in_features`` of its own, so MAC counters that recognise
    linear layers by that attribute count its two inner layers, not a phantom full-size one).
    Taught in 05_compression_and_efficient_architectures.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.rank = _check_rank(rank, min(in_features, out_features), f"a Linear({in_features}, {out_features})")
        self.first = nn.Linear(in_features, self.rank, bias=False)
        self.second = nn.Linear(self.rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @property
    def full_rank(self) -> int:
        return min(self.first.in_features, self.second.out_features)

    def extra_repr(self) -> str:
        return f"rank={self.rank} of {self.full_rank}"


class LowRankConv2d(nn.Module):
    """``Conv2d(in, out, k)`` as a ``Conv2d(in, r, k)`` (same stride, padding, dilation; no bias) then a
    1x1 ``Conv2d(r, out)`` with the original bias.

    The weight, seen as a matrix ``(out, in * kh * kw)``, is split by SVD. Taught in
    05_compression_and_efficient_architectures.
    """

    def __init__(self, conv: nn.Conv2d, rank: int):
        super().__init__()
        if conv.groups != 1:
            raise OptkitError("conv", conv, f"is a grouped conv (groups={conv.groups})",
                              "factorize ordinary convolutions (groups=1) only")
        full = min(conv.out_channels, conv.in_channels * math.prod(conv.kernel_size))
        self.rank = _check_rank(rank, full, f"this Conv2d({conv.in_channels}, {conv.out_channels}, "
                                            f"{tuple(conv.kernel_size)})")
        self._full = full
        self.first = nn.Conv2d(conv.in_channels, self.rank, conv.kernel_size, conv.stride, conv.padding,
                               conv.dilation, bias=False, padding_mode=conv.padding_mode)
        self.second = nn.Conv2d(self.rank, conv.out_channels, 1, bias=conv.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @property
    def full_rank(self) -> int:
        return self._full

    def extra_repr(self) -> str:
        return f"rank={self.rank} of {self.full_rank}"


def factorize_linear(linear: nn.Linear, rank: int) -> LowRankLinear:
    """The best rank-``rank`` :class:`LowRankLinear` for ``linear`` (truncated SVD of its weight).

    At full rank (``min(in, out)``) its output equals the original's up to float rounding; a rank
    above that raises. Taught in 05_compression_and_efficient_architectures.
    """
    if not isinstance(linear, nn.Linear):
        raise OptkitError("linear", type(linear).__name__, "is not an nn.Linear", "use factorize_conv2d for convs")
    new = LowRankLinear(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
    a, b = _svd_factors(_matrix(linear), new.rank)
    with torch.no_grad():
        new.first.weight.copy_(b)
        new.second.weight.copy_(a)
        if linear.bias is not None:
            new.second.bias.copy_(linear.bias)
    return new.train(linear.training)


def factorize_conv2d(conv: nn.Conv2d, rank: int) -> LowRankConv2d:
    """The best rank-``rank`` :class:`LowRankConv2d` for ``conv`` (truncated SVD of its weight matrix).

    Full rank is ``min(out, in * kh * kw)``; there the output equals the original's up to float
    rounding. Taught in 05_compression_and_efficient_architectures.
    """
    if not isinstance(conv, nn.Conv2d):
        raise OptkitError("conv", type(conv).__name__, "is not an nn.Conv2d", "use factorize_linear for Linear layers")
    new = LowRankConv2d(conv, rank)
    a, b = _svd_factors(_matrix(conv), new.rank)
    with torch.no_grad():
        new.first.weight.copy_(b.reshape(new.rank, conv.in_channels, *conv.kernel_size))
        new.second.weight.copy_(a.reshape(conv.out_channels, new.rank, 1, 1))
        if conv.bias is not None:
            new.second.bias.copy_(conv.bias)
    return new.train(conv.training)


def factorize(model: nn.Module, ranks: Mapping[str, int] | None = None, *, layers: Iterable[str] | None = None,
              energy: float | None = None, compression: float | None = None) -> nn.Module:
    """A copy of ``model`` with Linear / Conv2d layers replaced by their low-rank factorizations.

    Give ``ranks={"fc1": 59, ...}``, or ``layers`` with one rule for all of them (``energy`` or
    ``compression``, see :func:`choose_rank`). The replacements are drop-in modules: same input,
    same output shape, nothing else in the model changes. Read the chosen ranks back from
    ``model.get_submodule(name).rank``. Taught in 05_compression_and_efficient_architectures.
    """
    if ranks is not None:
        if layers is not None or energy is not None or compression is not None:
            raise OptkitError("ranks", ranks, "cannot be combined with layers/energy/compression",
                              "pass either ranks={name: rank} or layers=[...] with energy= or compression=")
        plan = {name: ranks[name] for name in _layers(model, list(ranks))}
    else:
        names = _layers(model, layers)
        plan = {name: choose_rank(model.get_submodule(name), energy=energy, compression=compression)
                for name in names}
    new = copy.deepcopy(model)
    for name, rank in plan.items():
        m = new.get_submodule(name)
        _set_module(new, name, factorize_linear(m, rank) if isinstance(m, nn.Linear) else factorize_conv2d(m, rank))
    return new
