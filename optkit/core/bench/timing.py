"""Timing, memory and hardware facts: one harness for every runtime in the course.

``measure`` times any no-argument callable (a PyTorch model call, a compiled one, an ONNX Runtime
``session.run``, a TFLite ``invoke``) with warm-up, a repeat count bounded by both a number and a
time budget, and robust statistics (median, tail percentiles, a distribution-free confidence
interval for the median). ``compare`` interleaves several variants so that a slow drift of the
machine cannot bias their ratio; ``throughput_sweep`` walks batch sizes; ``peak_memory`` reports the
peak resident memory of one call; ``environment`` and ``environment_line`` state the hardware and
thread count that every number was measured on.

Taught in 00_measure_first.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_callable, check_int

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Measurement",
    "Comparison",
    "MemoryResult",
    "measure",
    "compare",
    "throughput_sweep",
    "threads",
    "peak_memory",
    "environment",
    "environment_line",
    "median_ci",
]

# CPU flags that decide which kernels a runtime can use. x86 first, then Arm.
CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2",
)


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
    if not 0.0 < confidence < 1.0:
        raise OptkitError("confidence", confidence, "is outside (0, 1)", "pass e.g. 0.95")
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


@dataclass(repr=False)
class Comparison:
    """Interleaved measurements of several variants of the same work.

    ``speedup(baseline, other)`` is ``median(baseline) / median(other)``: above 1 means ``other``
    is faster. ``ratio(a, b)`` is the plain latency ratio ``median(a) / median(b)`` and so equals
    ``speedup(a, b)``. ``table()`` lists every variant with its speedup over the first one.

    Taught in 00_measure_first.
    """

    measurements: dict[str, Measurement]
    rounds: int = 1

    @property
    def baseline(self) -> str:
        """Name of the first variant, the one ``table()`` compares against."""
        return next(iter(self.measurements))

    def _get(self, name: str) -> Measurement:
        if name not in self.measurements:
            raise OptkitError("name", name, "is not one of the compared variants",
                              "use one of " + ", ".join(repr(k) for k in self.measurements))
        return self.measurements[name]

    def __getitem__(self, name: str) -> Measurement:
        return self._get(name)

    def ratio(self, a: str, b: str) -> float:
        """Latency ratio ``median(a) / median(b)``; above 1 means ``b`` is faster."""
        return self._get(a).median_ms / self._get(b).median_ms

    def speedup(self, baseline: str, other: str) -> float:
        """How many times faster ``other`` is than ``baseline``: ``median(baseline) / median(other)``."""
        return self.ratio(baseline, other)

    def table(self) -> "pd.DataFrame":
        """DataFrame indexed by variant: median, CI, p90, p99, runs, throughput, speedup vs the first."""
        import pandas as pd

        base = self._get(self.baseline)
        rows = []
        for name, m in self.measurements.items():
            lo, hi = m.ci_median_ms
            rows.append({
                "name": name, "batch_size": m.batch_size, "median_ms": m.median_ms,
                "ci_lo_ms": lo, "ci_hi_ms": hi, "p90_ms": m.p90_ms, "p99_ms": m.p99_ms,
                "runs": m.n, "throughput": m.throughput,
                "speedup": base.median_ms / m.median_ms,
            })
        return pd.DataFrame(rows).set_index("name")

    def __repr__(self) -> str:
        head = (f"Comparison({len(self.measurements)} variants, {self.rounds} interleaved rounds, "
                f"speedup vs {self.baseline!r})")
        base = self._get(self.baseline)
        rows = [("", "median ms", "95% CI", "p99 ms", "runs", "items/s", "speedup")]
        for name, m in self.measurements.items():
            lo, hi = m.ci_median_ms
            rows.append((name, _fmt_ms(m.median_ms), f"[{_fmt_ms(lo)}, {_fmt_ms(hi)}]",
                         _fmt_ms(m.p99_ms), str(m.n), _fmt_rate(m.throughput),
                         f"{base.median_ms / m.median_ms:.2f}x"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [head] + ["  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                           for i, (cell, w) in enumerate(zip(row, widths)))
                          for row in rows]
        return "\n".join(line.rstrip() for line in lines)


class MemoryResult(int):
    """Peak resident memory (RSS) of the process during one call, in bytes.

    It *is* that number (an ``int``), so ``peak_memory(fn) / 1e6`` gives megabytes, and it carries:
    ``peak_rss_bytes`` (same value), ``delta_rss_bytes`` (peak during the call minus RSS just
    before it: what the call itself added at its worst), ``cuda_peak_bytes`` (peak CUDA memory
    allocated by torch during the call, or None without a GPU) and ``method`` (how RSS was read).

    Taught in 00_measure_first.
    """

    peak_rss_bytes: int
    delta_rss_bytes: int
    cuda_peak_bytes: int | None
    method: str

    def __new__(cls, peak_rss_bytes: int, delta_rss_bytes: int,
                cuda_peak_bytes: int | None = None, method: str = ""):
        obj = super().__new__(cls, int(peak_rss_bytes))
        obj.peak_rss_bytes = int(peak_rss_bytes)
        obj.delta_rss_bytes = int(delta_rss_bytes)
        obj.cuda_peak_bytes = None if cuda_peak_bytes is None else int(cuda_peak_bytes)
        obj.method = method
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the four fields."""
        return {"peak_rss_bytes": self.peak_rss_bytes, "delta_rss_bytes": self.delta_rss_bytes,
                "cuda_peak_bytes": self.cuda_peak_bytes, "method": self.method}

    def __repr__(self) -> str:
        cuda = ("no CUDA" if self.cuda_peak_bytes is None
                else f"CUDA peak {self.cuda_peak_bytes / 1e6:.1f} MB")
        return (f"MemoryResult(peak RSS {self.peak_rss_bytes / 1e6:.1f} MB, "
                f"+{self.delta_rss_bytes / 1e6:.1f} MB during the call, {cuda}, via {self.method})")

    __str__ = __repr__

    def __reduce__(self):
        return (MemoryResult, (self.peak_rss_bytes, self.delta_rss_bytes,
                               self.cuda_peak_bytes, self.method))


