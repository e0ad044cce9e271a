"""Quantization: the arithmetic as plain tensor functions, and one function per recipe.

The arithmetic (torchao style: pure functions on tensors, no modules):

- :func:`choose_qparams` picks ``scale`` and ``zero_point`` for a tensor, per tensor or per
  channel (``axis``), symmetric or asymmetric, for any bit width from 2 to 8;
- :func:`quantize` / :func:`dequantize` map floats to integers and back (round, clamp);
  :func:`fake_quantize` does both, :func:`quantization_error` returns what was lost and
  :func:`sqnr` measures it in decibels.

The recipes, each returning a :class:`Quantized` (the model plus its size and what the
notebook needs; :meth:`Quantized.to_record` measures it into an :class:`optkit.core.record.Record`):

- :func:`dynamic_int8`: int8 weights, activations quantized on the fly (torchao ``quantize_``,
  or the legacy ``torch.ao.quantization.quantize_dynamic`` for LSTMs);
- :func:`static_int8`: post-training quantization with a calibration loader (PT2E with the x86
  inductor quantizer, compiled with freezing); observer and granularity are parameters;
- :func:`qat_int8`: quantization-aware training (PT2E ``prepare_qat_pt2e``) with a short fine-tune;
- :func:`reduced_float`: bf16 on CPU (fp16 only where a GPU is present);
- :func:`sensitivity` (one layer at a time) and :func:`mixed_precision` (keep the most
  sensitive layers in float).

torchao and torch.export are imported inside functions, so ``import optkit.techniques.quantize`` stays light.

Taught in 02_quantization.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from optkit.core.deprecation import renamed
from optkit.core.errors import OptkitError, check_choice, check_range
from optkit.core.sizes import model_size, state_dict_of

__all__ = [
    # arithmetic
    "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize", "quantization_error", "sqnr",
    # recipes
    "Quantized", "dynamic_int8", "static_int8", "legacy_static_int8", "qat_int8", "reduced_float", "compile_frozen",
    "LayerSensitivity", "sensitivity", "mixed_precision",
    # helpers
    "state_dict_size", "weight_storage", "int8_tensors", "quiet_torchao", "parity", "int8_reduce_range",
]


# =============================================================================== arithmetic

def qrange(bits: int = 8) -> tuple[int, int]:
    """The signed integer range ``(qmin, qmax)`` of a ``bits``-bit integer: (-128, 127) for 8 bits.

    Taught in 02_quantization.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise OptkitError("bits", bits, "must be a whole number from 2 to 8",
                          "pass bits=8 (int8), or 4 or 2 to see what fewer bits cost")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _check_axis(x: torch.Tensor, axis: int | None) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.dim() <= axis < x.dim():
        raise OptkitError("axis", axis, f"is not a dimension of a {x.dim()}-d tensor",
                          "pass None for one scale per tensor, or 0 for one per output channel")
    return axis % x.dim()


def _reduce_dims(x: torch.Tensor, axis: int | None) -> list[int]:
    return [d for d in range(x.dim()) if d != axis]


