"""One MobileNet-class CNN in Keras and in PyTorch, and the weight port between them.

The same architecture built twice: a stem convolution, depthwise-separable blocks (a 3x3
depthwise convolution and a 1x1 pointwise one, each followed by BatchNorm and ReLU6), global
average pooling and a linear classifier.

- :func:`keras_mobilenet` builds it in Keras 3 (NHWC, ``padding="same"``, BatchNorm epsilon 1e-3);
- :func:`torch_mobilenet` builds its twin in PyTorch (NCHW), with TensorFlow's "same" padding
  rule reproduced by :class:`SamePad` (stride 2 on an even size pads one pixel at the bottom and
  right only, where PyTorch's ``padding=1`` pads both sides);
- :func:`port_keras_to_torch` copies a trained Keras model's weights into the twin: conv kernels
  ``(kh, kw, in, out)`` -> ``(out, in, kh, kw)``, depthwise kernels ``(kh, kw, in, 1)`` ->
  ``(in, 1, kh, kw)``, dense kernels transposed, BatchNorm statistics copied with Keras' epsilon
  (1e-3, PyTorch's default is 1e-5) and momentum converted (Keras keeps ``momentum`` of the old
  average, PyTorch weighs the new batch by ``momentum``: 0.9 there is 0.1 here). ``skip=``
  leaves one conversion out, to see what forgetting it costs;
- :func:`parity` runs both on the same rows: max absolute logit difference and top-1 agreement;
- :func:`torch_variants` and :func:`tensorflow_variants` put each on every runtime its framework
  reaches (eager, compiled, exported, quantized, ONNX Runtime, TFLite) as
  :class:`~optkit.core.variant.Variant` s collected in a :class:`Built` (what could not be built
  on this machine is kept with its reason); :func:`ort_variant` builds ONNX Runtime variants
  whose idle threads do not spin (they would steal the cores of the runtime timed next);
  :func:`publish` writes an artifact atomically under its own suffix.

Taught in 11_tensorflow_vs_pytorch_end_to_end.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from optkit.core import verify
from optkit.core.errors import OptkitError, check_choice, check_int, check_range

__all__ = ["DEFAULT_BLOCKS", "SKIPPABLE", "keras_mobilenet", "torch_mobilenet", "SamePad", "port_keras_to_torch",
           "parity", "nchw", "publish", "Built", "ort_variant", "torch_variants", "tensorflow_variants"]

DEFAULT_BLOCKS = ((2, 1), (4, 2), (4, 1))  # (channels as a multiple of width, stride) per separable block
SKIPPABLE = ("conv_layout", "depthwise_layout", "dense_layout", "bn_epsilon")


def _check_arch(width: Any, blocks: Any, classes: Any) -> list[tuple[int, int]]:
    check_int("width", width, 1, 1024)
    check_int("classes", classes, 2)
    try:
        items = [(int(m), int(s)) for m, s in blocks]
    except (TypeError, ValueError):
        raise OptkitError("blocks", blocks, "must be a list of (channel multiple, stride) pairs",
                          "pass e.g. ((2, 1), (4, 2), (4, 1))") from None
    for m, s in items:
        if m < 1 or s not in (1, 2):
            raise OptkitError("blocks", blocks, "holds a multiple below 1 or a stride other than 1 or 2",
                              "pass pairs like (2, 1) or (4, 2)")
    return items


def keras_mobilenet(input_shape: Sequence[int] = (28, 28, 1), classes: int = 10, *, width: int = 16,
                    blocks: Sequence[tuple[int, int]] = DEFAULT_BLOCKS, bn_momentum: float = 0.9, seed: int = 0):
    """A small MobileNet-class Keras 3 model (NHWC input, logits out).

    Stem ``Conv2D(width, 3, strides=2, padding="same")``, then one depthwise-separable block per
    ``(multiple, stride)`` in ``blocks`` (``DepthwiseConv2D(3)`` + BN + ReLU6, ``Conv2D(multiple *
    width, 1)`` + BN + ReLU6), global average pooling and ``Dense(classes)``. Convolutions have no
    bias (BatchNorm's beta is the bias). Seeded.

    ``bn_momentum`` is BatchNorm's Keras momentum (the weight of the old running average). Keras'
    default, 0.99, needs several hundred training steps before the running statistics forget
    their initial values (0.99^200 = 13 % of the start is left); a short training budget then
    evaluates with wrong statistics and scores near chance. 0.9 (PyTorch's 0.1) settles in tens
    of steps.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    items = _check_arch(width, blocks, classes)
    check_range("bn_momentum", bn_momentum, 0.0, 1.0, low_open=True, high_open=True)
    from optkit.runtimes.tflow import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(int(seed))
    L = keras.layers

    def bn_relu():
        return [L.BatchNormalization(momentum=bn_momentum), L.ReLU(6.0)]

    layers = [keras.Input(shape=tuple(input_shape)), L.Conv2D(width, 3, strides=2, padding="same", use_bias=False),
              *bn_relu()]
    for m, s in items:
        layers += [L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False), *bn_relu(),
                   L.Conv2D(m * width, 1, use_bias=False), *bn_relu()]
    layers += [L.GlobalAveragePooling2D(), L.Dense(classes)]
    return keras.Sequential(layers, name="mobilenet_twin")


def _torch_nn():
    return torch, nn


class SamePad(nn.Module):
    """TensorFlow's ``padding="same"`` in front of a PyTorch convolution with ``padding=0``.

    Output size ``ceil(size / stride)``; the total padding ``max((out - 1) * stride + kernel - size, 0)``
    goes ``total // 2`` before and the rest after, so stride 2 on an even size pads one pixel at
    the bottom and right only. Computed from each input's size, like TensorFlow does.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = int(kernel), int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.pad(x, pads)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def torch_mobilenet(in_channels: int = 1, classes: int = 10, *, width: int = 16,
                    blocks: Sequence[tuple[int, int]] = DEFAULT_BLOCKS, padding: str = "tf_same",
                    bn_eps: float = 1e-3, bn_momentum: float = 0.1, seed: int = 0):
    """The PyTorch twin of :func:`keras_mobilenet` (NCHW input, logits out).

    ``padding="tf_same"`` pads like TensorFlow (:class:`SamePad` before each 3x3 convolution,
    asymmetric at stride 2 on even sizes); ``"symmetric"`` uses PyTorch's usual ``padding=1``,
    which shifts every stride-2 output by a pixel and breaks parity with the Keras model.
    ``bn_eps`` defaults to Keras' 1e-3 and ``bn_momentum`` (PyTorch's convention: the weight of the
    new batch) to 0.1 = 1 - 0.9, the twin of :func:`keras_mobilenet`'s default; the port sets both
    from the Keras layers anyway.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    items = _check_arch(width, blocks, classes)
    check_choice("padding", padding, ["tf_same", "symmetric"])
    torch, nn = _torch_nn()
    torch.manual_seed(int(seed))

    def conv(cin, cout, k, s, groups=1):
        if k == 1:
            return [nn.Conv2d(cin, cout, 1, bias=False)]
        if padding == "tf_same":
            return [SamePad(k, s), nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=False)]
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False)]

    def bn_relu(c):
        return [nn.BatchNorm2d(c, eps=bn_eps, momentum=bn_momentum), nn.ReLU6()]

    layers = conv(in_channels, width, 3, 2) + bn_relu(width)
    c = width
    for m, s in items:
        layers += conv(c, c, 3, s, groups=c) + bn_relu(c) + conv(c, m * width, 1, 1) + bn_relu(m * width)
        c = m * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]
    return nn.Sequential(*layers).eval()


