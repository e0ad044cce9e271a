"""Compression beyond quantization and pruning: shared weights, low rank, cheaper blocks.

What it offers:

- **Weight sharing by k-means** (Deep Compression, Han et al. 2016): :func:`kmeans_1d` clusters
  one layer's weights into ``k`` centroids; :class:`SharedLinear` / :class:`SharedConv2d` store a
  codebook (``k`` fp32 values, trainable) and one small index per weight, and rebuild the weight
  as ``codebook[indices]`` (so fine-tuning moves the centroids: each gets the summed gradient of
  the weights that use it). :func:`share_weights` swaps them into a model, :func:`decompress`
  turns them back into ordinary layers for inference. :func:`storage_report` counts the bytes
  actually needed (indices at ``ceil(log2 k)`` bits plus the codebook) against fp32 and int8;
  :func:`pack_indices` / :func:`unpack_indices` really pack the indices at that width.
- **Low-rank factorization by SVD**: :func:`singular_values`, :func:`choose_rank` (by retained
  energy or by a target compression), :func:`factorize_linear` / :func:`factorize_conv2d`
  (drop-in :class:`LowRankLinear` / :class:`LowRankConv2d`: two thin layers whose product is the
  best rank-``r`` approximation of the weight) and :func:`factorize` for a whole model.
- **Efficient blocks**: :class:`ConvBNReLU` (a standard convolution), :class:`DepthwiseSeparableConv`
  (MobileNetV1) and :class:`InvertedResidual` (MobileNetV2), with the same input and output shapes
  so their parameters, MACs and latency can be compared.

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from optkit.core.errors import OptkitError, check_range

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    # weight sharing
    "kmeans_1d",
    "SharedLinear",
    "SharedConv2d",
    "share_weights",
    "decompress",
    "shared_layers",
    "index_bits",
    "pack_indices",
    "unpack_indices",
    "LayerStorage",
    "StorageReport",
    "storage_report",
    # low rank
    "singular_values",
    "choose_rank",
    "LowRankLinear",
    "LowRankConv2d",
    "factorize_linear",
    "factorize_conv2d",
    "factorize",
    # blocks
    "ConvBNReLU",
    "DepthwiseSeparableConv",
    "InvertedResidual",
]

_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def _layers(model: nn.Module, layers: Iterable[str] | None, types=_LAYER_TYPES, what="Linear or Conv2d") -> list[str]:
    known = [n for n, m in model.named_modules() if isinstance(m, types)]
    if layers is None:
        return known
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        if name not in known:
            raise OptkitError("layers", name, f"is not a {what} layer of this model",
                              "use one of " + ", ".join(repr(k) for k in known))
    return names


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _check_int(parameter: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise OptkitError(parameter, value, f"must be a whole number >= {low}", f"pass e.g. {max(low, 16)}")
    return int(value)


# =========================================================================== k-means weight sharing

def kmeans_1d(values: torch.Tensor, k: int, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the entries of ``values`` into ``k`` groups; return ``(centroids (k,), indices (like values))``.

    Lloyd's algorithm in one dimension, started from ``k`` centroids spread linearly between the
    smallest and the largest value (Deep Compression found linear initialisation best: it keeps
    centroids for the rare large weights, which matter most). Assignment is a ``bucketize`` against
    the midpoints of the sorted centroids. Deterministic; stops early when no assignment changes.
    A centroid left without members keeps its place. ``k`` above the number of values raises.

    Taught in 05_compression_and_efficient_architectures.
    """
    if not isinstance(values, torch.Tensor) or values.numel() == 0:
        raise OptkitError("values", type(values).__name__, "must be a non-empty tensor", "pass a layer's weight")
    k = _check_int("k", k)
    n = values.numel()
    if k > n:
        raise OptkitError("k", k, f"is larger than the number of weights ({n:,})",
                          f"pass k <= {n} (16 or fewer centroids is the usual choice)")
    iters = _check_int("iters", iters)
    flat = values.detach().flatten().to(torch.float64)
    lo, hi = float(flat.min()), float(flat.max())
    centroids = torch.linspace(lo, hi, k, dtype=torch.float64) if k > 1 else flat.mean().reshape(1)
    idx = torch.zeros(n, dtype=torch.long)
    for it in range(iters):
        order = torch.argsort(centroids)
        sorted_c = centroids[order]
        bounds = (sorted_c[1:] + sorted_c[:-1]) / 2
        new_idx = order[torch.bucketize(flat, bounds)]
        if it > 0 and torch.equal(new_idx, idx):
            break
        idx = new_idx
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, flat)
        counts = torch.bincount(idx, minlength=k).to(torch.float64)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids.to(values.dtype), idx.reshape(values.shape)


