"""Several variants of the same work side by side: :func:`compare` and :func:`throughput_sweep`.

- :func:`compare` interleaves the variants round by round (in rotated order) so that a drift of
  the machine hits every variant alike, and returns a :class:`Comparison` (speedups, table).
- :func:`throughput_sweep` measures one piece of work at several batch sizes.

Both build on :func:`~optkit.core.bench.measure`'s loops in :mod:`.timing`.

Taught in 00_measure_first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from optkit.core.bench.system import _check_callable, _use_threads
from optkit.core.bench.timing import (Measurement, _check_repeats, _fmt_ms, _fmt_rate, _name_of,
                                      _timed_block, _warm, measure)
from optkit.core.errors import OptkitError, check_int, check_range

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


# --------------------------------------------------------------------------- results

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
        """DataFrame indexed by variant: median, CI, p90, p95, p99, runs, throughput, speedup vs the first."""
        import pandas as pd

        base = self._get(self.baseline)
        rows = []
        for name, m in self.measurements.items():
            lo, hi = m.ci_median_ms
            rows.append({
                "name": name, "batch_size": m.batch_size, "median_ms": m.median_ms,
                "ci_lo_ms": lo, "ci_hi_ms": hi, "p90_ms": m.p90_ms, "p95_ms": m.p95_ms, "p99_ms": m.p99_ms,
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


# --------------------------------------------------------------------------- interleaving

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
    budget = float(check_range("max_time_s", max_time_s, 0))

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

