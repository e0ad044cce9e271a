"""Keras data, model building, training and scoring helpers.

Owns the array helpers (:func:`nhwc`, :func:`keras_arrays`, the ``tf.data`` :func:`pipeline`),
PNG files for the input-pipeline lesson (:func:`encode_png`, :func:`decode_png`, :func:`decode_png_batch`, the naive
:func:`python_batches`), the small Keras CNN (:func:`build_cnn`), quiet training (:func:`fit`), the
traced ``tf.function`` predictor with optional XLA (:func:`keras_predict`), scoring (:func:`accuracy`, :func:`score`,
:class:`Score`, :func:`op_error_reason`) and :func:`artifact_sizes`, plus the private
``_input_spec`` and ``_missing`` helpers the SavedModel and TFLite modules share.

Importing this module does not import TensorFlow.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from optkit.core.errors import OptkitError, check_range
from optkit.runtimes.tflow.env import _keras, import_tensorflow, is_keras2, keras_flavour

__all__ = ["nhwc", "keras_arrays", "pipeline", "encode_png", "decode_png", "decode_png_batch", "python_batches",
           "build_cnn", "fit", "keras_predict", "accuracy", "Score", "op_error_reason", "score", "artifact_sizes"]


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
             parallel: bool = True, batch_first: bool = False, shuffle: bool = False, seed: int = 0):
    """A ``tf.data`` pipeline over arrays: ``map_fn``, then cache, batch, prefetch.

    ``parallel`` maps with ``num_parallel_calls=AUTOTUNE``; ``cache`` keeps the mapped examples
    in memory after the first pass (so the map runs once, not every epoch); ``prefetch`` lets the
    next batch be prepared while the model runs on this one. Switch each off to measure it.

    ``batch_first`` batches *before* mapping, so ``map_fn`` runs once per batch and receives a
    whole batch (e.g. :func:`decode_png_batch`): ``tf.data`` pays a fixed cost for every call of a
    map function, which per example can exceed the work itself on small inputs. The order is then
    batch, map, cache, prefetch; shuffling is refused there together with ``cache`` (the cache
    would freeze the first pass's order).

    Taught in 07_tensorflow_and_tflite.
    """
    tf = import_tensorflow()
    check_range("batch_size", batch_size, 1)
    if batch_first and shuffle and cache:
        raise OptkitError("shuffle", shuffle, "cannot be combined with batch_first=True and cache=True: the cached "
                          "batches would keep the first pass's order", "pass cache=False, or batch_first=False")
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    calls = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if parallel else {}
    if batch_first:
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(int(batch_size))
        if map_fn is not None:
            ds = ds.map(map_fn, **calls)
        if cache:
            ds = ds.cache()
    else:
        if map_fn is not None:
            ds = ds.map(map_fn, **calls)
        if cache:
            ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(int(batch_size))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


def _pil_image():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib and torchvision
        raise OptkitError("Pillow", "not installed", "is needed to read and write PNG files",
                          "pip install pillow") from exc
    return Image


def encode_png(images: np.ndarray) -> list[bytes]:
    """NHWC images in [0, 1] (one or three channels) as PNG files in memory, one ``bytes`` each.

    What a data set looks like on disk: compressed 8-bit files that must be decoded before a model
    can use them. Values are rounded to 8 bits, so decoding gives the images back within 1/255.

    Taught in 07_tensorflow_and_tflite.
    """
    import io

    Image = _pil_image()
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise OptkitError("images", f"array of shape {x.shape}", "is not a batch of NHWC images with 1 or 3 channels",
                          "pass (N, H, W, C) images, e.g. optkit.runtimes.tflow.keras_arrays(dataset, 'test')[0]")
    pixels = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
    files = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
        files.append(buf.getvalue())
    return files


def decode_png(png, channels: int = 1):
    """TensorFlow ops that decode one PNG file and scale it to float32 in [0, 1] (HWC).

    The ``map_fn`` of :func:`pipeline` over :func:`encode_png` files: it runs in TensorFlow's C++
    runtime, so ``tf.data`` can parallelise it (AUTOTUNE) and overlap it with the model (prefetch).

    Taught in 07_tensorflow_and_tflite.
    """
    tf = import_tensorflow()
    return tf.cast(tf.io.decode_png(png, channels=channels), tf.float32) / 255.0


def decode_png_batch(pngs, channels: int = 1):
    """TensorFlow ops that decode a batch of same-sized PNG files and scale them to float32 in [0, 1] (NHWC).

    The ``map_fn`` of ``pipeline(..., batch_first=True)``: one call per batch. PNG decoding has
    no batched kernel, so the files are decoded in one ``tf.map_fn`` loop inside the graph, and
    the cast and scale run once on the whole batch. Every file must decode to the same shape.

    Taught in 07_tensorflow_and_tflite.
    """
    tf = import_tensorflow()
    images = tf.map_fn(lambda png: tf.io.decode_png(png, channels=channels), pngs, fn_output_signature=tf.uint8)
    return tf.cast(images, tf.float32) / 255.0


def python_batches(files: Sequence[bytes], batch_size: int = 256):
    """The naive input loop: decode PNG files one at a time in Python (PIL), scale, stack batches.

    A generator of float32 NHWC batches (the last one may be smaller), equal to what
    ``pipeline(files, map_fn=decode_png)`` yields. It is the baseline of the ``tf.data`` lesson:
    interpreter overhead for every image, and no overlap with the model.

    Taught in 07_tensorflow_and_tflite.
    """
    import io

    check_range("batch_size", batch_size, 1)
    Image = _pil_image()
    batch = []
    for png in files:
        img = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255.0
        batch.append(img[..., None] if img.ndim == 2 else img)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


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
    """Accuracy of a variant on real labels and its agreement with a reference model's outputs.

    ``hits`` holds the per-row correctness behind ``accuracy`` (``verify.correct``), so two
    variants scored on the same rows can be compared with ``verify.paired_difference``.
    """

    accuracy: float | None
    agreement: float | None = None  # top-1 agreement with the reference
    sqnr_db: float | None = None  # reference outputs vs these, in dB
    max_abs: float | None = None
    n: int = 0
    hits: np.ndarray | None = field(default=None, repr=False, compare=False)  # per-row correctness (labels given)

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
    hits = None if y is None else verify.correct(out, np.asarray(y))
    acc = None if hits is None else float(hits.mean())
    if reference is None:
        return Score(acc, n=len(x), hits=hits)
    p = verify.compare_outputs(np.asarray(reference), out)
    return Score(acc, p.top1_agreement, p.sqnr_db, p.max_abs, len(x), hits=hits)


def _missing(parameter: str, path: Path, what: str) -> OptkitError:
    hint = ""
    if path.parent.exists():
        near = sorted(q.name for q in path.parent.iterdir())[:8]
        hint = f" (the folder {str(path.parent)!r} holds: {', '.join(near) or 'nothing'})"
    return OptkitError(parameter, str(path), f"no such {what}{hint}",
                       "check the path; write one with optkit.runtimes.tflow.export_saved_model(model, path)"
                       if what == "SavedModel" else "check the path")


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
