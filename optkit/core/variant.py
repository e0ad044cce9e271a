"""One variant type and one measurement path: model + data → variants → :func:`evaluate` → Records.

A :class:`Variant` is a version of a model you could ship: what it is (name, technique, the exact
configuration applied, runtime, precision), what it costs (artifact, size), and how to call it
(``predict``, a batch in, outputs out). A :class:`Workload` says what every variant of one
comparison is measured on (the model, the task and the evaluation set); ratios between variants
only mean something inside one workload and one batch size, and :mod:`optkit.core.report`
refuses them across.

:func:`evaluate` is the one path every comparison takes, in the notebooks' closing tables and in
the capstone alike:

1. **accuracy** on the workload's real labelled data (:func:`optkit.core.verify.accuracy`);
2. **parity** with the reference variant's outputs on the same data (max error, SQNR, top-1
   agreement: :func:`optkit.core.verify.compare_outputs`);
3. **latency**, every variant timed *interleaved* in one :func:`optkit.core.bench.compare` per batch
   size, so a drifting machine hits all of them alike;
4. one :class:`~optkit.core.record.Record` per variant and batch size, ready for
   ``report.tables(records)`` (one table per batch size, each against its fastest float variant).

Framework-free at import: a variant's ``predict`` may be a torch module, an ONNX Runtime runner or a
TFLite interpreter; outputs are converted to numpy by :mod:`optkit.core.verify`.

Taught in 00_measure_first; every notebook's closing table and ``optkit optimize`` use it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from optkit.core import bench, progress, verify
from optkit.core.errors import OptkitError, check_choice, check_int
from optkit.core.record import Record, jsonable

__all__ = ["Workload", "Variant", "evaluate", "floats", "FLOAT_PRECISIONS", "PRECISIONS"]

FLOAT_PRECISIONS = ("fp32", "bf16", "fp16", "mixed")
PRECISIONS = FLOAT_PRECISIONS + ("int8", "int4", "int8-dynamic", "int8-weight-only")


@dataclass(frozen=True)
class Workload:
    """What a comparison is measured on: ``model`` (the architecture and its weights), ``task`` and
    ``eval_set`` (the labelled data accuracy comes from).

    ``str(workload)`` is the label stored in each Record's ``workload`` field and printed above
    each table, e.g. ``"ResNetCNN · Fashion-MNIST test (2,000)"``.
    """

    model: str
    task: str
    eval_set: str

    def __post_init__(self) -> None:
        for key in ("model", "task", "eval_set"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise OptkitError(key, value, "must be a non-empty string",
                                  "describe the workload, e.g. Workload('ResNetCNN', 'Fashion-MNIST "
                                  "classification', 'Fashion-MNIST test (2,000)')")

    def __str__(self) -> str:
        return f"{self.model} · {self.eval_set}"


@dataclass(repr=False)
class Variant:
    """One version of a model: what it is, what it costs, how to call it.

    - ``name``: unique within a comparison (``"int8 PT2E"``);
    - ``predict``: a callable from one input batch to outputs (logits), e.g. the module itself,
      ``lambda x: session.run(None, {"x": x})[0]`` or a ``LiteRT`` runner;
    - ``technique`` and ``config``: the change applied and its exact settings (``{"per_channel":
      True, "calibration_batches": 8}``), so a table row can be reproduced;
    - ``runtime``: what executes it (``"pytorch eager"``, ``"torch.compile"``, ``"onnxruntime"``,
      ``"tflite"``); ``precision``: ``"fp32"``, ``"bf16"``, ``"int8"`` ... (one of :data:`PRECISIONS`);
      a float precision makes the variant a candidate baseline;
    - ``artifact`` and ``size_bytes``: the file it was saved to and its size (or the in-memory
      state-dict size from :func:`optkit.core.sizes.model_size`); ``params``, ``macs`` if known;
    - ``inputs``: optional ``batch_size -> batch`` to time it with, when it needs inputs in another
      form than the others (numpy for ONNX Runtime, torch for PyTorch); ``evaluate``'s ``inputs``
      are used otherwise;
    - ``notes``: what a reader needs (``"falls back to fp32 on this CPU: no AVX512-BF16"``), one
      string or a list of sentences.
    """

    name: str
    predict: Callable[[Any], Any]
    technique: str = "baseline"
    config: dict[str, Any] = field(default_factory=dict)
    runtime: str = "pytorch eager"
    precision: str = "fp32"
    artifact: str | Path | None = None
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    inputs: Mapping[int, Any] | None = None
    notes: str | list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise OptkitError("name", self.name, "must be a non-empty string", "name the variant, e.g. 'int8 PT2E'")
        if not callable(self.predict):
            raise OptkitError("predict", self.predict, f"of variant {self.name!r} is not callable",
                              "pass a function from an input batch to outputs, e.g. the model itself")
        check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.config, Mapping):
            raise OptkitError("config", self.config, "must be a dict", "pass the settings applied, e.g. {'bits': 8}")
        self.config = dict(self.config)

    @property
    def is_float(self) -> bool:
        """True for float precisions (fp32, bf16, fp16, mixed): the candidates for a table's baseline."""
        return self.precision in FLOAT_PRECISIONS

    def replace(self, **changes: Any) -> "Variant":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        parts = [self.technique, self.runtime, self.precision]
        if self.config:
            parts.append(", ".join(f"{k}={v}" for k, v in self.config.items()))
        if self.size_bytes is not None:
            parts.append(f"{self.size_bytes / 1e6:.3g} MB")
        if self.artifact is not None:
            parts.append(f"artifact {Path(self.artifact).name}")
        return f"Variant({self.name!r}: {'; '.join(parts)})"


