"""Checkers for the exercises of notebook 00_measure_first (see :mod:`optkit.course.exercises`).

Taught in 00_measure_first.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from optkit.course.exercises import _report, _try

__all__ = [
    "reference_percentile",
    "check_percentile",
    "check_batch_budget",
]


def reference_percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(float(s) for s in samples)
    if not xs:
        raise ValueError("no samples")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def check_percentile(fn: Callable[[Sequence[float], float], float]) -> bool:
    """Exercise 00.1: ``fn(samples, q)`` must match linear-interpolation percentiles."""
    cases = [([10, 20, 30, 40], 50), ([3.0, 1.0, 2.0], 0), ([3.0, 1.0, 2.0], 100),
             ([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], 90), ([5.0], 99), ([1, 1, 1, 50], 99)]
    for samples, q in cases:
        got, err = _try(fn, list(samples), q)
        want = reference_percentile(samples, q)
        if err:
            return _report(False, f"percentile{(samples, q)} {err}. Hint: sort, then interpolate "
                                  "between ranks floor(p) and floor(p)+1 where p = (n-1)*q/100.")
        if got is None or not math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-12):
            return _report(False, f"percentile({samples}, {q}) returned {got!r}; expected {want!r}. "
                                  "Hint: did you sort the samples first? p = (n-1)*q/100.")
    return _report(True, f"percentile matches numpy on {len(cases)} hand-made cases, including unsorted input "
                         "and an outlier that only the p99 sees")


def check_batch_budget(answer: int | None, sweep, budget_ms: float) -> bool:
    """Exercise 00.2: the largest batch size in ``sweep`` whose p90 latency fits ``budget_ms``."""
    fitting = [m for m in sweep if m.p90_ms <= budget_ms]
    want = max(fitting, key=lambda m: m.batch_size) if fitting else None
    if want is None:
        if answer is None:
            return _report(True, f"no batch size fits {budget_ms} ms at p90 on this machine, so None is right")
        return _report(False, f"you answered {answer!r}, but no measured batch size has p90 within {budget_ms} ms "
                              "on this machine: the answer is None")
    if answer == want.batch_size:
        return _report(True, f"batch {want.batch_size} is the largest whose p90 ({want.p90_ms:.2f} ms) fits {budget_ms} ms")
    return _report(False, f"you answered {answer!r}; on this run the answer is {want.batch_size}. Hint: compare "
                          "each measurement's p90_ms (not the median) with the budget; take the largest batch that fits")


