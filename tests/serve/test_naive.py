"""optkit.serve.NaiveService: the one-request-at-a-time Flask baseline answers correctly, counts every
request it receives (received = answered + failed, and the client's count agrees), refuses bad
input with a 4xx, passes model errors as 500s, and stops cleanly (the port is released)."""
from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("flask", reason="the naive service needs flask (the 'serve' extra)")

from optkit import serve  # noqa: E402
from optkit.core.errors import OptkitError  # noqa: E402

RNG = np.random.default_rng(0)
SHAPE = (2, 3)
INPUTS = RNG.standard_normal((40, *SHAPE)).astype(np.float32)
W = RNG.standard_normal((6, 4)).astype(np.float32)


def model(batch: np.ndarray) -> np.ndarray:
    if (batch > 50).any():
        raise ValueError("input out of range")
    return batch.reshape(len(batch), -1) @ W


EXPECTED = model(INPUTS)


def test_answers_each_request_with_its_own_output_and_counts_them():
    with serve.NaiveService(model, input_shape=SHAPE) as svc:
        client = serve.HttpClient(svc.url)
        status, info = client.post(None, method="GET")
        assert status == 200 and info["input_shape"] == list(SHAPE) and info["received"] == 0
        r = serve.run_load(client, INPUTS, concurrency=4, requests_per_client=10, expected=EXPECTED,
                           atol=1e-5, rtol=1e-5, warmup=0)
        stats = svc.stats()
    assert r.counts["ok"] == r.n == 40 and r.lost == 0
    assert stats.received == stats.answered + stats.failed == 40 and stats.failed == 0


def test_failures_are_counted_sent_equals_answered_plus_failed():
    bad = {"not JSON": b"{oops", "no inputs": {"x": [1]}, "wrong shape": {"inputs": [1.0, 2.0]},
           "strings": {"inputs": [["a", "b", "c"]] * 2}}
    with serve.NaiveService(model, input_shape=SHAPE) as svc:
        client = serve.HttpClient(svc.url)
        statuses = [client.post(body)[0] for body in bad.values()]
        server_error = client.post({"inputs": np.full(SHAPE, 99.0).tolist()})
        good = [client(x) for x in INPUTS[:5]]
        stats = svc.stats()
    assert statuses == [400] * 4
    assert server_error[0] == 500 and "ValueError" in server_error[1]["error"]
    assert all(np.allclose(g, e, atol=1e-5) for g, e in zip(good, EXPECTED[:5]))
    sent = len(bad) + 1 + len(good)
    assert stats.received == sent == stats.answered + stats.failed
    assert (stats.answered, stats.failed) == (5, 5)


def test_a_list_of_inputs_is_one_batch():
    with serve.NaiveService(model, input_shape=SHAPE) as svc:
        status, body = serve.HttpClient(svc.url).post({"inputs": INPUTS[:3].tolist()})
    assert status == 200 and np.allclose(body["outputs"], EXPECTED[:3], atol=1e-5)


def test_stop_releases_the_port_and_is_idempotent():
    svc = serve.NaiveService(model, input_shape=SHAPE).start()
    port = svc.port
    assert svc.running and port > 0 and str(port) in svc.url
    svc.stop()
    svc.stop()
    assert not svc.running
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


def test_bad_arguments_name_the_parameter():
    with pytest.raises(OptkitError, match="fn"):
        serve.NaiveService(42, input_shape=SHAPE)
    with pytest.raises(OptkitError, match="input_shape"):
        serve.NaiveService(model, input_shape="abc")
    with pytest.raises(OptkitError, match="path"):
        serve.NaiveService(model, input_shape=SHAPE, path="predict")
    with pytest.raises(OptkitError, match="host"):
        serve.NaiveService(model, input_shape=SHAPE, host="0.0.0.0")
