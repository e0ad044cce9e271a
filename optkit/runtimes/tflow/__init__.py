"""TensorFlow, TFLite / LiteRT and tensorflow-model-optimization, with quiet imports and clear errors.

What it offers:

- :func:`import_tensorflow` imports TensorFlow with its C++ log lines kept off stderr (no
  environment variable stops them), and :func:`silenced` does the same around any noisy call;
- Keras helpers that work for both Keras 3 (``keras``) and Keras 2 (``tf_keras``): :func:`build_cnn`,
  :func:`fit`, :func:`keras_predict` (one traced ``tf.function``, no per-call retracing),
  :func:`accuracy`, :func:`score` (accuracy + parity in one call), :func:`artifact_sizes`
  (raw and gzipped), :func:`keras_arrays` (NCHW optkit data -> NHWC), :func:`keras_flavour`,
  :func:`load_keras`, :func:`export_saved_model`, :func:`saved_model_predict`, :func:`pipeline`;
- TFLite conversion recipes, :func:`to_tflite` with ``variant`` ``"float32"``, ``"dynamic"``
  (int8 weights), ``"float16"`` (fp16 weights) or ``"int8"`` (full integer, calibrated on a
  representative data set, int8 input/output), and :func:`representative_batches`;
- :class:`LiteRT`, a callable runner over ``ai_edge_litert``'s interpreter (``tf.lite.Interpreter``
  is deprecated) that quantizes int8 inputs, de-quantizes int8 outputs and resizes for any batch;
- tensorflow-model-optimization recipes, which need Keras 2 (``tf_keras``) models:
  :func:`prune_model` (``prune_low_magnitude`` + ``PolynomialDecay`` + ``strip_pruning``),
  :func:`pruning_schedule`, :func:`quantize_aware` (QAT), :func:`cluster_model` (weight clustering)
  and :func:`prune_preserving_qat`; :func:`require_keras2` explains the Keras 2 requirement and
  :func:`to_keras2` rebuilds a plain Keras 3 model in ``tf_keras``; :func:`sparsity` and
  :func:`distinct_values` check what they did.

``import optkit.runtimes.tflow`` does not import TensorFlow: every function imports it when called.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_choice, check_destination, check_range

__all__ = [
    "VARIANTS",
    "import_tensorflow",
    "import_tfmot",
    "environment_line",
    "silenced",
    "keras_flavour",
    "is_keras2",
    "require_keras2",
    "to_keras2",
    "nhwc",
    "keras_arrays",
    "build_cnn",
    "fit",
    "keras_predict",
    "accuracy",
    "score",
    "op_error_reason",
    "Score",
    "artifact_sizes",
    "pipeline",
    "load_keras",
    "export_saved_model",
    "saved_model_predict",
    "representative_batches",
    "to_tflite",
    "LiteRT",
    "tensor_dtypes",
    "pruning_schedule",
    "prune_model",
    "quantize_aware",
    "cluster_model",
    "prune_preserving_qat",
    "sparsity",
    "SparsityInfo",
    "distinct_values",
]

#: TFLite conversion variants of :func:`to_tflite`.
VARIANTS = ("float32", "dynamic", "float16", "int8")

_TF = None


# --------------------------------------------------------------------------- quiet imports
from optkit.core.quiet import silenced  # noqa: E402  (one silencer for the package)


def import_tensorflow(threads: int | None = None, *, gpu_memory_growth: bool = True):
    """Import TensorFlow with its start-up log lines kept off stderr, and return the module.

    ``TF_CPP_MIN_LOG_LEVEL`` does not stop the absl/oneDNN/CUDA lines TensorFlow 2.21 prints on
    import and on its first op, so file descriptor 2 is redirected around both (see
    :func:`silenced`). ``threads`` sets TensorFlow's intra-op threads (and one inter-op thread);
    it only works before TensorFlow runs its first op, which this function does, so pass it on
    the first call. ``gpu_memory_growth=True`` (for the same reason, set here) makes TensorFlow
    take GPU memory as it needs it instead of reserving nearly all of it at start-up, so other
    processes (a PyTorch job, a second model) can share the GPU; no effect without a GPU.

    Taught in 07_tensorflow_and_tflite.
    """
    global _TF
    if threads is not None:
        check_range("threads", threads, 1)
    if _TF is not None:
        if threads is not None:
            _set_threads(_TF, threads)
        return _TF
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        if threads is not None:
            _set_threads(tf, threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, bool(gpu_memory_growth))
        tf.constant(1.0) + 1.0  # the first op prints its own log lines
        with contextlib.suppress(Exception):
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel("ERROR")
    _TF = tf
    return tf


def _set_threads(tf, threads: int) -> None:
    cfg = tf.config.threading
    if cfg.get_intra_op_parallelism_threads() == threads:
        return
    try:
        cfg.set_intra_op_parallelism_threads(int(threads))
        cfg.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        warnings.warn(f"TensorFlow already started; its thread count stays at "
                      f"{cfg.get_intra_op_parallelism_threads() or 'all cores'} (pass threads on the first "
                      "import_tensorflow call)", stacklevel=3)


def environment_line() -> str:
    """:func:`optkit.core.bench.environment_line` plus TensorFlow's version and intra-op thread count.

    Taught in 07_tensorflow_and_tflite.
    """
    from optkit.core import bench

    tf = import_tensorflow()
    n = tf.config.threading.get_intra_op_parallelism_threads()
    return f"{bench.environment_line()}; TensorFlow {tf.__version__} with {n or 'all'} threads"


def import_tfmot():
    """Import ``tensorflow_model_optimization`` quietly and return it.

    Importing tfmot sets ``TF_USE_LEGACY_KERAS=1`` (so ``tf.keras`` means Keras 2 from then on);
    optkit never uses ``tf.keras``, it names ``keras`` (Keras 3) or ``tf_keras`` (Keras 2).

    Taught in 07_tensorflow_and_tflite.
    """
    import_tensorflow()
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow_model_optimization as tfmot
    return tfmot


def _keras(keras2: bool):
    import_tensorflow()
    if keras2:
        import tf_keras as keras
    else:
        import keras
    return keras


# --------------------------------------------------------------------------- Keras 2 vs 3
def keras_flavour(model: Any) -> str | None:
    """``"tf_keras"`` (Keras 2), ``"keras3"``, or None if ``model`` is not a Keras model or layer.

    Taught in 07_tensorflow_and_tflite.
    """
    for cls in type(model).__mro__:
        mod = cls.__module__ or ""
        if mod.startswith("tf_keras") or mod.startswith("keras.src.engine") or mod.startswith("tensorflow.python.keras"):
            return "tf_keras"
        if mod.startswith("keras"):
            return "keras3"
    return None


def is_keras2(model: Any) -> bool:
    """True for a ``tf_keras`` (Keras 2) model, the only kind tensorflow-model-optimization accepts."""
    return keras_flavour(model) == "tf_keras"


def require_keras2(model: Any, parameter: str = "model") -> None:
    """Raise an :class:`OptkitError` unless ``model`` is a Keras 2 (``tf_keras``) model.

    tensorflow-model-optimization wraps layers with Keras 2 classes; on a Keras 3 model
    ``prune_low_magnitude`` and ``quantize_model`` raise deep inside tfmot and ``cluster_weights``
    returns None without a word. This check says so up front.

    Taught in 07_tensorflow_and_tflite.
    """
    flavour = keras_flavour(model)
    if flavour == "tf_keras":
        return
    what = "a Keras 3 model" if flavour == "keras3" else f"a {type(model).__name__}, not a Keras model"
    raise OptkitError(
        parameter, type(model).__name__,
        f"is {what}; tensorflow-model-optimization 0.8 works only with Keras 2 (tf_keras) models "
        "(on Keras 3 it raises, or cluster_weights silently returns None)",
        "rebuild it with Keras 2: `import tf_keras as keras` and the same layers (optkit.runtimes.tflow.build_cnn("
        "keras2=True)), or optkit.runtimes.tflow.to_keras2(model) to copy a Sequential/functional Keras 3 model's "
        "layers and weights into tf_keras; load .h5 files with optkit.runtimes.tflow.load_keras(path, keras2=True)")


_CONFIG_DROP = {"dtype", "module", "registered_name", "build_config", "compile_config", "quantization_config"}


def _clean_config(config: dict) -> dict:
    # Initializers do not matter (the weights are copied); Keras 3 adds keys Keras 2 rejects.
    out = {k: v for k, v in config.items() if k not in _CONFIG_DROP and not k.endswith("_initializer")}
    for key, value in list(out.items()):
        if isinstance(value, dict) and "class_name" in value:  # regularizers, constraints
            raise OptkitError("model", f"{config.get('name')}.{key}", "uses a Keras 3 object tf_keras may not read",
                              "rebuild the model by hand with `import tf_keras as keras`")
    return out


def to_keras2(model: Any):
    """Copy a Keras 3 ``Sequential`` (or single-chain functional) model into ``tf_keras``, weights included.

    Each layer is rebuilt from its config in ``tf_keras.layers`` (dropping the Keras 3-only keys
    such as dtype policies) and given the same weights, so outputs match to float rounding. Models
    with branches or custom layers must be rebuilt by hand with ``import tf_keras as keras``.
    Returns the model unchanged if it already is Keras 2.

    Taught in 07_tensorflow_and_tflite.
    """
    flavour = keras_flavour(model)
    if flavour == "tf_keras":
        return model
    if flavour != "keras3":
        raise OptkitError("model", type(model).__name__, "is not a Keras model", "pass a keras.Model")
    k2 = _keras(True)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    new_layers = []
    for layer in layers:
        cls = type(layer).__name__
        if not hasattr(k2.layers, cls) or getattr(layer, "_inbound_nodes", None) and len(layer._inbound_nodes) > 1:
            raise OptkitError("model", f"layer {layer.name} ({cls})",
                              "has no tf_keras counterpart or is shared, so it cannot be copied automatically",
                              "rebuild the model by hand with `import tf_keras as keras`, then set_weights per layer")
        new_layers.append(getattr(k2.layers, cls).from_config(_clean_config(layer.get_config())))
    shape = tuple(model.inputs[0].shape[1:])
    k2_model = k2.Sequential([k2.Input(shape=shape)] + new_layers, name=model.name)
    for old, new in zip(layers, new_layers):
        new.set_weights([np.asarray(w) for w in old.get_weights()])
    return k2_model


# --------------------------------------------------------------------------- data
def nhwc(x: np.ndarray) -> np.ndarray:
    """optkit's NCHW image batch ``(N, C, H, W)`` as a contiguous NHWC array (what Keras and TFLite expect)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise OptkitError("x", f"array of shape {x.shape}", "is not a 4-d image batch",
                          "pass (N, C, H, W) images, e.g. dataset.numpy('test')[0]")
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def keras_arrays(dataset, split: str = "train", n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split of an optkit data set, images in NHWC, optionally ``n`` of them.

    Taught in 07_tensorflow_and_tflite.
    """
    s = dataset.split(split)
    if n is not None:
        s = s.subset(int(n), seed=seed)
    x = nhwc(s.x) if np.asarray(s.x).ndim == 4 else np.asarray(s.x)
    return x.astype(np.float32, copy=False), np.asarray(s.y)


def pipeline(x: np.ndarray, y: np.ndarray | None = None, *, batch_size: int = 128,
             map_fn: Callable | None = None, cache: bool = True, prefetch: bool = True,
             parallel: bool = True, shuffle: bool = False, seed: int = 0):
    """A ``tf.data`` pipeline over arrays: per-example ``map_fn``, then cache, batch, prefetch.

    ``parallel`` maps with ``num_parallel_calls=AUTOTUNE``; ``cache`` keeps the mapped examples
    in memory after the first pass (so the map runs once, not every epoch); ``prefetch`` lets the
    next batch be prepared while the model runs on this one. Switch each off to measure it.

    Taught in 07_tensorflow_and_tflite.
    """
    tf = import_tensorflow()
    check_range("batch_size", batch_size, 1)
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if map_fn is not None:
        ds = (ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) if parallel
              else ds.map(map_fn))
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


# --------------------------------------------------------------------------- Keras models
def build_cnn(input_shape: Sequence[int] = (28, 28, 1), classes: int = 10, *, keras2: bool = False,
              width: int = 16, dtype: str | None = None, seed: int = 0):
    """A small Keras CNN (two conv blocks, a dense head, logits out), in Keras 3 or Keras 2.

    Same layers either way, so a technique can be shown on both. ``dtype`` is a Keras dtype
    policy such as ``"mixed_bfloat16"`` (Keras 3 only); the logits layer stays float32.

    Taught in 07_tensorflow_and_tflite.
    """
    keras = _keras(keras2)
    keras.utils.set_random_seed(seed)
    kw = {} if dtype is None else {"dtype": dtype}
    if dtype is not None and keras2:
        raise OptkitError("dtype", dtype, "is only supported for Keras 3 here",
                          "use keras2=False, or set tf_keras.mixed_precision.set_global_policy yourself")
    L = keras.layers
    return keras.Sequential([
        keras.Input(shape=tuple(input_shape)),
        L.Conv2D(width, 3, padding="same", activation="relu", **kw),
        L.MaxPooling2D(2, **kw),
        L.Conv2D(2 * width, 3, padding="same", activation="relu", **kw),
        L.MaxPooling2D(2, **kw),
        L.Flatten(**kw),
        L.Dense(64, activation="relu", **kw),
        L.Dense(classes, dtype="float32"),
    ], name="small_cnn" + ("_keras2" if keras2 else ""))


def _loss_and_optimizer(model, learning_rate: float):
    keras = _keras(is_keras2(model))
    return (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            keras.optimizers.Adam(learning_rate=learning_rate))


def fit(model, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 128,
        learning_rate: float = 1e-3, seed: int = 0, callbacks: Sequence = (), compile_model: bool = True):
    """Compile (Adam, cross-entropy on logits) and train a Keras model quietly; return the History.

    Seeded (``set_random_seed``) and without progress output, so notebook cells stay clean.

    Taught in 07_tensorflow_and_tflite.
    """
    check_range("epochs", epochs, 1)
    keras = _keras(is_keras2(model))
    keras.utils.set_random_seed(seed)
    if compile_model:
        loss, opt = _loss_and_optimizer(model, learning_rate)
        model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(x, y, epochs=int(epochs), batch_size=int(batch_size), shuffle=True,
                         verbose=0, callbacks=list(callbacks))


def _input_spec(model) -> tuple[tuple, str]:
    inputs = getattr(model, "inputs", None)
    if inputs:
        t = inputs[0]
        return tuple(t.shape), str(getattr(t.dtype, "name", t.dtype))
    raise OptkitError("model", type(model).__name__, "has no known input shape (a subclassed model not called yet)",
                      "call it once on a batch, or build it with keras.Input(shape=...)")


def keras_predict(model, *, batch_size: int = 256, jit_compile: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy -> numpy predictor: one ``tf.function`` traced once for any batch size.

    ``model.predict`` builds a data pipeline on every call (milliseconds of overhead at batch 1)
    and ``model(x)`` runs eagerly; this traces ``model(x, training=False)`` once with a
    ``[None, ...]`` input signature (``jit_compile=True`` compiles it with XLA) and feeds it in
    chunks of ``batch_size``. A dict output with one entry is unwrapped.

    Taught in 07_tensorflow_and_tflite.
    """
    tf = import_tensorflow()
    shape, dtype = _input_spec(model)
    spec = tf.TensorSpec((None,) + tuple(shape[1:]), dtype or tf.float32)

    @tf.function(input_signature=[spec], jit_compile=jit_compile, reduce_retracing=True)
    def run(x):
        return model(x, training=False)

    with warnings.catch_warnings():  # trace now: Keras warns about input structure once, at trace time
        warnings.simplefilter("ignore")
        run.get_concrete_function()

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=spec.dtype.as_numpy_dtype)
        if x.ndim != len(shape) or any(d is not None and d != g for d, g in zip(shape[1:], x.shape[1:])):
            raise OptkitError("x", f"array of shape {x.shape}", f"does not fit the model input {shape}",
                              "pass NHWC images (optkit.runtimes.tflow.nhwc(x) turns NCHW into NHWC)")
        outs = []
        for start in range(0, max(len(x), 1), batch_size):
            out = run(tf.constant(x[start:start + batch_size]))
            if isinstance(out, dict):
                out = next(iter(out.values()))
            outs.append(np.asarray(out, dtype=np.float32) if out.dtype != tf.float32 else out.numpy())
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    predict.model = model
    predict.run = run
    return predict


