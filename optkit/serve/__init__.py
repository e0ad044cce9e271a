"""Serving a model: dynamic batching, a prediction cache, load tests, and Ray Serve.

- :class:`DynamicBatcher` queues single requests and runs them through any batched callable
  (PyTorch via :func:`numpy_fn`, an ONNX Runtime session, a LiteRT interpreter) in batches of up
  to ``max_batch_size``, or of whatever arrived within ``max_wait_s``. Each caller gets exactly
  its own result through a :class:`concurrent.futures.Future`. The queue is bounded
  (:class:`QueueFull` is the back-pressure), requests can time out (:class:`RequestTimeout`),
  an exception in the model reaches every caller of that batch, and :meth:`DynamicBatcher.close`
  drains or rejects what is queued, never drops it.
- :class:`PredictionCache` is a thread-safe LRU cache bounded by entries and by bytes, keyed by
  :func:`cache_key` (dtype, shape and content), with hit/miss statistics.
- :func:`run_load` / :func:`sweep_load` are a closed-loop load generator: N client threads send
  requests one after another and every request's latency and outcome is recorded and checked
  against the answer expected for *its* input. :func:`run_stream` feeds frames at a fixed rate.
- :func:`ray_deployment` wraps an optkit artifact (``.onnx``, ``.pt2``, ``.tflite`` or a factory)
  in a Ray Serve deployment with ``@serve.batch`` behind HTTP, validating input at the edge
  (:func:`parse_request`); :class:`LocalServe` starts Ray and Serve on loopback and stops them;
  :class:`HttpClient` calls the endpoint.

Ray is imported only inside the functions that need it. Taught in 09_serving_batching_and_caching.
"""
from __future__ import annotations

import collections
import hashlib
import http.client
import json
import math
import threading
import time
import urllib.parse
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "ServeError",
    "QueueFull",
    "RequestTimeout",
    "BatcherClosed",
    "numpy_fn",
    "DynamicBatcher",
    "BatcherStats",
    "cache_key",
    "PredictionCache",
    "CacheStats",
    "cached",
    "LoadResult",
    "run_load",
    "sweep_load",
    "plot_latency_throughput",
    "cpu_by_process",
    "cpu_used",
    "StreamResult",
    "run_stream",
    "BadRequest",
    "parse_request",
    "load_artifact",
    "ray_deployment",
    "LocalServe",
    "HttpClient",
    "HttpError",
]


# =========================================================================== errors

class ServeError(RuntimeError):
    """Base class of the serving errors a caller should expect under load (not bad input)."""


class QueueFull(ServeError):
    """The batcher's queue is at ``max_queue``: back-pressure. Retry later, or shed the request."""


class RequestTimeout(ServeError, TimeoutError):
    """The request was not answered within its ``timeout_s`` (it was never run, or the caller stopped waiting)."""


class BatcherClosed(ServeError):
    """The batcher is closed: the request was submitted after ``close()`` or rejected by ``close(drain=False)``."""


