"""The dynamic batcher behind HTTP: the production path of a single-process model service.

Owns :class:`BatchingService`: a threaded HTTP server (the standard library's, HTTP/1.1 with
keep-alive) whose ``POST`` route checks each body at the edge with
:func:`~optkit.serve.http_edge.parse_request` (JSON or ``.npy`` bytes), submits every input to a
:class:`~optkit.serve.batching.DynamicBatcher`, and answers in the body's own format. Requests
from many connections meet in the batcher's queue, so concurrent clients share model calls.
Back-pressure and deadlines become HTTP statuses (a full queue or a request past its deadline:
503, which a load test counts as rejected), a bad body a 4xx with a message, a model error a 500.
Each answer carries ``X-Server-Ms``: the time the request spent in the batcher (waiting for its
batch and computing), so a client can split a round trip into transfer and inference:
:class:`HttpModel` is that client (a whole batch per request, the server's time read back).

It is what :class:`~optkit.serve.naive.NaiveService` becomes once requests are batched and
bodies are binary, without a framework. Taught in 11_tensorflow_vs_pytorch_end_to_end.
"""
from __future__ import annotations

import http.client
import json
import math
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_callable, check_int, check_range
from optkit.serve.batching import BatcherClosed, DynamicBatcher, QueueFull, RequestTimeout
from optkit.serve.http_edge import NPY, BadRequest, HttpClient, HttpError, decode_array, encode_array, parse_request
from optkit.serve.naive import LoopbackService

__all__ = ["SERVER_TIME_HEADER", "BatchingService", "HttpModel"]

#: Response header holding the milliseconds a request spent inside the service (batch wait + model).
SERVER_TIME_HEADER = "X-Server-Ms"


