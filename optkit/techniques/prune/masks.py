"""Unstructured pruning and what its zeros cost: masks, sparsity reports and file sizes.

**Unstructured (fine-grained) pruning** zeroes individual weights by magnitude. It keeps the
tensors' shapes, so a dense kernel does the same work and latency does not fall; the zeros do
make the saved file compress (:func:`compressed_size`). :func:`fine_grained_prune` is the pure
primitive on one tensor; :func:`prune_unstructured_` (per layer) and :func:`prune_global_` (one
threshold across layers) apply it to a model through ``torch.nn.utils.prune`` masks, changing
that model in place (the trailing ``_``), and :func:`make_permanent` folds the masks in
(``prune.remove``) so the model stops carrying a ``weight_orig`` and a ``weight_mask`` per
pruned tensor.

Around them: :func:`sparsity_report` (per layer and total), :func:`recalibrate_batchnorm`
(fresh BatchNorm statistics after pruning, no training) and :func:`serialized_size` /
:func:`compressed_size` (what a file of the model costs, raw, gzipped or in CSR form), gathered
for a comparison's records by :func:`storage_stats`. The
layer-name helpers here (:func:`prunable_layers`) are shared by :mod:`.schedule` and
:mod:`.structured`.

Taught in 03_pruning.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from optkit.core.deprecation import renamed
from optkit.core.errors import OptkitError, check_choice, check_int, check_range
from optkit.core.sizes import model_size, state_bytes

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    # reports and sizes
    "LayerSparsity",
    "SparsityReport",
    "sparsity_report",
    "serialized_size",
    "compressed_size",
    "storage_stats",
    "mask_overhead_bytes",
    # unstructured
    "magnitude_mask",
    "fine_grained_prune",
    "prunable_layers",
    "prune_unstructured_",
    "prune_global_",
    "prune_unstructured",
    "prune_global",
    "make_permanent",
    "is_pruned",
    "recalibrate_batchnorm",
]

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# =========================================================================== checks and names

def _fraction(parameter: str, value: Any) -> float:
    """A pruning fraction must be a number in [0, 1): pruning everything leaves nothing to run."""
    return float(check_range(parameter, value, 0, 1, high_open=True))


def prunable_layers(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the conv and linear layers that can be pruned.

    Taught in 03_pruning.
    """
    return [name for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def _resolve_layers(model: nn.Module, layers: Iterable[str] | None, parameter: str = "layers") -> list[str]:
    known = prunable_layers(model)
    if layers is None:
        return known
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    for name in layers:
        if name not in known:
            raise OptkitError(parameter, name, "is not a prunable layer of this model",
                              "use one of " + ", ".join(repr(k) for k in known))
    return layers


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def _effective(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor the next forward pass will use: ``{name}_orig * {name}_mask`` while masked.

    A masked module's ``weight`` attribute is recomputed only by its forward pre-hook, so after
    ``load_state_dict`` (which writes ``weight_orig`` and ``weight_mask``) it is stale until the
    next forward; counting zeros in it would describe the weights before the load.
    """
    mask = getattr(module, name + "_mask", None)
    orig = getattr(module, name + "_orig", None)
    if mask is None or orig is None:
        return getattr(module, name)
    return orig * mask


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# =========================================================================== sparsity report

@dataclass(frozen=True)
class LayerSparsity:
    """Zeros in one layer's weight tensor."""

    name: str
    kind: str
    shape: tuple
    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total sparsity of a model's conv and linear weights.

    ``sparsity`` is over the prunable weights only (biases and BatchNorm are left dense by every
    pruner here); ``params_sparsity`` is over every parameter, the figure a file size follows.
    """

    layers: tuple[LayerSparsity, ...]
    params_total: int
    params_zeros: int

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    @property
    def params_sparsity(self) -> float:
        return self.params_zeros / self.params_total if self.params_total else 0.0

    def __getitem__(self, name: str) -> LayerSparsity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise OptkitError("layer", name, "is not in this report",
                          "use one of " + ", ".join(repr(layer.name) for layer in self.layers))

    def to_frame(self) -> "pd.DataFrame":
        import pandas as pd

        rows = [{"layer": layer.name, "kind": layer.kind, "shape": "x".join(map(str, layer.shape)),
                 "weights": layer.total, "zeros": layer.zeros, "sparsity": layer.sparsity}
                for layer in self.layers]
        rows.append({"layer": "total", "kind": "", "shape": "", "weights": self.total, "zeros": self.zeros,
                     "sparsity": self.sparsity})
        return pd.DataFrame(rows).set_index("layer")

    def __repr__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'kind':<7} {'weights':>9} {'zeros':>9} {'sparsity':>8}"]
        for layer in self.layers:
            lines.append(f"{layer.name:<{width}}  {layer.kind:<7} {layer.total:>9,} {layer.zeros:>9,} "
                         f"{100 * layer.sparsity:7.2f}%")
        lines.append(f"{'total':<{width}}  {'':<7} {self.total:>9,} {self.zeros:>9,} {100 * self.sparsity:7.2f}%")
        lines.append(f"(all {self.params_total:,} parameters, biases and BatchNorm included: "
                     f"{100 * self.params_sparsity:.2f}% zeros)")
        return "\n".join(lines)

    def plot(self, ax=None, title: str | None = None):
        """Bar chart of sparsity per layer, with the total as a dashed line. Returns the figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(self.layers) + 2), 3.4))
        else:
            fig = ax.figure
        names = [layer.name for layer in self.layers]
        ax.bar(range(len(names)), [100 * layer.sparsity for layer in self.layers], color="tab:blue")
        ax.axhline(100 * self.sparsity, ls="--", c="gray", label=f"total {100 * self.sparsity:.1f}%")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel="sparsity (% zeros)", ylim=(0, 100), title=title or "sparsity per layer")
        ax.legend(loc="upper left")
        fig.tight_layout()
        plt.close(fig)
        return fig


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Count the zeros in every conv/linear weight (the effective weight, masks applied).

    Taught in 03_pruning.
    """
    if not isinstance(model, nn.Module):
        raise OptkitError("model", type(model).__name__, "is not a torch.nn.Module", "pass the model itself")
    layers = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, PRUNABLE_TYPES):
                w = _effective(m)
                layers.append(LayerSparsity(name, type(m).__name__, tuple(w.shape), int((w == 0).sum()), w.numel()))
        # every parameter as the model would use it (weight = weight_orig * mask while masked)
        tensors = {}
        for mod_name, m in model.named_modules():
            for p_name, p in m.named_parameters(recurse=False):
                key = p_name[:-5] if p_name.endswith("_orig") else p_name
                tensors[f"{mod_name}.{key}"] = _effective(m, key)
        params_total = sum(t.numel() for t in tensors.values())
        params_zeros = sum(int((t == 0).sum()) for t in tensors.values())
    return SparsityReport(tuple(layers), params_total, params_zeros)


# =========================================================================== sizes

serialized_size = renamed(model_size, "optkit.prune.serialized_size")


def _csr_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes to store ``state`` with every >=2-D tensor in CSR form (fp32 values, smallest int indices)."""
    total = 0
    for t in state.values():
        t = t.detach()
        if t.dim() < 2 or not t.is_floating_point():
            total += t.numel() * t.element_size()
            continue
        rows = t.shape[0]
        cols = t[0].numel()
        nnz = int((t != 0).sum())
        index_bytes = 1 if cols <= 2**8 else 2 if cols <= 2**16 else 4
        ptr_bytes = 2 if nnz < 2**16 else 4
        csr = nnz * (t.element_size() + index_bytes) + (rows + 1) * ptr_bytes
        total += min(csr, t.numel() * t.element_size())  # store dense where CSR does not pay
    return total


