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


# --------------------------------------------------------------------------- transformer fusions

#: Operators ORT's transformer optimizer fuses into (``onnxruntime.transformers``), counted by
#: :func:`optimize_transformer`.
FUSED_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
             "BiasGelu", "FastGelu", "Gelu", "LayerNormalization")


def optimize_transformer(src, dst, *, model_type: str = "bert", num_heads: int = 0, hidden_size: int = 0,
                         overwrite: bool = False) -> tuple[Path, dict[str, tuple[int, int]]]:
    """ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer.optimize_model``):
    pattern-matches attention, skip + LayerNorm, bias + GELU and embedding subgraphs and replaces
    each with one fused ORT operator. Returns the saved path and ``{operator: (count before, count
    after)}`` for :data:`FUSED_OPS` (zeros included, so a pattern that did not match shows as 0).

    ``num_heads``/``hidden_size``: the model's (0 lets the optimizer read them from the graph).
    The fused file uses ``com.microsoft`` operators: it runs in ONNX Runtime only. The matcher
    knows the subgraphs common exporters write; when an exporter writes attention differently
    (``torch.export``'s scaled-dot-product attention, for one), nothing fuses and the count says so.

    Taught in 06_onnx_and_onnx_runtime.
    """
    import warnings

    from onnxruntime.transformers.optimizer import optimize_model

    from optkit.core.errors import check_int
    from optkit.runtimes.model_files import atomic_write
    from optkit.runtimes.onnxrt.inspection import op_counts

    check_choice("model_type", model_type, ("bert", "bart", "gpt2", "t5", "vit", "clip"))
    check_int("num_heads", num_heads, low=0)
    check_int("hidden_size", hidden_size, low=0)
    src_p = _check_src(src)
    dst_p = _check_dst(dst, "dst", overwrite=overwrite)
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(str(src_p), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0)
    with atomic_write(dst_p, overwrite=overwrite) as tmp:
        tmp_onnx = tmp.with_suffix(".onnx")
        try:
            model.save_model_to_file(str(tmp_onnx))  # adds the com.microsoft opset the fused nodes need
            os.replace(tmp_onnx, tmp)
        finally:
            with contextlib.suppress(OSError):
                tmp_onnx.unlink()
    _check_model(dst_p, "dst")
    before, after = op_counts(src_p), op_counts(dst_p)
    return dst_p, {op: (int(before.get(op, 0)), int(after.get(op, 0))) for op in FUSED_OPS}
