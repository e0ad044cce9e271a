"""ONNX export, ONNX Runtime sessions, graph optimization and ORT quantization, each checked.

The path a PyTorch model takes to ONNX Runtime, one verb per step:

- :func:`export` - ``torch.onnx.export`` with the dynamo exporter, a dynamic batch dimension,
  one file or external data, ``onnx.checker``, and a parity check at the example's batch size
  *and* at a batch size the exporter never saw; falls back to the legacy TorchScript exporter
  (its deprecation warning recorded) only when the dynamo exporter fails;
- :func:`inspect` - a :class:`ModelInfo`: inputs and outputs (:class:`TensorSpec`), opset,
  node and operator counts, size on disk;
- :func:`session` - an ``onnxruntime.InferenceSession`` with every option in the open
  (threads, execution mode, graph optimization level, memory pattern and arena, providers with
  a CUDA-then-CPU fallback chain); :func:`session_options_of` reads them back;
- :class:`Runner` - a callable around a session that checks each input's rank, dtype and fixed
  dimensions and raises a readable error naming the input;
- :func:`verify` - run a reference (a ``torch.nn.Module`` or any callable) and an ONNX model on the
  same real inputs; :class:`~optkit.core.verify.Parity` back, :class:`~optkit.core.verify.ParityError` past
  the tolerances (max absolute and relative error, top-1 agreement, SQNR);
- :func:`optimize` - ONNX Runtime's graph optimizations, saved as a model (offline optimization);
  :func:`simplify` - the onnxslim simplifier;
- :func:`quantize_dynamic`, :func:`quantize_static` - ORT's quantization recipes (dynamic int8
  for transformers; static QDQ per-channel with calibration for CNNs), with
  :func:`calibration_reader` turning arrays into a ``CalibrationDataReader`` and
  :func:`layer_errors` finding the layer whose quantization hurts most (``qdq_loss_debug``).

Every failure on bad input is an :class:`~optkit.core.errors.OptkitError`. Taught in
06_onnx_and_onnx_runtime; used by 08_tensorrt and the capstone's ``optkit.optimize``.
"""
from __future__ import annotations

import contextlib
import inspect as _inspect
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_choice, check_destination, check_path_exists
from optkit.core.verify import Parity, ParityError, compare_outputs, judge_parity

__all__ = [
    "ExportResult",
    "TensorSpec",
    "ModelInfo",
    "export",
    "inspect",
    "check",
    "op_counts",
    "default_providers",
    "session",
    "session_options_of",
    "Runner",
    "verify",
    "optimize",
    "simplify",
    "preprocess",
    "calibration_reader",
    "quantize_dynamic",
    "quantize_static",
    "layer_errors",
    "u8s8_matmul",
    "from_tensorflow",
    "convert_fp16",
    "OPTIMIZATION_LEVELS",
    "EXECUTION_MODES",
    "CALIBRATION_METHODS",
    "QUANT_FORMATS",
]

#: ``session(optimization=...)`` choices -> ``onnxruntime.GraphOptimizationLevel`` member names.
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
#: ``session(execution_mode=...)`` choices -> ``onnxruntime.ExecutionMode`` member names.
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
#: ``quantize_static(method=...)`` choices -> ``CalibrationMethod`` member names.
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: ``quantize_static(quant_format=...)`` choices -> ``QuantFormat`` member names.
QUANT_FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}
_QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}

# ONNX TensorProto element type -> numpy dtype name (the ones a model's inputs use in practice).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
# ORT's type strings ("tensor(float)") -> numpy dtype name.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
               "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
               "tensor(bfloat16)": "bfloat16"}


# --------------------------------------------------------------------------- result types

