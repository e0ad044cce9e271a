"""Pruning: zero the weights that matter least, then make the zeros pay.

Two kinds of pruning, and what each one buys:

- **Unstructured (fine-grained) pruning** zeroes individual weights by magnitude. It keeps the
  tensors' shapes, so a dense kernel does the same work and latency does not fall; the zeros do
  make the saved file compress (:func:`compressed_size`). :func:`fine_grained_prune` is the
  pure primitive on one tensor; :func:`prune_unstructured` (per layer) and :func:`prune_global`
  (one threshold across layers) apply it to a model through ``torch.nn.utils.prune`` masks, and
  :func:`make_permanent` folds the masks in (``prune.remove``) so the model stops carrying a
  ``weight_orig`` and a ``weight_mask`` per pruned tensor.
- **Structured (channel) pruning** removes whole conv filters, so the model is physically smaller
  and faster. Removing a conv's output channels forces its dependents to shrink with it: the
  BatchNorm after it, the next conv's input channels, the linear head after global pooling.
  Channels joined by a residual ``add`` must be removed *together* in every layer that writes to
  that sum, or the add breaks. :func:`channel_groups` finds these coupled groups by tracing the
  model with ``torch.fx`` (the idea behind Torch-Pruning's ``DependencyGraph``, in miniature);
  :func:`prune_channels` removes the lowest-norm channels of each group and returns a new, smaller
  dense model. The verb-object primitives (:func:`prune_conv_out_channels` and friends) shrink
  one module at a time and know nothing about dependencies: that is their point in the lesson.

Around them: :func:`sparsity_report` (per layer and total), :func:`sensitivity_scan` (accuracy as
each layer alone is pruned), :func:`iterative_prune` (prune a little, fine-tune, repeat, stop at a
target sparsity or an accuracy drop), :func:`recalibrate_batchnorm` (fresh BatchNorm statistics
after pruning, no training) and :func:`serialized_size` / :func:`compressed_size` (what a file
of the model costs, raw, gzipped or in CSR form).

Taught in 03_pruning.
"""
from __future__ import annotations

import copy
import gzip
import math
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from optkit.core.deprecation import renamed
from optkit.core.errors import OptkitError, check_choice
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
    "mask_overhead_bytes",
    # unstructured
    "magnitude_mask",
    "fine_grained_prune",
    "prunable_layers",
    "prune_unstructured",
    "prune_global",
    "make_permanent",
    "is_pruned",
    "recalibrate_batchnorm",
    # sensitivity and schedules
    "SensitivityScan",
    "sensitivity_scan",
    "PruneStep",
    "PruneHistory",
    "iterative_prune",
    # structured
    "ChannelGroup",
    "channel_groups",
    "prune_channels",
    "channel_importance",
    "prune_conv_out_channels",
    "prune_conv_in_channels",
    "prune_batchnorm",
    "prune_linear_in_features",
    "prune_linear_out_features",
]

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# =========================================================================== checks and names