# --------------------------------------------------------------------------- input checks

def _check_callable(parameter: str, value: Any, *, optional: bool = False) -> None:
    check_callable(parameter, value, optional=optional, fix="pass a function taking no arguments, e.g. lambda: model(x)")


def _check_budget(max_time_s: Any) -> float:
    if isinstance(max_time_s, bool) or not isinstance(max_time_s, (int, float, np.floating)) \
            or not max_time_s >= 0:
        raise OptkitError("max_time_s", max_time_s, "must be a number >= 0",
                          "pass a time budget in seconds, e.g. 2.0")
    return float(max_time_s)


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


# --------------------------------------------------------------------------- threads

def _torch():
    """torch if it can be imported, else None (timing ONNX Runtime or TFLite needs no torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return None
    return torch


def _current_threads() -> int | None:
    torch = _torch()
    return None if torch is None else int(torch.get_num_threads())


@contextlib.contextmanager
def _use_threads(n: int | None) -> Iterator[int | None]:
    if n is None:
        yield _current_threads()
        return
    n = check_int("threads", n, 1)
    torch = _torch()
    if torch is None:  # pragma: no cover
        raise OptkitError("threads", n, "needs torch, which is not installed",
                          "leave threads=None and set threads on your runtime's session")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Run a block with ``torch.set_num_threads(n)``, restoring the previous count afterwards.

    Only torch's intra-op pool is affected; ONNX Runtime (``SessionOptions.intra_op_num_threads``)
    and TFLite (``Interpreter(num_threads=...)``) take their thread count when created.

    Taught in 00_measure_first.
    """
    if n is None:
        raise OptkitError("n", n, "must be an integer", "pass an int >= 1, e.g. threads(1)")
    with _use_threads(n) as used:
        yield used


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
    budget = _check_budget(max_time_s)
    with _use_threads(threads) as used:
        _warm(fn, sync, warmup)
        samples = _timed_block(fn, sync, min_repeats, max_repeats, budget)
    return Measurement(name=name or _name_of(fn), samples_s=np.array(samples),
                       batch_size=batch_size, threads=used, warmup=warmup)


