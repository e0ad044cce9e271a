"""Model files in and out, loaded safely and written atomically, and their sizes.

- Loading is safe by default. A ``.pt``/``.pth`` file is read with ``torch.load(weights_only=True)``,
  which only rebuilds tensors and plain containers: nothing in the file can run code. A file that
  holds a pickled whole model is refused unless you pass ``allow_pickle=True``, because unpickling
  runs whatever code the file names. ``.pt2`` files (``torch.export``) and ``.onnx`` files (checked
  by ``onnx.checker``) are graphs, not pickles.
- Writing is atomic: the bytes go to a temporary file in the destination folder, which then
  replaces the destination in one ``os.replace``. A crash never leaves half a model behind, and
  ``overwrite=False`` (the default) refuses to replace an existing file.
- Sizes: :func:`file_size` (folders and ONNX external-data files included), :func:`gzip_size`
  (how well the bytes compress: pruned and clustered weights compress, dense fp32 hardly does),
  :func:`model_size` (bytes of the serialized state dict, without touching the disk).

Taught in 00_measure_first (sizes) and 01_pytorch_inference_essentials (safe loading, export).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optkit.core.errors import OptkitError, check_path_exists
from optkit.core.files import atomic_write
from optkit.core.sizes import file_size, gzip_size, model_size, sha256  # noqa: F401  (taught here in 00)

__all__ = [
    "atomic_write",
    "save_state_dict",
    "load_state_dict",
    "save_program",
    "load_program",
    "save_onnx",
    "load_onnx",
    "load_model",
    "file_size",
    "gzip_size",
    "model_size",
    "sha256",
    "SUPPORTED_FORMATS",
]

#: Format key (:data:`optkit.runtimes.formats.FORMATS`) -> what :func:`load_model` does with it.
SUPPORTED_FORMATS = {
    "torch_pickle": "state dict via torch.load(weights_only=True)",
    "torch_export": "torch.export program via torch.export.load",
    "onnx": "ONNX model via onnx.load + onnx.checker",
}


# --------------------------------------------------------------------------- writing

# atomic_write is optkit.core.files.atomic_write (re-exported here, where 00 teaches it): one writer
# for every artifact, record and report, and importable without torch.


def _state_dict_of(model_or_state: Any) -> dict:
    if isinstance(model_or_state, nn.Module):
        return model_or_state.state_dict()
    if isinstance(model_or_state, dict):
        return model_or_state
    raise OptkitError("model", type(model_or_state).__name__, "is neither an nn.Module nor a state dict",
                      "pass the model, or model.state_dict()")


def save_state_dict(model: nn.Module | dict, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``model.state_dict()`` (or a state dict) with ``torch.save``, atomically; return the path.

    A state dict holds tensors only, so it loads back with ``weights_only=True``. Rebuild the
    model in code and call :func:`load_state_dict`. Equal weights give byte-identical files.

    Taught in 00_measure_first.
    """
    state = _state_dict_of(model)
    path = Path(path).expanduser()
    with atomic_write(path, overwrite=overwrite) as tmp:
        # Through a file object, torch names the archive's records "archive/..."; given a path it
        # would use the temporary file's random name, and equal weights would give unequal files.
        with open(tmp, "wb") as f:
            torch.save(state, f)
    return path