@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an ONNX model: ``name``, ``shape`` (ints, or a string such as
    ``"batch"`` for a dynamic dimension, or ``None`` when unknown) and numpy ``dtype`` name.

    Taught in 06_onnx_and_onnx_runtime.
    """

    name: str
    shape: tuple
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass
class ExportResult:
    """What :func:`export` wrote and how: ``path``, ``exporter`` (``"dynamo"`` or ``"legacy"``),
    ``opset``, ``warnings`` (messages worth reading: the fallback's reason, the legacy exporter's
    deprecation, tracer warnings), ``seconds`` (wall time of the export), ``input_names``,
    ``output_names``, ``dynamic_batch`` (whether dim 0 of every input is symbolic in the file)
    and ``parity`` (ONNX Runtime vs PyTorch on the example inputs and on a batch size the
    exporter never saw; ``None`` when ``check=False``).

    Taught in 06_onnx_and_onnx_runtime.
    """

    path: Path
    exporter: str
    opset: int
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    input_names: list = field(default_factory=list)
    output_names: list = field(default_factory=list)
    dynamic_batch: bool = False
    parity: Parity | None = None
    external_data: bool = False

    def __repr__(self) -> str:
        parts = [f"ExportResult({str(self.path)!r}", f"exporter={self.exporter}", f"opset={self.opset}",
                 f"dynamic_batch={self.dynamic_batch}", f"{self.seconds:.1f} s"]
        if self.external_data:
            parts.append("external data")
        if self.parity is not None:
            parts.append(f"max_abs={self.parity.max_abs:.2g}")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning(s)")
        return ", ".join(parts) + ")"


@dataclass
class ModelInfo:
    """What an ONNX file holds. ``op_counts`` maps operator type to its number of nodes;
    ``size_bytes`` includes external-data files.

    Taught in 06_onnx_and_onnx_runtime.
    """

    path: Path
    inputs: list
    outputs: list
    opset: int
    node_count: int
    op_counts: dict
    size_bytes: int
    has_external_data: bool
    producer: str = ""

    def __repr__(self) -> str:
        top = ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
        return (f"ModelInfo({self.path.name}: opset {self.opset}, {self.node_count} nodes [{top}"
                f"{', ...' if len(self.op_counts) > 6 else ''}], {self.size_bytes / 1e6:.2f} MB"
                f"{' + external data' if self.has_external_data else ''}; inputs {self.inputs}, outputs {self.outputs})")


# --------------------------------------------------------------------------- helpers

_EXPORT_LOGGERS = ("torch.onnx", "torch._dynamo", "torch.fx", "torch.export", "torch._export",
                   "torch.fx.experimental.symbolic_shapes", "onnxscript", "onnx_ir", "root")


def _quiet():
    """Silence the exporters (progress lines, graph dumps, C++ warnings, their loggers): the one
    silencer, :func:`optkit.core.quiet.silenced`; yields a buffer with what they printed."""
    from optkit.core.quiet import silenced

    return silenced(loggers=_EXPORT_LOGGERS)

def _as_tuple(example_inputs: Any) -> tuple:
    import torch

    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not args:
        raise OptkitError("example_inputs", example_inputs, "is empty",
                          "pass a tensor, or a tuple of tensors in forward()'s argument order")
    for i, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            raise OptkitError(f"example_inputs[{i}]", type(a).__name__, "is not a torch.Tensor",
                              "pass real example tensors (they fix dtypes and the non-batch dimensions)")
        if a.ndim == 0:
            raise OptkitError(f"example_inputs[{i}]", "a 0-d tensor", "has no batch dimension",
                              "pass tensors shaped [batch, ...]")
    return args


def _default_input_names(model: Any, n: int) -> list[str]:
    try:
        params = [p for p in _inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params[:n]]
    except (TypeError, ValueError, AttributeError):
        names = []
    if len(names) < n:
        names = [f"input_{i}" for i in range(n)] if n > 1 else ["input"]
    return names


def _flat_outputs(out: Any) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        flat = []
        for o in out:
            flat += _flat_outputs(o)
        return flat
    if isinstance(out, dict):
        return _flat_outputs(list(out.values()))
    if hasattr(out, "to_tuple"):  # Hugging Face ModelOutput
        return _flat_outputs(out.to_tuple())
    raise OptkitError("model", type(out).__name__, "returned something that is not tensors",
                      "make forward() return a tensor or a tuple of tensors")


def _grown_batch(args: tuple) -> tuple:
    """The example inputs with one more row (the first row repeated): a batch size the exporter
    never saw, to prove the batch dimension really is dynamic."""
    import torch

    return tuple(torch.cat([a, a[:1]], dim=0) for a in args)


def _check_dst(path: Any, parameter: str = "path", overwrite: bool = False) -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() != ".onnx":
        raise OptkitError(parameter, str(path), "must end in .onnx",
                          f"use {p.with_suffix('.onnx').name!r}")
    return check_destination(p, overwrite=overwrite, parameter=parameter)


def _check_src(path: Any, parameter: str = "src") -> Path:
    p = check_path_exists(parameter, path)
    if p.is_dir():
        raise OptkitError(parameter, str(path), "is a folder, not an ONNX file", "pass the .onnx file")
    _load_proto(p, parameter, load_external_data=False)  # raises a readable error for non-ONNX files
    return p


def _load_proto(path: Path, parameter: str = "path", load_external_data: bool = True):
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise OptkitError(parameter, str(path), f"is not a readable ONNX model ({type(e).__name__}: {msg})",
                          "pass a file written by torch.onnx.export (keep its .onnx.data file beside it)") from None
    if len(proto.graph.node) == 0 and not proto.opset_import:
        raise OptkitError(parameter, str(path), "holds no ONNX graph", "pass a file written by torch.onnx.export")
    return proto


def _check_model(path: Path, parameter: str = "path") -> None:
    """``onnx.checker`` (by path, so external data and >2 GB models work) and strict shape inference."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:
        raise OptkitError(parameter, str(path), f"fails the ONNX checker: {str(e).splitlines()[0][:300]}",
                          "re-export the model; a hand-edited graph must keep every node's inputs defined "
                          "before use and valid attributes") from None


def _move_into_place(tmpdir: Path, name: str, dst: Path, overwrite: bool) -> None:
    """Move ``tmpdir/name`` (and any side files it wrote) next to ``dst``; side files first, so the
    ``.onnx`` file appears only when its data is already there."""
    files = sorted(tmpdir.iterdir(), key=lambda f: f.name == name)
    for f in files:
        target = dst if f.name == name else dst.parent / f.name
        if target.exists() and not overwrite and f.name != name:
            raise OptkitError("path", str(target), "already exists (an external-data file of another model?)",
                              "pass overwrite=True, or choose a new name")
        os.replace(f, target)


def _opset_of(proto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _specs(values) -> list[TensorSpec]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = []
        if t.HasField("shape"):
            for d in t.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    dims.append(str(d.dim_param))
                else:
                    dims.append(None)
        out.append(TensorSpec(v.name, tuple(dims), _ONNX_DTYPES.get(t.elem_type, f"onnx_type_{t.elem_type}")))
    return out


def _uses_external_data(proto) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in proto.graph.initializer)


# --------------------------------------------------------------------------- export

