"""Step 1 of the capstone: what a model file is. :func:`detect_format` names the format (through
the one registry, :mod:`optkit.runtimes.formats`); :func:`inspect_model` reads an ONNX model, a
torch.export program (``.pt2``), a Keras model (``.keras``, ``.h5``, SavedModel), a TFLite file or,
only with ``allow_pickle=True``, a pickled PyTorch module, and describes it as a
:class:`ModelSummary` (inputs, outputs, dtypes, dynamic dimensions, operator counts, size).

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import jsonable
from optkit.optimize.inputs import LABEL_KEYS, _read_npz

__all__ = ["ModelSummary", "detect_format", "inspect_model"]


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
        return jsonable({"path": str(self.path), "format": self.format,
                         "inputs": [_spec_dict(s) for s in self.inputs],
                         "outputs": [_spec_dict(s) for s in self.outputs], "size_bytes": self.size_bytes,
                         "params": self.params, "op_counts": self.op_counts, "dynamic_dims": self.dynamic_dims,
                         "int_ranges": self.int_ranges, "details": self.details}, strict=False)

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


def _known(specs) -> list:
    """Specs with every dimension that is not a positive size (-1 or 0, as some exporters write an
    unknown batch) read as unknown (None)."""
    return [_spec(s.name, [None if isinstance(d, int) and d <= 0 else d for d in s.shape], s.dtype) for s in specs]


def _inspect_onnx(p: Path) -> ModelSummary:
    import onnx

    from optkit.runtimes import onnxrt as ox

    info = ox.inspect(p)
    proto = onnx.load(str(p), load_external_data=False)
    params = int(sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in proto.graph.initializer))
    return ModelSummary(path=p, format="onnx", inputs=_known(info.inputs), outputs=_known(info.outputs),
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
