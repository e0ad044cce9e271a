"""What a quantization recipe returns, and how it is scored: :class:`Quantized` (the model, its
size and the recipe's details; :meth:`Quantized.evaluate` for accuracy and :func:`parity`,
:meth:`Quantized.to_variant` to put it in a comparison measured by
:func:`optkit.core.variant.evaluate`, :meth:`Quantized.to_record` to time it alone), plus
:func:`fixed_batches` (call a static-shape compiled model only at the batch sizes it was compiled
for) and the batching helpers the recipes and the sensitivity analysis share.

Taught in 02_quantization.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from optkit.core.errors import OptkitError, check_int
from optkit.core.sizes import model_size
from optkit.core.variant import Variant
from optkit.techniques.quantize.primitives import sqnr

__all__ = ["Quantized", "parity", "fixed_batches"]


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
    return _logits(fixed_batches(model, [batch_size]), x, batch_size)


# =============================================================================== fixed batch shapes

def _rows(x: Any) -> int:
    if isinstance(x, Mapping):
        return _rows(next(iter(x.values())))
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)


def _pad_rows(x: Any, pad: int) -> Any:
    """``x`` with its last row repeated ``pad`` more times (a tensor, an array or a dict of them)."""
    if isinstance(x, Mapping):
        return {k: _pad_rows(v, pad) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
    x = np.asarray(x)
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])


def _rows_of(x: Any, start: int, stop: int) -> Any:
    return {k: v[start:stop] for k, v in x.items()} if isinstance(x, Mapping) else x[start:stop]


def _join(outs: list, n: int) -> Any:
    """The chunks' outputs joined along the batch axis and cut back to ``n`` rows."""
    first = outs[0]
    if isinstance(first, Mapping):
        return {k: _join([o[k] for o in outs], n) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_join([o[i] for o in outs], n) for i in range(len(first)))
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)[:n]
    return np.concatenate([np.asarray(o) for o in outs])[:n]


def fixed_batches(predict: Callable, sizes: Sequence[int]) -> Callable:
    """``predict``, called only with batches of one of ``sizes`` rows whatever its caller passes.

    A batch of one of ``sizes`` rows goes through unchanged (what timing calls); any other is cut
    into chunks of ``max(sizes)`` rows, the last chunk padded with copies of its last row, and the
    outputs are joined and cut back to the rows given. The answer is the same as one call on the
    whole batch; only the shapes ``predict`` sees change. Inputs: a tensor, an array or a dict of
    them (named inputs); outputs: a tensor or array, or a tuple, list or dict of them.

    What it is for: a model compiled for static shapes (:func:`~optkit.techniques.quantize.compile_frozen`,
    ``reduced_float(compile=True)``, ``torch.compile(dynamic=False)``) compiles once per new batch
    size, which costs seconds. Wrapped with the batch sizes it is timed at, it scores a whole test
    set (``variant.evaluate`` calls it ``eval_batch_size`` rows at a time) without one more
    compilation, so a closing table's accuracy is that of the compiled model it times.

    Taught in 02_quantization.
    """
    if not callable(predict):
        raise OptkitError("predict", type(predict).__name__, "is not callable",
                          "pass the model (or a function from a batch to outputs)")
    if isinstance(sizes, int) or not sizes:
        raise OptkitError("sizes", sizes, "must be a non-empty list of batch sizes",
                          "pass the batch sizes the model is timed at, e.g. [1, 32]")
    allowed = sorted({check_int("sizes", s, 1) for s in sizes})
    chunk = allowed[-1]

    def call(x: Any) -> Any:
        n = _rows(x)
        if n in allowed or n == 0:
            return predict(x)
        outs = []
        for start in range(0, n, chunk):
            part = _rows_of(x, start, min(start + chunk, n))
            pad = chunk - _rows(part)
            outs.append(predict(_pad_rows(part, pad) if pad else part))
        return _join(outs, n)

    call.__wrapped__ = predict
    call.sizes = tuple(allowed)
    return call


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

    @property
    def compiled(self) -> bool:
        """True when :attr:`model` is a compiled copy of the :attr:`eager` graph (``compile=True``)."""
        return self.eager is not None and self.model is not self.eager

    @property
    def precision(self) -> str:
        """What the model computes in, as :class:`optkit.core.variant.Variant` names it: ``"int8"``
        (static, QAT, mixed: some layers stay float, the int8 ones decide the speed),
        ``"int8-dynamic"``, ``"int8-weight-only"``, ``"int4"`` (int4 weight-only), ``"bf16"``, ``"fp16"`` or ``"fp32"``."""
        technique = self.technique.lower()
        for prefix, precision in (("int8 dynamic", "int8-dynamic"), ("int8 weight-only", "int8-weight-only"),
                                  ("int4", "int4"), ("int8", "int8"), ("bf16", "bf16"), ("fp16", "fp16")):
            if technique.startswith(prefix):
                return precision
        return {"bfloat16": "bf16", "float16": "fp16"}.get(self.info.get("dtype"), "fp32")

    def to_variant(self, name: str, *, shapes: Sequence[int] | None = None, **fields: Any) -> Variant:
        """This model as a :class:`optkit.core.variant.Variant` named ``name``, for
        :func:`optkit.core.variant.evaluate`: ``predict`` is :attr:`model` (what ships), with the
        recipe's technique, runtime, :attr:`precision`, size and details (``info``, as ``config``).

        ``shapes``: the batch sizes the comparison times. A :attr:`compiled` model is then wrapped
        in :func:`fixed_batches`, so scoring the test set compiles nothing more and the accuracy is
        the compiled model's own. ``fields`` override any Variant field (``notes=``, ``params=`` ...).

        Taught in 02_quantization.
        """
        predict = fixed_batches(self.model, shapes) if shapes and self.compiled else _exported_as_function(self.model)
        values: dict[str, Any] = {"technique": self.technique, "runtime": self.runtime,
                                  "precision": self.precision, "config": dict(self.info),
                                  "size_bytes": int(self.size_bytes)}
        values.update(fields)
        return Variant(name, predict, **values)

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


def _exported_as_function(model: Callable) -> Callable:
    """An exported graph (PT2E's converted module, uncompiled) as a plain function.

    Its behaviour was fixed when it was exported in eval mode, but the module still reports
    ``training=True`` (and refuses ``.eval()``), which :func:`optkit.core.verify.predict_all` would
    take for a model left in training mode. Anything else is returned as it is.
    """
    if not (isinstance(model, torch.fx.GraphModule) and model.training):
        return model

    def predict(x: Any) -> Any:
        return model(x)

    predict.__wrapped__ = model
    return predict


def _jsonable(value: Any) -> Any:
    from optkit.core.record import jsonable

    return jsonable(value, strict=False)