def _broadcast(v: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of ``x``."""
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def choose_qparams(x: torch.Tensor, bits: int = 8, symmetric: bool = False,
                   axis: int | None = None, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` mapping the range of ``x`` onto ``bits``-bit signed integers.

    - asymmetric (``symmetric=False``): the range ``[min(x, 0), max(x, 0)]`` is spread over
      ``[qmin, qmax]``: ``scale = (max - min) / (qmax - qmin)``, ``zero_point = round(qmin - min / scale)``
      (the integer that stands for 0.0, so zero is exact: padding and ReLU outputs stay exact);
    - symmetric: ``scale = max|x| / qmax`` and ``zero_point = 0`` (the range ``[-qmax, qmax]``;
      cheaper integer arithmetic, the usual choice for weights).

    ``axis=None`` gives one scale for the whole tensor (0-d tensors); ``axis=k`` one per slice
    along dimension ``k`` (shape ``(x.shape[k],)``), e.g. one per output channel of a weight.
    ``eps`` keeps the scale positive for an all-zero tensor or channel.

    Taught in 02_quantization.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise OptkitError("x", type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype,
                          "must be a floating-point tensor", "pass e.g. layer.weight.detach()")
    if x.numel() == 0:
        raise OptkitError("x", tuple(x.shape), "is empty", "pass a tensor with at least one element")
    qmin, qmax = qrange(bits)
    axis = _check_axis(x, axis)
    xf = x.detach().float()
    if axis is None:
        lo, hi = xf.min(), xf.max()
    else:
        dims = _reduce_dims(xf, axis)
        lo = xf.amin(dim=dims) if dims else xf
        hi = xf.amax(dim=dims) if dims else xf
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    if symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / qmax, min=eps)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=eps)
        zero_point = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


def _check_qparams(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None):
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    axis = _check_axis(x, axis)
    if axis is None and scale.numel() != 1:
        raise OptkitError("axis", None, f"but scale holds {scale.numel()} values (per-channel parameters)",
                          "pass the axis the scales were chosen along, e.g. axis=0")
    if axis is not None and scale.numel() not in (1, x.shape[axis]):
        raise OptkitError("scale", tuple(scale.shape), f"does not match dimension {axis} of x (size {x.shape[axis]})",
                          "choose the parameters with choose_qparams(x, axis=axis)")
    if zero_point.numel() != scale.numel():
        raise OptkitError("zero_point", tuple(zero_point.shape), f"does not match scale {tuple(scale.shape)}",
                          "pass the pair returned by choose_qparams")
    if scale.numel() == 1:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    return scale, zero_point, axis


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8,
             axis: int | None = None) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, qmin, qmax)`` as an ``int8`` tensor.

    ``round`` is round-half-to-even (``torch.round``). Values beyond the range clamp to the
    nearest integer end: that is the *clipping* error, as opposed to the *rounding* error of
    at most ``scale / 2`` for values inside it. Fewer than 8 bits are still stored one per byte.

    Taught in 02_quantization.
    """
    qmin, qmax = qrange(bits)
    scale, zero_point, axis = _check_qparams(x, scale, zero_point, axis)
    s = _broadcast(scale, x, axis)
    z = _broadcast(zero_point.to(torch.float32), x, axis)
    q = torch.clamp(torch.round(x.detach().float() / s) + z, qmin, qmax)
    return q.to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
               axis: int | None = None) -> torch.Tensor:
    """``(q - zero_point) * scale`` as float32: the value each integer stands for.

    Taught in 02_quantization.
    """
    scale, zero_point, axis = _check_qparams(q, scale, zero_point, axis)
    s = _broadcast(scale, q, axis)
    z = _broadcast(zero_point.to(torch.float32), q, axis)
    return (q.to(torch.float32) - z) * s


def fake_quantize(x: torch.Tensor, bits: int = 8, symmetric: bool = False,
                  axis: int | None = None) -> torch.Tensor:
    """Quantize then dequantize ``x`` with parameters chosen from ``x`` itself: float values
    that lie on the integer grid, i.e. what the quantized model actually computes with.

    Taught in 02_quantization.
    """
    scale, zp = choose_qparams(x, bits, symmetric, axis)
    return dequantize(quantize(x, scale, zp, bits, axis), scale, zp, axis).to(x.dtype)


def quantization_error(x: torch.Tensor, bits: int = 8, symmetric: bool = False,
                       axis: int | None = None) -> torch.Tensor:
    """``x - fake_quantize(x)``, element by element (at most ``scale / 2`` in magnitude).

    Taught in 02_quantization.
    """
    return x.detach().float() - fake_quantize(x.detach().float(), bits, symmetric, axis)


def sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum ref^2 / sum (ref - test)^2)``.

    +6 dB per extra bit is the rule of thumb; 8-bit weights typically give 35-45 dB, a whole
    int8 model's logits 20-35 dB. ``inf`` when the two are identical. This is
    :func:`optkit.core.verify.sqnr` (one implementation for the package), named here where 02 teaches it.

    Taught in 02_quantization.
    """
    from optkit.core.verify import sqnr as _sqnr

    return _sqnr(ref, test)


# =============================================================================== helpers

def quiet_torchao():
    """Silence the harmless noise torchao and torch.ao print on import and first use.

    torchao's import tries optional CUDA/mxfp8 kernels and prints "Failed to load ..." (to
    stderr, from C code) and torch logs an Enum registration warning; neither affects CPU
    quantization. This is :func:`optkit.core.quiet.silenced` on stderr with log records below ERROR
    and warnings dropped, so use it only around imports and conversions whose failures would
    still raise.

    Taught in 02_quantization.
    """
    import logging

    from optkit.core.quiet import silenced

    return silenced(stdout=False, stderr=True, logging_below=logging.WARNING, ignore_warnings=True)


state_dict_size = renamed(model_size, "optkit.quantize.state_dict_size")


def _flat_tensors(value: Any, prefix: str) -> Iterable[tuple[str, torch.Tensor]]:
    """Plain tensors inside a state-dict value: tensor subclasses (torchao), packed params, tuples."""
    if isinstance(value, torch.Tensor):
        if type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
            names, _ = value.__tensor_flatten__()
            for n in names:
                yield from _flat_tensors(getattr(value, n), f"{prefix}.{n}")
        elif value.is_quantized:
            yield prefix, value.int_repr()
        else:
            yield prefix, value
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _flat_tensors(v, f"{prefix}.{i}")
    elif hasattr(value, "__getstate__") and type(value).__name__ == "ScriptObject":
        try:
            state = value.__getstate__()
        except Exception:  # pragma: no cover - opaque packed params
            return
        yield from _flat_tensors(state, prefix)


def weight_storage(model: nn.Module) -> dict[str, int]:
    """Bytes of tensor data in ``model``'s state dict by storage dtype, e.g. ``{"int8": 52_000, "float32": 900}``.

    Looks inside torchao tensor subclasses (``qdata``), legacy packed parameters and quantized
    tensors, so it shows what is *stored*, not what a tensor claims to be.

    Taught in 02_quantization.
    """
    out: dict[str, int] = {}
    for k, v in state_dict_of(model).items():
        for _, t in _flat_tensors(v, k):
            key = str(t.dtype).replace("torch.", "")
            out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


def int8_tensors(model: nn.Module) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes of the 8-bit integer tensors stored in ``model``'s state dict.

    Taught in 02_quantization.
    """
    out = {}
    for k, v in state_dict_of(model).items():
        for name, t in _flat_tensors(v, k):
            if t.dtype in (torch.int8, torch.uint8) and t.dim() >= 1 and "zero_point" not in name:
                out[name] = (str(t.dtype).replace("torch.", ""), tuple(t.shape))
    return out


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


# =============================================================================== checks

_KINDS = {"linear": nn.Linear, "lstm": nn.LSTM, "conv2d": nn.Conv2d, "gru": nn.GRU}


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise OptkitError("model", type(model).__name__, "is not a torch.nn.Module",
                          "pass the float model (e.g. optkit.data.models.pretrained('small_cnn'))")
    return model


def _layers_of(model: nn.Module, kinds: Sequence[type]) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, tuple(kinds))]


def _require_layers(model: nn.Module, kinds: Sequence[type], parameter: str, value: Any) -> list[tuple[str, nn.Module]]:
    found = _layers_of(model, kinds)
    if not found:
        present = sorted({type(m).__name__ for _, m in model.named_modules() if not list(m.children())})
        raise OptkitError(parameter, value,
                          f"{type(model).__name__} has no layers of that kind (it has: {', '.join(present) or 'none'})",
                          "quantize a kind of layer the model has, e.g. layers=('linear',) for Linear layers")
    return found


def _kinds(layers: Sequence[str] | str) -> list[type]:
    if isinstance(layers, str):
        layers = (layers,)
    return [_KINDS[check_choice("layers", k, list(_KINDS))] for k in layers]


