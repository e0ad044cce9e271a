"""Artifacts behind Ray Serve: a model file loaded as a batched function, deployed over HTTP.

Owns :func:`load_artifact` (an ``.onnx``, ``.pt2`` or ``.tflite`` file, or a factory, as a
batched numpy function with its input shape and dtype), :func:`ray_deployment` (a Ray Serve
application with ``@serve.batch`` behind HTTP, input checked at the edge by
:func:`optkit.serve.http_edge.parse_request`) and :class:`LocalServe` (Ray and Serve on loopback,
started and stopped by you). Ray is imported only inside the functions that need it, so importing
this module stays light. Taught in 09_serving_batching_and_caching.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_int, check_range
from optkit.runtimes.formats import numpy_fn
from optkit.serve.http_edge import NPY, BadRequest, encode_array, parse_request

__all__ = ["load_artifact", "ray_deployment", "LocalServe"]


def load_artifact(artifact: Any, *, threads: int = 1) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                               tuple[int, ...] | None, str | None]:
    """Load an optkit artifact as a batched numpy function; return ``(fn, input_shape, dtype)``.

    ``.onnx``: an ONNX Runtime session with ``threads`` intra-op threads (shape and dtype read
    from the model); ``.pt2``: a ``torch.export`` program (this sets torch's thread count for the
    whole process, which a Serve replica owns); ``.tflite``: LiteRT via
    :class:`optkit.runtimes.tflow.LiteRT`; a callable: a zero-argument factory returning the model function
    (or a model :func:`numpy_fn` accepts). Shape and dtype are None where the file does not say.

    Taught in 09_serving_batching_and_caching.
    """
    from optkit.runtimes import formats

    threads = check_int("threads", threads, 1)
    if callable(artifact) and not isinstance(artifact, (str, Path)):
        return numpy_fn(artifact()), None, None
    path = Path(artifact)
    if not path.is_file():
        raise OptkitError("artifact", str(artifact), "is not a file",
                          "pass the path of a saved .onnx, .pt2 or .tflite model, or a factory function")
    fmt = formats.find(path)
    if fmt is None or fmt.key not in ("onnx", "torch_export", "tflite"):
        raise OptkitError("artifact", str(path), f"has the unsupported suffix {path.suffix.lower()!r}",
                          "pass a .onnx, .pt2 or .tflite file, or a factory function")
    return tuple(formats.load_runner(path, threads=threads))


def ray_deployment(artifact: Any, *, name: str = "optkit_model", input_shape: Sequence[int] | None = None,
                   dtype: str | None = None, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.005,
                   max_request_items: int = 64, max_body_bytes: int = 8 * 2**20, num_replicas: int | None = 1,
                   num_cpus: float = 1.0, threads: int = 1, autoscaling_config: Mapping[str, Any] | None = None,
                   max_ongoing_requests: int = 256) -> Any:
    """A Ray Serve application serving ``artifact`` over HTTP with ``@serve.batch``.

    ``artifact`` is anything :func:`load_artifact` takes (each replica loads it itself, so on a
    cluster the path must exist on every node, or pass a factory). POST ``{"inputs": [...]}``
    returns ``{"outputs": [...]}``; a POST whose content type is :data:`~optkit.serve.http_edge.NPY`
    carries ``.npy`` bytes both ways (no JSON); GET returns the model's input shape and dtype; Python code
    holding a ``DeploymentHandle`` can call ``handle.infer.remote(x)`` with one input array. Input is
    checked by :func:`parse_request` before it reaches the batch queue, so a bad request gets a
    4xx with a message and the replica keeps serving. Requests are batched by
    ``@serve.batch(max_batch_size, batch_wait_timeout_s)`` and the model runs in a thread, so the
    replica keeps accepting requests while a batch computes.

    Scaling: ``num_replicas`` copies, each reserving ``num_cpus`` of Ray's CPUs and running
    ``threads`` intra-op threads; or ``autoscaling_config`` (e.g. ``{"min_replicas": 1,
    "max_replicas": 4, "target_ongoing_requests": 32}``, with ``num_replicas=None``). On a
    Ray cluster the same application spreads replicas over its nodes. Returns the bound
    application for ``serve.run`` / :meth:`LocalServe.run`.

    Taught in 09_serving_batching_and_caching.
    """
    from ray import serve

    if not (callable(artifact) or Path(str(artifact)).is_file()):
        raise OptkitError("artifact", str(artifact), "is not a file or a factory",
                          "pass the path of a saved .onnx/.pt2/.tflite model, or a function returning a model")
    max_batch_size = check_int("max_batch_size", max_batch_size, 1)
    batch_wait = float(check_range("batch_wait_timeout_s", batch_wait_timeout_s, 0, math.inf, high_open=True))
    max_request_items = check_int("max_request_items", max_request_items, 1)
    threads = check_int("threads", threads, 1)
    if autoscaling_config is not None and num_replicas not in (None, "auto"):
        raise OptkitError("num_replicas", num_replicas, "is set together with autoscaling_config",
                          "pass num_replicas=None when autoscaling")
    if autoscaling_config is None:
        num_replicas = check_int("num_replicas", num_replicas, 1)

    model_class = _replica_class(serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait),
                                 threads=threads, max_request_items=max_request_items,
                                 max_body_bytes=max_body_bytes)
    options: dict[str, Any] = {"name": name, "ray_actor_options": {"num_cpus": float(num_cpus)},
                               "max_ongoing_requests": check_int("max_ongoing_requests", max_ongoing_requests, 1)}
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    else:
        options["num_replicas"] = num_replicas
    deployment = serve.deployment(model_class, **options)
    return deployment.bind(artifact, None if input_shape is None else tuple(input_shape), dtype)


def _replica_class(batch: Callable[[Any], Any], *, threads: int, max_request_items: int,
                   max_body_bytes: int) -> type:
    """The class each Serve replica runs: load the artifact, answer HTTP and handle calls, batch with ``batch``.

    ``batch`` is ``serve.batch(max_batch_size=..., batch_wait_timeout_s=...)``, the decorator that
    turns ``predict`` into a batched method.
    """

    class OptkitModel:
        def __init__(self, artifact: Any, input_shape: Any, dtype: Any):
            self._fn, found_shape, found_dtype = load_artifact(artifact, threads=threads)
            shape = input_shape if input_shape is not None else found_shape
            if shape is None:
                raise OptkitError("input_shape", None, "is not recorded in the artifact",
                                  "pass input_shape=(C, H, W) to ray_deployment")
            self.input_shape = tuple(int(s) for s in shape)
            self.dtype = np.dtype(dtype or found_dtype or "float32")

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import JSONResponse, Response

            if request.method == "GET":
                return JSONResponse({"input_shape": list(self.input_shape), "dtype": self.dtype.name,
                                     "max_request_items": max_request_items})
            content_type = request.headers.get("content-type", "application/json")
            try:
                x = parse_request(await request.body(), input_shape=self.input_shape, dtype=self.dtype,
                                  max_items=max_request_items, max_body_bytes=max_body_bytes,
                                  content_type=content_type)
            except BadRequest as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            y = await self.predict(x)
            if content_type.startswith(NPY):
                return Response(encode_array(np.asarray(y)), media_type=NPY)
            return JSONResponse({"outputs": np.asarray(y).tolist()})

        async def infer(self, x: np.ndarray) -> np.ndarray:
            """The same batched model for Python callers of a DeploymentHandle (no HTTP, no JSON)."""
            return (await self.predict(np.asarray(x, dtype=self.dtype)[None]))[0]

        @batch
        async def predict(self, xs: list[np.ndarray]) -> list[np.ndarray]:
            import asyncio

            sizes = np.cumsum([len(x) for x in xs])[:-1]
            out = await asyncio.to_thread(self._fn, np.concatenate(xs))
            return np.split(np.asarray(out), sizes)

    OptkitModel.__name__ = OptkitModel.__qualname__ = "OptkitModel"
    return OptkitModel


def _quiet_filter(record: Any) -> bool:
    """Let only errors through (a logging filter for Ray Serve's driver-side logger)."""
    return record.levelno >= 40


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalServe:
    """Ray and Ray Serve on this machine, bound to loopback, started and stopped by you.

    ``with LocalServe(num_cpus=2) as cluster:`` starts a local Ray instance (no dashboard,
    worker logs kept out of the notebook) and Serve's HTTP proxy on ``127.0.0.1:port`` (a free
    port by default); :meth:`run` deploys an application and returns its URL; leaving the block
    (or :meth:`shutdown`) stops Serve and Ray. With ``quiet=True`` Ray's own log lines go to its
    log files under the session folder instead of the terminal. Ray gives a node 30 s to come up;
    on a machine busy enough to miss that, start is tried ``start_attempts`` times.

    Taught in 09_serving_batching_and_caching.
    """

    def __init__(self, *, num_cpus: int = 2, port: int | None = None, quiet: bool = True, start_attempts: int = 2):
        self.num_cpus = check_int("num_cpus", num_cpus, 1)
        self.start_attempts = check_int("start_attempts", start_attempts, 1)
        self.host = "127.0.0.1"
        self.port = _free_port(self.host) if port is None else check_int("port", port, 1)
        self.quiet = bool(quiet)
        self.started = False
        self.startup_s: float | None = None
        self.shutdown_output = ""

    def start(self) -> "LocalServe":
        """Start Ray and Serve (a no-op when already started); returns self."""
        if self.started:
            return self
        import logging

        t0 = time.perf_counter()
        import ray
        from ray import serve

        if ray.is_initialized():
            raise OptkitError("ray", "already initialized", "another Ray instance is running in this process",
                              "call ray.shutdown() first, or use the running instance directly")
        if self.quiet:  # Serve's driver-side logger prints INFO lines (set up when ray.serve is imported)
            logging.getLogger("ray.serve").addFilter(_quiet_filter)
        for attempt in range(self.start_attempts):
            try:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=not self.quiet,
                         logging_level=logging.ERROR if self.quiet else logging.INFO,
                         _node_ip_address=self.host)
                break
            except Exception as exc:  # noqa: BLE001 - Ray gives up after 30 s on an overloaded machine
                ray.shutdown()
                if "timed out during startup" not in str(exc) or attempt == self.start_attempts - 1:
                    raise
        try:
            serve.start(http_options={"host": self.host, "port": self.port},
                        logging_config={"log_level": "ERROR" if self.quiet else "INFO"})
        except BaseException:
            ray.shutdown()
            raise
        self.started = True
        self.startup_s = time.perf_counter() - t0
        return self

    def url(self, route_prefix: str = "/predict") -> str:
        """The HTTP address of a route on this machine's Serve proxy."""
        return f"http://{self.host}:{self.port}{route_prefix}"

    def run(self, app: Any, *, name: str = "optkit", route_prefix: str = "/predict") -> str:
        """Deploy ``app`` (e.g. from :func:`ray_deployment`) under ``route_prefix``; return its URL once ready."""
        if not self.started:
            self.start()
        from ray import serve

        serve.run(app, name=name, route_prefix=route_prefix,
                  logging_config={"log_level": "ERROR" if self.quiet else "INFO"})
        return self.url(route_prefix)

    def handle_call(self, name: str = "optkit", method: str = "infer") -> Callable[[Any], Any]:
        """A function ``x -> output row`` calling application ``name`` through a ``DeploymentHandle``.

        Python code in the same Ray cluster can skip HTTP: ``handle.infer.remote(x).result()``
        sends the array to the replica as a Ray object (no proxy, no JSON) and waits for its
        row. Safe to call from many threads at once, as a load test's clients do.
        """
        from ray import serve

        handle = serve.get_app_handle(name)
        bound = getattr(handle, method)

        def call(x: Any) -> Any:
            return bound.remote(np.asarray(x)).result()

        call.__name__ = f"handle.{method}"
        return call

    def replicas(self, name: str = "optkit") -> dict[str, int]:
        """Running replicas per deployment of application ``name``."""
        from ray import serve

        app = serve.status().applications.get(name)
        if app is None:
            return {}
        return {dep: int(info.replica_states.get("RUNNING", 0)) for dep, info in app.deployments.items()}

    def delete(self, name: str = "optkit") -> None:
        """Remove application ``name`` (its replicas stop)."""
        from ray import serve

        serve.delete(name)

    def shutdown(self) -> None:
        """Stop Serve and Ray (harmless when not started).

        With ``quiet=True``, what Ray prints while it stops (e.g. that the Serve controller's
        pending tasks died with it) is kept in :attr:`shutdown_output` instead of printed.
        """
        if not self.started:
            return
        import contextlib
        import io
        import logging

        import ray
        from ray import serve

        sink = io.StringIO()
        stdout = contextlib.redirect_stdout(sink) if self.quiet else contextlib.nullcontext()
        stderr = contextlib.redirect_stderr(sink) if self.quiet else contextlib.nullcontext()
        try:
            with stdout, stderr:
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            self.started = False
            self.shutdown_output = sink.getvalue()
            logging.getLogger("ray.serve").removeFilter(_quiet_filter)

    def __enter__(self) -> "LocalServe":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "running" if self.started else "stopped"
        return f"LocalServe({state}, {self.num_cpus} CPUs, http://{self.host}:{self.port})"