class BatchingService(LoopbackService):
    """A model behind a dynamic batcher behind HTTP, on a free loopback port.

    ``fn`` is a batched numpy function (an ONNX Runtime session's, ``serve.numpy_fn(model)``);
    ``input_shape`` and ``dtype`` are what one input must be. ``POST {path}`` with
    ``{"inputs": ...}`` (JSON) or ``.npy`` bytes (content type :data:`~optkit.serve.http_edge.NPY`)
    of one input or a batch of up to ``max_request_items``; the answer has one output row per
    input, in the request's format, and the header :data:`SERVER_TIME_HEADER`. ``GET {path}``
    answers the input shape, dtype and counts. Batching: ``max_batch_size``, ``max_wait_s``,
    ``max_queue``, ``timeout_s`` and ``workers`` go to the :class:`DynamicBatcher`.

    ``start()`` serves from a daemon thread (one more thread per open connection); ``stop()``
    stops taking connections, drains the batcher and releases the port. Use it as a context
    manager. :meth:`stats` counts requests (answered or failed), :meth:`batcher_stats` batches.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """

    _thread_name = "optkit-batching-service"

    def __init__(self, fn: Callable[[np.ndarray], Any], *, input_shape: Sequence[int], dtype: Any = "float32",
                 max_batch_size: int = 32, max_wait_s: float = 0.002, max_queue: int = 1024,
                 timeout_s: float | None = 5.0, workers: int = 1, max_request_items: int = 64,
                 max_body_bytes: int = 8 * 2**20, path: str = "/predict", host: str = "127.0.0.1", port: int = 0):
        self.fn = check_callable("fn", fn, fix="pass a function from a batch array to outputs, "
                                               "e.g. serve.numpy_fn(model)")
        try:
            self.input_shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError):
            raise OptkitError("input_shape", input_shape, "is not a shape",
                              "pass the shape of one input, e.g. (28, 28, 1)") from None
        self.dtype = np.dtype(dtype)
        if not isinstance(path, str) or not path.startswith("/"):
            raise OptkitError("path", path, "must start with '/'", "pass e.g. '/predict'")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OptkitError("host", host, "is not a loopback address",
                              "this service is for local experiments: use '127.0.0.1'")
        self.batching = {"max_batch_size": check_int("max_batch_size", max_batch_size, 1),
                         "max_wait_s": float(check_range("max_wait_s", max_wait_s, 0, 60)),
                         "max_queue": check_int("max_queue", max_queue, 1),
                         "timeout_s": check_range("timeout_s", timeout_s, 0, 3600, low_open=True, allow_none=True),
                         "workers": check_int("workers", workers, 1)}
        self.max_request_items = check_int("max_request_items", max_request_items, 1)
        self.max_body_bytes = check_int("max_body_bytes", max_body_bytes, 1)
        self.path, self.host, self.port = path, host, int(port)
        self.batcher: DynamicBatcher | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts = {"answered": 0, "failed": 0}

    # ------------------------------------------------------------------ one request
    def handle(self, body: bytes, content_type: str) -> tuple[int, bytes, str, float]:
        """Answer one POST body: ``(status, answer body, its content type, ms spent in the batcher)``.

        What the HTTP handler calls; also usable without a socket (tests, a different server).
        """
        binary = content_type.split(";")[0].strip().lower() == NPY
        try:
            x = parse_request(body, input_shape=self.input_shape, dtype=self.dtype, max_items=self.max_request_items,
                              max_body_bytes=self.max_body_bytes, content_type=content_type)
        except BadRequest as exc:
            self._count("failed")
            return exc.status, json.dumps({"error": exc.message}).encode(), "application/json", 0.0
        batcher = self.batcher
        t0 = time.perf_counter()
        try:
            if batcher is None:
                raise BatcherClosed("the service is stopped")
            futures = [batcher.submit(row) for row in x]
            y = np.stack([np.asarray(f.result(timeout=None if batcher.timeout_s is None else batcher.timeout_s + 30))
                          for f in futures])
        except (QueueFull, RequestTimeout, BatcherClosed, TimeoutError) as exc:
            self._count("failed")
            return 503, json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:200]}"}).encode(), \
                "application/json", 0.0
        except Exception as exc:  # noqa: BLE001 - the client hears of any model failure
            self._count("failed")
            return 500, json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:300]}"}).encode(), \
                "application/json", 0.0
        server_ms = (time.perf_counter() - t0) * 1e3
        self._count("answered")
        if binary:
            return 200, encode_array(y), NPY, server_ms
        return 200, json.dumps({"outputs": y.tolist()}).encode(), "application/json", server_ms

    def _handler(self) -> type:
        from http.server import BaseHTTPRequestHandler

        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client's connection serves all its requests
            disable_nagle_algorithm = True  # no 40 ms stall between the headers and the body (Nagle + delayed ACK)

            def log_message(self, *args: Any) -> None:  # no access-log line per request
                pass

            def _reply(self, status: int, body: bytes, content_type: str, server_ms: float | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if server_ms is not None:
                    self.send_header(SERVER_TIME_HEADER, f"{server_ms:.4f}")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                if self.path != service.path:
                    self._reply(404, json.dumps({"error": f"no route {self.path}"}).encode(), "application/json")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                self._reply(*service.handle(body, self.headers.get("Content-Type", "application/json")))

            def do_GET(self) -> None:  # noqa: N802
                s = service.stats()
                info = {"input_shape": list(service.input_shape), "dtype": service.dtype.name,
                        "max_request_items": service.max_request_items, "received": s.received,
                        "answered": s.answered, "failed": s.failed}
                self._reply(200, json.dumps(info).encode(), "application/json")

        return Handler

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "BatchingService":
        """Start the batcher and serve from a daemon thread (a no-op when running); returns self."""
        if self._server is not None:
            return self
        from http.server import ThreadingHTTPServer

        class Server(ThreadingHTTPServer):
            daemon_threads = True  # a connection left open does not keep the process alive
            request_queue_size = 128  # the default 5 drops connections many clients open at once (a 1 s SYN retry)

        self.batcher = DynamicBatcher(self.fn, name="http batcher", **self.batching)
        server = Server((self.host, self.port), self._handler())
        self._serve(server)
        return self

    def batcher_stats(self) -> Any:
        """The batcher's counters (:class:`~optkit.serve.batching.BatcherStats`), or None when never started."""
        return None if self.batcher is None else self.batcher.stats()

    def reset_stats(self) -> None:
        """Zero the request and batch counts (e.g. after a warm-up)."""
        super().reset_stats()
        if self.batcher is not None:
            self.batcher.reset_stats()

    def _stopped(self, timeout_s: float) -> None:
        if self.batcher is not None:  # every queued request is answered before the thread ends
            self.batcher.close(drain=True, timeout_s=timeout_s)

    def __repr__(self) -> str:
        state = f"running at {self.url}" if self.running else "stopped"
        b = self.batching
        return (f"BatchingService({state}; max_batch_size={b['max_batch_size']}, max_wait_s={b['max_wait_s']:g}; "
                f"{self.stats()})")


class HttpModel(HttpClient):
    """A model endpoint as a batched function: ``model(batch) -> outputs``, one keep-alive connection per thread.

    Unlike :class:`~optkit.serve.HttpClient`, which sends one input and returns its row, this
    sends a whole batch in one request (``.npy`` bytes with ``binary=True``, else JSON) and
    returns every row. :meth:`timed` also returns the seconds the server says it spent
    (:data:`SERVER_TIME_HEADER`, which :class:`BatchingService` sets; NaN where a server does not
    say), so a caller can split a round trip into transfer and inference. :meth:`input_shape`
    asks the endpoint (``GET``) what one input must be. A non-200 answer raises
    :class:`~optkit.serve.HttpError` with the server's message.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0, binary: bool = True):
        super().__init__(url, timeout_s=timeout_s, binary=binary)
        self.__name__ = "http model (binary)" if binary else "http model (JSON)"

    def _send(self, body: bytes, content_type: str) -> tuple[Any, bytes]:
        for attempt in (0, 1):  # a kept-alive socket the server closed: reconnect once
            conn = self._conn()
            try:
                conn.request("POST", self.path, body=body, headers={"Content-Type": content_type})
                resp = conn.getresponse()
                return resp, resp.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise HttpError(0, f"{type(exc).__name__}: {str(exc)[:200]}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def timed(self, batch: Any) -> tuple[np.ndarray, float]:
        """Send ``batch`` (n, *input_shape) in one request; return ``(outputs, seconds inside the server or NaN)``."""
        x = np.asarray(batch)
        if self.binary:
            resp, data = self._send(encode_array(x), NPY)
        else:
            resp, data = self._send(json.dumps({"inputs": x.tolist()}).encode(), "application/json")
        if resp.status != 200:
            try:
                message = json.loads(data).get("error", "")
            except (ValueError, AttributeError):
                message = data.decode(errors="replace")
            raise HttpError(resp.status, str(message)[:500])
        if (resp.getheader("Content-Type") or "").startswith(NPY):
            out = decode_array(data)
        else:
            out = np.asarray(json.loads(data)["outputs"], dtype=np.float32)
        server = resp.getheader(SERVER_TIME_HEADER)
        return out, float(server) / 1e3 if server else math.nan

    def __call__(self, batch: Any) -> np.ndarray:
        return self.timed(batch)[0]

    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input as the endpoint's ``GET`` answers it (None where it does not say)."""
        try:
            status, info = self.post(b"", method="GET")
        except (OSError, http.client.HTTPException):
            return None
        if status != 200 or not isinstance(info, dict) or "input_shape" not in info:
            return None
        return tuple(int(s) for s in info["input_shape"])

    def __repr__(self) -> str:
        return f"HttpModel({self.url!r}{'' if self.binary else ', binary=False'})"
