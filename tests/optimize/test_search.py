"""The int8 search's new steps: ONNX Runtime's per-operator profile decides which operator types stay
in float, reduce-range is tried only where the CPU has no VNNI, and the report shows the table."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optkit import optimize
from optkit.optimize.inputs import load_data
from optkit.optimize.inspection import inspect_model
from optkit.optimize import reporting
from optkit.optimize.recipes import registry, search
from optkit.optimize.verification import Check


def _dense_map_model(path):
    """Conv -> Relu -> Conv -> Sigmoid, opset 13: a per-pixel map, Sigmoid a cheap operator."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, .3, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, .3, (1, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c2"], ["prob"])]
    graph = helper.make_graph(nodes, "dense_map", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [None, 1, 16, 16])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _context(tmp_path, judge, name="art"):
    model = _dense_map_model(tmp_path / "detector.onnx")
    summary = inspect_model(model)
    return registry.Context(summary=summary, data=load_data(None, summary), artifacts=tmp_path / name, threads=1,
                            judge=judge)


def _ok(cand, speed):
    return Check(cand.name, None, None, 0.99, "agreement", 1.0, True, ""), speed


def test_operator_types_slower_in_int8_are_kept_in_float_first_when_only_speed_is_lost(tmp_path, monkeypatch):
    table = [{"op": "Conv", "fp32_ms": 1.0, "int8_ms": 0.4, "slower": False},
             {"op": "Sigmoid", "fp32_ms": 0.01, "int8_ms": 0.09, "slower": True},
             {"op": "total", "fp32_ms": 1.01, "int8_ms": 0.49, "slower": False}]
    monkeypatch.setattr(search, "op_time_table", lambda src, qdq, feed, threads=1, runs=5: [dict(r) for r in table])
    seen = []

    def judge(cand):  # every setting keeps quality; only the one without int8 Sigmoid pays
        ops = cand.config.get("op_types")
        seen.append(ops)
        return _ok(cand, 1.6 if ops and "Sigmoid" not in ops else 1.0)

    cand = search.ort_int8_search(_context(tmp_path, judge))
    tried = cand.config["search"]
    assert tried[0]["eligible"] and not tried[0]["kept"]  # eligible, but not faster: speed is the problem
    assert tried[1]["setting"].startswith("Sigmoid kept in float") and tried[1]["kept"]
    assert cand.config["chosen"] == tried[1]["setting"] and len(seen) == 2  # it stops once a setting pays
    assert "Conv" in cand.config["op_types"] and "Sigmoid" not in cand.config["op_types"]
    decided = {r["op"]: r["decision"] for r in cand.config["op_times"]["rows"]}
    assert decided["Sigmoid"] == "kept in float" and decided["Conv"] == "int8" and decided["total"] == "-"
    kinds = {n.op_type for n in onnx.load(str(cand.artifact)).graph.node}
    assert "QuantizeLinear" in kinds  # Conv still int8


def test_the_real_profile_table_adds_up_and_skips_operators_fused_in_float(tmp_path):
    from optkit.runtimes import onnxrt as ox

    src = _dense_map_model(tmp_path / "m.onnx")
    feed = {"x": np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32)}
    qdq = ox.quantize_static(src, tmp_path / "m.int8.onnx", [feed])
    rows = search.op_time_table(src, qdq, feed, threads=1, runs=3)
    by_op = {r["op"]: r for r in rows}
    assert "Conv" in by_op and by_op["Conv"]["fp32_ms"] > 0 and by_op["Conv"]["int8_ms"] > 0
    for col in ("fp32_ms", "int8_ms"):
        assert by_op["total"][col] <= by_op["wall"][col] * 1.0001
    assert all(not r["slower"] for r in rows if r["fp32_ms"] == 0)  # fused away in float: not compared
    assert not any(r["op"] in ("QLinearConv", "FusedConv") for r in rows)  # named by the source operator


