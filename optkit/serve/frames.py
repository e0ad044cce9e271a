"""Frame streams: inputs fed at a fixed rate, as a camera would, and what became of each frame.

Owns :func:`run_stream` (frame ``i`` submitted at ``i / fps``; latency counted from its
scheduled time, so a feeder that falls behind is charged too), its per-frame record
:class:`StreamResult` (on time, late, dropped or error; :attr:`StreamResult.accounting` checks
that every frame sent has a fate), :func:`run_streams` (the same frames through several
strategies, one after another) and :func:`plot_streams` (each frame's latency against its
arrival). Taught in 09_serving_batching_and_caching.

A real video goes through the same record: :func:`stream_video` decodes a clip as its frames
arrive (:mod:`optkit.serve.video`), preprocesses them, sends them through a thread pool or in
micro-batches to a model in process or behind HTTP (:class:`~optkit.serve.batching_http.HttpModel`),
and returns a :class:`VideoStream` (a StreamResult with each frame's latency split into
:data:`STAGES`); :func:`plot_stages` draws that split over time. Taught in
11_tensorflow_vs_pytorch_end_to_end.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_callable, check_choice, check_int, check_range
from optkit.serve.batching import BatcherClosed, DynamicBatcher, QueueFull, RequestTimeout
from optkit.serve.video import Clip, VideoReader, check_frames, input_layout, preprocess

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["StreamResult", "run_stream", "run_streams", "plot_streams", "STAGES", "VideoStream", "stream_video",
           "plot_stages"]

#: The stages of a frame's end-to-end latency in :func:`stream_video`, in pipeline order.
STAGES = ("wait", "decode", "preprocess", "transfer", "inference", "postprocess")


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
    def accounting(self) -> dict[str, int]:
        """Every frame's fate: ``sent`` = ``answered`` (``late`` among them) + ``dropped`` + ``failed`` + ``lost``.

        ``lost`` counts frames with no recorded fate and should be 0.
        """
        c = self.counts
        answered = c["on_time"] + c["late"]
        sent = int(self.outcome.size)
        return {"sent": sent, "answered": answered, "late": c["late"], "dropped": c["dropped"],
                "failed": c["error"], "lost": sent - answered - c["dropped"] - c["error"]}

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


# =========================================================================== the stream

# per-frame timestamps (seconds from the stream's start) and the server's share, one column each
_ARRIVAL, _DECODE0, _DECODE1, _SUBMIT, _START, _END, _SERVER, _DONE = range(8)


@dataclass(repr=False)
class VideoStream(StreamResult):
    """One video stream through a model: the :class:`~optkit.serve.frames.StreamResult` of its frames, plus the split.

    ``stages_s[stage]`` holds each frame's seconds in that stage (:data:`STAGES`; NaN where the
    frame did not get there): ``wait`` (the feeder behind the frame's arrival, then the queue
    before a worker took it), ``decode``, ``preprocess``, ``transfer`` (the round trip minus the
    server's time; 0 in process; NaN where the server does not report its time), ``inference``
    (the server's time: its batch wait and the model; in process, the model call), and
    ``postprocess``. For an answered frame they sum to its end-to-end latency. ``predictions``
    holds each answered frame's result (-1 otherwise), ``batch_sizes`` the model calls by size.
    :attr:`accounting` checks sent = answered + dropped + failed. Taught in
    11_tensorflow_vs_pytorch_end_to_end.
    """

    strategy: str = "pool"
    realtime: bool = True
    stages_s: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    batch_sizes: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def stage_ms(self) -> dict[str, float]:
        """Median milliseconds of each stage over the answered frames (NaN where unknown)."""
        answered = np.isin(self.outcome, ("on_time", "late"))
        out = {}
        for stage in STAGES:
            values = self.stages_s[stage][answered]
            values = values[np.isfinite(values)]
            out[stage] = float(np.median(values)) * 1e3 if values.size else math.nan
        return out

    def summary(self) -> dict[str, Any]:
        """One row: frames, outcome counts, achieved fps, latency p50/p99, median ms per stage, mean batch."""
        calls = sum(self.batch_sizes.values())
        mean_batch = sum(k * v for k, v in self.batch_sizes.items()) / calls if calls else math.nan
        return {**super().summary(), "strategy": self.strategy, "realtime": self.realtime,
                **{f"{s}_ms": v for s, v in self.stage_ms().items()}, "mean_batch": mean_batch}

    def to_frame(self) -> "pd.DataFrame":
        """One row per frame: arrival, outcome, end-to-end latency and each stage (ms), prediction."""
        import pandas as pd

        return pd.DataFrame({"arrival_ms": self.scheduled_s * 1e3, "outcome": self.outcome,
                             "latency_ms": self.latency_s * 1e3,
                             **{f"{s}_ms": self.stages_s[s] * 1e3 for s in STAGES}, "prediction": self.predictions})

    def __repr__(self) -> str:
        a = self.accounting
        mode = f"{self.target_fps:g} fps" if self.realtime else "as fast as possible"
        return (f"VideoStream({self.name!r}, {self.strategy}, {mode}: {a['sent']} sent -> {a['answered']} answered "
                f"({a['late']} late), {a['dropped']} dropped, {a['failed']} failed, {a['lost']} lost; "
                f"{self.fps:.1f} fps answered; latency p50 {self.p50_ms:.3g} ms, p99 {self.p99_ms:.3g} ms)")


class _Pipeline:
    """The shared state of one stream: per-frame records, the in-flight limit, the model call."""

    def __init__(self, model: Callable[[np.ndarray], Any], post: Callable[[np.ndarray], Any], max_in_flight: int,
                 max_delay_s: float):
        self.model, self.post, self.max_delay_s = model, post, max_delay_s
        self.timed = getattr(model, "timed", None)
        self.slots = threading.BoundedSemaphore(max_in_flight)
        self.rows: list[np.ndarray] = []
        self.outcome: list[str] = []
        self.pred: list[int] = []
        self.lock = threading.Lock()
        self.sizes: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.clock = time.perf_counter
        self.t0 = self.clock()

    def now(self) -> float:
        return self.clock() - self.t0

    def new_frame(self) -> int:
        with self.lock:
            self.rows.append(np.full(8, np.nan))
            self.outcome.append("")
            self.pred.append(-1)
            return len(self.rows) - 1

    def call(self, batch: np.ndarray) -> tuple[list[Any], float, float, float, float]:
        """Run the model on a batch: ``(results per frame, start, end, server seconds, done)``."""
        start = self.now()
        if self.timed is not None:
            out, server = self.timed(batch)
        else:
            out = self.model(batch)
            server = self.now() - start  # in process: the whole call is inference
        end = self.now()
        results = list(self.post(np.asarray(out)))
        with self.lock:
            self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
        return results, start, end, server, self.now()

    def finish(self, i: int, outcome: str, result: Any = -1, times: Sequence[float] = (), exc: Any = None) -> None:
        if times:
            self.rows[i][[_START, _END, _SERVER, _DONE]] = times
        self.pred[i] = int(result) if np.ndim(result) == 0 and outcome == "answered" else -1
        self.outcome[i] = outcome
        if exc is not None:
            with self.lock:
                key = f"{type(exc).__name__}: {str(exc)[:120]}"
                self.errors[key] = self.errors.get(key, 0) + 1
        self.slots.release()


def _top1(outputs: np.ndarray) -> np.ndarray:
    """The default postprocessing: each row's top class."""
    return np.argmax(outputs.reshape(len(outputs), -1), axis=1)


def _sources(source: Any, fps: float | None, max_frames: int | None) -> tuple[Any, float, Callable[[], None]]:
    """``(iterator of (frame, decode seconds), frame rate, close)`` for a path, a Clip or an array of frames."""
    if isinstance(source, (str, Path)):
        decoder = VideoReader(source, grey=True)
        rate = decoder.fps if fps is None else fps
        frames: Any = iter(decoder)
        close = decoder.close
    else:
        frames_array = source.frames if isinstance(source, Clip) else np.asarray(source)
        rate = (source.fps if isinstance(source, Clip) else fps) if fps is None else fps
        if rate is None:
            raise OptkitError("fps", None, "is needed for an array of frames", "pass fps=, e.g. fps=25")
        frames = ((f, 0.0) for f in frames_array)  # already decoded: no decode time
        close = lambda: None  # noqa: E731
    try:
        if isinstance(rate, float) and math.isnan(rate):
            raise OptkitError("fps", rate, "is not recorded in this video", "pass fps=, e.g. fps=25")
        rate = float(check_range("fps", rate, 0, 10_000, low_open=True))
    except OptkitError:
        close()
        raise
    if max_frames is not None:
        import itertools

        frames = itertools.islice(frames, max_frames)
    return frames, rate, close


def _sleep_until(due: float, clock: Callable[[], float]) -> None:
    """Sleep most of the way to ``due``, then spin the last fraction of a millisecond."""
    while True:
        left = due - clock()
        if left <= 0:
            return
        time.sleep(left - 2e-4 if left > 3e-4 else 0)


def _model_shape(model: Any, input_shape: Any) -> tuple[int, ...]:
    """The shape of one model input: ``input_shape``, checked against what an HTTP model's endpoint says."""
    asked = model.input_shape() if callable(getattr(model, "input_shape", None)) else None
    if input_shape is None:
        if asked is None:
            raise OptkitError("input_shape", None, "is not known for this model",
                              "pass input_shape=, the shape of one model input, e.g. (28, 28, 1)")
        input_shape = asked
    input_layout(input_shape)
    shape = tuple(int(s) for s in input_shape)
    if asked is not None and tuple(asked) != shape:
        raise OptkitError("input_shape", shape, f"is not what the model at {getattr(model, 'url', model)} takes "
                          f"{tuple(asked)}", f"pass input_shape={tuple(asked)} (frames are preprocessed to it)")
    return shape


def _feed(pipe: _Pipeline, frames: Iterator[tuple[np.ndarray, float]], rate: float, realtime: bool,
          pre: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...], submit: Callable[[int, Any], None]) -> None:
    """The feeder: pull (decode) each frame when it is due, shed or wait when the pipeline is full, submit."""
    k = 0
    while True:
        if realtime:  # frame k arrives at k / rate: decoded then, as a camera's decoder would
            _sleep_until(pipe.t0 + k / rate, pipe.clock)
        else:  # as fast as possible: the next frame is read when the pipeline has room for it
            pipe.slots.acquire()
        try:
            raw, decode_s = next(frames)
        except StopIteration:
            if not realtime:
                pipe.slots.release()
            return
        got = pipe.now()
        i = pipe.new_frame()
        row = pipe.rows[i]
        row[_DECODE0], row[_DECODE1] = got - decode_s, got
        row[_ARRIVAL] = k / rate if realtime else got - decode_s
        k += 1
        if realtime and not pipe.slots.acquire(blocking=False):
            pipe.outcome[i] = "dropped"  # the pipeline is full: a camera sheds the frame
            continue
        try:
            x = pre(raw)
            if i == 0:
                check_frames(x, shape, parameter="preprocessed frames")
        except BaseException:
            pipe.slots.release()
            pipe.outcome[i] = "error"
            raise
        row[_SUBMIT] = pipe.now()
        submit(i, x)


def _pool(pipe: _Pipeline, workers: int) -> tuple[Callable[[int, Any], None], Callable[[], None]]:
    """A thread pool: each frame is one model call on a worker; a frame stale when a worker takes it is dropped."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="optkit-video")

    def task(i: int, x: np.ndarray) -> None:
        if pipe.now() - pipe.rows[i][_SUBMIT] > pipe.max_delay_s:
            pipe.finish(i, "dropped")
            return
        try:
            results, *times = pipe.call(x[None])
        except Exception as exc:  # noqa: BLE001 - the frame failed; the stream goes on
            pipe.finish(i, "error", exc=exc)
            return
        pipe.finish(i, "answered", results[0], times)

    return (lambda i, x: pool.submit(task, i, x)), (lambda: pool.shutdown(wait=True))


def _micro_batches(pipe: _Pipeline, workers: int, max_batch_size: int, max_wait_s: float,
                   max_queue: int) -> tuple[Callable[[int, Any], None], Callable[[], None]]:
    """A :class:`DynamicBatcher`: frames queued while a call runs go together in the next; stale ones are dropped."""

    def run(batch: np.ndarray) -> list[tuple[Any, list[float]]]:
        results, *times = pipe.call(batch)
        return [(r, times) for r in results]

    batcher = DynamicBatcher(run, max_batch_size=max_batch_size, max_wait_s=max_wait_s, max_queue=max_queue,
                             timeout_s=None if math.isinf(pipe.max_delay_s) else pipe.max_delay_s, workers=workers,
                             name="video micro-batches")

    def settle(i: int, future: Any) -> None:
        exc = future.exception()
        if exc is None:
            result, times = future.result()
            pipe.finish(i, "answered", result, times)
        elif isinstance(exc, (RequestTimeout, BatcherClosed, QueueFull)):
            pipe.finish(i, "dropped")
        else:
            pipe.finish(i, "error", exc=exc)

    def submit(i: int, x: np.ndarray) -> None:
        try:
            future = batcher.submit(x)
        except (QueueFull, BatcherClosed):
            pipe.finish(i, "dropped")
            return
        future.add_done_callback(lambda f, i=i: settle(i, f))

    return submit, (lambda: batcher.close(drain=True))


def _result(pipe: _Pipeline, *, name: str, strategy: str, realtime: bool, rate: float,
            deadline: float) -> VideoStream:
    rows = np.array(pipe.rows).reshape(-1, 8)
    outcome = np.array(pipe.outcome, dtype=object)
    answered = outcome == "answered"
    latency = np.where(answered, rows[:, _DONE] - rows[:, _ARRIVAL], np.nan)
    final = np.where(answered, np.where(latency <= deadline, "on_time", "late"), outcome).astype(str)
    call = rows[:, _END] - rows[:, _START]
    server = rows[:, _SERVER]
    stages = {"wait": np.maximum(rows[:, _DECODE0] - rows[:, _ARRIVAL], 0) + rows[:, _START] - rows[:, _SUBMIT],
              "decode": rows[:, _DECODE1] - rows[:, _DECODE0], "preprocess": rows[:, _SUBMIT] - rows[:, _DECODE1],
              "transfer": np.where(np.isfinite(server), call - server, np.nan),
              "inference": np.where(np.isfinite(server), server, call), "postprocess": rows[:, _DONE] - rows[:, _END]}
    done = rows[:, _DONE]
    wall = float(np.nanmax(done)) if np.isfinite(done).any() else pipe.now()
    lag = float(np.nanmax(rows[:, _DECODE0] - rows[:, _ARRIVAL])) if realtime and len(rows) else 0.0
    return VideoStream(name=name, target_fps=rate, deadline_s=deadline, scheduled_s=rows[:, _ARRIVAL],
                       latency_s=latency, outcome=final, wall_s=wall, producer_lag_s=max(0.0, lag),
                       strategy=strategy, realtime=realtime, stages_s=stages,
                       predictions=np.asarray(pipe.pred, dtype=np.int64), batch_sizes=dict(sorted(pipe.sizes.items())),
                       errors=dict(pipe.errors))


def stream_video(source: Any, model: Callable[[np.ndarray], Any], *, input_shape: Sequence[int] | None = None,
                 fps: float | None = None, realtime: bool = True, strategy: str = "pool", workers: int = 2,
                 max_batch_size: int = 8, max_wait_s: float = 0.0, max_in_flight: int | None = None,
                 deadline_s: float | None = None, max_delay_s: float | None = None, max_frames: int | None = None,
                 preprocess_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                 postprocess_fn: Callable[[np.ndarray], Any] | None = None, name: str | None = None) -> VideoStream:
    """Stream a video through ``model`` as a camera pipeline would, and time every frame's stages.

    ``source`` is a video file (decoded frame by frame as each arrives, grey), a :class:`Clip`
    or an array of uint8 frames (already decoded: decode time 0). ``model`` is a batched function
    (an ONNX Runtime session's, or an :class:`~optkit.serve.HttpModel`, whose server time splits
    the round trip). Frames are preprocessed with :func:`preprocess` to ``input_shape`` (asked
    from an HTTP endpoint when not given; a frame the model cannot take raises one
    :class:`OptkitError` before anything is sent), or with ``preprocess_fn``; outputs go through
    ``postprocess_fn`` (default: each row's top class).

    ``realtime=True``: frame *k* arrives at *k* / ``fps`` (the clip's rate by default) whether or
    not the pipeline is ready; with ``max_in_flight`` frames in the pipeline, a new frame is
    dropped. ``realtime=False``: frames are read as fast as the pipeline takes them (nothing is
    shed for being early). ``strategy="pool"``: ``workers`` threads, one frame per model call;
    ``"batch"``: micro-batches (a :class:`~optkit.serve.DynamicBatcher` with ``workers`` workers,
    up to ``max_batch_size`` frames per call, waiting at most ``max_wait_s`` for more). Either
    way a frame not started within ``max_delay_s`` of being queued is dropped (default: ``deadline_s``
    in real time, never when as fast as possible), and an answered frame is late past
    ``deadline_s`` (default: two frame intervals of ``fps``).
    Returns a :class:`VideoStream`: sent = answered + dropped + failed.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    strategy = check_choice("strategy", strategy, ("pool", "batch"))
    workers = check_int("workers", workers, 1)
    max_batch_size = check_int("max_batch_size", max_batch_size, 1)
    max_wait_s = float(check_range("max_wait_s", max_wait_s, 0, 10))
    max_frames = check_int("max_frames", max_frames, 1, allow_none=True)
    if not callable(model):
        raise OptkitError("model", model, "is not callable", "pass a batched function or serve.HttpModel(url)")
    shape = _model_shape(model, input_shape)
    pre = preprocess_fn or (lambda frame: preprocess(frame, shape))
    frames, rate, close = _sources(source, fps, max_frames)
    try:
        deadline = 2.0 / rate if deadline_s is None else float(check_range("deadline_s", deadline_s, 0, 3600,
                                                                            low_open=True))
        if max_delay_s is None:  # stale frames are shed in real time only: as fast as possible runs every frame
            max_delay = deadline if realtime else math.inf
        else:
            max_delay = float(check_range("max_delay_s", max_delay_s, 0, 3600, low_open=True))
        limit = check_int("max_in_flight", max_in_flight or 2 * workers * (max_batch_size if strategy == "batch"
                                                                           else 1), 1)
        pipe = _Pipeline(model, postprocess_fn or _top1, limit, max_delay)
        if strategy == "pool":
            submit, drain = _pool(pipe, workers)
        else:
            submit, drain = _micro_batches(pipe, workers, max_batch_size, max_wait_s, max_queue=limit)
        try:
            _feed(pipe, frames, rate, bool(realtime), pre, shape, submit)
        finally:
            drain()  # every frame in flight is answered, dropped or failed before the result is built
    finally:
        close()
    label = name or f"{strategy}, {'clip rate' if realtime else 'as fast as possible'}"
    return _result(pipe, name=label, strategy=strategy, realtime=bool(realtime), rate=rate, deadline=deadline)


def plot_stages(stream: VideoStream, *, ax: Any = None) -> "Figure":
    """Each answered frame's latency over the stream, stacked by stage (:data:`STAGES`), in ms.

    Dropped frames have no bar; the dashed line is the stream's deadline. Returns the Figure
    (closed in pyplot, shown once by ``display``). Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    if not isinstance(stream, VideoStream):
        raise OptkitError("stream", type(stream).__name__, "is not a VideoStream", "pass a result of stream_video")
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(8.0, 3.4), layout="constrained")
        plt.close(fig)
    else:
        fig = ax.figure
    keep = np.isin(stream.outcome, ("on_time", "late"))
    order = np.argsort(stream.scheduled_s[keep])
    x = stream.scheduled_s[keep][order] * 1e3
    ys = [np.nan_to_num(stream.stages_s[s][keep][order] * 1e3) for s in STAGES]
    ax.stackplot(x, ys, labels=STAGES, step="mid")
    ax.axhline(stream.deadline_s * 1e3, color="grey", ls="--", lw=1)
    ax.set(xlabel="frame arrival (ms into the stream)", ylabel="latency (ms), stacked by stage",
           title=f"{stream.name}: where each frame's time went (dashed: {stream.deadline_s * 1e3:.0f} ms deadline)")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    return fig