def _check_ratio(parameter: str, value: Any) -> float:
    """A pruning ratio must be a number in [0, 1): pruning everything leaves nothing to run."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value)):
        raise OptkitError(parameter, value, "must be a number", "pass a fraction in [0, 1), e.g. 0.5")
    if not 0.0 <= float(value) < 1.0:
        raise OptkitError(parameter, value, "is outside [0, 1)",
                          "pass the fraction of weights to remove, e.g. 0.5 for half; 1.0 would remove everything")
    return float(value)


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
                w = m.weight
                layers.append(LayerSparsity(name, type(m).__name__, tuple(w.shape), int((w == 0).sum()), w.numel()))
        # every parameter as the model would use it (weight = weight_orig * mask while masked)
        tensors = {}
        for mod_name, m in model.named_modules():
            for p_name, p in m.named_parameters(recurse=False):
                key = p_name[:-5] if p_name.endswith("_orig") else p_name
                tensors[f"{mod_name}.{key}"] = getattr(m, key)
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
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
        raise OptkitError("level", level, "is not a gzip level", "pass an int in 1..9")
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
            state[base] = getattr(mod, attr).detach()
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
    sparsity = _check_ratio("sparsity", sparsity)
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


def prune_unstructured(model: nn.Module, sparsity: float | Mapping[str, float],
                       layers: Iterable[str] | None = None) -> nn.Module:
    """L1 (magnitude) unstructured pruning of each layer to its own target sparsity, in place.

    ``sparsity`` is one fraction for every layer in ``layers`` (default: every conv and linear
    layer) or a ``{layer_name: fraction}`` dict. Targets are *absolute*: a layer already at 50%
    pruned to 0.8 ends at 80%, not 90%. Uses ``torch.nn.utils.prune.l1_unstructured``, so each
    layer gains ``weight_orig`` and ``weight_mask`` until :func:`make_permanent`. Returns ``model``.

    Taught in 03_pruning.
    """
    if isinstance(sparsity, Mapping):
        targets = {name: _check_ratio(f"sparsity[{name!r}]", s) for name, s in sparsity.items()}
        _resolve_layers(model, targets, "sparsity")
    else:
        s = _check_ratio("sparsity", sparsity)
        targets = {name: s for name in _resolve_layers(model, layers)}
    for name, s in targets.items():
        m = _module(model, name)
        tprune.l1_unstructured(m, "weight", amount=_amount_to_reach(m, s, name))
    return model


def prune_global(model: nn.Module, sparsity: float, layers: Iterable[str] | None = None) -> nn.Module:
    """Magnitude pruning with one threshold across ``layers`` (default: every conv and linear), in place.

    The ``round(sparsity * N)`` smallest weights of the N weights in all those layers are
    zeroed together, so layers with many small weights lose more than the global fraction and
    small, important layers (the first conv, the classifier) lose less. Uses
    ``torch.nn.utils.prune.global_unstructured``. Returns ``model``.

    Taught in 03_pruning.
    """
    s = _check_ratio("sparsity", sparsity)
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


# =========================================================================== sensitivity

@dataclass
class SensitivityScan:
    """Score of the model as each layer alone is pruned at each ratio (the others left dense)."""

    ratios: list[float]
    scores: dict[str, list[float]]
    dense_score: float
    sizes: dict[str, int] = field(default_factory=dict)

    def drop(self, layer: str) -> list[float]:
        return [self.dense_score - s for s in self.scores[layer]]

    def choose_ratios(self, max_drop: float) -> dict[str, float]:
        """Per layer, the largest scanned ratio whose score drop is at most ``max_drop`` (0 if none)."""
        out = {}
        for layer, scores in self.scores.items():
            ok = [r for r, s in zip(self.ratios, scores) if self.dense_score - s <= max_drop]
            out[layer] = max(ok) if ok else 0.0
        return out

    def to_frame(self) -> "pd.DataFrame":
        import pandas as pd

        frame = pd.DataFrame(self.scores, index=[f"{r:.2f}" for r in self.ratios]).T
        frame.index.name = "layer"
        frame.columns.name = "ratio"
        return frame

    def plot(self, ax=None, title: str | None = None, scale: float = 100.0):
        """One line per layer: score (x ``scale``) against the ratio, the dense score dashed."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(7.5, 3.8))
        else:
            fig = ax.figure
        for layer, scores in self.scores.items():
            ax.plot(self.ratios, [scale * s for s in scores], marker="o", label=layer)
        ax.axhline(scale * self.dense_score, ls="--", c="gray", label="dense")
        ax.set(xlabel="ratio pruned (this layer only)", ylabel="accuracy (%)" if scale == 100 else "score",
               title=title or "sensitivity: each layer pruned alone")
        ax.legend(fontsize=7, ncol=2, loc="lower left")
        fig.tight_layout()
        plt.close(fig)
        return fig


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    if isinstance(ratios, (int, float)):
        ratios = [ratios]
    ratios = list(ratios)
    if not ratios:
        raise OptkitError("ratios", ratios, "is empty", "pass e.g. [0.3, 0.5, 0.7, 0.9]")
    return [_check_ratio("ratios", r) for r in ratios]


