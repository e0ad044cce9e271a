"""TFLite conversion and the LiteRT runner.

Owns :data:`VARIANTS` (and their :data:`VARIANT_PRECISIONS`) and :func:`to_tflite` in its four
variants (``"float32"``, ``"dynamic"``, ``"float16"``, ``"int8"``), the representative data for int8 calibration
(:func:`representative_batches` and its checks), the :class:`LiteRT` runner over
``ai_edge_litert``'s interpreter and :func:`tensor_dtypes`.

Importing this module does not import TensorFlow.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from optkit.core.errors import OptkitError, check_choice, check_destination, check_range
from optkit.runtimes.tflow.env import import_tensorflow, keras_flavour, silenced
from optkit.runtimes.tflow.models import _input_spec, _missing, artifact_sizes, keras_arrays
from optkit.runtimes.tflow.saved_model import _is_saved_model, _serving_signature, load_keras

__all__ = ["VARIANTS", "VARIANT_PRECISIONS", "representative_batches", "to_tflite", "LiteRT", "tensor_dtypes"]

#: TFLite conversion variants of :func:`to_tflite`.
VARIANTS = ("float32", "dynamic", "float16", "int8")
#: The :data:`optkit.core.variant.PRECISIONS` name of each variant, for ``Variant(precision=...)``.
#: float16 stores fp16 weights (a CPU expands them to float32 at load time); dynamic-range keeps
#: float activations around int8 weights.
VARIANT_PRECISIONS = {"float32": "fp32", "dynamic": "int8-dynamic", "float16": "fp16", "int8": "int8"}


# --------------------------------------------------------------------------- TFLite conversion
def representative_batches(data, n: int = 100, batch_size: int = 1, *, split: str = "calib",
                           transform: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0) -> list[np.ndarray]:
    """``n`` real examples as a list of NHWC float32 batches, for int8 calibration.

    ``data`` is an optkit Dataset (its ``split``, default the fixed calibration split drawn from
    training data, never the test set) or an NHWC array. ``transform`` maps each batch (e.g. a
    resize or a rescale to the model's input range).

    Taught in 07_tensorflow_and_tflite.
    """
    check_range("n", n, 1)
    check_range("batch_size", batch_size, 1)
    if isinstance(data, np.ndarray):
        x = data[: int(n)].astype(np.float32, copy=False)
    else:
        x, _ = keras_arrays(data, split, n=min(int(n), len(data.split(split))), seed=seed)
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    return [np.asarray(transform(b) if transform else b, dtype=np.float32) for b in batches]


def _check_representative(representative: Any, shape: tuple | None) -> list[np.ndarray]:
    if representative is None:
        raise OptkitError("representative", None, "is required for the full-int8 variant: the converter must see "
                                                  "real inputs to choose each activation's scale",
                          "pass ~100 real training or calibration inputs, e.g. "
                          "optkit.runtimes.tflow.representative_batches(dataset)")
    if isinstance(representative, np.ndarray):
        raise OptkitError("representative", f"one array of shape {representative.shape}",
                          "must be an iterable of batches, not one array",
                          "split it: [x[i:i + 1] for i in range(len(x))]")
    batches = []
    for i, b in enumerate(representative):
        if isinstance(b, (tuple, list)) and len(b) > 0:  # (x, y) pairs, tf.data style
            b = b[0]
        b = np.asarray(b)
        if shape is not None:
            want = tuple(shape)
            ok = b.ndim == len(want) and all(d is None or d == g for d, g in zip(want[1:], b.shape[1:]))
            if not ok:
                hint = ""
                if b.ndim == 4 and len(want) == 4 and tuple(b.shape[1:]) == (want[3], want[1], want[2]):
                    hint = " (it looks NCHW; Keras and TFLite want NHWC)"
                raise OptkitError("representative", f"batch {i} of shape {b.shape}",
                                  f"does not fit the model input {want}{hint}",
                                  "yield batches shaped like the model input, e.g. optkit.runtimes.tflow.nhwc(x[i:i + 1])")
        if not np.issubdtype(b.dtype, np.floating):
            raise OptkitError("representative", f"batch {i} of dtype {b.dtype}",
                              "must be float: calibration sees the model's float inputs",
                              "pass float32 inputs scaled as at training time")
        batches.append(b.astype(np.float32, copy=False))
    if not batches:
        raise OptkitError("representative", "an empty iterable", "holds no batches",
                          "pass ~100 real inputs (a generator can only be read once: pass a list)")
    return batches


def _is_quantization_aware(model) -> bool:
    return any("Quantize" in type(layer).__name__ for layer in getattr(model, "layers", []))


def _converter(model, p_saved: Path | None):
    tf = import_tensorflow()
    if p_saved is not None:
        return tf.lite.TFLiteConverter.from_saved_model(str(p_saved))
    return tf.lite.TFLiteConverter.from_keras_model(model)


def to_tflite(model, path: str | os.PathLike, *, variant: str = "float32", representative: Iterable | None = None,
              int8_io: bool = True, overwrite: bool = False) -> Path:
    """Convert a Keras model, ``.keras``/``.h5`` file or SavedModel folder to a ``.tflite`` file.

    ``variant``:

    - ``"float32"``: the graph as it is, float weights and activations;
    - ``"dynamic"``: dynamic-range quantization, int8 weights (about 4x smaller), float
      activations quantized on the fly in the kernels that support it;
    - ``"float16"``: fp16 weights (about 2x smaller), de-quantized to float32 on CPU;
    - ``"int8"``: full integer quantization; ``representative`` (an iterable of real input
      batches, NHWC) calibrates every activation's range. With ``int8_io=True`` inputs and
      outputs are int8 too (what microcontrollers and NPUs want); :class:`LiteRT` applies the
      input scale and zero point for you. A quantization-aware (tfmot) model needs no
      ``representative``: its ranges were learned.

    Returns ``path``. The converter's log lines and "Saved artifact" listing are kept off the
    screen. A representative batch of the wrong shape raises :class:`OptkitError` before the
    (slow) conversion starts.

    Taught in 07_tensorflow_and_tflite.
    """
    from optkit.runtimes.model_files import atomic_write

    tf = import_tensorflow()
    check_choice("variant", variant, VARIANTS)
    path = check_destination(path, overwrite=overwrite)
    p_saved = None
    if isinstance(model, (str, os.PathLike)):
        src = Path(model).expanduser()
        if not src.exists():
            raise _missing("model", src, "SavedModel" if not src.suffix else "file")
        if _is_saved_model(src):
            p_saved = src
        else:
            model = load_keras(src)
    elif keras_flavour(model) is None:
        raise OptkitError("model", type(model).__name__, "is not a Keras model, SavedModel folder or model file",
                          "pass a keras/tf_keras model, a .keras/.h5 path or a SavedModel folder")
    if p_saved is not None:
        _, sig = _serving_signature(p_saved)
        (_, spec), = sig.structured_input_signature[1].items()
        in_shape = tuple(spec.shape)
        qat = False
    else:
        in_shape = _input_spec(model)[0]
        qat = _is_quantization_aware(model)
    batches = None
    if variant == "int8" and not (qat and representative is None):
        batches = _check_representative(representative, in_shape)
    elif representative is not None and variant != "int8":
        raise OptkitError("representative", "given", f"is only used by the 'int8' variant, not {variant!r}",
                          "drop it, or pass variant='int8'")

    with silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = _converter(model, p_saved)
        if variant != "float32":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            conv.target_spec.supported_types = [tf.float16]
        if variant == "int8":
            if batches is not None:
                conv.representative_dataset = lambda: ([b] for b in batches)
            if batches is not None:  # a QAT model is int8 already; TF 2.21 would ask it for data here
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
        flat = conv.convert()
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(flat)
    return path


# --------------------------------------------------------------------------- LiteRT runner
def _interpreter_class():
    """The interpreter class, its op-resolver enum and the backend's name."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "ai_edge_litert"
    except ImportError:  # pragma: no cover - ai-edge-litert is pinned in the tf extra
        tf = import_tensorflow()
        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, "tf.lite (deprecated)"


class LiteRT:
    """Run a ``.tflite`` model with the LiteRT interpreter (``ai_edge_litert``) like a function.

    ``runner(x)`` takes a float batch of any size (the input is resized when the batch changes),
    quantizes it with the model's input scale and zero point if the input is int8/uint8, runs
    the interpreter and returns the first output as float32 (de-quantized if it is int8). Several
    inputs: ``runner(x1, x2)``. ``num_threads=None`` keeps LiteRT's default. For timing,
    ``bench.measure(lambda: runner(x))``.

    ``xnnpack=False`` switches off the delegates LiteRT applies by default (on a CPU: XNNPACK,
    which takes over the convolutions, dense layers and pooling with its own kernels), through
    ``experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``: the
    model then runs on LiteRT's built-in kernels alone, which shows what XNNPACK buys.
    :attr:`delegated` says whether a delegate took over part of the graph.

    ``tf.lite.Interpreter`` does the same but warns that it is deprecated and will be removed;
    ``ai_edge_litert.interpreter.Interpreter`` is its replacement with the same API.

    Taught in 07_tensorflow_and_tflite.
    """

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None, xnnpack: bool = True):
        p = Path(path).expanduser()
        if not p.exists():
            raise _missing("path", p, "file")
        if p.suffix.lower() != ".tflite":
            raise OptkitError("path", str(p), "is not a .tflite file", "convert it first with optkit.runtimes.tflow.to_tflite")
        if num_threads is not None:
            check_range("num_threads", num_threads, 1)
        if not isinstance(xnnpack, bool):
            raise OptkitError("xnnpack", xnnpack, "must be True or False",
                              "pass xnnpack=False to run without LiteRT's default (XNNPACK) delegate")
        cls, resolvers, self.backend = _interpreter_class()
        self.path = p
        self.num_threads = num_threads
        self.xnnpack = xnnpack
        resolver = resolvers.AUTO if xnnpack else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with silenced(stdout=False), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.interpreter = cls(model_path=str(p), num_threads=num_threads,
                                   experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        self._inputs = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        self._shapes = [tuple(d["shape"]) for d in self._inputs]
        self._signatures = [tuple(int(v) for v in (d.get("shape_signature") if len(d.get("shape_signature", ())) else
                                                   d["shape"])) for d in self._inputs]
        self._quant = []
        for d in self._inputs:  # float -> integer input: the model's own scale and zero point
            scale, zero = d["quantization"]
            if np.issubdtype(d["dtype"], np.integer) and scale:
                info = np.iinfo(d["dtype"])
                self._quant.append((np.float32(scale), np.float32(zero), info.min, info.max))
            else:
                self._quant.append(None)

    @property
    def input_details(self) -> list[dict]:
        return self.interpreter.get_input_details()

    @property
    def output_details(self) -> list[dict]:
        return self.interpreter.get_output_details()

    @property
    def delegated(self) -> bool | None:
        """True when a delegate (XNNPACK on a CPU) runs part of the graph; None if the interpreter cannot say."""
        try:
            ops = self.interpreter._get_ops_details()  # the execution plan; a delegated part is one DELEGATE node
        except (AttributeError, RuntimeError, ValueError):  # pragma: no cover - older interpreters
            return None
        return any(op.get("op_name") == "DELEGATE" for op in ops)

    @property
    def size_bytes(self) -> int:
        """Bytes of the ``.tflite`` file."""
        return self.path.stat().st_size

    @property
    def gzip_bytes(self) -> int:
        """Bytes of the file gzipped (level 9; computed once): what zeros and shared values save in a download."""
        if getattr(self, "_gzip", None) is None:
            self._gzip = artifact_sizes(self.path)[1]
        return self._gzip

    def _prepare(self, i: int, x: Any) -> np.ndarray:
        d = self._inputs[i]
        x = np.asarray(x)
        want = self._signatures[i]
        if x.ndim != len(want) or any(w != -1 and w != g for w, g in zip(want[1:], x.shape[1:])):
            raise OptkitError("x", f"array of shape {x.shape}", f"does not fit input {d['name']!r} {want}",
                              "pass NHWC images (optkit.runtimes.tflow.nhwc(x)), shaped like the model's input")
        dtype, quant = d["dtype"], self._quant[i]
        if quant is not None and x.dtype.kind == "f":
            scale, zero, low, high = quant
            q = np.divide(x, scale, dtype=np.float32)  # the converter's own rule: round(x / scale) + zero
            np.rint(q, out=q)
            q += zero
            np.clip(q, low, high, out=q)
            return q.astype(dtype)
        return x if x.dtype == dtype and x.flags.c_contiguous else np.ascontiguousarray(x, dtype=dtype)

    def run_all(self, *xs: Any) -> list[np.ndarray]:
        """Run the model and return every output as a float32 array (de-quantized if integer)."""
        if len(xs) != len(self._inputs):
            raise OptkitError("inputs", f"{len(xs)} arrays", f"the model has {len(self._inputs)} input(s)",
                              "pass one array per input: " + ", ".join(d["name"] for d in self._inputs))
        arrays = [self._prepare(i, x) for i, x in enumerate(xs)]
        interp = self.interpreter
        if any(a.shape != s for a, s in zip(arrays, self._shapes)):
            for d, a in zip(self._inputs, arrays):
                interp.resize_tensor_input(d["index"], a.shape)
            interp.allocate_tensors()
            self._shapes = [a.shape for a in arrays]
        for d, a in zip(self._inputs, arrays):
            interp.set_tensor(d["index"], a)
        interp.invoke()
        outs = []
        for d in self._outputs:
            y = interp.get_tensor(d["index"])
            scale, zero = d["quantization"]
            if np.issubdtype(y.dtype, np.integer) and scale:
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y.astype(np.float32, copy=False))
        return outs

    def __call__(self, *xs: Any) -> np.ndarray:
        return self.run_all(*xs)[0]

    def __repr__(self) -> str:
        def shape(d):
            return [int(v) for v in (d["shape_signature"] if len(d.get("shape_signature", ())) else d["shape"])]

        ins = ", ".join(f"{d['name'][:40]}{shape(d)} {np.dtype(d['dtype']).name}" for d in self._inputs)
        outs = ", ".join(f"{shape(d)} {np.dtype(d['dtype']).name}" for d in self._outputs)
        return (f"LiteRT({self.path.name!r}, {self.size_bytes:,} B, inputs: {ins}; outputs: {outs}; "
                f"num_threads={self.num_threads}{'' if self.xnnpack else ', XNNPACK off'}, {self.backend})")


def tensor_dtypes(path_or_runner) -> dict[str, int]:
    """Count the tensors of a ``.tflite`` model by dtype (e.g. ``{"int8": 14, "int32": 4, ...}``).

    A full-int8 model holds int8 weights and activations (int32 biases); a float16 model holds
    float16 weights de-quantized to float32 at load time.

    Taught in 07_tensorflow_and_tflite.
    """
    runner = path_or_runner if isinstance(path_or_runner, LiteRT) else LiteRT(path_or_runner)
    counts: dict[str, int] = {}
    for d in runner.interpreter.get_tensor_details():
        name = np.dtype(d["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
