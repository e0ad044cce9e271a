"""Step 4 of the capstone, its pieces: :class:`Check` (how a candidate compares with the original:
parity, accuracy or agreement, eligibility), :func:`predictions` (class ids from a model's output)
and the chunked run that feeds every candidate the evaluation rows in batches of the timed shape.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optkit.core.record import jsonable

__all__ = ["Check", "predictions"]


@dataclass
class Check:
    """How a candidate compares with the original on the evaluation rows.

    ``parity``: :class:`optkit.core.verify.Parity` of all outputs against the baseline's.
    ``accuracy``: on the labels (None without labels). ``quality`` and ``quality_kind``: the
    number eligibility is judged by: ``"accuracy"`` (with labels), ``"agreement"`` (top-1
    agreement with the original, without labels) or ``"sqnr_db"`` (outputs that are not class
    scores). ``drop_points``: how many points it lost against the baseline. ``ok``: eligible to be
    recommended; ``why``: the reason when not.

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

    def to_dict(self) -> dict:
        return jsonable({"name": self.name, "parity": self.parity.to_dict(), "accuracy": self.accuracy,
                         "quality": self.quality, "quality_kind": self.quality_kind,
                         "drop_points": self.drop_points, "ok": self.ok, "why": self.why}, strict=False)

    def __repr__(self) -> str:
        q = (f"{self.quality:.1f} dB" if self.quality_kind == "sqnr_db" else f"{100 * self.quality:.2f} %")
        drop = "" if self.drop_points is None else f", drop {self.drop_points:+.2f} points"
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


def _run_chunked(run: Callable[[dict], list], inputs: dict, chunk: int) -> list[np.ndarray]:
    n = len(next(iter(inputs.values())))
    parts: list[list[np.ndarray]] = []
    for start in range(0, n, chunk):
        feed = {k: v[start:start + chunk] for k, v in inputs.items()}
        m = len(next(iter(feed.values())))
        if m < chunk:  # pad to the timed batch shape, so compiled candidates see no new shape
            feed = {k: np.concatenate([v, np.repeat(v[-1:], chunk - m, axis=0)]) for k, v in feed.items()}
        out = [np.asarray(o) for o in run(feed)]
        parts.append([o[:m] if o.ndim and o.shape[0] == chunk else o for o in out])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def _check_text(check: Check) -> str:
    if check.quality_kind == "accuracy":
        q = f"accuracy {100 * check.quality:.2f} %"
    elif check.quality_kind == "agreement":
        q = f"agreement {100 * check.quality:.2f} %"
    else:
        q = f"SQNR {check.quality:.1f} dB"
    return q + (f", SQNR {check.parity.sqnr_db:.1f} dB" if check.quality_kind != "sqnr_db" else "") + \
        ("" if check.ok else f" - not eligible: {check.why}")