def _check_int(parameter: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise OptkitError(parameter, value, f"must be an integer >= {low}", f"pass e.g. {max(low, 1)}")
    return int(value)


def _check_seconds(parameter: str, value: Any, *, allow_none: bool = True, allow_zero: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
          and math.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise OptkitError(parameter, value, f"must be a number of seconds {bound}"
                          + (" or None" if allow_none else ""), "pass e.g. 0.005")
    return float(value)


# =========================================================================== adapters

# numpy_fn lives in optkit.runtimes.formats (beside the loaders that use it) and is re-exported here, where
# 09 teaches it.
from optkit.runtimes.formats import numpy_fn  # noqa: E402


# =========================================================================== batcher

@dataclass
class _Request:
    x: np.ndarray
    future: Future
    submitted: float
    deadline: float | None


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of a :class:`DynamicBatcher`'s counters.

    ``submitted`` requests end up ``completed``, ``failed`` (the model raised), ``timed_out``
    (expired in the queue), ``cancelled`` (the caller gave up while queued) or ``rejected``
    (queue full, closed, or refused at shutdown); ``queued`` are still waiting.
    ``batch_sizes`` counts batches by size; ``compute_s`` holds the model time of recent batches.

    Taught in 09_serving_batching_and_caching.
    """

    submitted: int
    completed: int
    failed: int
    timed_out: int
    cancelled: int
    rejected: int
    queued: int
    batches: int
    batch_sizes: dict[int, int]
    compute_s: tuple[float, ...]

    @property
    def mean_batch_size(self) -> float:
        """Requests per model call, on average."""
        n = sum(self.batch_sizes.values())
        return sum(k * v for k, v in self.batch_sizes.items()) / n if n else 0.0

    @property
    def compute_ms_p50(self) -> float:
        """Median model time of one batch (ms), over the recent batches kept in ``compute_s``."""
        return float(np.median(self.compute_s)) * 1e3 if self.compute_s else math.nan

    def __repr__(self) -> str:
        return (f"BatcherStats({self.submitted} submitted: {self.completed} completed, {self.failed} failed, "
                f"{self.timed_out} timed out, {self.cancelled} cancelled, {self.rejected} rejected, "
                f"{self.queued} queued; {self.batches} batches, mean size {self.mean_batch_size:.1f}, "
                f"median compute {self.compute_ms_p50:.3g} ms)")


_UNSET = object()


class DynamicBatcher:
    """Collect single requests into batches for one batched model call, and answer each caller.

    ``fn(batch)`` gets the submitted inputs stacked along a new first axis (``np.stack``) and
    must return something with one row per input (an array, a tensor, a list); row ``i`` goes to
    the ``i``-th caller of that batch through its own Future. A worker thread waits for the first
    request, then for more until ``max_batch_size`` are queued or ``max_wait_s`` has passed since
    the oldest one arrived, and runs them. Requests whose inputs differ in shape or dtype are run
    in separate calls.

    - ``max_queue``: at most this many requests wait; :meth:`submit` then raises
      :class:`QueueFull` (``block=False``) or waits for room (``block=True``, up to the timeout).
    - ``timeout_s``: default per-request deadline. A request still queued at its deadline is
      answered with :class:`RequestTimeout` and never run; :meth:`predict` stops waiting then.
    - If ``fn`` raises, every caller of that batch gets that exception.
    - :meth:`close` stops new requests; ``drain=True`` runs everything queued first,
      ``drain=False`` answers each queued request with :class:`BatcherClosed`. Nothing is dropped.
    - ``workers`` threads take batches in parallel (``workers=2, max_batch_size=1`` is a thread
      pool with a bounded queue). Use it as a context manager to close it at the end.

    Do not modify an input array until its Future is done: it is stacked when its batch runs.
    Taught in 09_serving_batching_and_caching.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], *, max_batch_size: int = 32, max_wait_s: float = 0.005,
                 max_queue: int = 1024, timeout_s: float | None = None, workers: int = 1,
                 name: str = "batcher", keep_compute_times: int = 10_000):
        if not callable(fn):
            raise OptkitError("fn", fn, "is not callable",
                              "pass a function from a batch array to outputs, e.g. serve.numpy_fn(model)")
        self.fn = fn
        self.max_batch_size = _check_int("max_batch_size", max_batch_size, 1)
        self.max_wait_s = _check_seconds("max_wait_s", max_wait_s, allow_none=False)
        self.max_queue = _check_int("max_queue", max_queue, 1)
        self.timeout_s = _check_seconds("timeout_s", timeout_s, allow_zero=False)
        self.workers = _check_int("workers", workers, 1)
        self.name = str(name)
        self._queue: collections.deque[_Request] = collections.deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)  # workers wait here
        self._not_full = threading.Condition(self._lock)  # blocked submitters wait here
        self._closed = False
        self._counts = collections.Counter()
        self._sizes: collections.Counter = collections.Counter()
        self._compute: collections.deque[float] = collections.deque(maxlen=_check_int(
            "keep_compute_times", keep_compute_times, 1))
        self._threads = [threading.Thread(target=self._work, name=f"{self.name}-worker-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ callers
    def submit(self, x: Any, *, timeout_s: Any = _UNSET, block: bool = False) -> Future:
        """Queue one input (no batch axis) and return the Future of its output row.

        ``timeout_s`` overrides the batcher's default deadline for this request (None: none).
        A full queue raises :class:`QueueFull` at once, or with ``block=True`` after waiting up
        to ``timeout_s`` for room; a closed batcher raises :class:`BatcherClosed`.
        """
        timeout = self.timeout_s if timeout_s is _UNSET else _check_seconds("timeout_s", timeout_s, allow_zero=False)
        x = np.asarray(x)
        now = time.perf_counter()
        deadline = None if timeout is None else now + timeout
        request = _Request(x=x, future=Future(), submitted=now, deadline=deadline)
        with self._lock:
            while not self._closed and len(self._queue) >= self.max_queue:
                remaining = None if deadline is None else deadline - time.perf_counter()
                if not block or (remaining is not None and remaining <= 0):
                    self._counts["rejected"] += 1
                    raise QueueFull(f"{self.name}: {len(self._queue)} requests are queued (max_queue="
                                    f"{self.max_queue}); retry later or raise max_queue")
                self._not_full.wait(remaining)
            if self._closed:
                self._counts["rejected"] += 1
                raise BatcherClosed(f"{self.name} is closed; submit to a running batcher")
            self._queue.append(request)
            self._counts["submitted"] += 1
            # a waiting worker needs to know when there is work, and when a batch is full
            if len(self._queue) == 1 or len(self._queue) >= self.max_batch_size:
                self._not_empty.notify_all()
        return request.future

    def predict(self, x: Any, *, timeout_s: Any = _UNSET) -> Any:
        """Submit ``x`` and wait for its output row; raises what its batch raised.

        With a deadline, waits at most ``timeout_s`` and raises :class:`RequestTimeout` then
        (the request is withdrawn if it is still queued).
        """
        timeout = self.timeout_s if timeout_s is _UNSET else _check_seconds("timeout_s", timeout_s, allow_zero=False)
        future = self.submit(x, timeout_s=timeout)
        try:
            return future.result(timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout):
                raise
            if future.cancel():
                with self._lock:
                    self._counts["cancelled"] += 1
            raise RequestTimeout(f"{self.name}: no answer within {timeout} s") from None

    def __call__(self, x: Any) -> Any:
        """Same as :meth:`predict` with the default timeout, so a batcher can stand in for a model."""
        return self.predict(x)

    # ------------------------------------------------------------------ worker
    def _take_batch(self) -> list[_Request] | None:
        with self._lock:
            while not self._queue and not self._closed:
                self._not_empty.wait()
            if not self._queue:
                return None  # closed and drained
            # wait for a full batch, but no longer than max_wait_s after the oldest request arrived
            while len(self._queue) < self.max_batch_size and not self._closed:
                remaining = self._queue[0].submitted + self.max_wait_s - time.perf_counter()
                if remaining <= 0:
                    break
                self._not_empty.wait(remaining)
                if not self._queue:  # another worker took them
                    return []
            n = min(self.max_batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._not_full.notify(n)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        now = time.perf_counter()
        live: list[_Request] = []
        expired = cancelled = 0
        for r in batch:
            if r.deadline is not None and now >= r.deadline:
                if r.future.set_running_or_notify_cancel():
                    r.future.set_exception(RequestTimeout(
                        f"{self.name}: waited {1e3 * (now - r.submitted):.1f} ms in the queue, past its deadline"))
                    expired += 1
                else:
                    cancelled += 1  # counted by predict() already
            elif r.future.set_running_or_notify_cancel():
                live.append(r)
        groups: dict[tuple, list[_Request]] = {}
        for r in live:
            groups.setdefault((r.x.dtype.str, r.x.shape), []).append(r)
        done = failed = 0
        for group in groups.values():
            t0 = time.perf_counter()
            try:
                out = self.fn(np.stack([r.x for r in group]))
                if len(out) != len(group):
                    raise ServeError(f"{self.name}: fn returned {len(out)} rows for a batch of {len(group)}; "
                                     "it must return one output row per input row")
            except BaseException as exc:  # noqa: BLE001 - every caller of the batch must hear of it
                for r in group:
                    r.future.set_exception(exc)
                failed += len(group)
            else:
                for i, r in enumerate(group):
                    r.future.set_result(out[i])
                done += len(group)
            with self._lock:
                self._compute.append(time.perf_counter() - t0)
                self._sizes[len(group)] += 1
        with self._lock:
            self._counts["completed"] += done
            self._counts["failed"] += failed
            self._counts["timed_out"] += expired

    # ------------------------------------------------------------------ lifecycle
    def close(self, *, drain: bool = True, timeout_s: float | None = None) -> int:
        """Stop taking requests; run (``drain=True``) or reject (``drain=False``) what is queued.

        Rejected requests get :class:`BatcherClosed` on their Future. Waits up to ``timeout_s``
        (None: until done) for the workers to finish; returns how many queued requests were
        rejected. Calling it twice is harmless.
        """
        rejected: list[_Request] = []
        with self._lock:
            self._closed = True
            if not drain:
                rejected = list(self._queue)
                self._queue.clear()
                self._counts["rejected"] += len(rejected)
            self._not_empty.notify_all()
            self._not_full.notify_all()
        for r in rejected:
            if r.future.set_running_or_notify_cancel():
                r.future.set_exception(BatcherClosed(f"{self.name} was closed with drain=False before this "
                                                     "request ran"))
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout_s)
        return len(rejected)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> "DynamicBatcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(drain=True)

    def stats(self) -> BatcherStats:
        """A snapshot of the counters (see :class:`BatcherStats`)."""
        with self._lock:
            c = self._counts
            return BatcherStats(submitted=c["submitted"], completed=c["completed"], failed=c["failed"],
                                timed_out=c["timed_out"], cancelled=c["cancelled"], rejected=c["rejected"],
                                queued=len(self._queue), batches=sum(self._sizes.values()),
                                batch_sizes=dict(sorted(self._sizes.items())), compute_s=tuple(self._compute))

    def reset_stats(self) -> None:
        """Zero the counters (e.g. after a warm-up)."""
        with self._lock:
            self._counts.clear()
            self._sizes.clear()
            self._compute.clear()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return (f"DynamicBatcher({self.name!r}, {state}: max_batch_size={self.max_batch_size}, "
                f"max_wait_s={self.max_wait_s:g}, max_queue={self.max_queue}, timeout_s={self.timeout_s}, "
                f"workers={self.workers}, {len(self._queue)} queued)")


# =========================================================================== cache

def cache_key(x: Any) -> tuple[str, tuple[int, ...], bytes]:
    """The key of an input: ``(dtype, shape, BLAKE2b digest of its bytes)``.

    Hashing the bytes alone is not enough: a float32 [2, 3] and a float32 [3, 2] holding the
    same six numbers have the same bytes, and so do an int32 and a float32 array of the same
    bit patterns. Equal keys mean the same dtype, the same shape and (up to a 128-bit hash
    collision) the same values. Taught in 09_serving_batching_and_caching.
    """
    a = np.asarray(x)
    if a.dtype.hasobject:
        raise OptkitError("x", type(x).__name__, "holds Python objects, whose bytes are pointers",
                          "pass a numeric array")
    a = np.ascontiguousarray(a)
    digest = hashlib.blake2b(memoryview(a).cast("B") if a.size else b"", digest_size=16).digest()
    return (a.dtype.str, tuple(int(s) for s in a.shape), digest)


@dataclass(frozen=True)
class CacheStats:
    """Counters of a :class:`PredictionCache`: hits, misses, evictions, entries and bytes held.

    ``too_large`` counts values refused because one alone exceeds ``max_bytes``.
    Taught in 09_serving_batching_and_caching.
    """

    hits: int
    misses: int
    evictions: int
    too_large: int
    entries: int
    bytes: int
    max_entries: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses); NaN before the first lookup."""
        n = self.hits + self.misses
        return self.hits / n if n else math.nan

    def __repr__(self) -> str:
        return (f"CacheStats(hit rate {self.hit_rate:.1%}: {self.hits} hits, {self.misses} misses; "
                f"{self.entries}/{self.max_entries} entries, {self.bytes:,}/{self.max_bytes:,} B, "
                f"{self.evictions} evictions, {self.too_large} too large)")


class PredictionCache:
    """A thread-safe LRU cache of model outputs, bounded by entries *and* by bytes.

    Keys come from :func:`cache_key` (dtype, shape, content). Values are stored as read-only
    copies of the outputs, so a caller cannot change what the next caller gets; ``bytes`` counts
    their ``nbytes``. When either bound is exceeded, the least recently used entries go first.
    A lookup that misses does not block other threads while the model runs, so two threads that
    miss on the same input at once both compute it.

    Taught in 09_serving_batching_and_caching.
    """

    def __init__(self, max_entries: int = 1024, max_bytes: int = 64 * 2**20):
        self.max_entries = _check_int("max_entries", max_entries, 1)
        self.max_bytes = _check_int("max_bytes", max_bytes, 1)
        self._data: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._counts = collections.Counter()

    def get(self, x: Any, default: Any = None) -> Any:
        """The cached output for ``x`` (and mark it recently used), or ``default``."""
        return self._get(cache_key(x), default)

    def _get(self, key: tuple, default: Any) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self._counts["misses"] += 1
                return default
            self._data.move_to_end(key)
            self._counts["hits"] += 1
            return value

    def put(self, x: Any, value: Any) -> bool:
        """Store ``value`` as the output for ``x``; False if it alone is larger than ``max_bytes``."""
        return self._put(cache_key(x), value) is not None

    def _put(self, key: tuple, value: Any) -> np.ndarray | None:
        stored = np.array(value, copy=True)
        stored.flags.writeable = False
        size = int(stored.nbytes)
        with self._lock:
            if size > self.max_bytes:
                self._counts["too_large"] += 1
                return None
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes)
            self._data[key] = stored
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= int(evicted.nbytes)
                self._counts["evictions"] += 1
        return stored

    def get_or_compute(self, x: Any, fn: Callable[[Any], Any]) -> Any:
        """The cached output for ``x``, or ``fn(x)``, stored before it is returned."""
        key = cache_key(x)
        value = self._get(key, _UNSET)
        if value is not _UNSET:
            return value
        value = fn(x)
        stored = self._put(key, value)
        return value if stored is None else stored

    def __contains__(self, x: Any) -> bool:
        key = cache_key(x)
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def clear(self) -> None:
        """Drop every entry (the statistics stay)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            c = self._counts
            return CacheStats(hits=c["hits"], misses=c["misses"], evictions=c["evictions"],
                              too_large=c["too_large"], entries=len(self._data), bytes=self._bytes,
                              max_entries=self.max_entries, max_bytes=self.max_bytes)

    def reset_stats(self) -> None:
        """Zero hits, misses, evictions and too_large."""
        with self._lock:
            self._counts.clear()

    def __repr__(self) -> str:
        s = self.stats()
        return (f"PredictionCache({s.entries}/{self.max_entries} entries, {s.bytes:,}/{self.max_bytes:,} B, "
                f"hit rate {s.hit_rate:.1%})")


def cached(fn: Callable[[Any], Any], cache: PredictionCache) -> Callable[[Any], Any]:
    """``fn`` with ``cache`` in front: a hit never calls ``fn`` (put it before a batcher, so hits skip the queue).

    Taught in 09_serving_batching_and_caching.
    """
    if not callable(fn):
        raise OptkitError("fn", fn, "is not callable", "pass e.g. batcher.predict")
    if not isinstance(cache, PredictionCache):
        raise OptkitError("cache", cache, "is not a PredictionCache", "pass serve.PredictionCache(...)")

    def cached_fn(x: Any) -> Any:
        return cache.get_or_compute(x, fn)

    cached_fn.__name__ = f"cached_{getattr(fn, '__name__', 'fn')}"
    return cached_fn


# =========================================================================== load generator

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
    if not callable(call):
        raise OptkitError("call", call, "is not callable", "pass e.g. batcher.predict or an HttpClient")
    concurrency = _check_int("concurrency", concurrency, 1)
    per_client = _check_int("requests_per_client", requests_per_client, 1)
    warmup = _check_int("warmup", warmup, 0)
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
    requests_per_level = _check_int("requests_per_level", requests_per_level, 1)
    min_requests_per_client = _check_int("min_requests_per_client", min_requests_per_client, 1)
    out = []
    for c in levels:
        c = _check_int("concurrencies", c, 1)
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


# =========================================================================== frame stream

@dataclass(repr=False)
class StreamResult:
    """Frames fed at a fixed rate: per frame, its scheduled time, its end-to-end latency, its fate.

    ``outcome`` per frame: ``on_time`` (answered within ``deadline_s`` of its scheduled arrival),
    ``late`` (answered, but after that), ``dropped`` (never run: the queue was full or the frame
    went stale) or ``error``. ``latency_s`` is NaN for frames without an answer. ``fps`` counts
    answered frames per second from the first scheduled frame to the last answer.
    ``producer_lag_s`` is how late the feeder itself submitted its latest frame: on a busy machine
    the feeder falls behind too, and since latency counts from the scheduled time, that shows.

    Taught in 09_serving_batching_and_caching.
    """

    name: str
    target_fps: float
    deadline_s: float
    scheduled_s: np.ndarray
    latency_s: np.ndarray
    outcome: np.ndarray
    wall_s: float
    producer_lag_s: float

    @property
    def counts(self) -> dict[str, int]:
        """Frames per outcome."""
        return {o: int(np.sum(self.outcome == o)) for o in ("on_time", "late", "dropped", "error")}

    @property
    def fps(self) -> float:
        """Answered frames per second of wall time."""
        answered = self.counts["on_time"] + self.counts["late"]
        return answered / self.wall_s if self.wall_s > 0 else math.nan

    def _pct(self, q: float) -> float:
        lat = self.latency_s[np.isfinite(self.latency_s)]
        return float(np.percentile(lat, q)) * 1e3 if lat.size else math.nan

    @property
    def p50_ms(self) -> float:
        """Median end-to-end latency of answered frames (ms)."""
        return self._pct(50)

    @property
    def p99_ms(self) -> float:
        """99th percentile end-to-end latency of answered frames (ms)."""
        return self._pct(99)

    def summary(self) -> dict[str, Any]:
        """One row: frames, outcome counts, achieved fps, latency p50/p99, the feeder's worst lag."""
        return {"name": self.name, "frames": int(self.outcome.size), **self.counts, "fps": self.fps,
                "target_fps": self.target_fps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "feeder_lag_ms": self.producer_lag_s * 1e3}

    def __repr__(self) -> str:
        c = self.counts
        return (f"StreamResult({self.name!r}: {self.outcome.size} frames at {self.target_fps:g} fps -> "
                f"{self.fps:.0f} fps answered; on time {c['on_time']}, late {c['late']}, dropped {c['dropped']}, "
                f"error {c['error']}; latency p50 {self.p50_ms:.3g} ms, p99 {self.p99_ms:.3g} ms)")


def run_stream(submit: Callable[[Any], Future], frames: Sequence[Any] | np.ndarray, fps: float, *,
               deadline_s: float | None = None, name: str = "stream", wait_s: float = 30.0) -> StreamResult:
    """Feed ``frames`` at ``fps`` (frame ``i`` is due at ``i / fps``) and record what happens to each.

    ``submit(frame)`` must return a Future (e.g. ``batcher.submit``, or a
    ``ThreadPoolExecutor``'s ``submit`` bound to a model). A :class:`QueueFull` at submit, or a
    :class:`RequestTimeout`/:class:`BatcherClosed` on the Future, counts as a dropped frame.
    Latency runs from the frame's *scheduled* time to its answer, so a feeder that falls behind
    is charged too. ``deadline_s`` (default: two frame intervals) separates on-time from late.

    Taught in 09_serving_batching_and_caching.
    """
    if not callable(submit):
        raise OptkitError("submit", submit, "is not callable", "pass e.g. batcher.submit")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise OptkitError("fps", fps, "must be a positive number", "pass e.g. 500")
    n = len(frames)
    if n == 0:
        raise OptkitError("frames", frames, "is empty", "pass at least one frame")
    deadline = 2.0 / fps if deadline_s is None else _check_seconds("deadline_s", deadline_s, allow_none=False)
    scheduled = np.arange(n) / float(fps)
    done_at = np.full(n, np.nan)
    outcome = np.full(n, "", dtype=object)
    clock = time.perf_counter
    futures: list[Future | None] = [None] * n
    lag = 0.0
    t0 = clock()

    def finished(i: int) -> Callable[[Future], None]:
        def callback(fut: Future) -> None:
            t = clock()
            if fut.cancelled():
                outcome[i] = "dropped"
                return
            exc = fut.exception()
            if exc is None:
                done_at[i] = t - t0
                outcome[i] = "answered"
            elif isinstance(exc, (RequestTimeout, BatcherClosed, QueueFull)):
                outcome[i] = "dropped"
            else:
                outcome[i] = "error"
        return callback

    for i in range(n):
        due = t0 + scheduled[i]
        while True:  # sleep most of the way, then spin the last fraction of a millisecond
            now = clock()
            if now >= due:
                break
            time.sleep(max(0.0, due - now - 2e-4) if due - now > 3e-4 else 0)
        lag = max(lag, clock() - due)
        try:
            fut = submit(frames[i])
        except (QueueFull, BatcherClosed):
            outcome[i] = "dropped"
            continue
        futures[i] = fut
        fut.add_done_callback(finished(i))
    end_by = clock() + wait_s
    for fut in futures:
        if fut is not None:
            try:
                fut.exception(timeout=max(0.0, end_by - clock()))
            except TimeoutError:
                pass
            except Exception:  # noqa: BLE001 - cancelled futures; recorded by the callback
                pass
    # callbacks run in the worker right after the result is set; give the last ones a moment
    settle = clock() + 1.0
    while any(o == "" for o, f in zip(outcome, futures) if f is not None) and clock() < settle:
        time.sleep(1e-3)
    latency = done_at - scheduled
    final = np.where(outcome == "answered", np.where(latency <= deadline, "on_time", "late"), outcome)
    final = np.where(final == "", "error", final).astype(str)
    wall = (np.nanmax(done_at) if np.isfinite(done_at).any() else clock() - t0)
    return StreamResult(name=name, target_fps=float(fps), deadline_s=deadline, scheduled_s=scheduled,
                        latency_s=latency, outcome=final, wall_s=float(wall), producer_lag_s=float(lag))


# =========================================================================== HTTP edge

class BadRequest(ServeError):
    """A request the server refuses, with the HTTP status (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        self.status = int(status)
        self.message = message
        super().__init__(f"{status}: {message}")


def parse_request(body: bytes | str, *, input_shape: Sequence[int], dtype: Any = "float32",
                  max_items: int = 64, max_body_bytes: int = 8 * 2**20) -> np.ndarray:
    """Turn an HTTP body into a batch array ``(n, *input_shape)``, or raise :class:`BadRequest`.

    The body is JSON: ``{"inputs": [...]}`` holding one input of ``input_shape`` or a list of
    them, optionally with ``"dtype"`` (which must be the model's). Refused, each with a message:
    a body over ``max_body_bytes`` or more than ``max_items`` inputs (413), malformed JSON or no
    ``inputs`` (400), ragged or non-numeric values, NaN/inf, a wrong shape or dtype (422).

    Taught in 09_serving_batching_and_caching.
    """
    shape = tuple(int(s) for s in input_shape)
    want = np.dtype(dtype)
    if len(body) > max_body_bytes:
        raise BadRequest(413, f"body of {len(body):,} bytes exceeds the limit of {max_body_bytes:,}")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest(400, 'body must be a JSON object {"inputs": [...]}')
    given = payload.get("dtype")
    if given is not None:
        try:
            given_dtype = np.dtype(str(given))
        except TypeError:
            raise BadRequest(422, f"dtype {given!r} is not a dtype name; this model takes {want.name}") from None
        if given_dtype != want:
            raise BadRequest(422, f"dtype {given_dtype.name} does not match the model's {want.name}")
    try:
        x = np.asarray(payload["inputs"])
    except ValueError:
        raise BadRequest(422, "inputs are ragged: every input must have the same nested shape") from None
    if x.dtype.kind not in "biuf":
        raise BadRequest(422, f"inputs must be numbers (got {x.dtype.kind!r} values such as strings or nulls)")
    if x.shape == shape:
        x = x[None]
    elif x.shape[1:] != shape:
        raise BadRequest(422, f"inputs have shape {list(x.shape)}; the model takes {list(shape)} "
                              f"or a list of them [n, {', '.join(map(str, shape))}]")
    if len(x) == 0:
        raise BadRequest(422, "inputs is an empty list; send at least one input")
    if len(x) > max_items:
        raise BadRequest(413, f"{len(x)} inputs in one request exceed max_request_items={max_items}; "
                              "split the batch")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise BadRequest(422, "inputs contain NaN or infinity")
    if not np.can_cast(x.dtype, want, casting="same_kind"):
        raise BadRequest(422, f"inputs are {x.dtype.name} values; the model takes {want.name}")
    return x.astype(want, copy=False)


class HttpError(ServeError):
    """A non-200 answer from the server: ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str):
        self.status = int(status)
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


class HttpClient:
    """Calls a model endpoint over HTTP: ``client(x)`` sends one input, returns its output row.

    Each thread keeps its own keep-alive connection (``http.client``), so a load test's clients
    do not share a socket. ``client(x)`` posts ``{"inputs": x}`` and returns ``outputs[0]`` as an
    array; :meth:`post` sends any body and returns ``(status, parsed JSON)``. Non-200 answers
    raise :class:`HttpError` with the server's message.

    Taught in 09_serving_batching_and_caching.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise OptkitError("url", url, "is not an http:// URL", "pass e.g. 'http://127.0.0.1:8000/predict'")
        self.url = url
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.timeout_s = _check_seconds("timeout_s", timeout_s, allow_none=False, allow_zero=False)
        self._local = threading.local()
        self.__name__ = "http"

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def post(self, body: bytes | str | Any, *, content_type: str = "application/json",
             method: str = "POST") -> tuple[int, Any]:
        """Send ``body`` (bytes/str as they are, anything else as JSON); return (status, JSON or text)."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):  # a kept-alive socket the server closed: reconnect once
            conn = self._conn()
            try:
                conn.request(method, self.path, body=body if method == "POST" else None,
                             headers={"Content-Type": content_type})
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode(errors="replace")
        return resp.status, parsed

    def __call__(self, x: Any) -> np.ndarray:
        status, payload = self.post({"inputs": np.asarray(x).tolist()})
        if status != 200:
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            raise HttpError(status, str(message)[:500])
        return np.asarray(payload["outputs"][0], dtype=np.float32)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"HttpClient({self.url!r})"


# =========================================================================== artifacts and Ray Serve

def load_artifact(artifact: Any, *, threads: int = 1) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                               tuple[int, ...] | None, str | None]:
    """Load an optkit artifact as a batched numpy function; return ``(fn, input_shape, dtype)``.

    ``.onnx``: an ONNX Runtime session with ``threads`` intra-op threads (shape and dtype read
    from the model); ``.pt2``: a ``torch.export`` program (this sets torch's thread count for the
    whole process, which a Serve replica owns); ``.tflite``: LiteRT via
    :class:`optkit.runtimes.tflow.LiteRT`; a callable: a zero-argument factory returning the model function
    (or a model :func:`numpy_fn` accepts). Shape and dtype are None where the file does not say.

    Taught in 09_serving_batching_and_caching.
    """
    from optkit.runtimes import formats

    threads = _check_int("threads", threads, 1)
    if callable(artifact) and not isinstance(artifact, (str, Path)):
        return numpy_fn(artifact()), None, None
    path = Path(artifact)
    if not path.is_file():
        raise OptkitError("artifact", str(artifact), "is not a file",
                          "pass the path of a saved .onnx, .pt2 or .tflite model, or a factory function")
    fmt = formats.find(path)
    if fmt is None or fmt.key not in ("onnx", "torch_export", "tflite"):
        raise OptkitError("artifact", str(path), f"has the unsupported suffix {path.suffix.lower()!r}",
                          "pass a .onnx, .pt2 or .tflite file, or a factory function")
    return tuple(formats.load_runner(path, threads=threads))