def sensitivity_scan(model: nn.Module, evaluate_fn: Callable[[nn.Module], float],
                     ratios: Sequence[float] = (0.3, 0.5, 0.7, 0.9), layers: Iterable[str] | None = None,
                     progress: bool = False) -> SensitivityScan:
    """Prune each layer alone (magnitude, unstructured) at each ratio and score the model.

    ``evaluate_fn(model) -> float`` (higher is better, e.g. accuracy on a validation subset).
    The weights are restored after every evaluation, so ``model`` ends as it started. Cost:
    ``len(layers) * len(ratios) + 1`` calls of ``evaluate_fn``.

    Taught in 03_pruning.
    """
    ratios = _check_ratios(ratios)
    if not callable(evaluate_fn):
        raise OptkitError("evaluate_fn", evaluate_fn, "is not callable", "pass a function model -> score")
    if is_pruned(model):
        raise OptkitError("model", type(model).__name__, "still carries pruning masks",
                          "scan the dense model, or call make_permanent(model) first")
    names = _resolve_layers(model, layers)
    dense = float(evaluate_fn(model))
    scores: dict[str, list[float]] = {}
    iterator = names
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(names, desc="sensitivity scan")
    for name in iterator:
        w = _module(model, name).weight
        saved = w.detach().clone()
        row = []
        try:
            for r in ratios:
                with torch.no_grad():
                    w.copy_(fine_grained_prune(saved, r))
                row.append(float(evaluate_fn(model)))
        finally:
            with torch.no_grad():
                w.copy_(saved)
        scores[name] = row
    sizes = {n: _module(model, n).weight.numel() for n in names}
    return SensitivityScan(ratios, scores, dense, sizes)


# =========================================================================== iterative schedule

@dataclass(frozen=True)
class PruneStep:
    """One step of :func:`iterative_prune`: sparsity reached, score after pruning and after fine-tuning."""

    step: int
    sparsity: float
    score_pruned: float
    score_tuned: float


