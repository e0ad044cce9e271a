"""The naive endpoint every serving lesson starts from: Flask, one request at a time, JSON lists.

Owns :class:`NaiveService`: a Flask app with one ``POST`` route that parses ``{"inputs": [...]}``
into an array, calls the model on that one request and answers ``{"outputs": [...]}``, served by
Werkzeug's single-threaded server (``threaded=False``: the next request waits until this one is
answered, and each request opens its own connection). It is what a first "put the model behind
HTTP" looks like, and the baseline the dynamic batcher and Ray Serve are measured against. It
runs in a thread on a free loopback port, counts every request it receives (answered or failed)
and stops cleanly. Flask is imported only when a service is started.

Taught in 09_serving_batching_and_caching (and used again in 10_optimize_your_own_model).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_callable

__all__ = ["NaiveStats", "LoopbackService", "NaiveService"]


@dataclass(frozen=True)
class NaiveStats:
    """What a :class:`NaiveService` received: every request is ``answered`` (200) or ``failed`` (4xx/5xx).

    Taught in 09_serving_batching_and_caching.
    """

    received: int
    answered: int
    failed: int

    def __repr__(self) -> str:
        return f"NaiveStats({self.received} received: {self.answered} answered, {self.failed} failed)"


class LoopbackService:
    """What every optkit test service shares: a server in a daemon thread on a loopback port, its
    address, request counts (answered / failed) and a clean stop. Subclasses set ``host``, ``port``,
    ``path``, ``_lock``, ``_counts``, ``_server`` and ``_thread`` in ``__init__``, build their server
    in ``start`` and hand it to :meth:`_serve`.

    Taught in 09_serving_batching_and_caching.
    """

    _thread_name = "optkit-service"

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def _serve(self, server: Any) -> None:
        """Serve ``server`` (``serve_forever``) in a daemon thread; the port it bound becomes ``self.port``."""
        self._server = server
        self.port = int(server.server_port)
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self._thread_name, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The endpoint's address (the port is known once started)."""
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        """True between ``start`` and :meth:`stop`."""
        return self._server is not None

    def stats(self) -> NaiveStats:
        """Requests received so far: answered (200) and failed (4xx/5xx)."""
        with self._lock:
            a, f = self._counts["answered"], self._counts["failed"]
        return NaiveStats(received=a + f, answered=a, failed=f)

    def reset_stats(self) -> None:
        """Zero the counts (e.g. after a warm-up)."""
        with self._lock:
            self._counts = {"answered": 0, "failed": 0}

    def _stopped(self, timeout_s: float) -> None:
        """Called once the server stopped accepting requests, before its thread is joined."""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: the requests in progress are finished, the port is released. Harmless twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self._stopped(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class NaiveService(LoopbackService):
    """A Flask endpoint that answers one request at a time: the naive baseline of a model service.

    ``fn`` is a batched numpy function (``serve.numpy_fn(model)``, an ONNX Runtime session's
    function); each request's inputs go to it as a batch of one (or of as many inputs as the
    request lists). ``POST {path}`` with ``{"inputs": x}`` answers ``{"outputs": [...]}``, as
    :class:`~optkit.serve.HttpClient` expects; a body that is not JSON, has no ``inputs`` or the
    wrong shape gets a 400, an exception in the model a 500, each with ``{"error": message}``.
    ``GET {path}`` answers the request counts. Nothing else is checked (that is the point:
    compare with :func:`~optkit.serve.parse_request`).

    ``start()`` binds a free port on 127.0.0.1 (or ``port``) and serves from a daemon thread;
    ``stop()`` shuts the server down and joins the thread. Use it as a context manager.

    Taught in 09_serving_batching_and_caching.
    """

    _thread_name = "optkit-naive-service"

    def __init__(self, fn: Callable[[np.ndarray], Any], *, input_shape: Sequence[int],
                 dtype: Any = "float32", path: str = "/predict", host: str = "127.0.0.1", port: int = 0):
        self.fn = check_callable("fn", fn, fix="pass a function from a batch array to outputs, "
                                               "e.g. serve.numpy_fn(model)")
        try:
            self.input_shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError):
            raise OptkitError("input_shape", input_shape, "is not a shape",
                              "pass the shape of one input, e.g. (1, 28, 28)") from None
        self.dtype = np.dtype(dtype)
        if not isinstance(path, str) or not path.startswith("/"):
            raise OptkitError("path", path, "must start with '/'", "pass e.g. '/predict'")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OptkitError("host", host, "is not a loopback address",
                              "the naive service is for local experiments: use '127.0.0.1'")
        self.path, self.host, self.port = path, host, int(port)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts = {"answered": 0, "failed": 0}

    # ------------------------------------------------------------------ the Flask app
    def _app(self) -> Any:
        try:
            import flask
        except ImportError:
            raise OptkitError("flask", None, "is not installed", "pip install 'optkit[serve]' (or flask)") from None
        app = flask.Flask("optkit_naive")

        @app.post(self.path)
        def predict() -> Any:
            try:
                payload = flask.request.get_json(force=True, silent=True)
                if not isinstance(payload, dict) or "inputs" not in payload:
                    raise ValueError('body must be JSON {"inputs": [...]}')
                x = np.asarray(payload["inputs"], dtype=self.dtype)
                if x.shape == self.input_shape:
                    x = x[None]
                if x.shape[1:] != self.input_shape:
                    raise ValueError(f"inputs have shape {list(x.shape)}; the model takes {list(self.input_shape)}")
            except (ValueError, TypeError) as exc:
                self._count("failed")
                return flask.jsonify(error=str(exc)[:300]), 400
            try:
                y = np.asarray(self.fn(x))
            except Exception as exc:  # noqa: BLE001 - the client hears of any model failure
                self._count("failed")
                return flask.jsonify(error=f"{type(exc).__name__}: {str(exc)[:300]}"), 500
            self._count("answered")
            return flask.jsonify(outputs=y.tolist())

        @app.get(self.path)
        def info() -> Any:
            s = self.stats()
            return flask.jsonify(received=s.received, answered=s.answered, failed=s.failed,
                                 input_shape=list(self.input_shape), dtype=self.dtype.name)

        return app

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "NaiveService":
        """Serve from a daemon thread (a no-op when already running); returns self."""
        if self._server is not None:
            return self
        import logging

        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access-log line per request
        self._serve(make_server(self.host, self.port, self._app(), threaded=False))
        return self

    def __repr__(self) -> str:
        state = f"running at {self.url}" if self.running else "stopped"
        return f"NaiveService({state}; {self.stats()})"