def _keras_weighted(keras_model) -> list:
    return [layer for layer in keras_model.layers if layer.get_weights()]


def _torch_weighted(torch_model) -> list:
    _, nn = _torch_nn()
    return [m for m in torch_model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]


def _kind(layer) -> str:
    name = type(layer).__name__
    return {"DepthwiseConv2D": "depthwise", "Conv2D": "conv", "BatchNormalization": "bn", "Dense": "dense"}.get(name, name)


def _torch_kind(module) -> str:
    _, nn = _torch_nn()
    if isinstance(module, nn.Conv2d):
        return "depthwise" if module.groups > 1 else "conv"
    return "bn" if isinstance(module, nn.BatchNorm2d) else "dense"


def _kernel(kind: str, w: np.ndarray, skip: Sequence[str], shape: tuple) -> np.ndarray:
    """A Keras kernel in PyTorch's layout (or, when its conversion is skipped, reshaped naively)."""
    if f"{kind}_layout" in skip:
        return np.ascontiguousarray(w).reshape(shape)  # the same numbers in the wrong order
    if kind == "conv":
        return w.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    if kind == "depthwise":
        return w.transpose(2, 3, 0, 1).reshape(shape)  # (kh, kw, in, mult) -> (in * mult, 1, kh, kw)
    return w.T  # dense: (in, out) -> (out, in)


