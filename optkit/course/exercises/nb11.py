"""Checkers for notebook 11_tensorflow_vs_pytorch_end_to_end's exercises.

Like :mod:`optkit.course.exercises`: each ``check_*`` runs the learner's function on hand-made cases,
prints ``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong
answer. ``reference_*`` are solutions to compare with after trying.

Taught in 11_tensorflow_vs_pytorch_end_to_end.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from optkit.course.exercises import _report, _try

__all__ = [
    "reference_pick_runtime",
    "check_pick_runtime",
    "reference_frame_budget",
    "check_frame_budget",
]


# ----------------------------------------------------------------------------- 11.1
def reference_pick_runtime(rows: Sequence[Mapping], latency_budget_ms: float, memory_budget_mb: float) -> str | None:
    """The variant to ship under a latency budget and a memory budget (None if nothing fits).

    ``rows``: one dict per variant with ``name``, ``latency_ms``, ``peak_mb`` and ``accuracy``. A
    variant fits when its latency and its peak memory are both within budget (a missing value
    does not fit: unmeasured is not within budget). Among those that fit, the most accurate wins;
    equal accuracy goes to the faster one.
    """
    def known(v) -> bool:
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    fits = [r for r in rows if known(r.get("latency_ms")) and known(r.get("peak_mb"))
            and r["latency_ms"] <= latency_budget_ms and r["peak_mb"] <= memory_budget_mb]
    if not fits:
        return None
    return min(fits, key=lambda r: (-r["accuracy"], r["latency_ms"]))["name"]


_ROWS = [
    {"name": "keras", "latency_ms": 0.90, "peak_mb": 900.0, "accuracy": 0.86},
    {"name": "ort fp32", "latency_ms": 0.10, "peak_mb": 80.0, "accuracy": 0.86},
    {"name": "ort int8", "latency_ms": 0.06, "peak_mb": 70.0, "accuracy": 0.85},
    {"name": "tflite int8", "latency_ms": 0.05, "peak_mb": 40.0, "accuracy": 0.84},
    {"name": "torch eager", "latency_ms": 0.30, "peak_mb": 400.0, "accuracy": 0.86},
    {"name": "unmeasured", "latency_ms": 0.01, "peak_mb": float("nan"), "accuracy": 0.99},
]


def check_pick_runtime(fn: Callable, rows: Sequence[Mapping] = (), budgets: Sequence[tuple[float, float]] = ()) -> bool:
    """Exercise 11.1: ``fn(rows, latency_budget_ms, memory_budget_mb)`` picks the variant to ship.

    After the hand-made cases, prints ``fn``'s pick on the measured ``rows`` for each
    ``(latency_budget_ms, memory_budget_mb)`` in ``budgets``.
    """
    cases = [
        ((1.0, 1000.0), "ort fp32", "generous budgets: the most accurate, and of those the fastest"),
        ((0.2, 1000.0), "ort fp32", "a 0.2 ms budget rules out Keras and eager PyTorch"),
        ((1.0, 75.0), "ort int8", "a 75 MB budget leaves the int8 files"),
        ((0.055, 1000.0), "tflite int8", "only TFLite int8 is fast enough"),
        ((0.01, 1000.0), None, "nothing is that fast (the unmeasured row does not count)"),
        ((1.0, 10.0), None, "no runtime fits in 10 MB"),
    ]
    for (lat, mem), want, label in cases:
        got, err = _try(fn, [dict(r) for r in _ROWS], lat, mem)
        if err:
            return _report(False, f"pick_runtime with {label} {err}. Hint: filter the rows first, then take the max")
        if got != want:
            return _report(False, f"with {label} (latency {lat} ms, memory {mem} MB) it returned {got!r}; expected "
                                  f"{want!r}. Hint: keep rows with latency_ms <= budget AND peak_mb <= budget "
                                  "(a NaN is not within budget), then the highest accuracy, ties to the lower latency")
    for lat, mem in budgets:
        got, _ = _try(fn, list(rows), lat, mem)
        print(f"  measured here, {lat:g} ms and {mem:g} MB: {got!r} (reference: "
              f"{reference_pick_runtime(rows, lat, mem)!r})")
    return _report(True, f"{len(cases)} budget pairs on a hand-made table: both budgets respected, "
                         "accuracy first, latency breaks ties, unmeasured values never fit")


# ----------------------------------------------------------------------------- 11.2
def reference_frame_budget(fps: float, latencies_ms: Mapping[str, float], overhead_ms: float = 0.0) -> tuple[float, list[str]]:
    """``(budget_ms, names)``: the time one frame may take at ``fps``, and the variants whose latency
    plus ``overhead_ms`` (decode, preprocessing, transfer) fits in it, fastest first."""
    budget = 1000.0 / fps
    fit = [n for n, ms in latencies_ms.items() if ms + overhead_ms <= budget]
    return budget, sorted(fit, key=lambda n: latencies_ms[n])


def check_frame_budget(fn: Callable, latencies_ms: Mapping[str, float] | None = None, fps: float = 30.0,
                       overhead_ms: float = 0.0) -> bool:
    """Exercise 11.2: ``fn(fps, latencies_ms, overhead_ms)`` returns the frame budget and the variants that fit.

    After the hand-made cases, prints what ``fn`` says for the measured ``latencies_ms`` at ``fps``.
    """
    lat = {"a": 10.0, "b": 30.0, "c": 33.0, "d": 40.0, "e": 1.0}
    cases = [((30.0, lat, 0.0), (1000 / 30, ["e", "a", "b", "c"]), "30 FPS, no overhead"),
             ((30.0, lat, 5.0), (1000 / 30, ["e", "a"]), "30 FPS with 5 ms of decode and preprocessing"),
             ((60.0, lat, 0.0), (1000 / 60, ["e", "a"]), "60 FPS"),
             ((1000.0, lat, 0.5), (1.0, []), "1000 FPS with 0.5 ms overhead")]
    for args, (want_budget, want_names), label in cases:
        got, err = _try(fn, *args)
        if err:
            return _report(False, f"frame_budget at {label} {err}. Hint: the budget is 1000 / fps milliseconds")
        try:
            budget, names = got
            budget = float(budget)
            names = list(names)
        except (TypeError, ValueError):
            return _report(False, f"frame_budget returned {got!r}; expected a pair (budget_ms, [names])")
        if not math.isclose(budget, want_budget, rel_tol=1e-6):
            return _report(False, f"at {label} the budget is {budget:.4g} ms; expected {want_budget:.4g} ms. "
                                  "Hint: one second is 1000 ms, shared by fps frames")
        if names != want_names:
            return _report(False, f"at {label} it says {names} fit; expected {want_names}. Hint: latency + overhead "
                                  "<= budget, sorted fastest first")
    if latencies_ms:
        got, _ = _try(fn, fps, dict(latencies_ms), overhead_ms)
        print(f"  measured here at {fps:g} FPS with {overhead_ms:g} ms overhead: {got!r}")
    return _report(True, f"{len(cases)} frame rates and overheads: budget = 1000 / fps ms, and the variants whose "
                         "latency plus overhead fit in it, fastest first")
