"""Checkers for the exercises of notebook 06_onnx_and_onnx_runtime.

Like :mod:`optkit.course.exercises`: each ``check_*`` runs the learner's code on hand-made cases, prints
``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong answer.
``reference_*`` are solutions to compare with after trying.

Taught in 06_onnx_and_onnx_runtime.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from optkit.course.exercises import _report, _try

__all__ = [
    "check_parity_metrics",
    "reference_parity_metrics",
    "check_calibration_reader",
    "reference_calibration_reader",
    "check_fake_quantize",
    "reference_fake_quantize",
]


# --------------------------------------------------------------------------- 1: parity metrics

def reference_parity_metrics(ref, test) -> tuple[float, float, float]:
    """``(max_abs, max_rel, top1)`` of two ``[batch, classes]`` arrays; ``max_rel`` is ``max_abs``
    over the largest ``|ref|`` (what :class:`optkit.core.verify.Parity` reports)."""
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    max_abs = float(np.max(np.abs(ref - test)))
    return max_abs, max_abs / float(np.max(np.abs(ref))), float(np.mean(ref.argmax(1) == test.argmax(1)))


def check_parity_metrics(fn: Callable) -> bool:
    """Exercise 06.1: ``fn(ref, test)`` returns ``(max_abs, max_rel, top1_agreement)``."""
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 5.0, 1.0], [2.0, 0.0, -4.0]])
    test = ref.copy()
    test[3, 1] = 3.0  # row 3's arg-max moves
    test[0, 0] = 1.5
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 10)).astype(np.float32)
    cases = [(ref, test), (ref, ref.copy()), (big, big + rng.normal(0, 1e-3, big.shape).astype(np.float32))]
    for r, t in cases:
        got, err = _try(fn, r, t)
        if err:
            return _report(False, f"parity_metrics {err}. Hint: np.abs(ref - test).max(); argmax over axis 1")
        want = reference_parity_metrics(r, t)
        try:
            ok = len(got) == 3 and all(abs(float(g) - w) <= 1e-6 * max(1.0, abs(w)) for g, w in zip(got, want))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            names = ("max_abs", "max_rel", "top1")
            return _report(False, f"on a {r.shape} case you returned {got!r}, expected "
                                  f"{dict(zip(names, (round(w, 6) for w in want)))}. Hint: max_rel divides max_abs by "
                                  "the largest |ref| (not element by element: that explodes near zero)")
    return _report(True, "max abs error, relative error and top-1 agreement match optkit.core.verify on 3 cases")


# --------------------------------------------------------------------------- 2: calibration reader

def reference_calibration_reader():
    """A ``CalibrationDataReader`` class over an array, in batches (the solution to exercise 06.2)."""
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        def __init__(self, x, batch_size, input_name):
            self.batches = [np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)
                            for i in range(0, len(x), batch_size)]
            self.input_name = input_name
            self.position = 0

        def get_next(self):
            if self.position >= len(self.batches):
                return None
            self.position += 1
            return {self.input_name: self.batches[self.position - 1]}

    return ArrayReader


def check_calibration_reader(cls) -> bool:
    """Exercise 06.2: ``cls(x, batch_size, input_name)`` is a CalibrationDataReader whose ``get_next``
    returns ``{input_name: batch}`` dicts covering ``x`` in order, then ``None``."""
    from onnxruntime.quantization import CalibrationDataReader

    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    reader, err = _try(cls, x, 4, "image")
    if err:
        return _report(False, f"building the reader {err}")
    if not isinstance(reader, CalibrationDataReader):
        return _report(False, "the reader must subclass onnxruntime.quantization.CalibrationDataReader "
                              "(quantize_static checks the type)")
    batches = []
    for _ in range(20):
        item, err = _try(reader.get_next)
        if err:
            return _report(False, f"get_next {err}")
        if item is None:
            break
        if not isinstance(item, dict) or list(item) != ["image"]:
            return _report(False, f"get_next returned {type(item).__name__} {item if not isinstance(item, dict) else list(item)}; "
                                  "expected a dict with the input's name as its only key")
        batches.append(np.asarray(item["image"]))
    else:
        return _report(False, "get_next never returned None: ORT would calibrate forever. Return None when done")
    if [len(b) for b in batches] != [4, 4, 2]:
        return _report(False, f"batch sizes {[len(b) for b in batches]}; expected [4, 4, 2] for 10 rows in batches of 4")
    if not np.array_equal(np.concatenate(batches), x) or any(b.dtype != np.float32 for b in batches):
        return _report(False, "the batches do not cover x in order as float32. Hint: x[i:i + batch_size]")
    if reader.get_next() is not None:
        return _report(False, "after the end, get_next must keep returning None")
    return _report(True, "3 batches (4, 4, 2 rows) as {'image': array}, then None")


# --------------------------------------------------------------------------- 3: fake quantization

def reference_fake_quantize(x, scale: float, zero_point: int):
    """QuantizeLinear (uint8: round half to even, saturate to 0..255) then DequantizeLinear."""
    q = np.clip(np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point, 0, 255)
    return ((q - zero_point) * np.float32(scale)).astype(np.float32)


def _ort_qdq(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """What ONNX Runtime computes for QuantizeLinear -> DequantizeLinear (uint8)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array(zero_point, np.uint8), "z")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def check_fake_quantize(fn: Callable) -> bool:
    """Exercise 06.3: ``fn(x, scale, zero_point)`` equals ONNX Runtime's QuantizeLinear ->
    DequantizeLinear pair (uint8) on hand-made values, ties and out-of-range values included."""
    x = np.array([-1.0, -0.02, 0.0, 0.01, 0.015, 0.025, 0.5, 1.0, 2.3, 3.0], np.float32)
    cases = [(x, 0.01, 128), (x, 0.02, 0), (x * 100, 0.5, 10)]
    for arr, scale, zp in cases:
        got, err = _try(fn, arr.copy(), scale, zp)
        if err:
            return _report(False, f"fake_quantize {err}. Hint: q = clip(round(x / s) + z, 0, 255); x_hat = (q - z) * s")
        want = _ort_qdq(arr, scale, zp)
        got = np.asarray(got, np.float32)
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-6):
            bad = int(np.argmax(np.abs(got - want))) if got.shape == want.shape else None
            where = f" (x={arr[bad]:g}: got {got[bad]:g}, ORT gives {want[bad]:g})" if bad is not None else ""
            return _report(False, f"with scale {scale}, zero point {zp} your values differ from ONNX Runtime's{where}. "
                                  "Hint: ONNX rounds halves to even (np.rint, not np.round(x + 0.5)) and saturates "
                                  "to 0..255 before dequantizing")
    return _report(True, "matches ONNX Runtime's QuantizeLinear -> DequantizeLinear on 3 cases (ties and clipping included)")
