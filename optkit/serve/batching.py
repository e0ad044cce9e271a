"""The dynamic batcher: single requests in, batched model calls, one answer per caller.

Owns :class:`DynamicBatcher` (a bounded queue, worker threads that stack requests into batches
of up to ``max_batch_size`` or whatever arrived within ``max_wait_s``, one Future per caller),
its counters (:class:`BatcherStats`) and the serving errors a caller should expect under load:
:class:`ServeError` and its kinds :class:`QueueFull`, :class:`RequestTimeout` and
:class:`BatcherClosed`. Taught in 09_serving_batching_and_caching.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optkit.core.errors import check_callable, check_int, check_range

__all__ = ["ServeError", "QueueFull", "RequestTimeout", "BatcherClosed", "BatcherStats", "DynamicBatcher"]


# =========================================================================== errors

class ServeError(RuntimeError):
    """Base class of the serving errors a caller should expect under load (not bad input)."""


class QueueFull(ServeError):
    """The batcher's queue is at ``max_queue``: back-pressure. Retry later, or shed the request."""


class RequestTimeout(ServeError, TimeoutError):
    """The request was not answered within its ``timeout_s`` (it was never run, or the caller stopped waiting)."""


class BatcherClosed(ServeError):
    """The batcher is closed: the request was submitted after ``close()`` or rejected by ``close(drain=False)``."""


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


def _timeout_s(value: Any) -> float | None:
    """A request deadline: a finite number of seconds > 0, or None for no deadline."""
    timeout = check_range("timeout_s", value, 0, math.inf, low_open=True, high_open=True, allow_none=True)
    return None if timeout is None else float(timeout)


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
        self.fn = check_callable("fn", fn, fix="pass a function from a batch array to outputs, "
                                               "e.g. serve.numpy_fn(model)")
        self.max_batch_size = check_int("max_batch_size", max_batch_size, 1)
        self.max_wait_s = float(check_range("max_wait_s", max_wait_s, 0, math.inf, high_open=True))
        self.max_queue = check_int("max_queue", max_queue, 1)
        self.timeout_s = _timeout_s(timeout_s)
        self.workers = check_int("workers", workers, 1)
        self.name = str(name)
        self._queue: collections.deque[_Request] = collections.deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)  # workers wait here
        self._not_full = threading.Condition(self._lock)  # blocked submitters wait here
        self._closed = False
        self._counts = collections.Counter()
        self._sizes: collections.Counter = collections.Counter()
        self._compute: collections.deque[float] = collections.deque(maxlen=check_int(
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
        timeout = self.timeout_s if timeout_s is _UNSET else _timeout_s(timeout_s)
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
        timeout = self.timeout_s if timeout_s is _UNSET else _timeout_s(timeout_s)
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

