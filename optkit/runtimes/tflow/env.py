"""Quiet TensorFlow imports and the Keras 2 / Keras 3 choice.

Owns :func:`import_tensorflow` (TensorFlow's C++ log lines kept off stderr, thread count and GPU
memory growth set before the first op), :func:`environment_line`, :func:`import_tfmot`,
``silenced`` (re-exported from :mod:`optkit.core.quiet`), the private ``_keras(keras2)`` that
picks ``keras`` (Keras 3) or ``tf_keras`` (Keras 2), and the Keras flavour helpers
:func:`keras_flavour`, :func:`is_keras2`, :func:`require_keras2` and :func:`to_keras2`.

Importing this module does not import TensorFlow: every function imports it when called.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np

from optkit.core.errors import OptkitError, check_range
from optkit.core.quiet import silenced  # one silencer for the package

__all__ = ["import_tensorflow", "import_tfmot", "environment_line", "silenced", "keras_flavour", "is_keras2",
           "require_keras2", "to_keras2"]

_TF = None


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