def ray_deployment(artifact: Any, *, name: str = "optkit_model", input_shape: Sequence[int] | None = None,
                   dtype: str | None = None, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.005,
                   max_request_items: int = 64, max_body_bytes: int = 8 * 2**20, num_replicas: int | None = 1,
                   num_cpus: float = 1.0, threads: int = 1, autoscaling_config: Mapping[str, Any] | None = None,
                   max_ongoing_requests: int = 256) -> Any:
    """A Ray Serve application serving ``artifact`` over HTTP with ``@serve.batch``.

    ``artifact`` is anything :func:`load_artifact` takes (each replica loads it itself, so on a
    cluster the path must exist on every node, or pass a factory). POST ``{"inputs": [...]}``
    returns ``{"outputs": [...]}``; GET returns the model's input shape and dtype; Python code
    holding a ``DeploymentHandle`` can call ``handle.infer.remote(x)`` with one input array. Input is
    checked by :func:`parse_request` before it reaches the batch queue, so a bad request gets a
    4xx with a message and the replica keeps serving. Requests are batched by
    ``@serve.batch(max_batch_size, batch_wait_timeout_s)`` and the model runs in a thread, so the
    replica keeps accepting requests while a batch computes.

    Scaling: ``num_replicas`` copies, each reserving ``num_cpus`` of Ray's CPUs and running
    ``threads`` intra-op threads; or ``autoscaling_config`` (e.g. ``{"min_replicas": 1,
    "max_replicas": 4, "target_ongoing_requests": 32}``, with ``num_replicas=None``). On a
    Ray cluster the same application spreads replicas over its nodes. Returns the bound
    application for ``serve.run`` / :meth:`LocalServe.run`.

    Taught in 09_serving_batching_and_caching.
    """
    from ray import serve

    if not (callable(artifact) or Path(str(artifact)).is_file()):
        raise OptkitError("artifact", str(artifact), "is not a file or a factory",
                          "pass the path of a saved .onnx/.pt2/.tflite model, or a function returning a model")
    max_batch_size = _check_int("max_batch_size", max_batch_size, 1)
    batch_wait = _check_seconds("batch_wait_timeout_s", batch_wait_timeout_s, allow_none=False)
    max_request_items = _check_int("max_request_items", max_request_items, 1)
    threads = _check_int("threads", threads, 1)
    if autoscaling_config is not None and num_replicas not in (None, "auto"):
        raise OptkitError("num_replicas", num_replicas, "is set together with autoscaling_config",
                          "pass num_replicas=None when autoscaling")
    if autoscaling_config is None:
        num_replicas = _check_int("num_replicas", num_replicas, 1)

    class OptkitModel:
        def __init__(self, artifact: Any, input_shape: Any, dtype: Any):
            self._fn, found_shape, found_dtype = load_artifact(artifact, threads=threads)
            shape = input_shape if input_shape is not None else found_shape
            if shape is None:
                raise OptkitError("input_shape", None, "is not recorded in the artifact",
                                  "pass input_shape=(C, H, W) to ray_deployment")
            self.input_shape = tuple(int(s) for s in shape)
            self.dtype = np.dtype(dtype or found_dtype or "float32")

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import JSONResponse

            if request.method == "GET":
                return JSONResponse({"input_shape": list(self.input_shape), "dtype": self.dtype.name,
                                     "max_request_items": max_request_items})
            try:
                x = parse_request(await request.body(), input_shape=self.input_shape, dtype=self.dtype,
                                  max_items=max_request_items, max_body_bytes=max_body_bytes)
            except BadRequest as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            y = await self.predict(x)
            return JSONResponse({"outputs": np.asarray(y).tolist()})

        async def infer(self, x: np.ndarray) -> np.ndarray:
            """The same batched model for Python callers of a DeploymentHandle (no HTTP, no JSON)."""
            return (await self.predict(np.asarray(x, dtype=self.dtype)[None]))[0]

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait)
        async def predict(self, xs: list[np.ndarray]) -> list[np.ndarray]:
            import asyncio

            sizes = np.cumsum([len(x) for x in xs])[:-1]
            out = await asyncio.to_thread(self._fn, np.concatenate(xs))
            return np.split(np.asarray(out), sizes)

    OptkitModel.__name__ = OptkitModel.__qualname__ = "OptkitModel"
    options: dict[str, Any] = {"name": name, "ray_actor_options": {"num_cpus": float(num_cpus)},
                               "max_ongoing_requests": _check_int("max_ongoing_requests", max_ongoing_requests, 1)}
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    else:
        options["num_replicas"] = num_replicas
    deployment = serve.deployment(OptkitModel, **options)
    return deployment.bind(artifact, None if input_shape is None else tuple(input_shape), dtype)