def port_keras_to_torch(keras_model, torch_model, *, skip: Sequence[str] = ()):
    """Copy a :func:`keras_mobilenet`'s weights into a :func:`torch_mobilenet` twin; return the twin.

    Layers are matched in order (conv, depthwise conv, BatchNorm, dense); a different count or
    kind raises :class:`OptkitError` naming the first mismatch. BatchNorm gets Keras' epsilon and
    momentum (converted to PyTorch's convention). ``skip``: conversions to leave out, from
    :data:`SKIPPABLE` (``"conv_layout"``, ``"depthwise_layout"``, ``"dense_layout"``: reshape the
    kernel instead of transposing it; ``"bn_epsilon"``: keep PyTorch's 1e-5), to measure what a
    forgotten step costs. The twin is left in eval mode.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    for s in skip:
        check_choice("skip", s, SKIPPABLE)
    torch, _ = _torch_nn()
    k_layers, t_layers = _keras_weighted(keras_model), _torch_weighted(torch_model)
    k_kinds, t_kinds = [_kind(x) for x in k_layers], [_torch_kind(m) for m in t_layers]
    if k_kinds != t_kinds:
        i = next((i for i, (a, b) in enumerate(zip(k_kinds, t_kinds)) if a != b), min(len(k_kinds), len(t_kinds)))
        raise OptkitError("torch_model", type(torch_model).__name__,
                          f"does not match the Keras model: {len(k_kinds)} weighted Keras layers vs {len(t_kinds)} "
                          f"PyTorch ones, first difference at #{i} "
                          f"({k_kinds[i] if i < len(k_kinds) else '-'} vs {t_kinds[i] if i < len(t_kinds) else '-'})",
                          "build both with the same width and blocks (keras_mobilenet / torch_mobilenet)")
    with torch.no_grad():
        for layer, module, kind in zip(k_layers, t_layers, k_kinds):
            w = [np.asarray(v, dtype=np.float32) for v in layer.get_weights()]
            if kind == "bn":
                gamma, beta, mean, var = w
                module.weight.copy_(torch.from_numpy(gamma))
                module.bias.copy_(torch.from_numpy(beta))
                module.running_mean.copy_(torch.from_numpy(mean))
                module.running_var.copy_(torch.from_numpy(var))
                module.eps = 1e-5 if "bn_epsilon" in skip else float(layer.epsilon)
                module.momentum = 1.0 - float(layer.momentum)
                continue
            kernel = _kernel(kind, w[0], skip, tuple(module.weight.shape))
            if tuple(kernel.shape) != tuple(module.weight.shape):
                raise OptkitError("torch_model", type(torch_model).__name__,
                                  f"has a {kind} weight of shape {tuple(module.weight.shape)} where the Keras layer "
                                  f"{layer.name!r} gives {tuple(kernel.shape)}",
                                  "build both with the same width, blocks, input channels and classes")
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            if len(w) > 1 and module.bias is not None:
                module.bias.copy_(torch.from_numpy(w[1]))
    return torch_model.eval()


def nchw(x: np.ndarray) -> np.ndarray:
    """NHWC rows (Keras, TFLite) as contiguous NCHW float32 rows (PyTorch)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise OptkitError("x", x.shape, "must be a 4-D NHWC batch", "pass images shaped (N, H, W, C)")
    return np.array(x.transpose(0, 3, 1, 2), dtype=np.float32, order="C")  # a writable copy (torch.from_numpy)