@dataclass
class PruneHistory:
    """What :func:`iterative_prune` did, step by step, and why it stopped."""

    dense_score: float
    steps: list[PruneStep]
    stopped: str
    final_sparsity: float

    def to_frame(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame([s.__dict__ for s in self.steps]).set_index("step")

    def plot(self, ax=None, scale: float = 100.0, title: str | None = None):
        """Score against sparsity, before and after each fine-tune."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots()
        else:
            fig = ax.figure
        xs = [0.0] + [100 * s.sparsity for s in self.steps]
        ax.plot(xs, [scale * self.dense_score] + [scale * s.score_pruned for s in self.steps], marker="x",
                ls=":", label="right after pruning")
        ax.plot(xs, [scale * self.dense_score] + [scale * s.score_tuned for s in self.steps], marker="o",
                label="after fine-tuning")
        ax.set(xlabel="sparsity (%)", ylabel="accuracy (%)" if scale == 100 else "score",
               title=title or "iterative pruning")
        ax.legend()
        fig.tight_layout()
        plt.close(fig)
        return fig


def _schedule(target: float, steps: int, kind: str) -> list[float]:
    if kind == "linear":
        return [target * (i + 1) / steps for i in range(steps)]
    # cubic (Zhu & Gupta 2017): prune fast while there are many redundant weights, then slowly
    return [target * (1 - (1 - (i + 1) / steps) ** 3) for i in range(steps)]


def iterative_prune(model: nn.Module, target_sparsity: float, evaluate_fn: Callable[[nn.Module], float],
                    fine_tune_fn: Callable[[nn.Module], Any] | None = None, *, steps: int = 4,
                    schedule: str = "cubic", scope: str = "global", layers: Iterable[str] | None = None,
                    max_drop: float | None = None, progress: bool = False) -> PruneHistory:
    """Prune to ``target_sparsity`` in ``steps`` steps, fine-tuning after each; stop early on an accuracy drop.

    Each step raises the sparsity along ``schedule`` ("cubic": big steps first, or "linear"),
    magnitude-prunes (``scope="global"``: one threshold, or ``"layer"``: the same fraction per
    layer), scores, calls ``fine_tune_fn(model)`` (which trains ``model`` in place; the masks
    keep pruned weights at zero while it trains), and scores again. With ``max_drop``, a step
    whose fine-tuned score is more than ``max_drop`` below the dense score is undone (weights
    and masks restored) and the schedule stops there: adaptive pruning. ``model`` keeps its
    masks; call :func:`make_permanent` when done.

    Taught in 03_pruning.
    """
    target = _check_ratio("target_sparsity", target_sparsity)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise OptkitError("steps", steps, "must be a positive whole number", "pass e.g. steps=4")
    check_choice("schedule", schedule, ["cubic", "linear"])
    check_choice("scope", scope, ["global", "layer"])
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or max_drop < 0):
        raise OptkitError("max_drop", max_drop, "must be a non-negative number or None",
                          "pass e.g. 0.01 for one accuracy point")
    if not callable(evaluate_fn):
        raise OptkitError("evaluate_fn", evaluate_fn, "is not callable", "pass a function model -> score")
    if fine_tune_fn is not None and not callable(fine_tune_fn):
        raise OptkitError("fine_tune_fn", fine_tune_fn, "is not callable", "pass a function model -> None, or None")
    names = _resolve_layers(model, layers)
    prune_fn = prune_global if scope == "global" else prune_unstructured
    prune_fn(model, 0.0, layers=names)  # attach masks of ones, so every snapshot has the same keys
    dense = float(evaluate_fn(model))
    history: list[PruneStep] = []
    stopped = f"reached the target sparsity {target:.2f}"
    iterator = list(enumerate(_schedule(target, steps, schedule), start=1))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="iterative pruning")
    for i, s in iterator:
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        prune_fn(model, s, layers=names)
        score_pruned = float(evaluate_fn(model))
        if fine_tune_fn is not None:
            fine_tune_fn(model)
        score_tuned = float(evaluate_fn(model)) if fine_tune_fn is not None else score_pruned
        if max_drop is not None and dense - score_tuned > max_drop:
            model.load_state_dict(snapshot)
            stopped = (f"stopped at step {i}: sparsity {s:.3f} dropped the score by {dense - score_tuned:.4f} "
                       f"> max_drop {max_drop}; that step was undone")
            break
        history.append(PruneStep(i, sparsity_report_of(model, names), score_pruned, score_tuned))
    final = sparsity_report_of(model, names)
    return PruneHistory(dense, history, stopped, final)


def sparsity_report_of(model: nn.Module, layers: Sequence[str]) -> float:
    """Total sparsity over the named layers' weights (helper for schedules)."""
    with torch.no_grad():
        ws = [_module(model, n).weight for n in layers]
        return sum(int((w == 0).sum()) for w in ws) / max(1, sum(w.numel() for w in ws))


# =========================================================================== structured: primitives

def _as_index(keep: Sequence[int] | torch.Tensor, size: int, parameter: str = "keep") -> torch.Tensor:
    idx = torch.as_tensor(keep, dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise OptkitError(parameter, list(idx.tolist()), "keeps no channel", "keep at least one channel")
    if int(idx.min()) < 0 or int(idx.max()) >= size:
        raise OptkitError(parameter, idx.tolist()[:8], f"has indices outside 0..{size - 1}", "pass valid channel ids")
    return idx


def _copy_into(new: nn.Module, old: nn.Module) -> nn.Module:
    new.train(old.training)
    return new.to(device=next(old.parameters()).device, dtype=next(old.parameters()).dtype)


def prune_conv_out_channels(conv: nn.Conv2d, keep) -> nn.Conv2d:
    """A new conv with only the output filters in ``keep`` (weights and bias copied). Pure.

    Taught in 03_pruning.
    """
    if conv.groups != 1:
        raise OptkitError("conv", conv, "is a grouped/depthwise conv", "only groups=1 convs are pruned here")
    idx = _as_index(keep, conv.out_channels)
    new = type(conv)(conv.in_channels, len(idx), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     1, conv.bias is not None, conv.padding_mode)
    new = _copy_into(new, conv)
    with torch.no_grad():
        new.weight.copy_(conv.weight[idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[idx])
    return new


def prune_conv_in_channels(conv: nn.Conv2d, keep) -> nn.Conv2d:
    """A new conv reading only the input channels in ``keep``. Pure.

    Taught in 03_pruning.
    """
    if conv.groups != 1:
        raise OptkitError("conv", conv, "is a grouped/depthwise conv", "only groups=1 convs are pruned here")
    idx = _as_index(keep, conv.in_channels)
    new = type(conv)(len(idx), conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     1, conv.bias is not None, conv.padding_mode)
    new = _copy_into(new, conv)
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def prune_batchnorm(bn: nn.modules.batchnorm._BatchNorm, keep) -> nn.modules.batchnorm._BatchNorm:
    """A new BatchNorm over only the channels in ``keep`` (affine params and running stats). Pure.

    Taught in 03_pruning.
    """
    idx = _as_index(keep, bn.num_features)
    new = type(bn)(len(idx), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats)
    new.train(bn.training)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[idx])
            new.bias.copy_(bn.bias[idx])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.to(bn.running_mean.device if bn.running_mean is not None else "cpu")


def prune_linear_in_features(linear: nn.Linear, keep, block: int = 1) -> nn.Linear:
    """A new linear reading only input channels ``keep``; each channel spans ``block`` features.

    ``block`` is H*W when the linear follows ``flatten`` of an (N, C, H, W) map (channel c owns
    features c*H*W .. c*H*W + H*W - 1); 1 after global pooling. Pure.

    Taught in 03_pruning.
    """
    if linear.in_features % block:
        raise OptkitError("block", block, f"does not divide in_features={linear.in_features}",
                          "pass H*W of the flattened feature map")
    idx = _as_index(keep, linear.in_features // block)
    cols = (idx[:, None] * block + torch.arange(block)[None, :]).flatten()
    new = _copy_into(nn.Linear(len(cols), linear.out_features, linear.bias is not None), linear)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, cols])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def prune_linear_out_features(linear: nn.Linear, keep) -> nn.Linear:
    """A new linear producing only the output features in ``keep``. Pure.

    Taught in 03_pruning.
    """
    idx = _as_index(keep, linear.out_features)
    new = _copy_into(nn.Linear(linear.in_features, len(idx), linear.bias is not None), linear)
    with torch.no_grad():
        new.weight.copy_(linear.weight[idx])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[idx])
    return new


