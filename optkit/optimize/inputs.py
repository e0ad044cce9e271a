"""Step 1b of the capstone: the user's data. :func:`load_data` reads an ``.npz`` (one array per
model input, optional labels), checks every array against the model's inputs with an error that
names the array and the fix, or generates inputs from the signature when there is no data; a
:class:`SampleData` holds the result and keeps the calibration rows apart from the rows quality
is measured on.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import jsonable

if TYPE_CHECKING:  # annotations only: inspection imports this module
    from optkit.optimize.inspection import ModelSummary

__all__ = ["SampleData", "load_data", "batch_axes", "output_axes", "rows_first", "regenerate", "LABEL_KEYS"]

#: Names a labels array may have in the ``.npz``.
LABEL_KEYS = ("y", "labels", "label", "targets")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if path.suffix.lower() != ".npz":
        raise OptkitError("data_path", str(path), f"is not an .npz file ({path.suffix or 'no suffix'})",
                          "save your inputs with np.savez(path, x=inputs, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except ValueError as e:
        raise OptkitError("data_path", str(path), f"holds Python objects, not plain arrays ({str(e)[:120]})",
                          "save numeric arrays only (np.savez(path, x=..., y=...))") from None
    except Exception as e:
        raise OptkitError("data_path", str(path), f"is not a readable .npz ({type(e).__name__})",
                          "save it with np.savez(path, x=inputs, y=labels)") from None
    if not arrays:
        raise OptkitError("data_path", str(path), "holds no arrays", "save at least the inputs: np.savez(path, x=x)")
    return arrays


@dataclass
class SampleData:
    """A sample of the model's inputs, and labels when given.

    ``inputs`` maps each model input to an array with one row per example; ``labels`` is None or
    one integer class per row. ``source`` is ``"file"`` or ``"generated"``. The first
    ``n_calibration`` rows calibrate the int8 recipes; quality is measured on the others
    (``eval_rows``), so calibration never sees the examples it is judged on (with fewer than 8
    rows, all rows do both and :attr:`notes` says so).

    Models whose inputs do not all carry the batch on axis 0 (a recurrent state ``[2, N, 16]``, a
    scalar sample rate) are held rows-first all the same: ``axes`` names the model's batch axis of
    such an input, ``constants`` the inputs without a batch axis (fed unchanged with every call),
    and :meth:`to_model` turns a rows-first feed into the model's own layout.

    Taught in 10_optimize_your_own_model.
    """

    inputs: dict
    labels: np.ndarray | None
    source: str
    path: Path | None = None
    n_calibration: int = 0
    notes: list = field(default_factory=list)
    axes: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        """True when every input has its batch on axis 0 and none is a constant."""
        return not self.constants and all(a == 0 for a in self.axes.values())

    def to_model(self, feed: dict) -> dict:
        """A rows-first ``feed`` in the model's layout: batch axes moved back, constants added."""
        if self.plain:
            return feed
        out = {k: (np.ascontiguousarray(np.moveaxis(v, 0, self.axes[k])) if self.axes.get(k, 0) else v)
               for k, v in feed.items()}
        out.update(self.constants)
        return out

    @property
    def n(self) -> int:
        return int(len(next(iter(self.inputs.values()))))

    @property
    def eval_rows(self) -> slice:
        return slice(self.n_calibration, self.n) if self.n_calibration < self.n else slice(0, self.n)

    def eval_inputs(self) -> dict:
        return {k: v[self.eval_rows] for k, v in self.inputs.items()}

    def eval_labels(self) -> np.ndarray | None:
        return None if self.labels is None else self.labels[self.eval_rows]

    @property
    def n_eval(self) -> int:
        r = self.eval_rows
        return r.stop - r.start

    def batch(self, batch_size: int) -> dict:
        """``batch_size`` rows (repeated if the sample is smaller), for timing."""
        idx = np.arange(batch_size) % self.n
        return {k: np.ascontiguousarray(v[idx]) for k, v in self.inputs.items()}

    def calibration(self, batch_size: int = 16) -> list[dict]:
        """The calibration rows as a list of feeds of equal size: ``batch_size`` rows, or the
        largest size below it that divides the calibration rows evenly (ONNX Runtime's histogram
        calibrators, "entropy" and "percentile", fail on a ragged last batch); if that would be
        under a quarter of ``batch_size``, the ragged tail is dropped instead."""
        stop = self.n_calibration or self.n
        size = max(d for d in range(1, min(batch_size, stop) + 1) if stop % d == 0)
        if size < max(1, batch_size // 4) and stop > batch_size:
            size, stop = batch_size, stop - stop % batch_size
        return [self.to_model({k: np.ascontiguousarray(v[i:i + size]) for k, v in self.inputs.items()})
                for i in range(0, stop, size)]

    def describe(self) -> str:
        where = f"{self.path.name}" if self.path is not None else "generated from the input signature"
        arrays = "; ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.inputs.items())
        labels = "no labels" if self.labels is None else \
            f"labels: {len(np.unique(self.labels))} classes"
        split = (f"{self.n_calibration} rows calibrate the int8 recipes, quality is measured on the other "
                 f"{self.n_eval}" if self.n_calibration < self.n and self.n_calibration
                 else f"all {self.n} rows calibrate and measure")
        return "\n".join([f"{where}: {self.n:,} examples ({arrays}), {labels}", split] + list(self.notes))

    def to_dict(self) -> dict:
        return jsonable({"source": self.source, "path": None if self.path is None else str(self.path),
                         "n": self.n, "n_calibration": self.n_calibration, "n_eval": self.n_eval,
                         "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in self.inputs.items()},
                         "labels": self.labels is not None, "notes": self.notes}, strict=False)

    def __repr__(self) -> str:
        return (f"SampleData({self.source}, {self.n} examples, "
                f"{'labelled' if self.labels is not None else 'no labels'}, calibration {self.n_calibration})")


def _shape_text(spec) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """``arr`` C-contiguous, 0-d arrays kept 0-d (``np.ascontiguousarray`` makes them shape (1,))."""
    return np.require(arr, requirements="C")


def _fit_array(spec, arr: np.ndarray, key: str, path: Path, notes: list, axis: int | None = 0) -> np.ndarray:
    where = f"array {key!r} of {path.name}"
    if arr.ndim != len(spec.shape):
        hint = ""
        if arr.ndim == len(spec.shape) - 1:
            hint = " (a single example? keep the batch axis first: x[None])"
        raise OptkitError("data_path", f"{where}: shape {arr.shape}",
                          f"does not fit the model input {spec.name!r} {spec.dtype}{_shape_text(spec)}: rank "
                          f"{arr.ndim}, the model expects rank {len(spec.shape)}{hint}",
                          "save inputs shaped like the model input, batch axis first")
    bad = [i for i, (d, g) in enumerate(zip(spec.shape, arr.shape)) if i != axis and isinstance(d, int) and d != g]
    if bad:
        hint = ""
        if arr.ndim == 4 and tuple(arr.shape[1:]) in {(spec.shape[3], spec.shape[1], spec.shape[2]),
                                                       (spec.shape[2], spec.shape[3], spec.shape[1])}:
            hint = " (channels on the wrong axis: NCHW vs NHWC; transpose it)"
        raise OptkitError("data_path", f"{where}: shape {arr.shape}",
                          f"does not fit the model input {spec.name!r} {spec.dtype}{_shape_text(spec)} "
                          f"(dimension {bad[0]} is {arr.shape[bad[0]]}, the model fixes it at {spec.shape[bad[0]]})"
                          f"{hint}", "save inputs shaped like the model input")
    want = np.dtype(spec.dtype) if spec.dtype not in ("bfloat16",) else np.dtype("float32")
    if arr.dtype == want:
        return _contiguous(arr)
    if np.issubdtype(want, np.floating) and np.issubdtype(arr.dtype, np.floating):
        notes.append(f"{key}: {arr.dtype} converted to the model's {want}")
        return _contiguous(arr.astype(want))
    if np.issubdtype(want, np.integer) and np.issubdtype(arr.dtype, np.integer):
        return _contiguous(arr.astype(want))
    if np.issubdtype(want, np.floating) and np.issubdtype(arr.dtype, np.integer):
        raise OptkitError("data_path", f"{where}: dtype {arr.dtype}", f"the model input {spec.name!r} is {want}: "
                          "integer data for a float input is usually unscaled (0-255 pixels, say)",
                          f"scale and convert it as at training time, e.g. (x / 255).astype(np.{want})")
    raise OptkitError("data_path", f"{where}: dtype {arr.dtype}", f"the model input {spec.name!r} is {want}",
                      f"convert it: x.astype(np.{want})")


def _labels(raw: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    y = np.asarray(raw)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise OptkitError("data_path", f"{key!r} of {path.name}: shape {y.shape}",
                          "labels must be one class id per example (1-d)",
                          "save class ids, not one-hot rows: y.argmax(1)")
    if len(y) != n:
        raise OptkitError("data_path", f"{key!r} of {path.name}: {len(y)} labels",
                          f"the inputs hold {n} examples: labels of the wrong length",
                          "save one label per input row, in the same order")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise OptkitError("data_path", f"{key!r} of {path.name}: dtype {y.dtype}",
                              "labels must be integer class ids", "save y.astype(np.int64)")
    if y.min() < 0:
        raise OptkitError("data_path", f"{key!r} of {path.name}: minimum {int(y.min())}",
                          "labels must be class ids >= 0", "save class ids 0..classes-1")
    return y.astype(np.int64)


def _split(n: int, notes: list) -> int:
    if n < 8:
        notes.append(f"only {n} examples: the same rows calibrate the int8 recipes and measure quality")
        return 0
    return int(min(128, n // 4))


def load_data(data_path: str | os.PathLike | None, summary: ModelSummary, *, batch_sizes: Sequence[int] = (1, 32),
              seed: int = 0, dynamic_size: int = 16) -> SampleData:
    """The sample of data a run uses, checked against the model's inputs.

    ``data_path``: an ``.npz`` with one array per model input (named like the input, in the
    model's own layout: a state ``[2, N, 128]`` as it is, a scalar as a 0-d array) or, for a
    single-input model, any one array; labels optional under ``y``, ``labels``, ``label`` or
    ``targets``. Floats are converted to the model's float type; integer data for a float input,
    a wrong rank or fixed dimension, and labels of the wrong length are each an
    :class:`OptkitError` naming the array. ``None`` (or ``""``) generates inputs from the
    signature: uniform [0, 1) floats, integer ids below the embedding's row count (or 0/1),
    16 for dynamic non-batch dimensions (``dynamic_size``); then only latency and parity mean something.

    Taught in 10_optimize_your_own_model.
    """
    from optkit.core.errors import check_path_exists

    if data_path is None or str(data_path) == "":
        return _generated(summary, batch_sizes, seed, dynamic_size)
    notes: list[str] = []
    p = check_path_exists("data_path", data_path)
    arrays = _read_npz(p)
    label_keys = [k for k in arrays if k in LABEL_KEYS]
    if len(label_keys) > 1:
        raise OptkitError("data_path", str(p), f"holds several label arrays {label_keys}", "keep one, named 'y'")
    chosen = _input_arrays(p, {k: v for k, v in arrays.items() if k not in LABEL_KEYS}, label_keys, summary)
    inputs, constants, axes = {}, {}, batch_axes(summary)
    for spec in summary.inputs:
        key, arr = chosen[spec.name]
        fitted = _fit_array(spec, arr, key, p, notes, axes[spec.name])
        if axes[spec.name] is None:  # no batch axis: the same array with every call
            constants[spec.name] = fitted
            notes.append(f"{key}: no batch dimension in the model, fed unchanged with every call")
        else:
            inputs[spec.name] = np.ascontiguousarray(np.moveaxis(fitted, axes[spec.name], 0))
            if axes[spec.name]:
                notes.append(f"{key}: the batch is on axis {axes[spec.name]} of {_shape_text(spec)}")
    if not inputs:
        raise OptkitError("model_path", str(summary.path), "has no input with a batch dimension",
                          "optkit times batches: export the model with a batch dimension on at least one input")
    sizes = {k: len(v) for k, v in inputs.items()}
    if len(set(sizes.values())) != 1:
        raise OptkitError("data_path", sizes, "input arrays hold different numbers of examples",
                          "save the same number of rows for every input")
    n = next(iter(sizes.values()))
    if n == 0:
        raise OptkitError("data_path", str(p), "holds no examples (0 rows)", "save at least one example")
    labels = _labels(arrays[label_keys[0]], n, p, label_keys[0]) if label_keys else None
    if labels is not None:
        _check_classes(labels, summary)
    for k, v in inputs.items():
        if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            raise OptkitError("data_path", f"array for {k!r}", "holds NaN or infinite values",
                              "clean the data first")
    n_cal = _split(n, notes)
    if n_cal:  # a file sorted by class must not calibrate on one class: draw the rows at random
        order = np.random.default_rng(seed).permutation(n)
        inputs = {k: np.ascontiguousarray(v[order]) for k, v in inputs.items()}
        labels = None if labels is None else labels[order]
        notes.append(f"the {n_cal} calibration rows were drawn at random (seed {seed}), not taken from the top of "
                     "the file; quality is measured on the other rows")
    return SampleData(inputs=inputs, labels=labels, source="file", path=p, n_calibration=n_cal, notes=notes,
                      axes={k: axes[k] for k in inputs}, constants=constants)


def batch_axes(summary: ModelSummary) -> dict[str, int | None]:
    """Each input's batch axis in the model's layout, or None for an input without one.

    The batch dimension is the dynamic first dimension the inputs share (its name, or an unnamed
    one). An input carries it on the axis where that name appears (``state: [2, N, 16]`` -> 1); an
    input of rank 0, or one whose dimensions are all fixed while others' first is dynamic, has no
    batch axis. Anything unclear keeps axis 0.

    Taught in 10_optimize_your_own_model.
    """
    firsts = [s.shape[0] for s in summary.inputs if len(s.shape) and not isinstance(s.shape[0], int)]
    symbol = firsts[0] if firsts else None
    axes: dict[str, int | None] = {}
    for s in summary.inputs:
        shape = list(s.shape)
        if not shape:
            axes[s.name] = None
        elif not firsts or not isinstance(shape[0], int):
            axes[s.name] = 0
        elif symbol in shape:  # the shared name, or an unnamed dimension (None) like the others' first
            axes[s.name] = shape.index(symbol)
        elif all(isinstance(d, int) for d in shape):
            axes[s.name] = None
        else:
            axes[s.name] = 0
    return axes


def output_axes(summary: ModelSummary) -> list[int | None]:
    """Each output's batch axis (as :func:`batch_axes` finds them for inputs), or None for none."""
    firsts = [s.shape[0] for s in summary.inputs if len(s.shape) and not isinstance(s.shape[0], int)]
    symbol = firsts[0] if firsts else None
    axes: list[int | None] = []
    for s in summary.outputs:
        shape = list(s.shape)
        if firsts and symbol in shape:
            axes.append(shape.index(symbol))
        elif shape and not isinstance(shape[0], int):
            axes.append(0)
        else:
            axes.append(None if shape and firsts and all(isinstance(d, int) for d in shape) or not shape else 0)
    return axes


def rows_first(predict, data: "SampleData", axes: Sequence[int | None]):
    """``predict`` (taking the model's own feed) as a function of a rows-first feed of ``data``
    returning rows-first outputs: what every step of a run passes and compares. Unchanged when the
    model's inputs are plain (batch on axis 0, no constants)."""
    if data.plain and all(a == 0 for a in axes):
        return predict

    def call(feed: dict) -> list:
        rows = len(next(iter(feed.values())))
        outs = [np.asarray(o) for o in predict(data.to_model(feed))]
        return [o if i >= len(axes) or axes[i] == 0 else
                np.broadcast_to(o[None], (rows,) + o.shape) if axes[i] is None else np.moveaxis(o, axes[i], 0)
                for i, o in enumerate(outs)]

    return call


def _value(s, shape: list[int], summary: ModelSummary, rng: np.random.Generator, constant: bool) -> np.ndarray:
    dtype = np.dtype("float32" if s.dtype == "bfloat16" else s.dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape, dtype=np.float64).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if constant and not shape:  # a scalar setting (a rate, a length, a flag): 1 is the safe guess
        return np.asarray(1, dtype=dtype)
    high = int(summary.int_ranges.get(s.name, 2))
    return rng.integers(0, high, size=shape).astype(dtype)


def _generated(summary: ModelSummary, batch_sizes: Sequence[int], seed: int, dynamic_size: int = 16) -> SampleData:
    """Inputs generated from the model's signature, for a run without data (see :func:`load_data`)."""
    notes: list[str] = []
    n = max(64, max(batch_sizes))
    rng = np.random.default_rng(seed)
    axes = batch_axes(summary)
    inputs, constants = {}, {}
    for s in summary.inputs:
        axis = axes[s.name]
        dims = [d if isinstance(d, int) else dynamic_size for i, d in enumerate(s.shape) if i != axis]
        dynamic = [i for i, d in enumerate(s.shape) if i != axis and not isinstance(d, int)]
        if dynamic:
            notes.append(f"{s.name}: dynamic dimension(s) {dynamic} set to {dynamic_size}")
        if axis is None:
            constants[s.name] = _value(s, dims, summary, rng, constant=True)
            shown = constants[s.name].tolist() if constants[s.name].ndim == 0 else f"shape {list(dims)}"
            notes.append(f"{s.name}: no batch dimension, so the same value ({shown}) is fed with every call")
        else:
            inputs[s.name] = _value(s, [n] + dims, summary, rng, constant=False)
            if axis:
                notes.append(f"{s.name}: the batch is on axis {axis} of {_shape_text(s)}")
    notes.append("no data given: inputs were generated from the input signature (floats uniform in [0, 1), "
                 "integer ids below the embedding's row count or 0/1), so latency and parity are measured "
                 "but accuracy is not, and int8 calibration on random inputs says little about your data; "
                 "pass data_path for real numbers")
    if not inputs:
        raise OptkitError("model_path", str(summary.path), "has no input with a batch dimension",
                          "optkit times batches: export the model with a batch dimension on at least one input")
    return SampleData(inputs=inputs, labels=None, source="generated", path=None, n_calibration=0, notes=notes,
                      axes={k: axes[k] for k in inputs}, constants=constants)


def regenerate(summary: ModelSummary, batch_sizes: Sequence[int], build: Callable[[SampleData], None],
               sizes: Sequence[int] = (32, 64, 128, 224, 256, 512, 1024)) -> SampleData | None:
    """Generated inputs with larger dynamic sizes, until ``build(data)`` runs without an error.

    An image model may need sides divisible by 32, an audio model 512 samples: the default 16
    fails. Returns the data that ran (its notes say which size), or None when none did or the
    model has no dynamic dimension to change.
    """
    if not any(not isinstance(d, int) for s in summary.inputs for d in s.shape[1:]):
        return None
    for size in sizes:
        data = load_data(None, summary, batch_sizes=batch_sizes, dynamic_size=size)
        try:
            build(data)
        except Exception:
            continue
        data.notes.insert(0, f"the model rejected dynamic dimensions of 16; {size} is the first size tried that ran")
        return data
    return None


def _input_arrays(p: Path, rest: dict, label_keys: list, summary: ModelSummary) -> dict[str, tuple[str, np.ndarray]]:
    """Model input name -> (array name in the file, array): by name, or the one array of a
    single-input model."""
    names = [s.name for s in summary.inputs]
    if not rest:
        raise OptkitError("data_path", str(p), f"holds only labels ({label_keys})",
                          "add the inputs: np.savez(path, x=inputs, y=labels)")
    if len(names) == 1:
        if names[0] in rest:
            return {names[0]: (names[0], rest[names[0]])}
        if len(rest) == 1:
            (k, v), = rest.items()
            return {names[0]: (k, v)}
        raise OptkitError("data_path", f"arrays {sorted(rest)}", f"the model has one input {names[0]!r} and the "
                          "file several input arrays", f"keep one input array, or name it {names[0]!r}")
    missing = [n for n in names if n not in rest]
    if missing:
        raise OptkitError("data_path", f"arrays {sorted(rest)}", f"lack the model inputs {missing}",
                          f"save one array per input, named {names}")
    return {n: (n, rest[n]) for n in names}


def _check_classes(labels: np.ndarray, summary: ModelSummary) -> None:
    """Labels beyond the classes of a ``(batch, classes)`` first output are an error."""
    out = summary.outputs[0] if summary.outputs else None
    classes = out.shape[-1] if out is not None and len(out.shape) == 2 and isinstance(out.shape[-1], int) else None
    if classes is not None and classes >= 2 and labels.max() >= classes:
        raise OptkitError("data_path", f"labels up to {int(labels.max())}",
                          f"the model's output {out.name!r} has {classes} classes (0..{classes - 1})",
                          "check that the labels belong to this model's classes")
