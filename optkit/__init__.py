"""optkit: helpers for the optkit curriculum on making trained models small and fast.

The package is layered; each layer imports only from the ones above it in this list
(docs/ARCHITECTURE.md, enforced by tests/test_architecture.py):

1. ``optkit.core``: errors, files, quiet, bench, verify, variant, record, report (no framework at import)
2. ``optkit.data``: data sets, reference models, pretrained models from registry packages
3. ``optkit.techniques``: quantize, prune, distill, compress
4. ``optkit.runtimes``: formats, model_files, gpu, onnxrt, tflow, trt_engines
5. ``optkit.serve``: dynamic batching, caching, load generation, HTTP and Ray Serve
6. ``optkit.optimize``: the capstone (``optkit optimize MODEL``) and its recipes
7. ``optkit.course``: notebook helpers, the curriculum runner, nbcheck, exercises

``optkit.cli`` is the command line; nothing imports it. Layers load on first use, so
``import optkit`` is quick and never pulls in a framework. The flat paths of 0.1
(``optkit.quantize`` ...) still import, with a DeprecationWarning (:mod:`optkit._compat`).
"""
from __future__ import annotations

import importlib

from optkit import _compat

__version__ = "0.2.0"

LAYERS = ("core", "data", "techniques", "runtimes", "serve", "optimize", "course")
__all__ = list(LAYERS) + ["cli", "__version__"]

_compat.install()


def __getattr__(name: str):
    if name in LAYERS or name == "cli":
        return importlib.import_module(f"{__name__}.{name}")
    if name in _compat.MOVED:
        _compat.warn_moved(name)
        module = globals()[name] = importlib.import_module(_compat.MOVED[name])  # warn once
        return module
    raise AttributeError(f"module 'optkit' has no attribute {name!r}; layers: {', '.join(LAYERS)}")