def parity(keras_model, torch_model, x_nhwc: np.ndarray, *, batch_size: int = 256,
           reference: np.ndarray | None = None) -> verify.Parity:
    """Run the Keras model on NHWC rows and the PyTorch twin on the same rows in NCHW; compare logits.

    Returns a :class:`~optkit.core.verify.Parity` (``max_abs``, ``top1_agreement``, SQNR ...) of the
    twin against the Keras model. ``reference``: the Keras logits on ``x_nhwc`` if already computed
    (the Keras model is then not run; ``keras_model`` may be None).

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    torch, _ = _torch_nn()
    x = np.asarray(x_nhwc, dtype=np.float32)
    x_t = nchw(x)
    check_int("batch_size", batch_size, 1)
    if reference is not None and len(reference) != len(x):
        raise OptkitError("reference", np.shape(reference), f"has {len(reference)} rows for {len(x)} inputs",
                          "pass the Keras logits of exactly these rows, or None to compute them")
    ref, out = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            if reference is None:
                ref.append(np.asarray(keras_model(x[i:i + batch_size], training=False)))
            out.append(torch_model(torch.from_numpy(x_t[i:i + batch_size])).numpy())
    return verify.compare_outputs(np.asarray(reference) if reference is not None else np.concatenate(ref),
                                  np.concatenate(out))


# --------------------------------------------------------------------------- every runtime, one set of variants

def publish(path: Any, write: Callable[[Path], Any]) -> Path:
    """Let ``write(tmp)`` write an artifact at a temporary path with the same name, then move it onto ``path``.

    The temporary file sits in a hidden folder beside ``path``, so the final move is one atomic
    rename and a failed write never leaves half a file. For writers that insist on their suffix
    (Keras' ``.keras``, AOTInductor's ``.pt2``), where :func:`optkit.core.files.atomic_write`'s
    ``.tmp`` name does not do. Returns ``path``.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise OptkitError("path", str(path), f"its folder {str(path.parent)!r} does not exist",
                          "create the folder first (Path(...).mkdir(parents=True))")
    folder = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    try:
        write(folder / path.name)
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


@dataclass
class Built:
    """Variants built so far, with what each needs and what could not be built.

    ``variants`` (for :func:`optkit.core.variant.evaluate`), ``convert`` (variant name -> how to turn
    NHWC evaluation rows into its input; None: unchanged), ``skipped`` (name -> the reason),
    ``seconds`` (name -> build time) and ``files`` (artifact name -> path, for the memory probes).

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """

    variants: list = field(default_factory=list)
    convert: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    def add(self, name: str, build: Callable[[], Any], convert: Callable | None = None) -> Any:
        """Run ``build()`` (a Variant); on an exception keep and print its reason instead, and go on."""
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = build()
        except Exception as e:  # a runtime missing or failing here is a row of the table, not a crash
            first = (str(e).strip().splitlines() or [""])[0][:200]
            self.skipped[name] = f"{type(e).__name__}: {first}"
            print(f"skipped {name}: {self.skipped[name]}")
            return None
        self.variants.append(v)
        self.convert[v.name] = convert
        self.seconds[v.name] = time.perf_counter() - t0
        return v

    def table(self):
        """One row per variant built (technique, runtime, precision, size, build time), then the skipped ones."""
        import pandas as pd

        rows = [{"name": v.name, "technique": v.technique, "runtime": v.runtime, "precision": v.precision,
                 "size_mb": None if v.size_bytes is None else v.size_bytes / 1e6, "build_s": self.seconds[v.name],
                 "skipped because": ""} for v in self.variants]
        rows += [{"name": n, "skipped because": why} for n, why in self.skipped.items()]
        return pd.DataFrame(rows).set_index("name")


def _to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(nchw(x))


