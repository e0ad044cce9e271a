"""The capstone (optkit.optimize): model and data checks, recipes, verification, the rule, the run folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from optkit import optimize
from optkit.core.errors import OptkitError
from optkit.core.record import Record


# ----------------------------------------------------------------------------- tiny models, built by hand
def _onnx_model(path: Path, *, weights: bool = True, seed: int = 0, features: int = 16, classes: int = 4,
                batch: str | int = "batch") -> Path:
    """A 2-layer MLP classifier (x: float[batch, features] -> logits), or, with weights=False, a
    graph with nothing to quantize (Relu(x) * 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    if weights:
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])
        inits = [numpy_helper.from_array(rng.normal(0, 0.5, (features, 32)).astype(np.float32), "w1"),
                 numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "b1"),
                 numpy_helper.from_array(rng.normal(0, 0.5, (32, classes)).astype(np.float32), "w2"),
                 numpy_helper.from_array(np.zeros(classes, np.float32), "b2")]
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
                 helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
                 helper.make_node("Add", ["h3", "b2"], ["logits"])]
    else:
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", features])
        inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two")]
        nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture
def mlp(tmp_path):
    model = _onnx_model(tmp_path / "mlp.onnx")
    x = np.random.default_rng(1).random((96, 16), dtype=np.float32)
    y = _logits(model, x).argmax(1)
    y[:3] = (y[:3] + 1) % 4  # a few wrong labels, so accuracy is below 1
    np.savez(tmp_path / "data.npz", x=x, y=y)
    return model, tmp_path / "data.npz"


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


FAST = dict(batch_sizes=[1, 8], time_budget_s=4.0, threads=1, log=None)


# ----------------------------------------------------------------------------- formats and models
def test_missing_and_unsupported_models_are_clear_errors(tmp_path):
    with pytest.raises(OptkitError, match=r"^model_path=.*no such file"):
        optimize.inspect_model(tmp_path / "nope.onnx")
    (tmp_path / "model.txt").write_text("hello")
    with pytest.raises(OptkitError, match=r"model_path=.*has a format optkit optimize does not read \(\.txt\)"):
        optimize.inspect_model(tmp_path / "model.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptkitError, match="not a SavedModel"):
        optimize.detect_format(tmp_path / "empty")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(OptkitError, match=r"^model_path="):
        optimize.inspect_model(tmp_path / "broken.onnx")


def test_onnx_summary(mlp):
    s = optimize.inspect_model(mlp[0])
    assert s.format == "onnx" and [i.name for i in s.inputs] == ["x"] and s.inputs[0].shape == ("batch", 16)
    assert s.outputs[0].dtype == "float32" and s.params == 16 * 32 + 32 + 32 * 4 + 4
    assert s.op_counts == {"MatMul": 2, "Add": 2, "Relu": 1} and s.dynamic_dims == ["x[0]=batch", ]
    assert "inputs:  x: float32[batch, 16]" in s.describe()


def test_a_fixed_batch_is_the_only_batch_timed(tmp_path):
    model = _onnx_model(tmp_path / "b1.onnx", batch=1)
    opt = optimize.Optimization(model, output_dir=tmp_path / "out", recipes=[], **FAST)
    opt.inspect()
    assert opt.batch_sizes == [1] and "fixes its batch size at 1" in opt.notes[0]
    opt.load_data()
    assert opt.verify()["baseline"].ok


def test_pickled_module_refused_unless_allowed(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(OptkitError, match="allow_pickle=True"):
        optimize.inspect_model(tmp_path / "whole.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(OptkitError, match="state dict"):
        optimize.inspect_model(tmp_path / "weights.pt", allow_pickle=True)
    with pytest.raises(OptkitError, match="^data_path=None"):
        optimize.inspect_model(tmp_path / "whole.pt", allow_pickle=True)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 6), np.float32))
    s = optimize.inspect_model(tmp_path / "whole.pt", allow_pickle=True, data_path=tmp_path / "d.npz")
    assert s.format == "torch_export" and s.inputs[0].shape[1] == 6 and not isinstance(s.inputs[0].shape[0], int)