def export(model, example_inputs, path, *, input_names: Sequence[str] | None = None,
           output_names: Sequence[str] | None = None, dynamic_batch: bool = True, opset: int | None = None,
           external_data: bool = False, fallback: bool = True, overwrite: bool = False,
           check: bool = True, atol: float = 1e-4) -> ExportResult:
    """Export a PyTorch model to ONNX with the dynamo exporter; check it; return an :class:`ExportResult`.

    ``example_inputs`` is a tensor or a tuple of tensors in ``forward``'s order. With
    ``dynamic_batch=True`` dim 0 of every input is exported as one symbolic ``batch`` dimension
    (``torch.export.Dim``). ``opset=None`` takes the exporter's default (20 for dynamo in torch
    2.13). ``external_data=True`` writes weights to ``<name>.onnx.data`` beside the file (needed
    past 2 GB); the default writes one self-contained file.

    When the dynamo exporter raises and ``fallback=True``, the legacy TorchScript exporter
    (``dynamo=False``, ``dynamic_axes``) is tried; its DeprecationWarning and the dynamo error are
    kept in ``result.warnings``. The written model passes ``onnx.checker``; with ``check=True``
    ONNX Runtime runs it on the example inputs and on one more row than the exporter saw, and a
    :class:`~optkit.core.verify.ParityError` is raised past ``atol`` (or when the batch dimension came
    out fixed although ``dynamic_batch`` was asked for: the model's code fixed it, e.g. a tensor
    created with a literal batch size). The model is put in eval mode.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()  # re-exported from its graph; the dynamic batch is declared again below
    if not isinstance(model, torch.nn.Module):
        raise OptkitError("model", type(model).__name__, "is not a torch.nn.Module",
                          "pass the PyTorch model (for a TensorFlow model use tf2onnx, see notebook 06)")
    args = _as_tuple(example_inputs)
    dst = _check_dst(path, overwrite=overwrite)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= 25):
        raise OptkitError("opset", opset, "is not an ONNX opset this stack supports",
                          "pass None (the exporter's default) or an int between 7 and 25 (ORT 1.32 runs up to 23)")
    if dynamic_batch and any(a.shape[0] < 2 for a in args):
        # torch.export specializes dimensions of size 0 and 1: a batch-1 example cannot prove that
        # the code works for any batch. Two copies of the example fix that without new data.
        args = tuple(torch.cat([a, a], 0) if a.shape[0] < 2 else a for a in args)
    with contextlib.suppress(NotImplementedError, RuntimeError):  # an exported program's module refuses .eval()
        model.eval()
    with torch.inference_mode():
        ref_out = _flat_outputs(model(*args))
    in_names = list(input_names) if input_names is not None else _default_input_names(model, len(args))
    out_names = (list(output_names) if output_names is not None
                 else (["output"] if len(ref_out) == 1 else [f"output_{i}" for i in range(len(ref_out))]))
    if len(in_names) != len(args):
        raise OptkitError("input_names", input_names, f"names {len(in_names)} inputs but {len(args)} were given",
                          "pass one name per example input")
    if len(out_names) != len(ref_out):
        raise OptkitError("output_names", output_names, f"names {len(out_names)} outputs but the model returns "
                          f"{len(ref_out)}", "pass one name per output")

    notes: list[str] = []
    start = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    tmp = tmpdir / dst.name
    exporter = "dynamo"
    try:
        try:
            _export_dynamo(model, args, tmp, in_names, out_names, dynamic_batch, opset, external_data, notes)
        except OptkitError:
            raise
        except Exception as e:
            reason = "dynamo exporter failed: " + (_root_cause(e) or _first_line(e))
            if not fallback:
                raise OptkitError("model", type(model).__name__, reason,
                                  "fix the model for torch.export (see the message), or pass fallback=True to "
                                  "try the legacy TorchScript exporter") from None
            notes.append(reason)
            for f in tmpdir.iterdir():
                f.unlink()
            exporter = "legacy"
            _export_legacy(model, args, tmp, in_names, out_names, dynamic_batch, opset, notes)
        _check_model(tmp)
        _move_into_place(tmpdir, dst.name, dst, overwrite)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    seconds = time.perf_counter() - start

    proto = _load_proto(dst, load_external_data=False)
    inputs = _specs(proto.graph.input)
    is_dynamic = all(s.shape and not isinstance(s.shape[0], int) for s in inputs)
    result = ExportResult(path=dst, exporter=exporter, opset=_opset_of(proto), warnings=_dedupe(notes),
                          seconds=seconds, input_names=[s.name for s in inputs],
                          output_names=[o.name for o in proto.graph.output], dynamic_batch=is_dynamic,
                          external_data=_uses_external_data(proto))
    if check:
        runner = Runner(dst, threads=1)
        parity = compare_outputs([t.numpy() for t in ref_out], runner.run_all(*[a.numpy() for a in args]))
        failures = [] if parity.max_abs <= atol else [f"max_abs {parity.max_abs:.3g} > atol {atol:.3g} at batch "
                                                      f"{args[0].shape[0]}"]
        if dynamic_batch and not is_dynamic:
            failures.append(f"the batch dimension came out fixed ({inputs[0]!r}): the model's code specialized "
                            "it (a tensor built with a literal batch size, a shape-dependent branch); build such "
                            "tensors from x.shape[0], or export with dynamic_batch=False")
        elif dynamic_batch:
            grown = _grown_batch(args)
            with torch.inference_mode():
                ref_grown = _flat_outputs(model(*grown))
            try:
                got = runner.run_all(*[a.numpy() for a in grown])
            except Exception as e:
                failures.append(f"ONNX Runtime failed at batch {grown[0].shape[0]}, which the exporter never saw: "
                                f"{str(e).splitlines()[0][:200]}")
            else:
                grown_parity = compare_outputs([t.numpy() for t in ref_grown], got)
                if not grown_parity.max_abs <= atol:
                    failures.append(f"max_abs {grown_parity.max_abs:.3g} > atol {atol:.3g} at batch "
                                    f"{grown[0].shape[0]}, which the exporter never saw")
                parity = grown_parity if grown_parity.max_abs > parity.max_abs else parity
        result.parity = parity
        if failures:
            err = ParityError(parity, failures)
            err.result = result  # the file stays on disk for inspection
            raise err
    return result


def _dedupe(messages: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for m in messages:
        if m not in seen:
            seen.add(m)
            out.append(m)
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def _root_cause(e: BaseException) -> str:
    """The innermost exception's one-line summary (torch wraps the real reason twice)."""
    inner = e
    for _ in range(10):
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    if inner is e:
        return ""
    return _first_line(inner)


# Warnings the exporters raise about their own internals, which say nothing to a user.
_NOISE = ("isinstance(treespec, LeafSpec)", "Constant folding - Only steps=1", "torchvision is not installed",
          "since it shares the same shape constraints with another axis")


def _keep(msg: str) -> bool:
    return not any(n in msg for n in _NOISE)


def _export_dynamo(model, args, tmp: Path, in_names, out_names, dynamic_batch, opset, external_data, notes):
    import torch

    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in args)
    kwargs = dict(dynamo=True, input_names=in_names, output_names=out_names, dynamic_shapes=dynamic_shapes,
                  external_data=external_data, verbose=False)
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings(record=True) as caught, _quiet():
        warnings.simplefilter("always")
        program = torch.onnx.export(model, args, None, **kwargs)
        _drop_stack_traces(program.model)
        program.save(str(tmp), external_data=external_data)
    notes += [f"{w.category.__name__}: {w.message}" for w in caught if _keep(str(w.message))]


def _drop_stack_traces(model) -> None:
    """Remove the exporter's per-node Python stack traces (``pkg.torch.onnx.stack_trace``).

    They name files on the exporting machine (the checkout and venv paths), so the same model
    exported from two folders gives two different files; nothing at inference reads them.
    """
    graphs = [model.graph, *getattr(model, "functions", {}).values()]
    for graph in graphs:
        for node in graph:
            node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)


def _export_legacy(model, args, tmp: Path, in_names, out_names, dynamic_batch, opset, notes):
    import torch

    axes = {n: {0: "batch"} for n in list(in_names) + list(out_names)} if dynamic_batch else None
    with warnings.catch_warnings(record=True) as caught, _quiet():
        warnings.simplefilter("always")
        torch.onnx.export(model, args, str(tmp), dynamo=False, input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=opset or 17, do_constant_folding=True)
    notes += [f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught if _keep(str(w.message))]


# --------------------------------------------------------------------------- inspect

