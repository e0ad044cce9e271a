"""What quantization costs and saves, layer by layer: :func:`sensitivity` (quantize one layer at a
time and measure), :func:`mixed_precision` (keep the most sensitive layers in float), the
storage accounting that shows what a quantized model really stores (:func:`weight_storage`,
:func:`int8_tensors`, looking inside torchao tensor subclasses and legacy packed parameters),
and the honest float baselines an int8 model is compared with (:func:`float_variants`).

Taught in 02_quantization.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from optkit.core.deprecation import renamed
from optkit.core.deprecation import renamed_keyword
from optkit.core.errors import check_range
from optkit.core.sizes import model_size, state_dict_of
from optkit.core.variant import Variant
from optkit.techniques.quantize.primitives import fake_quantize, qrange, sqnr
from optkit.techniques.quantize.recipes import _check_model, _kinds, _require_layers, compile_frozen, static_int8
from optkit.techniques.quantize.result import Quantized, _as_xy, _logits, fixed_batches

__all__ = ["weight_storage", "int8_tensors", "state_dict_size", "LayerSensitivity", "sensitivity", "mixed_precision",
           "float_variants"]


# =============================================================================== storage

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


#: the default ``kinds`` of :func:`sensitivity` (compared by identity to tell it from a caller's choice)
_CONV_LINEAR = ("conv2d", "linear")


@renamed_keyword("layers", "kinds", why="layers= names a model's own modules in optkit, kinds= the layer types")
def sensitivity(model: nn.Module, data: Any, *, kinds: Sequence[str] | str = _CONV_LINEAR,
                bits: int = 8, per_channel: bool = True, batch_size: int = 256) -> list[LayerSensitivity]:
    """Quantize one layer at a time (weights and that layer's input, simulated with
    :func:`fake_quantize`) and measure accuracy on ``data`` (a Split or ``(x, y)``) and the
    SQNR of the logits against the float model. Sorted most sensitive first (lowest SQNR).

    At 8 bits most layers barely matter; use ``bits=4`` to see which ones would hurt first.
    ``kinds`` are the layer types tried (``"conv2d"``, ``"linear"``, ...); its old name ``layers=``
    still works, with a ``DeprecationWarning``.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    qrange(bits)
    found = _require_layers(model, _kinds(kinds), "kinds", kinds)
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


# =============================================================================== baselines

def float_variants(model: nn.Module, prefix: str = "", *, shapes: Sequence[int] = (1, 32),
                   channels_last: bool = True, compile: bool = True) -> list[Variant]:
    """The fp32 versions of ``model`` an int8 variant has to beat, as :class:`optkit.core.variant.Variant` s.

    An int8 speed-up means something only against the *best* float model, not the slowest, and
    on a CPU two cheap changes can each speed up convolutions. In order:

    - ``"{prefix}fp32 eager"``: the model itself;
    - ``"{prefix}fp32 channels_last"`` (``channels_last=True``, for 4-D image inputs): a copy in
      the channels-last memory format, its input converted on each call;
    - ``"{prefix}fp32 compiled"`` (``compile=True``): :func:`compile_frozen` on a copy (freezing,
      static shapes), wrapped in :func:`fixed_batches` with ``shapes``, the batch sizes the
      comparison times, so scoring the test set compiles nothing more.

    Each carries the model's state-dict size. Time them together with the
    int8 variants in one :func:`optkit.core.variant.evaluate` and take the fastest float one as the
    baseline (``report.fastest_float``). The input model is not modified.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    common = {"technique": "baseline", "precision": "fp32", "size_bytes": model_size(model)}
    out = [Variant(f"{prefix}fp32 eager", model, **{**common, "technique": "fp32 eager"})]
    if channels_last:
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)

        def run_channels_last(x):
            return cl_model(x.contiguous(memory_format=torch.channels_last))

        out.append(Variant(f"{prefix}fp32 channels_last", run_channels_last, config={"memory_format": "channels_last"},
                           **{**common, "technique": "fp32 channels_last"}))
    if compile:
        compiled = compile_frozen(copy.deepcopy(model))
        out.append(Variant(f"{prefix}fp32 compiled", fixed_batches(compiled, shapes), runtime="inductor",
                           config={"freezing": True, "dynamic": False},
                           **{**common, "technique": "fp32 compiled (freezing)"}))
    return out
