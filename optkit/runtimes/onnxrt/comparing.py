"""ONNX models as variants of one comparison, measured on the one path (:func:`optkit.core.variant.evaluate`).

- :func:`to_variant` - an ONNX file (or a :class:`Runner`) as a :class:`~optkit.core.variant.Variant`
  run by ONNX Runtime: its size on disk, its session options in ``config``, timing inputs turned
  into numpy once (so no conversion is timed);
- :func:`quantize_static_variants` - one ORT static int8 model per named setting (calibration
  method, per-channel or not, U8S8 or S8S8, QDQ or QOperator), each as a Variant whose ``config``
  holds every setting it was quantized with;
- :func:`with_head` and :func:`linear_head` - an encoder followed by a downstream linear
  classifier as one predict function, so a sentence encoder's variants get a task accuracy and
  top-1 agreement from ``evaluate`` (a PyTorch module or an ORT runner alike);
- :func:`fastest_source_float` - the baseline an "ONNX Runtime is faster" claim is judged against:
  the fastest float variant that ONNX Runtime does *not* run (the source framework's best: eager,
  channels_last or compiled PyTorch), not plain eager only;
- :func:`numpy_inputs` - ``{batch size: batch}`` with every tensor as a contiguous numpy array.

Taught in 06_onnx_and_onnx_runtime.
"""
from __future__ import annotations

import inspect as _pyinspect
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import Record
from optkit.core.report import fastest
from optkit.core.variant import FLOAT_PRECISIONS, Variant
from optkit.runtimes.onnxrt.inspection import inspect
from optkit.runtimes.onnxrt.quantization import quantize_static
from optkit.runtimes.onnxrt.sessions import Runner, session_options_of

#: ``Variant.runtime`` of everything :func:`to_variant` builds.
RUNTIME = "onnxruntime"
# The settings of quantize_static a Variant's config records (with their defaults when not given).
_RECORDED = ("quant_format", "activation_type", "weight_type", "per_channel", "method", "symmetric")


# --------------------------------------------------------------------------- inputs

def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value))


