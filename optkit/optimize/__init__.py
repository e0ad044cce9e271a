"""The capstone: point it at your model and a sample of your data, get verified, benchmarked
artifacts and a report that recommends one.

One run, step by step (each step a method of :class:`Optimization`; :func:`optimize` runs them all,
and so do notebook 10 and the ``optkit optimize`` command):

1. :meth:`~Optimization.inspect` - what the model is (:class:`ModelSummary`: format, inputs,
   outputs, dtypes, dynamic dimensions, operator or layer counts, size); ONNX, torch.export
   (``.pt2``), Keras (``.keras``, ``.h5``, SavedModel) and TFLite are read; a pickled PyTorch
   module only with ``allow_pickle=True``, because unpickling runs code from the file;
2. :meth:`~Optimization.load_data` - your ``.npz`` (:class:`SampleData`): one array per model
   input (or one array for a single-input model) and optional labels (``y``/``labels``), checked
   against the model; a held-out part calibrates the int8 recipes, the rest measures quality.
   Without data, inputs are generated from the input signature (latency and parity only);
3. :meth:`~Optimization.measure_baseline` - the model as given, timed with the bench harness;
4. :meth:`~Optimization.try_recipes` - every recipe of :mod:`optkit.optimize.recipes` that applies
   to the format; a recipe that fails or does not apply is reported with its reason;
5. :meth:`~Optimization.verify` - parity with the original and accuracy on the labels (or top-1
   agreement without labels); candidates past ``max_accuracy_drop`` stay in the report but are
   never recommended;
6. :meth:`~Optimization.benchmark` - one interleaved :func:`optkit.core.bench.compare` per batch size;
7. :meth:`~Optimization.recommend` - the fastest eligible candidate at the largest batch size,
   near-ties (within 5 %) going to the smaller file; :func:`recommend` is the rule itself;
8. :meth:`~Optimization.write_report` - ``output_dir/<run id>/``: ``artifacts/``, ``results.json``
   (every measurement with the environment), ``report.md``, ``report.html`` and ``pareto.png``;
   ``output_dir/latest`` names the newest complete run. A run never writes over the input model
   and never into an earlier run's folder.

:func:`make_reference` rebuilds the bundled models and data in ``data/capstone`` (``python -m
optkit.optimize --make-reference``).

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import io as _io
import json
import math
import os
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import jsonable
from optkit.optimize.recipes import (FORMATS, RUNTIMES, Candidate, Context, Recipe, RecipeSkipped, all_recipes,
                                     get_recipe, litert_candidate, ort_candidate, recipes_for, register,
                                     torch_runner, unregister)

__all__ = [
    "Optimization", "optimize", "ModelSummary", "SampleData", "Check", "Recommendation", "Outcome",
    "inspect_model", "load_data", "recommend", "detect_format", "predictions",
    "Recipe", "Candidate", "Context", "RecipeSkipped", "register", "unregister", "get_recipe", "recipes_for",
    "all_recipes",
    "FORMATS", "RUNTIMES", "REFERENCE_DIR", "REFERENCE_MODEL", "REFERENCE_DATA", "make_reference",
    "RESULTS_FORMAT", "TIE_TOLERANCE",
]

ROOT = Path(__file__).resolve().parents[2]  # the repository (optkit/<layer>/<module>.py)
#: Bundled models and data of the capstone (see data/capstone/README.md).
REFERENCE_DIR = ROOT / "data" / "capstone"
REFERENCE_MODEL = REFERENCE_DIR / "reference_cnn.onnx"
REFERENCE_DATA = REFERENCE_DIR / "fashion_mnist_600.npz"
RESULTS_FORMAT = "optkit.optimize/1"
#: Candidates within this fraction of the fastest eligible latency count as tied; the smaller wins.
TIE_TOLERANCE = 0.05
LABEL_KEYS = ("y", "labels", "label", "targets")


# =============================================================================== the model

@dataclass
class ModelSummary:
    """What a model file is: ``format`` (a key of :data:`FORMATS`), ``inputs`` and ``outputs``
    (:class:`optkit.runtimes.onnxrt.TensorSpec`: name, shape with strings for dynamic dimensions, numpy
    dtype), ``size_bytes`` on disk, ``params`` (weights), ``op_counts`` (ONNX operators, Keras
    layers, aten operators or TFLite ops, by type), ``int_ranges`` (for integer inputs feeding an
    embedding: its number of rows, used to generate valid token ids) and ``details``.

    Taught in 10_optimize_your_own_model.
    """

    path: Path
    format: str
    inputs: list
    outputs: list
    size_bytes: int
    params: int | None = None
    op_counts: dict = field(default_factory=dict)
    int_ranges: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def dynamic_dims(self) -> list[str]:
        """``"input[axis]=name"`` for each dimension not fixed in the file."""
        return [f"{s.name}[{i}]={d if d is not None else '?'}" for s in self.inputs
                for i, d in enumerate(s.shape) if not isinstance(d, int)]

    @property
    def op_kind(self) -> str:
        return {"onnx": "operators", "torch_export": "aten operators", "keras": "layers",
                "tflite": "ops"}.get(self.format, "operators")

    def to_dict(self) -> dict:
        return _jsonable({"path": str(self.path), "format": self.format,
                          "inputs": [_spec_dict(s) for s in self.inputs],
                          "outputs": [_spec_dict(s) for s in self.outputs], "size_bytes": self.size_bytes,
                          "params": self.params, "op_counts": self.op_counts, "dynamic_dims": self.dynamic_dims,
                          "int_ranges": self.int_ranges, "details": self.details})

    def describe(self) -> str:
        """A few lines for a reader: format, size, inputs and outputs, the most common operators."""
        top = sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ops = ", ".join(f"{k} {v}" for k, v in top[:8]) + (", ..." if len(top) > 8 else "")
        lines = [f"{Path(self.path).name}: {_format_text(self.format)}, "
                 f"{self.size_bytes / 1e6:.2f} MB" + (f", {self.params:,} parameters" if self.params else ""),
                 "inputs:  " + "; ".join(repr(s) for s in self.inputs),
                 "outputs: " + "; ".join(repr(s) for s in self.outputs),
                 "dynamic dimensions: " + (", ".join(self.dynamic_dims) or "none"),
                 f"{sum(self.op_counts.values()):,} {self.op_kind}: {ops or 'none'}"]
        lines += [f"{k}: {v}" for k, v in self.details.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ModelSummary({Path(self.path).name!r}, {self.format}, {self.size_bytes / 1e6:.2f} MB, "
                f"inputs {self.inputs}, outputs {self.outputs})")


def _spec_dict(s) -> dict:
    return {"name": s.name, "shape": list(s.shape), "dtype": s.dtype}


def _spec(name: str, shape: Iterable, dtype: str):
    from optkit.runtimes.onnxrt import TensorSpec

    return TensorSpec(str(name), tuple(shape), str(dtype))


def _format_text(key: str) -> str:
    """How a format key reads in a summary line (the registry's description)."""
    from optkit.runtimes import formats

    return formats.FORMATS[key].description if key in formats.FORMATS else key


def detect_format(path: str | os.PathLike) -> str:
    """The model format of ``path`` as the registry (:func:`optkit.runtimes.formats.find`) tells it: a key of
    :data:`FORMATS`, or ``"torch_pickle"`` for ``.pt``/``.pth``/``.pkl``/``.pickle``/``.bin``; a
    SavedModel folder reads as ``"keras"``. Anything else is an :class:`OptkitError` naming the
    formats that are read.

    Taught in 10_optimize_your_own_model.
    """
    from optkit.runtimes import formats

    p = Path(path)
    fmt = formats.find(p)
    if p.is_dir() and fmt is None:
        raise OptkitError("model_path", str(path), "is a folder but not a SavedModel (no saved_model.pb)",
                          "pass a model file (.onnx, .pt2, .keras, .h5, .tflite) or a SavedModel folder")
    if fmt is not None:
        return "keras" if fmt.key == "saved_model" else fmt.key  # a SavedModel is read as a Keras model
    suffix = p.suffix.lower()
    raise OptkitError("model_path", str(path), f"has a format optkit optimize does not read ({suffix or 'no suffix'})",
                      "pass an ONNX model (.onnx), a torch.export program (.pt2), a Keras model (.keras, .h5 or "
                      "a SavedModel folder) or a TFLite file (.tflite)")


def _onnx_int_ranges(path: Path) -> dict[str, int]:
    """For integer inputs that reach a Gather on a weight table within a few nodes: its row count."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    tables = {t.name: (list(t.dims) or [0])[0] for t in proto.graph.initializer}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ranges = {}
    for inp in proto.graph.input:
        if inp.type.tensor_type.elem_type not in (6, 7):  # int32, int64
            continue
        frontier, seen = [inp.name], set()
        for _ in range(4):
            nxt = []
            for name in frontier:
                for n in consumers.get(name, []):
                    if n.op_type == "Gather" and n.input[0] in tables and name != n.input[0]:
                        ranges[inp.name] = min(ranges.get(inp.name, 1 << 62), int(tables[n.input[0]]))
                    elif id(n) not in seen:
                        seen.add(id(n))
                        nxt += list(n.output)
            frontier = nxt
    return ranges


def _inspect_onnx(p: Path) -> ModelSummary:
    import onnx

    from optkit.runtimes import onnxrt as ox

    info = ox.inspect(p)
    proto = onnx.load(str(p), load_external_data=False)
    params = int(sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in proto.graph.initializer))
    return ModelSummary(path=p, format="onnx", inputs=list(info.inputs), outputs=list(info.outputs),
                        size_bytes=int(info.size_bytes), params=params, op_counts=dict(info.op_counts),
                        int_ranges=_onnx_int_ranges(p),
                        details={"opset": info.opset, "producer": info.producer or "unknown",
                                 "external data": info.has_external_data})


def _torch_dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _summary_of_program(ep, path: Path, size_bytes: int, details: dict | None = None) -> ModelSummary:
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    inputs = []
    for name in ep.graph_signature.user_inputs:
        val = placeholders[name].meta.get("val")
        shape = tuple(int(d) if isinstance(d, int) or str(d).isdigit() else str(d) for d in val.shape)
        inputs.append(_spec(name, shape, _torch_dtype_name(val.dtype)))
    outputs = []
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    for i, arg in enumerate(out_node.args[0] if isinstance(out_node.args[0], (list, tuple)) else [out_node.args[0]]):
        val = getattr(arg, "meta", {}).get("val")
        if val is not None and hasattr(val, "shape"):
            shape = tuple(int(d) if isinstance(d, int) or str(d).isdigit() else str(d) for d in val.shape)
            outputs.append(_spec(f"output_{i}", shape, _torch_dtype_name(val.dtype)))
    ops = Counter(str(n.target) for n in ep.graph.nodes if n.op == "call_function")
    params = int(sum(t.numel() for t in ep.state_dict.values()))
    ranges = {}
    for n in ep.graph.nodes:
        if n.op == "call_function" and "embedding" in str(n.target) and len(n.args) >= 2:
            weight, ids = n.args[0], n.args[1]
            w = getattr(weight, "meta", {}).get("val")
            src = ids
            for _ in range(4):  # walk back through casts and clamps to a user input
                if getattr(src, "op", None) == "placeholder" or not getattr(src, "args", None):
                    break
                src = next((a for a in src.args if hasattr(a, "op")), src)
            if w is not None and getattr(src, "name", None) in ep.graph_signature.user_inputs:
                ranges[src.name] = int(w.shape[0])
    return ModelSummary(path=path, format="torch_export", inputs=inputs, outputs=outputs, size_bytes=size_bytes,
                        params=params, op_counts=dict(ops), int_ranges=ranges, details=details or {})


def _names_quantized_ops(p: Path) -> bool:
    """Whether a .pt2 archive's graph uses ``quantized_decomposed`` operators (PT2E int8)."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            return any(b"quantized_decomposed" in z.read(i.filename) for i in z.infolist()
                       if i.filename.endswith(".json") and i.file_size < 50_000_000)
    except (zipfile.BadZipFile, OSError):
        return False