def index_bits(k: int) -> int:
    """Bits per stored index for ``k`` centroids: ``ceil(log2 k)`` (0 for k = 1: one shared value).

    Taught in 05_compression_and_efficient_architectures.
    """
    k = _check_int("k", k)
    return (k - 1).bit_length()


def _index_dtype(k: int) -> torch.dtype:
    return torch.uint8 if k <= 256 else torch.int32


class _Shared(nn.Module):
    """Shared-weight layers: a trainable codebook, fixed indices, and the layer's bias."""

    def _dense_copy(self, out: nn.Module) -> nn.Module:
        """Copy the decoded weight (and bias) into the ordinary layer ``out``; same train/eval mode."""
        with torch.no_grad():
            out.weight.copy_(self.weight)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out.train(self.training)

    def _empty(self, weight_shape: tuple[int, ...], k: int, bias: bool) -> None:
        self.k = _check_int("k", k)
        self.codebook = nn.Parameter(torch.zeros(self.k))
        self.register_buffer("indices", torch.zeros(weight_shape, dtype=_index_dtype(self.k)))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None

    def _fill(self, weight: torch.Tensor, bias: torch.Tensor | None, iters: int) -> None:
        centroids, idx = kmeans_1d(weight, self.k, iters)
        with torch.no_grad():
            self.codebook.copy_(centroids.to(torch.float32))
            self.indices.copy_(idx.to(self.indices.dtype))
            if bias is not None:
                self.bias.copy_(bias.detach())

    @property
    def weight(self) -> torch.Tensor:
        """The layer's weight, rebuilt as ``codebook[indices]`` (differentiable in the codebook)."""
        return self.codebook[self.indices.long()]

    def distinct_values(self) -> int:
        """How many different values the rebuilt weight holds (at most ``k``)."""
        return int(torch.unique(self.weight.detach()).numel())


class SharedLinear(_Shared):
    """A ``Linear`` whose weight is ``codebook[indices]``: ``k`` shared fp32 values.

    Build it with :meth:`from_linear` (runs :func:`kmeans_1d` on the weight); :meth:`to_dense`
    gives the ordinary ``nn.Linear`` with the shared values. Taught in
    05_compression_and_efficient_architectures.
    """

    def __init__(self, in_features: int, out_features: int, k: int = 16, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._empty((self.out_features, self.in_features), k, bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, k: int = 16, iters: int = 50) -> "SharedLinear":
        new = cls(linear.in_features, linear.out_features, k, bias=linear.bias is not None)
        new._fill(linear.weight, linear.bias, iters)
        return new.train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def to_dense(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        return self._dense_copy(out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, "
                f"bias={self.bias is not None}")


class SharedConv2d(_Shared):
    """A ``Conv2d`` whose weight is ``codebook[indices]``: ``k`` shared fp32 values.

    Build it with :meth:`from_conv`; :meth:`to_dense` gives the ordinary ``nn.Conv2d``. Taught in
    05_compression_and_efficient_architectures.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, k: int = 16):
        super().__init__()
        pair = nn.modules.utils._pair
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self._empty((self.out_channels, self.in_channels // self.groups, *self.kernel_size), k, bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, k: int = 16, iters: int = 50) -> "SharedConv2d":
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise OptkitError("conv", conv, f"uses padding={conv.padding!r}, padding_mode={conv.padding_mode!r}",
                              "weight sharing supports numeric zero padding only")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, bias=conv.bias is not None, k=k)
        new._fill(conv.weight, conv.bias, iters)
        return new.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def to_dense(self) -> nn.Conv2d:
        out = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                        self.dilation, self.groups, bias=self.bias is not None)
        return self._dense_copy(out)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, k={self.k}, bias={self.bias is not None}")


def share_weights(model: nn.Module, k: int | Mapping[str, int] = 16, layers: Iterable[str] | None = None,
                  *, iters: int = 50) -> nn.Module:
    """A copy of ``model`` whose Linear and Conv2d layers hold ``k`` shared values each (per-layer codebooks).

    ``k`` is one number for every layer or a ``{layer name: k}`` dict (then only those layers);
    ``layers`` limits which layers are shared. The original model is untouched. Fine-tune the copy
    with any training loop: only the codebooks (and biases) can move, the assignments stay fixed.

    Taught in 05_compression_and_efficient_architectures.
    """
    if isinstance(k, Mapping):
        plan = {name: k[name] for name in _layers(model, list(k))}
    else:
        plan = {name: k for name in _layers(model, layers)}
    new = copy.deepcopy(model)
    for name, kk in plan.items():
        module = new.get_submodule(name)
        n = module.weight.numel()
        kk = _check_int(f"k[{name!r}]" if isinstance(k, Mapping) else "k", kk)
        if kk > n:
            raise OptkitError("k", kk, f"is larger than the number of weights of {name!r} ({n:,})",
                              f"pass k <= {n} for that layer, or leave it out with layers=[...]")
        shared = (SharedLinear.from_linear(module, kk, iters) if isinstance(module, nn.Linear)
                  else SharedConv2d.from_conv(module, kk, iters))
        _set_module(new, name, shared)
    return new


def shared_layers(model: nn.Module) -> dict[str, _Shared]:
    """``{name: layer}`` of the shared-weight layers in ``model``.

    Taught in 05_compression_and_efficient_architectures.
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, _Shared)}


