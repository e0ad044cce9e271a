"""Checkers for the notebooks' exercises.

Each ``check_*`` function runs a learner's answer on hand-made cases, prints ``✓`` or a
``✗`` line saying what went wrong with a hint, and returns True or False. They never raise on a
wrong answer, so a notebook with unanswered exercises still runs to the end under papermill.
Reference solutions live in :mod:`optkit.course.exercises.reference`-style functions below
(``reference_*``) so a learner can compare after trying.

Taught in every notebook's closing "Exercises" section.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

__all__ = [
    "check_percentile",
    "reference_percentile",
    "check_batch_budget",
    "check_predict",
    "reference_predict",
    "check_export_dynamic",
    "reference_export_dynamic",
]


def _report(ok: bool, message: str) -> bool:
    print(("✓ " if ok else "✗ ") + message)
    return ok


def _try(fn: Callable, *args) -> tuple[Any, str | None]:
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, "is not written yet (it raised NotImplementedError)"
    except Exception as exc:  # a learner's bug: show it, do not crash the notebook
        return None, f"raised {type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- 00
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


# ----------------------------------------------------------------------------- 01
def reference_predict(model, x):
    """Class ids for ``x`` in eval mode without autograd, leaving ``model`` in the mode it was in."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model(x).argmax(dim=1)
    finally:
        model.train(was_training)


def check_predict(fn: Callable) -> bool:
    """Exercise 01.1: ``fn(model, x)`` predicts like an eval-mode model and restores the mode."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():  # make running stats differ from any single batch's stats
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(2.0)
    x = torch.randn(5, 1, 6, 6)  # latency-style input is enough: this checks mechanics, not accuracy
    expected = reference_predict(model, x)
    model.train()
    got, err = _try(fn, model, x)
    if err:
        return _report(False, f"predict {err}")
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return _report(False, f"predict returned {type(got).__name__} {getattr(got, 'shape', '')}; expected class ids "
                              f"of shape {tuple(expected.shape)}. Hint: argmax over dim 1")
    if got.requires_grad:
        return _report(False, "the result still requires grad: run the model under torch.inference_mode()")
    if not torch.equal(got, expected):
        return _report(False, "predictions differ from an eval-mode model: BatchNorm used batch statistics or "
                              "Dropout was active. Hint: model.eval() before the forward pass")
    if not model.training:
        return _report(False, "predictions are right but the model was left in eval mode; a caller that was "
                              "training it would silently stop updating BatchNorm. Restore model.train(was_training)")
    return _report(True, "eval-mode predictions without autograd, and the model's mode restored")


def reference_export_dynamic(model, example):
    """``torch.export`` with a dynamic batch dimension (named ``batch``) on the first input."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def check_export_dynamic(fn: Callable) -> bool:
    """Exercise 01.2: ``fn(model, example)`` returns an ExportedProgram that runs at any batch size."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    example = torch.randn(2, 1, 8, 8)
    program, err = _try(fn, model, example)
    if err:
        return _report(False, f"export {err}")
    if not isinstance(program, torch.export.ExportedProgram):
        return _report(False, f"returned {type(program).__name__}; expected torch.export.ExportedProgram")
    for bs in (1, 7):
        x = torch.randn(bs, 1, 8, 8)
        try:
            out = program.module()(x)
        except Exception as exc:
            return _report(False, f"the program fails at batch {bs} ({type(exc).__name__}): the batch dimension is "
                                  "static. Hint: dynamic_shapes=({0: torch.export.Dim('batch')},)")
        with torch.no_grad():
            if not torch.allclose(out, model(x), atol=1e-5):
                return _report(False, f"outputs at batch {bs} differ from the eager model")
    return _report(True, "the exported program runs at batch 1 and 7 and matches the eager model")
