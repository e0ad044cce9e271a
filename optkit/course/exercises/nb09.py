"""Checkers for notebook 09_serving_batching_and_caching's exercises.

Like :mod:`optkit.course.exercises`: each ``check_*`` runs the learner's function on hand-made cases,
prints ``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong
answer. ``reference_*`` are solutions to compare with after trying.

Taught in 09_serving_batching_and_caching.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from optkit.course.exercises import _report, _try

__all__ = [
    "reference_batch_ready",
    "check_batch_ready",
    "reference_cache_key",
    "check_cache_key",
    "reference_littles_law",
    "check_littles_law",
]


# ----------------------------------------------------------------------------- 09.1
def reference_batch_ready(arrivals: Sequence[float], now: float, max_batch_size: int, max_wait_s: float) -> int:
    """How many queued requests a dynamic batcher takes at time ``now`` (0: keep waiting).

    ``arrivals`` are the queued requests' arrival times, oldest first. Take a full batch as soon
    as there is one; otherwise take everything once the oldest has waited ``max_wait_s``.
    """
    if not arrivals:
        return 0
    if len(arrivals) >= max_batch_size or now - arrivals[0] >= max_wait_s:
        return min(len(arrivals), max_batch_size)
    return 0


def check_batch_ready(fn: Callable) -> bool:
    """Exercise 09.1: ``fn(arrivals, now, max_batch_size, max_wait_s)`` is the batcher's decision rule."""
    cases = [
        (([], 1.0, 4, 0.01), 0, "an empty queue"),
        (([0.0], 0.002, 4, 0.01), 0, "one request that has waited 2 ms of 10"),
        (([0.0, 0.001], 0.01, 4, 0.01), 2, "two requests, the oldest has waited exactly max_wait"),
        (([1.0] * 4, 1.0, 4, 0.01), 4, "a full batch that arrived just now"),
        (([1.0] * 7, 1.0, 4, 0.01), 4, "seven queued with max_batch_size 4"),
        (([1.0] * 7, 2.0, 4, 0.01), 4, "seven queued, long overdue"),
        (([0.0, 0.005], 0.0095, 4, 0.01), 0, "two requests, the oldest has waited 9.5 ms of 10"),
        (([1.0, 1.5], 1.2, 2, 10.0), 2, "two queued with max_batch_size 2 and a long max_wait"),
    ]
    for args, want, label in cases:
        got, err = _try(fn, list(args[0]), *args[1:])
        if err:
            return _report(False, f"batch_ready with {label} {err}. Hint: start with `if not arrivals: return 0`")
        if got != want:
            return _report(False, f"with {label} (arrivals={list(args[0])}, now={args[1]}, max_batch_size={args[2]}, "
                                  f"max_wait_s={args[3]}) it returned {got!r}; expected {want}. Hint: a full batch "
                                  "goes at once; otherwise wait until the OLDEST request has waited max_wait_s, "
                                  "and never take more than max_batch_size")
    return _report(True, f"the batching rule on {len(cases)} hand-made queues: full batches at once, partial ones "
                         "when the oldest request has waited max_wait_s, never more than max_batch_size")


# ----------------------------------------------------------------------------- 09.2
def reference_cache_key(x) -> tuple:
    """``(dtype, shape, digest of the bytes)``: equal only for the same dtype, shape and values."""
    import hashlib

    import numpy as np

    a = np.ascontiguousarray(x)
    return (a.dtype.str, a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest())


def check_cache_key(fn: Callable) -> bool:
    """Exercise 09.2: ``fn(x)`` gives equal keys exactly for arrays with equal dtype, shape and values."""
    import numpy as np

    a = np.arange(6, dtype=np.float32)
    same = [(a.reshape(2, 3), a.reshape(2, 3).copy(), "two copies of the same [2, 3] array"),
            (a.reshape(2, 3).T, np.ascontiguousarray(a.reshape(2, 3).T), "a transposed view and its contiguous copy")]
    different = [(a.reshape(2, 3), a.reshape(3, 2), "float32 [2, 3] and [3, 2] with the same six numbers"),
                 (a, a.view(np.int32), "float32 and int32 arrays with the same bytes"),
                 (a, a + 1, "arrays with different values"),
                 (np.zeros(4, np.float32), np.zeros(2, np.float64), "float32 x4 and float64 x2 zeros (both 16 bytes)")]
    for x, y, label, want_equal in [(*c, True) for c in same] + [(*c, False) for c in different]:
        kx, err = _try(fn, x)
        ky, err2 = _try(fn, y)
        if err or err2:
            return _report(False, f"cache_key on {label} {err or err2}. Hint: np.ascontiguousarray(x).tobytes()")
        try:
            hash(kx)
        except TypeError:
            return _report(False, f"the key {type(kx).__name__} is not hashable, so it cannot key a dict. "
                                  "Hint: return a tuple of str, tuple and bytes")
        if (kx == ky) != want_equal:
            verdict = "differ" if want_equal else "are equal"
            return _report(False, f"keys of {label} {verdict}. Hint: the bytes alone are not enough; "
                                  "put the dtype and the shape into the key, and hash a contiguous copy")
    return _report(True, f"{len(same)} equal pairs and {len(different)} different ones told apart, including "
                         "the reshape and the reinterpreted dtype that bytes alone confuse")


# ----------------------------------------------------------------------------- 09.3
def reference_littles_law(concurrency: int, mean_latency_ms: float) -> float:
    """Throughput (requests/s) of a closed loop: ``concurrency`` clients, each ``mean_latency_ms`` per request."""
    return concurrency / (mean_latency_ms / 1e3)


def check_littles_law(fn: Callable, results: Sequence = ()) -> bool:
    """Exercise 09.3: ``fn(concurrency, mean_latency_ms)`` predicts a closed loop's throughput.

    After the hand-made cases, prints the prediction next to the measured throughput of each
    :class:`optkit.serve.LoadResult` in ``results``.
    """
    cases = [(1, 10.0, 100.0), (32, 16.0, 2000.0), (64, 0.5, 128000.0), (8, 4.0, 2000.0)]
    for c, ms, want in cases:
        got, err = _try(fn, c, ms)
        if err:
            return _report(False, f"littles_law({c}, {ms}) {err}. Hint: clients / seconds per request")
        try:
            ok = math.isclose(float(got), want, rel_tol=1e-6)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return _report(False, f"littles_law({c} clients, {ms} ms) returned {got!r}; expected {want:g} req/s. "
                                  "Hint: each client completes 1000 / latency_ms requests per second")
    _report(True, "throughput = clients / latency on 4 hand-made cases")
    for r in results:
        import numpy as np

        ok = r.outcome == "ok"
        if not ok.any():
            continue
        mean_ms = float(np.mean(r.latency_s[ok])) * 1e3
        predicted = reference_littles_law(r.concurrency, mean_ms)
        print(f"  {r.name}, {r.concurrency:>2} clients: mean latency {mean_ms:7.2f} ms -> predicted "
              f"{predicted:8,.0f} req/s, measured {r.throughput:8,.0f} req/s ({r.throughput / predicted:.2f}x)")
    return True
