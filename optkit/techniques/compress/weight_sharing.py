"""Weight sharing by k-means (Deep Compression, Han et al. 2016), and what it saves.

:func:`kmeans_1d` clusters one layer's weights into ``k`` centroids; :class:`SharedLinear` /
:class:`SharedConv2d` store a codebook (``k`` fp32 values, trainable) and one small index per
weight, and rebuild the weight as ``codebook[indices]`` (so fine-tuning moves the centroids: each
gets the summed gradient of the weights that use it). :func:`share_weights` swaps them into a
model, :func:`decompress` turns them back into ordinary layers for inference.
:func:`storage_report` counts the bytes actually needed (indices at ``ceil(log2 k)`` bits plus the
codebook) against fp32 and int8; :func:`pack_indices` / :func:`unpack_indices` really pack the
indices at that width.

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from optkit.core.errors import OptkitError, check_int
from optkit.techniques.compress._select import _LAYER_TYPES, _layers, _set_module

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["kmeans_1d", "SharedLinear", "SharedConv2d", "share_weights", "decompress", "shared_layers",
           "index_bits", "pack_indices", "unpack_indices", "LayerStorage", "StorageReport", "storage_report"]


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
    k = check_int("k", k, 1)
    n = values.numel()
    if k > n:
        raise OptkitError("k", k, f"is larger than the number of weights ({n:,})",
                          f"pass k <= {n} (16 or fewer centroids is the usual choice)")
    iters = check_int("iters", iters, 1)
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
    k = check_int("k", k, 1)
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
        self.k = check_int("k", k, 1)
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
        kk = check_int(f"k[{name!r}]" if isinstance(k, Mapping) else "k", kk, 1)
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
    bits = check_int("bits", bits, 1)
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
    bits = check_int("bits", bits, 1)
    n = check_int("n", n, 0)
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