def compressed_size(model: nn.Module, method: str = "gzip", level: int = 9) -> int:
    """Bytes of the model's state dict after compression.

    ``method="gzip"``: gzip (``level`` 1-9) of the serialized state dict, what zipping the
    file gives. ``method="csr"``: every weight matrix (convs flattened per output channel) stored
    as CSR (fp32 values + the smallest integer column indices + row pointers), dense where that
    is smaller; ``"csr+gzip"`` gzips that layout's bytes on top. Masks are folded in first
    (the effective weights are what gets stored), so call this on a pruned model directly.

    Taught in 03_pruning.
    """
    check_choice("method", method, ["gzip", "csr", "csr+gzip"])
    check_int("level", level, 1, 9)  # a gzip level
    state = _effective_state(model)
    if method == "gzip":
        return len(gzip.compress(state_bytes(state), compresslevel=level, mtime=0))
    if method == "csr":
        return _csr_bytes(state)
    # csr+gzip: serialize values and indices as the CSR arrays and gzip them
    parts = []
    for t in state.values():
        t = t.detach().cpu()
        if t.dim() < 2 or not t.is_floating_point():
            parts.append(t.contiguous().numpy().tobytes())
            continue
        dense = t.reshape(t.shape[0], -1).numpy()
        rows, cols = np.nonzero(dense)
        crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[0]))]).astype(np.int32)
        parts += [dense[rows, cols].tobytes(), cols.astype(np.int32).tobytes(), crow.tobytes()]
    return len(gzip.compress(b"".join(parts), compresslevel=level, mtime=0))