@pytest.mark.parametrize("vnni", [True, False])
def test_reduce_range_is_tried_only_without_vnni(tmp_path, monkeypatch, vnni):
    monkeypatch.setattr(search, "_cpu_has_vnni", lambda: vnni)
    monkeypatch.setattr(search, "op_time_table", lambda *a, **k: [])
    configs = []

    def judge(cand):  # min-max and the other calibrations lose quality; reduce-range repairs it
        configs.append(dict(cand.config))
        ok = bool(cand.config.get("reduce_range"))
        return Check(cand.name, None, None, 0.99, "agreement", 1.0, ok, "" if ok else "too lossy"), 1.5

    ctx = _context(tmp_path, judge)
    row = None
    try:
        cand = search.ort_int8_search(ctx)
        tried = cand.config["search"]
    except registry.RecipeSkipped as e:  # with VNNI nothing repairs quality here: every try is in the reason
        assert vnni and "reduce-range" in str(e) and "VNNI" in str(e)
        return
    row = next(r for r in tried if r["setting"].startswith("reduce-range"))
    assert not vnni and row["kept"] and row["reduce_range"] is True and cand.config["reduce_range"] is True
    assert [c.get("reduce_range", False) for c in configs] == [False, False, False, True]


def test_the_vnni_row_says_why_reduce_range_is_not_tried(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "_cpu_has_vnni", lambda: True)
    cand = search.ort_int8_search(_context(tmp_path, lambda c: _ok(c, 2.0)))
    row = next(r for r in cand.config["search"] if r["setting"].startswith("reduce-range"))
    assert not row["kept"] and row["why"].startswith("not tried") and "VNNI" in row["why"] and "int32" in row["why"]
    assert len([r for r in cand.config["search"] if "speedup" in r]) == 1  # the plain setting paid


def test_the_report_shows_every_try_and_the_per_operator_table(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "SPEEDUP_NEEDED", 1e9)  # nothing "pays": the search goes on to the profile
    model = _dense_map_model(tmp_path / "detector.onnx")
    opt = optimize.optimize(model, None, output_dir=tmp_path / "runs", recipes=["ort-int8-search"],
                            batch_sizes=[1, 8], time_budget_s=4.0, threads=1, log=None)
    cand = next(c for c in opt.candidates if c.recipe == "ort-int8-search")
    table = cand.config["op_times"]
    assert table["threads"] == 1 and {"Conv", "total", "wall"} <= {r["op"] for r in table["rows"]}
    md = (opt.run_dir / "report.md").read_text()
    assert "Per-operator time that decided" in md and "| Conv |" in md and "reduce-range" in md
    for row in cand.config["search"]:
        assert row["setting"] in md and ("speedup" not in row or row["why"] in md)
    saved = json.loads((opt.run_dir / "results.json").read_text())
    stored = next(c for c in saved["candidates"] if c["name"] == cand.name)
    assert stored["config"]["op_times"]["rows"][0]["op"] == table["rows"][0]["op"]
    assert "Per-operator time" in (opt.run_dir / "report.html").read_text()
    summary = reporting.search_summary(opt)  # what notebook 10 prints: the report's search section
    assert summary.startswith("## Configurations the search tried") and "| Conv |" in summary
    assert all(row["setting"] in summary for row in cand.config["search"])


def test_when_nothing_meets_the_budget_the_reason_gives_the_profile_and_the_worst_nodes(tmp_path):
    model = _dense_map_model(tmp_path / "detector.onnx")
    opt = optimize.optimize(model, None, output_dir=tmp_path / "runs", recipes=["ort-int8-search"], min_sqnr_db=199.0,
                            batch_sizes=[1, 8], time_budget_s=30.0, threads=1, log=None)
    outcome = next(o for o in opt.outcomes if o.recipe == "ort-int8-search")
    assert outcome.status == "skipped" and "no int8 configuration met the quality budget" in outcome.reason
    assert "ONNX Runtime's profile, ms per call fp32 -> int8" in outcome.reason and "Conv " in outcome.reason
    assert "lose most in plain int8 (SQNR)" in outcome.reason and " dB" in outcome.reason
    assert outcome.reason in reporting.search_summary(opt)
