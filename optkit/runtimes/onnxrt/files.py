"""Shared pieces of :mod:`optkit.runtimes.onnxrt`: the ONNX file on disk and the types every step uses.

:class:`TensorSpec` (one input or output of a model), the checks on a destination (``.onnx``, not
overwritten by accident) and a source (an existing, readable ONNX file), loading a model proto
with a readable error, ``onnx.checker``, reading opset, inputs/outputs and external data from a
proto, the exporters' silencer (:func:`_quiet`) and the one-line summary of an exception. The
other submodules import from here; this one imports none of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optkit.core.errors import OptkitError, check_destination, check_path_exists

# ONNX TensorProto element type -> numpy dtype name (the ones a model's inputs use in practice).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


# --------------------------------------------------------------------------- shared type

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


# --------------------------------------------------------------------------- helpers

_EXPORT_LOGGERS = ("torch.onnx", "torch._dynamo", "torch.fx", "torch.export", "torch._export",
                   "torch.fx.experimental.symbolic_shapes", "onnxscript", "onnx_ir", "root")


def _quiet():
    """Silence the exporters (progress lines, graph dumps, C++ warnings, their loggers): the one
    silencer, :func:`optkit.core.quiet.silenced`; yields a buffer with what they printed."""
    from optkit.core.quiet import silenced

    return silenced(loggers=_EXPORT_LOGGERS)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


# --------------------------------------------------------------------------- file checks

def _check_dst(path: Any, parameter: str = "path", overwrite: bool = False) -> Path:
    """:func:`~optkit.core.errors.check_destination` plus the ``.onnx`` suffix every writer here needs."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".onnx":
        raise OptkitError(parameter, str(path), "must end in .onnx",
                          f"use {p.with_suffix('.onnx').name!r}")
    return check_destination(p, overwrite=overwrite, parameter=parameter)


def _check_src(path: Any, parameter: str = "src") -> Path:
    """:func:`~optkit.core.errors.check_path_exists` plus: a file, not a folder, that loads as ONNX."""
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