def op_counts(model_or_path) -> dict[str, int]:
    """Operator type -> number of nodes in the main graph (a path or an ``onnx.ModelProto``).

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnx

    proto = model_or_path if isinstance(model_or_path, onnx.ModelProto) else \
        _load_proto(check_path_exists("model_or_path", model_or_path), "model_or_path", load_external_data=False)
    return dict(Counter(n.op_type for n in proto.graph.node))


def inspect(path) -> ModelInfo:
    """A :class:`ModelInfo` of an ONNX file: inputs/outputs, opset, node and operator counts, size.

    Weights in external data are not loaded. A file that is not ONNX raises an ``OptkitError``.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from optkit.runtimes.model_files import file_size

    p = check_path_exists("path", path)
    proto = _load_proto(p, load_external_data=False)
    counts = dict(Counter(n.op_type for n in proto.graph.node))
    return ModelInfo(path=p, inputs=_specs(proto.graph.input), outputs=_specs(proto.graph.output),
                     opset=_opset_of(proto), node_count=len(proto.graph.node), op_counts=counts,
                     size_bytes=file_size(p), has_external_data=_uses_external_data(proto),
                     producer=f"{proto.producer_name} {proto.producer_version}".strip())


def check(path) -> ModelInfo:
    """Run ``onnx.checker`` (by path, so external data works) and strict ONNX shape inference on a
    file; return its :class:`ModelInfo`. A file that is not ONNX, or that fails either check,
    raises an ``OptkitError`` carrying the checker's message.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnx

    p = check_path_exists("path", path)
    _load_proto(p, load_external_data=False)
    _check_model(p)
    work = tempfile.mkdtemp(prefix=".optkit-check.")
    try:
        onnx.shape_inference.infer_shapes_path(str(p), os.path.join(work, "inferred.onnx"), check_type=True,
                                               strict_mode=True)
    except Exception as e:
        raise OptkitError("path", str(p), f"fails ONNX shape inference: {_first_line(e)}",
                          "re-export the model; shapes or types of some node's inputs do not fit the operator") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return inspect(p)


# --------------------------------------------------------------------------- sessions

def default_providers() -> list[str]:
    """The fallback chain: ``CUDAExecutionProvider`` when this onnxruntime build has it, then
    ``CPUExecutionProvider`` (always). ORT assigns each node to the first provider that runs it.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    chain = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
    return chain + ["CPUExecutionProvider"]


def _check_threads(parameter: str, value: Any) -> int:
    if value is None:
        return 0  # ORT's own default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptkitError(parameter, value, "must be a positive whole number or None",
                          "pass e.g. 2, or None for onnxruntime's default")
    return value


def session(path, *, threads: int | None = None, inter_op_threads: int | None = None,
            optimization: str = "all", execution_mode: str = "sequential", providers: Sequence | None = None,
            enable_mem_pattern: bool = True, enable_cpu_mem_arena: bool = True,
            optimized_model_path: str | os.PathLike | None = None, log_severity: int = 3):
    """An ``onnxruntime.InferenceSession`` with its options spelled out.

    - ``threads``: intra-op threads (one operator split across cores); ``None`` = ORT's default
      (one per physical core). ``inter_op_threads``: threads running independent nodes at once,
      used only with ``execution_mode="parallel"``.
    - ``optimization``: ``"disable" | "basic" | "extended" | "all"`` (graph rewrites: constant
      folding, node fusions, layout changes; see :func:`optimize`).
    - ``enable_mem_pattern``: plan buffers from the first run's allocation pattern (fixed shapes
      gain, changing shapes lose); ``enable_cpu_mem_arena``: keep freed memory in an arena.
    - ``providers``: names or ``(name, options)`` pairs, in order of preference; ``None`` =
      :func:`default_providers` (CUDA if this build has it, then CPU). A name this build lacks
      raises an ``OptkitError`` listing the ones it has.
    - ``optimized_model_path``: also write the optimized graph there (what :func:`optimize` uses).

    ``path`` may also be an ``onnx.ModelProto`` or serialized bytes. Read the options back with
    :func:`session_options_of`.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnxruntime as ort

    check_choice("optimization", optimization, OPTIMIZATION_LEVELS)
    check_choice("execution_mode", execution_mode, EXECUTION_MODES)
    so = ort.SessionOptions()
    so.intra_op_num_threads = _check_threads("threads", threads)
    so.inter_op_num_threads = _check_threads("inter_op_threads", inter_op_threads)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    so.execution_mode = getattr(ort.ExecutionMode, EXECUTION_MODES[execution_mode])
    so.enable_mem_pattern = bool(enable_mem_pattern)
    so.enable_cpu_mem_arena = bool(enable_cpu_mem_arena)
    so.log_severity_level = int(log_severity)
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)

    available = ort.get_available_providers()
    chain = default_providers() if providers is None else list(providers)
    if not chain:
        raise OptkitError("providers", providers, "is empty", "pass None, or e.g. ['CPUExecutionProvider']")
    for p in chain:
        name = p[0] if isinstance(p, (tuple, list)) else p
        if name not in available:
            raise OptkitError("providers", name, "is not in this onnxruntime build",
                              f"use one of {available} (CUDA needs the onnxruntime-gpu package and a GPU)")

    source: Any
    try:
        import onnx

        if isinstance(path, onnx.ModelProto):
            source = path.SerializeToString()
        elif isinstance(path, (bytes, bytearray)):
            source = bytes(path)
        else:
            p = check_path_exists("path", path)
            if p.is_dir():
                raise OptkitError("path", str(path), "is a folder, not an ONNX file", "pass the .onnx file")
            source = str(p)
    except ImportError:  # pragma: no cover - onnx is a dependency
        source = str(path)
    try:
        return ort.InferenceSession(source, sess_options=so, providers=chain)
    except Exception as e:
        text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        label = "model bytes" if not isinstance(source, str) else source
        raise OptkitError("path", label, f"could not be loaded by ONNX Runtime ({type(e).__name__}: {text})",
                          "check that it is an ONNX file written by torch.onnx.export or an optkit.runtimes.onnxrt "
                          "recipe, with its .onnx.data file beside it") from None


def session_options_of(sess) -> dict[str, Any]:
    """The options a session actually runs with, read back from it (threads, execution mode,
    optimization level, memory pattern and arena, providers).

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnxruntime as ort

    so = sess.get_session_options()
    level = {getattr(ort.GraphOptimizationLevel, v): k for k, v in OPTIMIZATION_LEVELS.items()}
    mode = {getattr(ort.ExecutionMode, v): k for k, v in EXECUTION_MODES.items()}
    return {"threads": so.intra_op_num_threads, "inter_op_threads": so.inter_op_num_threads,
            "optimization": level.get(so.graph_optimization_level, str(so.graph_optimization_level)),
            "execution_mode": mode.get(so.execution_mode, str(so.execution_mode)),
            "enable_mem_pattern": so.enable_mem_pattern, "enable_cpu_mem_arena": so.enable_cpu_mem_arena,
            "providers": sess.get_providers()}


