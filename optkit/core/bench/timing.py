"""Timing one callable: :func:`measure` and the :class:`Measurement` it returns.

- :func:`measure`: warm-up calls, then timed calls bounded by a count (``min_repeats``,
  ``max_repeats``) and a time budget (``max_time_s``), with an optional ``sync`` inside the timed
  span; ``_timed_block`` and ``_warm`` are the loops :func:`~optkit.core.bench.compare` reuses.
- :class:`Measurement`: the samples and their statistics (median, p90, p95, p99, mean, throughput).
- :func:`median_ci`: the distribution-free confidence interval of the median.
- ``_fmt_ms`` / ``_fmt_rate``: how latencies and rates are printed in reprs.

Taught in 00_measure_first.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from optkit.core.bench.system import _check_callable, _use_threads
from optkit.core.errors import OptkitError, check_int, check_range


# --------------------------------------------------------------------------- statistics

def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``samples``.

    The number of samples below the true median follows Binomial(n, 1/2) whatever the shape of
    the distribution, so the order statistics ``x[j]`` and ``x[n-1-j]`` (sorted, 0-based) cover
    the median with probability ``1 - 2 * P(B <= j)``. We take the narrowest symmetric pair whose
    coverage is at least ``confidence``. With fewer than 6 samples no pair reaches 95 %; the
    interval is then the whole range (min, max), which covers less than asked.

    Taught in 00_measure_first.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise OptkitError("samples", samples, "is empty", "pass at least one timing sample")
    check_range("confidence", confidence, 0, 1, low_open=True, high_open=True)
    # log P(B = k) built by the ratio P(k+1)/P(k) = (n-k)/(k+1); stable for any n.
    k = np.arange(n)
    log_pmf = -n * math.log(2.0) + np.concatenate(([0.0], np.cumsum(np.log((n - k) / (k + 1.0)))))
    cdf = np.cumsum(np.exp(log_pmf))
    tail = (1.0 - confidence) / 2.0
    ok = np.nonzero(cdf[: (n + 1) // 2] <= tail)[0]
    j = int(ok[-1]) if ok.size else 0
    return float(x[j]), float(x[n - 1 - j])


def _fmt_ms(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _fmt_rate(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


# --------------------------------------------------------------------------- results

@dataclass(repr=False)
class Measurement:
    """Timing samples of one callable, and the statistics a reader needs from them.

    ``samples_s`` holds one wall-clock duration per timed call, in seconds. ``threads`` is the
    torch intra-op thread count in effect while timing (ONNX Runtime and TFLite set their own,
    on their session or interpreter). Latency properties are in milliseconds; ``throughput`` is
    items per second at the median latency (``batch_size / median``).

    Taught in 00_measure_first.
    """

    name: str
    samples_s: np.ndarray
    batch_size: int = 1
    threads: int | None = None
    warmup: int = 0

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples_s, dtype=np.float64).ravel()
        if samples.size == 0:
            raise OptkitError("samples_s", self.samples_s, "is empty",
                              "time at least one call (min_repeats >= 1)")
        self.samples_s = samples
        check_int("batch_size", self.batch_size, 1)

    @property
    def n(self) -> int:
        """Number of timed calls."""
        return int(self.samples_s.size)

    @property
    def median_ms(self) -> float:
        """Median latency in ms: the headline number, robust to the odd slow call."""
        return float(np.median(self.samples_s)) * 1e3

    @property
    def p90_ms(self) -> float:
        """90th percentile latency in ms."""
        return float(np.percentile(self.samples_s, 90)) * 1e3

    @property
    def p95_ms(self) -> float:
        """95th percentile latency in ms: the tail a service level usually promises."""
        return float(np.percentile(self.samples_s, 95)) * 1e3

    @property
    def p99_ms(self) -> float:
        """99th percentile latency in ms (needs a few hundred runs to mean much)."""
        return float(np.percentile(self.samples_s, 99)) * 1e3

    @property
    def mean_ms(self) -> float:
        """Mean latency in ms (pulled up by slow outliers; prefer the median)."""
        return float(np.mean(self.samples_s)) * 1e3

    @property
    def std_ms(self) -> float:
        """Standard deviation of the latency in ms."""
        return float(np.std(self.samples_s)) * 1e3

    @property
    def min_ms(self) -> float:
        """Fastest call in ms."""
        return float(np.min(self.samples_s)) * 1e3

    @property
    def ci_median_ms(self) -> tuple[float, float]:
        """Distribution-free 95 % confidence interval (lo, hi) for the median, in ms."""
        lo, hi = median_ci(self.samples_s)
        return lo * 1e3, hi * 1e3

    @property
    def throughput(self) -> float:
        """Items per second at the median latency: ``batch_size / median``."""
        median_s = self.median_ms / 1e3
        return self.batch_size / median_s if median_s > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable summary (statistics plus the raw samples in seconds)."""
        lo, hi = self.ci_median_ms
        return {
            "name": self.name,
            "batch_size": int(self.batch_size),
            "threads": self.threads,
            "warmup": int(self.warmup),
            "n": self.n,
            "median_ms": self.median_ms,
            "ci_median_ms": [lo, hi],
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "std_ms": self.std_ms,
            "min_ms": self.min_ms,
            "throughput": self.throughput,
            "samples_s": self.samples_s.tolist(),
        }

    def __repr__(self) -> str:
        lo, hi = self.ci_median_ms
        return (f"Measurement({self.name!r}: median {_fmt_ms(self.median_ms)} ms "
                f"[{_fmt_ms(lo)}, {_fmt_ms(hi)}], p90 {_fmt_ms(self.p90_ms)}, "
                f"p99 {_fmt_ms(self.p99_ms)}, {self.n} runs, "
                f"{_fmt_rate(self.throughput)} items/s)")