def ort_variant(path: Any, name: str, *, threads: int | None = None, spinning: bool = False, **fields: Any):
    """An ONNX file as a Variant whose ONNX Runtime session does not spin between calls.

    ORT's intra-op workers busy-wait ("spin") for a while after each call, to start the next one
    sooner. Timed interleaved with other runtimes on a few cores, those spinning threads take the
    cores the next runtime needs: on 2 cores an eager PyTorch call measured 0.9 ms alone and 240 ms
    right after an ORT call (OpenMP waits for a worker the scheduler has not run). ``spinning=False``
    sets ``session.intra_op.allow_spinning=0``, the setting for a process that shares its cores.
    ``fields`` go to :func:`optkit.runtimes.onnxrt.to_variant` (``precision``, ``technique``,
    ``inputs`` ...); the Variant keeps ``path`` as its artifact and the file's size.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    from optkit.runtimes import model_files, onnxrt

    session = onnxrt.session(path, threads=threads, providers=["CPUExecutionProvider"], spinning=spinning)
    config = {"allow_spinning": bool(spinning), **fields.pop("config", {})}
    v = onnxrt.to_variant(onnxrt.Runner(session), name, config=config, **fields)
    return v.replace(artifact=Path(path), size_bytes=model_files.file_size(path))


def torch_variants(torch_model, folder: Any, calibration: Sequence[np.ndarray], inputs: dict, *,
                   threads: int | None = None, compile: bool = True, built: Built | None = None) -> Built:
    """The PyTorch twin on every PyTorch runtime, as Variants taking NCHW tensors.

    ``calibration``: real NHWC training batches for the int8 variants; ``inputs``: ``{batch size:
    NHWC batch}`` to time with (converted here). Variants: eager (its state dict saved), and with
    ``compile``: ``torch.compile`` (inductor, frozen, one compile per timed batch size),
    ``torch.export`` + AOTInductor (a ``.pt2`` package), PT2E static int8 (x86 inductor
    quantizer, compiled); always bf16 weights (eager) and ONNX Runtime fp32 / static QDQ int8 of
    the dynamo ``torch.onnx`` export. The exported program (``torch.export.save``) is kept in
    ``built.files["torch_export"]``. Anything that fails is in ``built.skipped`` with its reason.

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    from optkit.core import variant
    from optkit.runtimes import model_files, onnxrt
    from optkit.techniques import quantize

    b = built or Built()
    folder = Path(folder)
    x = {n: _to_torch(v) for n, v in inputs.items()}
    calib = [_to_torch(c) for c in calibration]
    sizes = sorted(x)
    state = model_files.save_state_dict(torch_model, folder / "twin_state_dict.pt", overwrite=True)
    b.add("PyTorch eager", lambda: variant.Variant("PyTorch eager", torch_model, technique="ported twin",
                                                   size_bytes=model_files.file_size(state), inputs=x), _to_torch)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(torch_model, (x[sizes[-1]],), dynamic_shapes=({0: batch},))
    b.files["torch_export"] = model_files.save_program(program, folder / "twin_program.pt2", overwrite=True)
    if compile:
        b.add("torch.compile", lambda: variant.Variant(
            "torch.compile", quantize.fixed_batches(quantize.compile_frozen(torch_model), sizes), inputs=x,
            technique="torch.compile (inductor, frozen)", runtime="torch.compile"), _to_torch)

        def aoti():
            path = publish(folder / "twin_aoti.pt2",
                           lambda tmp: torch._inductor.aoti_compile_and_package(program, package_path=str(tmp)))
            b.files["aoti"] = path
            return variant.Variant("AOTInductor", torch._inductor.aoti_load_package(str(path)), inputs=x,
                                   technique="torch.export + AOTInductor", runtime="AOTInductor", artifact=path,
                                   size_bytes=model_files.file_size(path))

        b.add("AOTInductor", aoti, _to_torch)
        b.add("PT2E int8", lambda: quantize.static_int8(torch_model, calib, x[sizes[0]]).to_variant(
            "PT2E int8", shapes=sizes, inputs=x), _to_torch)
    b.add("PyTorch bf16", lambda: quantize.reduced_float(torch_model, "bfloat16").to_variant("PyTorch bf16", inputs=x),
          _to_torch)

    def ort(int8: bool):
        src = b.files.get("torch_onnx") or onnxrt.export(torch_model, x[sizes[0]], folder / "twin_torch.onnx",
                                                         overwrite=True).path
        path = onnxrt.quantize_static(src, folder / "twin_torch_int8.onnx", [c.numpy() for c in calib],
                                      overwrite=True) if int8 else src
        b.files["torch_onnx_int8" if int8 else "torch_onnx"] = path
        name = f"ORT {'int8' if int8 else 'fp32'} (torch.onnx)"
        return ort_variant(path, name, precision="int8" if int8 else "fp32", inputs=x, threads=threads,
                           technique="static QDQ int8 (torch.onnx)" if int8 else "torch.onnx (dynamo)")

    b.add("ORT fp32 (torch.onnx)", lambda: ort(False), nchw)
    b.add("ORT int8 (torch.onnx)", lambda: ort(True), nchw)
    return b


