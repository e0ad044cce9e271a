"""What a quantization recipe returns, and how it is scored: :class:`Quantized` (the model, its
size and the recipe's details; :meth:`Quantized.evaluate` for accuracy and :func:`parity`,
:meth:`Quantized.to_record` to measure it into an :class:`optkit.core.record.Record`), plus the
batching helpers the recipes and the sensitivity analysis share.

Taught in 02_quantization.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from optkit.core.errors import OptkitError
from optkit.core.sizes import model_size
from optkit.techniques.quantize.primitives import sqnr

__all__ = ["Quantized", "parity"]


def parity(ref: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """How closely ``test`` logits follow ``ref``: SQNR (dB), top-1 agreement, max and mean abs difference.

    Taught in 02_quantization.
    """
    ref = torch.as_tensor(ref).detach().float()
    test = torch.as_tensor(test).detach().float()
    diff = (ref - test).abs()
    return {"sqnr_db": sqnr(ref, test), "top1_agreement": float((ref.argmax(1) == test.argmax(1)).float().mean()),
            "max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "n": int(len(ref))}


def _logits(model: Callable, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            outs.append((out[0] if isinstance(out, (tuple, list)) else out).float())
    return torch.cat(outs)


def _logits_fixed(model: Callable, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of ``x`` computed in batches of exactly ``batch_size`` rows (the last one padded)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptkitError("batch_size", batch_size, "must be a positive whole number",
                          "pass the batch size the compiled model was timed at, e.g. 32")
    n = x.shape[0]
    pad = -n % batch_size
    if pad:
        x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
    with torch.inference_mode():
        out = torch.cat([model(x[i:i + batch_size]).float() for i in range(0, x.shape[0], batch_size)])
    return out[:n]


def _as_xy(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) tensors from an optkit Split, an (x, y) pair of arrays or tensors."""
    if hasattr(data, "x") and hasattr(data, "y"):
        data = (data.x, data.y)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        def tensor(a):
            if isinstance(a, torch.Tensor):
                return a
            a = np.asarray(a)
            return torch.from_numpy(a if a.flags.writeable else a.copy())  # read-only arrays make torch warn
        return tensor(data[0]), tensor(data[1])
    raise OptkitError("data", type(data).__name__, "is not an (x, y) pair",
                      "pass dataset.test (a Split) or (x, y) tensors")


# =============================================================================== result

@dataclass
class Quantized:
    """A model variant produced by a recipe, with what is known about it before timing.

    ``model`` is what to call for inference (compiled if the recipe compiled it); ``module`` is
    the uncompiled module whose state dict is the artifact (what :attr:`size_bytes` counts);
    ``eager`` (optional) computes the same function without compilation: :meth:`evaluate` uses
    it, so accuracy needs no compile for every batch shape and is the same on every machine;
    ``technique``/``runtime`` go into the record; ``info`` holds recipe details the notebook
    shows (e.g. per-channel or not, calibration batches, layers kept in float).

    Taught in 02_quantization.
    """

    model: Callable
    module: nn.Module
    technique: str
    runtime: str = "pytorch"
    size_bytes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    eager: Callable | None = None

    def __post_init__(self) -> None:
        if self.size_bytes is None:
            self.size_bytes = model_size(self.module)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def __repr__(self) -> str:
        return (f"Quantized(technique={self.technique!r}, runtime={self.runtime!r}, "
                f"size={self.size_bytes / 1e6:.3f} MB, info={self.info})")

    def evaluate(self, data: Any, reference: Callable | None = None, batch_size: int = 256, *,
                 compiled: bool = False) -> dict[str, Any]:
        """Accuracy on ``data`` (a Split or (x, y)) and, given a ``reference`` model, :func:`parity`.

        By default the uncompiled graph (``eager``) is scored: no compilation per batch shape.
        ``compiled=True`` scores ``model`` itself (what is timed and shipped) with every batch
        exactly ``batch_size`` rows (the last one padded and cut back), so a static-shape compiled
        model compiles once; use the batch size it was timed at.
        """
        x, y = _as_xy(data)
        if compiled:
            logits = _logits_fixed(self.model, x, batch_size)
        else:
            logits = _logits(self.eager if self.eager is not None else self.model, x, batch_size)
        out: dict[str, Any] = {"accuracy": float((logits.argmax(1) == y).float().mean())}
        if reference is not None:
            out["parity"] = parity(_logits(reference, x, batch_size), logits)
        return out

    def to_record(self, name: str, data: Any = None, *, reference: Callable | None = None,
                  example: torch.Tensor | None = None, batch_size: int = 32, max_time_s: float = 1.0,
                  env: dict | None = None, notes: str | None = None, accuracy: float | None = None,
                  parity_: dict | None = None, **measure_kw: Any):
        """Measure this variant into an :class:`optkit.core.record.Record`.

        Latency comes from :func:`optkit.core.bench.measure` on ``example`` (or the first
        ``batch_size`` rows of ``data``); accuracy and parity with ``reference`` from ``data``
        unless already known (``accuracy=``, ``parity_=``), so one evaluation can serve the
        records of several batch sizes.
        """
        from optkit.core import bench
        from optkit.core.record import Record

        if accuracy is None and data is not None:
            ev = self.evaluate(data, reference)
            accuracy, parity_ = ev["accuracy"], ev.get("parity", parity_)
        if example is None:
            if data is None:
                raise OptkitError("example", None, "is needed to time the model when no data is given",
                                  "pass example=dataset.example_batch(32)")
            example = _as_xy(data)[0][:batch_size]
        bs = int(example.shape[0])

        def call():
            with torch.inference_mode():
                self.model(example)

        m = bench.measure(call, name=name, batch_size=bs, max_time_s=max_time_s, **measure_kw)
        return Record.from_measurement(m, name=name, technique=self.technique, runtime=self.runtime,
                                       size_bytes=int(self.size_bytes), accuracy=accuracy,
                                       parity=dict(parity_ or {}), env=dict(env or {}), notes=notes,
                                       extra={"info": _jsonable(self.info)})


def _jsonable(value: Any) -> Any:
    from optkit.core.record import jsonable

    return jsonable(value, strict=False)
