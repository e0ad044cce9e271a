"""One result type for the whole course: a ``Record`` per model variant, saved as JSON.

Every recipe ends with a Record: the variant's name, the technique and runtime behind it, its
latency, throughput, size, accuracy and parity with the baseline, and the environment it was
measured on. Records round-trip through plain dicts and JSON files (written atomically, so an
interrupted notebook never leaves half a file), and turn into a pandas DataFrame for tables and
plots (see :mod:`optkit.core.report`).

Taught in 00_measure_first.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from optkit.core.errors import OptkitError, check_path_exists
from optkit.core.files import write_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from optkit.core.bench import Measurement

__all__ = ["Record", "save_records", "load_records", "to_frame", "jsonable", "FORMAT"]

FORMAT = "optkit.records/1"

# Fields holding one number or string: the columns of a table.
SCALAR_FIELDS = ("name", "technique", "runtime", "workload", "batch_size", "latency_ms", "p90_ms", "p99_ms",
                 "throughput", "size_bytes", "accuracy", "params", "macs", "notes", "p95_ms", "peak_mem_bytes")


@dataclass(repr=False)
class Record:
    """The measured facts about one model variant.

    Only ``name`` is required; anything not measured stays None. ``workload`` says what the
    variant was measured on (model, task, evaluation set, e.g. ``"ResNetCNN · Fashion-MNIST test"``):
    :mod:`optkit.core.report` computes ratios only between records of one workload and one batch size
    (None means "not stated" and matches anything). Units: latencies in ms,
    ``throughput`` in items/s, ``size_bytes`` in bytes, ``accuracy`` as a fraction in [0, 1],
    ``params`` and ``macs`` as counts, ``p95_ms`` the 95th percentile latency,
    ``peak_mem_bytes`` the peak resident memory one call added on top of the process (see
    :func:`optkit.core.variant.evaluate`). ``parity`` holds the comparison with the baseline's
    outputs (e.g. ``optkit.core.verify.Parity`` as a dict), ``env`` the machine it was measured on
    (``optkit.core.bench.environment()``, added by :meth:`with_env`; never collected implicitly),
    ``extra`` anything else worth keeping (JSON-serialisable).

    Taught in 00_measure_first.
    """

    name: str
    technique: str | None = None
    runtime: str | None = None
    workload: str | None = None
    batch_size: int | None = None
    latency_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    size_bytes: int | None = None
    accuracy: float | None = None
    params: int | None = None
    macs: int | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    notes: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    p95_ms: float | None = None
    peak_mem_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise OptkitError("name", self.name, "must be a non-empty string",
                              "name the variant, e.g. 'fp32 eager'")
        for key in ("parity", "env", "extra"):
            value = getattr(self, key)
            if value is None:
                setattr(self, key, {})
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                setattr(self, key, dataclasses.asdict(value))
            elif hasattr(value, "_asdict"):
                setattr(self, key, dict(value._asdict()))
            elif not isinstance(value, Mapping):
                raise OptkitError(key, value, "must be a dict",
                                  f"pass a dict (or leave {key} out)")

    # ----------------------------------------------------------------- conversions

    @classmethod
    def fields(cls) -> list[str]:
        """Names of all fields, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: numpy numbers become Python ones, NaN and inf become None."""
        return {name: jsonable(getattr(self, name)) for name in self.fields()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Record":
        """Rebuild a Record from :meth:`to_dict` output; unknown keys raise an OptkitError."""
        if not isinstance(data, Mapping):
            raise OptkitError("data", data, "must be a dict", "pass the output of Record.to_dict()")
        known = cls.fields()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OptkitError("data", unknown, "has keys a Record does not know",
                              "use only " + ", ".join(known) + " (put anything else in extra)")
        if "name" not in data:
            raise OptkitError("data", dict(data), "has no 'name'", "every record needs a name")
        return cls(**dict(data))

    @classmethod
    def from_measurement(cls, m: "Measurement", **kw: Any) -> "Record":
        """A Record filled from a :class:`optkit.core.bench.Measurement`; ``kw`` sets or overrides fields.

        Fills ``name`` (unless given), ``batch_size``, ``latency_ms`` (the median), ``p90_ms``, ``p95_ms``,
        ``p99_ms`` and ``throughput``, and puts the run count, the median's 95 % interval and the
        thread count in ``extra``.

        Taught in 00_measure_first.
        """
        for attr in ("median_ms", "p90_ms", "p99_ms", "throughput", "batch_size"):
            if not hasattr(m, attr):
                raise OptkitError("m", m, "is not a Measurement",
                                  "pass the result of optkit.core.bench.measure(...)")
        unknown = sorted(set(kw) - set(cls.fields()))
        if unknown:
            raise OptkitError(unknown[0], kw[unknown[0]], "is not a Record field",
                              "use one of " + ", ".join(cls.fields()))
        lo, hi = m.ci_median_ms
        extra = {"runs": int(m.n), "ci_median_ms": [lo, hi], "threads": m.threads}
        extra.update(kw.pop("extra", None) or {})
        values = {
            "name": m.name, "batch_size": int(m.batch_size), "latency_ms": m.median_ms,
            "p90_ms": m.p90_ms, "p95_ms": getattr(m, "p95_ms", None), "p99_ms": m.p99_ms, "throughput": m.throughput, "extra": extra,
        }
        values.update(kw)
        return cls(**values)

    def with_env(self, env: Mapping[str, Any] | None = None) -> "Record":
        """A copy with ``env`` set (by default to ``optkit.core.bench.environment()`` of this machine)."""
        if env is None:
            from optkit.core.bench import environment

            env = environment()
        return dataclasses.replace(self, env=dict(env))

    def replace(self, **changes: Any) -> "Record":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        parts = []
        if self.technique:
            parts.append(self.technique)
        if self.runtime:
            parts.append(self.runtime)
        if self.workload:
            parts.append(f"on {self.workload}")
        if self.batch_size is not None:
            parts.append(f"b{self.batch_size}")
        if _num(self.latency_ms):
            parts.append(f"{self.latency_ms:.3g} ms")
        if _num(self.throughput):
            parts.append(f"{self.throughput:.0f} items/s")
        if _num(self.size_bytes):
            parts.append(f"{self.size_bytes / 1e6:.3g} MB")
        if _num(self.accuracy):
            parts.append(f"acc {self.accuracy:.4g}")
        if _num(self.params):
            parts.append(f"{self.params:,} params")
        if self.parity:
            parts.append("parity " + ", ".join(
                f"{k}={_short_num(v)}" for k, v in list(self.parity.items())[:3]))
        body = ", ".join(parts)
        return f"Record({self.name!r}{': ' + body if body else ''})"


def _num(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _short_num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return repr(value)


def jsonable(value: Any, *, strict: bool = True) -> Any:
    """Convert numpy values, paths, tuples, dataclasses and non-finite floats into plain JSON values.

    NaN and infinity become ``None``; an object with a ``to_dict()`` is written as that dict.
    A value with no JSON form raises :class:`OptkitError` (``strict=True``, what records use, so
    nothing is silently mangled) or is written as ``str(value)`` (``strict=False``, for free-form
    ``info`` and report fields).
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, np.ndarray):
        return [jsonable(v, strict=strict) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v, strict=strict) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if callable(getattr(value, "to_dict", None)):
        return jsonable(value.to_dict(), strict=strict)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), strict=strict)
    if hasattr(value, "item") and callable(value.item):  # 0-d torch tensors
        try:
            return jsonable(value.item(), strict=strict)
        except (TypeError, ValueError, RuntimeError):
            pass
    if not strict:
        return str(value)
    raise OptkitError("record value", value, f"cannot be written as JSON ({type(value).__name__})",
                      "store plain numbers, strings, lists or dicts")



