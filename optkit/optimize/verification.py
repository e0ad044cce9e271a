"""Step 4 of the capstone, its pieces: :class:`Check` (how a candidate compares with the original:
parity, accuracy or agreement, eligibility), :func:`predictions` (class ids from a model's output),
:func:`class_scores` (the output as :func:`optkit.core.verify.accuracy` counts it) and
:func:`outputs`, the chunked run (:func:`optkit.core.verify.predict_all`) that feeds every candidate
the evaluation rows in batches of the timed shape.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from optkit.core.record import jsonable

__all__ = ["Check", "predictions", "class_scores", "outputs"]


@dataclass
class Check:
    """How a candidate compares with the original on the evaluation rows.

    ``parity``: :class:`optkit.core.verify.Parity` of all outputs against the baseline's.
    ``accuracy``: on the labels (None without labels). ``quality`` and ``quality_kind``: the
    number eligibility is judged by: ``"accuracy"`` (with labels), ``"agreement"`` (top-1
    agreement with the original, without labels), ``"sequence_agreement"`` (per-position, for
    ``[N, T, C]`` outputs), ``"sqnr_db"`` (dense maps and other outputs), ``"relative_error"``
    (regression) or ``"metric"`` (yours); see :mod:`optkit.optimize.quality`. ``drop_points``:
    how many points it lost against the baseline, ``interval`` its 95 % interval and ``n`` the
    examples it rests on; ``uncertain``: the interval straddles the budget. ``ok``: eligible to be
    recommended; ``why``: the reason when not. ``details``: further measures (``iou`` of dense
    maps, ``exact_sequence_agreement``).

    Taught in 10_optimize_your_own_model.
    """

    name: str
    parity: Any
    accuracy: float | None
    quality: float
    quality_kind: str
    drop_points: float | None
    ok: bool
    why: str = ""
    interval: tuple | None = None
    n: int | None = None
    uncertain: bool = False
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return jsonable({"name": self.name, "parity": self.parity.to_dict(), "accuracy": self.accuracy,
                         "quality": self.quality, "quality_kind": self.quality_kind,
                         "drop_points": self.drop_points, "interval": self.interval, "n": self.n,
                         "uncertain": self.uncertain, "details": self.details,
                         "ok": self.ok, "why": self.why}, strict=False)

    def __repr__(self) -> str:
        q = (f"{self.quality:.1f} dB" if self.quality_kind == "sqnr_db" else f"{100 * self.quality:.2f} %")
        drop = "" if self.drop_points is None else f", drop {self.drop_points:+.2f} points"
        if self.interval is not None:
            drop += f" [{self.interval[0]:+.2f}, {self.interval[1]:+.2f}]"
        return (f"Check({self.name!r}: {self.quality_kind} {q}{drop}, SQNR {self.parity.sqnr_db:.1f} dB, "
                f"{'eligible' if self.ok else 'not eligible: ' + self.why})")


def predictions(output: np.ndarray) -> np.ndarray | None:
    """Class ids from a model's first output: arg-max of ``(N, classes)`` scores, a 0.5 (for
    probabilities) or 0 (for logits) threshold on ``(N,)`` or ``(N, 1)``; None for other shapes.

    Taught in 10_optimize_your_own_model.
    """
    o = np.asarray(output)
    if o.ndim == 2 and o.shape[1] >= 2:
        return o.argmax(1)
    if o.ndim == 1 or (o.ndim == 2 and o.shape[1] == 1):
        o = o.reshape(len(o))
        cut = 0.5 if (o.min() >= 0 and o.max() <= 1) else 0.0
        return (o > cut).astype(np.int64)
    return None


def _padded(predict: Callable[[dict], list], rows: int, timed: Iterable[int]) -> Callable[[dict], list]:
    """``predict`` for the chunked evaluation: a feed whose row count is not one of the ``timed``
    batch sizes (the last, short chunk) is padded to ``rows`` by repeating its last row and the
    outputs cut back, so a compiled candidate or a model with a fixed batch size sees no new shape.
    A timed batch goes straight through (same dict, so a runner's fast path for a feed it has
    already checked still applies when it is timed)."""
    timed = frozenset(timed)

    def call(feed: dict) -> list:
        m = len(next(iter(feed.values())))
        if m in timed or m >= rows:
            return predict(feed)
        full = {k: np.concatenate([v, np.repeat(v[-1:], rows - m, axis=0)]) for k, v in feed.items()}
        return [o[:m] if o.ndim and o.shape[0] == rows else o for o in map(np.asarray, predict(full))]

    return call


def outputs(predict: Callable[[dict], list], inputs: dict, rows: int, timed: Iterable[int]) -> list[np.ndarray]:
    """Every output of ``predict`` on the feed ``inputs`` (all rows), through
    :func:`optkit.core.verify.predict_all` in chunks of ``rows`` (the largest timed batch size;
    the last chunk padded, see ``_padded``)."""
    from optkit.core import verify

    return verify.predict_all(_padded(predict, rows, timed), inputs, batch_size=rows, all_outputs=True)


def class_scores(output: np.ndarray) -> np.ndarray | None:
    """The first output as one score per class, what :func:`optkit.core.verify.accuracy` takes:
    ``(N, classes)`` scores as they are; one score per row (``(N,)`` or ``(N, 1)``, a binary
    classifier) as two columns whose arg-max is :func:`predictions`' threshold (0.5 for
    probabilities, 0 for logits); None for other shapes.

    Taught in 10_optimize_your_own_model.
    """
    o = np.asarray(output)
    if o.ndim == 2 and o.shape[1] >= 2:
        return o
    if o.ndim == 1 or (o.ndim == 2 and o.shape[1] == 1):
        o = o.reshape(len(o))
        cut = 0.5 if (o.min() >= 0 and o.max() <= 1) else 0.0
        return np.stack([np.full_like(o, cut), o], axis=1)  # column 1 wins only where o > cut, as predictions()
    return None


def _check_text(check: Check) -> str:
    kind = check.quality_kind
    if kind == "sqnr_db":
        q = f"SQNR {check.quality:.1f} dB"
    elif kind == "relative_error":
        q = f"relative error {check.drop_points:.2f} %"
    elif kind == "metric":
        q = f"your metric {check.quality:.4g}"
    else:
        q = f"{kind.replace('_', ' ')} {100 * check.quality:.2f} %"
    if check.drop_points is not None and check.interval is not None:
        q += (f" (drop {check.drop_points:+.2f} points, 95 % interval [{check.interval[0]:+.2f}, "
              f"{check.interval[1]:+.2f}] on {check.n:,} examples)")
    for key, value in check.details.items():
        q += f", {key.replace('_', ' ')} {value:.3f}"
    q += f", SQNR {check.parity.sqnr_db:.1f} dB" if kind != "sqnr_db" else ""
    if check.uncertain:
        q += " - the interval straddles the budget: confirm on more data"
    return q + ("" if check.ok else f" - not eligible: {check.why}")