def _ort_specs(args) -> list[TensorSpec]:
    return [TensorSpec(a.name, tuple(d if isinstance(d, int) else (d if isinstance(d, str) else None)
                                     for d in (a.shape or [])), _ORT_DTYPES.get(a.type, a.type)) for a in args]


class Runner:
    """A checked, callable ONNX Runtime model.

    ``Runner(path_or_session, **session_kwargs)`` (keywords go to :func:`session`).
    ``runner(x)`` / ``runner(ids, mask)`` / ``runner({"input": x})`` returns the first output as a
    numpy array; :meth:`run_all` returns every output. Torch tensors are accepted (converted on the
    CPU). Each input's rank, dtype and fixed dimensions are checked against the model first, so a
    wrong input is an ``OptkitError`` naming it, not an ONNX Runtime traceback.

    Taught in 06_onnx_and_onnx_runtime.
    """

    def __init__(self, path_or_session, **session_kwargs: Any):
        import onnxruntime as ort

        if isinstance(path_or_session, ort.InferenceSession):
            if session_kwargs:
                raise OptkitError("session_kwargs", sorted(session_kwargs), "cannot apply to an existing session",
                                  "pass a path to have options applied, or build the session with optkit.runtimes.onnxrt.session")
            self.session = path_or_session
            self.path = None
        else:
            self.session = session(path_or_session, **session_kwargs)
            self.path = Path(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else None
        self.inputs = _ort_specs(self.session.get_inputs())
        self.outputs = _ort_specs(self.session.get_outputs())
        self._names = [s.name for s in self.outputs]

    def _feed(self, args: tuple) -> dict[str, np.ndarray]:
        if len(args) == 1 and isinstance(args[0], dict):
            given = dict(args[0])
            unknown = sorted(set(given) - {s.name for s in self.inputs})
            if unknown:
                raise OptkitError("inputs", unknown, "are not inputs of this model",
                                  f"use the names {[s.name for s in self.inputs]}")
            missing = [s.name for s in self.inputs if s.name not in given]
            if missing:
                raise OptkitError("inputs", sorted(given), f"lack {missing}",
                                  f"pass every input: {[s.name for s in self.inputs]}")
        else:
            if len(args) != len(self.inputs):
                raise OptkitError("inputs", f"{len(args)} arrays", f"the model takes {len(self.inputs)} inputs "
                                  f"({', '.join(repr(s) for s in self.inputs)})",
                                  "pass one array per input, in this order, or a dict name -> array")
            given = {s.name: a for s, a in zip(self.inputs, args)}
        feed = {}
        for spec in self.inputs:
            feed[spec.name] = self._check(spec, given[spec.name])
        return feed

    @staticmethod
    def _check(spec: TensorSpec, value: Any) -> np.ndarray:
        try:
            import torch

            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
        except ImportError:  # pragma: no cover
            pass
        if not isinstance(value, np.ndarray):
            if isinstance(value, (list, tuple, int, float)):
                value = np.asarray(value)
            else:
                raise OptkitError(f"input {spec.name!r}", type(value).__name__, "is not an array",
                                  f"pass a numpy array {spec!r}")
        if value.ndim != spec.rank:
            raise OptkitError(f"input {spec.name!r}", f"shape {value.shape}", f"has rank {value.ndim}, the model "
                              f"expects rank {spec.rank} ({spec!r})",
                              "reshape it (a single example needs its batch axis: x[None])")
        if str(value.dtype) != spec.dtype:
            raise OptkitError(f"input {spec.name!r}", f"dtype {value.dtype}", f"the model expects {spec.dtype}",
                              f"convert it: x.astype(np.{spec.dtype})")
        for axis, (got, want) in enumerate(zip(value.shape, spec.shape)):
            if isinstance(want, int) and got != want:
                raise OptkitError(f"input {spec.name!r}", f"shape {value.shape}", f"dimension {axis} is {got}, the "
                                  f"model fixes it at {want} ({spec!r})",
                                  "resize the input, or re-export with that dimension dynamic")
        return np.ascontiguousarray(value)

    def run_all(self, *args: Any) -> list[np.ndarray]:
        """Every output, in the model's order."""
        return self.session.run(self._names, self._feed(args))

    def __call__(self, *args: Any) -> np.ndarray:
        return self.session.run(self._names[:1], self._feed(args))[0]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __repr__(self) -> str:
        where = self.path.name if self.path is not None else "session"
        opts = session_options_of(self.session)
        return (f"Runner({where}: inputs {self.inputs}, outputs {self.outputs}, "
                f"providers {[p.replace('ExecutionProvider', '') for p in opts['providers']]}, "
                f"threads {opts['threads'] or 'default'}, optimization {opts['optimization']})")


# --------------------------------------------------------------------------- verify

def verify(reference: Callable, candidate, inputs, *, atol: float = 1e-4, max_rel: float | None = None,
           min_top1: float | None = 1.0, min_sqnr_db: float | None = None, batch_size: int | None = None) -> Parity:
    """Run ``reference`` and ``candidate`` on the same real ``inputs``; return their :class:`Parity`
    or raise :class:`~optkit.core.verify.ParityError` naming each failed criterion.

    ``reference``: a ``torch.nn.Module`` (run in eval mode under ``torch.inference_mode``) or any
    callable taking the inputs as arrays/tensors. ``candidate``: an ONNX path, an
    ``InferenceSession``, a :class:`Runner`, or any callable. ``inputs``: an array/tensor, or a
    tuple of them for several inputs. ``batch_size`` splits the inputs into batches (every later
    conversion in the curriculum runs through this function). Criteria: ``max_abs <= atol``,
    ``max_rel <= max_rel`` (when given), top-1 agreement ``>= min_top1`` (2-D outputs),
    SQNR ``>= min_sqnr_db`` (when given). For a quantized model pass ``atol=math.inf`` and judge by
    SQNR and top-1.

    Taught in 06_onnx_and_onnx_runtime; used in 07, 08 and the capstone.
    """
    import onnxruntime as ort
    import torch

    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if not args:
        raise OptkitError("inputs", inputs, "is empty", "pass real inputs (a batch of test data)")
    np_args = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in args]
    n = np_args[0].shape[0] if np_args[0].ndim else 1
    if n == 0:
        raise OptkitError("inputs", "0 rows", "holds no examples", "pass at least one real input")
    if isinstance(candidate, (str, os.PathLike, ort.InferenceSession)):
        candidate = Runner(candidate)
    if not callable(candidate):
        raise OptkitError("candidate", type(candidate).__name__, "is not callable",
                          "pass an ONNX path, an InferenceSession, a Runner or a function")
    if not callable(reference):
        raise OptkitError("reference", type(reference).__name__, "is not callable",
                          "pass the source model (a torch.nn.Module) or a function")
    step = n if batch_size is None else int(batch_size)
    refs, tests = [], []
    is_module = isinstance(reference, torch.nn.Module)
    if is_module:
        reference.eval()
    for lo in range(0, n, step):
        chunk = [a[lo:lo + step] for a in np_args]
        if is_module:
            with torch.inference_mode():
                r = _flat_outputs(reference(*[torch.from_numpy(np.array(c)) for c in chunk]))
            r = [t.float().numpy() for t in r]
        else:
            r = reference(*chunk)
            r = [np.asarray(x) for x in (r if isinstance(r, (list, tuple)) else [r])]
        t = candidate.run_all(*chunk) if isinstance(candidate, Runner) else candidate(*chunk)
        t = [np.asarray(x) for x in (t if isinstance(t, (list, tuple)) else [t])]
        if len(t) != len(r):  # a runner returning every output against a single-output reference
            t = t[:len(r)]
        refs.append(r)
        tests.append(t)
    ref_all = [np.concatenate([b[i] for b in refs]) for i in range(len(refs[0]))]
    test_all = [np.concatenate([b[i] for b in tests]) for i in range(len(tests[0]))]
    parity = compare_outputs(ref_all if len(ref_all) > 1 else ref_all[0],
                             test_all if len(test_all) > 1 else test_all[0])
    return judge_parity(parity, atol=atol, max_rel=max_rel, min_top1=min_top1, min_sqnr_db=min_sqnr_db)