def decompress(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every shared-weight layer turned back into a plain Linear / Conv2d.

    What you run for inference: the same outputs, ordinary kernels, no gather per call. Taught in
    05_compression_and_efficient_architectures.
    """
    new = copy.deepcopy(model)
    for name, module in shared_layers(new).items():
        _set_module(new, name, module.to_dense())
    return new


def pack_indices(indices: torch.Tensor, bits: int) -> bytes:
    """The indices as a bit string, ``bits`` bits each, most significant bit first, padded to a byte.

    ``len(result) == ceil(numel * bits / 8)``. :func:`unpack_indices` reverses it. Taught in
    05_compression_and_efficient_architectures.
    """
    bits = _check_int("bits", bits, 1)
    if bits > 32:
        raise OptkitError("bits", bits, "is above 32", "pass the index width, ceil(log2 k)")
    idx = indices.detach().flatten().to(torch.int64).numpy()
    if idx.size and (idx.min() < 0 or idx.max() >= 2 ** bits):
        raise OptkitError("indices", f"range [{idx.min()}, {idx.max()}]", f"does not fit in {bits} bits",
                          "pass bits=index_bits(k)")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_array = ((idx[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bit_array.reshape(-1)).tobytes()


def unpack_indices(data: bytes, bits: int, n: int) -> torch.Tensor:
    """The ``n`` indices packed by :func:`pack_indices` at ``bits`` bits each, as an int64 tensor.

    Taught in 05_compression_and_efficient_architectures.
    """
    bits = _check_int("bits", bits, 1)
    n = _check_int("n", n, 0)
    need = math.ceil(n * bits / 8)
    if len(data) < need:
        raise OptkitError("data", f"{len(data)} bytes", f"is too short for {n} indices of {bits} bits ({need} bytes)",
                          "pass the bytes pack_indices returned and the same n and bits")
    bit_array = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: n * bits].reshape(n, bits).astype(np.int64)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return torch.from_numpy(bit_array @ weights)


@dataclass(frozen=True)
class LayerStorage:
    """Bytes one weight tensor needs: shared (indices + codebook), fp32 and int8 (per-channel scales).

    ``k`` and ``bits`` are None for layers left in fp32. Taught in
    05_compression_and_efficient_architectures.
    """

    name: str
    weights: int
    k: int | None
    bits: int | None
    index_bytes: int
    codebook_bytes: int
    fp32_bytes: int
    int8_bytes: int

    @property
    def stored_bytes(self) -> int:
        return self.index_bytes + self.codebook_bytes

    @property
    def ratio(self) -> float:
        """fp32 bytes / stored bytes."""
        return self.fp32_bytes / self.stored_bytes if self.stored_bytes else float("inf")


@dataclass(frozen=True)
class StorageReport:
    """Storage of a model's weight tensors, layer by layer, and of everything else (biases ...) in fp32.

    ``stored_bytes`` / ``fp32_bytes`` / ``int8_bytes`` count the weight tensors of the Linear and
    Conv2d layers; ``other_bytes`` the remaining parameters and buffers at their own width (biases in
    fp32; the shared layers' index buffers are *not* counted there, their packed size is in
    ``stored_bytes``). ``ratio`` is fp32 / stored for the weights, ``model_ratio`` the same with
    ``other_bytes`` added to both sides. Taught in 05_compression_and_efficient_architectures.
    """

    layers: tuple[LayerStorage, ...]
    other_bytes: int

    @property
    def stored_bytes(self) -> int:
        return sum(layer.stored_bytes for layer in self.layers)

    @property
    def fp32_bytes(self) -> int:
        return sum(layer.fp32_bytes for layer in self.layers)

    @property
    def int8_bytes(self) -> int:
        return sum(layer.int8_bytes for layer in self.layers)

    @property
    def ratio(self) -> float:
        return self.fp32_bytes / self.stored_bytes

    @property
    def int8_ratio(self) -> float:
        return self.fp32_bytes / self.int8_bytes

    @property
    def model_bytes(self) -> int:
        return self.stored_bytes + self.other_bytes

    @property
    def model_ratio(self) -> float:
        return (self.fp32_bytes + self.other_bytes) / self.model_bytes

    def to_frame(self) -> "pd.DataFrame":
        import pandas as pd

        rows = [{"layer": s.name, "weights": s.weights, "k": s.k, "bits": s.bits, "index_bytes": s.index_bytes,
                 "codebook_bytes": s.codebook_bytes, "stored_bytes": s.stored_bytes, "fp32_bytes": s.fp32_bytes,
                 "int8_bytes": s.int8_bytes, "fp32/stored": s.ratio} for s in self.layers]
        rows.append({"layer": "total (weights)", "weights": sum(s.weights for s in self.layers), "k": None,
                     "bits": None, "index_bytes": sum(s.index_bytes for s in self.layers),
                     "codebook_bytes": sum(s.codebook_bytes for s in self.layers), "stored_bytes": self.stored_bytes,
                     "fp32_bytes": self.fp32_bytes, "int8_bytes": self.int8_bytes, "fp32/stored": self.ratio})
        return pd.DataFrame(rows).set_index("layer")

    def __repr__(self) -> str:
        return (f"StorageReport({len(self.layers)} weight tensors: {self.stored_bytes:,} B stored vs "
                f"{self.fp32_bytes:,} B fp32 ({self.ratio:.2f}x) and {self.int8_bytes:,} B int8 "
                f"({self.int8_ratio:.2f}x); plus {self.other_bytes:,} B of other parameters in fp32)")


def storage_report(model: nn.Module) -> StorageReport:
    """What the model's weights cost to store: shared layers at ``ceil(log2 k)`` bits per index plus a
    ``k``-entry fp32 codebook, every other Linear / Conv2d weight at fp32; the fp32 and int8
    (one byte per weight plus one fp32 scale per output channel) equivalents alongside.

    Taught in 05_compression_and_efficient_architectures.
    """
    rows = []
    counted: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, _Shared):
            n = m.indices.numel()
            bits = index_bits(m.k)
            index_bytes, codebook_bytes = math.ceil(n * bits / 8), m.k * 4
            out_ch = m.indices.shape[0]
            counted.update({id(m.codebook), id(m.indices)})
            rows.append(LayerStorage(name, n, m.k, bits, index_bytes, codebook_bytes, 4 * n, n + 4 * out_ch))
        elif isinstance(m, _LAYER_TYPES):
            n = m.weight.numel()
            counted.add(id(m.weight))
            rows.append(LayerStorage(name, n, None, None, 0, 4 * n, 4 * n, n + 4 * m.weight.shape[0]))
    if not rows:
        raise OptkitError("model", type(model).__name__, "has no Linear or Conv2d layer", "pass the model itself")
    other = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())
                if id(t) not in counted)
    return StorageReport(tuple(rows), int(other))


# =========================================================================== low rank (SVD)

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


# =========================================================================== efficient blocks

class ConvBNReLU(nn.Sequential):
    """A standard ``k x k`` convolution (no bias) + BatchNorm + ReLU: the reference the blocks are
    measured against. Taught in 05_compression_and_efficient_architectures.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation: type[nn.Module] = nn.ReLU):
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), activation())


class DepthwiseSeparableConv(nn.Sequential):
    """MobileNetV1's block: a depthwise 3x3 conv (one filter per channel, ``groups=in``) + BN + ReLU,
    then a pointwise 1x1 conv mixing channels + BN + ReLU.

    MACs per output pixel ``9 * C_in + C_in * C_out`` instead of ``9 * C_in * C_out``. Taught in
    05_compression_and_efficient_architectures.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),
                         ConvBNReLU(in_channels, out_channels, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1 (``C_in -> t * C_in``) + BN + ReLU6, depthwise 3x3 + BN + ReLU6,
    project 1x1 back down (``-> C_out``) + BN with **no** activation (the linear bottleneck), and a
    residual add when ``stride == 1`` and ``C_in == C_out``.

    ``t`` is ``expansion`` (6 in the paper; 1 skips the expansion). Taught in
    05_compression_and_efficient_architectures.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6):
        super().__init__()
        expansion = _check_int("expansion", expansion)
        if stride not in (1, 2):
            raise OptkitError("stride", stride, "must be 1 or 2", "pass stride=1 (same size) or 2 (half)")
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expansion = expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out

    def extra_repr(self) -> str:
        return f"expansion={self.expansion}, residual={self.use_residual}"
