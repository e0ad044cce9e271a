"""One registry of model file formats: what a file is, and how to run it.

- :data:`FORMATS` lists every format optkit recognizes, keyed by a short name, with the suffixes
  that mark it and the framework that reads it.
- :func:`find` tells a path's format (by suffix, or a SavedModel folder); None if optkit does
  not know it. Callers say in their own words which formats *they* accept.
- :func:`load_runner` opens ONNX, ``torch.export`` and TFLite files as a batched numpy function
  with ``threads`` intra-op threads, plus the input shape and dtype the file declares.

:mod:`optkit.runtimes.model_files` (safe loading), :mod:`optkit.serve` (artifacts behind the batcher and Ray Serve)
and :mod:`optkit.optimize` (the capstone) all dispatch through it, so a new format is one entry
here plus its loader. Importing it imports no framework.

Taught in 10_optimize_your_own_model (and used by 01 and 09).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optkit.core.errors import OptkitError

__all__ = ["ModelFormat", "FORMATS", "find", "is_saved_model", "suffixes_of", "load_runner", "Runner", "numpy_fn"]


@dataclass(frozen=True)
class ModelFormat:
    """A model file format: its ``key``, how to describe it, the suffixes that mark it, and the
    framework that reads it. ``folder`` formats are directories (a TensorFlow SavedModel)."""

    key: str
    description: str
    suffixes: tuple[str, ...]
    framework: str
    folder: bool = False

    def __repr__(self) -> str:
        return f"ModelFormat({self.key!r}: {self.description})"


FORMATS: dict[str, ModelFormat] = {f.key: f for f in [
    ModelFormat("onnx", "ONNX model (.onnx)", (".onnx",), "onnx"),
    ModelFormat("torch_export", "torch.export program (.pt2)", (".pt2",), "torch"),
    ModelFormat("torch_pickle", "PyTorch file: a state dict or a pickled module (.pt, .pth, .pkl, .pickle, .bin)",
                (".pt", ".pth", ".pkl", ".pickle", ".bin"), "torch"),
    ModelFormat("keras", "Keras model (.keras, .h5 or a SavedModel folder)", (".keras", ".h5", ".hdf5"),
                "tensorflow"),
    ModelFormat("saved_model", "TensorFlow SavedModel folder", (), "tensorflow", folder=True),
    ModelFormat("tflite", "TFLite flat buffer (.tflite)", (".tflite",), "tflite"),
]}


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TensorFlow SavedModel folder (it holds ``saved_model.pb`` or ``.pbtxt``)."""
    path = Path(path)
    return path.is_dir() and ((path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists())


def find(path: str | os.PathLike) -> ModelFormat | None:
    """The format of ``path``: a SavedModel folder, or the format its suffix marks; None if unknown."""
    p = Path(path)
    if p.is_dir():
        return FORMATS["saved_model"] if is_saved_model(p) else None
    suffix = p.suffix.lower()
    return next((f for f in FORMATS.values() if suffix in f.suffixes), None)


def suffixes_of(*keys: str) -> list[str]:
    """Every suffix of the given format keys, in registry order (for error messages)."""
    return [s for k in keys for s in FORMATS[k].suffixes]


@dataclass
class Runner:
    """A model file opened for inference: ``fn(batch) -> outputs`` on numpy arrays, and the input
    ``shape`` (without the batch dimension) and ``dtype`` the file declares (None if it does not)."""

    fn: Callable[[np.ndarray], Any]
    shape: tuple[int, ...] | None
    dtype: str | None
    format: ModelFormat

    def __iter__(self):  # unpacks as (fn, shape, dtype), what optkit.serve.load_artifact returns
        return iter((self.fn, self.shape, self.dtype))


def numpy_fn(model: Any, *, input_name: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A batched ``numpy -> numpy`` function for a model from any runtime in the course.

    - a ``torch.nn.Module`` (or the ``.module()`` of a ``torch.export`` program): called under
      ``torch.inference_mode()`` on ``torch.from_numpy(x)``, returning ``.numpy()``;
    - an ``onnxruntime.InferenceSession``: ``session.run(None, {input: x})[0]``;
    - anything else callable (an ``optkit.runtimes.onnxrt.Runner``, an ``optkit.runtimes.tflow.LiteRT``, your own
      function) is returned as it is.

    The batcher, the cache and the Ray deployment all take such a function.
    Taught in 09_serving_batching_and_caching.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        module = model.eval()

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()

        run_torch.__name__ = f"{type(model).__name__}_numpy"
        return run_torch
    if hasattr(model, "run") and hasattr(model, "get_inputs"):  # onnxruntime.InferenceSession
        session = model
        name = input_name or session.get_inputs()[0].name

        def run_ort(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x})[0]

        run_ort.__name__ = "ort_session"
        return run_ort
    if callable(model):
        return model
    raise OptkitError("model", model, "is neither a torch module, an ONNX Runtime session nor a callable",
                      "pass a model, a session, or a function from a batch array to an output array")


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
              "tensor(float16)": "float16"}


def _onnx_runner(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    dims = spec.shape[1:]
    shape = tuple(dims) if all(isinstance(d, int) for d in dims) else None
    return session, shape, _ORT_TYPES.get(spec.type)


def _program_runner(path: Path, threads: int):
    import torch

    torch.set_num_threads(threads)  # process-wide: a Serve replica or a capstone worker owns its process
    program = torch.export.load(str(path))
    spec = program.graph_signature.user_inputs
    shape = dtype = None
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in spec]
    if placeholders and "val" in placeholders[0].meta:
        val = placeholders[0].meta["val"]
        dims = val.shape[1:]
        if all(isinstance(d, int) for d in dims):
            shape = tuple(int(d) for d in dims)
        dtype = str(val.dtype).replace("torch.", "")
    return program.module(), shape, dtype


def _tflite_runner(path: Path, threads: int):
    try:
        from optkit.runtimes import tflow as optkit_tf
    except ImportError as exc:  # pragma: no cover - depends on the TensorFlow lesson's module
        raise OptkitError("path", str(path), f"needs optkit.runtimes.tflow, which failed to import ({exc})",
                          "install the tf extra, or export the model to ONNX") from None
    runner = optkit_tf.LiteRT(str(path), num_threads=threads)
    detail = runner.input_details[0]
    return runner, tuple(int(d) for d in detail["shape"][1:]), "float32"


_RUNNERS = {"onnx": _onnx_runner, "torch_export": _program_runner, "tflite": _tflite_runner}


def load_runner(path: str | os.PathLike, *, threads: int = 1) -> Runner:
    """Open an ONNX, ``.pt2`` or ``.tflite`` file as a :class:`Runner` with ``threads`` intra-op threads.

    ONNX files run in an ONNX Runtime CPU session, ``.pt2`` programs as their ``module()`` (this
    sets torch's thread count for the whole process), TFLite files through
    :class:`optkit.runtimes.tflow.LiteRT`. Other formats raise :class:`OptkitError` naming those three.
    """
    p = Path(path)
    fmt = find(p)
    if fmt is None or fmt.key not in _RUNNERS:
        what = fmt.description if fmt else f"a file with the suffix {p.suffix.lower() or '(none)'!r}"
        raise OptkitError("path", str(p), f"is {what}, which optkit cannot run directly",
                          "pass a .onnx, .pt2 or .tflite file (export the model first: notebooks 06 and 07)")
    model, shape, dtype = _RUNNERS[fmt.key](p, threads)
    fn = model if fmt.key == "tflite" else numpy_fn(model)
    return Runner(fn, shape, dtype, fmt)