# --------------------------------------------------------------------------- graph optimization

def optimize(src, dst, *, level: str = "extended", overwrite: bool = False) -> Path:
    """Apply ONNX Runtime's graph optimizations once and save the optimized model (offline
    optimization): later sessions load it with ``optimization="disable"`` and start faster.

    ``level``: ``"basic"`` (constant folding, redundant nodes), ``"extended"`` (plus fusions such as
    Conv+Add+Relu, GELU, LayerNorm, attention) or ``"all"`` (plus layout changes to NCHWc, which tie
    the file to this CPU's instruction set and ORT version: fine for a cache, not for shipping).
    The CPU provider does the rewrites, so GPU-only fusions are not in the file.

    Taught in 06_onnx_and_onnx_runtime.
    """
    check_choice("level", level, [k for k in OPTIMIZATION_LEVELS if k != "disable"])
    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    from optkit.runtimes.model_files import atomic_write

    with atomic_write(dst_p, overwrite=overwrite) as tmp:
        tmp_onnx = tmp.with_suffix(".onnx")
        try:
            session(src_p, optimization=level, providers=["CPUExecutionProvider"], threads=1,
                    optimized_model_path=tmp_onnx)
            os.replace(tmp_onnx, tmp)
        finally:
            with contextlib.suppress(OSError):
                tmp_onnx.unlink()
    return dst_p


def simplify(src, dst, *, overwrite: bool = False) -> Path:
    """Simplify a model with onnxslim (constant folding, dead-node and redundant-op removal, shape
    simplification) and save it; the result passes ``onnx.checker``.

    Taught in 06_onnx_and_onnx_runtime.
    """
    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    import onnxslim

    from optkit.runtimes.model_files import atomic_write

    with atomic_write(dst_p, overwrite=overwrite) as tmp, _quiet():
        slim = onnxslim.slim(str(src_p))
        tmp.write_bytes(slim.SerializeToString())
    _check_model(dst_p, "dst")
    return dst_p


# --------------------------------------------------------------------------- quantization

def preprocess(src, dst, *, overwrite: bool = False) -> Path:
    """ORT's ``quant_pre_process``: symbolic shape inference, ORT's basic graph optimizations
    (BatchNorm folded into Conv, ...) and ONNX shape inference, so that the quantizer sees every
    tensor's shape and quantizes fused operators. Falls back to skipping the symbolic pass when a
    model's shapes defeat it.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import quant_pre_process

    from optkit.runtimes.model_files import atomic_write

    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    with atomic_write(dst_p, overwrite=overwrite) as tmp:
        tmp_onnx = tmp.with_suffix(".onnx")
        try:
            with _quiet(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    quant_pre_process(str(src_p), str(tmp_onnx))
                except Exception:
                    quant_pre_process(str(src_p), str(tmp_onnx), skip_symbolic_shape=True)
            os.replace(tmp_onnx, tmp)
        finally:
            with contextlib.suppress(OSError):
                tmp_onnx.unlink()
    return dst_p


class _ListReader:
    """A ``CalibrationDataReader`` over a list of feeds (built lazily to keep onnxruntime optional)."""

    def __new__(cls, feeds: list[dict]):
        from onnxruntime.quantization import CalibrationDataReader

        class ListReader(CalibrationDataReader):
            def __init__(self, feeds):
                self.feeds = feeds
                self._it = iter(feeds)

            def get_next(self):
                return next(self._it, None)

            def rewind(self):
                self._it = iter(self.feeds)

            def __len__(self):
                return len(self.feeds)

            def __repr__(self):
                return f"CalibrationDataReader({len(self.feeds)} batches)"

        return ListReader(feeds)


def calibration_reader(calibration, input_names: Sequence[str] | None = None, *, model=None):
    """Turn calibration data into an ORT ``CalibrationDataReader`` (rewindable, length known).

    ``calibration``: an iterable of ``dict[input name, np.ndarray]`` batches, or of arrays (for a
    single-input model; names come from ``input_names`` or the ``model`` path), or a
    ``CalibrationDataReader`` already (its batches are read once and kept). Torch tensors are
    converted. No batch at all raises an ``OptkitError``: calibration on nothing would give scales
    of zero.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import CalibrationDataReader

    if input_names is None and model is not None:
        input_names = [s.name for s in inspect(model).inputs]
    if isinstance(calibration, CalibrationDataReader):
        items = []
        while (item := calibration.get_next()) is not None:
            items.append(item)
    elif isinstance(calibration, (np.ndarray,)) or hasattr(calibration, "detach"):
        raise OptkitError("calibration", f"one {type(calibration).__name__}", "must be an iterable of batches",
                          "pass a list of batches, e.g. [x[i:i + 32] for i in range(0, len(x), 32)]")
    else:
        try:
            items = list(calibration)
        except TypeError:
            raise OptkitError("calibration", type(calibration).__name__, "is not iterable",
                              "pass a list of arrays or dicts, or a CalibrationDataReader") from None
    feeds = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            feed = {k: _np(v) for k, v in item.items()}
        else:
            if not input_names or len(input_names) != 1:
                raise OptkitError("calibration", f"item {i}: {type(item).__name__}",
                                  "is a bare array but the model's input names are unknown or several",
                                  "yield dicts {input name: array}, or pass input_names=[name]")
            feed = {input_names[0]: _np(item)}
        feeds.append(feed)
    if not feeds:
        raise OptkitError("calibration", calibration, "yielded no batches",
                          "pass a few hundred real examples from the calibration split (not the test split)")
    return _ListReader(feeds)