def accuracy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
             batch_size: int | None = None) -> float:
    """Top-1 accuracy of ``predict`` (a Keras model, :func:`keras_predict` or a :class:`LiteRT`) on ``(x, y)``.

    Taught in 07_tensorflow_and_tflite.
    """
    if keras_flavour(predict) is not None:
        predict = keras_predict(predict)
    if batch_size is None:
        logits = predict(x)
    else:
        logits = np.concatenate([predict(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return float((np.asarray(logits).argmax(-1) == np.asarray(y)).mean())


@dataclass
class Score:
    """Accuracy of a variant on real labels and its agreement with a reference model's outputs."""

    accuracy: float | None
    agreement: float | None = None  # top-1 agreement with the reference
    sqnr_db: float | None = None  # reference outputs vs these, in dB
    max_abs: float | None = None
    n: int = 0

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "agreement": self.agreement, "sqnr_db": self.sqnr_db,
                "max_abs": self.max_abs, "n": self.n}

    def __repr__(self) -> str:
        parts = [] if self.accuracy is None else [f"accuracy {100 * self.accuracy:.2f} %"]
        if self.agreement is not None:
            parts.append(f"top-1 agreement {100 * self.agreement:.2f} %, SQNR {self.sqnr_db:.1f} dB, "
                         f"max |diff| {self.max_abs:.3g}")
        return f"Score({', '.join(parts)} on {self.n:,} inputs)"


def op_error_reason(exc: BaseException) -> str:
    """The one line of a TensorFlow op error that says what went wrong, without the node trace.

    Graph execution errors carry a Python traceback of where the op was defined and end with the
    node name; the reason sits in a ``message: ...`` part (oneDNN) or on the first line.
    Used where a notebook reports that a kernel is not available on this machine.

    Taught in 07_tensorflow_and_tflite.
    """
    import re

    text = str(getattr(exc, "message", None) or exc)
    found = re.search(r"message: ([^\n]*?)(?: Run workload|\n|$)", text)
    if found:
        return found.group(1).strip().rstrip(",")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def score(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray | None = None,
          reference: np.ndarray | None = None, *, batch_size: int = 500) -> Score:
    """Run ``predict`` over ``x`` in batches; accuracy against ``y`` and parity with ``reference`` outputs.

    ``reference`` is the baseline model's output on the same ``x`` (e.g. Keras logits), so one
    call gives what a table row needs: accuracy on real labels, top-1 agreement, SQNR, max error.

    Taught in 07_tensorflow_and_tflite.
    """
    from optkit.core import verify

    if keras_flavour(predict) is not None:
        predict = keras_predict(predict)
    out = np.concatenate([np.asarray(predict(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
    acc = None if y is None else float((out.argmax(-1) == np.asarray(y)).mean())
    if reference is None:
        return Score(acc, n=len(x))
    p = verify.compare_outputs(np.asarray(reference), out)
    return Score(acc, p.top1_agreement, p.sqnr_db, p.max_abs, len(x))


def artifact_sizes(path: str | os.PathLike) -> tuple[int, int]:
    """``(bytes, gzipped bytes)`` of a model file or a whole folder (a SavedModel).

    The gzipped size shows what pruning and clustering buy: zeros and repeated values compress,
    dense float32 weights hardly do.

    Taught in 07_tensorflow_and_tflite.
    """
    import gzip

    p = Path(path).expanduser()
    if not p.exists():
        raise _missing("path", p, "file")
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    blob = b"".join(f.read_bytes() for f in files)
    return len(blob), len(gzip.compress(blob, compresslevel=9, mtime=0))


# --------------------------------------------------------------------------- SavedModel / loading
def _is_saved_model(path: Path) -> bool:
    from optkit.runtimes.formats import is_saved_model

    return is_saved_model(path)


def _missing(parameter: str, path: Path, what: str) -> OptkitError:
    hint = ""
    if path.parent.exists():
        near = sorted(q.name for q in path.parent.iterdir())[:8]
        hint = f" (the folder {str(path.parent)!r} holds: {', '.join(near) or 'nothing'})"
    return OptkitError(parameter, str(path), f"no such {what}{hint}",
                       "check the path; write one with optkit.runtimes.tflow.export_saved_model(model, path)"
                       if what == "SavedModel" else "check the path")


def _serving_signature(path: Path):
    tf = import_tensorflow()
    if not path.exists():
        raise _missing("path", path, "SavedModel")
    if not _is_saved_model(path):
        raise OptkitError("path", str(path), "is not a SavedModel folder (no saved_model.pb inside)",
                          "pass the folder written by optkit.runtimes.tflow.export_saved_model or model.export")
    with silenced():
        loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise OptkitError("path", str(path), f"has no 'serving_default' signature (it has {list(loaded.signatures)})",
                          "export it with optkit.runtimes.tflow.export_saved_model, which writes one")
    return loaded, loaded.signatures["serving_default"]


def load_keras(path: str | os.PathLike, *, keras2: bool = False):
    """Load a Keras model from ``.keras``, ``.h5``/``.hdf5`` or a SavedModel folder (without compiling it).

    ``keras2=True`` loads a ``.h5`` with ``tf_keras`` (what tensorflow-model-optimization needs).
    A SavedModel folder becomes a Keras 3 model around ``keras.layers.TFSMLayer`` calling its
    ``serving_default`` signature (inference only). A missing path raises :class:`OptkitError`.

    Taught in 07_tensorflow_and_tflite.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise _missing("path", p, "SavedModel" if not p.suffix else "file")
    if p.is_dir():
        if keras2:
            raise OptkitError("keras2", True, "a SavedModel folder loads as a Keras 3 TFSMLayer, not as Keras 2",
                              "save the Keras 2 model as .h5 and load that with keras2=True")
        keras = _keras(False)
        _, sig = _serving_signature(p)
        (name, spec), = sig.structured_input_signature[1].items()
        outputs = list(sig.structured_outputs)
        inp = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, name=name)
        with silenced():
            layer = keras.layers.TFSMLayer(str(p), call_endpoint="serving_default")
        out = layer(inp)
        if isinstance(out, dict) and len(outputs) == 1:
            out = out[outputs[0]]
        return keras.Model(inp, out, name=p.name)
    suffix = p.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise OptkitError("path", str(p), f"has suffix {suffix!r}, not a Keras model file",
                          "pass a .keras, .h5/.hdf5 file or a SavedModel folder (.tflite files run with "
                          "optkit.runtimes.tflow.LiteRT)")
    if suffix == ".keras" and keras2:
        raise OptkitError("keras2", True, "a .keras file is Keras 3's format; tf_keras cannot read it",
                          "load it with keras2=False, then optkit.runtimes.tflow.to_keras2(model)")
    keras = _keras(keras2)
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.models.load_model(str(p), compile=False)


def _replace_dir(tmp: Path, path: Path, overwrite: bool) -> None:
    trash = None
    if path.exists():
        if not overwrite:
            raise OptkitError("path", str(path), "already exists", "pass overwrite=True to replace it, or choose a new name")
        trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.replace(path, trash / "old")
    os.replace(tmp, path)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def export_saved_model(model, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Export a Keras model (3 or 2) as a SavedModel folder with a ``serving_default`` signature.

    The signature takes a float batch of any size (dimension 0 is ``None``) and returns the
    model's output; TF Serving, :func:`saved_model_predict`, :func:`load_keras` and
    :func:`to_tflite` all read it. Written to a temporary folder beside ``path``, then moved into
    place, so a failed export leaves nothing half-written; an existing ``path`` is refused unless
    ``overwrite=True``. The "Saved artifact at ..." listing Keras prints is kept off stdout.

    Taught in 07_tensorflow_and_tflite.
    """
    tf = import_tensorflow()
    flavour = keras_flavour(model)
    if flavour is None:
        raise OptkitError("model", type(model).__name__, "is not a Keras model", "pass a keras or tf_keras model")
    path = check_destination(path, overwrite=overwrite)
    shape, dtype = _input_spec(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        target = tmp / "model"
        with silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if flavour == "keras3":
                model.export(str(target), format="tf_saved_model", verbose=False)
            else:
                spec = tf.TensorSpec((None,) + tuple(shape[1:]), dtype or tf.float32, name="inputs")
                serve = tf.function(lambda x: {"output_0": model(x, training=False)}, input_signature=[spec])
                tf.saved_model.save(model, str(target), signatures={"serving_default": serve})
        _replace_dir(target, path, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def saved_model_predict(path: str | os.PathLike, *, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Load a SavedModel and return numpy -> numpy through its ``serving_default`` signature.

    Batches of any size go through the signature in chunks of ``batch_size``; the (single)
    output comes back as a float32 array. A missing folder raises :class:`OptkitError`.

    Taught in 07_tensorflow_and_tflite.
    """
    tf = import_tensorflow()
    p = Path(path).expanduser()
    loaded, sig = _serving_signature(p)
    (name, spec), = sig.structured_input_signature[1].items()
    out_key = list(sig.structured_outputs)[0]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=spec.dtype.as_numpy_dtype)
        want = tuple(spec.shape)
        if x.ndim != len(want) or any(d is not None and d != g for d, g in zip(want[1:], x.shape[1:])):
            raise OptkitError("x", f"array of shape {x.shape}", f"does not fit the signature input {name} {want}",
                              "pass NHWC images (optkit.runtimes.tflow.nhwc(x))")
        outs = [sig(**{name: tf.constant(x[i:i + batch_size])})[out_key].numpy()
                for i in range(0, max(len(x), 1), batch_size)]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    predict.signature = sig
    predict.loaded = loaded  # keeps the variables alive
    predict.input_name = name
    return predict


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
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:  # pragma: no cover - ai-edge-litert is pinned in the tf extra
        tf = import_tensorflow()
        return tf.lite.Interpreter, "tf.lite (deprecated)"


class LiteRT:
    """Run a ``.tflite`` model with the LiteRT interpreter (``ai_edge_litert``) like a function.

    ``runner(x)`` takes a float batch of any size (the input is resized when the batch changes),
    quantizes it with the model's input scale and zero point if the input is int8/uint8, runs
    the interpreter and returns the first output as float32 (de-quantized if it is int8). Several
    inputs: ``runner(x1, x2)``. ``num_threads=None`` keeps LiteRT's default. For timing,
    ``bench.measure(lambda: runner(x))``.

    ``tf.lite.Interpreter`` does the same but warns that it is deprecated and will be removed;
    ``ai_edge_litert.interpreter.Interpreter`` is its replacement with the same API.

    Taught in 07_tensorflow_and_tflite.
    """

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None):
        p = Path(path).expanduser()
        if not p.exists():
            raise _missing("path", p, "file")
        if p.suffix.lower() != ".tflite":
            raise OptkitError("path", str(p), "is not a .tflite file", "convert it first with optkit.runtimes.tflow.to_tflite")
        if num_threads is not None:
            check_range("num_threads", num_threads, 1)
        cls, self.backend = _interpreter_class()
        self.path = p
        self.num_threads = num_threads
        with silenced(stdout=False), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.interpreter = cls(model_path=str(p), num_threads=num_threads)
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
    def size_bytes(self) -> int:
        return self.path.stat().st_size

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
                f"num_threads={self.num_threads}, {self.backend})")


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


# --------------------------------------------------------------------------- tfmot recipes
def _kernels(model) -> list[tuple[str, np.ndarray]]:
    out = []
    for layer in model.layers:
        for w in layer.weights:
            name = w.name if "/" in w.name else f"{layer.name}/{w.name}"
            if "kernel" in name and "quantize" not in name.lower():
                out.append((name, np.asarray(w)))
        if hasattr(layer, "layers"):  # nested models
            out += _kernels(layer)
    return out


@dataclass
class SparsityInfo:
    """Zeros in the kernels (conv and dense weight matrices) of a Keras model: total and per layer."""

    zeros: int
    total: int
    layers: dict = field(default_factory=dict)  # name -> (zeros, total)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def __repr__(self) -> str:
        rows = ", ".join(f"{k}: {100 * z / t:.1f}%" for k, (z, t) in self.layers.items())
        return f"SparsityInfo({100 * self.sparsity:.2f} % of {self.total:,} kernel weights are zero; {rows})"


def sparsity(model) -> SparsityInfo:
    """Fraction of exact zeros in every kernel of a Keras model (biases and BatchNorm not counted).

    Taught in 07_tensorflow_and_tflite.
    """
    layers = {name: (int((w == 0).sum()), int(w.size)) for name, w in _kernels(model)}
    return SparsityInfo(sum(z for z, _ in layers.values()), sum(t for _, t in layers.values()), layers)


def distinct_values(model) -> dict[str, int]:
    """Number of distinct values in each kernel of a Keras model (a clustered kernel holds at most k).

    Taught in 07_tensorflow_and_tflite.
    """
    return {name: int(np.unique(w).size) for name, w in _kernels(model)}


def pruning_schedule(target_sparsity: float, end_step: int, *, frequency: int | None = None,
                     begin_step: int = 0, initial_sparsity: float = 0.0):
    """A ``PolynomialDecay`` schedule that really reaches ``target_sparsity`` at ``end_step``.

    tfmot prunes only on steps where ``(step - begin_step) % frequency == 0``; its default
    ``frequency=100`` never fires past step 0 on a run shorter than 100 steps, so the model stays
    dense. ``frequency=None`` picks about ten pruning steps, and rounds ``end_step`` up to a
    multiple of it so the final step prunes to the target.

    Taught in 07_tensorflow_and_tflite.
    """
    check_range("target_sparsity", target_sparsity, 0.0, 1.0, high_open=True)
    check_range("end_step", end_step, 1)
    tfmot = import_tfmot()
    span = int(end_step) - int(begin_step)
    if span < 1:
        raise OptkitError("end_step", end_step, f"must come after begin_step={begin_step}", "raise end_step")
    if frequency is None:
        frequency = max(1, span // 10)
        span = -(-span // frequency) * frequency
    check_range("frequency", frequency, 1)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=float(initial_sparsity),
                                                final_sparsity=float(target_sparsity),
                                                begin_step=int(begin_step), end_step=int(begin_step) + span,
                                                frequency=int(frequency))


def _steps(n: int, batch_size: int) -> int:
    return -(-int(n) // int(batch_size))


def prune_model(model, x: np.ndarray, y: np.ndarray, *, target_sparsity: float = 0.8, epochs: int = 1,
                batch_size: int = 128, learning_rate: float = 1e-3, frequency: int | None = None,
                schedule=None, min_weights: int = 0, strip: bool = True, seed: int = 0):
    """Magnitude-prune a Keras 2 model to ``target_sparsity`` while fine-tuning it on ``(x, y)``.

    ``tfmot.sparsity.keras.prune_low_magnitude`` wraps each conv/dense layer with a mask; a
    ``PolynomialDecay`` schedule (:func:`pruning_schedule`) raises the sparsity from 0 to the
    target over the first 3/4 of the run, and the last quarter fine-tunes at the final sparsity.
    ``min_weights`` leaves layers with fewer kernel weights than that dense (a first conv with a
    few hundred weights is sensitive and saves nothing). ``strip=True`` returns
    ``strip_pruning``'s plain model (zeros in ordinary kernels; what you export). ``schedule``
    replaces the default schedule (e.g. to show tfmot's own defaults). The wrappers mutate the
    layers they wrap: pass a fresh model (or a clone), not one you still use elsewhere.

    Taught in 07_tensorflow_and_tflite.
    """
    require_keras2(model)
    tfmot = import_tfmot()
    total_steps = _steps(len(x), batch_size) * int(epochs)
    if schedule is None:
        end = max(1, (3 * total_steps) // 4)
        schedule = pruning_schedule(target_sparsity, end, frequency=frequency)
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if min_weights:
            k2 = _keras(True)

            def wrap(layer):
                kernel = getattr(layer, "kernel", None)
                if kernel is not None and int(np.prod(kernel.shape)) >= min_weights:
                    return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
                return layer

            wrapped = k2.models.clone_model(model, clone_function=wrap)  # reuses the layers, weights and all
        else:
            wrapped = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    fit(wrapped, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(wrapped) if strip else wrapped


def quantize_aware(model, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 128,
                   learning_rate: float = 1e-4, scheme: Any = None, seed: int = 0):
    """Quantization-aware training: fake-quantize a Keras 2 model (``quantize_model``) and fine-tune it.

    The returned model simulates int8 weights and activations in training, so the weights adapt
    to the rounding; convert it with ``to_tflite(qat, path, variant="int8")`` (no representative
    data needed: the ranges were learned). ``scheme`` is passed to ``quantize_apply`` (e.g. the
    prune-preserving scheme; see :func:`prune_preserving_qat`).

    Taught in 07_tensorflow_and_tflite.
    """
    require_keras2(model)
    tfmot = import_tfmot()
    q = tfmot.quantization.keras
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if scheme is None:
            qat = q.quantize_model(model)
        else:
            qat = q.quantize_apply(q.quantize_annotate_model(model), scheme)
    fit(qat, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    return qat


def prune_preserving_qat(pruned_model, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 128,
                         learning_rate: float = 1e-4, seed: int = 0):
    """QAT that keeps a pruned (stripped) Keras 2 model's zeros: ``Default8BitPrunePreserveQuantizeScheme``.

    Plain QAT would let the zeros regrow while it fine-tunes; this scheme masks them.

    Taught in 07_tensorflow_and_tflite.
    """
    tfmot = import_tfmot()
    return quantize_aware(pruned_model, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          scheme=tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(), seed=seed)


def cluster_model(model, x: np.ndarray, y: np.ndarray, *, n_clusters: int = 16, epochs: int = 1,
                  batch_size: int = 128, learning_rate: float = 1e-4, strip: bool = True, seed: int = 0):
    """Weight clustering (k-means weight sharing): each kernel keeps at most ``n_clusters`` distinct values.

    ``tfmot.clustering.keras.cluster_weights`` (k-means++ initial centroids) then a fine-tune that
    trains the centroids, then ``strip_clustering``. The file does not shrink by itself (still
    float32), but it compresses well, and a runtime with a palette format stores
    ``log2(n_clusters)``-bit indices. On a Keras 3 model tfmot's ``cluster_weights`` returns None
    without a word; this raises an :class:`OptkitError` instead.

    Taught in 07_tensorflow_and_tflite.
    """
    require_keras2(model)
    check_range("n_clusters", n_clusters, 2)
    tfmot = import_tfmot()
    c = tfmot.clustering.keras
    with silenced(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clustered = c.cluster_weights(model, number_of_clusters=int(n_clusters),
                                      cluster_centroids_init=c.CentroidInitialization.KMEANS_PLUS_PLUS)
    if clustered is None:  # pragma: no cover - require_keras2 catches the known case
        raise OptkitError("model", type(model).__name__, "cluster_weights returned None",
                          "pass a tf_keras model (optkit.runtimes.tflow.to_keras2)")
    fit(clustered, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    return c.strip_clustering(clustered) if strip else clustered
