"""Load tests: many clients at once, every request's latency and outcome recorded and checked.

Owns the closed-loop load generator (:func:`run_load`, and :func:`sweep_load` over several
concurrency levels), its per-request record (:class:`LoadResult`, outcomes in ``OUTCOMES``), the
latency-against-throughput plot (:func:`plot_latency_throughput`) and the per-process CPU
accounting around a run (:func:`cpu_by_process`, :func:`cpu_used`). Taught in
09_serving_batching_and_caching.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_callable, check_int
from optkit.serve.batching import BatcherClosed, QueueFull, RequestTimeout
from optkit.serve.http_edge import HttpError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["OUTCOMES", "LoadResult", "run_load", "sweep_load", "plot_latency_throughput", "cpu_by_process",
           "cpu_used"]


OUTCOMES = ("ok", "mismatch", "timeout", "rejected", "error")


def _outcome_of(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, RequestTimeout)):
        return "timeout"
    if isinstance(exc, (QueueFull, BatcherClosed)):
        return "rejected"
    if isinstance(exc, HttpError) and exc.status in (429, 503):
        return "rejected"
    return "error"


@dataclass(repr=False)
class LoadResult:
    """Every request of one load run: who sent it, which input, when, how long, what came back.

    Arrays have one entry per request: ``client``, ``seq`` (its number for that client),
    ``index`` (the input it sent), ``start_s`` (send time from the run's start), ``latency_s``
    and ``outcome`` (``ok``, ``mismatch``: an answer that is not the one expected for *its*
    input, ``timeout``, ``rejected``, ``error``). ``throughput`` counts ok answers per second of
    wall time; latency percentiles are over ok answers.

    Taught in 09_serving_batching_and_caching.
    """

    name: str
    concurrency: int
    requests_per_client: int
    wall_s: float
    client: np.ndarray
    seq: np.ndarray
    index: np.ndarray
    start_s: np.ndarray
    latency_s: np.ndarray
    outcome: np.ndarray
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Requests recorded."""
        return int(self.outcome.size)

    @property
    def expected_n(self) -> int:
        """Requests the run was asked to send (clients x requests per client)."""
        return self.concurrency * self.requests_per_client

    @property
    def counts(self) -> dict[str, int]:
        """Requests per outcome (every outcome listed, zeros included)."""
        return {o: int(np.sum(self.outcome == o)) for o in OUTCOMES}

    @property
    def ok(self) -> int:
        """Requests answered with the expected output."""
        return self.counts["ok"]

    @property
    def lost(self) -> int:
        """Requests sent that have no record, or (client, seq) pairs recorded twice: should be 0."""
        pairs = set(zip(self.client.tolist(), self.seq.tolist()))
        return self.expected_n - len(pairs) + (self.n - len(pairs))

    @property
    def throughput(self) -> float:
        """ok answers per second of wall time."""
        return self.ok / self.wall_s if self.wall_s > 0 else math.nan

    def _pct(self, q: float) -> float:
        lat = self.latency_s[self.outcome == "ok"]
        return float(np.percentile(lat, q)) * 1e3 if lat.size else math.nan

    @property
    def p50_ms(self) -> float:
        """Median latency of ok answers (ms)."""
        return self._pct(50)

    @property
    def p90_ms(self) -> float:
        """90th percentile latency of ok answers (ms)."""
        return self._pct(90)

    @property
    def p99_ms(self) -> float:
        """99th percentile latency of ok answers (ms)."""
        return self._pct(99)

    def summary(self) -> dict[str, Any]:
        """One row: name, concurrency, requests, outcome counts, lost, throughput, p50/p90/p99."""
        return {"name": self.name, "concurrency": self.concurrency, "requests": self.n, **self.counts,
                "lost": self.lost, "throughput": self.throughput, "p50_ms": self.p50_ms,
                "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "wall_s": self.wall_s}

    def to_frame(self) -> "pd.DataFrame":
        """One row per request."""
        import pandas as pd

        return pd.DataFrame({"client": self.client, "seq": self.seq, "index": self.index,
                             "start_s": self.start_s, "latency_ms": self.latency_s * 1e3,
                             "outcome": self.outcome})

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v or k == "ok")
        return (f"LoadResult({self.name!r}, {self.concurrency} clients x {self.requests_per_client}: {counts}, "
                f"lost {self.lost}; {self.throughput:,.0f} req/s, p50 {self.p50_ms:.3g} ms, "
                f"p99 {self.p99_ms:.3g} ms)")


def _matches(got: Any, want: np.ndarray, atol: float, rtol: float) -> bool:
    """``np.allclose(got, want, atol, rtol)`` for same-shape arrays, with less overhead per call."""
    try:
        got = np.asarray(got)
    except Exception:  # noqa: BLE001
        return False
    if got.shape != want.shape:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(got - want) <= atol + rtol * np.abs(want)))


