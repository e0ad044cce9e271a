"""optkit optimize on models shaped like third-party exports: old opsets, dense-map outputs, files
sorted by class. The run never dies after doing the work; it says what it assumed."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optkit import optimize
from optkit.optimize.inputs import load_data
from optkit.optimize.inspection import inspect_model

FAST = dict(batch_sizes=[1, 8], time_budget_s=4.0, threads=1, log=None)


def _dense_map_model(path, opset: int = 11):
    """Conv -> ReLU -> Conv -> Sigmoid: a per-pixel probability map (no class scores), an unnamed
    batch dimension, opset 11 (before per-channel QDQ), as old detector exports are."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, .3, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, .3, (1, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c2"], ["prob"])]
    graph = helper.make_graph(nodes, "dense_map", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [None, 1, 16, 16])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def test_a_dense_map_model_at_opset_11_gets_a_report_and_per_channel_int8(tmp_path):
    model = _dense_map_model(tmp_path / "detector.onnx")
    opt = optimize.optimize(model, None, output_dir=tmp_path / "runs", recipes=["ort-int8-static"], **FAST)
    for name in ("results.json", "report.md", "report.html"):
        assert (opt.run_dir / name).is_file()
    static = next(c for c in opt.candidates if c.name == "ort-int8-static")
    assert static.config["per_channel"] is True  # converted to opset 13 first, and it says so
    assert any("opset 11" in n and "converted" in n for n in static.notes)
    converted = [p for p in (opt.run_dir / "artifacts").iterdir() if "opset13" in p.name]
    assert converted and max(o.version for o in onnx.load(str(converted[0])).opset_import if o.domain == "") == 13
    rec = json.loads((opt.run_dir / "results.json").read_text())["recommendation"]
    assert rec["name"] is not None


def test_a_same_speed_candidate_is_never_called_faster(tmp_path):
    model = _dense_map_model(tmp_path / "detector.onnx", opset=13)
    lines = []
    opt = optimize.optimize(model, None, output_dir=tmp_path / "runs", recipes=["ort-optimized"],
                            **{**FAST, "log": lines.append})
    said = [line for line in lines if "recommended" in line][-1]
    if opt.recommendation.name == "baseline":
        assert "faster than the baseline" not in said and "model as given" in said
    else:
        assert opt.recommendation.speedup > 1.05


def test_calibration_rows_are_drawn_at_random_from_a_sorted_file(tmp_path):
    model = _dense_map_model(tmp_path / "detector.onnx", opset=13)
    x = np.random.default_rng(0).random((64, 3, 16, 16), dtype=np.float32)
    y = np.repeat(np.arange(2), 32)  # sorted by class: the first 16 rows are all class 0
    np.savez(tmp_path / "data.npz", x=x, y=y)
    summary = inspect_model(model)
    data = load_data(tmp_path / "data.npz", summary)
    calib = data.labels[:data.n_calibration]
    assert 0 < data.n_calibration < 64 and set(calib) == {0, 1}
    assert any("drawn at random" in n for n in data.notes)
    again = load_data(tmp_path / "data.npz", summary)
    assert np.array_equal(again.labels, data.labels)  # a fixed seed: the same rows every run