def _inspect_program(p: Path):
    from optkit.runtimes.model_files import file_size, load_program

    if _names_quantized_ops(p):
        # an int8 program from PT2E names torchao's quantized_decomposed operators, which exist only
        # once torchao's pt2e module is imported
        from optkit.techniques.quantize import quiet_torchao

        with quiet_torchao():
            import torchao.quantization.pt2e  # noqa: F401
    ep = load_program(p)
    return _summary_of_program(ep, p, int(file_size(p))), ep


def _inspect_pickle(p: Path, allow_pickle: bool, data_path: Path | None):
    if not allow_pickle:
        raise OptkitError("model_path", str(p), "is a pickled PyTorch file: loading it runs whatever code the file "
                          "names, so optkit optimize refuses it by default",
                          "export the model with torch.export and save it as .pt2 (optkit.runtimes.model_files.save_program), or "
                          "ONNX; if you trust the file, opt in with allow_pickle=True (--allow-pickle)")
    import torch

    from optkit.runtimes.model_files import file_size, load_state_dict

    obj = load_state_dict(p, allow_pickle=True)
    if isinstance(obj, dict):
        raise OptkitError("model_path", str(p), "holds a state dict (weights only), not a model",
                          "build the model in code, load the weights, torch.export it and save it as .pt2 "
                          "(optkit.runtimes.model_files.save_program)")
    if not isinstance(obj, torch.nn.Module):
        raise OptkitError("model_path", str(p), f"holds a {type(obj).__name__}, not a torch.nn.Module",
                          "save a torch.export program (.pt2) instead")
    if data_path is None:
        raise OptkitError("data_path", None, "a pickled module carries no input signature, so example inputs are "
                          "needed to export it", "pass data (--data DATA.npz) with example inputs")
    arrays = _read_npz(data_path)
    example = tuple(torch.from_numpy(np.ascontiguousarray(a[:2] if len(a) >= 2 else np.concatenate([a, a])))
                    for k, a in arrays.items() if k not in LABEL_KEYS)
    model = obj.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as e:
        raise OptkitError("model_path", str(p), f"could not be exported with torch.export on your data "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
                          "export it yourself (torch.export.export) and pass the .pt2") from None
    return _summary_of_program(ep, p, int(file_size(p)), {"loaded from": "pickle (allow_pickle=True), "
                                                          "exported with torch.export on your data"}), ep


def _keras_spec(t, default_name: str):
    shape = tuple(("batch" if i == 0 else f"dim{i}") if d is None else int(d) for i, d in enumerate(t.shape))
    dtype = getattr(t.dtype, "name", t.dtype)
    name = getattr(t, "name", None) or default_name
    name = str(name).split(":")[0]
    return _spec(name, shape, str(dtype))


def _inspect_keras(p: Path, threads: int | None):
    from optkit.runtimes import tflow as otf
    from optkit.runtimes.model_files import file_size

    with warnings.catch_warnings():  # a second call cannot change TF's threads; it says so, harmlessly
        warnings.simplefilter("ignore")
        otf.import_tensorflow(threads)
    model = otf.load_keras(p)
    inputs = [_keras_spec(t, f"input_{i}") for i, t in enumerate(model.inputs)]
    outputs = [_keras_spec(t, f"output_{i}") for i, t in enumerate(model.outputs)]
    layers = Counter(type(layer).__name__ for layer in model.layers if type(layer).__name__ != "InputLayer")
    ranges = {}
    emb = [layer for layer in model.layers if type(layer).__name__ == "Embedding"]
    if emb and len(inputs) == 1 and inputs[0].dtype.startswith("int"):
        ranges[inputs[0].name] = int(min(layer.input_dim for layer in emb))
    summary = ModelSummary(path=p, format="keras", inputs=inputs, outputs=outputs, size_bytes=int(file_size(p)),
                           params=int(model.count_params()), op_counts=dict(layers), int_ranges=ranges,
                           details={"keras": otf.keras_flavour(model) or "?"})
    return summary, model


def _inspect_tflite(p: Path, threads: int | None):
    from optkit.runtimes import tflow as otf

    runner = otf.LiteRT(p, num_threads=threads)
    inputs, notes = [], []
    for d in runner.input_details:
        sig = d.get("shape_signature")
        sig = list(sig) if sig is not None and len(sig) else list(d["shape"])
        shape = tuple(("batch" if i == 0 else f"dim{i}") if int(v) == -1 else int(v) for i, v in enumerate(sig))
        dtype = np.dtype(d["dtype"]).name
        scale = (d.get("quantization") or (0.0, 0))[0]
        if dtype in ("int8", "uint8") and scale:
            notes.append(f"input {d['name']!r} is {dtype} (scale {scale:.4g}); pass float data, LiteRT quantizes it")
            dtype = "float32"
        inputs.append(_spec(d["name"], shape, dtype))
    outputs = []
    for d in runner.output_details:
        sig = d.get("shape_signature")
        sig = list(sig) if sig is not None and len(sig) else list(d["shape"])
        shape = tuple(("batch" if i == 0 else f"dim{i}") if int(v) == -1 else int(v) for i, v in enumerate(sig))
        outputs.append(_spec(d["name"], shape, "float32"))
    ops: Counter = Counter()
    with contextlib.suppress(Exception):
        ops.update(op["op_name"] for op in runner.interpreter._get_ops_details())
    details = {"tensor dtypes": otf.tensor_dtypes(runner)}
    if notes:
        details["note"] = "; ".join(notes)
    return ModelSummary(path=p, format="tflite", inputs=inputs, outputs=outputs, size_bytes=int(p.stat().st_size),
                        op_counts=dict(ops), details=details), runner


def inspect_model(model_path: str | os.PathLike, *, allow_pickle: bool = False,
                  data_path: str | os.PathLike | None = None, threads: int | None = None) -> ModelSummary:
    """Read ``model_path`` and describe it (a :class:`ModelSummary`); nothing is written.

    ``data_path`` is only needed for a pickled module (``allow_pickle=True``), which is exported
    with ``torch.export`` on those inputs. A missing file, an unknown format or a pickle without
    ``allow_pickle`` is an :class:`OptkitError`.

    Taught in 10_optimize_your_own_model.
    """
    return _load_model(model_path, allow_pickle=allow_pickle, data_path=data_path, threads=threads)[0]


def _load_model(model_path, *, allow_pickle: bool = False, data_path=None, threads=None):
    """(summary, loaded object, cache entries) for the format: the program, the Keras model, ..."""
    from optkit.core.errors import check_path_exists

    if model_path is None or str(model_path) == "":
        raise OptkitError("model_path", model_path, "is empty", "pass the path of your model file")
    p = check_path_exists("model_path", model_path)
    fmt = detect_format(p)
    try:
        if fmt == "onnx":
            return _inspect_onnx(p), None, {}
        if fmt == "torch_export":
            summary, ep = _inspect_program(p)
            return summary, ep, {"program": ep}
        if fmt == "torch_pickle":
            summary, ep = _inspect_pickle(p, allow_pickle, None if data_path in (None, "") else Path(data_path))
            return summary, ep, {"program": ep}
        if fmt == "keras":
            summary, model = _inspect_keras(p, threads)
            return summary, model, {"keras_model": model}
        summary, runner = _inspect_tflite(p, threads)
        return summary, runner, {}
    except OptkitError as e:
        if e.parameter in ("path", "src"):  # the format loaders name their own argument "path"
            raise OptkitError("model_path", str(p), e.problem, e.fix) from None
        raise