def _bag_program(path: Path) -> Path:
    """A torch.export program: token ids -> embedding (50 rows) -> mean -> linear 512 -> 2 logits."""
    import torch

    from optkit.runtimes.model_files import save_program

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 16)
            self.fc = torch.nn.Linear(16, 512)
            self.out = torch.nn.Linear(512, 2)

        def forward(self, ids):
            return self.out(torch.relu(self.fc(self.emb(ids).mean(1))))

    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(Bag().eval(), (torch.zeros(2, 5, dtype=torch.long),), dynamic_shapes=({0: batch},))
    return save_program(ep, path)


def test_torch_program_baseline_and_generated_ids(tmp_path):
    opt = optimize.Optimization(_bag_program(tmp_path / "bag.pt2"), recipes=[], output_dir=tmp_path / "out", **FAST)
    s = opt.inspect()
    assert s.format == "torch_export" and s.inputs[0].dtype == "int64" and s.int_ranges == {"ids": 50}
    data = opt.load_data()
    assert data.source == "generated" and data.inputs["ids"].max() < 50
    opt.verify()
    assert opt.checks["baseline"].ok and opt.checks["baseline"].quality_kind == "agreement"


# ----------------------------------------------------------------------------- data checks
def test_data_checks_name_the_array_and_the_problem(mlp, tmp_path):
    summary = optimize.inspect_model(mlp[0])
    cases = [
        ({"x": np.zeros((5, 15), np.float32)}, r"dimension 1 is 15, the model fixes it at 16"),
        ({"x": np.zeros(16, np.float32)}, r"rank 1, the model expects rank 2"),
        ({"x": np.zeros((5, 16), np.uint8)}, r"integer data for a float input"),
        ({"x": np.zeros((5, 16), np.float32), "y": np.zeros(4, np.int64)}, r"5 examples: labels of the wrong length"),
        ({"x": np.zeros((5, 16), np.float32), "y": np.full(5, 7)}, r"has 4 classes"),
        ({"a": np.zeros((5, 16), np.float32), "b": np.zeros((5, 16), np.float32)}, r"one input 'x' and the file several"),
        ({"y": np.zeros(5, np.int64)}, r"holds only labels"),
    ]
    for i, (arrays, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.npz"
        np.savez(path, **arrays)
        with pytest.raises(OptkitError, match=message) as err:
            optimize.load_data(path, summary)
        assert str(err.value).startswith("data_path=")
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(OptkitError, match="not an .npz"):
        optimize.load_data(tmp_path / "d.csv", summary)


def test_nchw_data_for_an_nhwc_model_gets_a_hint(tmp_path):
    from optkit.runtimes.onnxrt import TensorSpec

    summary = optimize.ModelSummary(path=tmp_path / "m.keras", format="keras", size_bytes=1,
                                    inputs=[TensorSpec("image", ("batch", 28, 28, 1), "float32")],
                                    outputs=[TensorSpec("out", ("batch", 10), "float32")])
    np.savez(tmp_path / "nchw.npz", x=np.zeros((3, 1, 28, 28), np.float32))
    with pytest.raises(OptkitError, match="NCHW vs NHWC"):
        optimize.load_data(tmp_path / "nchw.npz", summary)


def test_data_split_calibration_apart_from_evaluation(mlp):
    summary = optimize.inspect_model(mlp[0])
    data = optimize.load_data(mlp[1], summary)
    assert data.n == 96 and data.n_calibration == 24 and data.n_eval == 72
    batches = data.calibration(batch_size=10)  # equal batches: 24 rows -> 3 x 8
    assert [len(b["x"]) for b in batches] == [8, 8, 8]
    cal = np.concatenate([b["x"] for b in batches])
    assert np.array_equal(cal, data.inputs["x"][:24])
    assert np.array_equal(data.eval_inputs()["x"], data.inputs["x"][24:]) and len(data.eval_labels()) == 72
    assert data.batch(200)["x"].shape == (200, 16)  # a small sample is repeated for timing


def test_parameters_are_checked():
    for kw, message in [({"batch_sizes": [0]}, "batch_sizes"), ({"max_accuracy_drop": -1}, "max_accuracy_drop"),
                        ({"runtimes": ["cuda"]}, "runtimes"), ({"recipes": ["no-such-recipe"]}, "recipes"),
                        ({"time_budget_s": 0}, "time_budget_s"), ({"threads": 0}, "threads"),
                        ({"run_name": "a/b"}, "run_name")]:
        with pytest.raises(OptkitError, match=f"^{message}="):
            optimize.Optimization("x.onnx", **kw)


# ----------------------------------------------------------------------------- the rule
def _r(name, bs, ms, size, ok):
    return Record(name=name, batch_size=bs, latency_ms=ms, size_bytes=size, extra={"eligible": ok})


def test_recommend_rule():
    recs = [_r("baseline", 32, 10.0, 400, True), _r("int4", 32, 2.0, 50, False), _r("int8", 32, 5.0, 100, True),
            _r("fp16", 32, 4.9, 200, True), _r("baseline", 1, 1.0, 400, True), _r("int8", 1, 3.0, 100, True)]
    assert optimize.recommend(recs) == "int8"  # 5.0 is within 5 % of 4.9 and smaller
    assert optimize.recommend(recs, tie=0.0) == "fp16"
    assert optimize.recommend(recs, batch_size=1) == "baseline"
    assert optimize.recommend([_r("a", 32, 1.0, 1, False)]) is None
    assert optimize.recommend([_r("baseline", 32, 10.0, 400, True), _r("threads", 32, 9.7, 400, True)]) == "baseline"
    assert optimize.recommend([_r("baseline", 32, 10.0, 400, True), _r("threads", 32, 9.0, 400, True)]) == "threads"
    assert optimize.recommend([]) is None
    # a same-speed candidate never replaces the model as given, even when smaller (issue 17: "0.97x faster")
    assert optimize.recommend([_r("baseline", 32, 10.0, 400, True), _r("ort", 32, 10.3, 100, True)]) == "baseline"
    assert optimize.recommend([_r("baseline", 32, 10.0, 400, True), _r("ort", 32, 9.6, 100, True)]) == "baseline"


# ----------------------------------------------------------------------------- whole runs
def test_run_writes_a_fresh_folder_and_never_touches_the_input(mlp, tmp_path):
    model, data = mlp
    before = (_digest(model), _digest(data))
    out = tmp_path / "runs"
    opt = optimize.optimize(model, data, output_dir=out, recipes=["ort-int8-dynamic", "ort-int8-static"], **FAST)
    run1 = opt.run_dir
    assert run1.parent == out and (out / "latest").read_text().strip() == run1.name
    for name in ("results.json", "report.md", "report.html", "pareto.png"):
        assert (run1 / name).is_file()
    arts = sorted(p.name for p in (run1 / "artifacts").iterdir())
    assert arts == ["model.int8-dynamic.onnx", "model.int8-static-qdq.onnx"]
    results = json.loads((run1 / "results.json").read_text())
    assert results["format"] == optimize.RESULTS_FORMAT and results["environment"]["cpu"]
    names = {(r["name"], r["batch_size"]) for r in results["records"]}
    assert names == {(n, b) for n in ("baseline", "ort-int8-dynamic", "ort-int8-static") for b in (1, 8)}
    base = next(r for r in results["records"] if r["name"] == "baseline")
    assert base["accuracy"] == pytest.approx(1 - 3 / 96, abs=0.05) and base["env"]["cpu"]
    rec = results["recommendation"]
    assert rec["name"] in {"baseline", "ort-int8-dynamic", "ort-int8-static"} and rec["reason"]
    assert rec["name"] == optimize.recommend(opt.records)
    for chk in results["checks"].values():  # int8 of a small MLP stays close to fp32
        assert chk["parity"]["top1_agreement"] >= 0.9 and (chk["parity"]["sqnr_db"] or 99) > 15
    assert {c["name"]: c["precision"] for c in results["candidates"]} == {
        "baseline": "fp32", "ort-int8-dynamic": "int8-dynamic", "ort-int8-static": "int8"}
    assert {r["workload"] for r in results["records"]} == {results["workload"]} == {"mlp.onnx · data.npz (72 rows)"}
    md = (run1 / "report.md").read_text()
    assert "## Recommendation" in md and "| ort-int8-static |" in md and "![Pareto" in md
    assert "data:image/png;base64," in (run1 / "report.html").read_text()
    assert opt.table().loc["baseline", "speedup"] == pytest.approx(1.0)

    snapshot = _digest(run1 / "results.json")
    opt2 = optimize.optimize(model, data, output_dir=out, recipes=["ort-int8-dynamic"], **FAST)
    assert opt2.run_dir != run1 and (out / "latest").read_text().strip() == opt2.run_dir.name
    assert _digest(run1 / "results.json") == snapshot  # the first run is untouched
    assert (_digest(model), _digest(data)) == before


def test_a_model_that_fails_every_int8_recipe(tmp_path):
    model = _onnx_model(tmp_path / "no_weights.onnx", weights=False)
    before = _digest(model)
    opt = optimize.optimize(model, None, output_dir=tmp_path / "out", runtimes=["onnxruntime"], **FAST)
    why = {o.recipe: (o.status, o.reason) for o in opt.outcomes}
    for name in ("ort-int8-dynamic", "ort-int8-static"):
        assert why[name][0] == "skipped" and why[name][1].startswith("nothing to quantize")
        assert "Relu" in why[name][1] and "\n" not in why[name][1]
    assert opt.recommendation.name is not None and (opt.run_dir / "report.md").exists()
    assert "nothing to quantize" in (opt.run_dir / "report.md").read_text()
    assert "No data was given" in opt.recommendation.reason
    assert _digest(model) == before


def test_without_labels_quality_is_agreement(mlp, tmp_path):
    model, data = mlp
    np.savez(tmp_path / "unlabelled.npz", x=np.load(data)["x"])
    opt = optimize.Optimization(model, tmp_path / "unlabelled.npz", output_dir=tmp_path / "out",
                                recipes=["ort-int8-dynamic"], **FAST)
    opt.try_recipes()
    checks = opt.verify()
    assert checks["baseline"].quality_kind == "agreement" and checks["baseline"].quality == 1.0
    assert checks["ort-int8-dynamic"].accuracy is None
    assert checks["ort-int8-dynamic"].drop_points == pytest.approx(100 * (1 - checks["ort-int8-dynamic"].quality))


def test_custom_recipes_register_and_failures_do_not_stop_the_others(mlp, tmp_path):
    from optkit.optimize import recipes as R

    def broken(ctx):
        raise RuntimeError("something inside the recipe went wrong\nsecond line")

    def same_model(ctx):
        return R.ort_candidate(ctx, "again", "test-again", "fp32 again", Path(ctx.summary.path), artifact=False)

    with pytest.raises(OptkitError, match="^runtime="):
        optimize.Recipe("x", ("onnx",), "cuda", "t", broken)
    with pytest.raises(OptkitError, match="^formats="):
        optimize.Recipe("x", ("caffe",), "onnxruntime", "t", broken)
    with pytest.raises(OptkitError, match="^name="):
        optimize.Recipe("has space", ("onnx",), "onnxruntime", "t", broken)
    optimize.register(optimize.Recipe("test-broken", ("onnx",), "onnxruntime", "t", broken))
    optimize.register(optimize.Recipe("test-again", ("onnx",), "onnxruntime", "t", same_model))
    try:
        with pytest.raises(OptkitError, match="already registered"):
            optimize.register(optimize.Recipe("test-again", ("onnx",), "onnxruntime", "t", same_model))
        opt = optimize.Optimization(mlp[0], mlp[1], output_dir=tmp_path / "out",
                                    recipes=["test-broken", "test-again"], **FAST)
        assert [r.name for r in opt.applicable_recipes()] == ["test-broken", "test-again"]
        opt.try_recipes()
        failed = {o.recipe: o for o in opt.outcomes}
        assert failed["test-broken"].status == "failed"
        assert failed["test-broken"].reason == "RuntimeError: something inside the recipe went wrong"
        assert [c.name for c in opt.candidates] == ["again"]
        assert opt.verify()["again"].parity.max_abs == 0.0
    finally:
        optimize.unregister("test-broken")
        optimize.unregister("test-again")


# ----------------------------------------------------------------------------- one variant type, one measurement path
def test_candidates_are_variants_measured_through_evaluate(mlp, tmp_path, monkeypatch):
    from optkit.core import variant

    calls = []
    real = variant.evaluate
    monkeypatch.setattr(variant, "evaluate", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    opt = optimize.Optimization(*mlp, output_dir=tmp_path / "out", recipes=["ort-int8-dynamic", "ort-int8-static"],
                                **FAST)
    opt.try_recipes()
    checks = opt.verify()
    by_name = {c.name: c for c in [opt.baseline, *opt.candidates]}
    assert all(isinstance(c, variant.Variant) for c in by_name.values())
    assert {n: c.precision for n, c in by_name.items()} == {
        "baseline": "fp32", "ort-int8-dynamic": "int8-dynamic", "ort-int8-static": "int8"}
    static = by_name["ort-int8-static"]
    assert static.run is static.predict and static.info is static.config and static.config["per_channel"] is True
    assert opt.workload.task == "classification" and str(opt.workload) == "mlp.onnx · data.npz (72 rows)"

    tables = opt.benchmark()
    assert len(calls) == 1 and calls[0]["reference"] == "baseline" and sorted(calls[0]["inputs"]) == [1, 8]
    assert sorted(tables) == [1, 8] and tables[8].loc["baseline", "speedup"] == pytest.approx(1.0)
    assert {(r.name, r.batch_size) for r in opt.records} == {(n, b) for n in by_name for b in (1, 8)}
    for r in opt.records:  # evaluate measured what verification decided on: the same accuracy and parity
        chk = checks[r.name]
        assert r.workload == str(opt.workload) and r.extra["eligible"] == chk.ok
        assert r.accuracy == pytest.approx(chk.accuracy) and r.accuracy == r.extra["quality"]
        assert r.parity["top1_agreement"] == pytest.approx(chk.parity.top1_agreement)
        assert r.extra["precision"] == by_name[r.name].precision and r.extra["info"] == r.extra["config"]
        assert r.extra["reference"] == "baseline" and r.params == opt.summary.params


def test_a_recipe_written_for_0_1_still_works_with_a_warning(mlp, tmp_path):
    from optkit.optimize import recipes as R
    from optkit.runtimes import onnxrt as ox

    def old_style(ctx):  # 0.1: run= and info=, no precision
        runner = ox.Runner(ctx.summary.path, threads=1)
        return R.Candidate(name="old", recipe="test-old", technique="fp32 again", runtime="onnxruntime",
                           run=lambda feed: runner.run_all(feed), info={"threads": 1})

    optimize.register(optimize.Recipe("test-old", ("onnx",), "onnxruntime", "fp32 again", old_style))
    try:
        opt = optimize.Optimization(*mlp, output_dir=tmp_path / "out", recipes=["test-old"], **FAST)
        with pytest.warns(DeprecationWarning, match=r"run= \(now predict=\); info= \(now config=\)"):
            opt.try_recipes()
        cand = opt.candidates[0]
        assert cand.precision == "fp32" and cand.config == {"threads": 1} and cand.run is cand.predict
        opt.verify()
        opt.benchmark()
        assert opt.recommend().name in {"baseline", "old"} and opt.checks["old"].parity.max_abs == 0.0
    finally:
        optimize.unregister("test-old")

    def fn(feed):
        return [feed["x"]]

    with pytest.warns(DeprecationWarning, match="positional arguments in the 0.1 order"):
        c = R.Candidate("pos", "my-recipe", "t", "onnxruntime", fn, None, 123, 1.5, "one note", {"k": 1})
    assert (c.predict, c.recipe, c.size_bytes, c.build_s, c.notes, c.config) == (fn, "my-recipe", 123, 1.5,
                                                                                  ["one note"], {"k": 1})
    with pytest.raises(OptkitError, match="^run="):
        R.Candidate("x", fn, run=fn)
    with pytest.raises(OptkitError, match="^precision="):
        R.Candidate("x", fn, precision="int3")


def test_evaluation_keeps_the_timed_shapes_and_binary_scores_count_like_predictions():
    from optkit.core import verify
    from optkit.optimize.verification import class_scores, outputs

    seen = []

    def model(feed):
        seen.append(len(feed["x"]))
        return [feed["x"].sum(1, keepdims=True) - 1.0, feed["x"][:, :2]]

    x = np.random.default_rng(0).random((21, 3), dtype=np.float32)
    outs = outputs(model, {"x": x}, 8, [1, 8])  # 8 + 8 + 5 rows: the 5 are padded to a timed shape
    assert seen == [8, 8, 8] and [o.shape for o in outs] == [(21, 1), (21, 2)]
    assert np.allclose(outs[0][:, 0], x.sum(1) - 1.0) and np.allclose(outs[1], x[:, :2])
    seen.clear()
    outputs(model, {"x": x[:17]}, 8, [1, 8])
    assert seen == [8, 8, 1]  # a short chunk of a timed size goes through as it is
    y = np.random.default_rng(1).integers(0, 2, 21)
    for out in (outs[0], outs[0][:, 0], 1 / (1 + np.exp(-outs[0])), outs[1]):
        assert verify.accuracy(class_scores(out), y) == np.mean(optimize.predictions(out) == y)
    assert class_scores(np.zeros((4, 2, 2))) is None


def test_reference_files_are_bundled():
    for name in optimize.REFERENCE_FILES:
        assert (optimize.REFERENCE_DIR / name).is_file(), f"{name} missing: run python -m optkit.optimize --make-reference"
    manifest = json.loads((optimize.REFERENCE_DIR / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        assert _digest(optimize.REFERENCE_DIR / name) == entry["sha256"], f"{name} differs from manifest.json"
    total = sum((optimize.REFERENCE_DIR / n).stat().st_size for n in optimize.REFERENCE_FILES)
    assert total < 5_000_000
    s = optimize.inspect_model(optimize.REFERENCE_MODEL)
    d = optimize.load_data(optimize.REFERENCE_DATA, s)
    assert d.labels is not None and d.n == 600 and s.inputs[0].shape[1:] == (1, 28, 28)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' own np.array(tensor, copy=False) call
def test_keras_model_to_tflite(tmp_path):
    from optkit.runtimes import tflow as otf
    from optkit.runtimes.tflow.env import _keras

    keras = _keras(False)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3)])
    with otf.silenced():
        model.save(str(tmp_path / "tiny.keras"))
    x = np.random.default_rng(0).random((40, 8), dtype=np.float32)
    y = otf.keras_predict(model)(x).argmax(1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    opt = optimize.optimize(tmp_path / "tiny.keras", tmp_path / "d.npz", output_dir=tmp_path / "out",
                            recipes=["tflite-float32", "tflite-int8"], **{**FAST, "time_budget_s": 60.0})
    assert opt.summary.format == "keras" and opt.summary.op_counts == {"Dense": 2}
    assert {c.name for c in opt.candidates} == {"tflite-float32", "tflite-int8"}, opt.outcomes
    assert opt.checks["tflite-float32"].parity.max_abs < 1e-4 and opt.checks["baseline"].accuracy == 1.0
    assert (opt.run_dir / "artifacts" / "model.int8.tflite").is_file()


def test_exercise_checkers(mlp, tmp_path, capsys):
    from optkit.course.exercises import nb10 as ex
    from optkit.runtimes import onnxrt as ox
    from optkit.optimize import recipes as R

    def stub(*args):
        raise NotImplementedError

    assert ex.check_pick(ex.reference_pick) and not ex.check_pick(stub)
    assert not ex.check_pick(lambda records, bs: min(records, key=lambda r: r.latency_ms).name)

    def build_percentile(ctx):  # the notebook's reference solution
        path = ox.quantize_static(ctx.summary.path, ctx.artifact("model.int8-percentile.onnx"), ctx.calibration(),
                                  method="percentile")
        return R.ort_candidate(ctx, "ort-int8-percentile", "ort-int8-percentile", "int8 static QDQ (percentile)", path)

    opt = optimize.Optimization(mlp[0], mlp[1], output_dir=tmp_path / "out", recipes=[], **FAST)
    for build in (stub, build_percentile):
        opt.try_recipes([optimize.Recipe("ort-int8-percentile", ("onnx",), "onnxruntime", "t", build)])
        opt.verify()
    assert ex.check_custom_recipe(opt, "ort-int8-percentile")
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and out.count("✗") == 2


@pytest.mark.slow
def test_pt2e_int8_program_is_saved_smaller_and_reloads(tmp_path):
    import torch

    model = _bag_program(tmp_path / "bag.pt2")
    opt = optimize.Optimization(model, output_dir=tmp_path / "out", recipes=["pt2e-int8-dynamic"],
                                **{**FAST, "batch_sizes": [8], "time_budget_s": 60.0})
    opt.try_recipes()
    checks = opt.verify()
    cand = opt.candidates[0]
    assert cand.name == "pt2e-int8-dynamic" and checks[cand.name].parity.sqnr_db > 20
    import zipfile

    def weight_bytes(path):
        with zipfile.ZipFile(path) as z:
            return sum(i.file_size for i in z.infolist() if "/data/weights/weight_" in i.filename)

    # the float weights convert_pt2e leaves attached are not in the file: its weights shrink
    assert weight_bytes(cand.artifact) < 0.6 * weight_bytes(model)
    again = optimize.inspect_model(cand.artifact)  # names torchao's operators: registered on load
    assert any(k.startswith("quantized_decomposed") for k in again.op_counts)
    from optkit.runtimes.model_files import load_program

    ids = torch.from_numpy(opt.data.batch(8)["ids"])
    with torch.no_grad():
        reloaded = load_program(cand.artifact).module()(ids).numpy()
    assert np.abs(reloaded - cand.run({"ids": ids.numpy()})[0]).max() < 0.05


def test_best_fp32_is_the_fastest_eligible_float_record():
    from optkit.optimize.recommendation import best_fp32

    recs = [Record("baseline", batch_size=32, latency_ms=10.0, extra={"eligible": True, "precision": "fp32"}),
            Record("ort", batch_size=32, latency_ms=5.0, extra={"eligible": True, "precision": "fp32"}),
            Record("int8", batch_size=32, latency_ms=2.0, extra={"eligible": True, "precision": "int8"}),
            Record("fast-bad", batch_size=32, latency_ms=1.0, extra={"eligible": False, "precision": "fp32"})]
    assert best_fp32(recs).name == "ort"
    assert best_fp32(recs[2:]) is None