def _sequence_model(path):
    """A text-line recognizer's shape: features [N, T, 16] -> per-position scores [N, T, 12]."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, .5, (16, 12)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["feat", "w"], ["scores"])], "recognizer",
                              [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", "T", 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "T", 12])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_sequence_model_is_judged_per_position_and_the_cli_takes_a_metric(tmp_path, monkeypatch, capsys):
    model = _sequence_model(tmp_path / "recognizer.onnx")
    opt = optimize.optimize(model, None, output_dir=tmp_path / "runs", recipes=["ort-int8-dynamic"], **FAST)
    kinds = {c.quality_kind for c in opt.checks.values()}
    assert kinds == {"sequence_agreement"}
    int8 = opt.checks.get("ort-int8-dynamic")
    assert int8 is not None and "exact_sequence_agreement" in int8.details
    (tmp_path / "seqmetric.py").write_text(
        "import numpy as np\ndef positions(outputs, labels):\n    return float(np.mean(outputs[0].argmax(-1) >= 0))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from optkit import cli

    code = cli.main(["optimize", str(model), "--output-dir", str(tmp_path / "cli"), "--recipes", "ort-optimized",
                     "--metric", "seqmetric:positions", "--time-budget-s", "4", "--threads", "1", "--batch-sizes", "1",
                     "8", "--quiet"])
    assert code == 0 and "recommended:" in capsys.readouterr().out


def _stateful_model(path):
    """An audio model's signature: features [N, 10, 16], a recurrent state [2, N, 16] (the batch on
    axis 1, 2 fixed on axis 0) and an int64 scalar; outputs a sequence and the next state."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, .3, (16, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], np.int64), "one"), numpy_helper.from_array(np.array([0], np.int64), "zero")]
    nodes = [helper.make_node("MatMul", ["feat", "w"], ["m"]),
             helper.make_node("ReduceSum", ["state", "zero"], ["s0"], keepdims=0),
             helper.make_node("Unsqueeze", ["s0", "one"], ["s1"]), helper.make_node("Add", ["m", "s1"], ["a"]),
             helper.make_node("Cast", ["rate"], ["ratef"], to=TensorProto.FLOAT), helper.make_node("Mul", ["a", "ratef"], ["b"]),
             helper.make_node("Tanh", ["b"], ["out"]), helper.make_node("Identity", ["state"], ["state_out"])]
    graph = helper.make_graph(nodes, "stateful", [
        helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 10, 16]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", 16]),
        helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10, 16]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "N", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_state_input_with_the_batch_on_axis_1_and_an_int64_scalar_run_without_data(tmp_path):
    from optkit.optimize.inputs import batch_axes, output_axes

    model = _stateful_model(tmp_path / "audio.onnx")
    summary = inspect_model(model)
    assert batch_axes(summary) == {"feat": 0, "state": 1, "rate": None}
    assert output_axes(summary) == [0, 1]
    data = load_data(None, summary)
    assert data.inputs["state"].shape[1:] == (2, 16) and data.constants["rate"].shape == ()
    feed = data.to_model(data.batch(3))
    assert feed["state"].shape == (2, 3, 16) and feed["feat"].shape == (3, 10, 16) and int(feed["rate"]) == 1
    assert any("axis 1" in n for n in data.notes) and any("rate" in n and "every call" in n for n in data.notes)
    opt = optimize.optimize(model, None, output_dir=tmp_path / "runs", recipes=["ort-optimized"], **FAST)
    assert (opt.run_dir / "report.md").is_file() and opt.checks["ort-optimized"].parity.max_abs == 0.0


def test_the_int8_search_repairs_a_failing_setting_and_lists_every_try(tmp_path):
    from optkit.optimize.recipes import registry
    from optkit.optimize.recipes.search import ort_int8_search
    from optkit.optimize.verification import Check

    model = _dense_map_model(tmp_path / "detector.onnx", opset=13)
    summary = inspect_model(model)
    data = load_data(None, summary)
    seen = []

    def judge(cand):  # min-max "loses quality"; percentile passes but is slow; entropy pays
        method = cand.config["method"]
        seen.append(method)
        ok = method != "minmax"
        return Check(cand.name, None, None, 0.99, "agreement", 1.0, ok, "" if ok else "too lossy"), \
            {"minmax": 2.0, "percentile": 1.01, "entropy": 1.5}.get(method, 1.0)

    ctx = registry.Context(summary=summary, data=data, artifacts=tmp_path / "art", threads=1, judge=judge)
    cand = ort_int8_search(ctx)
    tried = cand.config["search"]
    assert [r["setting"] for r in tried][:3] == ["U8S8, per-channel, min-max", "percentile calibration",
                                                 "entropy calibration"]
    assert cand.config["chosen"] == "entropy calibration" and cand.config["method"] == "entropy"
    assert [r["kept"] for r in tried[:3]] == [False, False, True]
    assert "quality" in tried[0]["why"] and "slower than entropy" in tried[1]["why"]
    assert seen[:3] == ["minmax", "percentile", "entropy"] and len(seen) == 3  # it stops once a setting pays
    nothing = registry.Context(summary=summary, data=data, artifacts=tmp_path / "art2", threads=1,
                               judge=lambda c: (Check(c.name, None, None, 0.5, "agreement", 50.0, False, "lossy"), 2.0))
    with pytest.raises(registry.RecipeSkipped, match="no int8 configuration met the quality budget"):
        ort_int8_search(nothing)


def test_an_unknown_batch_written_as_minus_one_and_sides_that_must_be_larger_than_16(tmp_path):
    """Old exporters write an unknown batch as -1; an image model may reject 16-pixel sides."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, .1, (4, 3, 20, 20)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),  # a 20x20 kernel: sides of 16 cannot run
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["scores"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "h", "w"])
    graph = helper.make_graph(nodes, "cls", [x], [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [-1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    path = tmp_path / "cls.onnx"
    onnx.save(model, str(path))
    assert inspect_model(path).inputs[0].shape[0] is None
    opt = optimize.optimize(path, None, output_dir=tmp_path / "runs", recipes=["ort-optimized"], **FAST)
    assert any("32 is the first size" in n for n in opt.data.notes)
    assert (opt.run_dir / "report.md").is_file()