def _calibration_batches(loader: Any, example: torch.Tensor, limit: int | None = None) -> list[torch.Tensor]:
    """The input tensors of a calibration loader, checked against ``example``'s shape and dtype."""
    if loader is None:
        raise OptkitError("calibration", None, "no calibration data was given",
                          "pass a DataLoader over a few hundred training images, e.g. "
                          "dataset.torch_loader('calib', batch_size=64)")
    batches = []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        xb = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(xb, torch.Tensor):
            xb = torch.as_tensor(np.asarray(xb))
        if tuple(xb.shape[1:]) != tuple(example.shape[1:]) or xb.dim() != example.dim():
            raise OptkitError("calibration", f"batch {i} of shape {tuple(xb.shape)}",
                              f"does not match the model's input (batch, {', '.join(map(str, example.shape[1:]))})",
                              "calibrate with batches from the same data the model runs on "
                              "(same channels, size and layout)")
        if xb.dtype != example.dtype:
            raise OptkitError("calibration", f"batch {i} of dtype {xb.dtype}", f"differs from the input dtype {example.dtype}",
                              "convert the batch, e.g. x.float()")
        batches.append(xb)
    if not batches:
        raise OptkitError("calibration", "an empty loader", "yielded no batches, so no activation range can be observed",
                          "pass a loader with at least one batch (a few hundred examples is typical)")
    return batches


# =============================================================================== dynamic

def dynamic_int8(model: nn.Module, layers: Sequence[str] | str = ("linear",), *, backend: str = "torchao",
                 weight_only: bool = False) -> Quantized:
    """Dynamic int8 quantization: weights stored as int8, activations quantized per batch at run time.

    - ``backend="torchao"`` (current API): ``quantize_(model, Int8DynamicActivationInt8WeightConfig())``
      on every ``nn.Linear`` (``weight_only=True`` uses ``Int8WeightOnlyConfig``: int8 storage,
      float compute). torchao handles Linear only.
    - ``backend="legacy"``: ``torch.ao.quantization.quantize_dynamic`` (deprecated, warns on every
      call; kept because it is what most tutorials show and it is the only one that quantizes
      ``nn.LSTM``). ``layers`` may include ``"lstm"``.

    The input model is not modified. Raises :class:`OptkitError` if the model has no layers of
    the requested kinds.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    check_choice("backend", backend, ["torchao", "legacy"])
    kinds = _kinds(layers)
    if backend == "torchao" and any(k is not nn.Linear for k in kinds):
        raise OptkitError("layers", layers, "torchao's dynamic quantization handles nn.Linear only",
                          "pass layers=('linear',), or backend='legacy' for LSTM layers")
    found = _require_layers(model, kinds, "layers", layers)
    q = copy.deepcopy(model).eval()
    if backend == "torchao":
        with quiet_torchao():
            from torchao.quantization import (Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig,
                                              quantize_)
        reduce = int8_reduce_range()
        config = (Int8WeightOnlyConfig() if weight_only
                  else Int8DynamicActivationInt8WeightConfig(reduce_range=reduce))
        quantize_(q, config)
        technique = "int8 weight-only (torchao)" if weight_only else "int8 dynamic (torchao)"
    else:
        with warnings.catch_warnings():
            # torch.ao.quantization warns on every call that it is deprecated (it is: torchao replaces it)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
            warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated.*")
            from torch.ao.quantization import quantize_dynamic

            q = quantize_dynamic(q, set(kinds), dtype=torch.qint8)
        technique = "int8 dynamic (legacy torch.ao)"
    return Quantized(model=q, module=q, technique=technique, runtime="pytorch eager",
                     info={"backend": backend, "layers": [n for n, _ in found], "weight_only": weight_only,
                           "reduce_range": backend == "torchao" and not weight_only and int8_reduce_range()})


#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) below the first one with VNNI.
_ONEDNN_CAPS_WITHOUT_VNNI = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}


def int8_reduce_range() -> bool:
    """Whether int8 activations must use 7 bits here: True when the int8 kernels run without VNNI.

    Without VNNI, x86 int8 kernels multiply uint8 by int8 and add pairs into int16
    (``vpmaddubsw``), which saturates (2 x 255 x 127 = 64,770 > 32,767); the quantized model then
    loses tens of dB of SQNR. Halving the activation range keeps every pair in range. This is
    torchao's ``should_reduce_range`` (it reads the CPU's flags), extended to honour a oneDNN cap
    (``ONEDNN_MAX_CPU_ISA=AVX2``, as `make test ISA=avx2` sets) since oneDNN then runs the
    no-VNNI kernels on a VNNI CPU. Used by :func:`dynamic_int8` and the PT2E quantizers.

    Taught in 02_quantization (the arithmetic in 06_onnx_and_onnx_runtime).
    """
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap in _ONEDNN_CAPS_WITHOUT_VNNI:
        return True
    probe = getattr(torch.cpu, "_is_vnni_supported", None)  # private in torch 2.13, as torchao uses it
    return not (probe() if probe is not None else False)


# =============================================================================== static (PT2E)

def compile_frozen(module: nn.Module) -> Callable:
    """``torch.compile`` with ``torch._inductor.config.freezing = True``: weights become constants,
    so inductor can pre-pack int8 weights and fuse quantize/dequantize into oneDNN int8 kernels.
    Without freezing, a PT2E int8 model is *slower* than fp32 on CPU.

    Shapes are static (``dynamic=False``): each new batch size compiles once (seconds). The
    dynamic-shape path of the int8 conv lowering fails a stride check in torch 2.13.

    Taught in 02_quantization.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(module, dynamic=False)


def _export(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True):
    if dynamic_batch and example.shape[0] < 2:  # export specializes a batch of 1 to the constant 1
        example = example.expand(2, *example.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    shapes = ({0: batch},) if dynamic_batch else None
    return torch.export.export(model, (example,), dynamic_shapes=shapes)


def _x86_quantizer(per_channel: bool = True, observer: str = "histogram", is_qat: bool = False,
                   skip: Sequence[str] = ()):
    """An ``X86InductorQuantizer`` with the chosen weight granularity and activation observer."""
    with quiet_torchao():
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver
        from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec
    reduce = int8_reduce_range()
    config = xiq.get_default_x86_inductor_quantization_config(is_qat=is_qat, reduce_range=reduce)
    if not is_qat and (observer != "histogram" or not per_channel):
        act_obs = {"histogram": HistogramObserver, "minmax": MinMaxObserver,
                   "moving_average": MovingAverageMinMaxObserver}[observer]
        act = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=127 if reduce else 255,
                               qscheme=torch.per_tensor_affine,
                               is_dynamic=False, observer_or_fake_quant_ctr=act_obs.with_args(eps=2 ** -12))
        weight = config.weight
        if not per_channel:
            weight = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                                      qscheme=torch.per_tensor_symmetric, is_dynamic=False,
                                      observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
        config = QuantizationConfig(act, act, weight, None, False)
    quantizer = xiq.X86InductorQuantizer().set_global(config)
    for name in skip:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def static_int8(model: nn.Module, calibration: Any, example: torch.Tensor, *, per_channel: bool = True,
                observer: str = "histogram", max_batches: int | None = None, compile: bool = True,
                skip: Sequence[str] = ()) -> Quantized:
    """Static post-training int8 quantization with PT2E and the x86 inductor quantizer.

    Steps: ``torch.export`` (batch dimension dynamic) -> ``prepare_pt2e`` (folds BatchNorm into
    the preceding conv and inserts observers) -> run the ``calibration`` batches (a DataLoader or
    any iterable of tensors or ``(x, y)`` pairs, at most ``max_batches``) -> ``convert_pt2e``
    (int8 weights, quantize/dequantize around activations) -> :func:`compile_frozen`, where
    inductor fuses conv/linear + ReLU with the int8 arithmetic.

    ``per_channel`` picks one weight scale per output channel (default, what the x86 backend
    expects) or one per tensor; ``observer`` how activation ranges are estimated: ``"histogram"``
    (default: minimizes the quantization error, ignores outliers), ``"minmax"`` (the extremes
    seen) or ``"moving_average"``. ``skip`` names modules to keep in float (mixed precision).
    ``compile=False`` returns the converted module uncompiled (correct, but slow: for tests
    and inspection).

    Raises :class:`OptkitError` for a model with no Conv2d/Linear layers, an empty calibration
    loader or calibration batches whose shape does not match ``example``.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    check_choice("observer", observer, ["histogram", "minmax", "moving_average"])
    _require_layers(model, (nn.Conv2d, nn.Linear), "model", type(model).__name__)
    if not isinstance(example, torch.Tensor):
        raise OptkitError("example", type(example).__name__, "must be an input tensor",
                          "pass dataset.example_batch(1)")
    batches = _calibration_batches(calibration, example, max_batches)
    unknown = [s for s in skip if s not in dict(model.named_modules())]
    if unknown:
        raise OptkitError("skip", unknown, "names no module of the model",
                          "use names from [n for n, _ in model.named_modules()]")
    with quiet_torchao():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    float_model = copy.deepcopy(model).eval()
    exported = _export(float_model, example).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(exported, _x86_quantizer(per_channel, observer, skip=skip))
        with torch.no_grad():
            for xb in batches:
                prepared(xb)
        converted = convert_pt2e(prepared)
    n_seen = int(sum(len(b) for b in batches))
    technique = f"int8 static PTQ ({'per-channel' if per_channel else 'per-tensor'}, {observer})"
    if skip:
        technique = f"int8 mixed ({len(skip)} layers float)"
    return Quantized(model=compile_frozen(converted) if compile else converted, module=converted,
                     eager=converted, technique=technique, runtime="pt2e + inductor" if compile else "pt2e eager",
                     info={"per_channel": per_channel, "observer": observer, "calibration_examples": n_seen,
                           "calibration_batches": len(batches), "skip": list(skip), "compiled": compile})


def legacy_static_int8(model: nn.Module, calibration: Any, example: torch.Tensor, *,
                       fuse: Sequence[Sequence[str]] = (), quant_stub: bool = True,
                       max_batches: int | None = None) -> Quantized:
    """Static int8 the legacy way: eager-mode ``torch.ao.quantization`` (deprecated in torch 2.13,
    kept to compare with what most tutorials show).

    ``fuse`` lists module-name groups to fuse first (e.g. ``[["conv1", "relu1"]]``: conv and ReLU
    become one quantized kernel, BatchNorm is folded); ``quant_stub=True`` wraps the model in
    ``QuantWrapper`` so a QuantStub converts the float input to quint8 and a DeQuantStub converts
    the output back. ``quant_stub=False`` reproduces the classic failure: a float tensor reaches
    ``quantized::conv2d`` and torch raises "Could not run 'quantized::conv2d.new' with arguments
    from the 'CPU' backend". The deprecation warnings are silenced here; the notebook shows them.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    _require_layers(model, (nn.Conv2d, nn.Linear), "model", type(model).__name__)
    batches = _calibration_batches(calibration, example, max_batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.quantization as tq

        q = copy.deepcopy(model).eval()
        if fuse:
            q = tq.fuse_modules(q, [list(group) for group in fuse])
        if quant_stub:
            q = tq.QuantWrapper(q)
        q.qconfig = tq.get_default_qconfig("x86")
        tq.prepare(q, inplace=True)
        with torch.no_grad():
            for xb in batches:
                q(xb)
        tq.convert(q, inplace=True)
    return Quantized(model=q, module=q, technique="int8 static (legacy torch.ao eager)", runtime="pytorch eager",
                     info={"fused": [list(g) for g in fuse], "quant_stub": quant_stub,
                           "calibration_examples": int(sum(len(b) for b in batches))})


def _batches_xy(loader: Any) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise OptkitError("train_loader", type(batch).__name__, "must yield (x, y) pairs",
                              "pass dataset.torch_loader('train', batch_size=64)")
        yield batch


def qat_int8(model: nn.Module, train_loader: Any, example: torch.Tensor, *, steps: int = 100, lr: float = 1e-4,
             seed: int = 0, compile: bool = True) -> Quantized:
    """Quantization-aware training with PT2E: fake-quantize weights and activations during a
    short fine-tune so the weights learn to sit well on the int8 grid, then convert.

    ``export`` (in train mode) -> ``prepare_qat_pt2e`` (fake-quant modules, BatchNorm kept
    trainable) -> ``steps`` optimizer steps of Adam at ``lr`` over ``train_loader`` (cycled)
    -> ``move_exported_model_to_eval`` -> ``convert_pt2e`` -> :func:`compile_frozen`.
    The training batches also calibrate the activation ranges. The input model is not modified.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    check_range("steps", steps, 1)
    check_range("lr", lr, 0, low_open=True)
    _require_layers(model, (nn.Conv2d, nn.Linear), "model", type(model).__name__)
    first = next(iter(train_loader), None)
    if first is None:
        raise OptkitError("train_loader", "an empty loader", "yielded no batches to fine-tune on",
                          "pass a loader over the training split")
    _calibration_batches([first], example)
    with quiet_torchao():
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    torch.manual_seed(seed)
    float_model = copy.deepcopy(model).train()
    # A training batch for export: BatchNorm in train mode needs more than one example.
    exported = _export(float_model, first[0][:2] if len(first[0]) > 1 else example).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_pt2e(exported, _x86_quantizer(is_qat=True))
    move_exported_model_to_train(prepared)
    opt = torch.optim.Adam(prepared.parameters(), lr=lr)
    done, losses = 0, []
    while done < steps:
        n_before = done
        for xb, yb in _batches_xy(train_loader):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(prepared(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            done += 1
            if done >= steps:
                break
        if done == n_before:  # pragma: no cover - loader exhausted immediately
            break
    move_exported_model_to_eval(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_pt2e(prepared)
    return Quantized(model=compile_frozen(converted) if compile else converted, module=converted,
                     eager=converted, technique="int8 QAT (PT2E)", runtime="pt2e + inductor" if compile else "pt2e eager",
                     info={"steps": done, "lr": lr, "first_loss": losses[0], "last_loss": losses[-1],
                           "compiled": compile})


# =============================================================================== reduced float

class _CastInputs(nn.Module):
    """Run ``model`` in ``dtype``: cast floating inputs in, logits back to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.to(self.dtype)
        return self.model(x).float()


def reduced_float(model: nn.Module, dtype: str = "bfloat16", *, device: str | None = None,
                  compile: bool = False, channels_last: bool = False) -> Quantized:
    """The model with weights stored in bf16 or fp16 (half the bytes of fp32).

    - ``"bfloat16"``: fp32's 8 exponent bits with 7 mantissa bits: the same range, so no
      overflow and no scaling, just coarser values. This CPU has AVX-512 BF16 for fast dot products.
    - ``"float16"``: 5 exponent bits, 10 mantissa bits; fast on GPUs (tensor cores), but on a CPU
      without native fp16 arithmetic it is emulated and slow, so it raises here unless a CUDA
      device is present (``device="cuda"``). On a GPU, ``torch.autocast("cuda", torch.float16)``
      is the usual way to run it with fp32 master weights.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    check_choice("dtype", dtype, ["bfloat16", "float16"])
    if device is None:
        device = "cuda" if (dtype == "float16" and torch.cuda.is_available()) else "cpu"
    check_choice("device", device, ["cpu", "cuda"])
    if device == "cuda" and not torch.cuda.is_available():
        raise OptkitError("device", device, "no CUDA GPU is visible to torch on this machine",
                          "use device='cpu' with dtype='bfloat16'")
    if dtype == "float16" and device == "cpu":
        raise OptkitError("dtype", dtype, "fp16 needs a GPU: this CPU has no native fp16 arithmetic, so fp16 "
                          "kernels are emulated and slower than fp32",
                          "use dtype='bfloat16' on CPU (same size, native here), or run on a CUDA GPU")
    torch_dtype = getattr(torch, dtype)
    inner = copy.deepcopy(model).eval().to(device=device, dtype=torch_dtype)
    if channels_last:
        inner = inner.to(memory_format=torch.channels_last)
    wrapped = _CastInputs(inner, torch_dtype).eval()
    runner = torch.compile(wrapped, dynamic=False) if compile else wrapped
    return Quantized(model=runner, module=inner, eager=wrapped, technique=f"{'bf16' if dtype == 'bfloat16' else 'fp16'}"
                     + (" compiled" if compile else ""), runtime=f"pytorch {device}",
                     info={"dtype": dtype, "device": device, "compiled": compile})


# =============================================================================== sensitivity

@dataclass
class LayerSensitivity:
    """What quantizing one layer alone costs: ``accuracy`` (and its drop from the float
    model's), ``sqnr_db`` of the logits against the float model, the layer's parameter count.

    Taught in 02_quantization.
    """

    name: str
    kind: str
    params: int
    accuracy: float
    accuracy_drop: float
    sqnr_db: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextlib.contextmanager
def _fake_quantized_layer(layer: nn.Module, bits: int, per_channel: bool):
    """Temporarily replace ``layer``'s weight by its fake-quantized copy and fake-quantize its
    input (asymmetric, per tensor, range from the batch) as the int8 kernel would."""
    weight = layer.weight
    original = weight.data.clone()
    weight.data.copy_(fake_quantize(original, bits, symmetric=True, axis=0 if per_channel else None))

    def pre_hook(_module, args):
        x = args[0]
        return (fake_quantize(x, bits, symmetric=False),) + tuple(args[1:])

    handle = layer.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()
        weight.data.copy_(original)


def sensitivity(model: nn.Module, data: Any, *, layers: Sequence[str] | str = ("conv2d", "linear"),
                bits: int = 8, per_channel: bool = True, batch_size: int = 256) -> list[LayerSensitivity]:
    """Quantize one layer at a time (weights and that layer's input, simulated with
    :func:`fake_quantize`) and measure accuracy on ``data`` (a Split or ``(x, y)``) and the
    SQNR of the logits against the float model. Sorted most sensitive first (lowest SQNR).

    At 8 bits most layers barely matter; use ``bits=4`` to see which ones would hurt first.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    qrange(bits)
    found = _require_layers(model, _kinds(layers), "layers", layers)
    x, y = _as_xy(data)
    was_training = model.training
    model.eval()
    try:
        ref = _logits(model, x, batch_size)
        base_acc = float((ref.argmax(1) == y).float().mean())
        out = []
        for name, layer in found:
            with _fake_quantized_layer(layer, bits, per_channel):
                logits = _logits(model, x, batch_size)
            acc = float((logits.argmax(1) == y).float().mean())
            out.append(LayerSensitivity(name=name, kind=type(layer).__name__,
                                        params=sum(p.numel() for p in layer.parameters()),
                                        accuracy=acc, accuracy_drop=base_acc - acc, sqnr_db=sqnr(ref, logits)))
    finally:
        model.train(was_training)
    return sorted(out, key=lambda s: s.sqnr_db)


def mixed_precision(model: nn.Module, calibration: Any, example: torch.Tensor,
                    ranking: Sequence[LayerSensitivity] | Sequence[str], keep_float: int = 1,
                    **static_kw: Any) -> Quantized:
    """Static int8 with the ``keep_float`` most sensitive layers left in float.

    ``ranking`` is the output of :func:`sensitivity` (most sensitive first) or a list of module
    names in that order. Other keyword arguments go to :func:`static_int8`.

    Taught in 02_quantization.
    """
    names = [r.name if isinstance(r, LayerSensitivity) else str(r) for r in ranking]
    check_range("keep_float", keep_float, 0, len(names))
    skip = names[:int(keep_float)]
    q = static_int8(model, calibration, example, skip=skip, **static_kw)
    q.info["keep_float"] = int(keep_float)
    return q
