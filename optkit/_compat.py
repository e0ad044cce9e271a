"""Old flat import paths (``optkit.quantize``, ``optkit.io`` ...) kept for one release.

Before 0.2 every module sat directly under ``optkit``. They now live in layer folders (see
docs/ARCHITECTURE.md). A team's script that still writes ``from optkit import quantize`` or
``import optkit.onnx`` gets the same module object it would get from the new path, with a
``DeprecationWarning`` that names the new path. The notebooks, tests and the package itself use
the new paths only (``tests/test_architecture.py`` checks it). Remove in 0.3.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module name -> where it lives now
MOVED = {
    "errors": "optkit.core.errors", "files": "optkit.core.files", "quiet": "optkit.core.quiet",
    "bench": "optkit.core.bench", "verify": "optkit.core.verify", "record": "optkit.core.record",
    "report": "optkit.core.report",
    "models": "optkit.data.models", "zoo": "optkit.data.zoo", "train_reference": "optkit.data.train_reference",
    "quantize": "optkit.techniques.quantize", "prune": "optkit.techniques.prune",
    "distill": "optkit.techniques.distill", "compress": "optkit.techniques.compress",
    "formats": "optkit.runtimes.formats", "io": "optkit.runtimes.model_files", "gpu": "optkit.runtimes.gpu",
    "onnx": "optkit.runtimes.onnxrt", "tf": "optkit.runtimes.tflow", "tensorrt": "optkit.runtimes.trt_engines",
    "optimize_recipes": "optkit.optimize.recipes",
    "notebook": "optkit.course.notebook", "curriculum": "optkit.course.curriculum",
    "nbcheck": "optkit.course.nbcheck", "exercises": "optkit.course.exercises",
    "exercises_quantize": "optkit.course.exercises.nb02", "exercises_prune": "optkit.course.exercises.nb03",
    "exercises_distill": "optkit.course.exercises.nb04", "exercises_compress": "optkit.course.exercises.nb05",
    "exercises_onnx": "optkit.course.exercises.nb06", "exercises_tf": "optkit.course.exercises.nb07",
    "exercises_serve": "optkit.course.exercises.nb09", "exercises_optimize": "optkit.course.exercises.nb10",
}


def warn_moved(old: str, stacklevel: int = 3) -> None:
    warnings.warn(f"optkit.{old} moved to {MOVED[old]}; import it from there "
                  f"(the old path goes in optkit 0.3)", DeprecationWarning, stacklevel=stacklevel)


class _Alias(importlib.abc.Loader):
    """Loads ``optkit.<old>`` as the module at its new path (the same object, not a copy)."""

    def __init__(self, old: str):
        self.old = old

    def create_module(self, spec):
        warn_moved(self.old, stacklevel=8)
        module = importlib.import_module(MOVED[self.old])
        self._real_spec, self._real_loader = module.__spec__, module.__loader__
        return module

    def exec_module(self, module) -> None:
        # the import system stamped the alias spec on the real module; give it its own back
        module.__spec__, module.__loader__ = self._real_spec, self._real_loader


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.partition(".")
        if head == "optkit" and old in MOVED:
            return importlib.util.spec_from_loader(fullname, _Alias(old))
        return None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
