"""Parity: does an optimized model still compute what the original computed?

Every recipe (quantize, prune, export, convert) produces a candidate that must be checked against
its source before it is timed. This module compares outputs:

- :func:`sqnr` - signal-to-quantization-noise ratio in dB, ``10 log10(sum ref^2 / sum (ref - test)^2)``
  (``inf`` when identical; each 6 dB is about one bit of precision kept);
- :func:`compare_outputs` - a :class:`Parity`: max and mean absolute error, max error relative to
  the reference's largest magnitude, SQNR and, for ``(batch, classes)`` outputs, top-1 agreement;
- :func:`check_parity` - the same, raising :class:`ParityError` (an ``AssertionError``) that names
  each failed criterion;
- :func:`compare_models` - run two models on the same inputs and compare.

Inputs may be torch tensors or numpy arrays, or lists/tuples of them for models with several
outputs (compared pair by pair, then pooled).

Taught in 01_pytorch_inference_essentials; used in every later notebook.
"""
from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from optkit.core.errors import OptkitError

__all__ = ["Parity", "ParityError", "sqnr", "compare_outputs", "check_parity", "judge_parity", "compare_models",
           "accuracy", "predict_all", "no_autograd", "correct", "accuracy_interval", "paired_difference",
           "Difference"]


class ParityError(AssertionError):
    """A candidate's outputs differ from the reference's by more than allowed.

    ``parity`` holds the :class:`Parity` that failed, ``failures`` one line per failed criterion.
    """

    def __init__(self, parity: "Parity", failures: list[str]):
        self.parity = parity
        self.failures = failures
        super().__init__("outputs differ: " + "; ".join(failures) + f" ({parity!r})")


@dataclass(frozen=True)
class Parity:
    """How far a candidate's outputs are from the reference's.

    ``max_abs``/``mean_abs``: largest and mean ``|ref - test|``. ``max_rel``: ``max_abs`` divided by
    the largest ``|ref|`` (an error relative to the output's scale; element-wise ratios explode
    where the reference is near zero). ``sqnr_db``: see :func:`sqnr`. ``top1_agreement``: share
    of rows whose arg-max over the last axis agrees (2-D outputs only, else ``None``). ``n``: rows
    compared (the first dimension of the first output).

    Taught in 01_pytorch_inference_essentials.
    """

    max_abs: float
    max_rel: float
    mean_abs: float
    sqnr_db: float
    top1_agreement: float | None
    n: int

    def __repr__(self) -> str:
        top1 = "n/a" if self.top1_agreement is None else f"{100 * self.top1_agreement:.2f} %"
        return (f"Parity(max_abs={self.max_abs:.3g}, max_rel={self.max_rel:.3g}, mean_abs={self.mean_abs:.3g}, "
                f"sqnr={self.sqnr_db:.1f} dB, top1={top1}, n={self.n:,})")

    def to_dict(self) -> dict:
        """Plain floats (``inf`` for identical outputs' SQNR), for records and JSON."""
        return asdict(self)


def _to_numpy(value: Any, name: str) -> np.ndarray:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_quantized:
            t = t.dequantize()
        if t.is_complex():
            raise OptkitError(name, "complex tensor", "cannot be compared", "compare real outputs")
        return t.to("cpu", torch.float64).numpy()
    if isinstance(value, (np.ndarray, np.generic, float, int)):
        arr = np.asarray(value)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise OptkitError(name, str(arr.dtype), "is not numeric", "pass numeric outputs")
        return arr.astype(np.float64)
    raise OptkitError(name, type(value).__name__, "is not a tensor or array",
                      "pass a torch.Tensor or numpy array (or a list of them for several outputs)")


