"""Checkers for notebook 03_pruning's exercises.

Like :mod:`optkit.course.exercises`: each ``check_*`` runs the learner's function on hand-made cases,
prints ``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong
answer. ``reference_*`` are solutions to compare with after trying.

Taught in 03_pruning.
"""
from __future__ import annotations

from typing import Callable

from optkit.course.exercises import _report, _try

__all__ = [
    "check_fine_grained_prune",
    "reference_fine_grained_prune",
    "check_keep_channels",
    "reference_keep_channels",
]

# The MIT EfficientML lab 1 test tensor (no two magnitudes tie).
_TENSOR_5X5 = [[-0.46, -0.40, 0.39, 0.19, 0.37],
               [0.00, 0.41, 0.17, -0.15, 0.16],
               [-0.20, -0.23, 0.36, 0.25, 0.03],
               [0.24, 0.42, 0.07, 0.13, -0.14],
               [0.48, -0.09, -0.35, 0.12, 0.45]]


def reference_fine_grained_prune(tensor, sparsity: float):
    """A copy of ``tensor`` with the ``round(sparsity * numel)`` smallest-|w| entries set to zero."""
    from optkit.techniques.prune import fine_grained_prune

    return fine_grained_prune(tensor, sparsity)


def check_fine_grained_prune(fn: Callable) -> bool:
    """Exercise 03.1: ``fn(tensor, sparsity)`` zeroes exactly the smallest-magnitude entries, leaving ``tensor`` as it was."""
    import torch

    base = torch.tensor(_TENSOR_5X5)
    cases = [(base, 0.75), (base, 0.0), (base, 0.5), (base, 0.96),
             (torch.linspace(-1, 1, 24).reshape(2, 3, 4) + 0.01, 0.4)]
    for tensor, sparsity in cases:
        original = tensor.clone()
        got, err = _try(fn, tensor, sparsity)
        want = reference_fine_grained_prune(original, sparsity)
        label = f"a {tuple(tensor.shape)} tensor at sparsity {sparsity}"
        if err:
            return _report(False, f"fine_grained_prune on {label} {err}. Hint: k = round(sparsity * numel); "
                                  "the k-th smallest |w| is the threshold (torch.kthvalue)")
        if not torch.equal(tensor, original):
            return _report(False, f"on {label} your function modified its input. Return a new tensor "
                                  "(e.g. tensor * mask) so the caller's weights stay as they were")
        if not isinstance(got, torch.Tensor) or got.shape != tensor.shape:
            return _report(False, f"on {label} it returned {type(got).__name__} {tuple(getattr(got, 'shape', ()))}; "
                                  f"expected a tensor of shape {tuple(tensor.shape)}")
        n_zero, n_want = int((got == 0).sum()), int((want == 0).sum())
        if n_zero != n_want:
            return _report(False, f"on {label} {n_zero} entries are zero; expected {n_want} "
                                  f"(= round({sparsity} x {tensor.numel()})). Hint: keep entries whose |w| is "
                                  "strictly greater than the k-th smallest |w|")
        if not torch.equal(got, want):
            return _report(False, f"on {label} the right number of zeros, but not the smallest magnitudes, or "
                                  "kept values changed. Hint: compare |w| (tensor.abs()), not w")
    return _report(True, f"exact sparsity on {len(cases)} hand-made cases (0 % to 96 %), smallest magnitudes "
                         "removed, input left untouched")


def reference_keep_channels(weight, ratio: float):
    """Sorted indices of the output channels to keep: the ``C - round(ratio * C)`` with the largest L1 norm."""
    import torch

    channels = weight.shape[0]
    n_keep = channels - int(round(ratio * channels))
    norms = weight.detach().abs().reshape(channels, -1).sum(dim=1)
    return torch.sort(torch.topk(norms, n_keep).indices).values


def check_keep_channels(fn: Callable) -> bool:
    """Exercise 03.2: ``fn(conv_weight, ratio)`` returns the sorted ids of the filters with the largest L1 norms."""
    import torch

    g = torch.Generator().manual_seed(3)
    w = torch.randn(8, 3, 3, 3, generator=g)
    w[2] *= 0.01  # clearly unimportant filters
    w[5] *= 0.02
    w[6] *= 3.0   # large in L1 *and* L2 norm
    cases = [(w, 0.25), (w, 0.5), (w, 0.0), (torch.randn(6, 4, 1, 1, generator=g), 0.5)]
    for weight, ratio in cases:
        got, err = _try(fn, weight.clone(), ratio)
        want = reference_keep_channels(weight, ratio)
        label = f"a {tuple(weight.shape)} weight at ratio {ratio}"
        if err:
            return _report(False, f"keep_channels on {label} {err}. Hint: one L1 norm per output channel: "
                                  "weight.abs().sum(dim=(1, 2, 3))")
        try:
            got_t = torch.as_tensor(got).flatten().long()
        except Exception:
            return _report(False, f"on {label} it returned {type(got).__name__}; expected a tensor or list of channel ids")
        if len(got_t) != len(want):
            return _report(False, f"on {label} it keeps {len(got_t)} channels; expected {len(want)} "
                                  f"(= {weight.shape[0]} - round({ratio} x {weight.shape[0]}))")
        if set(got_t.tolist()) != set(want.tolist()):
            return _report(False, f"on {label} it keeps {sorted(got_t.tolist())}; the largest L1 norms are "
                                  f"channels {want.tolist()}. Hint: norm over every axis but the first")
        if got_t.tolist() != want.tolist():
            return _report(False, f"on {label} the right channels, but not in ascending order; sort them so the "
                                  "pruned layer keeps the original channel order")
    return _report(True, "the largest-L1 filters, in order, on 4 hand-made cases (including ratio 0: keep all)")
