"""Checkers for the exercises of 02_quantization.

Like :mod:`optkit.course.exercises`, each ``check_*`` runs a learner's answer on hand-made tensors,
prints ``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong
answer. ``reference_*`` functions are solutions to compare with after trying.

Taught in 02_quantization.
"""
from __future__ import annotations

from typing import Any, Callable

from optkit.course.exercises import _report, _try

__all__ = [
    "reference_linear_quantize",
    "check_linear_quantize",
    "reference_per_channel_scales",
    "check_per_channel_scales",
    "check_smallest_within",
]


def reference_linear_quantize(x, bits: int = 8):
    """Symmetric per-tensor quantization: ``(q int8, scale)`` with ``scale = max|x| / (2**(bits-1) - 1)``
    and ``q = clamp(round(x / scale), -2**(bits-1), 2**(bits-1) - 1)``."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().max().clamp(min=1e-12) / qmax
    q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax).to(torch.int8)
    return q, scale


def _cases():
    import torch

    x55 = torch.tensor([[-1.0, 0.0, 0.5, 1.0, 2.0]] * 5) * torch.arange(1, 6, dtype=torch.float32)[:, None]
    g = torch.Generator().manual_seed(0)
    return [(x55, 8), (x55, 4), (torch.randn(7, 3, generator=g), 8), (torch.randn(4, 9, generator=g) * 0.01, 2)]


def check_linear_quantize(fn: Callable) -> bool:
    """Exercise 02.1: ``fn(x, bits) -> (q, scale)``, symmetric per-tensor, ``q`` of dtype int8."""
    import torch

    for x, bits in _cases():
        got, err = _try(fn, x.clone(), bits)
        if err:
            return _report(False, f"linear_quantize(x of shape {tuple(x.shape)}, bits={bits}) {err}")
        if not isinstance(got, tuple) or len(got) != 2:
            return _report(False, f"returned {type(got).__name__}; expected a pair (q, scale)")
        q, scale = got
        want_q, want_scale = reference_linear_quantize(x, bits)
        if not torch.is_tensor(q) or q.dtype != torch.int8:
            return _report(False, f"q has dtype {getattr(q, 'dtype', type(q).__name__)}; store it as torch.int8 "
                                  "(that is where the 4x saving comes from). Hint: .to(torch.int8) after clamping")
        if not torch.allclose(torch.as_tensor(scale, dtype=torch.float32), want_scale, rtol=1e-5):
            return _report(False, f"scale {float(scale):.6g} for bits={bits}; expected {float(want_scale):.6g}. "
                                  "Hint: max|x| / (2**(bits-1) - 1)")
        if not torch.equal(q, want_q):
            bad = int((q != want_q).sum())
            return _report(False, f"{bad} of {q.numel()} integers differ for bits={bits}. Hint: round(x / scale) then "
                                  "clamp to [-2**(bits-1), 2**(bits-1) - 1]")
    return _report(True, "symmetric quantization matches on the 5x5 example and three more tensors (8, 4 and 2 bits)")


def reference_per_channel_scales(w, bits: int = 8):
    """One symmetric scale per output channel (dimension 0): ``max|w[c]| / (2**(bits-1) - 1)``."""
    qmax = 2 ** (bits - 1) - 1
    return w.abs().flatten(1).amax(dim=1).clamp(min=1e-12) / qmax


def check_per_channel_scales(fn: Callable) -> bool:
    """Exercise 02.2: ``fn(w, bits)`` returns one scale per output channel of a conv or linear weight."""
    import torch

    g = torch.Generator().manual_seed(1)
    cases = [(torch.randn(8, 3, 3, 3, generator=g) * torch.logspace(-2, 0, 8)[:, None, None, None], 8),
             (torch.randn(5, 7, generator=g), 4)]
    for w, bits in cases:
        got, err = _try(fn, w.clone(), bits)
        if err:
            return _report(False, f"per_channel_scales(w of shape {tuple(w.shape)}) {err}")
        want = reference_per_channel_scales(w, bits)
        got_t = torch.as_tensor(got, dtype=torch.float32) if got is not None else None
        if got_t is None or got_t.shape != want.shape:
            return _report(False, f"returned shape {None if got_t is None else tuple(got_t.shape)}; expected "
                                  f"{tuple(want.shape)} (one scale per output channel). Hint: reduce over every "
                                  "dimension but the first, e.g. w.abs().flatten(1).amax(dim=1)")
        if not torch.allclose(got_t, want, rtol=1e-5):
            return _report(False, "the shape is right but the values differ. Hint: divide max|w[c]| by 2**(bits-1) - 1")
    return _report(True, "one scale per output channel, for a conv weight and a linear weight")


def check_smallest_within(answer: Any, records, baseline_accuracy: float, max_drop: float = 0.01) -> bool:
    """Exercise 02.3: the name of the smallest record whose accuracy is within ``max_drop`` of the baseline.

    ``records`` are the rows of one closing table (one workload, one batch size). Variants of
    the same size (PTQ and QAT store the same int8 tensors) are all right answers.
    """
    records = list(records)
    tables = {(r.workload, r.batch_size) for r in records}
    if len(tables) > 1:
        return _report(False, f"the records given span {len(tables)} tables (workloads or batch sizes); pass the "
                              "rows of one, e.g. [r for r in records if r.workload == str(cnn_workload) "
                              "and r.batch_size == 32]")
    fitting = [r for r in records if r.accuracy is not None and r.size_bytes is not None
               and baseline_accuracy - r.accuracy <= max_drop + 1e-12]
    if not fitting:
        return _report(answer is None, "no variant is within the allowed drop; the answer is None")
    smallest = min(r.size_bytes for r in fitting)
    best = [r for r in fitting if r.size_bytes == smallest]
    chosen = next((r for r in best if r.name == answer), None)
    if chosen is not None:
        others = [r.name for r in best if r is not chosen]
        tie = f"; {', '.join(map(repr, others))} {'is' if len(others) == 1 else 'are'} the same size" if others else ""
        return _report(True, f"{chosen.name!r}: {chosen.size_bytes / 1e3:.1f} kB at {100 * chosen.accuracy:.2f} % "
                             f"(baseline {100 * baseline_accuracy:.2f} %){tie}")
    return _report(False, f"you answered {answer!r}. Hint: keep the records whose accuracy is at least "
                          f"baseline - {max_drop}, then take the one with the smallest size_bytes")
