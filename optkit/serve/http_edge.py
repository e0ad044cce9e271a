"""The HTTP edge: requests checked before they reach a model, and a client that calls one.

Owns :func:`parse_request` (a JSON or binary body turned into a batch array, or refused with
:class:`BadRequest` and a 4xx status and message), the binary body format (:func:`encode_array`,
:func:`decode_array`: NumPy's ``.npy`` bytes, content type :data:`NPY`), and :class:`HttpClient`
(one keep-alive connection per thread, JSON or binary; a non-200 answer raises :class:`HttpError`). Used by the Ray Serve
deployment in :mod:`optkit.serve.ray_deploy` and by load tests against it. Taught in
09_serving_batching_and_caching.
"""
from __future__ import annotations

import http.client
import io
import json
import math
import threading
import urllib.parse
from typing import Any, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_range
from optkit.serve.batching import ServeError

__all__ = ["BadRequest", "parse_request", "NPY", "encode_array", "decode_array", "HttpError", "HttpClient"]

#: Content type of a binary body: one array in NumPy's ``.npy`` format (dtype and shape in its header).
NPY = "application/x-npy"


class BadRequest(ServeError):
    """A request the server refuses, with the HTTP status (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        self.status = int(status)
        self.message = message
        super().__init__(f"{status}: {message}")


def encode_array(x: Any) -> bytes:
    """One array as ``.npy`` bytes (dtype, shape and the raw values; no pickle): a binary HTTP body.

    Taught in 09_serving_batching_and_caching.
    """
    buf = io.BytesIO()
    np.save(buf, np.asarray(x), allow_pickle=False)
    return buf.getvalue()


def decode_array(body: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes written by :func:`encode_array`; :class:`BadRequest` (400) otherwise.

    Taught in 09_serving_batching_and_caching.
    """
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequest(400, f"body is not a .npy array ({str(exc)[:120]})") from None


def parse_request(body: bytes | str, *, input_shape: Sequence[int], dtype: Any = "float32",
                  max_items: int = 64, max_body_bytes: int = 8 * 2**20,
                  content_type: str = "application/json") -> np.ndarray:
    """Turn an HTTP body into a batch array ``(n, *input_shape)``, or raise :class:`BadRequest`.

    The body is JSON, ``{"inputs": [...]}`` holding one input of ``input_shape`` or a list of
    them, optionally with ``"dtype"`` (which must be the model's); or, with ``content_type``
    :data:`NPY`, one array in ``.npy`` bytes (:func:`encode_array`), which skips writing and
    parsing every number as text. Refused, each with a message: a body over ``max_body_bytes``
    or more than ``max_items`` inputs (413), malformed JSON or ``.npy``, or no ``inputs`` (400),
    ragged or non-numeric values, NaN/inf, a wrong shape or dtype (422).

    Taught in 09_serving_batching_and_caching.
    """
    shape = tuple(int(s) for s in input_shape)
    want = np.dtype(dtype)
    if len(body) > max_body_bytes:
        raise BadRequest(413, f"body of {len(body):,} bytes exceeds the limit of {max_body_bytes:,}")
    if content_type.split(";")[0].strip().lower() == NPY:
        x = decode_array(body.encode() if isinstance(body, str) else body)
    else:
        x = _json_inputs(body, want)
    if x.dtype.kind not in "biuf":
        raise BadRequest(422, f"inputs must be numbers (got {x.dtype.kind!r} values such as strings or nulls)")
    if x.shape == shape:
        x = x[None]
    elif x.shape[1:] != shape:
        raise BadRequest(422, f"inputs have shape {list(x.shape)}; the model takes {list(shape)} "
                              f"or a list of them [n, {', '.join(map(str, shape))}]")
    if len(x) == 0:
        raise BadRequest(422, "inputs is an empty list; send at least one input")
    if len(x) > max_items:
        raise BadRequest(413, f"{len(x)} inputs in one request exceed max_request_items={max_items}; "
                              "split the batch")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise BadRequest(422, "inputs contain NaN or infinity")
    if not np.can_cast(x.dtype, want, casting="same_kind"):
        raise BadRequest(422, f"inputs are {x.dtype.name} values; the model takes {want.name}")
    return x.astype(want, copy=False)


def _json_inputs(body: bytes | str, want: np.dtype) -> np.ndarray:
    """The ``inputs`` of a JSON body as an array (its declared dtype checked), or :class:`BadRequest`."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest(400, 'body must be a JSON object {"inputs": [...]}')
    given = payload.get("dtype")
    if given is not None:
        try:
            given_dtype = np.dtype(str(given))
        except TypeError:
            raise BadRequest(422, f"dtype {given!r} is not a dtype name; this model takes {want.name}") from None
        if given_dtype != want:
            raise BadRequest(422, f"dtype {given_dtype.name} does not match the model's {want.name}")
    try:
        return np.asarray(payload["inputs"])
    except ValueError:
        raise BadRequest(422, "inputs are ragged: every input must have the same nested shape") from None


class HttpError(ServeError):
    """A non-200 answer from the server: ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str):
        self.status = int(status)
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


class HttpClient:
    """Calls a model endpoint over HTTP: ``client(x)`` sends one input, returns its output row.

    Each thread keeps its own keep-alive connection (``http.client``), so a load test's clients
    do not share a socket. ``client(x)`` posts ``{"inputs": x}`` and returns ``outputs[0]`` as an
    array; with ``binary=True`` it posts ``x`` as ``.npy`` bytes (content type :data:`NPY`) and
    reads the answer the same way, where the server speaks it (:func:`~optkit.serve.ray_deployment`
    does). :meth:`post` sends any body and returns ``(status, answer)``.
    Non-200 answers raise :class:`HttpError` with the server's message.

    Taught in 09_serving_batching_and_caching.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0, binary: bool = False):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise OptkitError("url", url, "is not an http:// URL", "pass e.g. 'http://127.0.0.1:8000/predict'")
        self.url = url
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.timeout_s = float(check_range("timeout_s", timeout_s, 0, math.inf, low_open=True, high_open=True))
        self.binary = bool(binary)
        self._local = threading.local()
        self.__name__ = "http binary" if self.binary else "http"

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def post(self, body: bytes | str | Any, *, content_type: str = "application/json",
             method: str = "POST") -> tuple[int, Any]:
        """Send ``body`` (bytes/str as they are, anything else as JSON); return (status, answer).

        The answer is the parsed JSON, the array of an :data:`NPY` answer, or the text."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):  # a kept-alive socket the server closed: reconnect once
            conn = self._conn()
            try:
                conn.request(method, self.path, body=body if method == "POST" else None,
                             headers={"Content-Type": content_type})
                resp = conn.getresponse()
                data = resp.read()
                answer_type = resp.getheader("Content-Type", "")
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        if answer_type.startswith(NPY):
            try:
                return resp.status, decode_array(data)
            except BadRequest as exc:
                return resp.status, exc.message
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode(errors="replace")
        return resp.status, parsed

    def __call__(self, x: Any) -> np.ndarray:
        if self.binary:
            status, payload = self.post(encode_array(x), content_type=NPY)
            if status == 200 and isinstance(payload, np.ndarray):
                return payload[0]
        else:
            status, payload = self.post({"inputs": np.asarray(x).tolist()})
        if status != 200:
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            raise HttpError(status, str(message)[:500])
        return np.asarray(payload["outputs"][0], dtype=np.float32)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"HttpClient({self.url!r}{', binary=True' if self.binary else ''})"