def _check_variants(variants: Any) -> list[Variant]:
    items = list(variants.values()) if isinstance(variants, Mapping) else list(variants or [])
    if not items:
        raise OptkitError("variants", variants, "holds no variant", "pass a list of Variant(...)")
    names = set()
    for v in items:
        if not isinstance(v, Variant):
            raise OptkitError("variants", v, "holds something that is not a Variant",
                              "wrap each model as Variant(name, predict, technique=..., runtime=...)")
        if v.name in names:
            raise OptkitError("variants", v.name, "names two variants", "give every variant its own name")
        names.add(v.name)
    return items


def _labelled(data: Any) -> tuple[Any, np.ndarray | None]:
    """``(x, y)`` from an ``(x, y)`` pair or anything with ``.x`` and ``.y`` (an optkit Split).

    ``y`` may be None (no labels: parity and latency only); ``x`` may be a dict of named inputs.
    """
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise OptkitError("data", type(data).__name__, "is not evaluation data",
                          "pass an (x, y) pair (y may be None without labels) or a split with .x and .y (ds.test)")
    return x, (None if y is None else np.asarray(y))


def _outputs(variant: Variant, x: Any, batch_size: int, convert: Callable[[Any], Any] | None) -> list[np.ndarray]:
    return verify.predict_all(variant.predict, x, batch_size=batch_size, convert=convert, all_outputs=True)


def _input_for(variant: Variant, inputs: Mapping[int, Any], batch_size: int) -> Any:
    source = variant.inputs if variant.inputs is not None else inputs
    if batch_size not in source:
        raise OptkitError("inputs", sorted(source), f"has no batch of size {batch_size} for {variant.name!r}",
                          f"pass inputs={{{batch_size}: a batch of {batch_size}, ...}}")
    return source[batch_size]


