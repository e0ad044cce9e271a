"""optkit.serve: every caller gets its own answer (under load, failures, timeouts and shutdown),
the cache's keys and bounds, input validation at the HTTP edge, and a Ray Serve deployment on loopback."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from optkit import serve
from optkit.core.errors import OptkitError

RNG = np.random.default_rng(0)
INPUTS = RNG.standard_normal((97, 4)).astype(np.float32)
W = RNG.standard_normal((4, 3)).astype(np.float32)


def model(batch: np.ndarray) -> np.ndarray:
    """Row-wise, so every input has its own answer; sleeps a little so requests pile up into batches."""
    time.sleep(0.0005)
    return batch @ W + np.arange(3, dtype=np.float32)


EXPECTED = model(INPUTS)


class Gate:
    """A model that blocks until released, recording every batch it saw."""

    def __init__(self, fail_on_negative_first: bool = False):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batches: list[np.ndarray] = []
        self.fail = fail_on_negative_first

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        self.entered.set()
        self.release.wait(10)
        if self.fail and (batch[:, 0] < 0).any():
            raise ValueError("poisoned input")
        return batch * 10


def _block_worker(batcher: serve.DynamicBatcher, gate: Gate) -> "Future":  # noqa: F821
    """Occupy the single worker with one request, so later submissions stay queued."""
    first = batcher.submit(np.full(2, 99.0, dtype=np.float32))
    assert gate.entered.wait(5)
    return first


# ----------------------------------------------------------------------------- batcher under load
def test_concurrent_clients_each_get_their_own_answer():
    with serve.DynamicBatcher(model, max_batch_size=16, max_wait_s=0.002) as b:
        r = serve.run_load(b.predict, INPUTS, concurrency=16, requests_per_client=40, expected=EXPECTED)
        stats = b.stats()
    assert r.n == r.expected_n == 640 and r.lost == 0
    assert r.counts == {"ok": 640, "mismatch": 0, "timeout": 0, "rejected": 0, "error": 0}
    # every (client, seq) pair exactly once, and each sent the input it was meant to
    assert len(set(zip(r.client.tolist(), r.seq.tolist()))) == 640
    assert np.array_equal(r.index, (r.client * 40 + r.seq) % len(INPUTS))
    assert stats.mean_batch_size > 1.5 and stats.completed == stats.submitted
    assert max(stats.batch_sizes) <= 16


def test_load_generator_detects_swapped_answers():
    swapped = {"n": 0}

    def bad(x):  # answers every 5th call with another input's output
        swapped["n"] += 1
        return model(INPUTS[:1])[0] if swapped["n"] % 5 == 0 else model(x[None])[0]

    r = serve.run_load(bad, INPUTS[1:], concurrency=1, requests_per_client=50, expected=EXPECTED[1:], warmup=0)
    assert r.counts["mismatch"] == 10 and r.counts["ok"] == 40


def test_model_exception_reaches_every_caller_of_that_batch():
    gate = Gate(fail_on_negative_first=True)
    with serve.DynamicBatcher(gate, max_batch_size=8, max_wait_s=0.0) as b:
        first = _block_worker(b, gate)
        queued = [b.submit(np.array([v, 1.0], dtype=np.float32)) for v in (1.0, -1.0, 2.0)]
        gate.release.set()
        assert np.array_equal(first.result(5), [990.0, 990.0])
        errors = [f.exception(5) for f in queued]
    assert len(gate.batches) == 2 and len(gate.batches[1]) == 3  # the three ran as one batch
    assert all(isinstance(e, ValueError) and "poisoned" in str(e) for e in errors)
    assert b.stats().failed == 3 and b.stats().completed == 1


def test_failures_and_timeouts_under_load_never_swap_answers():
    def flaky(batch):
        time.sleep(0.001)
        if (batch[:, 0] > 1.5).any():  # some inputs poison their whole batch
            raise RuntimeError("model failed")
        return batch @ W + np.arange(3, dtype=np.float32)

    with serve.DynamicBatcher(flaky, max_batch_size=8, max_wait_s=0.002, timeout_s=0.02) as b:
        r = serve.run_load(b.predict, INPUTS, concurrency=24, requests_per_client=30, expected=EXPECTED)
    c = r.counts
    assert r.lost == 0 and c["mismatch"] == 0
    assert c["error"] > 0 and c["ok"] > 0  # both happened, and every ok answer was its own
    assert c["ok"] + c["error"] + c["timeout"] == 24 * 30
    bad = INPUTS[r.index[r.outcome == "ok"], 0] > 1.5
    assert not bad.any()  # a poisoned input never got an answer


def test_queued_request_past_its_deadline_times_out_and_never_runs():
    gate = Gate()
    with serve.DynamicBatcher(gate, max_batch_size=4, max_wait_s=0.0) as b:
        first = _block_worker(b, gate)
        late = b.submit(np.array([5.0, 5.0], dtype=np.float32), timeout_s=0.01)
        with pytest.raises(serve.RequestTimeout):
            b.predict(np.array([6.0, 6.0], dtype=np.float32), timeout_s=0.02)
        time.sleep(0.03)
        gate.release.set()
        first.result(5)
        assert isinstance(late.exception(5), serve.RequestTimeout)
    seen = np.concatenate(gate.batches)
    assert not (seen == 5.0).any() and not (seen == 6.0).any()
    s = b.stats()
    assert s.timed_out == 1 and s.cancelled == 1


def test_bounded_queue_pushes_back():
    gate = Gate()
    b = serve.DynamicBatcher(gate, max_batch_size=1, max_wait_s=0.0, max_queue=2)
    first = _block_worker(b, gate)
    held = [b.submit(np.zeros(2, np.float32)) for _ in range(2)]
    with pytest.raises(serve.QueueFull):
        b.submit(np.zeros(2, np.float32))
    t0 = time.perf_counter()
    with pytest.raises(serve.QueueFull):
        b.submit(np.zeros(2, np.float32), block=True, timeout_s=0.05)
    assert time.perf_counter() - t0 >= 0.04  # it waited for room before giving up
    gate.release.set()
    assert all(f.result(5) is not None for f in [first, *held])
    assert b.stats().rejected == 2
    b.close()


def test_close_drains_or_rejects_but_never_drops():
    for drain in (True, False):
        gate = Gate()
        b = serve.DynamicBatcher(gate, max_batch_size=2, max_wait_s=0.0)
        first = _block_worker(b, gate)
        queued = [b.submit(np.full(2, i, np.float32)) for i in range(5)]
        closer = threading.Thread(target=b.close, kwargs={"drain": drain})
        closer.start()
        time.sleep(0.02)
        with pytest.raises(serve.BatcherClosed):
            b.submit(np.zeros(2, np.float32))
        gate.release.set()
        closer.join(5)
        assert first.result(5) is not None
        assert all(f.done() for f in queued)
        if drain:
            assert [float(f.result()[0]) for f in queued] == [0.0, 10.0, 20.0, 30.0, 40.0]
        else:
            assert all(isinstance(f.exception(), serve.BatcherClosed) for f in queued)
        assert b.closed and b.stats().queued == 0


def test_clients_across_a_shutdown_are_answered_or_rejected():
    b = serve.DynamicBatcher(model, max_batch_size=8, max_wait_s=0.001)
    timer = threading.Timer(0.15, b.close)
    timer.start()
    r = serve.run_load(b.predict, INPUTS, concurrency=12, requests_per_client=400, expected=EXPECTED, warmup=0)
    timer.join()
    c = r.counts
    assert r.lost == 0 and c["mismatch"] == 0 and c["error"] == 0
    assert c["ok"] > 0 and c["rejected"] > 0 and c["ok"] + c["rejected"] == 12 * 400


def test_wrong_row_count_and_mixed_shapes():
    with serve.DynamicBatcher(lambda x: x[:1], max_batch_size=4, max_wait_s=0.01) as b:
        futures = [b.submit(np.zeros(3)) for _ in range(3)]
        assert all(isinstance(f.exception(5), serve.ServeError) for f in futures)
    calls = []

    def record(x):
        calls.append(x.shape)
        return x.sum(axis=tuple(range(1, x.ndim)))

    with serve.DynamicBatcher(record, max_batch_size=8, max_wait_s=0.02) as b:
        futures = [b.submit(np.ones(s, np.float32)) for s in [(2,), (3,), (2,), (2, 2), (3,)]]
        got = [float(f.result(5)) for f in futures]
    assert got == [2.0, 3.0, 2.0, 4.0, 3.0]
    assert sorted(calls) == [(1, 2, 2), (2, 2), (2, 3)]


def test_batcher_rejects_bad_arguments():
    with pytest.raises(OptkitError, match="max_batch_size"):
        serve.DynamicBatcher(model, max_batch_size=0)
    with pytest.raises(OptkitError, match="fn"):
        serve.DynamicBatcher("model")
    with pytest.raises(OptkitError, match="max_wait_s"):
        serve.DynamicBatcher(model, max_wait_s=-1)


def test_numpy_fn_adapts_torch_modules():
    import torch

    lin = torch.nn.Linear(4, 3)
    fn = serve.numpy_fn(lin)
    out = fn(INPUTS[:5])
    assert isinstance(out, np.ndarray) and out.shape == (5, 3)
    with serve.DynamicBatcher(fn, max_batch_size=4) as b:
        assert np.allclose(b.predict(INPUTS[0]), out[0], atol=1e-6)


# ----------------------------------------------------------------------------- cache
def test_cache_key_distinguishes_shape_and_dtype():
    a = np.arange(6, dtype=np.float32)
    assert a.reshape(2, 3).tobytes() == a.reshape(3, 2).tobytes()  # why bytes alone are not a key
    assert serve.cache_key(a.reshape(2, 3)) != serve.cache_key(a.reshape(3, 2))
    assert serve.cache_key(a) != serve.cache_key(a.view(np.int32))
    assert serve.cache_key(a.reshape(2, 3)) == serve.cache_key(a.reshape(2, 3).copy())
    t = np.arange(6, dtype=np.float32).reshape(2, 3).T  # non-contiguous view
    assert serve.cache_key(t) == serve.cache_key(np.ascontiguousarray(t))
    assert serve.cache_key(a) != serve.cache_key(a + 1)
    with pytest.raises(OptkitError):
        serve.cache_key(np.array([object()]))


def test_cache_lru_respects_entry_and_byte_bounds():
    c = serve.PredictionCache(max_entries=3, max_bytes=1000)
    xs = [np.full(2, i, np.float32) for i in range(6)]
    for x in xs[:3]:
        c.put(x, np.zeros(10, np.float32))  # 40 B each
    c.get(xs[0])  # 0 is now the most recently used
    c.put(xs[3], np.zeros(10, np.float32))
    assert xs[1] not in c and all(x in c for x in (xs[0], xs[2], xs[3]))
    assert c.stats().evictions == 1
    # the byte bound alone: 40 B values, room for two
    d = serve.PredictionCache(max_entries=100, max_bytes=100)
    for x in xs[:3]:
        d.put(x, np.zeros(10, np.float32))
    s = d.stats()
    assert (s.entries, s.bytes, s.evictions) == (2, 80, 1) and xs[0] not in d
    assert not d.put(xs[5], np.zeros(30, np.float32))  # 120 B alone: refused, nothing evicted for it
    s = d.stats()
    assert s.too_large == 1 and s.entries == 2 and xs[1] in d and xs[2] in d
    assert s.bytes == sum(v.nbytes for v in d._data.values())


def test_cache_values_are_private_copies_and_stats_count():
    c = serve.PredictionCache(max_entries=8)
    x, y = np.ones(3, np.float32), np.arange(3, dtype=np.float32)
    calls = []
    f = serve.cached(lambda v: calls.append(1) or y, c)
    first = f(x)
    y[0] = 42  # the caller changes its array; the cache does not
    second = f(x.copy())
    assert len(calls) == 1 and second[0] == 0 and not second.flags.writeable
    assert np.array_equal(first, second)
    s = c.stats()
    assert (s.hits, s.misses, s.entries) == (1, 1, 1) and s.hit_rate == 0.5


def test_cache_is_thread_safe():
    c = serve.PredictionCache(max_entries=16, max_bytes=16 * 12)
    keys = [np.full(2, i, np.float32) for i in range(40)]

    def client(seed):
        rng = np.random.default_rng(seed)
        for _ in range(300):
            x = keys[int(rng.integers(40))]
            assert np.array_equal(c.get_or_compute(x, lambda v: np.repeat(v[:1], 3)), np.repeat(x[:1], 3))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = c.stats()
    assert s.hits + s.misses == 8 * 300 and s.entries <= 16 and s.bytes == 12 * s.entries


# ----------------------------------------------------------------------------- stream
def test_stream_records_every_frame():
    frames = INPUTS[:60]
    with serve.DynamicBatcher(model, max_batch_size=8, max_wait_s=0.002, max_queue=16, timeout_s=0.05) as b:
        res = serve.run_stream(b.submit, frames, fps=600)
    c = res.counts
    assert sum(c.values()) == 60 and c["error"] == 0
    assert c["on_time"] + c["late"] > 0
    answered = np.isfinite(res.latency_s)
    assert answered.sum() == c["on_time"] + c["late"] and (res.latency_s[answered] > 0).all()


def test_run_streams_feeds_every_strategy_and_closes_its_batchers():
    import concurrent.futures

    frames = INPUTS[:40]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    batcher = serve.DynamicBatcher(model, max_batch_size=8, max_wait_s=0.002, max_queue=64, timeout_s=0.05)
    streams = serve.run_streams({"batcher": batcher, "pool": lambda f: pool.submit(lambda: model(f[None])[0])},
                                frames, fps=500, deadline_s=0.05)
    pool.shutdown()
    assert list(streams) == ["batcher", "pool"] and batcher.closed
    for name, res in streams.items():
        assert res.name == name and sum(res.counts.values()) == 40 and res.counts["error"] == 0
        assert res.deadline_s == 0.05 and res.target_fps == 500
    fig = serve.plot_streams(streams)
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.lines[-1].get_ydata()[0] == pytest.approx(50.0)  # 2 streams + the deadline
    with pytest.raises(OptkitError, match="strategies"):
        serve.run_streams({}, frames, fps=100)


# ----------------------------------------------------------------------------- experiments
def test_head_to_head_rotates_the_order_and_takes_medians_over_rounds():
    order = []

    def way(name):
        def call(x):
            order.append(name)
            return model(x[None])[0]
        return call

    h = serve.head_to_head({"a": way("a"), "b": way("b")}, INPUTS, concurrency=1, requests_per_client=2, rounds=3,
                           expected=EXPECTED, warmup=0)
    assert order == list("aabb" "bbaa" "aabb")  # round r starts with way r % 2
    assert [len(rs) for rs in h.results.values()] == [3, 3] and h.concurrency == 1
    summary = h.summary()
    for name, rs in h.results.items():
        assert summary[name]["throughput"] == pytest.approx(np.median([r.throughput for r in rs]))
        assert summary[name]["p99_ms"] == pytest.approx(np.median([r.p99_ms for r in rs]))
        assert summary[name]["requests"] == summary[name]["ok"] == 6 and summary[name]["lost"] == 0
    assert h.ratio("a", "b") == pytest.approx(summary["a"]["throughput"] / summary["b"]["throughput"])
    rec = h.record("a", technique="direct", workload="tiny · 1 client", extra={"note": 1})
    assert rec.batch_size == 1 and rec.latency_ms == pytest.approx(summary["a"]["p50_ms"])
    assert rec.throughput == pytest.approx(summary["a"]["throughput"]) and rec.technique == "direct"
    assert rec.extra == {"concurrency": 1, "rounds": 3, "requests": 6, "lost": 0, "mismatched": 0, "failed": 0,
                         "note": 1}
    assert "a" in str(h) and "6 ok" in str(h)
    with pytest.raises(OptkitError, match="not a way"):
        h.throughput("c")
    with pytest.raises(OptkitError, match="cpu=True"):
        h.cpu_per_request_ms("a")


def test_head_to_head_checks_each_way_against_its_own_expected_outputs():
    with serve.DynamicBatcher(model, max_batch_size=8, max_wait_s=0.001) as b:
        h = serve.head_to_head({"right": b.predict, "wrong answers": b.predict}, INPUTS, concurrency=4,
                               requests_per_client=5, rounds=2, cpu=True,
                               expected={"right": EXPECTED, "wrong answers": EXPECTED + 1})
    s = h.summary()
    assert s["right"]["ok"] == 40 and s["right"]["mismatch"] == 0
    assert s["wrong answers"]["mismatch"] == 40 and s["wrong answers"]["throughput"] == 0
    cpu = h.cpu_per_request_ms("right")
    assert "notebook (clients, encoding)" in cpu and all(v >= 0 for v in cpu.values())
    assert list(cpu.values()) == sorted(cpu.values(), reverse=True)
    with pytest.raises(OptkitError, match="expected"):
        serve.head_to_head({"a": model}, INPUTS, concurrency=1, requests_per_client=1, expected={"b": EXPECTED})


def test_cost_split_adds_one_layer_per_row_and_counts_failures():
    def fails_every_third(x, state={"n": 0}):
        state["n"] += 1
        if state["n"] % 3 == 0:
            raise RuntimeError("boom")
        return model(x[None])[0]

    h = serve.head_to_head({"direct": lambda x: model(x[None])[0], "flaky": fails_every_third}, INPUTS,
                           concurrency=1, requests_per_client=6, rounds=1, expected=EXPECTED, warmup=0, cpu=True)
    s = h.summary()
    assert s["flaky"]["failed"] == 2 and s["flaky"]["ok"] == 4 and s["direct"]["failed"] == 0
    assert s["flaky"]["requests"] == s["flaky"]["ok"] + s["flaky"]["failed"] + s["flaky"]["mismatch"]
    # made-up CPU seconds, so the arithmetic is exact
    h.cpu_s = {"direct": {"this process": 0.006}, "flaky": {"this process": 0.006, "ray::ProxyActor": 0.012}}
    t = h.cost_split(["direct", "flaky"])
    assert list(t.index) == ["direct", "flaky"]
    assert t.loc["direct", "total"] == pytest.approx(1.0) and t.loc["flaky", "total"] == pytest.approx(3.0)
    assert list(t["step_ms"]) == pytest.approx([1.0, 2.0]) and t.loc["direct", "Serve HTTP proxy"] == 0
    assert list(t.columns) == ["throughput", "vs first", "notebook (clients, encoding)", "Serve HTTP proxy", "total",
                               "step_ms"]
    assert t.loc["flaky", "vs first"] == pytest.approx(h.throughput("direct") / h.throughput("flaky"))


def test_compare_cache_hit_rate_follows_the_repeats():
    rng = np.random.default_rng(1)
    repeated = INPUTS[rng.integers(0, 10, 80)]  # 80 requests over at most 10 distinct inputs
    unique = INPUTS[:80] + np.float32(1e-3)
    calls = []

    def reference(batch):
        calls.append(len(batch))
        return model(batch)

    rows = serve.compare_cache(model, {"repeated": repeated, "unique": unique}, reference, concurrency=1,
                               max_entries=64, max_bytes=2**20)
    assert calls == [80, 80]  # one batched reference call per workload
    by = {r["workload"]: r for r in rows}
    distinct = by["repeated"]["distinct inputs"]
    assert distinct == len({x.tobytes() for x in repeated}) and by["unique"]["distinct inputs"] == 80
    assert by["repeated"]["hit rate"] == pytest.approx(1 - distinct / 80)  # one miss per distinct input
    assert by["unique"]["hit rate"] == 0 and by["unique"]["entries"] == 64  # the entry bound holds
    for r in rows:
        assert r["mismatched"] == 0 and r["cache bytes"] == 12 * r["entries"]
        assert r["speed-up"] == pytest.approx(r["req/s with cache"] / r["req/s without"])
    small = serve.compare_cache(model, {"unique": unique}, model, concurrency=4, max_entries=1000, max_bytes=120)
    assert small[0]["cache bytes"] <= 120 and small[0]["entries"] == 10  # the byte bound holds (12 B an entry)
    with pytest.raises(OptkitError, match="fewer inputs than clients"):
        serve.compare_cache(model, {"tiny": INPUTS[:2]}, model, concurrency=4)


def test_serving_table_shows_throughput_ratios_within_one_workload():
    from optkit.core.record import Record

    recs = [Record("direct", workload="w", batch_size=1, latency_ms=1.0, throughput=100.0, size_bytes=4),
            Record("batcher", workload="w", batch_size=1, latency_ms=10.0, throughput=250.0, size_bytes=1)]
    t = serve.serving_table(recs, baseline="direct")
    assert "speedup" not in t.columns and list(t["throughput_ratio"]) == [1.0, 2.5]
    assert t.columns.get_loc("throughput_ratio") == t.columns.get_loc("throughput") + 1
    assert list(serve.serving_table(recs, "direct", columns=["throughput_ratio", "size_ratio"]).columns) == \
        ["throughput_ratio", "size_ratio"]
    with pytest.raises(OptkitError, match="workload"):
        serve.serving_table(recs + [Record("other", workload="v", batch_size=1, throughput=1.0)], baseline="direct")


# ----------------------------------------------------------------------------- HTTP edge
SHAPE = (1, 2, 2)


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_parse_request_accepts_one_input_or_a_batch():
    one = serve.parse_request(_body({"inputs": np.ones(SHAPE).tolist()}), input_shape=SHAPE)
    many = serve.parse_request(_body({"inputs": np.ones((3, *SHAPE)).tolist(), "dtype": "float32"}),
                               input_shape=SHAPE)
    assert one.shape == (1, *SHAPE) and many.shape == (3, *SHAPE) and many.dtype == np.float32
    ints = serve.parse_request(_body({"inputs": [[[1, 2], [3, 4]]]}), input_shape=SHAPE)
    assert ints.dtype == np.float32


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (_body([1, 2, 3]), 400, '{"inputs"'),
    (_body({"inputs": [[1, 2], [3, 4]]}), 422, "shape [2, 2]"),
    (_body({"inputs": [[[1, 2], [3]]]}), 422, "ragged"),
    (_body({"inputs": [[["a", "b"], ["c", "d"]]]}), 422, "numbers"),
    (_body({"inputs": np.ones(SHAPE).tolist(), "dtype": "float64"}), 422, "float64"),
    (_body({"inputs": [[[1.0, float("nan")], [3.0, 4.0]]]}), 422, "NaN"),
    (_body({"inputs": np.ones((9, *SHAPE)).tolist()}), 413, "max_request_items=8"),
    (b" " * 2000 + _body({"inputs": 1}), 413, "exceeds the limit"),
    (_body({"inputs": []}), 422, "shape [0]"),
])
def test_parse_request_refuses_bad_input_with_a_4xx(body, status, fragment):
    with pytest.raises(serve.BadRequest) as err:
        serve.parse_request(body, input_shape=SHAPE, max_items=8, max_body_bytes=1000)
    assert err.value.status == status and fragment in err.value.message


def test_binary_body_round_trips_and_is_checked_like_json():
    x = RNG.standard_normal((3, *SHAPE)).astype(np.float32)
    body = serve.encode_array(x)
    assert np.array_equal(serve.decode_array(body), x)
    got = serve.parse_request(body, input_shape=SHAPE, content_type=serve.http_edge.NPY)
    assert got.dtype == np.float32 and np.array_equal(got, x)
    one = serve.parse_request(serve.encode_array(x[0]), input_shape=SHAPE, content_type="application/x-npy; v=1")
    assert one.shape == (1, *SHAPE)
    for bad, status, fragment in [(b"\x93NUMPY garbage", 400, ".npy"),
                                  (serve.encode_array(np.ones((2, 2), np.float32)), 422, "shape [2, 2]"),
                                  (serve.encode_array(np.ones(SHAPE, np.complex64)), 422, "numbers"),
                                  (serve.encode_array(np.full(SHAPE, np.inf, np.float32)), 422, "NaN"),
                                  (serve.encode_array(np.ones((9, *SHAPE), np.float32)), 413, "max_request_items")]:
        with pytest.raises(serve.BadRequest) as err:
            serve.parse_request(bad, input_shape=SHAPE, max_items=8, content_type=serve.http_edge.NPY)
        assert err.value.status == status and fragment in err.value.message


# ----------------------------------------------------------------------------- artifacts and Ray Serve
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """y = x @ W + b as a two-node ONNX graph with a dynamic batch: the artifact a replica loads."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.arange(3, dtype=np.float32), "b")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("serve") / "tiny.onnx"
    onnx.save(m, path)
    return path


