"""Compressed models and efficient blocks, ready to be measured the one way optkit measures.

- :func:`as_variant` wraps a (possibly weight-shared or factorized) model as a
  :class:`~optkit.core.variant.Variant` for :func:`optkit.core.variant.evaluate`, sized by what it
  really stores (:func:`storage_report`) and run as you would deploy it (shared layers
  decompressed into ordinary ones), or in its codebook form on request;
- :func:`compare_blocks` times efficient blocks of the same input and output shapes in both memory
  layouts, all interleaved, and returns one :class:`~optkit.core.record.Record` per block (its
  faster layout) under a workload of its own: a block on a random feature map is not a model on a
  dataset, so its records never share a table or a ratio with the model variants.

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch
from torch import nn

from optkit.core import bench
from optkit.core.errors import OptkitError
from optkit.core.record import Record
from optkit.core.variant import Variant, Workload
from optkit.data import models
from optkit.techniques.compress.weight_sharing import decompress, storage_report

__all__ = ["as_variant", "compare_blocks", "forward_call", "LAYOUTS"]

LAYOUTS = ("contiguous", "channels_last")


def as_variant(name: str, model: nn.Module, example: torch.Tensor, *, technique: str,
               config: Mapping[str, Any] | None = None, dense: bool = True, notes: str | None = None) -> Variant:
    """``model`` as a :class:`~optkit.core.variant.Variant`, sized by the bytes it stores.

    - ``size_bytes`` is :func:`storage_report`'s ``model_bytes``: shared layers count their packed
      indices and codebooks, every other parameter and buffer its own bytes;
    - ``predict`` is, with ``dense=True`` (the default), a copy with every shared layer
      decompressed into an ordinary Linear / Conv2d (same outputs, ordinary kernels: what you
      deploy); with ``dense=False`` the model itself, which rebuilds its weights from the
      codebooks on every call;
    - ``params`` and ``macs`` are those of the module that runs (the codebook form's parameters are
      its codebooks and biases; its indices are buffers); MACs for ``example`` (a batch of 1 gives
      MACs per input);
    - precision is fp32: weight sharing and factorization change what is stored and how many
      multiply-adds there are, not the arithmetic.

    ``model`` is put in eval mode (evaluation refuses a model in training mode).

    Taught in 05_compression_and_efficient_architectures.
    """
    if not isinstance(model, nn.Module):
        raise OptkitError("model", type(model).__name__, "is not a torch module",
                          "pass the model, e.g. compress.share_weights(base, 16)")
    store = storage_report(model)
    model.eval()
    run = decompress(model).eval() if dense else model
    return Variant(name, run, technique=technique, config=dict(config or {}), runtime="pytorch eager",
                   precision="fp32", size_bytes=store.model_bytes, params=models.count_params(run),
                   macs=models.count_macs(run, example), notes=notes)


def forward_call(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """A no-argument callable running ``net(x)`` under ``torch.inference_mode``: what
    :func:`optkit.core.bench.compare` times (building ``x`` is never timed).

    Taught in 05_compression_and_efficient_architectures.
    """
    if not isinstance(net, nn.Module):
        raise OptkitError("net", type(net).__name__, "is not a torch module", "pass the layer or model to time")
    if not isinstance(x, torch.Tensor):
        raise OptkitError("x", type(x).__name__, "is not a tensor", "pass the input, e.g. torch.randn(1024, 384)")

    def call() -> None:
        with torch.inference_mode():
            net(x)
    return call



def _check_blocks(blocks: Any, x: Any) -> dict[str, nn.Module]:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise OptkitError("x", getattr(x, "shape", type(x).__name__), "is not a 4-D (N, C, H, W) tensor",
                          "pass a feature map, e.g. torch.randn(8, 64, 28, 28)")
    if not isinstance(blocks, Mapping) or not blocks:
        raise OptkitError("blocks", blocks, "must be a non-empty dict name -> module",
                          "pass e.g. {'standard 3x3 conv': compress.ConvBNReLU(64, 64), ...}")
    shapes = {}
    for name, block in blocks.items():
        if not isinstance(block, nn.Module):
            raise OptkitError(f"blocks[{name!r}]", type(block).__name__, "is not a torch module", "pass the block")
        with torch.inference_mode():
            shapes[name] = tuple(block.eval()(x[:1]).shape)
    first = next(iter(shapes))
    for name, shape in shapes.items():
        if shape != shapes[first]:
            raise OptkitError(f"blocks[{name!r}]", f"output {shape}", f"differs from {first!r}'s {shapes[first]}",
                              "compare blocks that do the same job: same input and output shapes")
    return dict(blocks)


def compare_blocks(blocks: Mapping[str, nn.Module], x: torch.Tensor, *, workload: Workload | None = None,
                   max_time_s: float = 2.0, rounds: int = 5, threads: int | None = None,
                   env: Mapping[str, Any] | None = None) -> list[Record]:
    """Time blocks with the same input and output shapes on ``x``, each in both memory layouts.

    Every block runs once in torch's default (contiguous) layout and once converted to
    ``channels_last`` (a copy; the block itself keeps its layout, and is put in eval mode), all of
    them interleaved in one :func:`optkit.core.bench.compare`, so a drifting machine hits each alike. Returns one Record
    per block, in order, filled from its **faster** layout: ``latency_ms`` and the percentiles of
    that layout, ``extra['layout']`` naming it and ``extra['latency_<layout>_ms']`` holding both
    medians; ``params``, ``macs`` per input (for ``x[:1]``), ``batch_size = len(x)``,
    ``peak_mem_bytes`` (the resident memory one call of the faster layout adds:
    :func:`optkit.core.bench.call_memory`) and ``extra['precision'] = 'fp32'``.

    All records carry ``workload`` (default: ``"conv blocks, C channels · random input (N, C, H, W)"``),
    so :mod:`optkit.core.report` refuses to put them in one table, or one ratio, with model
    variants measured on a dataset: ``report.table(records, baseline=<the reference block>)``.

    Taught in 05_compression_and_efficient_architectures.
    """
    items = _check_blocks(blocks, x)
    n, c, h, w = x.shape
    if workload is None:
        workload = Workload(f"conv blocks, {c} channels", "one block on a feature map (latency only)",
                            f"random input ({n}, {c}, {h}, {w})")
    elif not isinstance(workload, Workload):
        raise OptkitError("workload", workload, "is not a Workload", "pass variant.Workload(...) or leave it out")
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fns = {}
    for name, block in items.items():
        fns[f"{name} [contiguous]"] = forward_call(block, x)
        fns[f"{name} [channels_last]"] = forward_call(copy.deepcopy(block).to(memory_format=torch.channels_last), x_cl)
    timed = bench.compare(fns, batch_size=int(n), max_time_s=max_time_s, rounds=rounds, threads=threads)
    env = dict(env) if env is not None else bench.environment()
    records = []
    for name, block in items.items():
        by_layout = {layout: timed[f"{name} [{layout}]"] for layout in LAYOUTS}
        best = min(LAYOUTS, key=lambda layout: by_layout[layout].median_ms)
        extra = {"precision": "fp32", "layout": best,
                 **{f"latency_{layout}_ms": m.median_ms for layout, m in by_layout.items()}}
        records.append(Record.from_measurement(
            by_layout[best], name=name, technique=type(block).__name__, runtime="pytorch eager",
            workload=str(workload), params=models.count_params(block), macs=models.count_macs(block, x[:1]),
            peak_mem_bytes=int(bench.call_memory(fns[f"{name} [{best}]"]).delta_rss_bytes), env=env, extra=extra))
    return records
