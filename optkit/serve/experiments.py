"""Serving experiments: interleaved load comparisons, the cache workloads, and their records.

Owns :func:`head_to_head` (several ways to serve, each loaded by the same closed loop in rounds
whose order rotates, so a drift of the machine hits each alike) and its result
:class:`HeadToHead` (medians over rounds, ratios, CPU time per request by process, one
:class:`~optkit.core.record.Record` per way); :func:`compare_cache` (each workload with and
without a :class:`~optkit.serve.cache.PredictionCache` in front); and :func:`serving_table`
(``report.table`` with a throughput ratio, the ratio that means something at a fixed number of
clients). Taught in 09_serving_batching_and_caching.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from optkit.core import report
from optkit.core.errors import OptkitError, check_callable, check_int
from optkit.core.record import Record
from optkit.serve.cache import PredictionCache, cache_key, cached
from optkit.serve.load import LoadResult, cpu_by_process, cpu_used, run_load

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["RAY_PROCESS_GROUPS", "HeadToHead", "head_to_head", "compare_cache", "serving_table"]

# Process-name prefixes (as :func:`optkit.serve.cpu_by_process` reports them) -> what that process does.
RAY_PROCESS_GROUPS = {"this process": "notebook (clients, encoding)", "ray::ProxyActor": "Serve HTTP proxy",
                      "ray::ServeReplica": "replica (model, decoding)"}


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


@dataclass(repr=False)
class HeadToHead:
    """The rounds of an interleaved load comparison: ``results[name]`` holds one LoadResult per round.

    Figures of a way to serve are medians over its rounds (``throughput``, ``p50_ms``,
    ``p99_ms``) and sums over them (``requests``, ``ok``, ``lost``, ``mismatch``, ``failed``: timed
    out, rejected or errors).
    ``cpu_s[name]`` is the CPU seconds each process used during that way's runs, summed over the
    rounds (empty when ``head_to_head`` ran with ``cpu=False``).

    Taught in 09_serving_batching_and_caching.
    """

    concurrency: int
    results: dict[str, list[LoadResult]]
    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)

    def _results(self, name: str) -> list[LoadResult]:
        if name not in self.results:
            raise OptkitError("name", name, "is not a way compared here", "use one of " + ", ".join(self.results))
        return self.results[name]

    def throughput(self, name: str) -> float:
        """Median over rounds of the answered requests per second of ``name``."""
        return _median([r.throughput for r in self._results(name)])

    def ratio(self, name: str, baseline: str) -> float:
        """Throughput of ``name`` over that of ``baseline`` (above 1: ``name`` serves more)."""
        return self.throughput(name) / self.throughput(baseline)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per way: median throughput, p50_ms and p99_ms over rounds; requests, ok, lost, mismatch, failed summed."""
        out = {}
        for name, rs in self.results.items():
            out[name] = {"throughput": self.throughput(name), "p50_ms": _median([r.p50_ms for r in rs]),
                         "p99_ms": _median([r.p99_ms for r in rs]), "requests": sum(r.n for r in rs),
                         "ok": sum(r.ok for r in rs), "lost": sum(r.lost for r in rs),
                         "mismatch": sum(r.counts["mismatch"] for r in rs),
                         "failed": sum(r.n - r.ok - r.counts["mismatch"] for r in rs)}
        return out

    def cpu_per_request_ms(self, name: str, groups: Mapping[str, str] = RAY_PROCESS_GROUPS,
                           other: str = "other Ray processes") -> dict[str, float]:
        """CPU milliseconds per request of ``name``, by process group, largest first.

        A process whose name starts with a key of ``groups`` counts under its value; any other
        under ``other``. Needs ``head_to_head(..., cpu=True)``.
        """
        if name not in self.cpu_s:
            raise OptkitError("name", name, "has no CPU accounting", "run head_to_head(..., cpu=True)")
        n = sum(r.n for r in self._results(name))
        by_group: dict[str, float] = {}
        for proc, seconds in self.cpu_s[name].items():
            label = next((g for prefix, g in groups.items() if proc.startswith(prefix)), other)
            by_group[label] = by_group.get(label, 0.0) + seconds
        return {g: 1e3 * s / n for g, s in sorted(by_group.items(), key=lambda kv: -kv[1])} if n else {}

    def cost_split(self, names: Sequence[str] | None = None, groups: Mapping[str, str] = RAY_PROCESS_GROUPS,
                   other: str = "other Ray processes") -> "pd.DataFrame":
        """Where the time goes: one row per way (in the order of ``names``), from cheapest path to dearest.

        Columns: ``throughput``, ``vs first`` (the first way's throughput over this one's: how
        many times fewer requests it serves), CPU ms per request of each process group (as
        :meth:`cpu_per_request_ms`), their ``total`` and ``step_ms``: what this way costs per
        request beyond the previous row (e.g. in-process batcher, then a Ray handle call, then
        HTTP with a binary body, then HTTP with JSON: each row adds one layer). Needs ``cpu=True``.

        Taught in 09_serving_batching_and_caching.
        """
        import pandas as pd

        names = list(self.results) if names is None else list(names)
        rows = []
        for name in names:
            cpu = self.cpu_per_request_ms(name, groups=groups, other=other)
            rows.append({"way": name, "throughput": self.throughput(name), **cpu, "total": sum(cpu.values())})
        frame = pd.DataFrame(rows).set_index("way").fillna(0.0)
        order = [g for g in [*dict.fromkeys(groups.values()), other] if g in frame.columns]
        frame = frame[["throughput", *order, "total"]]
        frame.insert(1, "vs first", frame["throughput"].iloc[0] / frame["throughput"])
        frame["step_ms"] = frame["total"].diff().fillna(frame["total"].iloc[0])
        return frame

    def record(self, name: str, **fields: Any) -> Record:
        """A Record of ``name``: one request is one input (``batch_size=1``), ``latency_ms`` is the median
        p50 over rounds, ``p99_ms`` and ``throughput`` the medians too; ``extra`` gets concurrency,
        rounds, requests, lost and mismatched. ``fields`` sets the others (technique, workload, ...)."""
        self._results(name)  # a clear error for an unknown name
        row = self.summary()[name]
        extra = {"concurrency": self.concurrency, "rounds": len(self.results[name]), "requests": row["requests"],
                 "lost": row["lost"], "mismatched": row["mismatch"], "failed": row["failed"]}
        extra.update(fields.pop("extra", None) or {})
        values = {"name": name, "batch_size": 1, "latency_ms": row["p50_ms"], "p99_ms": row["p99_ms"],
                  "throughput": row["throughput"], "extra": extra}
        values.update(fields)
        return Record(**values)

    def __str__(self) -> str:
        width = max(len(n) for n in self.results)
        lines = []
        for name, row in self.summary().items():
            lines.append(f"  {name:<{width}} {row['throughput']:8,.0f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                         f"p99 {row['p99_ms']:7.2f} ms  {row['ok']} ok, {row['failed']} failed, "
                         f"{row['lost']} lost, {row['mismatch']} mismatched")
        return "\n".join(lines)

    def __repr__(self) -> str:
        rounds = max(len(rs) for rs in self.results.values())
        return f"HeadToHead({self.concurrency} clients, {rounds} rounds:\n{self}\n)"


