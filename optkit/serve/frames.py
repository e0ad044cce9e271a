"""Frame streams: inputs fed at a fixed rate, as a camera would, and what became of each frame.

Owns :func:`run_stream` (frame ``i`` submitted at ``i / fps``; latency counted from its
scheduled time, so a feeder that falls behind is charged too), its per-frame record
:class:`StreamResult` (on time, late, dropped or error), :func:`run_streams` (the same frames
through several strategies, one after another) and :func:`plot_streams` (each frame's latency
against its arrival). Taught in 09_serving_batching_and_caching.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_callable, check_range
from optkit.serve.batching import BatcherClosed, DynamicBatcher, QueueFull, RequestTimeout

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["StreamResult", "run_stream", "run_streams", "plot_streams"]


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
    check_callable("submit", submit, fix="pass e.g. batcher.submit")
    check_range("fps", fps, 0, low_open=True)
    n = len(frames)
    if n == 0:
        raise OptkitError("frames", frames, "is empty", "pass at least one frame")
    deadline = 2.0 / fps if deadline_s is None else float(check_range("deadline_s", deadline_s, 0, math.inf,
                                                                       high_open=True))
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


def run_streams(strategies: Mapping[str, DynamicBatcher | Callable[[Any], Future]], frames: Sequence[Any] | np.ndarray,
                fps: float, *, deadline_s: float | None = None, close: bool = True) -> dict[str, StreamResult]:
    """:func:`run_stream` of the same ``frames`` through each strategy, one after another.

    A strategy is a :class:`~optkit.serve.DynamicBatcher` (its ``submit`` is used, and with
    ``close=True`` it is closed, drained, right after its stream, so it takes no core from the
    next) or a ``submit`` function returning a Future (e.g. a thread pool's). Returns
    ``{name: StreamResult}`` in the order given.

    Taught in 09_serving_batching_and_caching.
    """
    if not isinstance(strategies, Mapping) or not strategies:
        raise OptkitError("strategies", strategies, "must be a non-empty dict of name -> batcher or submit function",
                          "pass e.g. {'micro-batches': serve.DynamicBatcher(fn, max_batch_size=8)}")
    out = {}
    for name, strategy in strategies.items():
        submit = strategy.submit if isinstance(strategy, DynamicBatcher) else strategy
        try:
            out[name] = run_stream(submit, frames, fps, deadline_s=deadline_s, name=name)
        finally:
            if close and isinstance(strategy, DynamicBatcher):
                strategy.close(drain=True)
    return out


def plot_streams(streams: Mapping[str, StreamResult], *, ax: Any = None) -> "Figure":
    """Each answered frame's end-to-end latency against its arrival, one colour per stream (log scale).

    The dashed line is the first stream's deadline; dropped frames have no latency and are not
    drawn (their count is in ``StreamResult.counts``). Returns the Figure (closed in pyplot, shown
    once by ``display``). Taught in 09_serving_batching_and_caching.
    """
    if not isinstance(streams, Mapping) or not streams:
        raise OptkitError("streams", streams, "must be a non-empty dict of name -> StreamResult",
                          "pass the result of serve.run_streams(...)")
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(8.0, 3.4), layout="constrained")
        plt.close(fig)
    else:
        fig = ax.figure
    for name, s in streams.items():
        ax.plot(s.scheduled_s * 1e3, s.latency_s * 1e3, ".", ms=2, label=name)
    first = next(iter(streams.values()))
    ax.axhline(first.deadline_s * 1e3, color="grey", ls="--", lw=1)
    ax.set(xlabel="frame arrival (ms into the stream)", ylabel="end-to-end latency (ms)", yscale="log",
           title=f"{first.target_fps:,.0f} fps stream; dashed: {first.deadline_s * 1e3:g} ms deadline "
                 "(dropped frames not drawn)")
    ax.legend(fontsize=8)
    return fig
