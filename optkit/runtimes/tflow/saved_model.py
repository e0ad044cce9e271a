"""SavedModel export, loading and the ``serving_default`` signature runner.

Owns :func:`load_keras` (``.keras``, ``.h5``/``.hdf5`` or a SavedModel folder),
:func:`export_saved_model` (written beside the target, then moved into place) and
:func:`saved_model_predict` (numpy in, numpy out through the signature), plus the private
``_serving_signature`` and ``_is_saved_model`` the TFLite converter reuses.

Importing this module does not import TensorFlow.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from optkit.core.errors import OptkitError, check_destination
from optkit.runtimes.tflow.env import _keras, import_tensorflow, keras_flavour, silenced
from optkit.runtimes.tflow.models import _input_spec, _missing

__all__ = ["load_keras", "export_saved_model", "saved_model_predict"]


def _is_saved_model(path: Path) -> bool:
    from optkit.runtimes.formats import is_saved_model

    return is_saved_model(path)


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