def _pairs(ref: Any, test: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    multi = isinstance(ref, (list, tuple)), isinstance(test, (list, tuple))
    if multi[0] != multi[1]:
        raise OptkitError("test", type(test).__name__, f"is {'a list' if multi[1] else 'one output'} but ref is "
                          f"{'a list' if multi[0] else 'one output'}", "pass both as single outputs or both as lists")
    refs, tests = (list(ref), list(test)) if multi[0] else ([ref], [test])
    if len(refs) != len(tests):
        raise OptkitError("test", f"{len(tests)} outputs", f"ref has {len(refs)} outputs",
                          "compare the same outputs of both models, in the same order")
    if not refs:
        raise OptkitError("ref", ref, "holds no outputs", "pass at least one output")
    pairs = []
    for i, (r, t) in enumerate(zip(refs, tests)):
        label = "" if not multi[0] else f"[{i}]"
        r_arr, t_arr = _to_numpy(r, f"ref{label}"), _to_numpy(t, f"test{label}")
        if r_arr.shape != t_arr.shape:
            raise OptkitError(f"test{label}", f"shape {t_arr.shape}", f"differs from ref shape {r_arr.shape}",
                              "compare outputs of the same inputs (same batch size and layout)")
        pairs.append((r_arr, t_arr))
    return pairs


def _sqnr_from(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if math.isnan(noise) or math.isnan(signal):
        return math.nan
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def sqnr(ref, test) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum ref^2 / sum (ref - test)^2)``.

    ``inf`` for identical outputs. Rules of thumb for int8: above ~30 dB the arg-max rarely moves,
    below ~20 dB look closer. Lists of outputs are pooled (total signal over total noise).

    Taught in 01_pytorch_inference_essentials and 02_quantization.
    """
    pairs = _pairs(ref, test)
    signal = sum(float(np.sum(r * r)) for r, _ in pairs)
    noise = sum(float(np.sum((r - t) ** 2)) for r, t in pairs)
    return _sqnr_from(signal, noise)


def _top1(r: np.ndarray, t: np.ndarray) -> float | None:
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] < 2:
        return None
    return float(np.mean(np.argmax(r, axis=-1) == np.argmax(t, axis=-1)))


def compare_outputs(ref, test) -> Parity:
    """A :class:`Parity` of ``test`` against ``ref`` (tensors or arrays of the same shape).

    For lists of outputs: ``max_abs``/``max_rel`` are the worst pair's, ``mean_abs`` is over all
    elements, SQNR pools signal and noise, ``top1_agreement`` is the lowest of the 2-D pairs.

    Taught in 01_pytorch_inference_essentials.
    """
    pairs = _pairs(ref, test)
    max_abs, max_rel, abs_sum, count, signal, noise = 0.0, 0.0, 0.0, 0, 0.0, 0.0
    top1s = []
    for r, t in pairs:
        diff = np.abs(r - t)
        if diff.size:
            pair_max = float(np.max(diff))
            scale = float(np.max(np.abs(r)))
            pair_rel = pair_max / scale if scale > 0 else (0.0 if pair_max == 0 else math.inf)
            max_abs = pair_max if math.isnan(pair_max) else max(max_abs, pair_max)
            max_rel = pair_rel if math.isnan(pair_rel) else max(max_rel, pair_rel)
            abs_sum += float(np.sum(diff))
            count += diff.size
        signal += float(np.sum(r * r))
        noise += float(np.sum(diff * diff))
        top1 = _top1(r, t)
        if top1 is not None:
            top1s.append(top1)
    first = pairs[0][0]
    return Parity(max_abs=max_abs, max_rel=max_rel, mean_abs=abs_sum / count if count else 0.0,
                  sqnr_db=_sqnr_from(signal, noise), top1_agreement=min(top1s) if top1s else None,
                  n=int(first.shape[0]) if first.ndim else 1)


def check_parity(ref, test, atol: float = 1e-4, min_top1: float | None = 1.0,
                 min_sqnr_db: float | None = None) -> Parity:
    """Return the :class:`Parity` if ``test`` matches ``ref``, else raise :class:`ParityError`.

    Passes when ``max_abs <= atol``, top-1 agreement ``>= min_top1`` (checked only for 2-D
    outputs; ``None`` skips it) and SQNR ``>= min_sqnr_db`` (when given). For quantized models a
    fixed ``atol`` is too strict: pass ``atol=math.inf`` and judge by ``min_sqnr_db`` and
    ``min_top1``. NaN in the outputs always fails.

    Taught in 01_pytorch_inference_essentials.
    """
    return judge_parity(compare_outputs(ref, test), atol=atol, min_top1=min_top1, min_sqnr_db=min_sqnr_db)


def judge_parity(parity: Parity, atol: float = 1e-4, max_rel: float | None = None,
                 min_top1: float | None = 1.0, min_sqnr_db: float | None = None) -> Parity:
    """Return ``parity`` if it meets every given tolerance, else raise :class:`ParityError` listing each miss.

    The tolerances of :func:`check_parity`, plus ``max_rel`` (largest relative error), applied
    to a :class:`Parity` already computed (e.g. over batches by :func:`optkit.runtimes.onnxrt.verify`).

    Taught in 01_pytorch_inference_essentials.
    """
    failures = []
    if not parity.max_abs <= atol:  # written so that NaN fails
        failures.append(f"max_abs {parity.max_abs:.3g} > atol {atol:.3g}")
    if max_rel is not None and not parity.max_rel <= max_rel:
        failures.append(f"max_rel {parity.max_rel:.3g} > {max_rel:.3g}")
    if min_top1 is not None and parity.top1_agreement is not None and not parity.top1_agreement >= min_top1:
        failures.append(f"top-1 agreement {100 * parity.top1_agreement:.2f} % < {100 * min_top1:.2f} %")
    if min_sqnr_db is not None and not parity.sqnr_db >= min_sqnr_db:
        failures.append(f"SQNR {parity.sqnr_db:.1f} dB < {min_sqnr_db:.1f} dB")
    if failures:
        raise ParityError(parity, failures)
    return parity


def compare_models(ref_model: Callable, test_model: Callable, inputs: Any) -> Parity:
    """Run both models on ``inputs`` (a tensor, or a tuple of positional arguments) under
    ``torch.inference_mode`` and compare their outputs.

    Models are called as they are: put them in eval mode first. A model may return numpy arrays
    (an ONNX Runtime session wrapped in a function, say).

    Taught in 01_pytorch_inference_essentials.
    """
    import torch

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.inference_mode():
        ref_out = ref_model(*args)
        test_out = test_model(*args)
    return compare_outputs(ref_out, test_out)


# --------------------------------------------------------------------------- accuracy

@contextlib.contextmanager
def no_autograd() -> Iterator[None]:
    """``torch.inference_mode()`` if torch is already imported, else nothing (numpy-only runtimes)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    with torch.inference_mode():
        yield


def _as_outputs(out: Any) -> list:
    """A model's outputs as a list: one tensor/array, a tuple or list of them, or a dict (its values)."""
    if isinstance(out, Mapping):
        return list(out.values())
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def _rows(x: Any) -> int:
    if isinstance(x, Mapping):
        if not x:
            raise OptkitError("x", "{}", "has no inputs", "pass {input name: array}")
        lengths = {len(v) for v in x.values()}
        if len(lengths) != 1:
            raise OptkitError("x", {k: len(v) for k, v in x.items()}, "inputs have different numbers of rows",
                              "pass the same number of rows for every input")
        return lengths.pop()
    return len(x)


def _slice(x: Any, i: int, j: int) -> Any:
    return {k: v[i:j] for k, v in x.items()} if isinstance(x, Mapping) else x[i:j]


def predict_all(predict: Callable[[Any], Any], x: Any, *, batch_size: int = 256,
                convert: Callable[[Any], Any] | None = None, all_outputs: bool = False) -> Any:
    """Outputs of ``predict`` on all of ``x``, ``batch_size`` rows at a time, as numpy arrays.

    ``x`` is an array or tensor, or a dict ``{input name: array}`` for a model with several inputs
    (each is sliced alike). ``convert`` turns each slice into what ``predict`` takes
    (``torch.from_numpy`` for a PyTorch model fed numpy data). Returns the first output as one
    array, or with ``all_outputs=True`` a list with every output. A torch module still in
    training mode is refused: dropout and batch-norm statistics would change the answer (call
    ``model.eval()``).
    """
    if getattr(predict, "training", False) is True:
        raise OptkitError("predict", type(predict).__name__, "is in training mode",
                          "call model.eval() before evaluating it")
    n = _rows(x)
    if n == 0:
        raise OptkitError("x", "0 rows", "is empty", "pass at least one example")
    chunks: list[list[np.ndarray]] = []
    with no_autograd():
        for i in range(0, n, batch_size):
            xb = _slice(x, i, i + batch_size)
            outs = _as_outputs(predict(convert(xb) if convert is not None else xb))
            chunks.append([_to_numpy(o, "predict output").astype(np.float32) for o in outs])
    merged = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    return merged if all_outputs else merged[0]


def accuracy(outputs: Any, labels: Any) -> float:
    """Top-1 accuracy: the fraction of rows whose arg-max over the last axis equals the label.

    The one accuracy function: notebooks, ``models.evaluate``, the TensorFlow helpers and the
    capstone all count a correct answer this way. ``outputs`` are logits or probabilities
    (``[n, classes]``, a tensor or array); ``labels`` are class indices (``[n]``).

    Taught in 00_measure_first.
    """
    out = _to_numpy(outputs, "outputs")
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
    if out.ndim < 2 or out.shape[0] != y.shape[0]:
        raise OptkitError("outputs", f"shape {out.shape}", f"does not match {y.shape[0]} labels",
                          "pass one row of class scores per label")
    if out.shape[-1] < 2:  # arg-max over one column is always 0: a silent wrong answer
        raise OptkitError("outputs", f"shape {out.shape}", "holds one score per row, not one per class",
                          "pass two columns for a binary model, e.g. np.concatenate([-s, s], axis=1) for logits s")
    return float(np.mean(out.argmax(-1) == y))


def correct(outputs: Any, labels: Any) -> np.ndarray:
    """Per-row correctness (a boolean array): arg-max of ``outputs`` equals the label.

    What :func:`accuracy` averages; keep it to compare two models on the same rows with
    :func:`paired_difference`.
    """
    accuracy(outputs, labels)  # the same checks and messages
    out = _to_numpy(outputs, "outputs")
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
    return out.argmax(-1) == y


def _z(confidence: float) -> float:
    from statistics import NormalDist

    if not 0 < confidence < 1:
        raise OptkitError("confidence", confidence, "must be in (0, 1)", "pass e.g. 0.95")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def accuracy_interval(hits: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of an accuracy from per-row correctness ``hits``.

    With 400 test images an accuracy of 0.90 is only known to about ±3 points; say so beside it.

    Taught in 00_measure_first.
    """
    h = np.asarray(hits, dtype=bool).reshape(-1)
    n = h.size
    if n == 0:
        raise OptkitError("hits", "0 rows", "is empty", "pass one True/False per evaluated example")
    z, p = _z(confidence), float(h.mean())
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


class Difference(tuple):
    """``(diff, low, high, n)``: a paired accuracy difference with its confidence interval."""

    def __new__(cls, diff: float, low: float, high: float, n: int):
        return super().__new__(cls, (float(diff), float(low), float(high), int(n)))

    diff = property(lambda self: self[0])
    low = property(lambda self: self[1])
    high = property(lambda self: self[2])
    n = property(lambda self: self[3])

    @property
    def inside_noise(self) -> bool:
        """True when the interval contains 0: the data cannot tell the two apart."""
        return self.low <= 0.0 <= self.high

    def __repr__(self) -> str:
        return (f"Difference({self.diff * 100:+.2f} points, 95 % interval "
                f"[{self.low * 100:+.2f}, {self.high * 100:+.2f}] on {self.n:,} examples)")


def paired_difference(hits_a: Any, hits_b: Any, confidence: float = 0.95) -> Difference:
    """Accuracy of A minus accuracy of B on the same rows, with a paired confidence interval.

    ``hits_a`` and ``hits_b`` are per-row correctness (:func:`correct`) on the same examples. Only
    rows where the two disagree carry information, so the interval (normal approximation of the
    paired difference, as in McNemar's test) is far tighter than two separate intervals would
    suggest; it is exact enough for the hundreds to thousands of rows the notebooks use.

    Taught in 02_quantization.
    """
    a = np.asarray(hits_a, dtype=bool).reshape(-1)
    b = np.asarray(hits_b, dtype=bool).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise OptkitError("hits_b", f"{b.size} rows", f"does not pair with hits_a ({a.size} rows)",
                          "pass per-row correctness of both models on the same non-empty evaluation set")
    d = a.astype(np.float64) - b.astype(np.float64)
    n = d.size
    mean = float(d.mean())
    se = float(np.sqrt(max(float(d.var(ddof=1)) if n > 1 else 0.0, 0.0) / n)) if n > 1 else float("inf")
    half = _z(confidence) * se
    return Difference(mean, mean - half, mean + half, n)