# =========================================================================== structured: dependency graph

@dataclass
class ChannelGroup:
    """Channels that must be removed together: one "channel space" of the traced graph.

    ``producers`` write these channels (conv filters / linear rows); ``norms`` are BatchNorms over
    them; ``consumers`` read them, as ``(layer, block)`` where ``block`` is the number of input
    features per channel (H*W after a flatten, 1 otherwise). More than one producer means the
    channels meet in a residual ``add``. ``blocked_by`` says why the group cannot be pruned
    (it reaches the model output, the input, or an operation this tracer does not follow).
    """

    producers: list[str]
    norms: list[str]
    consumers: list[tuple[str, int]]
    channels: int
    blocked_by: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked_by and bool(self.producers)

    @property
    def residual(self) -> bool:
        return len(self.producers) > 1

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else "blocked: " + "; ".join(self.blocked_by)
        joined = " (joined by a residual add)" if self.residual else ""
        cons = ", ".join(f"{c}" + (f"[x{b}]" if b != 1 else "") for c, b in self.consumers)
        return (f"ChannelGroup({self.channels} ch{joined}; written by {', '.join(self.producers) or '-'}; "
                f"norms {', '.join(self.norms) or '-'}; read by {cons or '-'}; {state})")


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def new(self) -> int:
        i = len(self.parent)
        self.parent[i] = i
        return i

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d,
                 nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d, nn.AvgPool1d,
                 nn.AdaptiveAvgPool1d)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.gelu,
                   torch.nn.functional.silu, torch.sigmoid, torch.tanh, torch.nn.functional.dropout,
                   torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
                   torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d,
                   torch.nn.functional.hardswish, torch.nn.functional.leaky_relu}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCTIONS = {torch.flatten}