# --------------------------------------------------------------------------- input checks

def _check_repeats(warmup: Any, min_repeats: Any, max_repeats: Any) -> tuple[int, int, int]:
    warmup = check_int("warmup", warmup, 0)
    min_repeats = check_int("min_repeats", min_repeats, 1)
    max_repeats = check_int("max_repeats", max_repeats, 1)
    if max_repeats < min_repeats:
        raise OptkitError("max_repeats", max_repeats, f"is below min_repeats={min_repeats}",
                          f"pass max_repeats >= {min_repeats}")
    return warmup, min_repeats, max_repeats


def _name_of(fn: Callable) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "fn" if name == "<lambda>" else name


# --------------------------------------------------------------------------- timing

def _timed_block(fn: Callable[[], Any], sync: Callable[[], Any] | None,
                 n_min: int, n_max: int, budget_s: float) -> list[float]:
    """Call ``fn`` at least ``n_min`` and at most ``n_max`` times, stopping once ``budget_s`` is spent."""
    clock = time.perf_counter_ns
    samples: list[float] = []
    deadline = clock() + int(budget_s * 1e9)
    while len(samples) < n_max:
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        t1 = clock()
        samples.append((t1 - t0) * 1e-9)
        if len(samples) >= n_min and t1 >= deadline:
            break
    return samples


def _warm(fn: Callable[[], Any], sync: Callable[[], Any] | None, warmup: int) -> None:
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()


def measure(fn: Callable[[], Any], *, name: str | None = None, batch_size: int = 1,
            warmup: int = 5, min_repeats: int = 10, max_repeats: int = 200,
            max_time_s: float = 2.0, threads: int | None = None,
            sync: Callable[[], Any] | None = None) -> Measurement:
    """Time ``fn()`` and return a :class:`Measurement`.

    ``warmup`` untimed calls come first (first calls pay for compilation, allocation and cold
    caches). Then ``fn`` is timed call by call with ``time.perf_counter_ns`` until ``max_time_s``
    has passed or ``max_repeats`` calls are done, but never fewer than ``min_repeats`` calls.
    ``sync`` (e.g. ``torch.cuda.synchronize``) is called after each call, inside the timed span,
    so asynchronous GPU work is counted. ``threads`` sets torch's intra-op threads for the
    duration and restores them afterwards. ``batch_size`` is the number of items one call
    processes; it turns latency into throughput.

    Taught in 00_measure_first.
    """
    _check_callable("fn", fn)
    _check_callable("sync", sync, optional=True)
    batch_size = check_int("batch_size", batch_size, 1)
    warmup, min_repeats, max_repeats = _check_repeats(warmup, min_repeats, max_repeats)
    budget = float(check_range("max_time_s", max_time_s, 0))
    with _use_threads(threads) as used:
        _warm(fn, sync, warmup)
        samples = _timed_block(fn, sync, min_repeats, max_repeats, budget)
    return Measurement(name=name or _name_of(fn), samples_s=np.array(samples),
                       batch_size=batch_size, threads=used, warmup=warmup)
