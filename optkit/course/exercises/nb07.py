"""Checkers for notebook 07_tensorflow_and_tflite's exercises.

Like :mod:`optkit.course.exercises`: each ``check_*`` runs the learner's function on hand-made cases,
prints ``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong
answer. ``reference_*`` are solutions to compare with after trying. No TensorFlow needed.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from optkit.course.exercises import _report, _try

__all__ = [
    "reference_quantize_input",
    "check_quantize_input",
    "reference_polynomial_sparsity",
    "check_polynomial_sparsity",
]


def reference_quantize_input(x, scale: float, zero_point: int) -> np.ndarray:
    """Float input -> int8 the way TFLite does it: ``clip(round(x / scale) + zero_point, -128, 127)``."""
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def check_quantize_input(fn: Callable) -> bool:
    """Exercise 07.1: ``fn(x, scale, zero_point)`` turns float inputs into the int8 a full-int8 model expects."""
    cases = [
        (np.array([0.0, 1.0, 0.5, 0.25], dtype=np.float32), 1 / 255, -128),  # [0, 1] images, the usual calibration
        (np.array([[-1.0, 0.0], [0.999, 1.0]], dtype=np.float32), 2 / 255, 0),  # [-1, 1] inputs
        (np.array([0.0, 2.0, -3.0], dtype=np.float32), 1 / 255, -128),  # outside the calibrated range: clip
        (np.array([0.1, 0.3], dtype=np.float32), 0.2, 3),  # halves round to even, like np.rint
    ]
    for x, scale, zero in cases:
        got, err = _try(fn, x.copy(), scale, zero)
        label = f"x={x.tolist()}, scale={scale:.5g}, zero_point={zero}"
        if err:
            return _report(False, f"quantize_input({label}) {err}. Hint: q = round(x / scale) + zero_point")
        want = reference_quantize_input(x, scale, zero)
        got = np.asarray(got)
        if got.shape != want.shape:
            return _report(False, f"for {label} the shape is {got.shape}; expected {want.shape} (keep the input's shape)")
        if got.dtype != np.int8:
            return _report(False, f"for {label} the dtype is {got.dtype}; the model's input tensor is int8 "
                                  "(end with .astype(np.int8), after clipping)")
        if not np.array_equal(got, want):
            return _report(False, f"for {label} you returned {got.tolist()}; expected {want.tolist()}. Hint: divide "
                                  "by the scale, round, add the zero point, then clip to [-128, 127] before the cast "
                                  "(a cast without clipping wraps 200 around to -56)")
    return _report(True, f"{len(cases)} hand-made cases: scale and zero point applied, rounded and clipped to int8")


def reference_polynomial_sparsity(step: int, initial: float, final: float, begin: int, end: int,
                                  power: int = 3) -> float:
    """tfmot's ``PolynomialDecay`` target: ``final + (initial - final) * (1 - progress) ** power``."""
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** power


def check_polynomial_sparsity(fn: Callable) -> bool:
    """Exercise 07.2: ``fn(step, initial, final, begin, end, power=3)`` is the sparsity ``PolynomialDecay`` aims at."""
    cases = [(0, 0.0, 0.8, 0, 100), (50, 0.0, 0.8, 0, 100), (100, 0.0, 0.8, 0, 100), (150, 0.0, 0.8, 0, 100),
             (10, 0.2, 0.9, 20, 60), (40, 0.2, 0.9, 20, 60), (25, 0.0, 0.5, 0, 100)]
    for step, initial, final, begin, end in cases:
        got, err = _try(fn, step, initial, final, begin, end)
        label = f"step {step} of a schedule from {initial} at step {begin} to {final} at step {end}"
        if err:
            return _report(False, f"at {label} your function {err}. Hint: progress = (step - begin) / (end - begin)")
        want = reference_polynomial_sparsity(step, initial, final, begin, end)
        try:
            ok = abs(float(got) - want) < 1e-6
        except (TypeError, ValueError):
            ok = False
        if not ok:
            hint = ("clip progress to [0, 1]: before begin the sparsity is the initial one, after end the final one"
                    if step < begin or step > end else
                    "the sparsity rises fast at first and flattens near the end: final + (initial - final) * "
                    "(1 - progress) ** 3")
            return _report(False, f"at {label} you returned {got!r}; expected {want:.6f}. Hint: {hint}")
    return _report(True, f"{len(cases)} steps match tfmot's PolynomialDecay (before, during and after the ramp)")