class _Graph:
    """Channel spaces of a traced model (internal; see :func:`channel_groups`)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        import torch.fx
        from torch.fx.passes.shape_prop import ShapeProp

        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as exc:  # data-dependent control flow and the like
            raise OptkitError("model", type(model).__name__, f"cannot be traced by torch.fx ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]})",
                              "structured pruning follows dependencies through a traced graph; use a model "
                              "without data-dependent Python control flow, or Torch-Pruning") from None
        was_training = model.training
        gm.eval()
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(example_input)
        except Exception as exc:
            raise OptkitError("example_input", tuple(getattr(example_input, "shape", ())),
                              f"does not run through the model ({type(exc).__name__})",
                              "pass a real input batch of the model's input shape") from None
        finally:
            model.train(was_training)
        self.uf = _UnionFind()
        self.space_of: dict[Any, int] = {}   # fx node -> space id (channel dim 1)
        self.block_of: dict[Any, int] = {}   # fx node -> features per channel (after flatten)
        self.info: dict[int, dict] = {}      # space id -> producers/norms/consumers/blocked/channels
        modules = dict(gm.named_modules())

        def new_space(channels: int) -> int:
            s = self.uf.new()
            self.info[s] = {"producers": [], "norms": [], "consumers": [], "blocked": [], "channels": channels}
            return s

        def shape(node):
            meta = node.meta.get("tensor_meta")
            return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

        def tensor_inputs(node):
            return [a for a in node.all_input_nodes if a in self.space_of]

        def block(space_node, why: str):
            for a in ([space_node] if not isinstance(space_node, list) else space_node):
                if a in self.space_of:
                    self.info[self.space_of[a]]["blocked"].append(why)

        for node in gm.graph.nodes:
            shp = shape(node)
            channels = shp[1] if shp is not None and len(shp) >= 2 else 0
            if node.op == "placeholder":
                s = new_space(channels)
                self.info[s]["blocked"].append("the model input (its channels are fixed by the data)")
                self.space_of[node] = s
                self.block_of[node] = 1
                continue
            if node.op == "output":
                for a in node.all_input_nodes:
                    block(a, "the model output (its size is fixed by the task)")
                continue
            ins = tensor_inputs(node)
            if node.op == "get_attr":
                continue
            if node.op == "call_module":
                mod = modules[node.target]
                src = node.args[0] if node.args else None
                if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups == 1 and src in self.space_of:
                    self._consume(src, node.target, 1)
                    s = new_space(mod.out_channels)
                    self.info[s]["producers"].append(node.target)
                    self.space_of[node] = s
                    self.block_of[node] = 1
                    continue
                if isinstance(mod, nn.Linear) and src in self.space_of:
                    src_shape = shape(src)
                    if src_shape is not None and len(src_shape) == 2:
                        self._consume(src, node.target, self.block_of.get(src, 1))
                        s = new_space(mod.out_features)
                        self.info[s]["producers"].append(node.target)
                        self.space_of[node] = s
                        self.block_of[node] = 1
                        continue
                if isinstance(mod, nn.modules.batchnorm._BatchNorm) and src in self.space_of:
                    s = self.space_of[src]
                    self.info[self.uf.find(s)]["norms"].append(node.target)
                    self.space_of[node] = s
                    self.block_of[node] = 1
                    continue
                if isinstance(mod, _PASS_MODULES) and src in self.space_of:
                    self._pass(node, src)
                    continue
                if isinstance(mod, nn.Flatten) and src in self.space_of:
                    if self._flatten(node, src, shape(src), shp, mod.start_dim, mod.end_dim):
                        continue
                why = f"{node.target} ({type(mod).__name__}), which is not followed"
            elif node.op == "call_function":
                if node.target in _ADD_FUNCTIONS and len(ins) >= 1 and shp is not None:
                    same = [a for a in ins if shape(a) == shp]
                    if len(same) == len(ins):
                        for a in ins[1:]:
                            self.uf.union(self.space_of[ins[0]], self.space_of[a])
                        self._pass(node, ins[0])
                        continue
                if node.target in _PASS_FUNCTIONS and ins and node.args[0] in self.space_of:
                    self._pass(node, node.args[0])
                    continue
                if node.target in _FLATTEN_FUNCTIONS and ins:
                    src = node.args[0]
                    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                    if self._flatten(node, src, shape(src), shp, start, end):
                        continue
                if node.target in (operator.mul, torch.mul) and len(ins) == 1 and shp == shape(ins[0]):
                    self._pass(node, ins[0])  # scaling by a constant keeps channels
                    continue
                why = f"{getattr(node.target, '__name__', node.target)} at node {node.name}, which is not followed"
            elif node.op == "call_method":
                src = node.args[0] if node.args else None
                if node.target in _PASS_METHODS and src in self.space_of:
                    self._pass(node, src)
                    continue
                if node.target in ("flatten", "view", "reshape") and src in self.space_of:
                    if self._flatten(node, src, shape(src), shp, 1, -1, check_only=node.target != "flatten"):
                        continue
                if node.target in ("mean", "amax", "sum") and src in self.space_of:
                    s_in = shape(src)
                    if s_in is not None and shp is not None and len(shp) >= 2 and shp[:2] == s_in[:2]:
                        self._pass(node, src)  # pooling over spatial dims
                        continue
                why = f"method .{node.target}() at node {node.name}, which is not followed"
            else:  # pragma: no cover - fx has no other ops
                why = f"node {node.name}"
            # unknown consumer: the channels feeding it cannot be changed safely
            block(ins, why)
            if shp is not None and len(shp) >= 2:
                s = new_space(channels)
                self.info[s]["blocked"].append(f"produced by {why}")
                self.space_of[node] = s
                self.block_of[node] = 1
        self.gm = gm

    def _pass(self, node, src) -> None:
        self.space_of[node] = self.space_of[src]
        self.block_of[node] = self.block_of.get(src, 1)

    def _consume(self, src, layer: str, block: int) -> None:
        self.info[self.uf.find(self.space_of[src])]["consumers"].append((layer, block))
        # consumers are attached to the root now; roots may merge later, so merged in groups()

    def _flatten(self, node, src, s_in, s_out, start, end, check_only: bool = False) -> bool:
        if s_in is None or s_out is None or len(s_in) < 2:
            return False
        ndim = len(s_in)
        end = end % ndim if end < 0 else end
        if start != 1 or end != ndim - 1 or len(s_out) != 2 or s_out[1] != math.prod(s_in[1:]):
            return False
        self.space_of[node] = self.space_of[src]
        self.block_of[node] = self.block_of.get(src, 1) * math.prod(s_in[2:])
        return True

    def groups(self) -> list[ChannelGroup]:
        merged: dict[int, dict] = {}
        for s, info in self.info.items():
            root = self.uf.find(s)
            g = merged.setdefault(root, {"producers": [], "norms": [], "consumers": [], "blocked": [],
                                         "channels": self.info[root]["channels"]})
            for key in ("producers", "norms", "consumers", "blocked"):
                for item in info[key]:
                    if item not in g[key]:
                        g[key].append(item)
        return [ChannelGroup(g["producers"], g["norms"], g["consumers"], g["channels"], g["blocked"])
                for g in merged.values() if g["producers"] or g["consumers"]]


def channel_groups(model: nn.Module, example_input: torch.Tensor) -> list[ChannelGroup]:
    """Trace ``model`` and list its groups of coupled channels (see :class:`ChannelGroup`).

    A conv's output channels flow through BatchNorm, activations and pooling unchanged; an
    ``add`` joins the channel spaces of its inputs (a residual connection), so every conv that
    writes into the sum is in one group; ``flatten`` of an (N, C, H, W) map hands each channel
    H*W features of the next linear. Operations the tracer does not know (``cat``, reshapes to
    other shapes, grouped convs, the model's output) block the groups they touch.

    Taught in 03_pruning.
    """
    if not isinstance(example_input, torch.Tensor):
        raise OptkitError("example_input", type(example_input).__name__, "is not a tensor",
                          "pass a real input batch, e.g. dataset.example_batch(2)")
    return _Graph(model, example_input).groups()


def channel_importance(model: nn.Module, group: ChannelGroup, norm: str = "l1") -> torch.Tensor:
    """Importance of each channel of ``group``: the L1 or L2 norm of its filters, summed over producers.

    Taught in 03_pruning.
    """
    check_choice("norm", norm, ["l1", "l2"])
    p = 1 if norm == "l1" else 2
    score = torch.zeros(group.channels)
    with torch.no_grad():
        for name in group.producers:
            w = _module(model, name).weight.detach().float().cpu()
            score += w.reshape(w.shape[0], -1).norm(p=p, dim=1)
    return score


def _apply_keep(model: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> None:
    for name in group.producers:
        m = _module(model, name)
        new = prune_linear_out_features(m, keep) if isinstance(m, nn.Linear) else prune_conv_out_channels(m, keep)
        _set_module(model, name, new)
    for name in group.norms:
        _set_module(model, name, prune_batchnorm(_module(model, name), keep))
    for name, block in group.consumers:
        m = _module(model, name)
        new = prune_linear_in_features(m, keep, block) if isinstance(m, nn.Linear) else prune_conv_in_channels(m, keep)
        _set_module(model, name, new)


def prune_channels(model: nn.Module, ratio: float | Mapping[str, float], example_input: torch.Tensor, *,
                   layers: Iterable[str] | None = None, norm: str = "l1", round_to: int = 1,
                   inplace: bool = False) -> nn.Module:
    """Remove the lowest-norm output channels of conv (and hidden linear) layers; return a smaller dense model.

    ``ratio`` is the fraction of channels to remove: one number for every prunable group (or for
    the groups of ``layers``), or ``{layer_name: ratio}``. Each named layer's whole
    :class:`ChannelGroup` is pruned: its BatchNorms, the next convs' input channels and the
    linear head shrink with it. **Residual connections**: channels joined by an ``add`` are
    removed together from every conv writing into the sum (the block's last conv, the
    shortcut's conv, the stem), the same indices everywhere, ranked by their summed filter
    norms (as Torch-Pruning does), because an add needs both operands to have the same
    channels. Pruning only each block's inner conv is the special case
    ``layers=[those convs]``; it never touches the residual stream and removes less.

    Raises :class:`OptkitError` for a ratio outside [0, 1), an unknown layer name (listing the
    prunable ones), a layer whose channels cannot be shrunk (they are the model's output, or
    reach an operation the tracer does not follow), or two different ratios for one group.
    The original model is left untouched unless ``inplace``. The model must still run on
    ``example_input`` afterwards; that is checked.

    Taught in 03_pruning.
    """
    check_choice("norm", norm, ["l1", "l2"])
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise OptkitError("round_to", round_to, "must be a positive whole number", "pass 1, or 8 for SIMD-friendly widths")
    if is_pruned(model):
        raise OptkitError("model", type(model).__name__, "still carries unstructured pruning masks",
                          "call make_permanent(model) first, or prune channels of the dense model")
    groups = channel_groups(model, example_input)
    by_layer = {name: g for g in groups for name in g.producers}
    known = [n for n in prunable_layers(model) if n in by_layer and by_layer[n].prunable]
    if isinstance(ratio, Mapping):
        requested = {}
        for name, r in ratio.items():
            requested[name] = _check_ratio(f"ratio[{name!r}]", r)
    else:
        r = _check_ratio("ratio", ratio)
        if layers is None:
            requested = {n: r for n in known}
        else:
            requested = {n: r for n in ([layers] if isinstance(layers, str) else layers)}
    all_layers = prunable_layers(model)
    plan: dict[int, tuple[ChannelGroup, float, str]] = {}
    for name, r in requested.items():
        if name not in all_layers:
            raise OptkitError("layers" if not isinstance(ratio, Mapping) else "ratio", name,
                              "is not a conv or linear layer of this model",
                              "use one of the prunable layers: " + ", ".join(repr(k) for k in known))
        g = by_layer.get(name)
        if g is None or not g.prunable:
            reason = "; ".join(g.blocked_by) if g is not None else "its output is not followed by the tracer"
            raise OptkitError("layers" if not isinstance(ratio, Mapping) else "ratio", name,
                              f"cannot be pruned structurally: its output channels feed {reason}",
                              "prune another layer; prunable: " + ", ".join(repr(k) for k in known))
        key = id(g)
        if key in plan and plan[key][1] != r:
            raise OptkitError("ratio", {plan[key][2]: plan[key][1], name: r},
                              f"gives two ratios to one group of coupled channels ({', '.join(g.producers)})",
                              "give every layer joined by a residual add the same ratio")
        plan[key] = (g, r, name)
    pruned = model if inplace else copy.deepcopy(model)
    for g, r, _ in plan.values():
        n_keep = g.channels - int(round(r * g.channels))
        if round_to > 1:
            n_keep = max(round_to, int(round(n_keep / round_to)) * round_to)
        n_keep = max(1, min(g.channels, n_keep))
        if n_keep == g.channels:
            continue
        score = channel_importance(pruned, g, norm)
        keep = torch.sort(torch.topk(score, n_keep, largest=True, sorted=False).indices).values
        _apply_keep(pruned, g, keep)
    try:
        was = pruned.training
        pruned.eval()
        with torch.no_grad():
            pruned(example_input)
        pruned.train(was)
    except Exception as exc:
        raise OptkitError("model", type(model).__name__,
                          f"no longer runs after channel removal ({type(exc).__name__}: {str(exc)[:160]}); its "
                          "forward probably hard-codes a channel count",
                          "compute sizes from tensor shapes in forward (x.flatten(1), x.shape[1]), "
                          "or prune other layers") from None
    return pruned
