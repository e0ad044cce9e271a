"""Pruning schedules: which layers can take it (sensitivity) and how to get there (iterate, fine-tune).

:func:`sensitivity_scan` scores the model as each layer alone is pruned at each ratio, so a
flat curve is a layer to prune hard and a steep one a layer to spare; :func:`iterative_prune`
prunes a little, fine-tunes, and repeats along a cubic or linear schedule until it reaches a
target ``sparsity`` or an accuracy drop stops it. Both prune through :mod:`.masks`.

Taught in 03_pruning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch
from torch import nn

from optkit.core import progress as _progress
from optkit.core.errors import OptkitError, check_callable, check_choice, check_int, check_range
from optkit.core.deprecation import renamed_keyword
from optkit.techniques.prune.masks import (
    _effective, _fraction, _module, _resolve_layers, fine_grained_prune, is_pruned, prune_global_, prune_unstructured_,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "SensitivityScan",
    "sensitivity_scan",
    "PruneStep",
    "PruneHistory",
    "iterative_prune",
]


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
    return [_fraction("ratios", r) for r in ratios]


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
    check_callable("evaluate_fn", evaluate_fn, fix="pass a function model -> score")
    if is_pruned(model):
        raise OptkitError("model", type(model).__name__, "still carries pruning masks",
                          "scan the dense model, or call make_permanent(model) first")
    names = _resolve_layers(model, layers)
    dense = float(evaluate_fn(model))
    scores: dict[str, list[float]] = {}
    for name in _progress.bar(names, desc="sensitivity scan", leave=False, enabled=progress):
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


@renamed_keyword("target_sparsity", "sparsity")
def iterative_prune(model: nn.Module, sparsity: float, evaluate_fn: Callable[[nn.Module], float],
                    fine_tune_fn: Callable[[nn.Module], Any] | None = None, *, steps: int = 4,
                    schedule: str = "cubic", scope: str = "global", layers: Iterable[str] | None = None,
                    max_drop: float | None = None, progress: bool = False) -> PruneHistory:
    """Prune to ``sparsity`` in ``steps`` steps, fine-tuning after each; stop early on an accuracy drop.

    Each step raises the sparsity along ``schedule`` ("cubic": big steps first, or "linear"),
    magnitude-prunes (``scope="global"``: one threshold, or ``"layer"``: the same fraction per
    layer), scores, calls ``fine_tune_fn(model)`` (which trains ``model`` in place; the masks
    keep pruned weights at zero while it trains), and scores again. With ``max_drop``, a step
    whose fine-tuned score is more than ``max_drop`` below the dense score is undone (weights
    and masks restored) and the schedule stops there: adaptive pruning. ``model`` keeps its
    masks; call :func:`make_permanent` when done. (``target_sparsity=``, the 0.1 name of
    ``sparsity``, still works with a ``DeprecationWarning``.)

    Taught in 03_pruning.
    """
    target = _fraction("sparsity", sparsity)
    check_int("steps", steps, 1)
    check_choice("schedule", schedule, ["cubic", "linear"])
    check_choice("scope", scope, ["global", "layer"])
    check_range("max_drop", max_drop, 0, allow_none=True)  # e.g. 0.01 for one accuracy point
    check_callable("evaluate_fn", evaluate_fn, fix="pass a function model -> score")
    check_callable("fine_tune_fn", fine_tune_fn, optional=True, fix="pass a function model -> None, or None")
    names = _resolve_layers(model, layers)
    prune_fn = prune_global_ if scope == "global" else prune_unstructured_
    prune_fn(model, 0.0, layers=names)  # attach masks of ones, so every snapshot has the same keys
    dense = float(evaluate_fn(model))
    history: list[PruneStep] = []
    stopped = f"reached the target sparsity {target:.2f}"
    iterator = list(enumerate(_schedule(target, steps, schedule), start=1))
    for i, s in _progress.bar(iterator, desc="iterative pruning", leave=False, enabled=progress):
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        prune_fn(model, s, layers=names)
        score_pruned = float(evaluate_fn(model))
        if fine_tune_fn is not None:
            fine_tune_fn(model)
        score_tuned = float(evaluate_fn(model)) if fine_tune_fn is not None else score_pruned
        if max_drop is not None and dense - score_tuned > max_drop + 1e-9:  # 5 of 500 is exactly 1 point, not more
            model.load_state_dict(snapshot)
            _refresh_masked_weights(model)  # `weight` is recomputed only by the next forward pass
            stopped = (f"stopped at step {i}: sparsity {s:.3f} dropped the score by {dense - score_tuned:.4f} "
                       f"> max_drop {max_drop}; that step was undone")
            break
        history.append(PruneStep(i, sparsity_report_of(model, names), score_pruned, score_tuned))
    final = sparsity_report_of(model, names)
    return PruneHistory(dense, history, stopped, final)


def _refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``weight`` from ``weight_orig`` and ``weight_mask`` in every masked module, as the
    forward pre-hook would, so nothing reads a stale weight after ``load_state_dict``."""
    from torch.nn.utils import prune as tprune

    with torch.no_grad():
        for m in model.modules():
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, tprune.BasePruningMethod):
                    setattr(m, hook._tensor_name, hook.apply_mask(m))


def sparsity_report_of(model: nn.Module, layers: Sequence[str]) -> float:
    """Total sparsity over the named layers' weights, masks applied (helper for schedules).

    Reads ``weight_orig * weight_mask`` where a mask is attached, never the possibly stale
    ``weight`` attribute (the pre-hook recomputes it only on the next forward pass).
    """
    with torch.no_grad():
        ws = [_effective(_module(model, n)) for n in layers]
        return sum(int((w == 0).sum()) for w in ws) / max(1, sum(w.numel() for w in ws))
