"""How big a model is: on disk, compressed, and as a serialized state dict. The one place sizes
are computed (model_files, quantize, prune, compress and the capstone all call these).

- :func:`file_size`: bytes on disk; a folder's files, and an ONNX file's external-data files
- :func:`gzip_size`: bytes after gzip -9; pruned zeros and clustered values show here first
- :func:`model_size`: bytes of ``torch.save(state_dict)``, in memory; for a converted PT2E graph
  only the tensors its graph reads (the float originals ``convert_pt2e`` leaves attached are dead)
- :func:`state_bytes`: those serialized bytes themselves (for ``gzip_size``)
- :func:`sha256`: a file's digest

torch and onnx are imported inside the functions that need them: ``optkit.core`` stays free of
frameworks at import.

Taught in 00_measure_first, 02_quantization and 03_pruning.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

from optkit.core.errors import OptkitError, check_path_exists

__all__ = ["file_size", "gzip_size", "model_size", "state_bytes", "state_dict_of", "sha256"]


def _onnx_external_files(path: Path) -> list[Path]:
    """The external-data files an ONNX model refers to (e.g. ``model.onnx.data``)."""
    try:
        import onnx
        from onnx.external_data_helper import _get_all_tensors, uses_external_data
    except ImportError:
        return []
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return []
    names = set()
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    names.add(entry.value)
    return [path.parent / n for n in sorted(names) if (path.parent / n).is_file()]


def file_size(path: str | os.PathLike, include_external_data: bool = True) -> int:
    """Bytes on disk: a file, or every file under a folder (a SavedModel, say).

    For an ``.onnx`` file the external-data files it refers to (``model.onnx.data``, written by
    ``torch.onnx.export`` by default) are added, so the size is what you would ship.

    Taught in 00_measure_first.
    """
    p = check_path_exists("path", path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    size = p.stat().st_size
    if include_external_data and p.suffix.lower() == ".onnx":
        size += sum(f.stat().st_size for f in _onnx_external_files(p))
    return size


def gzip_size(path_or_bytes: str | os.PathLike | bytes, level: int = 9) -> int:
    """Bytes after gzip compression (in memory, level 9) of a file, a folder's files, or bytes.

    Compression finds repeated and zero bytes: a pruned model's zeros and a clustered model's
    few distinct values show up here long before they show up in :func:`file_size`.

    Taught in 00_measure_first and 03_pruning.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return len(gzip.compress(bytes(path_or_bytes), compresslevel=level))
    p = check_path_exists("path", path_or_bytes)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return sum(len(gzip.compress(f.read_bytes(), compresslevel=level)) for f in files)


def state_dict_of(model_or_state: Any) -> dict:
    """The state dict to serialize: a module's (only what a converted graph reads), or the dict given."""
    if isinstance(model_or_state, dict):
        return model_or_state
    if not hasattr(model_or_state, "state_dict"):
        raise OptkitError("model", type(model_or_state).__name__, "is neither an nn.Module nor a state dict",
                          "pass the model, or model.state_dict()")
    state = model_or_state.state_dict()
    graph = getattr(model_or_state, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return state
    used = {str(n.target) for n in graph.nodes if n.op in ("get_attr", "call_module")}
    return {k: v for k, v in state.items() if any(k == u or k.startswith(u + ".") for u in used)}


def state_bytes(model_or_state: Any) -> bytes:
    """``torch.save`` of the model's state dict (see :func:`model_size`), as bytes in memory.

    Plain tensors are saved detached, on the CPU and contiguous, so equal weights give equal bytes
    whatever device or view they came from; tensor subclasses (torchao) are saved as they are.
    """
    import torch

    state = {k: (v.detach().cpu().contiguous() if type(v) is torch.Tensor else v)
             for k, v in state_dict_of(model_or_state).items()}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchao subclasses warn about their pickling
        torch.save(state, buf)
    return buf.getvalue()


def model_size(model_or_state: Any) -> int:
    """Bytes of ``torch.save(model.state_dict())``, written to memory (no file).

    Close to 4 bytes per fp32 parameter plus a few kB of archive overhead; quantized models count
    their packed int8 weights; a converted PT2E graph counts only the tensors its graph reads. A
    model still carrying pruning masks saves ``weight_orig`` *and* ``weight_mask``, so it is larger
    than the dense model until ``prune.make_permanent``.

    Taught in 00_measure_first.
    """
    return len(state_bytes(model_or_state))


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MB blocks.

    Taught in 00_measure_first.
    """
    p = check_path_exists("path", path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
