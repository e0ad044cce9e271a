"""Offline graph optimization: :func:`optimize` (ONNX Runtime's rewrites, saved) and :func:`simplify` (onnxslim).

Taught in 06_onnx_and_onnx_runtime.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from optkit.core.errors import check_choice
from optkit.runtimes.onnxrt.files import _check_dst, _check_model, _check_src, _quiet
from optkit.runtimes.onnxrt.sessions import OPTIMIZATION_LEVELS, session


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
