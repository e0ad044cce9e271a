"""optkit: helpers for the optkit curriculum on making trained models small and fast.

Submodules load on first use (``optkit.bench``, ``optkit.verify`` ...), so ``import optkit`` is
quick and never pulls in TensorFlow or TensorRT. See README.md for the map of modules.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "bench", "cli", "curriculum", "data", "errors", "exercises", "io", "models", "notebook",
    "record", "report", "verify", "quantize", "prune", "zoo", "distill", "compress", "onnx",
    "tensorrt", "tf", "serve", "optimize", "optimize_recipes", "gpu", "formats", "files", "quiet",
}
__all__ = sorted(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'optkit' has no attribute {name!r}; submodules: {', '.join(sorted(_SUBMODULES))}")
