"""The prediction cache: model outputs kept by input, so a repeated input skips the model.

Owns :func:`cache_key` (dtype, shape and a BLAKE2b digest of the content), the thread-safe LRU
:class:`PredictionCache` bounded by entries and by bytes, its counters (:class:`CacheStats`) and
:func:`cached`, which puts a cache in front of any function. Taught in
09_serving_batching_and_caching.
"""
from __future__ import annotations

import collections
import hashlib
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optkit.core.errors import OptkitError, check_callable, check_int

__all__ = ["cache_key", "CacheStats", "PredictionCache", "cached"]

_MISSING = object()  # what _get returns on a miss in get_or_compute


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
        self.max_entries = check_int("max_entries", max_entries, 1)
        self.max_bytes = check_int("max_bytes", max_bytes, 1)
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
        value = self._get(key, _MISSING)
        if value is not _MISSING:
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
    check_callable("fn", fn, fix="pass e.g. batcher.predict")
    if not isinstance(cache, PredictionCache):
        raise OptkitError("cache", cache, "is not a PredictionCache", "pass serve.PredictionCache(...)")

    def cached_fn(x: Any) -> Any:
        return cache.get_or_compute(x, fn)

    cached_fn.__name__ = f"cached_{getattr(fn, '__name__', 'fn')}"
    return cached_fn