def evaluate(variants: Sequence[Variant] | Mapping[str, Variant], workload: Workload, *,
             data: Any, inputs: Mapping[int, Any], reference: str | None = None,
             convert: Mapping[str, Callable[[Any], Any]] | Callable[[Any], Any] | None = None,
             eval_batch_size: int = 256, max_time_s: float = 2.0, rounds: int = 5,
             threads: int | None = None, env: Mapping[str, Any] | None = None,
             progress: bool = True, outputs: Mapping[str, Sequence[Any]] | None = None,
             warmup: int = 5, min_repeats: int = 10, max_repeats: int = 200,
             sync: Callable[[], Any] | None = None, memory: bool = True) -> list[Record]:
    """Verify every variant against a reference, time them interleaved, return their Records.

    - ``data``: the workload's evaluation data (an ``(x, y)`` pair or a split with ``.x``/``.y``;
      ``x`` may be a dict of named inputs); accuracy (on the first output; None when ``y`` is None)
      and parity (every output) are computed on it, ``eval_batch_size`` rows at a time.
    - ``inputs``: ``{batch_size: batch}`` to time with (random inputs are fine for latency; a
      variant's own ``inputs`` take precedence). One interleaved comparison per batch size.
    - ``reference``: the variant whose outputs the others are compared with (default: the first).
    - ``convert``: how to turn a slice of ``data.x`` into what a variant's ``predict`` takes (e.g.
      ``torch.from_numpy``); one callable for all, or a dict by variant name. Default: unchanged.
    - ``env``: the machine description stored with each record (default ``bench.environment()``).
    - ``outputs``: ``{variant name: [output arrays on data.x]}`` already computed (e.g. by a
      verification step that ran them); those variants are not run on the data again.
    - ``warmup``, ``min_repeats``, ``max_repeats``, ``rounds``, ``max_time_s`` and ``sync`` (e.g.
      ``torch.cuda.synchronize``, so GPU work is timed to its end): passed to
      :func:`optkit.core.bench.compare`.
    - ``memory``: after timing, call each variant once more per batch size under
      :func:`optkit.core.bench.call_memory` and store the resident memory that call added in
      ``peak_mem_bytes`` (the ``peak_mem_mb`` column). It counts the call's activations and
      workspaces, not the weights already loaded nor memory a runtime keeps pooled between calls
      (ONNX Runtime's arena), so read it as "what one more request of this size costs".

    Returns one Record per variant and batch size, with ``workload=str(workload)``, accuracy,
    parity (``top1_agreement``, ``sqnr_db``, ``max_abs`` ...), size, params, MACs, and the
    variant's configuration, precision and artifact in ``extra``. Make the closing table with
    ``report.tables(records)``.

    Taught in 00_measure_first.
    """
    items = _check_variants(variants)
    if not isinstance(workload, Workload):
        raise OptkitError("workload", workload, "is not a Workload",
                          "pass Workload(model=..., task=..., eval_set=...)")
    if not isinstance(inputs, Mapping) or not inputs:
        raise OptkitError("inputs", inputs, "must be a dict batch_size -> input batch",
                          "pass e.g. {1: x[:1], 32: x[:32]}")
    batch_sizes = sorted(check_int("inputs batch size", b, 1) for b in inputs)
    check_int("eval_batch_size", eval_batch_size, 1)
    names = [v.name for v in items]
    ref_name = names[0] if reference is None else check_choice("reference", reference, names)
    x, y = _labelled(data)
    conv = {v.name: (convert.get(v.name) if isinstance(convert, Mapping) else convert) for v in items}

    bar = _progress(len(items) + len(batch_sizes), progress)
    given = dict(outputs or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise OptkitError("outputs", unknown, "names no variant", "key outputs by variant name")
    results: dict[str, list[np.ndarray]] = {}
    for v in items:
        bar.set_description(f"evaluating {v.name}")
        results[v.name] = ([np.asarray(o) for o in given[v.name]] if v.name in given
                           else _outputs(v, x, eval_batch_size, conv[v.name]))
        bar.update(1)
    timings = {}
    for bs in batch_sizes:
        bar.set_description(f"timing batch {bs}")
        fns = {v.name: _timed_call(v.predict, _input_for(v, inputs, bs)) for v in items}
        with verify.no_autograd():  # one context around the whole comparison, not one per call
            timings[bs] = bench.compare(fns, batch_size=bs, max_time_s=max_time_s, rounds=rounds, threads=threads,
                                        warmup=warmup, min_repeats=min_repeats, max_repeats=max_repeats, sync=sync)
        bar.update(1)
    peaks = _peak_memory(items, inputs, batch_sizes) if memory else {}
    bar.close()

    env = dict(env) if env is not None else bench.environment()
    records = []
    for v in items:
        acc = None if y is None else verify.accuracy(results[v.name][0], y)  # the first output holds the scores
        parity = verify.compare_outputs(results[ref_name], results[v.name]).to_dict()
        extra = {"precision": v.precision, "config": jsonable(v.config, strict=False), "reference": ref_name}
        if v.artifact is not None:
            extra["artifact"] = str(v.artifact)
        for bs in batch_sizes:
            records.append(Record.from_measurement(
                timings[bs][v.name], name=v.name, technique=v.technique, runtime=v.runtime,
                workload=str(workload), accuracy=acc, size_bytes=v.size_bytes, params=v.params, macs=v.macs,
                peak_mem_bytes=peaks.get((v.name, bs)),
                parity=parity, env=env, notes=_note(v.notes), extra=dict(extra)))
    return records


def _peak_memory(items: Sequence[Variant], inputs: Mapping[int, Any], batch_sizes: Sequence[int]) -> dict:
    peaks = {}
    with verify.no_autograd():
        for bs in batch_sizes:
            for v in items:
                peaks[(v.name, bs)] = bench.call_memory(v.predict, _input_for(v, inputs, bs)).delta_rss_bytes
    return peaks


def _note(notes: str | list[str] | None) -> str | None:
    if isinstance(notes, (list, tuple)):
        return " ".join(str(n) for n in notes) or None
    return notes


def _timed_call(predict: Callable[[Any], Any], batch: Any) -> Callable[[], Any]:
    return lambda: predict(batch)


def _progress(total: int, enabled: bool):
    return progress.bar(total=total, leave=False, enabled=enabled)


def floats(records: Iterable[Record]) -> list[Record]:
    """The records of float variants (their ``extra['precision']`` is fp32/bf16/fp16/mixed)."""
    return [r for r in records if r.extra.get("precision", "fp32") in FLOAT_PRECISIONS]