def head_to_head(calls: Mapping[str, Callable[[Any], Any]], inputs: Sequence[Any] | np.ndarray, *,
                 concurrency: int, requests_per_client: int, rounds: int = 3,
                 expected: Mapping[str, Any] | Sequence[Any] | np.ndarray | None = None, cpu: bool = False,
                 **kw: Any) -> HeadToHead:
    """Load every way of ``calls`` with the same closed loop, interleaved, for ``rounds`` rounds.

    In round ``r`` each way gets one :func:`~optkit.serve.run_load` at ``concurrency`` clients of
    ``requests_per_client`` requests, in an order rotated by ``r`` (with two ways: AB, BA, AB ...),
    so a machine that slows down or speeds up during the comparison hits every way alike.
    ``expected`` is one output per input for all ways, or a dict by name (e.g. fp32 and int8
    answers). ``cpu=True`` also records the CPU seconds each process (this one and the ones it
    started, e.g. Ray's) used during each run. Other keywords (``atol``, ``rtol``, ``warmup``)
    go to :func:`~optkit.serve.run_load`.

    Taught in 09_serving_batching_and_caching.
    """
    if not isinstance(calls, Mapping) or not calls:
        raise OptkitError("calls", calls, "must be a non-empty dict of name -> callable",
                          "pass e.g. {'batcher': batcher.predict, 'Ray Serve': client}")
    for name, call in calls.items():
        check_callable(f"calls[{name!r}]", call, fix="pass e.g. batcher.predict or an HttpClient")
    concurrency = check_int("concurrency", concurrency, 1)
    rounds = check_int("rounds", rounds, 1)
    names = list(calls)
    if isinstance(expected, Mapping):
        missing = [n for n in names if n not in expected]
        if missing:
            raise OptkitError("expected", sorted(expected), f"has no outputs for {missing}",
                              "give one entry per name of calls, or one array for all")
        want = dict(expected)
    else:
        want = {n: expected for n in names}
    results: dict[str, list[LoadResult]] = {n: [] for n in names}
    cpu_s: dict[str, dict[str, float]] = {n: {} for n in names} if cpu else {}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            before = cpu_by_process() if cpu else None
            results[name].append(run_load(calls[name], inputs, concurrency=concurrency,
                                          requests_per_client=requests_per_client, expected=want[name],
                                          name=name, **kw))
            if cpu:
                for proc, seconds in cpu_used(before, cpu_by_process()).items():
                    cpu_s[name][proc] = cpu_s[name].get(proc, 0.0) + seconds
    return HeadToHead(concurrency=concurrency, results=results, cpu_s=cpu_s)


