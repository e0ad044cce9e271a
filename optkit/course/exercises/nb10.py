"""Checkers for notebook 10_optimize_your_own_model's exercises.

Like :mod:`optkit.course.exercises`: each ``check_*`` prints ``✓`` or a ``✗`` line with a hint, returns
True or False and never raises on a wrong answer. ``reference_*`` are solutions to compare with
after trying.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from optkit.course.exercises import _report, _try

__all__ = ["reference_pick", "check_pick", "check_custom_recipe"]


def reference_pick(records: list, batch_size: int) -> str | None:
    """The capstone's rule (:func:`optkit.optimize.recommend`): fastest eligible record at
    ``batch_size``, near-ties (within 5 %) to the smallest file."""
    from optkit.optimize import recommend

    return recommend(records, batch_size=batch_size)


def _rec(name: str, bs: int, ms: float, size: int, eligible: bool):
    from optkit.core.record import Record

    return Record(name=name, batch_size=bs, latency_ms=ms, size_bytes=size, extra={"eligible": eligible})


def check_pick(fn: Callable) -> bool:
    """Exercise 10.1: ``fn(records, batch_size)`` returns the name the capstone's rule picks."""
    cases = [
        ("the fastest eligible one", [_rec("base", 32, 10.0, 400, True), _rec("int8", 32, 4.0, 100, True),
                                      _rec("fp16", 32, 6.0, 200, True)], 32, "int8"),
        ("a faster candidate that is not eligible (too much accuracy lost)",
         [_rec("base", 32, 10.0, 400, True), _rec("int4", 32, 2.0, 50, False), _rec("int8", 32, 5.0, 100, True)],
         32, "int8"),
        ("two within 5 % of each other: the smaller file wins",
         [_rec("base", 32, 10.0, 400, True), _rec("a", 32, 5.0, 300, True), _rec("b", 32, 5.2, 100, True)], 32, "b"),
        ("only records at the asked batch size count",
         [_rec("base", 1, 1.0, 400, True), _rec("fast-b1", 1, 0.2, 400, True), _rec("base", 32, 10.0, 400, True),
          _rec("fast-b1", 32, 11.0, 400, True)], 32, "base"),
        ("nothing eligible", [_rec("base", 32, 10.0, 400, False), _rec("x", 32, 5.0, 100, False)], 32, None),
    ]
    for label, records, bs, want in cases:
        got, err = _try(fn, records, bs)
        if err:
            return _report(False, f"pick on '{label}' {err}. Hint: keep records with r.batch_size == batch_size and "
                                  "r.extra['eligible']; take the lowest latency_ms; among those within 5 % of it, "
                                  "the smallest size_bytes")
        if got != want:
            return _report(False, f"on '{label}' you picked {got!r}; the rule picks {want!r}. Hint: eligibility first "
                                  "(r.extra['eligible']), then speed, then size within a 5 % tie; None if nothing "
                                  "is eligible")
    return _report(True, "your rule picks what the capstone picks in all five cases")


def check_custom_recipe(opt: Any, recipe_name: str) -> bool:
    """Exercise 10.2: a recipe called ``recipe_name`` was tried on ``opt``, built a candidate with
    an artifact inside the run folder, and that candidate was verified."""
    out = [o for o in opt.outcomes if o.recipe == recipe_name]
    cands = [c for c in opt.candidates if c.recipe == recipe_name]
    if not cands:
        if out:
            return _report(False, f"your recipe {recipe_name!r} produced no candidate: {out[-1].status}: "
                                  f"{out[-1].reason}. Hint: build(ctx) must return a Candidate, e.g. "
                                  "optimize_recipes.ort_candidate(ctx, name, recipe, technique, path)")
        return _report(False, f"no recipe called {recipe_name!r} was tried. Hint: opt.try_recipes([your_recipe]) "
                              "then opt.verify()")
    c = cands[-1]
    if c.artifact is None or not Path(c.artifact).exists():
        return _report(False, f"{c.name!r} has no artifact file. Hint: write it to ctx.artifact('model.<name>.onnx')")
    run_dir = Path(opt.run_dir).resolve()
    if run_dir not in Path(c.artifact).resolve().parents:
        return _report(False, f"{c.name!r} wrote {c.artifact}, outside the run folder {run_dir}. Hint: use "
                              "ctx.artifact(filename), which never overwrites anything")
    if c.name not in opt.checks:
        return _report(False, f"{c.name!r} was built but not verified yet. Hint: call opt.verify()")
    check = opt.checks[c.name]
    return _report(True, f"{c.name!r} built, saved in the run folder and verified: {check.quality_kind} "
                         f"{100 * check.quality:.2f} %" if check.quality_kind != "sqnr_db" else
                         f"{c.name!r} built and verified: SQNR {check.quality:.1f} dB")
