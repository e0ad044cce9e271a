"""LiteRT variants for :func:`optkit.core.variant.evaluate`: one per thread count, the faster kept, gzip sizes.

LiteRT's ``num_threads`` is a property of the interpreter, and at batch 1 a second thread can be
faster or slower from one run to the next on a small machine. :func:`thread_variants` makes one
:class:`~optkit.core.variant.Variant` per thread count of one ``.tflite`` file, so ``evaluate``
verifies and times them all in one interleaved run; :func:`fastest_threads` then keeps each
model's faster thread count (named as the model, the count in ``extra["num_threads"]``), and
:func:`add_gzip_sizes` adds the gzipped size of each record's artifact (what pruning and
clustering buy) to ``extra`` for ``report.table(..., extra=["gzip_mb", "gzip_ratio"])``.

Importing this module does not import TensorFlow.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from optkit.core.errors import OptkitError, check_int
from optkit.core.record import Record, _as_records
from optkit.core.variant import Variant
from optkit.runtimes.tflow.lite import LiteRT
from optkit.runtimes.tflow.models import artifact_sizes

__all__ = ["thread_variants", "fastest_threads", "add_gzip_sizes"]


def _suffix(threads: int) -> str:
    return f" / {threads} thr"


def thread_variants(name: str, model: LiteRT | str | os.PathLike, threads: Sequence[int], *,
                    technique: str, precision: str = "fp32", config: Mapping[str, Any] | None = None,
                    inputs: Mapping[int, Any] | None = None, notes: str | None = None) -> list[Variant]:
    """One :class:`~optkit.core.variant.Variant` per LiteRT thread count of one ``.tflite`` model.

    ``model`` is a :class:`LiteRT` runner or the file's path; each variant gets its own runner
    with ``num_threads=t``, the name ``"{name} / {t} thr"``, ``config`` plus ``{"num_threads": t}``,
    runtime ``"LiteRT"``, the file as ``artifact`` and its size. Pass them all to
    ``variant.evaluate``, then :func:`fastest_threads` to keep each model's faster count.

    Taught in 07_tensorflow_and_tflite.
    """
    path = model.path if isinstance(model, LiteRT) else Path(model)
    counts = list(dict.fromkeys(check_int("threads", t, 1) for t in threads))
    if not counts:
        raise OptkitError("threads", threads, "holds no thread count", "pass e.g. [1, 2]")
    variants = []
    for t in counts:
        runner = LiteRT(path, num_threads=t)
        variants.append(Variant(f"{name}{_suffix(t)}", runner, technique=technique, runtime="LiteRT",
                                precision=precision, config={**dict(config or {}), "num_threads": t},
                                artifact=path, size_bytes=runner.size_bytes, inputs=inputs, notes=notes))
    return variants


def _model_name(r: Record) -> tuple[str, int | None]:
    """The model a record measures (its name without the thread suffix) and its thread count."""
    threads = (r.extra.get("config") or {}).get("num_threads")
    if threads is not None and r.name.endswith(_suffix(threads)):
        return r.name[: -len(_suffix(threads))], threads
    return r.name, threads


def fastest_threads(records: Iterable[Record]) -> list[Record]:
    """Of each model's records at several thread counts, keep the fastest, named as the model.

    Records are grouped by workload, batch size and model name (the name
    :func:`thread_variants` was given); in each group the record with the lowest median latency
    is kept, renamed to the model's name, with its thread count in ``extra["num_threads"]`` (also
    set for records of other variants whose ``config`` names ``num_threads``). Records without a
    latency are kept only where no timed one exists. Order: first appearance of each model.

    Taught in 07_tensorflow_and_tflite.
    """
    best: dict[tuple, Record] = {}
    for r in _as_records(records):
        name, threads = _model_name(r)
        key = (r.workload, r.batch_size, name)
        kept = best.get(key)
        if kept is None or (r.latency_ms is not None and (kept.latency_ms is None or r.latency_ms < kept.latency_ms)):
            best[key] = dataclasses.replace(r, name=name, extra={**r.extra, "num_threads": threads})
    return list(best.values())


def add_gzip_sizes(records: Iterable[Record], relative_to: str | None = None) -> list[Record]:
    """Add the gzipped size of each record's artifact to its ``extra``, in place; return the records.

    ``extra["gzip_bytes"]`` and ``extra["gzip_mb"]`` come from the file or folder in
    ``extra["artifact"]`` (what ``variant.evaluate`` stores from ``Variant.artifact``), compressed
    at level 9 (:func:`artifact_sizes`); records without an artifact are left alone. With
    ``relative_to`` (a record's name), ``extra["gzip_ratio"]`` = that record's gzipped size / this
    one's (above 1: smaller to download), within the same workload.

    Taught in 07_tensorflow_and_tflite.
    """
    items = _as_records(records)
    cache: dict[str, int] = {}
    for r in items:
        artifact = r.extra.get("artifact")
        if artifact is None:
            continue
        if artifact not in cache:
            cache[artifact] = artifact_sizes(artifact)[1]
        r.extra.update(gzip_bytes=cache[artifact], gzip_mb=cache[artifact] / 1e6)
    if relative_to is None:
        return items
    refs = {r.workload: r.extra.get("gzip_bytes") for r in items if r.name == relative_to}
    if not refs:
        raise OptkitError("relative_to", relative_to, "is not the name of any record",
                          "use one of " + ", ".join(dict.fromkeys(repr(r.name) for r in items)))
    if any(gz is None for gz in refs.values()):
        raise OptkitError("relative_to", relative_to, "has no artifact to gzip",
                          "give its Variant an artifact=path, or choose another record")
    for r in items:
        ref, own = refs.get(r.workload), r.extra.get("gzip_bytes")
        if ref is not None and own:
            r.extra["gzip_ratio"] = ref / own
    return items