def test_load_artifact_reads_onnx_shape_and_dtype(tiny_onnx):
    fn, shape, dtype = serve.load_artifact(tiny_onnx)
    assert shape == (4,) and dtype == "float32"
    assert np.allclose(fn(INPUTS), EXPECTED, atol=1e-5)
    with pytest.raises(OptkitError, match="not a file"):
        serve.load_artifact(tiny_onnx.with_name("missing.onnx"))


@pytest.fixture(scope="module")
def ray_cluster(tiny_onnx):
    """One local Ray instance for the module, loopback only, shut down at the end."""
    pytest.importorskip("ray.serve")
    cluster = serve.LocalServe(num_cpus=2)
    try:
        cluster.start()
    except Exception as exc:  # noqa: BLE001 - a machine where Ray cannot start
        pytest.skip(f"Ray could not start here: {type(exc).__name__}: {exc}")
    try:
        app = serve.ray_deployment(tiny_onnx, max_batch_size=8, batch_wait_timeout_s=0.002, max_request_items=4)
        url = cluster.run(app, name="tiny", route_prefix="/tiny")
        yield cluster, url
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def ray_url(ray_cluster):
    return ray_cluster[1]


@pytest.mark.slow
def test_ray_serve_answers_binary_bodies_and_handle_calls_alike(ray_cluster):
    cluster, url = ray_cluster
    ways = {"binary": serve.HttpClient(url, binary=True), "handle": cluster.handle_call("tiny")}
    for name, call in ways.items():
        r = serve.run_load(call, INPUTS, concurrency=4, requests_per_client=10, expected=EXPECTED, atol=1e-5)
        assert r.counts["ok"] == 40 and r.lost == 0, name
    status, out = ways["binary"].post(serve.encode_array(INPUTS[:3]), content_type=serve.http_edge.NPY)
    assert status == 200 and isinstance(out, np.ndarray) and np.allclose(out, EXPECTED[:3], atol=1e-5)
    status, payload = ways["binary"].post(serve.encode_array(INPUTS[:3, :2]), content_type=serve.http_edge.NPY)
    assert status == 422 and "shape" in payload["error"]  # errors stay JSON, with the message