def _quiet_filter(record: Any) -> bool:
    """Let only errors through (a logging filter for Ray Serve's driver-side logger)."""
    return record.levelno >= 40


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalServe:
    """Ray and Ray Serve on this machine, bound to loopback, started and stopped by you.

    ``with LocalServe(num_cpus=2) as cluster:`` starts a local Ray instance (no dashboard,
    worker logs kept out of the notebook) and Serve's HTTP proxy on ``127.0.0.1:port`` (a free
    port by default); :meth:`run` deploys an application and returns its URL; leaving the block
    (or :meth:`shutdown`) stops Serve and Ray. With ``quiet=True`` Ray's own log lines go to its
    log files under the session folder instead of the terminal. Ray gives a node 30 s to come up;
    on a machine busy enough to miss that, start is tried ``start_attempts`` times.

    Taught in 09_serving_batching_and_caching.
    """

    def __init__(self, *, num_cpus: int = 2, port: int | None = None, quiet: bool = True, start_attempts: int = 2):
        self.num_cpus = _check_int("num_cpus", num_cpus, 1)
        self.start_attempts = _check_int("start_attempts", start_attempts, 1)
        self.host = "127.0.0.1"
        self.port = _free_port(self.host) if port is None else _check_int("port", port, 1)
        self.quiet = bool(quiet)
        self.started = False
        self.startup_s: float | None = None
        self.shutdown_output = ""

    def start(self) -> "LocalServe":
        """Start Ray and Serve (a no-op when already started); returns self."""
        if self.started:
            return self
        import logging

        t0 = time.perf_counter()
        import ray
        from ray import serve

        if ray.is_initialized():
            raise OptkitError("ray", "already initialized", "another Ray instance is running in this process",
                              "call ray.shutdown() first, or use the running instance directly")
        if self.quiet:  # Serve's driver-side logger prints INFO lines (set up when ray.serve is imported)
            logging.getLogger("ray.serve").addFilter(_quiet_filter)
        for attempt in range(self.start_attempts):
            try:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=not self.quiet,
                         logging_level=logging.ERROR if self.quiet else logging.INFO,
                         _node_ip_address=self.host)
                break
            except Exception as exc:  # noqa: BLE001 - Ray gives up after 30 s on an overloaded machine
                ray.shutdown()
                if "timed out during startup" not in str(exc) or attempt == self.start_attempts - 1:
                    raise
        try:
            serve.start(http_options={"host": self.host, "port": self.port},
                        logging_config={"log_level": "ERROR" if self.quiet else "INFO"})
        except BaseException:
            ray.shutdown()
            raise
        self.started = True
        self.startup_s = time.perf_counter() - t0
        return self

    def url(self, route_prefix: str = "/predict") -> str:
        """The HTTP address of a route on this machine's Serve proxy."""
        return f"http://{self.host}:{self.port}{route_prefix}"

    def run(self, app: Any, *, name: str = "optkit", route_prefix: str = "/predict") -> str:
        """Deploy ``app`` (e.g. from :func:`ray_deployment`) under ``route_prefix``; return its URL once ready."""
        if not self.started:
            self.start()
        from ray import serve

        serve.run(app, name=name, route_prefix=route_prefix,
                  logging_config={"log_level": "ERROR" if self.quiet else "INFO"})
        return self.url(route_prefix)

    def replicas(self, name: str = "optkit") -> dict[str, int]:
        """Running replicas per deployment of application ``name``."""
        from ray import serve

        app = serve.status().applications.get(name)
        if app is None:
            return {}
        return {dep: int(info.replica_states.get("RUNNING", 0)) for dep, info in app.deployments.items()}

    def delete(self, name: str = "optkit") -> None:
        """Remove application ``name`` (its replicas stop)."""
        from ray import serve

        serve.delete(name)

    def shutdown(self) -> None:
        """Stop Serve and Ray (harmless when not started).

        With ``quiet=True``, what Ray prints while it stops (e.g. that the Serve controller's
        pending tasks died with it) is kept in :attr:`shutdown_output` instead of printed.
        """
        if not self.started:
            return
        import contextlib
        import io
        import logging

        import ray
        from ray import serve

        sink = io.StringIO()
        stdout = contextlib.redirect_stdout(sink) if self.quiet else contextlib.nullcontext()
        stderr = contextlib.redirect_stderr(sink) if self.quiet else contextlib.nullcontext()
        try:
            with stdout, stderr:
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            self.started = False
            self.shutdown_output = sink.getvalue()
            logging.getLogger("ray.serve").removeFilter(_quiet_filter)

    def __enter__(self) -> "LocalServe":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "running" if self.started else "stopped"
        return f"LocalServe({state}, {self.num_cpus} CPUs, http://{self.host}:{self.port})"