def _rotated(names: list[str], shift: int) -> list[str]:
    shift %= len(names)
    return names[shift:] + names[:shift]


def compare(fns: Mapping[str, Callable[[], Any]], *, batch_size: int = 1, rounds: int = 5,
            warmup: int = 5, min_repeats: int = 10, max_repeats: int = 200,
            max_time_s: float = 2.0, threads: int | None = None,
            sync: Callable[[], Any] | None = None) -> Comparison:
    """Time several variants of the same work, interleaved, and return a :class:`Comparison`.

    Each variant is warmed up, then timing runs in ``rounds`` rounds; in round ``r`` every variant
    times one block of calls, in an order rotated by ``r`` so no variant always goes first.
    Each block gets ``max_time_s / rounds`` seconds, at least ``ceil(min_repeats / rounds)`` and
    at most ``max(that, max_repeats // rounds)`` calls, so per variant the totals respect
    ``min_repeats``, ``max_repeats`` and ``max_time_s`` as in :func:`measure`. A drift of the
    machine (thermal throttling, a neighbour waking up) then hits every variant alike instead of
    biasing their ratio. The blocks of a variant are merged into one Measurement.

    Taught in 00_measure_first.
    """
    if not isinstance(fns, Mapping) or len(fns) == 0:
        raise OptkitError("fns", fns, "must be a non-empty dict of name -> callable",
                          "pass e.g. {'eager': lambda: model(x), 'compiled': lambda: cmodel(x)}")
    for key, fn in fns.items():
        _check_callable(f"fns[{key!r}]", fn)
    _check_callable("sync", sync, optional=True)
    batch_size = check_int("batch_size", batch_size, 1)
    rounds = check_int("rounds", rounds, 1)
    warmup, min_repeats, max_repeats = _check_repeats(warmup, min_repeats, max_repeats)
    budget = _check_budget(max_time_s)

    names = [str(k) for k in fns]
    calls = dict(zip(names, fns.values()))
    block_min = math.ceil(min_repeats / rounds)
    block_max = max(block_min, max_repeats // rounds)
    samples: dict[str, list[float]] = {name: [] for name in names}
    with _use_threads(threads) as used:
        for name in names:
            _warm(calls[name], sync, warmup)
        for r in range(rounds):
            for name in _rotated(names, r):
                samples[name] += _timed_block(calls[name], sync, block_min, block_max,
                                              budget / rounds)
    measurements = {
        name: Measurement(name=name, samples_s=np.array(samples[name]), batch_size=batch_size,
                          threads=used, warmup=warmup)
        for name in names
    }
    return Comparison(measurements=measurements, rounds=rounds)


def throughput_sweep(make_fn: Callable[[int], Callable[[], Any]], batch_sizes: Sequence[int], *,
                     name: str | None = None, **measure_kw: Any) -> list[Measurement]:
    """Measure the same work at several batch sizes; one :class:`Measurement` per size.

    ``make_fn(batch_size)`` builds the input for that size and returns a no-argument callable,
    so building inputs is never timed. Other keywords go to :func:`measure`. Each Measurement is
    named ``"<name> b<batch_size>"`` and carries its batch size, so ``m.throughput`` is items/s.

    Taught in 00_measure_first.
    """
    _check_callable("make_fn", make_fn)
    sizes = list(batch_sizes) if isinstance(batch_sizes, (list, tuple, range, np.ndarray)) else None
    if not sizes:
        raise OptkitError("batch_sizes", batch_sizes, "must be a non-empty list of ints",
                          "pass e.g. [1, 8, 32, 128]")
    sizes = [check_int("batch_sizes", bs, 1) for bs in sizes]
    for key in ("batch_size", "name"):
        if key in measure_kw:
            raise OptkitError(key, measure_kw[key], "is set by throughput_sweep itself",
                              f"leave {key} out (use name= for the series name)")
    base = name or _name_of(make_fn)
    out = []
    for bs in sizes:
        fn = make_fn(bs)
        if not callable(fn):
            raise OptkitError("make_fn", make_fn, f"returned {type(fn).__name__} for batch size {bs}",
                              "make make_fn(batch_size) return a no-argument callable")
        out.append(measure(fn, name=f"{base} b{bs}", batch_size=bs, **measure_kw))
    return out


# --------------------------------------------------------------------------- memory

_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kb(field_name: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None where there is no /proc."""
    try:
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_bytes() -> int | None:
    rss = _status_kb("VmRSS")
    if rss is not None:
        return rss
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM); False where that is not allowed."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_memory_sampled(fn: Callable, args: tuple, kw: dict,
                         interval_s: float = 0.001) -> tuple[int, int, str]:
    """Peak RSS by polling from a thread (may miss a spike shorter than ``interval_s``)."""
    before = _rss_bytes()
    if before is None:
        import resource

        fn(*args, **kw)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return peak, 0, "getrusage (lifetime peak of the process, not reset)"
    peak = [before]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rss = _rss_bytes() or 0
            if rss > peak[0]:
                peak[0] = rss
            done.wait(interval_s)

    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    try:
        fn(*args, **kw)
    finally:
        peak[0] = max(peak[0], _rss_bytes() or 0)
        done.set()
        sampler.join()
    return peak[0], peak[0] - before, f"sampling every {interval_s * 1e3:g} ms"


def peak_memory(fn: Callable, *args: Any, **kw: Any) -> MemoryResult:
    """Call ``fn(*args, **kw)`` once and return the peak resident memory, as a :class:`MemoryResult`.

    On Linux the kernel's high-water mark is reset (``5`` written to /proc/self/clear_refs) and
    VmHWM read after the call: exact, even for a spike of a microsecond. Where that is refused
    (some containers) a thread samples RSS every millisecond instead. Without /proc, psutil is
    sampled if installed, else the lifetime peak from ``getrusage`` is reported. On a GPU,
    torch's CUDA peak is reset before and read after the call. ``fn``'s return value is dropped.

    Taught in 00_measure_first.
    """
    _check_callable("fn", fn)
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _rss_bytes()
    if before is not None and _status_kb("VmHWM") is not None and _reset_hwm():
        fn(*args, **kw)
        peak = max(_status_kb("VmHWM") or 0, before)
        delta, method = peak - before, "VmHWM after clear_refs"
    else:
        peak, delta, method = _peak_memory_sampled(fn, args, kw)
    cuda_peak = None
    if cuda:
        torch.cuda.synchronize()
        cuda_peak = int(torch.cuda.max_memory_allocated())
    return MemoryResult(peak, delta, cuda_peak, method)


# --------------------------------------------------------------------------- environment

def _cpuinfo() -> tuple[str | None, set[str]]:
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if model is None and key in ("model name", "hardware", "cpu model"):
                    model = value.strip() or None
                elif not flags and key in ("flags", "features"):
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def _cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max``), or None when unlimited or unknown."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return round(int(quota) / int(period), 2)


def _available_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


#: Variables that cap the instruction set math libraries use (oneDNN, MKL, ATen, numpy).
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
                     "NPY_DISABLE_CPU_FEATURES")


def environment() -> dict[str, Any]:
    """Facts about the machine and software every measurement depends on, as a JSON-ready dict.

    Keys: ``cpu``, ``arch``, ``cpu_flags`` (each of :data:`CPU_FLAGS` -> present or not),
    ``logical_cores``, ``available_cores`` (this process's CPU affinity), ``cpu_quota`` (cgroup
    limit, or None), ``memory_bytes``, ``torch_threads``, ``torch_interop_threads``,
    ``thread_env`` (OMP/MKL/... variables that are set), ``os``, ``python``, ``numpy``, ``torch``,
    ``onnxruntime``, ``onnx``, ``tensorflow`` (only if already imported: this never imports it),
    ``gpu`` and ``cuda`` (None without a GPU), ``isa_cap`` (variables of
    :data:`ISA_CAP_VARIABLES` that hold the math libraries below the CPU's best kernels, as
    ``make test ISA=avx2`` sets them). No host or user names.

    Taught in 00_measure_first.
    """
    model, flags = _cpuinfo()
    env: dict[str, Any] = {
        "cpu": model or platform.processor() or platform.machine() or "unknown CPU",
        "arch": platform.machine(),
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS} if flags else {},
        "logical_cores": os.cpu_count(),
        "available_cores": _available_cores(),
        "cpu_quota": _cpu_quota(),
        "memory_bytes": _memory_bytes(),
        "torch_threads": None,
        "torch_interop_threads": None,
        "thread_env": {k: os.environ[k] for k in
                       ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
                       if k in os.environ},
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "tensorflow": None,
        "gpu": None,
        "cuda": None,
        "isa_cap": {k: os.environ[k] for k in ISA_CAP_VARIABLES if os.environ.get(k)},
    }
    torch = _torch()
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = int(torch.get_num_threads())
        env["torch_interop_threads"] = int(torch.get_num_interop_threads())
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        env["tensorflow"] = getattr(tf, "__version__", None)
    return env


def _isa_summary(flags: Mapping[str, bool]) -> str | None:
    """The most capable matrix/vector extension present, in words."""
    ladder = (
        ("amx_tile", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"),
        ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"), ("sve2", "SVE2"), ("sve", "SVE"),
        ("i8mm", "NEON i8mm"), ("asimddp", "NEON dotprod"), ("asimd", "NEON"),
    )
    for flag, words in ladder:
        if flags.get(flag):
            return words
    return None


def environment_line(env: Mapping[str, Any] | None = None) -> str:
    """One line stating the hardware and threads, to print beside every number.

    e.g. ``"AMD EPYC (AVX-512 VNNI), 2 cores, torch 2.13.0 with 2 threads, no GPU"``.
    Pass a dict from :func:`environment` (say, one stored in a Record) to describe that machine.

    Taught in 00_measure_first.
    """
    env = environment() if env is None else env
    cpu = env.get("cpu") or "unknown CPU"
    isa = _isa_summary(env.get("cpu_flags") or {})
    parts = [f"{cpu} ({isa})" if isa else cpu]
    avail, logical = env.get("available_cores"), env.get("logical_cores")
    if avail and logical and avail != logical:
        parts.append(f"{avail} of {logical} cores")
    elif avail or logical:
        parts.append(f"{avail or logical} cores")
    if env.get("cpu_quota") is not None and avail and env["cpu_quota"] < avail:
        parts[-1] += f" (quota {env['cpu_quota']:g})"
    if env.get("torch"):
        version = str(env["torch"]).split("+")[0]
        threads_txt = f" with {env['torch_threads']} threads" if env.get("torch_threads") else ""
        parts.append(f"torch {version}{threads_txt}")
    parts.append(f"GPU {env['gpu']}" if env.get("gpu") else "no GPU")
    cap = env.get("isa_cap") or {}
    if cap:
        held = cap.get("ONEDNN_MAX_CPU_ISA") or cap.get("DNNL_MAX_CPU_ISA") or next(iter(cap.values()))
        parts.append(f"math kernels held to {held}")
    return ", ".join(parts)