def _np(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value))


def quantize_dynamic(src, dst, *, per_channel: bool = False, weight_type: str = "int8",
                     preprocess: bool = True, op_types: Sequence[str] | None = None,
                     overwrite: bool = False) -> Path:
    """ORT dynamic quantization: int8 weights stored in the file, activations quantized at run time
    per tensor from their observed range. Best for transformers and MLPs (MatMul-heavy models
    where weight loading dominates). On convolutions it emits ``ConvInteger``, which ORT runs
    slowly on x86: use :func:`quantize_static` for CNNs (notebook 06 measures both).

    ``op_types``: restrict to these operator types (e.g. ``["MatMul", "Gemm"]``).
    ``preprocess=True`` runs :func:`preprocess` (``quant_pre_process``) first.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as _qd

    check_choice("weight_type", weight_type, _QUANT_TYPES)
    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    return _quantize(src_p, dst_p, overwrite, preprocess,
                     lambda a, b: _qd(a, b, per_channel=per_channel, op_types_to_quantize=op_types,
                                      weight_type=getattr(QuantType, _QUANT_TYPES[weight_type])))


def quantize_static(src, dst, calibration, *, per_channel: bool = True, activation_type: str = "uint8",
                    weight_type: str = "int8", method: str = "minmax", quant_format: str = "qdq",
                    preprocess: bool = True, op_types: Sequence[str] | None = None,
                    nodes_to_exclude: Sequence[str] | None = None, symmetric: bool = False,
                    entropy_bins: int = 512,
                    overwrite: bool = False) -> Path:
    """ORT static quantization: activation scales fixed ahead of time from ``calibration`` data.

    ``calibration``: see :func:`calibration_reader` (empty -> ``OptkitError``). ``method``:
    ``"minmax"`` (range of everything seen), ``"entropy"`` (KL-divergence threshold) or
    ``"percentile"`` (99.999th percentile; clips outliers). ``quant_format``: ``"qdq"``
    (QuantizeLinear/DequantizeLinear pairs that ORT fuses into int8 kernels; the format every
    runtime, TensorRT included, reads) or ``"qoperator"`` (QLinearConv etc.; slow on x86 here).
    ``activation_type="uint8"`` with ``weight_type="int8"`` (U8S8) is the fast combination on x86
    CPUs; S8S8 can be far slower (notebook 06). ``nodes_to_exclude`` keeps sensitive nodes in
    float (see :func:`layer_errors`). ``symmetric=True`` makes activation ranges symmetric (zero
    point 0); with ``activation_type="int8"`` that is the Q/DQ form TensorRT requires.

    ``entropy_bins``: histogram bins of the entropy method. ORT's ``quantize_static`` builds its
    entropy calibrator with 128 bins for 128 quantized bins, which leaves a single candidate
    threshold, the full range: "entropy" silently equals "minmax". optkit calibrates the entropy
    ranges itself with 512 bins (TensorRT uses 2,048: finer but 10x slower here) and hands them to ORT as a calibration cache.

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as _qs

    check_choice("method", method, CALIBRATION_METHODS)
    check_choice("quant_format", quant_format, QUANT_FORMATS)
    check_choice("activation_type", activation_type, _QUANT_TYPES)
    check_choice("weight_type", weight_type, _QUANT_TYPES)
    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    reader = calibration_reader(calibration, model=src_p)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999

    def run(a, b):
        reader.rewind()
        cache = None
        if method == "entropy":
            cache = _entropy_ranges(a, reader, Path(b).parent, entropy_bins)
        _qs(a, b, None if cache else reader, calibration_cache_path=cache, quant_format=getattr(QuantFormat, QUANT_FORMATS[quant_format]),
            per_channel=per_channel, activation_type=getattr(QuantType, _QUANT_TYPES[activation_type]),
            weight_type=getattr(QuantType, _QUANT_TYPES[weight_type]),
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
            op_types_to_quantize=op_types, nodes_to_exclude=list(nodes_to_exclude or []), extra_options=extra)

    return _quantize(src_p, dst_p, overwrite, preprocess, run)


def _entropy_ranges(model_path: str, reader, work: Path, num_bins: int) -> str:
    """KL-divergence (entropy) ranges with ``num_bins`` histogram bins, saved as ORT's calibration cache."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 256:
        raise OptkitError("entropy_bins", num_bins, "must be an int of at least 256 (twice the 128 quantized bins)",
                          "pass e.g. 2048")
    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    calibrator = create_calibrator(Path(model_path), ops, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": num_bins, "num_quantized_bins": 128})
    reader.rewind()
    calibrator.collect_data(reader)
    cache = work / "entropy_ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return str(cache)


def _quantize(src: Path, dst: Path, overwrite: bool, pre: bool, run: Callable[[str, str], None]) -> Path:
    from optkit.runtimes.model_files import atomic_write

    work = Path(tempfile.mkdtemp(prefix=".quant.", dir=dst.parent))
    try:
        source = src
        if pre:
            source = preprocess(src, work / "pre.onnx")
        out = work / "quant.onnx"
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                run(str(source), str(out))
            except OptkitError:
                raise
            except Exception as e:
                raise OptkitError("src", str(src), f"could not be quantized ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300] if str(e) else ''})",
                                  "check that the calibration batches match the model's inputs (names, "
                                  "dtypes, shapes), and that the model runs in ONNX Runtime") from None
        _check_model(out, "dst")
        with atomic_write(dst, overwrite=overwrite) as tmp:
            os.replace(out, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dst


def layer_errors(float_model, qdq_model, calibration, *, top: int | None = None) -> list[tuple[str, float]]:
    """Per-tensor SQNR (dB) between a float model's activations and its QDQ-quantized twin's, on
    the same ``calibration`` batches, lowest (worst) first: the first names are the layers to keep
    in float (``quantize_static(nodes_to_exclude=...)``) or to calibrate differently.

    Uses ``onnxruntime.quantization.qdq_loss_debug``. Both models should have been preprocessed
    the same way (pass the preprocessed float model, the one :func:`quantize_static` quantized).

    Taught in 06_onnx_and_onnx_runtime.
    """
    from onnxruntime.quantization import qdq_loss_debug as qd

    f_p, q_p = _check_src(float_model, "float_model"), _check_src(qdq_model, "qdq_model")
    reader = calibration_reader(calibration, model=f_p)
    work = Path(tempfile.mkdtemp(prefix=".qdqdebug."))
    try:
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f_aug, q_aug = work / "float_aug.onnx", work / "qdq_aug.onnx"
            qd.modify_model_output_intermediate_tensors(str(f_p), str(f_aug))
            qd.modify_model_output_intermediate_tensors(str(q_p), str(q_aug))
            reader.rewind()
            q_act = qd.collect_activations(str(q_aug), reader)
            reader.rewind()
            f_act = qd.collect_activations(str(f_aug), reader)
            matched = qd.create_activation_matching(q_act, f_act)
            errors = qd.compute_activation_error(matched)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [(name, float(err.get("xmodel_err", math.nan))) for name, err in errors.items()
            if "xmodel_err" in err]
    rows.sort(key=lambda r: (math.isnan(r[1]), r[1]))
    return rows[:top] if top else rows


def convert_fp16(src, dst, *, keep_io_types: bool = True, overwrite: bool = False) -> Path:
    """Convert a model's weights and computation to float16 (ORT's ``convert_float_to_float16``).

    ``keep_io_types=True`` keeps float32 inputs and outputs (a ``Cast`` at each end), so callers
    do not change. FP16 pays on GPUs (tensor cores) and in TensorRT 11, whose strongly typed
    networks take precision from the file; ORT's CPU provider runs most fp16 operators slowly.
    The result passes ``onnx.checker``; check parity with :func:`verify` (expect ~1e-3 errors).

    Taught in 08_tensorrt.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from optkit.runtimes.model_files import atomic_write

    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(onnx.load(str(src_p)), keep_io_types=keep_io_types)
    _toposort(half.graph)  # the converter appends its input Casts at the end of the node list
    with atomic_write(dst_p, overwrite=overwrite) as tmp:
        tmp.write_bytes(half.SerializeToString())
    _check_model(dst_p, "dst")
    return dst_p