def compare_cache(call: Callable[[Any], Any], workloads: Mapping[str, Sequence[Any] | np.ndarray],
                  reference: Callable[[Any], Any], *, concurrency: int = 16, max_entries: int = 1000,
                  max_bytes: int = 4 * 2**20, atol: float = 1e-3, rtol: float = 1e-3) -> list[dict[str, Any]]:
    """Each workload served by ``call`` without, then with, a fresh :class:`PredictionCache` in front.

    A workload is a sequence of inputs, each sent once (``concurrency`` clients, ``len // concurrency``
    requests each); every answer is checked against ``reference(inputs)``, one batched call. Returns
    one row per workload: distinct inputs, the cache's hit rate, entries and bytes, requests per
    second without and with the cache, their ratio (``speed-up``) and the answers that were not
    their input's (``mismatched``, both runs).

    Taught in 09_serving_batching_and_caching.
    """
    check_callable("call", call, fix="pass e.g. batcher.predict")
    check_callable("reference", reference, fix="pass the batched model, e.g. the int8 session")
    concurrency = check_int("concurrency", concurrency, 1)
    rows = []
    for label, inputs in workloads.items():
        per_client = len(inputs) // concurrency
        if per_client < 1:
            raise OptkitError("workloads", f"{label!r}: {len(inputs)} inputs",
                              f"has fewer inputs than clients ({concurrency})", "send more inputs or fewer clients")
        want = reference(inputs)
        load = dict(concurrency=concurrency, requests_per_client=per_client, expected=want, atol=atol, rtol=rtol)
        plain = run_load(call, inputs, name=f"{label} without cache", **load)
        cache = PredictionCache(max_entries=max_entries, max_bytes=max_bytes)
        with_cache = run_load(cached(call, cache), inputs, warmup=0, name=f"{label} with cache", **load)
        s = cache.stats()
        rows.append({"workload": label, "distinct inputs": len({cache_key(x) for x in inputs}),
                     "hit rate": s.hit_rate, "entries": s.entries, "cache bytes": s.bytes,
                     "req/s without": plain.throughput, "req/s with cache": with_cache.throughput,
                     "speed-up": with_cache.throughput / plain.throughput,
                     "mismatched": plain.counts["mismatch"] + with_cache.counts["mismatch"]})
    return rows


def serving_table(records: Sequence[Record], baseline: str, *, extra: Sequence[str] = (),
                  columns: Sequence[str] | None = None) -> "pd.DataFrame":
    """:func:`optkit.core.report.table` for load-test records: ``throughput_ratio`` instead of ``speedup``.

    At a fixed number of clients a ratio of median latencies says little (a batcher holds each
    request on purpose); the ratio of throughputs (the baseline's is 1) is what a service gains.
    ``report.table`` still refuses records of another workload or batch size. ``extra`` as in
    ``report.table``; ``columns`` keeps only those named (``throughput_ratio`` included), in order.

    Taught in 09_serving_batching_and_caching.
    """
    frame = report.table(records, baseline=baseline, extra=extra)
    if "throughput" in frame.columns:
        position = frame.columns.get_loc("throughput") + 1
        frame.insert(position, "throughput_ratio", frame["throughput"] / frame.loc[baseline, "throughput"])
    frame = frame.drop(columns=["speedup"], errors="ignore")
    return report.select_columns(frame, columns)