@pytest.mark.slow
def test_ray_serve_answers_each_request_over_http(ray_url):
    assert ray_url.startswith("http://127.0.0.1:")
    client = serve.HttpClient(ray_url)
    status, meta = client.post(None, method="GET")
    assert status == 200 and meta["input_shape"] == [4] and meta["dtype"] == "float32"
    r = serve.run_load(client, INPUTS, concurrency=6, requests_per_client=15, expected=EXPECTED, atol=1e-5)
    assert r.counts["ok"] == 90 and r.lost == 0
    status, out = client.post({"inputs": INPUTS[:3].tolist()})
    assert status == 200 and np.allclose(out["outputs"], EXPECTED[:3], atol=1e-5)


@pytest.mark.slow
def test_ray_serve_rejects_bad_input_and_keeps_serving(ray_url):
    client = serve.HttpClient(ray_url)
    cases = [(b"{oops", 400), ({"inputs": [1, 2]}, 422), ({"inputs": [[1, 2, 3, 4]], "dtype": "int64"}, 422),
             ({"inputs": INPUTS[:5].tolist()}, 413), ({"inputs": [["a", "b", "c", "d"]]}, 422)]
    for body, status in cases:
        got, payload = client.post(body)
        assert got == status and isinstance(payload, dict) and payload["error"]
    with pytest.raises(serve.HttpError) as err:
        client(np.zeros(5, np.float32))
    assert err.value.status == 422
    assert np.allclose(client(INPUTS[7]), EXPECTED[7], atol=1e-5)  # still serving