def _numpy_batch(batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return {k: _numpy(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return tuple(_numpy(v) for v in batch)
    return _numpy(batch)


def numpy_inputs(inputs: Mapping[int, Any]) -> dict[int, Any]:
    """``{batch size: batch}`` with every tensor converted to a contiguous numpy array, once.

    A batch is an array or tensor, a tuple of them (several inputs, in order) or a dict
    ``{input name: array}``. Give the result to a Variant run by ONNX Runtime (``inputs=``), so
    the timed call does not convert a torch tensor each time.

    Taught in 06_onnx_and_onnx_runtime.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise OptkitError("inputs", inputs, "must be a dict batch_size -> batch",
                          "pass e.g. {1: x[:1], 32: x[:32]}")
    return {bs: _numpy_batch(batch) for bs, batch in inputs.items()}


# --------------------------------------------------------------------------- heads

def linear_head(classifier: Any) -> Callable[[Any], np.ndarray]:
    """A fitted linear classifier (scikit-learn's ``LogisticRegression``, ``LinearSVC``...) as a
    fast numpy function from features ``[n, d]`` to class scores ``[n, classes]`` (float32).

    The scores are the classifier's decision function; for two classes they are ``[0, z]``, so
    the arg-max is ``classifier.predict`` and a softmax gives ``predict_proba`` of a logistic
    regression. One matrix product: microseconds, where ``predict_proba`` validates its input at
    every call (a tenth of a millisecond, more than a small model's batch of one). The classes
    must be ``0 .. classes-1`` (the arg-max is compared with integer labels).

    Taught in 06_onnx_and_onnx_runtime.
    """
    coef, intercept = getattr(classifier, "coef_", None), getattr(classifier, "intercept_", None)
    if coef is None or intercept is None:
        raise OptkitError("classifier", type(classifier).__name__, "has no coef_ and intercept_",
                          "pass a fitted linear classifier, e.g. LogisticRegression().fit(features, labels)")
    coef = np.atleast_2d(np.asarray(coef, np.float32))
    intercept = np.atleast_1d(np.asarray(intercept, np.float32))
    classes = getattr(classifier, "classes_", None)
    n_classes = 2 if coef.shape[0] == 1 else coef.shape[0]
    if classes is not None and not np.array_equal(np.asarray(classes), np.arange(n_classes)):
        raise OptkitError("classifier", f"classes {list(classes)}", f"are not 0 .. {n_classes - 1}",
                          "fit it on integer labels 0 .. classes-1, the labels accuracy is computed against")

    def head(features: Any) -> np.ndarray:
        f = _numpy(features).astype(np.float32, copy=False)
        if f.ndim != 2 or f.shape[1] != coef.shape[1]:
            raise OptkitError("features", f"shape {f.shape}", f"the classifier takes [n, {coef.shape[1]}]",
                              "pass the encoder's pooled embeddings, one row per example")
        z = f @ coef.T + intercept
        return np.concatenate([np.zeros_like(z), z], axis=1) if coef.shape[0] == 1 else z

    return head


class _Predict:
    """``head(model(batch))``; a batch is an array, a tuple (several inputs) or a dict of named inputs."""

    def __init__(self, model: Any, head: Callable | None):
        self.model, self.head = model, head
        self._torch = _is_module(model)

    def __call__(self, batch: Any) -> Any:
        if self._torch:
            import torch

            args = tuple(batch.values()) if isinstance(batch, Mapping) else \
                tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
            args = tuple(torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args)
            with torch.inference_mode():
                out = self.model(*args)
        elif isinstance(batch, (tuple, list)):
            out = self.model(*batch)
        else:
            out = self.model(batch)
        return out if self.head is None else self.head(out)

    def __repr__(self) -> str:
        name = type(self.model).__name__
        return f"with_head({name}, {getattr(self.head, '__name__', self.head)!r})" if self.head else name


def _is_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)


def with_head(model: Any, head: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """One predict function: ``head(model(batch))`` (or ``model(batch)`` without a head).

    ``model`` is a ``torch.nn.Module`` (run under ``torch.inference_mode``; numpy inputs become
    tensors without a copy; a dict of named inputs is passed in order, as positional arguments) or any callable of numpy inputs,
    e.g. a :class:`Runner` (a dict goes to it by name, a tuple as positional inputs). With
    ``head=linear_head(classifier)`` a sentence encoder becomes a text classifier that
    :func:`optkit.core.variant.evaluate` can score: accuracy and top-1 agreement on the task.

    Taught in 06_onnx_and_onnx_runtime.
    """
    if not callable(model):
        raise OptkitError("model", type(model).__name__, "is not callable",
                          "pass a torch module or an onnxrt.Runner")
    if head is not None and not callable(head):
        raise OptkitError("head", type(head).__name__, "is not callable",
                          "pass a function from the model's output to class scores, e.g. linear_head(classifier)")
    if getattr(model, "training", False) is True:
        raise OptkitError("model", type(model).__name__, "is in training mode", "call model.eval() first")
    return _Predict(model, head)


# --------------------------------------------------------------------------- variants

def to_variant(model: Any, name: str, *, precision: str = "fp32", technique: str = "ONNX export",
               config: Mapping[str, Any] | None = None, inputs: Mapping[int, Any] | None = None,
               head: Callable[[Any], Any] | None = None, notes: str | None = None,
               **session_kwargs: Any) -> Variant:
    """An ONNX model as a :class:`~optkit.core.variant.Variant` for :func:`optkit.core.variant.evaluate`.

    ``model``: an ``.onnx`` path (a :class:`Runner` is built with ``session_kwargs``: ``threads=``,
    ``optimization=`` ...) or a Runner. The Variant runs in ``"onnxruntime"``, its ``size_bytes``
    is the file's (external data included), its ``artifact`` the path, and its ``config`` the
    session's optimization level and thread count (read back from the session) plus ``config``.
    ``inputs``: the ``{batch size: batch}`` to time it with, converted to numpy here
    (:func:`numpy_inputs`). ``head``: see :func:`with_head`.

    Taught in 06_onnx_and_onnx_runtime.
    """
    if isinstance(model, Runner):
        if session_kwargs:
            raise OptkitError("session_kwargs", sorted(session_kwargs), "cannot apply to an existing Runner",
                              "pass the .onnx path to have session options applied")
        runner = model
    else:
        runner = Runner(model, **session_kwargs)
    options = session_options_of(runner.session)
    settings = {"optimization": options["optimization"], "threads": options["threads"] or "default"}
    settings.update(config or {})
    size = inspect(runner.path).size_bytes if runner.path is not None else None
    return Variant(name, with_head(runner, head), technique=technique, config=settings, runtime=RUNTIME,
                   precision=precision, artifact=runner.path, size_bytes=size,
                   inputs=None if inputs is None else numpy_inputs(inputs), notes=notes)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower().replace("-", "")).strip("_")


def quantize_static_variants(src, folder, calibration, settings: Mapping[str, Mapping[str, Any]], *,
                             threads: int | None = None, inputs: Mapping[int, Any] | None = None,
                             overwrite: bool = False, **common: Any) -> list[Variant]:
    """One :func:`quantize_static` model per entry of ``settings`` (name -> its keywords), as Variants.

    Each file is ``folder/<name as a file name>.onnx``; ``common`` keywords apply to all (e.g.
    ``preprocess=False`` for a model already pre-processed). Each Variant is ``precision="int8"``,
    its technique says the format (``"ORT static int8 (QDQ)"``) and its ``config`` holds every
    setting it was quantized with, defaults included (format, activation and weight types,
    per-channel, calibration method, symmetric, the number of calibration batches), so a table
    row can be reproduced. ``threads`` and ``inputs`` go to :func:`to_variant`.

    Taught in 06_onnx_and_onnx_runtime.
    """
    if not isinstance(settings, Mapping) or not settings:
        raise OptkitError("settings", settings, "must be a non-empty dict name -> quantize_static keywords",
                          "pass e.g. {'QDQ per-channel': {}, 'QDQ per-tensor': {'per_channel': False}}")
    params = _pyinspect.signature(quantize_static).parameters
    allowed = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "overwrite"}
    files: dict[str, str] = {}
    for name, kw in settings.items():
        unknown = sorted(set(kw or {}) - allowed)
        if unknown:
            raise OptkitError(f"settings[{name!r}]", unknown, "are not keywords of quantize_static",
                              "use " + ", ".join(sorted(allowed)))
        slug = _slug(name)
        if not slug or slug in files:
            raise OptkitError("settings", name, f"gives the file name {slug!r}" +
                              (f" already taken by {files[slug]!r}" if slug in files else ""),
                              "give every setting a distinct name with letters or digits")
        files[slug] = name
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {"calibration_batches": len(calibration)} if isinstance(calibration, Sequence) else {}
    out = []
    for slug, name in files.items():
        keywords = {**common, **(settings[name] or {})}
        path = quantize_static(src, folder / f"{slug}.onnx", calibration, overwrite=overwrite, **keywords)
        config = {k: keywords.get(k, params[k].default) for k in _RECORDED}
        if keywords.get("nodes_to_exclude"):
            config["nodes_to_exclude"] = list(keywords["nodes_to_exclude"])
        config.update(batches)
        fmt = "QDQ" if config["quant_format"] == "qdq" else "QOperator"
        out.append(to_variant(path, name, precision="int8", technique=f"ORT static int8 ({fmt})", config=config,
                              inputs=inputs, threads=threads))
    return out


# --------------------------------------------------------------------------- baseline

def fastest_source_float(records: Iterable[Record], runtime: str = RUNTIME) -> str | None:
    """Name of the fastest float record *not* run by ``runtime`` (None if there is none).

    The fair baseline of an "ONNX Runtime is faster" claim: the best the source framework does in
    the same interleaved run (PyTorch eager, channels_last or compiled, whichever is fastest),
    not plain eager only. Use it per table: ``report.tables(records, baseline=fastest_source_float)``.

    Taught in 06_onnx_and_onnx_runtime.
    """
    return fastest(records, where=lambda r: r.runtime != runtime
                   and r.extra.get("precision", "fp32") in FLOAT_PRECISIONS)


# --------------------------------------------------------------------------- plots

def _closed_axes(figsize: tuple[float, float]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    plt.close(fig)  # shown once, as the cell's value
    return fig, ax


def plot_records(records: Iterable[Record], *, title: str = "", baseline: str | None = None):
    """Horizontal bars of each record's median latency with its p95 as a whisker (one batch size):
    the picture of a ``variant.evaluate`` comparison. ``baseline`` draws a dashed line at that
    record's median. Returns a Figure already closed in pyplot (end the cell with it).

    Taught in 06_onnx_and_onnx_runtime.
    """
    rows = list(records)
    if not rows or len({r.batch_size for r in rows}) != 1:
        raise OptkitError("records", f"{len(rows)} records", "must be a non-empty list of one batch size",
                          "pass report.groups(records)[workload, batch_size]")
    names = [r.name for r in rows]
    med = np.array([r.latency_ms for r in rows], dtype=float)
    p95 = np.array([r.p95_ms if getattr(r, "p95_ms", None) is not None else m for r, m in zip(rows, med)], float)
    fig, ax = _closed_axes((7.0, 0.45 * len(rows) + 1.4))
    pos = np.arange(len(rows))[::-1]
    ax.barh(pos, med, color="tab:blue", alpha=0.7, label="median")
    ax.errorbar(med, pos, xerr=[np.zeros_like(med), np.maximum(p95 - med, 0)], fmt="none", ecolor="black",
                capsize=3, label="p95")
    if baseline is not None:
        ax.axvline(med[names.index(baseline)], color="tab:red", ls="--", lw=1, label=baseline)
    ax.set_yticks(pos, names)
    ax.set_xlabel(f"latency per call at batch {rows[0].batch_size} (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def plot_node_errors(rows: Sequence[Any], *, top: int = 15, rule_db: float | None = 20.0, title: str = ""):
    """Bar chart of :class:`~optkit.runtimes.onnxrt.quantization.NodeError` rows: for the ``top``
    quantized nodes with the lowest ``input_db``, that SQNR (how well 8 bits hold the activation
    the node reads) beside the SQNR of its output in the quantized model. ``rule_db`` draws the
    line a good int8 tensor should stay above. Returns a Figure already closed in pyplot.

    Taught in 06_onnx_and_onnx_runtime.
    """
    chosen = sorted((r for r in rows if r.quantized), key=lambda r: r.input_db)[:top]
    if not chosen:
        raise OptkitError("rows", f"{len(rows)} rows", "hold no quantized node",
                          "pass node_errors(float_model, quantized_model, calibration)")
    fig, ax = _closed_axes((7.5, 0.32 * len(chosen) + 1.5))
    pos = np.arange(len(chosen))[::-1]
    clip = [min(v, 80.0) for v in (r.input_db for r in chosen)]
    ax.barh(pos + 0.2, clip, height=0.4, color="tab:orange", label="its input, rounded to 8 bits")
    ax.barh(pos - 0.2, [min(r.sqnr_db, 80.0) for r in chosen], height=0.4, color="tab:blue",
            label="its output in the int8 model")
    if rule_db is not None:
        ax.axvline(rule_db, color="tab:red", ls="--", lw=1, label=f"{rule_db:g} dB")
    ax.set_yticks(pos, [f"{r.name} ({r.op_type})" for r in chosen], fontsize=8)
    ax.set_xlabel("SQNR (dB, higher is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig
