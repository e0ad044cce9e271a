"""The recipes (torchao's ``quant_api``): one function per way of quantizing a whole model, each
returning a :class:`~optkit.techniques.quantize.result.Quantized`.

- :func:`dynamic_int8`: int8 weights, activations quantized on the fly (torchao ``quantize_``,
  or the legacy ``torch.ao.quantization.quantize_dynamic`` for LSTMs);
- :func:`static_int8`: post-training quantization with a calibration loader (PT2E with the x86
  inductor quantizer, compiled with freezing); observer and granularity are parameters;
- :func:`legacy_static_int8`: the deprecated eager ``torch.ao`` path, kept to explain its warning
  and its classic failure;
- :func:`qat_int8`: quantization-aware training (PT2E ``prepare_qat_pt2e``) with a short fine-tune;
- :func:`reduced_float`: bf16 on CPU (fp16 only where a GPU is present);

and what they share: :func:`int8_reduce_range` (7-bit activations where the int8 kernels run
without VNNI), :func:`compile_frozen` and :func:`quiet_torchao`. torchao and torch.export are
imported inside functions, so ``import optkit.techniques.quantize`` stays light.

Taught in 02_quantization.
"""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from optkit.core.deprecation import renamed_keyword
from optkit.core.sizes import state_dict_of
from optkit.core.errors import OptkitError, check_choice, check_int, check_range
from optkit.techniques.quantize.result import Quantized

__all__ = ["dynamic_int8", "static_int8", "legacy_static_int8", "qat_int8", "reduced_float", "compile_frozen",
           "FrozenCompiled", "int8_reduce_range", "quiet_torchao"]


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


# =============================================================================== checks

_KINDS = {"linear": nn.Linear, "lstm": nn.LSTM, "conv2d": nn.Conv2d, "gru": nn.GRU}
#: the default ``kinds`` of :func:`dynamic_int8` (compared by identity to tell it from a caller's choice)
_LINEAR = ("linear",)


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
                          "quantize a kind of layer the model has, e.g. kinds=('linear',) for Linear layers")
    return found


def _kinds(kinds: Sequence[str] | str) -> list[type]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    return [_KINDS[check_choice("kinds", k, list(_KINDS))] for k in kinds]


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

@renamed_keyword("layers", "kinds", why="layers= names a model's own modules in optkit, kinds= the layer types")
def dynamic_int8(model: nn.Module, kinds: Sequence[str] | str = _LINEAR, *, backend: str = "torchao",
                 weight_only: bool = False) -> Quantized:
    """Dynamic int8 quantization: weights stored as int8, activations quantized per batch at run time.

    - ``backend="torchao"`` (current API): ``quantize_(model, Int8DynamicActivationInt8WeightConfig())``
      on every ``nn.Linear`` (``weight_only=True`` uses ``Int8WeightOnlyConfig``: int8 storage,
      float compute). torchao handles Linear only.
    - ``backend="legacy"``: ``torch.ao.quantization.quantize_dynamic`` (deprecated, warns on every
      call; kept because it is what most tutorials show and it is the only one that quantizes
      ``nn.LSTM``). ``kinds`` may include ``"lstm"``.

    ``kinds`` are layer types (``"linear"``, ``"lstm"``, ``"conv2d"``, ``"gru"``); its old name
    ``layers=`` still works, with a ``DeprecationWarning``. The input model is not modified.
    Raises :class:`OptkitError` if the model has no layers of the requested kinds.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    check_choice("backend", backend, ["torchao", "legacy"])
    types = _kinds(kinds)
    if backend == "torchao" and any(k is not nn.Linear for k in types):
        raise OptkitError("kinds", kinds, "torchao's dynamic quantization handles nn.Linear only",
                          "pass kinds=('linear',), or backend='legacy' for LSTM layers")
    found = _require_layers(model, types, "kinds", kinds)
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

            q = quantize_dynamic(q, set(types), dtype=torch.qint8)
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

def _call_key(args: tuple, kwargs: dict) -> tuple:
    """What decides whether dynamo recompiles a static-shape graph: input shapes and dtypes, inference mode."""
    def sig(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return tuple(v.shape), v.dtype
        if isinstance(v, dict):
            return tuple((k, sig(x)) for k, x in sorted(v.items()))
        if isinstance(v, (tuple, list)):
            return tuple(sig(x) for x in v)
        return type(v).__name__
    return sig(args), sig(kwargs), torch.is_inference_mode_enabled()


class FrozenCompiled:
    """A module compiled by :func:`compile_frozen`: call it like the module.

    Every call runs without autograd (inductor freezes weights only when gradients are off, so a
    call with autograd on would silently compile a slow unfrozen graph) and with
    ``torch._inductor.config.freezing`` switched on *for that call only*: whenever dynamo compiles
    (a new shape, or a recompile because a guard failed, e.g. ``no_grad`` then ``inference_mode``)
    it compiles a frozen graph, and the global setting is the same before and after. Switching is
    an attribute write (well under a microsecond), so every call does it rather than guessing
    which call compiles: guessing by shape let a recompile run unfrozen (int8 4x slower).
    ``_orig_mod`` is the module, as on ``torch.compile``'s result.

    Taught in 02_quantization.
    """

    def __init__(self, module: nn.Module):
        self._orig_mod = module
        self._compiled = torch.compile(module, dynamic=False)
        self._seen: set = set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch._inductor.config as inductor_config

        self._seen.add(_call_key(args, kwargs))
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
            before = inductor_config.freezing
            inductor_config.freezing = True
            try:
                return self._compiled(*args, **kwargs)
            finally:
                inductor_config.freezing = before

    def __repr__(self) -> str:
        return f"FrozenCompiled({type(self._orig_mod).__name__}, shapes compiled: {len(self._seen)})"


def compile_frozen(module: nn.Module) -> FrozenCompiled:
    """``torch.compile`` with inductor **freezing**: weights become constants, so inductor can
    pre-pack int8 weights and fuse quantize/dequantize into oneDNN int8 kernels. Without
    freezing, a PT2E int8 model is *slower* than fp32 on CPU.

    Freezing is switched on only while this model compiles (``torch._inductor.config.patch``
    around the call that compiles a new shape), never for the rest of the process, and every call
    runs without autograd, which freezing needs (see :class:`FrozenCompiled`). Shapes are static
    (``dynamic=False``): each new batch size compiles once (seconds). The dynamic-shape path of
    the int8 conv lowering fails a stride check in torch 2.13.

    Taught in 02_quantization.
    """
    if not isinstance(module, nn.Module):
        raise OptkitError("module", type(module).__name__, "is not a torch.nn.Module",
                          "pass the model (or a converted PT2E graph module) to compile")
    return FrozenCompiled(module)


def _export(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True):
    if dynamic_batch and example.shape[0] < 2:  # export specializes a batch of 1 to the constant 1
        example = example.expand(2, *example.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    shapes = ({0: batch},) if dynamic_batch else None
    return torch.export.export(model, (example,), dynamic_shapes=shapes)


def _weight_spec(per_channel: bool, bits: int, is_qat: bool):
    """The weights' QuantizationSpec: symmetric int8 storage holding ``bits``-bit values, one scale
    per output channel or per tensor, observed (PTQ) or fake-quantized with a moving average (QAT)."""
    with quiet_torchao():
        from torchao.quantization.pt2e import (FusedMovingAvgObsFakeQuantize, MinMaxObserver,
                                               MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                                               PerChannelMinMaxObserver)
        from torchao.quantization.pt2e.quantizer import QuantizationSpec
    from optkit.techniques.quantize.primitives import qrange

    qmin, qmax = qrange(bits)
    if is_qat:
        observer = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
        ctr = FusedMovingAvgObsFakeQuantize.with_args(eps=2 ** -12, observer=observer)
    else:
        ctr = (PerChannelMinMaxObserver if per_channel else MinMaxObserver).with_args(eps=2 ** -12)
    return QuantizationSpec(dtype=torch.int8, quant_min=qmin, quant_max=qmax,
                            qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
                            ch_axis=0 if per_channel else None, is_dynamic=False, observer_or_fake_quant_ctr=ctr)


def _x86_quantizer(per_channel: bool = True, observer: str = "histogram", is_qat: bool = False,
                   skip: Sequence[str] = (), is_dynamic: bool = False, weight_bits: int = 8):
    """An ``X86InductorQuantizer`` with the chosen weight granularity and bit width and activation
    observer (``is_dynamic``: activations quantized per batch at run time, linear layers only)."""
    with quiet_torchao():
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e import MinMaxObserver, MovingAverageMinMaxObserver
        from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec
    reduce = int8_reduce_range()
    config = xiq.get_default_x86_inductor_quantization_config(is_qat=is_qat, is_dynamic=is_dynamic,
                                                              reduce_range=reduce)
    act = config.input_activation
    if not is_qat and not is_dynamic and observer != "histogram":
        act_obs = {"minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver}[observer]
        act = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=127 if reduce else 255,
                               qscheme=torch.per_tensor_affine,
                               is_dynamic=False, observer_or_fake_quant_ctr=act_obs.with_args(eps=2 ** -12))
    if act is not config.input_activation or not per_channel or weight_bits != 8:
        weight = _weight_spec(per_channel, weight_bits, is_qat)
        config = QuantizationConfig(act, act, weight, None, is_qat)
    quantizer = xiq.X86InductorQuantizer().set_global(config)
    for name in skip:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def pt2e_int8(module: nn.Module, calibration_args: Iterable[tuple], *, dynamic: bool = False,
              per_channel: bool = True, observer: str = "histogram", skip: Sequence[str] = (),
              weight_bits: int = 8) -> tuple[nn.Module, int]:
    """The PT2E steps themselves, on an exported module: ``prepare_pt2e`` with the x86 inductor
    quantizer, the calibration batches run through the prepared graph, ``convert_pt2e``.

    ``module`` is ``torch.export.export(model, example).module()`` (or a loaded ``.pt2``'s
    ``.module()``); ``calibration_args`` yields the positional inputs of one forward call per
    batch, as tuples (one tensor per model input). ``dynamic=True`` quantizes activations per
    batch at run time (linear layers only; calibration then only traces). Weights are int8
    per-channel unless ``per_channel=False`` (``weight_bits`` below 8 keeps fewer levels in the
    int8 storage, to study lower bit widths); activations uint8 (7-bit where
    :func:`int8_reduce_range` says the CPU needs it). Returns ``(converted module, examples seen)``.

    :func:`static_int8` is this with the export, checks and compilation around it; the capstone's
    PT2E recipes call it on a program they loaded.

    Taught in 02_quantization.
    """
    check_choice("observer", observer, ["histogram", "minmax", "moving_average"])
    with quiet_torchao():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    quantizer = _x86_quantizer(per_channel, observer, skip=skip, is_dynamic=dynamic, weight_bits=weight_bits)
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(module, quantizer)
        with torch.no_grad():
            for args in calibration_args:
                args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
                prepared(*args)
                seen += len(args[0])
        converted = convert_pt2e(prepared)
    if seen == 0:
        raise OptkitError("calibration_args", "no batch", "ran nothing through the prepared model",
                          "pass at least one batch of inputs, e.g. [(x,)]")
    return converted, seen


def drop_dead_weights_(module: nn.Module) -> nn.Module:
    """Remove, in place, the parameters and buffers a converted PT2E graph no longer reads.

    ``convert_pt2e`` leaves each float weight attached beside the int8 copy its graph reads;
    exported as a ``.pt2`` they would double the file. What counts as read is
    :func:`optkit.core.sizes.state_dict_of`'s rule, the one :func:`~optkit.core.sizes.model_size`
    counts by, so the file then holds what the size says. Returns ``module``.
    """
    read = set(state_dict_of(module))
    for name in list(module.state_dict()):
        if name in read:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        owner._parameters.pop(attr, None) if attr in owner._parameters else owner._buffers.pop(attr, None)
    return module


def static_int8(model: nn.Module, calibration: Any, example: torch.Tensor, *, per_channel: bool = True,
                observer: str = "histogram", max_batches: int | None = None, compile: bool = True,
                skip: Sequence[str] = (), weight_bits: int = 8) -> Quantized:
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
    ``weight_bits`` (2 to 8) rounds weights to fewer levels, still stored as int8: a way to see
    what 4-bit weights cost in accuracy (compile such a model with ``compile=False``; the int8
    kernels' speed does not change with the levels used).
    ``compile=False`` returns the converted module uncompiled (correct, but slow: for tests
    and inspection).

    Raises :class:`OptkitError` for a model with no Conv2d/Linear layers, an empty calibration
    loader or calibration batches whose shape does not match ``example``.

    Taught in 02_quantization.
    """
    model = _check_model(model)
    check_choice("observer", observer, ["histogram", "minmax", "moving_average"])
    weight_bits = check_int("weight_bits", weight_bits, 2, 8)
    _require_layers(model, (nn.Conv2d, nn.Linear), "model", type(model).__name__)
    if not isinstance(example, torch.Tensor):
        raise OptkitError("example", type(example).__name__, "must be an input tensor",
                          "pass dataset.example_batch(1)")
    batches = _calibration_batches(calibration, example, max_batches)
    unknown = [s for s in skip if s not in dict(model.named_modules())]
    if unknown:
        raise OptkitError("skip", unknown, "names no module of the model",
                          "use names from [n for n, _ in model.named_modules()]")
    float_model = copy.deepcopy(model).eval()
    exported = _export(float_model, example).module()
    converted, n_seen = pt2e_int8(exported, [(xb,) for xb in batches], per_channel=per_channel,
                                  observer=observer, skip=skip, weight_bits=weight_bits)
    technique = f"int8 static PTQ ({'per-channel' if per_channel else 'per-tensor'}, {observer})"
    if weight_bits != 8:
        technique += f", {weight_bits}-bit weights"
    if skip:
        technique = f"int8 mixed ({len(skip)} layers float)"
    return Quantized(model=compile_frozen(converted) if compile else converted, module=converted,
                     eager=converted, technique=technique, runtime="pt2e + inductor" if compile else "pt2e eager",
                     info={"per_channel": per_channel, "observer": observer, "weight_bits": weight_bits,
                           "calibration_examples": n_seen,
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
             seed: int = 0, compile: bool = True, per_channel: bool = True, weight_bits: int = 8) -> Quantized:
    """Quantization-aware training with PT2E: fake-quantize weights and activations during a
    short fine-tune so the weights learn to sit well on the int8 grid, then convert.

    ``export`` (in train mode) -> ``prepare_qat_pt2e`` (fake-quant modules, BatchNorm kept
    trainable) -> ``steps`` optimizer steps of Adam at ``lr`` over ``train_loader`` (cycled)
    -> ``move_exported_model_to_eval`` -> ``convert_pt2e`` -> :func:`compile_frozen`.
    The training batches also calibrate the activation ranges. The input model is not modified.
    ``per_channel`` and ``weight_bits`` choose the weights' grid as in :func:`static_int8`: QAT pays
    where post-training rounding loses accuracy (per-tensor or 4-bit weights, deeper models).

    Taught in 02_quantization.
    """
    model = _check_model(model)
    check_range("steps", steps, 1)
    check_range("lr", lr, 0, low_open=True)
    weight_bits = check_int("weight_bits", weight_bits, 2, 8)
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
        prepared = prepare_qat_pt2e(exported, _x86_quantizer(per_channel, is_qat=True, weight_bits=weight_bits))
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
                     eager=converted, technique="int8 QAT (PT2E)" + (f", {weight_bits}-bit weights" if weight_bits != 8 else ""),
                     runtime="pt2e + inductor" if compile else "pt2e eager",
                     info={"steps": done, "lr": lr, "first_loss": losses[0], "last_loss": losses[-1],
                           "compiled": compile, "per_channel": per_channel, "weight_bits": weight_bits})


# =============================================================================== reduced float

class _CastInputs(nn.Module):
    """Run ``model`` in ``dtype``: cast floating inputs in (any number of them), outputs back to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        # floating inputs (images) are cast; integer ones (token ids, masks) pass unchanged
        args = tuple(a.to(self.dtype) if a.is_floating_point() else a for a in args)
        return self.model(*args).float()


def reduced_float(model: nn.Module, dtype: str = "bfloat16", *, device: str | None = None,
                  compile: bool = False, channels_last: bool = False) -> Quantized:
    """The model with weights stored in bf16 or fp16 (half the bytes of fp32).

    - ``"bfloat16"``: fp32's 8 exponent bits with 7 mantissa bits: the same range, so no
      overflow and no scaling, just coarser values. Fast where the CPU has AVX-512 BF16 or AMX
      (:func:`optkit.course.claims.machine_facts` says which), emulated and slow elsewhere.
    - ``"float16"``: 5 exponent bits, 10 mantissa bits; fast on GPUs (tensor cores), but on a CPU
      without native fp16 arithmetic it is emulated and slow, so it raises here unless a CUDA
      device is present (``device="cuda"``). On a GPU, ``torch.autocast("cuda", torch.float16)``
      is the usual way to run it with fp32 master weights.

    ``compile=True`` compiles with :func:`compile_frozen` (freezing, static shapes), as the fp32
    and int8 models it is compared with are; ``channels_last`` stores conv weights channels-last.

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
    runner = compile_frozen(wrapped) if compile else wrapped
    return Quantized(model=runner, module=inner, eager=wrapped, technique=f"{'bf16' if dtype == 'bfloat16' else 'fp16'}"
                     + (" compiled" if compile else ""), runtime=f"pytorch {device}",
                     info={"dtype": dtype, "device": device, "compiled": compile})
