"""Step 4 of the capstone, the judgement: a quality measure that fits the model's output, with its
statistics.

What "the candidate is as good as the original" means depends on what the model outputs:

=================  =========================================================  ==================
output             measured                                                   eligible when
=================  =========================================================  ==================
class scores       accuracy on the labels (paired 95 % interval of the drop), drop <= budget
``(N, C)``/``(N,)``  or, without labels, top-1 agreement with the original
sequences          per-position agreement of the arg-max with the original    1 - agreement <=
``(N, T, C)``      (and the share of rows whose whole sequence agrees)        budget
dense maps         SQNR against the original, and IoU of the thresholded      SQNR >= min_sqnr_db
``(N, ..., H, W)`` maps (0.5 for probabilities, 0 for logits)
regression         relative error ``mean|out - ref| / mean|ref|``              error <= budget %
(``task=``)
your metric        ``metric(outputs, labels) -> score in [0, 1]`` (higher     drop <= budget
                   is better), computed for the original and each candidate
=================  =========================================================  ==================

``task="auto"`` picks by the first output's shape (2-D or 1-D: class scores; 3-D: sequences;
4-D and more: dense maps); pass ``task=`` when the shape misleads (a ``(N, 1)`` regression looks
like a binary classifier). Every accuracy-like drop carries a 95 % interval and the number of
examples it rests on; a candidate whose interval straddles the budget is eligible on its estimate
but flagged (``uncertain``), and the report says so.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

import numpy as np

from optkit.core import verify
from optkit.core.errors import OptkitError, check_choice
from optkit.optimize.verification import Check, class_scores, predictions

__all__ = ["TASKS", "task_of", "judge", "sequence_agreement", "map_iou", "relative_error", "load_metric"]

#: What ``task=`` accepts.
TASKS = ("auto", "classification", "sequence", "dense", "regression")


def task_of(output: np.ndarray, task: str = "auto") -> str:
    """The task a first output belongs to: ``task`` itself unless ``"auto"``, else by its shape."""
    check_choice("task", task, TASKS)
    if task != "auto":
        return task
    o = np.asarray(output)
    if o.ndim <= 2:
        return "classification" if predictions(o) is not None else "dense"
    return "sequence" if o.ndim == 3 and o.shape[-1] >= 2 else "dense"


def sequence_agreement(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """``(per-position, whole-sequence)`` agreement of the arg-max over the last axis of ``[N, T, C]``."""
    same = np.asarray(ref).argmax(-1) == np.asarray(out).argmax(-1)
    return float(same.mean()), float(same.reshape(len(same), -1).all(axis=1).mean())


def map_iou(ref: np.ndarray, out: np.ndarray) -> float:
    """IoU of the two maps thresholded at 0.5 (values in [0, 1]) or 0 (logits); 1.0 when both are empty."""
    r, o = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    cut = 0.5 if r.min() >= 0 and r.max() <= 1 else 0.0
    a, b = r > cut, o > cut
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    """``mean|out - ref| / mean|ref|`` (0 when the reference is all zeros and the outputs agree)."""
    r, o = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    scale = np.abs(r).mean()
    err = np.abs(o - r).mean()
    return float(err / scale) if scale > 0 else (0.0 if err == 0 else float("inf"))


def load_metric(spec: str | Callable | None) -> Callable | None:
    """A user metric from a callable or a ``"module:function"`` string (imported: your own code)."""
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise OptkitError("metric", spec, "is not 'module:function' or a callable",
                          "pass e.g. --metric mymetrics:f1 (a function(outputs, labels) -> score in [0, 1])")
    module, name = spec.split(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise OptkitError("metric", spec, f"cannot be imported ({exc})",
                          "put the module on PYTHONPATH (or in the current folder) and name an existing function") from None
    if not callable(fn):
        raise OptkitError("metric", spec, "is not callable", "name a function(outputs, labels) -> score")
    return fn


def _metric_score(metric: Callable, outs: Sequence[np.ndarray], labels: Any) -> float:
    try:
        score = float(metric(list(outs), labels))
    except Exception as exc:
        raise OptkitError("metric", getattr(metric, "__name__", metric), f"failed: {exc}",
                          "make it take (list of output arrays, labels or None) and return a number") from None
    if not np.isfinite(score):
        raise OptkitError("metric", getattr(metric, "__name__", metric), f"returned {score}", "return a finite number")
    return score


def _drop_check(name: str, parity: Any, accuracy: float | None, kind: str, quality: float, drop: float,
                interval: tuple[float, float] | None, n: int, budget: float, what: str) -> Check:
    ok = drop <= budget + 1e-9
    uncertain = interval is not None and interval[0] < budget < interval[1]
    why = "" if ok else f"{what} (drop {drop:.2f} points > max_accuracy_drop {budget:g})"
    return Check(name=name, parity=parity, accuracy=accuracy, quality=quality, quality_kind=kind, drop_points=drop,
                 ok=ok, why=why, interval=interval, n=n, uncertain=uncertain)


def judge(name: str, ref: Sequence[np.ndarray], outs: Sequence[np.ndarray], *, labels: np.ndarray | None,
          max_drop: float, min_sqnr_db: float, task: str = "auto", metric: Callable | None = None) -> Check:
    """How candidate ``name``'s outputs ``outs`` compare with the original's ``ref`` (see the module
    docstring for the measure each task gets). ``max_drop`` is the budget in points (or per cent of
    relative error for regression)."""
    parity = verify.compare_outputs(ref if len(ref) > 1 else ref[0], outs if len(outs) > 1 else outs[0])
    kind_of_task = task_of(ref[0], task)
    if not all(np.all(np.isfinite(o)) for o in outs):
        return Check(name, parity, None, float("nan"), "sqnr_db", None, False, "outputs hold NaN or infinite values")
    if metric is not None:
        base, score = _metric_score(metric, ref, labels), _metric_score(metric, outs, labels)
        return _drop_check(name, parity, None, "metric", score, 100.0 * (base - score), None, len(ref[0]),
                           max_drop, f"your metric {score:.4g} against {base:.4g} for the original")
    scores_ref, scores = class_scores(ref[0]), class_scores(outs[0])
    if kind_of_task == "classification" and scores is not None and labels is not None:
        hits_ref, hits = verify.correct(scores_ref, labels), verify.correct(scores, labels)
        d = verify.paired_difference(hits_ref, hits)
        acc = float(hits.mean())
        return _drop_check(name, parity, acc, "accuracy", acc, 100.0 * d.diff, (100.0 * d.low, 100.0 * d.high),
                           d.n, max_drop, f"accuracy {100 * acc:.2f} %")
    if kind_of_task == "classification" and scores is not None:
        same = predictions(ref[0]) == predictions(outs[0])
        lo, hi = verify.accuracy_interval(same)
        agreement = float(same.mean())
        return _drop_check(name, parity, None, "agreement", agreement, 100.0 * (1 - agreement),
                           (100.0 * (1 - hi), 100.0 * (1 - lo)), int(same.size), max_drop,
                           f"top-1 agreement with the original {100 * agreement:.2f} %")
    if kind_of_task == "sequence":
        per_pos, exact = sequence_agreement(ref[0], outs[0])
        check = _drop_check(name, parity, None, "sequence_agreement", per_pos, 100.0 * (1 - per_pos), None,
                            int(np.asarray(ref[0]).shape[0]), max_drop,
                            f"per-position agreement with the original {100 * per_pos:.2f} %")
        check.details = {"exact_sequence_agreement": exact}
        return check
    if kind_of_task == "regression":
        err = relative_error(ref[0], outs[0])
        ok = 100.0 * err <= max_drop + 1e-9
        why = "" if ok else f"relative error {100 * err:.2f} % > max_accuracy_drop {max_drop:g} %"
        return Check(name, parity, None, 1.0 - err, "relative_error", 100.0 * err, ok, why, n=len(ref[0]))
    ok = parity.sqnr_db >= min_sqnr_db
    why = "" if ok else f"SQNR {parity.sqnr_db:.1f} dB < min_sqnr_db {min_sqnr_db:g}"
    check = Check(name, parity, None, parity.sqnr_db, "sqnr_db", None, ok, why, n=len(ref[0]))
    if np.asarray(ref[0]).ndim >= 3:
        check.details = {"iou": map_iou(ref[0], outs[0])}
    return check