# =============================================================================== the data

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

    Taught in 10_optimize_your_own_model.
    """

    inputs: dict
    labels: np.ndarray | None
    source: str
    path: Path | None = None
    n_calibration: int = 0
    notes: list = field(default_factory=list)

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
        return [{k: np.ascontiguousarray(v[i:i + size]) for k, v in self.inputs.items()}
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
        return _jsonable({"source": self.source, "path": None if self.path is None else str(self.path),
                          "n": self.n, "n_calibration": self.n_calibration, "n_eval": self.n_eval,
                          "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in self.inputs.items()},
                          "labels": self.labels is not None, "notes": self.notes})

    def __repr__(self) -> str:
        return (f"SampleData({self.source}, {self.n} examples, "
                f"{'labelled' if self.labels is not None else 'no labels'}, calibration {self.n_calibration})")


def _shape_text(spec) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"


def _fit_array(spec, arr: np.ndarray, key: str, path: Path, notes: list) -> np.ndarray:
    where = f"array {key!r} of {path.name}"
    if arr.ndim != len(spec.shape):
        hint = ""
        if arr.ndim == len(spec.shape) - 1:
            hint = " (a single example? keep the batch axis first: x[None])"
        raise OptkitError("data_path", f"{where}: shape {arr.shape}",
                          f"does not fit the model input {spec.name!r} {spec.dtype}{_shape_text(spec)}: rank "
                          f"{arr.ndim}, the model expects rank {len(spec.shape)}{hint}",
                          "save inputs shaped like the model input, batch axis first")
    bad = [i for i, (d, g) in enumerate(zip(spec.shape, arr.shape)) if i > 0 and isinstance(d, int) and d != g]
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
        return np.ascontiguousarray(arr)
    if np.issubdtype(want, np.floating) and np.issubdtype(arr.dtype, np.floating):
        notes.append(f"{key}: {arr.dtype} converted to the model's {want}")
        return np.ascontiguousarray(arr.astype(want))
    if np.issubdtype(want, np.integer) and np.issubdtype(arr.dtype, np.integer):
        return np.ascontiguousarray(arr.astype(want))
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
              seed: int = 0) -> SampleData:
    """The sample of data a run uses, checked against the model's inputs.

    ``data_path``: an ``.npz`` with one array per model input (named like the input) or, for a
    single-input model, any one array; labels optional under ``y``, ``labels``, ``label`` or
    ``targets``. Floats are converted to the model's float type; integer data for a float input,
    a wrong rank or fixed dimension, and labels of the wrong length are each an
    :class:`OptkitError` naming the array. ``None`` (or ``""``) generates inputs from the
    signature: uniform [0, 1) floats, integer ids below the embedding's row count (or 0/1),
    16 for dynamic non-batch dimensions; then only latency and parity mean something.

    Taught in 10_optimize_your_own_model.
    """
    from optkit.core.errors import check_path_exists

    notes: list[str] = []
    if data_path is None or str(data_path) == "":
        n = max(64, max(batch_sizes))
        rng = np.random.default_rng(seed)
        inputs = {}
        for s in summary.inputs:
            shape = [n] + [d if isinstance(d, int) else 16 for d in s.shape[1:]]
            if any(not isinstance(d, int) for d in s.shape[1:]):
                notes.append(f"{s.name}: dynamic dimensions set to 16")
            dtype = np.dtype("float32" if s.dtype == "bfloat16" else s.dtype)
            if np.issubdtype(dtype, np.floating):
                inputs[s.name] = rng.random(shape, dtype=np.float64).astype(dtype)
            elif dtype == np.bool_:
                inputs[s.name] = rng.random(shape) < 0.5
            else:
                high = int(summary.int_ranges.get(s.name, 2))
                inputs[s.name] = rng.integers(0, high, size=shape).astype(dtype)
        notes.append("no data given: inputs were generated from the input signature, so latency and parity are "
                     "measured but accuracy is not, and int8 calibration on random inputs says little about "
                     "your data; pass data_path for real numbers")
        return SampleData(inputs=inputs, labels=None, source="generated", path=None, n_calibration=0, notes=notes)

    p = check_path_exists("data_path", data_path)
    arrays = _read_npz(p)
    label_keys = [k for k in arrays if k in LABEL_KEYS]
    if len(label_keys) > 1:
        raise OptkitError("data_path", str(p), f"holds several label arrays {label_keys}", "keep one, named 'y'")
    rest = {k: v for k, v in arrays.items() if k not in LABEL_KEYS}
    names = [s.name for s in summary.inputs]
    if not rest:
        raise OptkitError("data_path", str(p), f"holds only labels ({label_keys})",
                          "add the inputs: np.savez(path, x=inputs, y=labels)")
    if len(names) == 1:
        if names[0] in rest:
            chosen = {names[0]: (names[0], rest[names[0]])}
        elif len(rest) == 1:
            (k, v), = rest.items()
            chosen = {names[0]: (k, v)}
        else:
            raise OptkitError("data_path", f"arrays {sorted(rest)}", f"the model has one input {names[0]!r} and the "
                              "file several input arrays", f"keep one input array, or name it {names[0]!r}")
    else:
        missing = [n for n in names if n not in rest]
        if missing:
            raise OptkitError("data_path", f"arrays {sorted(rest)}", f"lack the model inputs {missing}",
                              f"save one array per input, named {names}")
        chosen = {n: (n, rest[n]) for n in names}
    inputs = {}
    for spec in summary.inputs:
        key, arr = chosen[spec.name]
        inputs[spec.name] = _fit_array(spec, arr, key, p, notes)
    sizes = {k: len(v) for k, v in inputs.items()}
    if len(set(sizes.values())) != 1:
        raise OptkitError("data_path", sizes, "input arrays hold different numbers of examples",
                          "save the same number of rows for every input")
    n = next(iter(sizes.values()))
    if n == 0:
        raise OptkitError("data_path", str(p), "holds no examples (0 rows)", "save at least one example")
    labels = _labels(arrays[label_keys[0]], n, p, label_keys[0]) if label_keys else None
    if labels is not None:
        out = summary.outputs[0] if summary.outputs else None
        classes = out.shape[-1] if out is not None and len(out.shape) == 2 and isinstance(out.shape[-1], int) else None
        if classes is not None and classes >= 2 and labels.max() >= classes:
            raise OptkitError("data_path", f"labels up to {int(labels.max())}",
                              f"the model's output {out.name!r} has {classes} classes (0..{classes - 1})",
                              "check that the labels belong to this model's classes")
    for k, v in inputs.items():
        if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            raise OptkitError("data_path", f"array for {k!r}", "holds NaN or infinite values",
                              "clean the data first")
    n_cal = _split(n, notes)
    return SampleData(inputs=inputs, labels=labels, source="file", path=p, n_calibration=n_cal, notes=notes)


# =============================================================================== verification

@dataclass
class Check:
    """How a candidate compares with the original on the evaluation rows.

    ``parity``: :class:`optkit.core.verify.Parity` of all outputs against the baseline's.
    ``accuracy``: on the labels (None without labels). ``quality`` and ``quality_kind``: the
    number eligibility is judged by: ``"accuracy"`` (with labels), ``"agreement"`` (top-1
    agreement with the original, without labels) or ``"sqnr_db"`` (outputs that are not class
    scores). ``drop_points``: how many points it lost against the baseline. ``ok``: eligible to be
    recommended; ``why``: the reason when not.

    Taught in 10_optimize_your_own_model.
    """

    name: str
    parity: Any
    accuracy: float | None
    quality: float
    quality_kind: str
    drop_points: float | None
    ok: bool
    why: str = ""

    def to_dict(self) -> dict:
        return _jsonable({"name": self.name, "parity": self.parity.to_dict(), "accuracy": self.accuracy,
                          "quality": self.quality, "quality_kind": self.quality_kind,
                          "drop_points": self.drop_points, "ok": self.ok, "why": self.why})

    def __repr__(self) -> str:
        q = (f"{self.quality:.1f} dB" if self.quality_kind == "sqnr_db" else f"{100 * self.quality:.2f} %")
        drop = "" if self.drop_points is None else f", drop {self.drop_points:+.2f} points"
        return (f"Check({self.name!r}: {self.quality_kind} {q}{drop}, SQNR {self.parity.sqnr_db:.1f} dB, "
                f"{'eligible' if self.ok else 'not eligible: ' + self.why})")


def predictions(output: np.ndarray) -> np.ndarray | None:
    """Class ids from a model's first output: arg-max of ``(N, classes)`` scores, a 0.5 (for
    probabilities) or 0 (for logits) threshold on ``(N,)`` or ``(N, 1)``; None for other shapes.

    Taught in 10_optimize_your_own_model.
    """
    o = np.asarray(output)
    if o.ndim == 2 and o.shape[1] >= 2:
        return o.argmax(1)
    if o.ndim == 1 or (o.ndim == 2 and o.shape[1] == 1):
        o = o.reshape(len(o))
        cut = 0.5 if (o.min() >= 0 and o.max() <= 1) else 0.0
        return (o > cut).astype(np.int64)
    return None


def _run_chunked(run: Callable[[dict], list], inputs: dict, chunk: int) -> list[np.ndarray]:
    n = len(next(iter(inputs.values())))
    parts: list[list[np.ndarray]] = []
    for start in range(0, n, chunk):
        feed = {k: v[start:start + chunk] for k, v in inputs.items()}
        m = len(next(iter(feed.values())))
        if m < chunk:  # pad to the timed batch shape, so compiled candidates see no new shape
            feed = {k: np.concatenate([v, np.repeat(v[-1:], chunk - m, axis=0)]) for k, v in feed.items()}
        out = [np.asarray(o) for o in run(feed)]
        parts.append([o[:m] if o.ndim and o.shape[0] == chunk else o for o in out])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


# =============================================================================== recommendation

@dataclass
class Recommendation:
    """The candidate to use, and why.

    ``name`` (None when nothing was measured), ``reason`` (a paragraph built from the numbers),
    ``eligible`` (candidates within the allowed drop, fastest first), ``rejected`` (name -> why
    not eligible), ``speedup`` and ``size_ratio`` against the baseline at ``batch_size``.

    Taught in 10_optimize_your_own_model.
    """

    name: str | None
    reason: str
    batch_size: int | None
    eligible: list = field(default_factory=list)
    rejected: dict = field(default_factory=dict)
    speedup: float | None = None
    size_ratio: float | None = None
    artifact: str | None = None

    def to_dict(self) -> dict:
        return _jsonable(self.__dict__)

    def __repr__(self) -> str:
        if self.name is None:
            return "Recommendation(none)"
        extra = "" if self.speedup is None else f", {self.speedup:.2f}x faster, {self.size_ratio:.2f}x smaller"
        return f"Recommendation({self.name!r} at batch {self.batch_size}{extra})"


def recommend(records: Sequence, *, batch_size: int | None = None, tie: float = TIE_TOLERANCE) -> str | None:
    """The rule: among records at ``batch_size`` (default: the largest) whose ``extra["eligible"]``
    is true, take the lowest ``latency_ms``; every record within ``tie`` (5 %) of it counts as
    tied, and of those the smallest ``size_bytes`` wins; at equal size the ``"baseline"`` record
    wins (a change must pay more than the noise), then the lower latency. Returns the name, or
    None if no record is eligible.

    Taught in 10_optimize_your_own_model.
    """
    rows = [r for r in records if r.latency_ms is not None and math.isfinite(r.latency_ms)]
    if not rows:
        return None
    bs = batch_size if batch_size is not None else max(r.batch_size or 0 for r in rows)
    ok = [r for r in rows if (r.batch_size or 0) == bs and (r.extra or {}).get("eligible")]
    if not ok:
        return None
    fastest = min(r.latency_ms for r in ok)
    tied = [r for r in ok if r.latency_ms <= fastest * (1.0 + tie)]
    best = min(tied, key=lambda r: (r.size_bytes if r.size_bytes is not None else math.inf, r.name != "baseline",
                                    r.latency_ms))
    return best.name


# =============================================================================== helpers

def _jsonable(value: Any) -> Any:
    return jsonable(value, strict=False)


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    msg = text[0][:limit] if text else ""
    if isinstance(e, (OptkitError, RecipeSkipped)):
        return msg or type(e).__name__
    if isinstance(e, NotImplementedError) and not msg:
        return "NotImplementedError (its build function is not written yet)"
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def _check_list_of(parameter: str, value: Any, allowed: Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise OptkitError(parameter, value, "must be a list of names", f"pass e.g. [{', '.join(map(repr, (allowed or ['name'])[:2]))}]")
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise OptkitError(parameter, unknown, "are not known names", "use some of " + ", ".join(allowed))
    return list(value)


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _fresh_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = parent / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OptkitError("output_dir", str(parent), "has no free run folder name", "choose another output_dir")


# =============================================================================== the run

@dataclass
class Outcome:
    """A recipe that produced no candidate: ``status`` is ``"skipped"`` (does not apply here) or
    ``"failed"`` (it raised, or its candidate failed verification), with the ``reason``."""

    recipe: str
    status: str
    reason: str
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return _jsonable(self.__dict__)

    def __repr__(self) -> str:
        return f"{self.recipe}: {self.status} - {self.reason}"


class Optimization:
    """One capstone run on one model: the steps as methods, their results as attributes.

    Parameters (the same names as notebook 10's and the ``optkit optimize`` options):
    ``model_path`` (None: the bundled reference CNN, with its data), ``data_path`` (an ``.npz``;
    None: generated inputs, unless the model is the reference), ``max_accuracy_drop`` (points,
    default 1), ``batch_sizes`` (timed; the largest decides the recommendation), ``runtimes``
    (restrict to some of :data:`RUNTIMES`), ``recipes`` (restrict to some recipe names),
    ``time_budget_s`` (soft budget for building and timing candidates: recipes still waiting when
    60 % of it is spent are skipped, timing shares the rest), ``output_dir``, ``threads`` (None:
    every core this process may use), ``allow_pickle``, ``min_sqnr_db`` (eligibility when outputs
    are not class scores and there are no labels), ``log`` (a function receiving progress lines).

    Attributes filled as the steps run: ``summary``, ``data``, ``baseline``, ``candidates``,
    ``outcomes`` (skipped and failed recipes), ``checks``, ``comparisons`` (batch size ->
    :class:`optkit.core.bench.Comparison`), ``records``, ``recommendation``, ``run_dir``.

    Taught in 10_optimize_your_own_model.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, data_path: str | os.PathLike | None = None, *,
                 max_accuracy_drop: float = 1.0, batch_sizes: Sequence[int] = (1, 32),
                 runtimes: Sequence[str] | None = None, recipes: Sequence[str] | None = None,
                 time_budget_s: float = 45.0, output_dir: str | os.PathLike = "optkit-optimize",
                 threads: int | None = None, allow_pickle: bool = False, min_sqnr_db: float = 20.0,
                 run_name: str | None = None, log: Callable[[str], Any] | None = print):
        from optkit.core.errors import check_range

        if model_path is None or str(model_path) == "":
            model_path = REFERENCE_MODEL
            if data_path is None or str(data_path) == "":
                data_path = REFERENCE_DATA
        self.model_path = Path(model_path).expanduser()
        self.data_path = None if data_path is None or str(data_path) == "" else Path(data_path).expanduser()
        check_range("max_accuracy_drop", max_accuracy_drop, 0, 100)
        self.max_accuracy_drop = float(max_accuracy_drop)
        if isinstance(batch_sizes, int) and not isinstance(batch_sizes, bool):
            batch_sizes = [batch_sizes]
        if not isinstance(batch_sizes, (list, tuple)) or not batch_sizes or not all(
                isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 65536 for b in batch_sizes):
            raise OptkitError("batch_sizes", batch_sizes, "must be a non-empty list of whole numbers from 1 to 65536",
                              "pass e.g. [1, 32]")
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        self.runtimes = _check_list_of("runtimes", runtimes, list(RUNTIMES))
        self.recipe_names = _check_list_of("recipes", recipes, [r.name for r in all_recipes()])
        check_range("time_budget_s", time_budget_s, 0, low_open=True)
        self.time_budget_s = float(time_budget_s)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise OptkitError("threads", threads, "must be a positive whole number or None", "pass e.g. 2")
        self.threads = int(threads) if threads is not None else _default_threads()
        out = Path(output_dir).expanduser()
        if out.exists() and not out.is_dir():
            raise OptkitError("output_dir", str(output_dir), "is a file, not a folder", "pass a folder path")
        self.output_dir = out
        if not isinstance(allow_pickle, bool):
            raise OptkitError("allow_pickle", allow_pickle, "must be True or False", "pass allow_pickle=True to opt in")
        self.allow_pickle = allow_pickle
        check_range("min_sqnr_db", min_sqnr_db, 0)
        self.min_sqnr_db = float(min_sqnr_db)
        if run_name is not None and (not isinstance(run_name, str) or not re.fullmatch(r"[\w.\-]+", run_name)):
            raise OptkitError("run_name", run_name, "must be letters, digits, '.', '-' or '_'", "pass e.g. 'trial-1'")
        self.run_name = run_name
        self.log = log or (lambda line: None)
        self.summary: ModelSummary | None = None
        self.data: SampleData | None = None
        self.baseline: Candidate | None = None
        self.candidates: list[Candidate] = []
        self.outcomes: list[Outcome] = []
        self.checks: dict[str, Check] = {}
        self.baseline_timing: dict = {}
        self.comparisons: dict = {}
        self.records: list = []
        self.recommendation: Recommendation | None = None
        self.run_dir: Path | None = None
        self.env: dict = {}
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self._cache: dict = {}
        self._loaded = None
        self._reference_outputs: list | None = None
        self._budget_start: float | None = None
        self._started = time.perf_counter()
        self._started_at = _dt.datetime.now().isoformat(timespec="seconds")

    @property
    def elapsed_s(self) -> float:
        """Seconds since this Optimization was created."""
        return time.perf_counter() - self._started

    # ----------------------------------------------------------------- steps
    def _say(self, line: str) -> None:
        self.log(line)

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def inspect(self) -> ModelSummary:
        """Step 1: read the model and describe it (see :class:`ModelSummary`)."""
        start = time.perf_counter()
        summary, loaded, cache = _load_model(self.model_path, allow_pickle=self.allow_pickle,
                                             data_path=self.data_path, threads=self.threads)
        self.summary, self._loaded = summary, loaded
        self._cache.update(cache)
        fixed = [s.shape[0] for s in summary.inputs if s.shape and isinstance(s.shape[0], int)]
        if summary.inputs and len(fixed) == len(summary.inputs) and self.batch_sizes != [min(fixed)]:
            self.notes.append(f"the model fixes its batch size at {min(fixed)}, so it is timed at batch "
                              f"{min(fixed)} only (batch_sizes asked for {self.batch_sizes})")
            self.batch_sizes = [min(fixed)]
        self._timed("inspect", start)
        self._say(f"[optimize] model: {Path(summary.path).name} ({_format_text(summary.format)}, "
                  f"{summary.size_bytes / 1e6:.2f} MB)")
        return summary

    def _set_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def load_data(self) -> SampleData:
        """Step 1b: read and check the data (see :func:`load_data`); build the baseline runner and
        run it once on the data, so a model that cannot take this data fails here, clearly."""
        if self.summary is None:
            self.inspect()
        start = time.perf_counter()
        self._set_threads()
        self.data = load_data(self.data_path, self.summary, batch_sizes=self.batch_sizes)
        self.baseline = self._baseline_candidate()
        probe = self.data.batch(min(self.batch_sizes))
        try:
            self.baseline.run(probe)
        except OptkitError as e:
            raise OptkitError("data_path", str(self.data_path or "generated inputs"),
                              f"the model cannot run on it: {e}", "check the data against the model's inputs") from None
        except Exception as e:
            raise OptkitError("data_path", str(self.data_path or "generated inputs"),
                              f"the model failed on the first examples ({_first_line(e, 200)})",
                              "check the data against the model's inputs (shapes, dtypes, value ranges)") from None
        if self.data.labels is not None:
            out = self.baseline.run(probe)[0]
            if predictions(out) is None:
                raise OptkitError("data_path", str(self.data_path), f"has labels, but the model's first output has "
                                  f"shape {np.asarray(out).shape}, which is not one score per class",
                                  "drop the labels (quality is then agreement with the original model)")
        self._timed("load_data", start)
        self._say(f"[optimize] data: {self.data.n} examples"
                  + (" with labels" if self.data.labels is not None else " without labels")
                  + ("" if self.data.source == "file" else " (generated)"))
        return self.data

    def _baseline_candidate(self) -> Candidate:
        s = self.summary
        ctx = self._context()
        if s.format == "onnx":
            c = ort_candidate(ctx, "baseline", "baseline", "as given (ORT defaults)", Path(s.path),
                              artifact=False)
        elif s.format == "torch_export":
            c = Candidate("baseline", "baseline", "as given (eager)", "pytorch",
                          torch_runner(ctx, self._cache["program"].module()), size_bytes=s.size_bytes)
        elif s.format == "keras":
            from optkit.runtimes import tflow as otf

            if len(s.inputs) != 1:
                raise OptkitError("model_path", str(s.path), f"has {len(s.inputs)} inputs; only single-input Keras "
                                  "models are handled", "export it to ONNX (tf2onnx) and pass the .onnx")
            predict = otf.keras_predict(self._cache["keras_model"])
            name = s.inputs[0].name
            c = Candidate("baseline", "baseline", "as given (Keras, tf.function)", "tensorflow",
                          lambda feed: [predict(feed[name])], size_bytes=s.size_bytes)
        else:
            c = litert_candidate(ctx, "baseline", "baseline", "as given (LiteRT)", Path(s.path), artifact=False)
        c.notes.append("The model as you gave it, in its own runtime with default settings: the reference "
                       "every candidate is compared with.")
        return c

    def _context(self) -> Context:
        artifacts = (self.run_dir / "artifacts") if self.run_dir is not None else Path(os.devnull)
        return Context(summary=self.summary, data=self.data, artifacts=artifacts, threads=self.threads,
                       baseline=self.baseline, cache=self._cache, gpu=_gpu())

    def measure_baseline(self, max_time_s: float = 0.5) -> dict:
        """Step 2: time the model as given at each batch size with :func:`optkit.core.bench.measure`
        (the closing comparison times it again, interleaved with the candidates)."""
        from optkit.core import bench

        if self.baseline is None:
            self.load_data()
        start = time.perf_counter()
        for bs in self.batch_sizes:
            feed = self.data.batch(bs)
            self.baseline_timing[bs] = bench.measure(lambda f=feed: self.baseline.run(f), name=f"baseline b{bs}",
                                                     batch_size=bs, warmup=2, min_repeats=5, max_time_s=max_time_s,
                                                     threads=self.threads)
        self._timed("baseline", start)
        self._say("[optimize] baseline: " + ", ".join(f"batch {bs} {m.median_ms:.3g} ms"
                                                      for bs, m in self.baseline_timing.items()))
        return self.baseline_timing

    def applicable_recipes(self) -> list[Recipe]:
        """The recipes this run will try: those for the model's format, filtered by ``runtimes``
        and ``recipes``."""
        if self.summary is None:
            self.inspect()
        fmt = "torch_export" if self.summary.format == "torch_pickle" else self.summary.format
        return recipes_for(fmt, self.runtimes, self.recipe_names)

    def _ensure_run_dir(self) -> Path:
        if self.run_dir is None:
            stem = re.sub(r"[^\w.\-]+", "_", Path(self.model_path).stem) or "model"
            self.run_dir = _fresh_dir(self.output_dir, self.run_name or f"{_stamp()}-{stem}")
        return self.run_dir

    def try_recipes(self, recipes: Sequence[Recipe] | None = None) -> list[Candidate]:
        """Step 3: build a candidate with every applicable recipe (or the given ones), each caught
        on its own: a recipe that raises :class:`RecipeSkipped` is reported as skipped, any other
        error as failed, and the others go on. Artifacts go to ``<run dir>/artifacts``. Applicable
        recipes still waiting when 60 % of ``time_budget_s`` is spent are skipped; recipes passed
        here explicitly are always tried."""
        if self.baseline is None:
            self.load_data()
        self._ensure_run_dir()
        if self._budget_start is None:
            self._budget_start = time.perf_counter()
        ctx = self._context()
        todo = list(recipes) if recipes is not None else self.applicable_recipes()
        phase = time.perf_counter()
        for recipe in todo:
            spent = time.perf_counter() - self._budget_start
            if recipes is None and spent > 0.6 * self.time_budget_s:  # recipes you name are always tried
                self._outcome(recipe.name, "skipped", f"time budget: {spent:.0f} s of time_budget_s="
                              f"{self.time_budget_s:g} spent before it could start")
                continue
            start = time.perf_counter()
            try:
                with _quiet_warnings():
                    cand = recipe.build(ctx)
                if not isinstance(cand, Candidate):
                    raise TypeError(f"build returned {type(cand).__name__}, not a Candidate")
            except RecipeSkipped as e:
                self._outcome(recipe.name, "skipped", str(e), time.perf_counter() - start)
                continue
            except Exception as e:  # one recipe failing must not stop the others
                self._outcome(recipe.name, "failed", _first_line(e), time.perf_counter() - start)
                continue
            cand.build_s = time.perf_counter() - start
            if any(c.name == cand.name for c in [self.baseline, *self.candidates]):
                cand.name = f"{cand.name}-{len(self.candidates) + 1}"
            self.candidates.append(cand)
            self._say(f"[optimize] built {cand.name} ({cand.technique}) in {cand.build_s:.1f} s")
        self._timed("recipes", phase)
        return self.candidates

    def _outcome(self, recipe: str, status: str, reason: str, seconds: float = 0.0) -> None:
        self.outcomes.append(Outcome(recipe, status, reason, seconds))
        self._say(f"[optimize] {status} {recipe}: {reason}")

    def _chunk(self) -> int:
        return max(self.batch_sizes)

    def _reference(self) -> list[np.ndarray]:
        if self._reference_outputs is None:
            self._reference_outputs = _run_chunked(self.baseline.run, self.data.eval_inputs(), self._chunk())
        return self._reference_outputs

    def _quality(self, name: str, outs: list[np.ndarray], base_acc: float | None) -> Check:
        from optkit.core.verify import compare_outputs

        ref = self._reference()
        parity = compare_outputs(ref if len(ref) > 1 else ref[0], outs if len(outs) > 1 else outs[0])
        labels = self.data.eval_labels()
        finite = all(np.all(np.isfinite(o)) for o in outs if np.issubdtype(o.dtype, np.floating))
        accuracy = None
        if labels is not None:
            accuracy = float(np.mean(predictions(outs[0]) == labels))
            kind, quality = "accuracy", accuracy
            drop = 100.0 * ((base_acc if base_acc is not None else accuracy) - accuracy)
            ok = drop <= self.max_accuracy_drop + 1e-9
            why = "" if ok else f"accuracy drop {drop:.2f} points > max_accuracy_drop {self.max_accuracy_drop:g}"
        elif predictions(ref[0]) is not None and predictions(outs[0]) is not None:
            agreement = float(np.mean(predictions(ref[0]) == predictions(outs[0])))
            kind, quality = "agreement", agreement
            drop = 100.0 * (1.0 - agreement)
            ok = drop <= self.max_accuracy_drop + 1e-9
            why = "" if ok else (f"top-1 agreement with the original {100 * agreement:.2f} % (drop {drop:.2f} "
                                 f"points > max_accuracy_drop {self.max_accuracy_drop:g})")
        else:
            kind, quality, drop = "sqnr_db", parity.sqnr_db, None
            ok = parity.sqnr_db >= self.min_sqnr_db
            why = "" if ok else f"SQNR {parity.sqnr_db:.1f} dB < min_sqnr_db {self.min_sqnr_db:g}"
        if not finite:
            ok, why = False, "outputs hold NaN or infinite values"
        return Check(name=name, parity=parity, accuracy=accuracy, quality=quality, quality_kind=kind,
                     drop_points=drop, ok=ok, why=why)

    def verify(self) -> dict[str, Check]:
        """Step 4: run the baseline and every candidate on the evaluation rows (in chunks of the
        largest batch size) and compare: parity, accuracy or agreement, eligibility. A candidate
        that raises here is dropped and reported as failed."""
        if self.baseline is None:
            self.load_data()
        start = time.perf_counter()
        base_outs = self._reference()
        base_acc = None
        if self.data.labels is not None:
            base_acc = float(np.mean(predictions(base_outs[0]) == self.data.eval_labels()))
        self.checks["baseline"] = self._quality("baseline", base_outs, base_acc)
        kept = []
        for cand in self.candidates:
            if cand.name in self.checks:
                kept.append(cand)
                continue
            try:
                with _quiet_warnings():
                    outs = _run_chunked(cand.run, self.data.eval_inputs(), self._chunk())
                check = self._quality(cand.name, outs, base_acc)
            except Exception as e:
                self._outcome(cand.recipe, "failed", f"its candidate failed on your data: {_first_line(e)}")
                continue
            self.checks[cand.name] = check
            kept.append(cand)
            self._say(f"[optimize] verified {cand.name}: " + _check_text(check))
        self.candidates = kept
        self._timed("verify", start)
        return self.checks

    def benchmark(self, max_time_s: float | None = None) -> dict:
        """Step 5: one interleaved :func:`optkit.core.bench.compare` of the baseline and every verified
        candidate per batch size. ``max_time_s`` per variant and batch size defaults to a share of
        what is left of ``time_budget_s``."""
        from optkit.core import bench

        if not self.checks:
            self.verify()
        start = time.perf_counter()
        variants = [self.baseline] + [c for c in self.candidates if c.name in self.checks]
        if max_time_s is None:
            spent = time.perf_counter() - (self._budget_start or self._started)
            left = max(self.time_budget_s - spent, 0.0)
            max_time_s = min(2.0, max(0.15, 0.85 * left / (len(variants) * len(self.batch_sizes))))
        for bs in self.batch_sizes:
            feed = self.data.batch(bs)
            fns = {c.name: (lambda c=c, f=feed: c.run(f)) for c in variants}
            with _quiet_warnings():
                self.comparisons[bs] = bench.compare(fns, batch_size=bs, rounds=5, warmup=2, min_repeats=5,
                                                     max_repeats=200, max_time_s=max_time_s, threads=self.threads)
            self._say(f"[optimize] timed batch {bs}: " + ", ".join(
                f"{n} {m.median_ms:.3g} ms" for n, m in self.comparisons[bs].measurements.items()))
        self.env = bench.environment()
        self._timed("benchmark", start)
        self._build_records()
        return self.comparisons

    def _build_records(self) -> None:
        from optkit.core.record import Record

        records = []
        variants = [self.baseline] + [c for c in self.candidates if c.name in self.checks]
        for bs, cmp in self.comparisons.items():
            for c in variants:
                if c.name not in cmp.measurements:
                    continue
                check = self.checks[c.name]
                art = None if c.artifact is None else os.path.relpath(c.artifact, self.run_dir) \
                    if self.run_dir is not None else str(c.artifact)
                extra = {"recipe": c.recipe, "eligible": check.ok, "why_not": check.why,
                         "quality": check.quality, "quality_kind": check.quality_kind,
                         "drop_points": check.drop_points, "artifact": art, "build_s": c.build_s,
                         "info": _jsonable(c.info)}
                records.append(Record.from_measurement(
                    cmp.measurements[c.name], name=c.name, technique=c.technique, runtime=c.runtime,
                    size_bytes=c.size_bytes, accuracy=check.accuracy, params=self.summary.params,
                    parity=check.parity.to_dict(), env=self.env, notes=" ".join(c.notes) or None, extra=extra))
        self.records = records

    def table(self, batch_size: int | None = None):
        """A DataFrame of every measured variant at ``batch_size`` (default: the largest), with
        speed-up, size ratio and accuracy change against the baseline, eligibility, and the latency
        at the other batch sizes."""
        from optkit.core import report

        if not self.records:
            raise OptkitError("records", [], "nothing has been timed yet", "run benchmark() first")
        bs = batch_size if batch_size is not None else max(self.batch_sizes)
        rows = [r for r in self.records if r.batch_size == bs]
        frame = report.table(rows, baseline="baseline")
        keep = [c for c in ("technique", "runtime", "latency_ms", "speedup", "size_mb", "size_ratio", "accuracy",
                            "acc_delta") if c in frame.columns]
        frame = frame[keep]
        kinds = {r.extra.get("quality_kind") for r in rows}
        if "agreement" in kinds:
            frame["agreement"] = [r.extra.get("quality") for r in rows]
        if "sqnr_db" in kinds:
            frame["sqnr_db"] = [r.parity.get("sqnr_db") for r in rows]
        frame["eligible"] = [bool(r.extra.get("eligible")) for r in rows]
        base = {r.batch_size: r.latency_ms for r in self.records if r.name == "baseline"}
        for other in self.batch_sizes:
            if other == bs:
                continue
            lat = {r.name: r.latency_ms for r in self.records if r.batch_size == other}
            frame[f"latency_b{other}_ms"] = [lat.get(r.name) for r in rows]
            frame[f"speedup_b{other}"] = [base[other] / lat[r.name] if lat.get(r.name) else None for r in rows]
        return frame

    def recommend(self) -> Recommendation:
        """Step 6: apply :func:`recommend` to the records at the largest batch size and explain
        the choice in one paragraph built from the numbers."""
        if not self.records:
            self.benchmark()
        bs = max(self.batch_sizes)
        rows = {r.name: r for r in self.records if r.batch_size == bs}
        name = recommend(list(rows.values()), batch_size=bs)
        eligible = sorted((r for r in rows.values() if r.extra.get("eligible")), key=lambda r: r.latency_ms)
        rejected = {r.name: r.extra.get("why_not") for r in rows.values() if not r.extra.get("eligible")}
        base = rows["baseline"]
        rec = rows.get(name) if name else None
        self.recommendation = Recommendation(
            name=name, reason=self._explain(rec, base, eligible, rejected, bs), batch_size=bs,
            eligible=[r.name for r in eligible], rejected=rejected,
            speedup=(base.latency_ms / rec.latency_ms) if rec else None,
            size_ratio=(base.size_bytes / rec.size_bytes) if rec and rec.size_bytes and base.size_bytes else None,
            artifact=rec.extra.get("artifact") if rec else None)
        self._say(f"[optimize] recommended: {name}"
                  + (f" ({self.recommendation.speedup:.2f}x faster than the baseline at batch {bs})" if rec else ""))
        return self.recommendation

    def _quality_phrase(self, r) -> str:
        kind, q = r.extra.get("quality_kind"), r.extra.get("quality")
        if kind == "accuracy":
            return f"accuracy {100 * q:.2f} %"
        if kind == "agreement":
            return f"top-1 agreement with the original {100 * q:.2f} %"
        return "SQNR " + ("identical" if q is None or q == math.inf else f"{q:.1f} dB")

    def _explain(self, rec, base, eligible, rejected, bs) -> str:
        from optkit.core import bench

        env = bench.environment_line(self.env) if self.env else "this machine"
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        n_cands = len([r for r in self.records if r.batch_size == bs]) - 1
        basis = {"accuracy": f"accuracy on {self.data.n_eval} labelled examples not used for calibration",
                 "agreement": f"top-1 agreement with the original model on {self.data.n_eval} "
                              + ("of your examples (no labels were given)" if self.data.source == "file"
                                 else "generated inputs"),
                 "sqnr_db": f"SQNR of the outputs against the original (at least {self.min_sqnr_db:g} dB; the "
                            "outputs are not class scores and no labels were given)"}[base.extra["quality_kind"]]
        parts = []
        if rec is None:
            parts.append(f"No candidate, not even the baseline, passed verification at batch {bs}.")
        elif rec.name == "baseline":
            parts.append(f"Keep the model as it is: of {n_cands} candidate(s), none within the allowed quality loss "
                         f"ran more than {100 * TIE_TOLERANCE:.0f} % faster than the baseline ({base.latency_ms:.3g} ms "
                         f"per batch of {bs}) or matched its speed with a smaller file.")
            others = [r for r in eligible if r.name != "baseline"]
            if others:
                parts.append("Eligible candidates, as speed-ups: " + ", ".join(
                    f"{r.name} {base.latency_ms / r.latency_ms:.2f}x" for r in others[:5]) + ".")
        else:
            speed = base.latency_ms / rec.latency_ms
            size = (base.size_bytes / rec.size_bytes) if rec.size_bytes and base.size_bytes else None
            delta = ""
            if rec.extra.get("quality_kind") == "accuracy":
                delta = f" ({100 * (rec.accuracy - base.accuracy):+.2f} points, allowed -{self.max_accuracy_drop:g})"
            elif rec.extra.get("quality_kind") == "agreement":
                delta = (f" (allowed drop {self.max_accuracy_drop:g} point"
                         f"{'' if self.max_accuracy_drop == 1 else 's'})")
            where = (f", file {rec.extra['artifact']}" if rec.extra.get("artifact")
                     else ", no new file: run the original model this way")
            if rec.extra.get("quality_kind") == "sqnr_db":
                quality = f"; {self._quality_phrase(rec)}"
            else:
                quality = f"; {self._quality_phrase(rec)} against {100 * base.extra['quality']:.2f} % for the baseline"
            parts.append(f"Use {rec.name} ({rec.technique}, {rec.runtime}{where}). At batch {bs} it took "
                         f"{rec.latency_ms:.3g} ms per batch against {base.latency_ms:.3g} ms for the baseline, "
                         f"{speed:.2f}x faster{_size_phrase(size, rec.size_bytes, base.size_bytes)}{quality}{delta}.")
            tied = [r for r in eligible if r.name != rec.name and r.latency_ms <= eligible[0].latency_ms * (1 + TIE_TOLERANCE)]
            if tied:
                parts.append(f"{', '.join(r.name for r in tied)} ran within {100 * TIE_TOLERANCE:.0f} % of the fastest "
                             f"and count as tied; the smaller file wins a tie.")
            others = [r for r in eligible if r.name not in (rec.name, "baseline") and r not in tied]
            if others:
                parts.append("Also eligible but slower: " + ", ".join(
                    f"{r.name} {base.latency_ms / r.latency_ms:.2f}x" for r in others[:5]) + ".")
        if rejected:
            parts.append("Not eligible: " + "; ".join(f"{n} ({why})" for n, why in list(rejected.items())[:6]) + ".")
        failed = [o for o in self.outcomes if o.status == "failed"]
        if failed:
            parts.append(f"{len(failed)} recipe(s) failed: " + ", ".join(o.recipe for o in failed) + " (reasons below).")
        parts.append(f"Quality is {basis}. Latencies are medians of one interleaved comparison on {env}, {threads}.")
        if self.data.source == "generated":
            parts.append("No data was given, so inputs were random: re-run with a sample of your data before "
                         "shipping an int8 candidate.")
        return " ".join(parts)

    # ----------------------------------------------------------------- output
    def plot(self):
        """The Pareto plot: quality against latency (left) and against size (right), at the largest
        batch size. The step line joins the candidates no other beats on both axes; grey crosses
        are not eligible, the star is the recommendation. Candidates at the same spot share a label."""
        import matplotlib.pyplot as plt

        from optkit.core import report

        bs = max(self.batch_sizes)
        rows = [r for r in self.records if r.batch_size == bs]
        kind = rows[0].extra.get("quality_kind") if rows else "accuracy"
        scale = 1.0 if kind == "sqnr_db" else 100.0
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
        plt.close(fig)
        top = max([r.extra["quality"] for r in rows if r.extra.get("quality") is not None] or [0.0])
        shown = [r.replace(extra={**r.extra, "quality": scale * (r.extra["quality"] if r.extra.get("quality") is not None
                                                                  else top + 10.0)}) for r in rows]
        label = {"accuracy": "accuracy (%)", "agreement": "top-1 agreement with the original (%)",
                 "sqnr_db": "SQNR vs the original (dB; identical drawn on top)"}[kind]
        picked = self.recommendation.name if self.recommendation else None
        for ax, x in zip(axes, ("latency_ms", "size_bytes")):
            report.plot_pareto(shown, x=x, y="quality", ax=ax, annotate=False)
            sx = 1e-6 if x == "size_bytes" else 1.0
            pts = [(getattr(r, x) * sx, r.extra["quality"], r) for r in shown if getattr(r, x) is not None]
            bad = [(px, py) for px, py, r in pts if not r.extra.get("eligible")]
            if bad:
                ax.scatter(*zip(*bad), marker="x", s=60, color="grey", zorder=4, label="not eligible")
            star = [(px, py) for px, py, r in pts if r.name == picked]
            if star:
                ax.scatter(*zip(*star), marker="*", s=260, color="tab:green", zorder=5, label="recommended")
            ax.margins(x=0.12, y=0.25)
            ax.set_ylabel(label)
            ax.legend(fontsize=8, loc="best")
            _label_clusters(ax, pts)
        axes[0].set_xlabel(f"latency at batch {bs} (ms, median)")
        fig.suptitle(f"{Path(self.summary.path).name}: every candidate at batch {bs}", fontsize=10)
        return fig

    def write_report(self) -> Path:
        """Step 7: write ``results.json``, ``report.md``, ``report.html`` and ``pareto.png`` into
        the run folder, then point ``output_dir/latest`` at it. Returns the run folder."""
        from optkit.runtimes.model_files import atomic_write

        if self.recommendation is None:
            self.recommend()
        run_dir = self._ensure_run_dir()
        fig = self.plot()
        buf = _io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        png = buf.getvalue()
        with atomic_write(run_dir / "pareto.png") as tmp:
            tmp.write_bytes(png)
        results = self.results()
        with atomic_write(run_dir / "results.json") as tmp:
            tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
        md = self._markdown()
        with atomic_write(run_dir / "report.md") as tmp:
            tmp.write_text(md)
        with atomic_write(run_dir / "report.html") as tmp:
            tmp.write_text(self._html(png))
        with atomic_write(self.output_dir / "latest", overwrite=True) as tmp:
            tmp.write_text(run_dir.name + "\n")
        self._say(f"[optimize] report: {run_dir / 'report.html'}")
        return run_dir

    def results(self) -> dict:
        """Everything measured, as a JSON-ready dict (what ``results.json`` holds)."""
        return _jsonable({
            "format": RESULTS_FORMAT,
            "run_id": None if self.run_dir is None else self.run_dir.name,
            "started": self._started_at,
            "finished": _dt.datetime.now().isoformat(timespec="seconds"),
            "wall_s": time.perf_counter() - self._started,
            "parameters": self.parameters(),
            "environment": self.env,
            "environment_line": _env_line(self.env),
            "model": self.summary.to_dict() if self.summary else None,
            "data": self.data.to_dict() if self.data else None,
            "candidates": [{"name": c.name, "recipe": c.recipe, "technique": c.technique, "runtime": c.runtime,
                            "artifact": None if c.artifact is None or self.run_dir is None
                            else os.path.relpath(c.artifact, self.run_dir),
                            "size_bytes": c.size_bytes, "build_s": c.build_s, "notes": c.notes, "info": c.info}
                           for c in [self.baseline, *self.candidates] if c is not None],
            "checks": {k: v.to_dict() for k, v in self.checks.items()},
            "outcomes": [o.to_dict() for o in self.outcomes],
            "baseline_timing": {str(bs): m.to_dict() for bs, m in self.baseline_timing.items()},
            "records": [r.to_dict() for r in self.records],
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "timings_s": self.timings,
            "notes": self.notes,
        })

    def parameters(self) -> dict:
        return {"model_path": str(self.model_path), "data_path": None if self.data_path is None else str(self.data_path),
                "max_accuracy_drop": self.max_accuracy_drop, "batch_sizes": self.batch_sizes,
                "runtimes": self.runtimes, "recipes": self.recipe_names, "time_budget_s": self.time_budget_s,
                "output_dir": str(self.output_dir), "threads": self.threads, "allow_pickle": self.allow_pickle,
                "min_sqnr_db": self.min_sqnr_db}

    def _table_rows(self) -> tuple[list[str], list[list[str]]]:
        frame = self.table()
        cols = list(frame.columns)
        rows = []
        for name, row in frame.iterrows():
            cells = [str(name)]
            for c in cols:
                v = row[c]
                if isinstance(v, (bool, np.bool_)):
                    cells.append("yes" if v else "no")
                elif isinstance(v, (float, np.floating)):
                    if not math.isfinite(v):
                        cells.append("-")
                    elif c in ("accuracy", "agreement"):
                        cells.append(f"{100 * v:.2f} %")
                    elif c in ("speedup", "size_ratio") or c.startswith("speedup_"):
                        cells.append(f"{v:.2f}x")
                    elif c == "acc_delta":
                        cells.append(f"{v:+.2f}")
                    else:
                        cells.append(f"{v:.3g}")
                elif v is None:
                    cells.append("-")
                else:
                    cells.append(str(v))
            rows.append(cells)
        return ["name"] + cols, rows

    def _markdown(self) -> str:
        bs = max(self.batch_sizes)
        head, rows = self._table_rows()
        rec = self.recommendation
        lines = [f"# optkit optimize: {Path(self.summary.path).name}", "",
                 f"Run `{self.run_dir.name}`, {self._started_at}, on {_env_line(self.env)}, "
                 f"{self.threads} thread(s); wall time {time.perf_counter() - self._started:.0f} s.", "",
                 "## Recommendation", "", f"**{rec.name or 'none'}**" + (
                     f" - `{rec.artifact}`" if rec.artifact else ""), "", rec.reason, "",
                 f"## Candidates at batch {bs}", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", "`speedup` and `size_ratio` are against the baseline (above 1 is better); `acc_delta` in "
                  "points. Every number is in `results.json` with the environment.", "",
                  "![Pareto plot: quality against latency and size](pareto.png)", ""]
        if self.outcomes:
            lines += ["## Recipes without a candidate", ""]
            lines += [f"- **{o.recipe}** ({o.status}): {o.reason}" for o in self.outcomes]
            lines.append("")
        lines += ["## What each candidate is", ""]
        for c in [self.baseline, *self.candidates]:
            art = "" if c.artifact is None else f" `{os.path.relpath(c.artifact, self.run_dir)}`."
            lines.append(f"- **{c.name}** ({c.technique}, {c.runtime}): {' '.join(c.notes)}{art}")
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        lines += ["", "## Model", "", "```", self.summary.describe(), "```", "", "## Data", "", "```",
                  self.data.describe(), "```", "", "## Parameters", "", "```",
                  json.dumps(_jsonable(self.parameters()), indent=2), "```", ""]
        return "\n".join(lines)

    def _html(self, png: bytes) -> str:
        e = html.escape
        head, rows = self._table_rows()
        rec = self.recommendation
        eligible = {r.name: r.extra.get("eligible") for r in self.records}
        trs = []
        for r in rows:
            colour = "#e6f4ea" if r[0] == rec.name else ("" if eligible.get(r[0]) else "#f4f4f4")
            trs.append(f"<tr style='background:{colour}'>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
        out = "".join(f"<li><b>{e(o.recipe)}</b> ({e(o.status)}): {e(o.reason)}</li>" for o in self.outcomes)
        cands = "".join(f"<li><b>{e(c.name)}</b> ({e(c.technique)}, {e(c.runtime)}): {e(' '.join(c.notes))}"
                        + (f" <code>{e(os.path.relpath(c.artifact, self.run_dir))}</code>" if c.artifact else "")
                        + "</li>" for c in [self.baseline, *self.candidates])
        img = base64.b64encode(png).decode("ascii")
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>optkit optimize: {e(Path(self.summary.path).name)}</title>
<style>body{{font-family:sans-serif;max-width:75em;margin:2em auto;line-height:1.4}}td,th{{border:1px solid #ccc;padding:.3em .5em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}table{{border-collapse:collapse}}pre{{background:#f6f6f6;padding:.6em}}</style></head><body>
<h1>optkit optimize: {e(Path(self.summary.path).name)}</h1>
<p>Run <code>{e(self.run_dir.name)}</code>, {e(self._started_at)}, on {e(_env_line(self.env))}, {self.threads} thread(s).</p>
<h2>Recommendation: {e(rec.name or 'none')}</h2><p>{e(rec.reason)}</p>
<h2>Candidates at batch {max(self.batch_sizes)}</h2>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{''.join(trs)}</table>
<p>Green: recommended; grey: not eligible. <code>speedup</code> and <code>size_ratio</code> against the baseline; every number is in <code>results.json</code>.</p>
<img alt="Pareto plot" src="data:image/png;base64,{img}" style="max-width:100%">
{'<h2>Recipes without a candidate</h2><ul>' + out + '</ul>' if out else ''}
<h2>What each candidate is</h2><ul>{cands}</ul>
{'<h2>Notes</h2><ul>' + ''.join(f'<li>{e(n)}</li>' for n in self.notes) + '</ul>' if self.notes else ''}
<h2>Model</h2><pre>{e(self.summary.describe())}</pre><h2>Data</h2><pre>{e(self.data.describe())}</pre>
<h2>Parameters</h2><pre>{e(json.dumps(_jsonable(self.parameters()), indent=2))}</pre></body></html>
"""

    # ----------------------------------------------------------------- all steps
    def run(self) -> "Optimization":
        """Every step in order (inspect, load_data, measure_baseline, try_recipes, verify,
        benchmark, recommend, write_report); returns ``self``."""
        self.inspect()
        self.load_data()
        self.measure_baseline()
        self.try_recipes()
        self.verify()
        self.benchmark()
        self.recommend()
        self.write_report()
        return self

    def __repr__(self) -> str:
        state = (f"recommended {self.recommendation.name!r}" if self.recommendation else
                 f"{len(self.candidates)} candidates" if self.candidates else "not run")
        return f"Optimization({self.model_path.name!r}, {state}, run_dir={str(self.run_dir) if self.run_dir else None!r})"


def _label_clusters(ax, pts: list) -> None:
    """Name each point; points closer than a few per cent of the axes share one label."""
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    clusters: list[list] = []
    for px, py, r in sorted(pts, key=lambda p: (p[0], -p[1])):
        for c in clusters:
            if abs(c[0][0] - px) <= 0.04 * dx and abs(c[0][1] - py) <= 0.06 * dy:
                c.append((px, py, r))
                break
        else:
            clusters.append([(px, py, r)])
    placed: list[tuple[float, float, int]] = []  # labels on (nearly) one row alternate up and down
    for c in clusters:
        px, py = c[0][0], c[0][1]
        near = [lv for qx, qy, lv in placed if abs(qy - py) <= 0.06 * dy and abs(qx - px) <= 0.45 * dx]
        level = 0
        while level in near:
            level += 1
        placed.append((px, py, level))
        offset = (6, -12, 17, -23, 28, -34)[level % 6]
        ax.annotate(", ".join(r.name for _, _, r in c), (px, py), xytext=(5, offset), textcoords="offset points",
                    fontsize=8)


def _size_phrase(ratio: float | None, size: int | None, base: int | None) -> str:
    if not ratio:
        return ""
    mb = f"({size / 1e6:.2f} MB vs {base / 1e6:.2f} MB)"
    if ratio >= 1.02:
        return f", and it is {ratio:.2f}x smaller {mb}"
    if ratio <= 0.98:
        return f", though its file is {1 / ratio:.2f}x larger {mb}"
    return ", at the same size"


def _check_text(check: Check) -> str:
    if check.quality_kind == "accuracy":
        q = f"accuracy {100 * check.quality:.2f} %"
    elif check.quality_kind == "agreement":
        q = f"agreement {100 * check.quality:.2f} %"
    else:
        q = f"SQNR {check.quality:.1f} dB"
    return q + (f", SQNR {check.parity.sqnr_db:.1f} dB" if check.quality_kind != "sqnr_db" else "") + \
        ("" if check.ok else f" - not eligible: {check.why}")


def _env_line(env: dict) -> str:
    from optkit.core import bench

    return bench.environment_line(env) if env else bench.environment_line()


def _gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


@contextlib.contextmanager
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def optimize(model_path: str | os.PathLike | None = None, data_path: str | os.PathLike | None = None,
             **kwargs: Any) -> Optimization:
    """Run every step on ``model_path`` (see :class:`Optimization` for the parameters) and return
    the finished :class:`Optimization`: ``.recommendation``, ``.table()``, ``.run_dir``.

    Taught in 10_optimize_your_own_model.
    """
    return Optimization(model_path, data_path, **kwargs).run()


# =============================================================================== bundled reference

def _tiny_text_transformer_class():
    import torch
    from torch import nn

    class TinyTextTransformer(nn.Module):
        """Token ids -> embedding + learned positions -> one self-attention block (4 heads) and a
        feed-forward block, each with a residual and LayerNorm -> mean over non-pad tokens -> logits.
        Ids at or above ``vocab_size`` read as ``<unk>`` (1); 0 is padding."""

        def __init__(self, vocab_size: int = 2000, dim: int = 48, heads: int = 4, ff: int = 96, max_len: int = 64,
                     num_classes: int = 2, dropout: float = 0.1):
            super().__init__()
            self.vocab_size, self.heads = vocab_size, heads
            self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.position = nn.Parameter(torch.randn(max_len, dim) * 0.02)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm1 = nn.LayerNorm(dim)
            self.ff1 = nn.Linear(dim, ff)
            self.ff2 = nn.Linear(ff, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.act = nn.GELU()
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, ids):
            ids = torch.where(ids < self.vocab_size, ids, torch.ones_like(ids))
            n, t = ids.shape
            keep = ids != 0
            x = self.embedding(ids) + self.position[:t]
            q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            att = att + (~keep)[:, None, None, :].to(x.dtype) * -1e4
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(n, t, -1)
            x = self.norm1(x + self.drop(self.proj(y)))
            x = self.norm2(x + self.drop(self.ff2(self.act(self.ff1(x)))))
            w = keep.unsqueeze(-1).to(x.dtype)
            return self.head((x * w).sum(1) / w.sum(1).clamp(min=1.0))

    return TinyTextTransformer


#: What :func:`make_reference` writes: file -> what it is.
REFERENCE_FILES = {
    "reference_cnn.onnx": "ResNetCNN (optkit.data.models.pretrained('resnet_cnn')) exported to ONNX, dynamic batch",
    "fashion_mnist_600.npz": "600 Fashion-MNIST test images x (N,1,28,28) float32 in [0,1] and labels y",
    "text_transformer.onnx": "a 1-block text transformer trained on sentence polarity, exported to ONNX",
    "rotten_tomatoes_512.npz": "512 sentence-polarity test snippets as token ids x (N,64) int64 and labels y",
    "keras_cnn.keras": "a small Keras 3 CNN (optkit.runtimes.tflow.build_cnn, width 8) trained 2 epochs on Fashion-MNIST (55k)",
    "fashion_mnist_nhwc_256.npz": "256 Fashion-MNIST test images x (N,28,28,1) float32 (NHWC) and labels y",
}


def make_reference(out_dir: str | os.PathLike = REFERENCE_DIR, *, overwrite: bool = False,
                   only: Sequence[str] | None = None, log: Callable[[str], Any] = print) -> dict:
    """Rebuild the bundled capstone models and data (``data/capstone``), deterministically.

    ``only`` picks some of ``"cnn"``, ``"text"``, ``"keras"``. Data samples are seeded subsets of
    the official test splits; the text transformer and the Keras CNN are trained here (seeded, 2
    threads, about 2 and 1 minutes on a quiet 2-core CPU). Writes ``manifest.json`` with each
    file's SHA-256, size and the models' accuracy on the bundled sample. Existing files are kept
    unless ``overwrite=True``.

    Taught in 10_optimize_your_own_model.
    """
    import torch

    from optkit import data as odata
    from optkit.data import models
    from optkit.runtimes import onnxrt as ox
    from optkit.runtimes.model_files import atomic_write, sha256

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    only = list(only or ["cnn", "text", "keras"])
    bad = [o for o in only if o not in ("cnn", "text", "keras")]
    if bad:
        raise OptkitError("only", bad, "are not reference parts", "use some of 'cnn', 'text', 'keras'")
    torch.set_num_threads(2)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}, "models": {}}

    def save_npz(name: str, **arrays) -> None:
        with atomic_write(out / name, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

    if "cnn" in only:
        fm = odata.fashion_mnist()
        sample = fm.test.subset(600, seed=0)
        x, y = np.array(sample.x, dtype=np.float32), np.array(sample.y, dtype=np.int64)
        save_npz("fashion_mnist_600.npz", x=x, y=y)
        model = models.pretrained("resnet_cnn")
        ox.export(model, torch.from_numpy(x[:2]), out / "reference_cnn.onnx", input_names=["image"],
                  output_names=["logits"], overwrite=overwrite)
        acc = float((ox.Runner(out / "reference_cnn.onnx", threads=2)(x).argmax(1) == y).mean())
        manifest["models"]["reference_cnn.onnx"] = {"accuracy_on_sample": acc, "source": "models.pretrained('resnet_cnn')"}
        log(f"reference_cnn.onnx: accuracy {100 * acc:.2f} % on fashion_mnist_600.npz")
    if "text" in only:
        rt = odata.rotten_tomatoes()
        models.set_seed(0)
        net = _tiny_text_transformer_class()()
        start = time.perf_counter()
        history = models.train(net, rt, epochs=5, lr=3e-3, seed=0, progress=False)
        train_s = time.perf_counter() - start
        net.eval()
        sample = rt.test.subset(512, seed=0)
        ids, y = np.array(sample.x, dtype=np.int64), np.array(sample.y, dtype=np.int64)
        save_npz("rotten_tomatoes_512.npz", x=ids, y=y)
        ox.export(net, torch.from_numpy(ids[:2]), out / "text_transformer.onnx", input_names=["ids"],
                  output_names=["logits"], overwrite=overwrite)
        acc = float((ox.Runner(out / "text_transformer.onnx", threads=2)(ids).argmax(1) == y).mean())
        test_acc = models.evaluate(net, rt).accuracy
        manifest["models"]["text_transformer.onnx"] = {
            "accuracy_on_sample": acc, "test_accuracy": test_acc, "train_s": train_s,
            "recipe": {"epochs": 5, "lr": 3e-3, "seed": 0, "vocab_size": 2000, "dim": 48, "heads": 4, "ff": 96},
            "history": history}
        log(f"text_transformer.onnx: accuracy {100 * acc:.2f} % on the sample, {100 * test_acc:.2f} % on the test split")
    if "keras" in only:
        from optkit.runtimes import tflow as otf

        otf.import_tensorflow(2)
        fm = odata.fashion_mnist()
        xtr, ytr = otf.keras_arrays(fm, "train")
        model = otf.build_cnn(width=8, seed=0)
        start = time.perf_counter()
        otf.fit(model, xtr, ytr, epochs=2, batch_size=128, seed=0)
        train_s = time.perf_counter() - start
        sample = fm.test.subset(256, seed=1)
        x, y = otf.nhwc(np.asarray(sample.x, dtype=np.float32)), np.asarray(sample.y, dtype=np.int64)
        save_npz("fashion_mnist_nhwc_256.npz", x=x, y=y)
        dst = out / "keras_cnn.keras"
        shipped = otf.build_cnn(width=8, seed=0)  # the same layers and weights, never compiled: no optimizer state
        shipped.set_weights(model.get_weights())
        with atomic_write(dst, overwrite=overwrite) as tmp:
            keras_tmp = tmp.with_suffix(".keras")
            with otf.silenced():
                shipped.save(str(keras_tmp))
            os.replace(keras_tmp, tmp)
        acc = otf.accuracy(otf.keras_predict(model), x, y)
        manifest["models"]["keras_cnn.keras"] = {"accuracy_on_sample": acc, "train_s": train_s,
                                                 "recipe": {"epochs": 2, "n_train": len(xtr), "width": 8, "seed": 0}}
        log(f"keras_cnn.keras: accuracy {100 * acc:.2f} % on fashion_mnist_nhwc_256.npz")
    for name in REFERENCE_FILES:
        if (out / name).exists():
            manifest["files"][name] = {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size,
                                       "what": REFERENCE_FILES[name]}
    manifest["made_with"] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    with atomic_write(manifest_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(_jsonable(manifest), indent=2) + "\n")
    return manifest
