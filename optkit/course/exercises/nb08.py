"""Checkers for the exercises of notebook 08_tensorrt (see :mod:`optkit.course.exercises`).

Taught in 08_tensorrt.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from optkit.course.exercises import _report, _try

__all__ = [
    "reference_profile_shapes",
    "check_profile_shapes",
    "reference_is_symmetric",
    "check_is_symmetric",
]


# --------------------------------------------------------------------------- 08.1: optimization profile

def reference_profile_shapes(input_shape, min_batch: int, opt_batch: int, max_batch: int):
    """The ``(min, opt, max)`` shapes of one input for ``IOptimizationProfile.set_shape``: dim 0
    (dynamic: a string or -1) replaced by each batch size, the other dimensions kept."""
    rest = tuple(int(d) for d in input_shape[1:])
    return tuple((b,) + rest for b in (min_batch, opt_batch, max_batch))


def check_profile_shapes(fn: Callable) -> bool:
    """Exercise 08.1: ``fn(input_shape, min_batch, opt_batch, max_batch)`` returns the three shapes."""
    cases = [(("batch", 1, 28, 28), 1, 8, 32), ((-1, 3, 224, 224), 1, 16, 64), (("N", 40), 2, 2, 4)]
    for args in cases:
        got, err = _try(fn, *args)
        if err:
            return _report(False, f"profile_shapes{args} {err}")
        want = reference_profile_shapes(*args)
        try:
            same = tuple(tuple(int(d) for d in shape) for shape in got) == want
        except (TypeError, ValueError):
            same = False
        if not same:
            return _report(False, f"profile_shapes{args} returned {got!r}, expected {want}. Hint: replace only "
                                  "dimension 0 by each batch size; every other dimension is fixed by the model")
    return _report(True, "min/opt/max shapes right for 3 inputs (image, ImageNet, tokens)")


# --------------------------------------------------------------------------- 08.2: symmetric Q/DQ

def reference_is_symmetric(path) -> bool:
    """True when every QuantizeLinear/DequantizeLinear zero point is an int8 zero (what TensorRT needs)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = init.get(node.input[2])
            if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
                return False
    return True


def _qdq_file(folder, name: str, zero_point: np.ndarray) -> str:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(zero_point, "z")]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    path = f"{folder}/{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def check_is_symmetric(fn: Callable) -> bool:
    """Exercise 08.2: ``fn(path)`` is True only for a Q/DQ model whose zero points are all int8 zeros."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        cases = [(_qdq_file(folder, "int8_zero", np.array(0, np.int8)), True, "int8 zero points"),
                 (_qdq_file(folder, "uint8_128", np.array(128, np.uint8)), False, "uint8 zero point 128"),
                 (_qdq_file(folder, "uint8_zero", np.array(0, np.uint8)), False, "uint8 zero point 0"),
                 (_qdq_file(folder, "int8_three", np.array(3, np.int8)), False, "int8 zero point 3")]
        for path, want, label in cases:
            got, err = _try(fn, path)
            if err:
                return _report(False, f"is_symmetric on a model with {label} {err}")
            if bool(got) is not want:
                hint = ("TensorRT takes int8 Q/DQ only: a uint8 zero point is refused even when it is 0"
                        if "uint8 zero point 0" in label else "compare every zero point initializer with 0")
                return _report(False, f"a model with {label}: you said {bool(got)}, expected {want}. Hint: {hint}")
    return _report(True, "symmetric int8 recognised; uint8 and non-zero zero points refused (4 cases)")