def _as_records(records: Any) -> list[Record]:
    if isinstance(records, Record):
        return [records]
    try:
        items = list(records)
    except TypeError:
        raise OptkitError("records", records, "is not a list of Records",
                          "pass a list of optkit.core.record.Record") from None
    for item in items:
        if not isinstance(item, Record):
            raise OptkitError("records", item, "holds something that is not a Record",
                              "build each entry with Record(...) or Record.from_measurement(...)")
    return items


def save_records(records: Iterable[Record] | Record, path: str | os.PathLike, *,
                 merge: bool = False) -> Path:
    """Write records to a JSON file atomically and return its path.

    The JSON is serialised completely first, written to a temp file in the same folder and
    moved over ``path`` with ``os.replace``, so readers see the old file or the new one, never a
    partial one. Missing parent folders are created. With ``merge=True`` an existing file is
    read first and records with the same name are replaced, others kept (handy when several
    notebooks add to one results file).

    Taught in 00_measure_first.
    """
    items = _as_records(records)
    path = Path(path).expanduser()
    if merge and path.exists():
        fresh = {r.name for r in items}
        items = [r for r in load_records(path) if r.name not in fresh] + items
    doc = {"format": FORMAT, "records": [r.to_dict() for r in items]}
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, text, overwrite=True)


def load_records(path: str | os.PathLike) -> list[Record]:
    """Read records written by :func:`save_records` (a bare JSON list of dicts also works).

    Taught in 00_measure_first.
    """
    path = check_path_exists("path", path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise OptkitError("path", str(path), f"is not valid JSON ({e.msg}, line {e.lineno})",
                          "pass a file written by save_records") from None
    if isinstance(doc, Mapping) and "records" in doc:
        rows = doc["records"]
    elif isinstance(doc, list):
        rows = doc
    else:
        raise OptkitError("path", str(path), "holds no list of records",
                          "pass a file written by save_records")
    return [Record.from_dict(row) for row in rows]


def _flat(prefix: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in mapping.items()
            if v is None or isinstance(v, (bool, int, float, str, np.generic))}


def to_frame(records: Iterable[Record] | Record) -> "pd.DataFrame":
    """A DataFrame with one row per record, in order.

    Columns: the scalar fields (name, technique, runtime, batch_size, latency_ms, p90_ms, p99_ms,
    throughput, size_bytes, accuracy, params, macs, notes, p95_ms, peak_mem_bytes), then scalar entries of ``parity``
    and ``extra`` as ``parity.<key>`` and ``extra.<key>``. ``env`` is left out (it is the same
    wide dict on every row); see :func:`optkit.core.bench.environment_line` to print it.

    Taught in 00_measure_first.
    """
    import pandas as pd

    rows = []
    for r in _as_records(records):
        row = {name: getattr(r, name) for name in SCALAR_FIELDS}
        row.update(_flat("parity", r.parity))
        row.update(_flat("extra", r.extra))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(SCALAR_FIELDS))
