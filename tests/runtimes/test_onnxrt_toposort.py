"""ONNX Runtime's quantizer can write a node before the If that produces its input; ONNX Runtime
sorts on load but the ONNX checker refuses. optkit sorts such a file (counting what subgraphs read
from the outer scope) before checking it."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from optkit.runtimes.onnxrt.quantization import _sorted_if_needed


def _branch(name: str, op: str) -> onnx.GraphProto:
    # Each branch reads "scaled" from the outer scope: the If must come after the Mul producing it.
    return helper.make_graph([helper.make_node(op, ["scaled"], [f"{name}_out"])], name, [],
                             [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [None, 4])])


def test_a_node_before_the_if_it_reads_is_sorted_and_the_model_still_computes_the_same(tmp_path):
    nodes = [
        helper.make_node("Identity", ["branch_out"], ["y"]),  # reads the If's output: written too early
        helper.make_node("If", ["flag"], ["branch_out"], then_branch=_branch("then", "Relu"),
                         else_branch=_branch("else", "Neg")),
        helper.make_node("Mul", ["x", "x"], ["scaled"]),  # read by both branches from outside
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4]),
                                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "unsorted.onnx"
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path))
        raise AssertionError("the fixture should fail the checker")
    except onnx.checker.ValidationError as e:
        assert "topologically sorted" in str(e)

    _sorted_if_needed(path)
    onnx.checker.check_model(str(path))
    order = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert order == ["Mul", "If", "Identity"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x, "flag": np.array(False)})[0]
    np.testing.assert_array_equal(out, -(x * x))


def test_a_sorted_model_is_left_byte_for_byte_alone(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "ok.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    before = path.read_bytes()
    _sorted_if_needed(path)
    assert path.read_bytes() == before