def save_program(exported_program, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a ``torch.export.ExportedProgram`` to a ``.pt2`` file, atomically; return the path.

    Taught in 01_pytorch_inference_essentials.
    """
    if not isinstance(exported_program, torch.export.ExportedProgram):
        raise OptkitError("exported_program", type(exported_program).__name__, "is not an ExportedProgram",
                          "pass the result of torch.export.export(model, (example,))")
    path = Path(path).expanduser()
    if path.suffix != ".pt2":
        raise OptkitError("path", str(path), "must end in .pt2 (torch.export refuses other names)",
                          f"use {path.with_suffix('.pt2').name!r}")
    with atomic_write(path, overwrite=overwrite) as tmp:
        # torch.export.save wants the .pt2 suffix, so write through an open file object.
        with open(tmp, "wb") as f:
            torch.export.save(exported_program, f)
    return path


def save_onnx(model_proto, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save an ``onnx.ModelProto`` as one self-contained ``.onnx`` file, atomically; return the path.

    Models over 2 GB need external data, which this function does not write.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnx

    if not isinstance(model_proto, onnx.ModelProto):
        raise OptkitError("model_proto", type(model_proto).__name__, "is not an onnx.ModelProto",
                          "pass onnx.load(...) or torch.onnx.export(...).model_proto")
    path = Path(path).expanduser()
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(model_proto.SerializeToString())
    return path


# --------------------------------------------------------------------------- loading

def _pickle_refused(path: Path, what: str) -> OptkitError:
    return OptkitError(
        "path", str(path),
        f"{what}; loading it means unpickling, which runs any code the file names (the safe "
        "weights_only=True load refused it)",
        "if you trust where the file came from, pass allow_pickle=True; better, save "
        "model.state_dict() and load that into a model built in code")


def _looks_pickled(path: Path) -> bool:
    """A torch.save zip archive, or a legacy torch.save / plain pickle stream (protocol 2+)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def load_state_dict(path: str | os.PathLike, model: nn.Module | None = None, *, strict: bool = True,
                    allow_pickle: bool = False):
    """Load a state dict with ``torch.load(weights_only=True)``; into ``model`` if given.

    Returns ``model`` (weights loaded, ``strict`` key matching) or, without a model, the state
    dict. A file holding a pickled whole module raises an ``OptkitError`` unless
    ``allow_pickle=True`` (then it is unpickled and returned as it is).

    Taught in 00_measure_first and 01_pytorch_inference_essentials.
    """
    path = check_path_exists("path", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not _looks_pickled(path):
            raise OptkitError("path", str(path), "is not a PyTorch file (not a torch.save archive)",
                              "check the path; state dicts are written by torch.save or "
                              "optkit.runtimes.model_files.save_state_dict") from None
        if not allow_pickle:
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" ({found.group(1)})" if found else ""
            raise _pickle_refused(path, f"holds a pickled Python object{what}, e.g. a whole nn.Module, not "
                                        "only tensors") from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except RuntimeError as e:
        if "TorchScript" in str(e):
            if not allow_pickle:
                raise OptkitError("path", str(path), "is a TorchScript archive, not a state dict",
                                  "load it with torch.jit.load (deprecated), or pass allow_pickle=True") from None
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            raise OptkitError("path", str(path), f"is not a readable PyTorch file ({str(e).splitlines()[0]})",
                              "check that the file is complete and was written by torch.save") from None
    except (KeyError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise OptkitError("path", str(path), f"is not a PyTorch file ({type(e).__name__})",
                          "check the path; state dicts are written by torch.save or optkit.runtimes.model_files.save_state_dict") from None
    if model is None or not isinstance(obj, dict):
        return obj
    try:
        model.load_state_dict(obj, strict=strict)
    except RuntimeError as e:
        raise OptkitError("model", type(model).__name__, f"does not match the weights in {path.name}: "
                          f"{' '.join(str(e).split())[:400]}",
                          "build the model with the same architecture and arguments as when it was saved") from None
    return model


def load_program(path: str | os.PathLike):
    """Load a ``.pt2`` file written by ``torch.export.save`` (or :func:`save_program`).

    Returns the ``ExportedProgram``; call ``.module()`` for a callable. An AOTInductor package
    (also ``.pt2``) is not an exported program: load that with ``torch._inductor.aoti_load_package``.

    Taught in 01_pytorch_inference_essentials.
    """
    path = check_path_exists("path", path)
    if not zipfile.is_zipfile(path):
        raise OptkitError("path", str(path), "is not a .pt2 archive (not a zip file)",
                          "pass a file written by torch.export.save")
    try:
        with open(path, "rb") as f:
            return torch.export.load(f)
    except Exception as e:  # torch raises several types for a wrong archive
        raise OptkitError("path", str(path), f"is not a torch.export program ({type(e).__name__})",
                          "pass a file written by torch.export.save; an AOTInductor package loads "
                          "with torch._inductor.aoti_load_package") from None


def load_onnx(path: str | os.PathLike, check: bool = True):
    """Load an ``.onnx`` model (with its external-data file if any) and run ``onnx.checker`` on it.

    A file that is not ONNX, or that fails the checker, raises an ``OptkitError``.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import onnx

    path = check_path_exists("path", path)
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise OptkitError("path", str(path), f"is not a readable ONNX model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})",
                          "export it with torch.onnx.export; keep its .onnx.data file beside it") from None
    if len(proto.graph.node) == 0 and not proto.opset_import:
        raise OptkitError("path", str(path), "holds no ONNX graph", "pass a file written by torch.onnx.export")
    if check:
        try:
            # the path form also checks models with external data
            onnx.checker.check_model(str(path))
        except Exception as e:
            raise OptkitError("path", str(path), f"fails onnx.checker: {str(e).splitlines()[0][:300]}",
                              "re-export the model, or pass check=False to inspect it anyway") from None
    return proto


def load_model(path: str | os.PathLike, *, allow_pickle: bool = False, model: nn.Module | None = None):
    """Load any model file optkit knows, choosing by its format (:func:`optkit.runtimes.formats.find`);
    safe unless told otherwise.

    - ``.pt`` / ``.pth`` (and ``.pkl``, ``.pickle``, ``.bin``): a state dict with
      ``torch.load(weights_only=True)``, loaded into ``model`` when given (returns the model), else
      returned as a dict. A pickled whole module raises an ``OptkitError``: unpickling runs code
      from the file, so only ``allow_pickle=True`` opts in.
    - ``.pt2``: a ``torch.export`` program (``ExportedProgram``).
    - ``.onnx``: an ``onnx.ModelProto``, checked with ``onnx.checker``.
    - ``.keras``, ``.h5``, ``.tflite`` and SavedModel folders are recognized but not loaded here:
      they raise an ``OptkitError`` pointing to ``optkit.runtimes.tflow`` (notebook 07_tensorflow_and_tflite),
      so that this module never imports TensorFlow.

    Any other suffix, or a missing path, raises an ``OptkitError``.

    Taught in 01_pytorch_inference_essentials.
    """
    from optkit.runtimes import formats

    p = check_path_exists("path", path)
    fmt = formats.find(p)
    if fmt is not None and fmt.framework in ("tensorflow", "tflite"):
        raise OptkitError("path", str(p), f"is a {fmt.description}, which optkit.runtimes.model_files does not load",
                          "load it with optkit.runtimes.tflow (taught in 07_tensorflow_and_tflite), or with "
                          "tf.keras.models.load_model / ai_edge_litert directly")
    if fmt is not None and fmt.key == "torch_pickle":
        return load_state_dict(p, model, allow_pickle=allow_pickle)
    if fmt is not None and fmt.key == "torch_export":
        return load_program(p)
    if fmt is not None and fmt.key == "onnx":
        return load_onnx(p)
    known = ", ".join(s for f in formats.FORMATS.values() for s in f.suffixes) + ", a SavedModel folder"
    raise OptkitError("path", str(p), f"has a suffix ({p.suffix.lower() or 'none'}) optkit does not know",
                      f"use one of: {known}")