def run_load(call: Callable[[Any], Any], inputs: Sequence[Any] | np.ndarray, *, concurrency: int,
             requests_per_client: int, expected: Sequence[Any] | np.ndarray | None = None,
             atol: float = 1e-4, rtol: float = 1e-4, warmup: int = 1, name: str | None = None) -> LoadResult:
    """Closed-loop load: ``concurrency`` client threads each send ``requests_per_client`` requests.

    A client sends a request (``call(inputs[i])``), waits for the answer, records it, and sends
    the next. Client ``c``'s request ``s`` sends input ``(c * requests_per_client + s) % len(inputs)``,
    so concurrent clients send different inputs. With ``expected`` (one output per input), each
    answer is compared with the expected output of the input that request sent (``np.allclose``
    with ``atol``/``rtol``): a swapped or wrong answer is a ``mismatch``. Exceptions are recorded
    as ``timeout``, ``rejected`` or ``error``. ``warmup`` untimed requests per client come first;
    all clients then start together.

    Taught in 09_serving_batching_and_caching.
    """
    check_callable("call", call, fix="pass e.g. batcher.predict or an HttpClient")
    concurrency = check_int("concurrency", concurrency, 1)
    per_client = check_int("requests_per_client", requests_per_client, 1)
    warmup = check_int("warmup", warmup, 0)
    n_inputs = len(inputs)
    if n_inputs == 0:
        raise OptkitError("inputs", inputs, "is empty", "pass at least one input")
    if expected is not None and len(expected) != n_inputs:
        raise OptkitError("expected", f"{len(expected)} outputs", f"must hold one output per input ({n_inputs})",
                          "compute the expected outputs with the same model on the same inputs")
    want = None if expected is None else [np.asarray(e) for e in expected]
    total = concurrency * per_client
    client = np.full(total, -1, dtype=np.int64)
    seq = np.full(total, -1, dtype=np.int64)
    index = np.zeros(total, dtype=np.int64)
    start = np.zeros(total)
    latency = np.zeros(total)
    outcome = np.full(total, "", dtype=object)
    errors: collections.Counter = collections.Counter()
    errors_lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    t_zero = [0.0]
    clock = time.perf_counter

    def client_loop(c: int) -> None:
        for s in range(warmup):
            try:
                call(inputs[(c + s) % n_inputs])
            except Exception:  # noqa: BLE001 - warm-up failures show up in the timed run
                pass
        barrier.wait()
        for s in range(per_client):
            slot = c * per_client + s
            i = slot % n_inputs
            t0 = clock()
            try:
                got = call(inputs[i])
                result = "ok" if want is None or _matches(got, want[i], atol, rtol) else "mismatch"
            except Exception as exc:  # noqa: BLE001 - every failure is an outcome to record
                result = _outcome_of(exc)
                with errors_lock:
                    errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            t1 = clock()
            client[slot], seq[slot], index[slot] = c, s, i
            start[slot], latency[slot], outcome[slot] = t0, t1 - t0, result

    threads = [threading.Thread(target=client_loop, args=(c,), daemon=True) for c in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t_zero[0] = clock()
    for t in threads:
        t.join()
    wall = clock() - t_zero[0]
    recorded = client >= 0
    return LoadResult(name=name or getattr(call, "__name__", "call"), concurrency=concurrency,
                      requests_per_client=per_client, wall_s=wall, client=client[recorded],
                      seq=seq[recorded], index=index[recorded], start_s=start[recorded] - t_zero[0],
                      latency_s=latency[recorded], outcome=outcome[recorded].astype(str),
                      errors=dict(errors.most_common(10)))


def sweep_load(call: Callable[[Any], Any], inputs: Sequence[Any] | np.ndarray, concurrencies: Sequence[int], *,
               requests_per_level: int = 1000, min_requests_per_client: int = 8, name: str | None = None,
               **kw: Any) -> list[LoadResult]:
    """:func:`run_load` at each concurrency; about ``requests_per_level`` requests per level.

    Each client sends ``max(min_requests_per_client, ceil(requests_per_level / concurrency))``.
    Other keywords (``expected``, ``warmup`` ...) go to :func:`run_load`.
    Taught in 09_serving_batching_and_caching.
    """
    levels = list(concurrencies) if isinstance(concurrencies, (list, tuple, range, np.ndarray)) else None
    if not levels:
        raise OptkitError("concurrencies", concurrencies, "must be a non-empty list of client counts",
                          "pass e.g. [1, 4, 16, 64]")
    requests_per_level = check_int("requests_per_level", requests_per_level, 1)
    min_requests_per_client = check_int("min_requests_per_client", min_requests_per_client, 1)
    out = []
    for c in levels:
        c = check_int("concurrencies", c, 1)
        per_client = max(min_requests_per_client, math.ceil(requests_per_level / c))
        out.append(run_load(call, inputs, concurrency=c, requests_per_client=per_client, name=name, **kw))
    return out


def plot_latency_throughput(results: Mapping[str, Sequence[LoadResult]], *, percentiles: Sequence[int] = (50, 99),
                            ax: Any = None, annotate: bool = True) -> "Figure":
    """Latency against throughput, one curve per variant, one point per concurrency level.

    The median is drawn solid, the p99 dashed, in the variant's colour; each point is labelled
    with its number of clients. A curve that goes right is serving more; one that goes up is
    making each caller wait longer. Returns the Figure (closed in pyplot, shown once by display).
    Taught in 09_serving_batching_and_caching.
    """
    if not isinstance(results, Mapping) or not results:
        raise OptkitError("results", results, "must be a non-empty dict of name -> list of LoadResult",
                          "pass e.g. {'batcher': sweep_load(...)}")
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 4.2), layout="constrained")
        plt.close(fig)
    else:
        fig = ax.figure
    styles = {50: "-", 90: "-.", 99: "--"}
    for i, (name, series) in enumerate(results.items()):
        series = sorted(series, key=lambda r: r.concurrency)
        color = f"C{i % 10}"
        x = [r.throughput for r in series]
        for q in percentiles:
            y = [r._pct(q) for r in series]
            ax.plot(x, y, marker="o" if q == 50 else "x", ls=styles.get(q, ":"), color=color,
                    label=f"{name} p{q}")
        if annotate:
            for r, xi in zip(series, x):
                ax.annotate(str(r.concurrency), (xi, r._pct(percentiles[0])), fontsize=7, color=color,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_yscale("log")
    ax.set_xlabel("throughput (answered requests/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("latency vs throughput (labels: concurrent clients)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) used so far by this process and each process it started.

    Returns ``{pid: (name, seconds)}``. Ray names its worker processes by what they run
    (``ray::ProxyActor``, ``ray::ServeReplica:app:deployment``; the method being run is cut
    off), so the difference of two calls around a load test shows where a request's CPU time
    goes: this process (``"this process"``: the clients), the HTTP proxy, the replica. Needs
    ``psutil`` (installed with Jupyter). Taught in 09_serving_batching_and_caching.
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with ipykernel
        raise OptkitError("psutil", None, "is not installed", "pip install psutil") from None
    me = psutil.Process()
    out: dict[int, tuple[str, float]] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            name = "this process" if proc.pid == me.pid else proc.name()
        except psutil.Error:  # a process that ended meanwhile
            continue
        if name.startswith("ray::"):
            name = name.split(".")[0]
        out[proc.pid] = (name, times.user + times.system)
    return out


def cpu_used(before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each process name used between two :func:`cpu_by_process` snapshots.

    Taught in 09_serving_batching_and_caching.
    """
    used: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used[name] = used.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    return used
