"""Step 6 of the capstone: the rule (:func:`recommend`: the fastest eligible candidate at the
largest batch size, near-ties going to the smaller file), the :class:`Recommendation` it gives,
and :func:`explain`, the paragraph that says why, built from the numbers.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from optkit.core.record import jsonable

__all__ = ["Recommendation", "recommend", "explain", "best_fp32", "TIE_TOLERANCE"]

#: Candidates within this fraction of the fastest eligible latency count as tied; the smaller wins.
TIE_TOLERANCE = 0.05


@dataclass
class Recommendation:
    """The candidate to use, and why.

    ``name`` (None when nothing was measured), ``reason`` (a paragraph built from the numbers),
    ``eligible`` (candidates within the allowed drop, fastest first), ``rejected`` (name -> why
    not eligible), ``speedup`` and ``size_ratio`` against the baseline at ``batch_size``.

    Taught in 10_optimize_your_own_model.
    """

    name: str | None
    reason: str
    batch_size: int | None
    eligible: list = field(default_factory=list)
    rejected: dict = field(default_factory=dict)
    speedup: float | None = None
    size_ratio: float | None = None
    artifact: str | None = None

    def to_dict(self) -> dict:
        return jsonable(self.__dict__, strict=False)

    def __repr__(self) -> str:
        if self.name is None:
            return "Recommendation(none)"
        extra = "" if self.speedup is None else f", {self.speedup:.2f}x faster, {self.size_ratio:.2f}x smaller"
        return f"Recommendation({self.name!r} at batch {self.batch_size}{extra})"


def recommend(records: Sequence, *, batch_size: int | None = None, tie: float = TIE_TOLERANCE) -> str | None:
    """The rule: among records at ``batch_size`` (default: the largest) whose ``extra["eligible"]``
    is true, the model as given (``"baseline"``) stays unless a candidate is faster than it beyond
    the noise (its latency times ``1 + tie`` is still below the baseline's: a change must pay more
    than run-to-run noise). Among those faster candidates the lowest ``latency_ms`` wins; every one
    within ``tie`` (5 %) of it counts as tied, and of those the smallest ``size_bytes`` wins, then
    the lower latency. Returns the name, or None if no record is eligible.

    Taught in 10_optimize_your_own_model.
    """
    rows = [r for r in records if r.latency_ms is not None and math.isfinite(r.latency_ms)]
    if not rows:
        return None
    bs = batch_size if batch_size is not None else max(r.batch_size or 0 for r in rows)
    ok = [r for r in rows if (r.batch_size or 0) == bs and (r.extra or {}).get("eligible")]
    if not ok:
        return None
    base = next((r for r in ok if r.name == "baseline"), None)
    if base is not None:
        ok = [r for r in ok if r.name != "baseline" and r.latency_ms * (1.0 + tie) < base.latency_ms]
        if not ok:
            return base.name
    fastest = min(r.latency_ms for r in ok)
    tied = [r for r in ok if r.latency_ms <= fastest * (1.0 + tie)]
    best = min(tied, key=lambda r: (r.size_bytes if r.size_bytes is not None else math.inf, r.latency_ms))
    return best.name


def best_fp32(records: Sequence):
    """The fastest eligible fp32 record (the model as given included): the float baseline a speed-up
    from lower precision should also be measured against. None when no fp32 record is eligible."""
    rows = [r for r in records if (r.extra or {}).get("eligible") and (r.extra or {}).get("precision", "fp32") == "fp32"
            and r.latency_ms is not None and math.isfinite(r.latency_ms)]
    return min(rows, key=lambda r: r.latency_ms) if rows else None


def _basis(opt: Any, kind: str) -> str:
    """What the quality judgement rests on, in words."""
    n = opt.data.n_eval
    return {"accuracy": f"accuracy on {n} labelled examples not used for calibration",
            "agreement": f"top-1 agreement with the original model on {n} "
                         + ("of your examples (no labels were given)" if opt.data.source == "file"
                            else "generated inputs"),
            "sqnr_db": f"SQNR of the outputs against the original (at least {opt.min_sqnr_db:g} dB; the "
                       "outputs are not class scores and no labels were given)",
            "sequence_agreement": f"per-position agreement of the arg-max with the original on {n} sequences",
            "relative_error": f"relative error against the original's outputs on {n} examples",
            "metric": f"your metric on {n} examples"}[kind]


def explain(opt: Any, rec, base, eligible: list, rejected: dict, bs: int) -> str:
    """The paragraph that says why ``rec`` (a record, or None) was chosen over the others, built from
    the numbers of the run ``opt`` (an :class:`~optkit.optimize.Optimization`): ``base`` is the
    baseline record, ``eligible`` the eligible records fastest first, ``rejected`` name -> why not,
    ``bs`` the batch size that decided."""
    from optkit.core import bench

    env = bench.environment_line(opt.env) if opt.env else "this machine"
    threads = f"{opt.threads} thread{'s' if opt.threads != 1 else ''}"
    n_cands = len([r for r in opt.records if r.batch_size == bs]) - 1
    basis = _basis(opt, base.extra["quality_kind"])
    parts = []
    if rec is None:
        parts.append(f"No candidate, not even the baseline, passed verification at batch {bs}.")
    elif rec.name == "baseline":
        parts.append(f"Keep the model as it is: of {n_cands} candidate(s), none within the allowed quality loss "
                     f"ran more than {100 * TIE_TOLERANCE:.0f} % faster than the baseline ({base.latency_ms:.3g} ms "
                     f"per batch of {bs}), which is within run-to-run noise.")
        others = [r for r in eligible if r.name != "baseline"]
        if others:
            parts.append("Eligible candidates, as speed ratios against the baseline (below 1 is slower): " + ", ".join(
                f"{r.name} {base.latency_ms / r.latency_ms:.2f}x" for r in others[:5]) + ".")
        smaller = [r for r in others if r.size_bytes and base.size_bytes and r.size_bytes * 1.5 < base.size_bytes
                   and r.latency_ms <= base.latency_ms * (1 + TIE_TOLERANCE)]
        if smaller:
            r = min(smaller, key=lambda r: r.size_bytes)
            parts.append(f"If the file's size matters more than speed, {r.name} runs at the same speed within "
                         f"noise and is {base.size_bytes / r.size_bytes:.2f}x smaller.")
    else:
        speed = base.latency_ms / rec.latency_ms
        size = (base.size_bytes / rec.size_bytes) if rec.size_bytes and base.size_bytes else None
        delta = ""
        interval = rec.extra.get("interval")
        if rec.extra.get("quality_kind") == "accuracy":
            delta = f" ({100 * (rec.accuracy - base.accuracy):+.2f} points, allowed -{opt.max_accuracy_drop:g}"
            if interval:  # the interval of the drop, turned into one of the change
                delta += (f"; 95 % interval of the change [{-interval[1]:+.2f}, {-interval[0]:+.2f}] on "
                          f"{rec.extra.get('n'):,} examples")
            delta += ")"
        elif rec.extra.get("quality_kind") == "agreement":
            delta = (f" (allowed drop {opt.max_accuracy_drop:g} point"
                     f"{'' if opt.max_accuracy_drop == 1 else 's'})")
        where = (f", file {rec.extra['artifact']}" if rec.extra.get("artifact")
                 else ", no new file: run the original model this way")
        if rec.extra.get("quality_kind") in ("sqnr_db", "relative_error", "metric"):
            quality = f"; {_quality_phrase(rec)}"
        else:
            quality = f"; {_quality_phrase(rec)} against {100 * base.extra['quality']:.2f} % for the baseline"
        parts.append(f"Use {rec.name} ({rec.technique}, {rec.runtime}{where}). At batch {bs} it took "
                     f"{rec.latency_ms:.3g} ms per batch against {base.latency_ms:.3g} ms for the baseline, "
                     f"{speed:.2f}x faster{_size_phrase(size, rec.size_bytes, base.size_bytes)}{quality}{delta}.")
        fp32 = best_fp32(eligible)
        if fp32 is not None and fp32.name not in ("baseline", rec.name):
            ratio = fp32.latency_ms / rec.latency_ms
            parts.append(f"Against the fastest fp32 candidate, {fp32.name} ({fp32.latency_ms:.3g} ms), it is "
                         + (f"{ratio:.2f}x faster." if ratio > 1 + TIE_TOLERANCE else
                            f"about as fast ({ratio:.2f}x): the gain over the baseline is the fp32 runtime's, "
                            "and the smaller file decided the tie."))
        if rec.extra.get("uncertain"):
            parts.append(f"Its quality change is uncertain: the 95 % interval of the drop straddles the "
                         f"{opt.max_accuracy_drop:g}-point budget, so confirm it on more of your data before shipping.")
        tied = [r for r in eligible if r.name != rec.name and r.latency_ms <= eligible[0].latency_ms * (1 + TIE_TOLERANCE)]
        if tied:
            parts.append(f"{', '.join(r.name for r in tied)} ran within {100 * TIE_TOLERANCE:.0f} % of the fastest "
                         f"and count as tied; the smaller file wins a tie.")
        others = [r for r in eligible if r.name not in (rec.name, "baseline") and r not in tied]
        if others:
            parts.append("Also eligible but slower: " + ", ".join(
                f"{r.name} {base.latency_ms / r.latency_ms:.2f}x" for r in others[:5]) + ".")
    if rejected:
        parts.append("Not eligible: " + "; ".join(f"{n} ({why})" for n, why in list(rejected.items())[:6]) + ".")
    failed = [o for o in opt.outcomes if o.status == "failed"]
    if failed:
        parts.append(f"{len(failed)} recipe(s) failed: " + ", ".join(o.recipe for o in failed) + " (reasons below).")
    parts.append(f"Quality is {basis}. Latencies are medians of one interleaved comparison on {env}, {threads}.")
    if opt.data.source == "generated":
        parts.append("No data was given, so inputs were random: re-run with a sample of your data before "
                     "shipping an int8 candidate.")
    return " ".join(parts)



def _quality_phrase(r) -> str:
    """How a record's quality reads in a sentence."""
    kind, q = r.extra.get("quality_kind"), r.extra.get("quality")
    if kind == "accuracy":
        return f"accuracy {100 * q:.2f} %"
    if kind == "agreement":
        return f"top-1 agreement with the original {100 * q:.2f} %"
    if kind == "sequence_agreement":
        return f"per-position agreement with the original {100 * q:.2f} %"
    if kind == "relative_error":
        return f"relative error {100 * (1 - q):.2f} %"
    if kind == "metric":
        return f"your metric {q:.4g}"
    return "SQNR " + ("identical" if q is None or q == math.inf else f"{q:.1f} dB")


def _size_phrase(ratio: float | None, size: int | None, base: int | None) -> str:
    if not ratio:
        return ""
    mb = f"({size / 1e6:.2f} MB vs {base / 1e6:.2f} MB)"
    if ratio >= 1.02:
        return f", and it is {ratio:.2f}x smaller {mb}"
    if ratio <= 0.98:
        return f", though its file is {1 / ratio:.2f}x larger {mb}"
    return ", at the same size"