def tensorflow_variants(keras_model, folder: Any, calibration: Sequence[np.ndarray], inputs: dict, *,
                        onnx: tuple[Any, Any] | None = None, threads: int | None = None,
                        built: Built | None = None) -> Built:
    """The Keras model on every TensorFlow runtime, as Variants taking NHWC arrays.

    Variants: Keras through one ``tf.function`` (the model also saved as ``.keras``), the same
    with XLA (``jit_compile=True``), a SavedModel exported and reloaded, TFLite float32 /
    dynamic-range / full int8 (calibrated on ``calibration``) on LiteRT, and, when ``onnx`` holds
    the tf2onnx fp32 and int8 files, both in ONNX Runtime. Files are kept in ``built.files``
    (``"keras"``, ``"saved_model"``, ``"tflite_<kind>"``).

    Taught in 11_tensorflow_vs_pytorch_end_to_end.
    """
    from optkit.core import variant
    from optkit.runtimes import model_files, tflow

    b = built or Built()
    folder = Path(folder)

    def keras_file():
        path = b.files["keras"] = publish(folder / "twin.keras", keras_model.save)
        return variant.Variant("Keras tf.function", tflow.keras_predict(keras_model), technique="trained model",
                               runtime="tensorflow", artifact=path, size_bytes=model_files.file_size(path), inputs=inputs)

    def saved_model():
        path = b.files["saved_model"] = tflow.export_saved_model(keras_model, folder / "twin_savedmodel", overwrite=True)
        return variant.Variant("SavedModel", tflow.saved_model_predict(path), technique="SavedModel (reloaded)",
                               runtime="tensorflow", artifact=path, size_bytes=tflow.artifact_sizes(path)[0],
                               inputs=inputs)

    def tflite(kind: str):
        path = b.files[f"tflite_{kind}"] = tflow.to_tflite(
            keras_model, folder / f"twin_{kind}.tflite", variant=kind, overwrite=True,
            representative=list(calibration) if kind == "int8" else None)
        return variant.Variant(f"TFLite {kind}", tflow.LiteRT(path, num_threads=threads), technique=f"TFLite {kind}",
                               runtime="LiteRT", precision=tflow.VARIANT_PRECISIONS[kind], artifact=path,
                               size_bytes=model_files.file_size(path), inputs=inputs)

    b.add("Keras tf.function", keras_file)
    b.add("tf.function + XLA", lambda: variant.Variant(
        "tf.function + XLA", tflow.keras_predict(keras_model, jit_compile=True), technique="XLA (jit_compile=True)",
        runtime="tensorflow XLA", inputs=inputs))
    b.add("SavedModel", saved_model)
    for kind in ("float32", "dynamic", "int8"):
        b.add(f"TFLite {kind}", lambda kind=kind: tflite(kind))
    for path, precision in zip(onnx or (), ("fp32", "int8")):
        b.add(f"ORT {precision} (tf2onnx)", lambda path=path, precision=precision: ort_variant(
            path, f"ORT {precision} (tf2onnx)", precision=precision, inputs=inputs, threads=threads,
            technique="tf2onnx" if precision == "fp32" else "static QDQ int8 (tf2onnx)"))
    return b