def test_ray_deployment_checks_its_arguments(tiny_onnx):
    pytest.importorskip("ray.serve")
    with pytest.raises(OptkitError, match="artifact"):
        serve.ray_deployment(tiny_onnx.with_name("nope.onnx"))
    with pytest.raises(OptkitError, match="num_replicas"):
        serve.ray_deployment(tiny_onnx, num_replicas=2, autoscaling_config={"min_replicas": 1, "max_replicas": 2})


# ----------------------------------------------------------------------------- module hygiene and exercises
def test_import_is_light():
    import subprocess
    import sys

    code = "import optkit.serve, sys; bad = [m for m in ('ray', 'tensorflow') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exercise_checkers_accept_references_and_reject_stubs(capsys):
    from optkit.course.exercises import nb09 as ex

    def stub(*args):
        raise NotImplementedError

    assert ex.check_batch_ready(ex.reference_batch_ready) and not ex.check_batch_ready(stub)
    assert not ex.check_batch_ready(lambda arrivals, now, m, w: len(arrivals))  # never waits
    assert ex.check_cache_key(ex.reference_cache_key) and ex.check_cache_key(serve.cache_key)
    assert not ex.check_cache_key(lambda x: hash(np.asarray(x).tobytes()))  # bytes alone
    assert ex.check_littles_law(ex.reference_littles_law) and not ex.check_littles_law(lambda c, ms: c / ms)
    out = capsys.readouterr().out
    assert out.count("✓") == 4 and out.count("✗") == 4


def test_cpu_used_differences_by_pid():
    before = {1: ("this process", 1.0), 2: ("ray::ProxyActor", 5.0)}
    after = {1: ("this process", 1.5), 2: ("ray::ProxyActor", 5.25), 3: ("ray::ServeReplica:a:b", 0.5)}
    assert serve.cpu_used(before, after) == {"this process": 0.5, "ray::ProxyActor": 0.25,
                                             "ray::ServeReplica:a:b": 0.5}
    snap = serve.cpu_by_process()
    assert any(name == "this process" for name, _ in snap.values())