def storage_stats(model: nn.Module, reference: nn.Module | None = None) -> dict[str, int | float]:
    """What a model's zeros buy on disk, as keys for ``Record.extra``.

    ``nonzero_params``: parameters that are not exactly zero (every parameter, biases and
    BatchNorm included, masks folded in); ``gzip_bytes``: :func:`compressed_size` of the state
    dict; with a ``reference`` model (the dense one), ``gzip_ratio`` = the reference's gzip bytes /
    this model's (above 1: smaller once compressed; 1.0 for the reference itself). Add them to
    the records of a comparison (``r.extra.update(storage_stats(net, reference=dense))``) and show
    them with ``report.tables(records, extra=["nonzero_params", "gzip_bytes", "gzip_ratio"])``.

    Taught in 03_pruning.
    """
    report = sparsity_report(model)
    stats: dict[str, int | float] = {"nonzero_params": report.params_total - report.params_zeros,
                                     "gzip_bytes": compressed_size(model)}
    if reference is not None:
        if not isinstance(reference, nn.Module):
            raise OptkitError("reference", type(reference).__name__, "is not a torch.nn.Module",
                              "pass the dense model the ratio is taken against")
        stats["gzip_ratio"] = compressed_size(reference) / stats["gzip_bytes"]
    return stats


def _effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as a permanent model would save it: ``weight`` = ``weight_orig * weight_mask``."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key[:-5]
            mod_name, _, attr = base.rpartition(".")
            mod = model.get_submodule(mod_name) if mod_name else model
            state[base] = _effective(mod, attr).detach()
        else:
            state[key] = value
    return state


def mask_overhead_bytes(model: nn.Module) -> int:
    """Extra bytes a model carries while pruning masks are attached.

    Each pruned tensor keeps ``weight_orig`` (a full copy) and ``weight_mask`` (same shape, same
    dtype), plus the computed ``weight`` attribute recomputed on every forward. Zero after
    :func:`make_permanent`.

    Taught in 03_pruning.
    """
    extra = 0
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, tprune.BasePruningMethod):
                mask = getattr(m, hook._tensor_name + "_mask")
                orig = getattr(m, hook._tensor_name + "_orig")
                extra += mask.numel() * mask.element_size() + orig.numel() * orig.element_size()
    return extra


# =========================================================================== unstructured

