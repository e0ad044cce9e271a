"""Serving a model: dynamic batching, a prediction cache, load tests, and Ray Serve.

- :class:`DynamicBatcher` queues single requests and runs them through any batched callable
  (PyTorch via :func:`numpy_fn`, an ONNX Runtime session, a LiteRT interpreter) in batches of up
  to ``max_batch_size``, or of whatever arrived within ``max_wait_s``. Each caller gets exactly
  its own result through a :class:`concurrent.futures.Future`. The queue is bounded
  (:class:`QueueFull` is the back-pressure), requests can time out (:class:`RequestTimeout`),
  an exception in the model reaches every caller of that batch, and :meth:`DynamicBatcher.close`
  drains or rejects what is queued, never drops it.
- :class:`PredictionCache` is a thread-safe LRU cache bounded by entries and by bytes, keyed by
  :func:`cache_key` (dtype, shape and content), with hit/miss statistics.
- :func:`run_load` / :func:`sweep_load` are a closed-loop load generator: N client threads send
  requests one after another and every request's latency and outcome is recorded and checked
  against the answer expected for *its* input. :func:`run_stream` feeds frames at a fixed rate.
- :func:`head_to_head` compares ways to serve in interleaved rounds; :func:`compare_cache` runs
  workloads with and without a cache; :func:`serving_table` lines up their Records.
- :class:`NaiveService` is the baseline: a Flask endpoint answering one request at a time
  (``threaded=False``), parsing JSON lists, counting what it received.
- :func:`ray_deployment` wraps an optkit artifact (``.onnx``, ``.pt2``, ``.tflite`` or a factory)
  in a Ray Serve deployment with ``@serve.batch`` behind HTTP, validating input at the edge
  (:func:`parse_request`); :class:`LocalServe` starts Ray and Serve on loopback and stops them;
  :class:`HttpClient` calls the endpoint.

Submodules, each owning one job (everything public is re-exported here, so ``serve.X`` works):

- :mod:`~optkit.serve.batching`: :class:`DynamicBatcher`, :class:`BatcherStats` and the serving
  errors (:class:`ServeError`, :class:`QueueFull`, :class:`RequestTimeout`, :class:`BatcherClosed`).
- :mod:`~optkit.serve.cache`: :func:`cache_key`, :class:`PredictionCache`, :class:`CacheStats`,
  :func:`cached`.
- :mod:`~optkit.serve.load`: :func:`run_load`, :func:`sweep_load`, :class:`LoadResult`,
  :func:`plot_latency_throughput`, :func:`cpu_by_process`, :func:`cpu_used`.
- :mod:`~optkit.serve.frames`: :func:`run_stream`, :class:`StreamResult`, :func:`run_streams`,
  :func:`plot_streams`.
- :mod:`~optkit.serve.experiments`: :func:`head_to_head` and :class:`HeadToHead` (interleaved load
  rounds, medians, ratios, CPU per request, Records), :func:`compare_cache`, :func:`serving_table`.
- :mod:`~optkit.serve.http_edge`: :func:`parse_request`, :class:`BadRequest`, :class:`HttpClient`,
  :class:`HttpError`, and the binary body format (:func:`encode_array`, :func:`decode_array`).
- :mod:`~optkit.serve.naive`: :class:`NaiveService`, :class:`NaiveStats`.
- :mod:`~optkit.serve.ray_deploy`: :func:`load_artifact`, :func:`ray_deployment`, :class:`LocalServe`.

:func:`numpy_fn` lives in :mod:`optkit.runtimes.formats` (beside the loaders that use it) and is
re-exported here, where 09 teaches it. Ray is imported only inside the functions that need it.
Taught in 09_serving_batching_and_caching.
"""
from __future__ import annotations

from optkit.runtimes.formats import numpy_fn
from optkit.serve.batching import BatcherClosed, BatcherStats, DynamicBatcher, QueueFull, RequestTimeout, ServeError
from optkit.serve.cache import CacheStats, PredictionCache, cache_key, cached
from optkit.serve.experiments import RAY_PROCESS_GROUPS, HeadToHead, compare_cache, head_to_head, serving_table
from optkit.serve.batching_http import SERVER_TIME_HEADER, BatchingService, HttpModel
from optkit.serve.frames import (STAGES, StreamResult, VideoStream, plot_stages, plot_streams, run_stream, run_streams,
                                 stream_video)
from optkit.serve.http_edge import BadRequest, HttpClient, HttpError, decode_array, encode_array, parse_request
from optkit.serve.load import (OUTCOMES, LoadResult, cpu_by_process, cpu_used, plot_latency_throughput, run_load,
                               sweep_load)
from optkit.serve.naive import NaiveService, NaiveStats
from optkit.serve.ray_deploy import LocalServe, load_artifact, ray_deployment
from optkit.serve import video

__all__ = [
    "ServeError",
    "QueueFull",
    "RequestTimeout",
    "BatcherClosed",
    "numpy_fn",
    "DynamicBatcher",
    "BatcherStats",
    "cache_key",
    "PredictionCache",
    "CacheStats",
    "cached",
    "LoadResult",
    "OUTCOMES",
    "run_load",
    "sweep_load",
    "plot_latency_throughput",
    "cpu_by_process",
    "cpu_used",
    "StreamResult",
    "run_stream",
    "run_streams",
    "plot_streams",
    "STAGES",
    "VideoStream",
    "stream_video",
    "plot_stages",
    "video",
    "BatchingService",
    "HttpModel",
    "SERVER_TIME_HEADER",
    "HeadToHead",
    "head_to_head",
    "RAY_PROCESS_GROUPS",
    "compare_cache",
    "serving_table",
    "BadRequest",
    "parse_request",
    "encode_array",
    "decode_array",
    "NaiveService",
    "NaiveStats",
    "load_artifact",
    "ray_deployment",
    "LocalServe",
    "HttpClient",
    "HttpError",
]