def _toposort(graph) -> None:
    """Reorder ``graph.node`` in place so that every node comes after the nodes it reads from."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # a cycle or an undefined input: leave the rest as they were, the checker will say
            ordered += pending
            break
        for n in ready:
            known.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


# --------------------------------------------------------------------------- TensorFlow

def from_tensorflow(model, path, *, input_signature=None, opset: int = 17, overwrite: bool = False) -> Path:
    """Convert a Keras model (Keras 3 or tf_keras) or a ``tf.function`` to ONNX with tf2onnx.

    tf2onnx's ``from_keras`` fails on Keras 3 models, so the model is wrapped in a ``tf.function``
    with an explicit ``input_signature`` and converted with ``from_function``. ``input_signature``:
    a list of ``tf.TensorSpec``; by default it is read from ``model.inputs`` with a dynamic batch
    dimension. The written file passes ``onnx.checker``. Check parity with :func:`verify`.

    Taught in 06_onnx_and_onnx_runtime.
    """
    dst = _check_dst(path, overwrite=overwrite)
    from optkit.runtimes import tflow as otf

    tf = otf.import_tensorflow()
    if input_signature is None:
        inputs = getattr(model, "inputs", None)
        if not inputs:
            raise OptkitError("input_signature", None, "is needed: the model has no declared inputs",
                              "pass input_signature=[tf.TensorSpec([None, ...], tf.float32, name='x')]")
        input_signature = [tf.TensorSpec([None] + list(t.shape[1:]), t.dtype, name=f"input_{i}" if len(inputs) > 1
                                         else "input") for i, t in enumerate(inputs)]
    fn = model if hasattr(model, "get_concrete_function") else \
        tf.function(lambda *xs: model(*xs, training=False), input_signature=input_signature)
    from optkit.runtimes.model_files import atomic_write

    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tf2onnx

        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=input_signature, opset=opset)
        except Exception as e:
            raise OptkitError("model", type(model).__name__, f"tf2onnx could not convert it ({_first_line(e)})",
                              "check the input_signature (shapes, dtypes), or export a SavedModel and use "
                              "`python -m tf2onnx.convert --saved-model`") from None
    with atomic_write(dst, overwrite=overwrite) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    _check_model(dst)
    return dst


# --------------------------------------------------------------------------- int8 arithmetic on x86

def u8s8_matmul(a, w, *, vnni: bool = True) -> np.ndarray:
    """``a @ w`` for uint8 activations ``a [m, k]`` and int8 weights ``w [k, n]``, accumulated in int32
    the way an x86 CPU does it.

    ``vnni=True``: AVX-512 VNNI / AVX-VNNI (``vpdpbusd``) multiply four u8 x s8 pairs and add them
    straight into int32: the exact result. ``vnni=False``: AVX2 / AVX-512 without VNNI use
    ``vpmaddubsw``, which adds each *pair* of products into a **saturating int16** first (255 x 127
    x 2 = 64,770 does not fit in 32,767) and only then widens to int32. The two disagree whenever a
    pair of large activations meets a pair of large weights of the same sign, which is why the
    same U8S8 model can give different int8 results on different CPUs, and why ORT offers
    ``reduce_range`` (7-bit weights: 2 x 255 x 64 = 32,640 fits) for CPUs without VNNI.

    Taught in 06_onnx_and_onnx_runtime.
    """
    a = np.asarray(a)
    w = np.asarray(w)
    if a.dtype != np.uint8 or w.dtype != np.int8:
        raise OptkitError("a, w", f"{a.dtype}, {w.dtype}", "must be uint8 activations and int8 weights",
                          "pass a.astype(np.uint8), w.astype(np.int8)")
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise OptkitError("a, w", f"{a.shape}, {w.shape}", "must be [m, k] and [k, n]", "reshape the operands")
    a32, w32 = a.astype(np.int32), w.astype(np.int32)
    if vnni:
        return a32 @ w32
    k = a.shape[1]
    if k % 2:  # the kernel pads k to even with zeros
        a32 = np.concatenate([a32, np.zeros((a.shape[0], 1), np.int32)], axis=1)
        w32 = np.concatenate([w32, np.zeros((1, w.shape[1]), np.int32)], axis=0)
    products = a32[:, :, None] * w32[None, :, :]            # [m, k, n]
    pairs = products[:, 0::2, :] + products[:, 1::2, :]     # vpmaddubsw: adjacent pairs ...
    pairs = np.clip(pairs, -32768, 32767)                    # ... saturated to int16
    return pairs.sum(axis=1, dtype=np.int64).astype(np.int32)