def magnitude_mask(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask (True = keep) that zeroes exactly ``round(sparsity * numel)`` smallest-|w| entries.

    Ties are broken by position, so the count is exact even when many weights are equal (e.g.
    already zero). Pure: ``tensor`` is not modified.

    Taught in 03_pruning.
    """
    sparsity = _fraction("sparsity", sparsity)
    if not isinstance(tensor, torch.Tensor):
        raise OptkitError("tensor", type(tensor).__name__, "is not a torch.Tensor", "pass a tensor")
    n = tensor.numel()
    k = int(round(sparsity * n))
    keep = torch.ones(n, dtype=torch.bool, device=tensor.device)
    if k > 0:
        order = torch.argsort(tensor.detach().abs().flatten(), stable=True)
        keep[order[:k]] = False
    return keep.reshape(tensor.shape)


def fine_grained_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A copy of ``tensor`` with the ``round(sparsity * numel)`` smallest-magnitude entries set to zero.

    The MIT EfficientML lab's ``fine_grained_prune``, as a pure function: the input is untouched.

    Taught in 03_pruning.
    """
    mask = magnitude_mask(tensor, sparsity)
    return tensor.detach() * mask.to(tensor.dtype)


def _masked_count(module: nn.Module, name: str = "weight") -> int:
    mask = getattr(module, name + "_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


def _amount_to_reach(module: nn.Module, target: float, layer: str) -> int:
    n = module.weight.numel()
    already = _masked_count(module)
    want = int(round(target * n))
    if want < already:
        raise OptkitError("sparsity", target, f"is below layer {layer!r}'s current masked sparsity "
                          f"{already / n:.3f}; masks only grow",
                          "start from a fresh copy of the dense model to prune less")
    return want - already


def prune_unstructured_(model: nn.Module, sparsity: float | Mapping[str, float],
                        layers: Iterable[str] | None = None) -> nn.Module:
    """L1 (magnitude) unstructured pruning of each layer to its own target sparsity, in place.

    ``sparsity`` is one fraction for every layer in ``layers`` (default: every conv and linear
    layer) or a ``{layer_name: fraction}`` dict. Targets are *absolute*: a layer already at 50%
    pruned to 0.8 ends at 80%, not 90%. Uses ``torch.nn.utils.prune.l1_unstructured``, so each
    layer gains ``weight_orig`` and ``weight_mask`` until :func:`make_permanent`. Returns ``model``.

    Taught in 03_pruning.
    """
    if isinstance(sparsity, Mapping):
        targets = {name: _fraction(f"sparsity[{name!r}]", s) for name, s in sparsity.items()}
        _resolve_layers(model, targets, "sparsity")
    else:
        s = _fraction("sparsity", sparsity)
        targets = {name: s for name in _resolve_layers(model, layers)}
    for name, s in targets.items():
        m = _module(model, name)
        tprune.l1_unstructured(m, "weight", amount=_amount_to_reach(m, s, name))
    return model


def prune_global_(model: nn.Module, sparsity: float, layers: Iterable[str] | None = None) -> nn.Module:
    """Magnitude pruning with one threshold across ``layers`` (default: every conv and linear), in place.

    The ``round(sparsity * N)`` smallest weights of the N weights in all those layers are
    zeroed together, so layers with many small weights lose more than the global fraction and
    small, important layers (the first conv, the classifier) lose less. Uses
    ``torch.nn.utils.prune.global_unstructured``. Returns ``model``.

    Taught in 03_pruning.
    """
    s = _fraction("sparsity", sparsity)
    names = _resolve_layers(model, layers)
    mods = [_module(model, n) for n in names]
    total = sum(m.weight.numel() for m in mods)
    already = sum(_masked_count(m) for m in mods)
    want = int(round(s * total))
    if want < already:
        raise OptkitError("sparsity", sparsity, f"is below the current masked sparsity {already / total:.3f}; "
                          "masks only grow", "start from a fresh copy of the dense model to prune less")
    tprune.global_unstructured([(m, "weight") for m in mods], pruning_method=tprune.L1Unstructured,
                               amount=want - already)
    return model


prune_unstructured = renamed(prune_unstructured_, "optkit.techniques.prune.prune_unstructured")
prune_global = renamed(prune_global_, "optkit.techniques.prune.prune_global")


def is_pruned(model: nn.Module) -> bool:
    """True while any submodule carries a ``torch.nn.utils.prune`` mask."""
    return tprune.is_pruned(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its weight (``prune.remove``), in place; returns ``model``.

    Afterwards the zeros are ordinary zeros in an ordinary parameter: no ``weight_orig``, no
    ``weight_mask``, no forward pre-hook. Fine-tuning from here may grow them back (nothing
    holds them at zero any more), so fine-tune *before* making pruning permanent.

    Taught in 03_pruning.
    """
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(m, hook._tensor_name)
    return model


def _batches_of(data: Any, batch_size: int, max_samples: int | None):
    """Input batches from a tensor, an optkit Split/Dataset (train split) or an iterable of x / (x, y)."""
    from optkit.data import Dataset, Split

    if isinstance(data, Dataset):
        data = data.train
    if isinstance(data, Split):  # copy (the split's arrays are read-only) only what is used
        data = torch.from_numpy(np.array(data.x[:max_samples] if max_samples is not None else data.x))
    if isinstance(data, torch.Tensor):
        n = len(data) if max_samples is None else min(len(data), max_samples)
        for i in range(0, n, batch_size):
            yield data[i:min(i + batch_size, n)]
        return
    seen = 0
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        yield x
        seen += len(x)
        if max_samples is not None and seen >= max_samples:
            return


def recalibrate_batchnorm(model: nn.Module, data: Any, *, max_samples: int | None = 2048,
                          batch_size: int = 128) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``data``, in place; returns ``model``.

    Pruning changes what each conv outputs, so the statistics BatchNorm collected on the dense
    model no longer match, and accuracy drops more than the pruning itself deserves. This resets
    the statistics and runs forward passes (no gradients, only the BatchNorms in training mode,
    cumulative averaging) over up to ``max_samples`` inputs: no weight changes, a few seconds.
    ``data``: an input tensor, an optkit ``Dataset`` (its train split) or ``Split``, or an
    iterable of batches ``x`` or ``(x, y)``. A model without BatchNorm is returned unchanged.

    Taught in 03_pruning.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in norms}
    try:
        model.eval()
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: every batch counts equally
            bn.train()
        device = next(model.parameters()).device
        n = 0
        with torch.no_grad():
            for x in _batches_of(data, batch_size, max_samples):
                model(x.to(device))
                n += len(x)
        if n == 0:
            raise OptkitError("data", type(data).__name__, "held no inputs", "pass training images")
    finally:
        for bn, mom in momenta.items():
            bn.momentum = mom
        for m, mode in modes.items():
            m.train(mode)
    return model

