"""Inspecting an ONNX file: :class:`ModelInfo`, :func:`op_counts`, :func:`inspect` and :func:`check`.

Inputs and outputs, opset, node and operator counts and size on disk, read without loading
external weights; :func:`check` adds ``onnx.checker`` and strict shape inference. Taught in
06_onnx_and_onnx_runtime.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from optkit.core.errors import OptkitError, check_path_exists
from optkit.runtimes.onnxrt.files import _check_model, _first_line, _load_proto, _opset_of, _specs, _uses_external_data


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
