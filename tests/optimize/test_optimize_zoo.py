"""optkit optimize on the zoo of real third-party models (:mod:`optkit.data.third_party`): every
model gets a report, a recommendation and the quality measure that fits its output.

Each model runs once per session (a module-scoped fixture) with small budgets: batch sizes 1 and 4,
one thread, a few seconds of time budget and the recipes that matter for its format, int8 static,
dynamic and the searching recipe on every ONNX model.
"""
from __future__ import annotations

import json
import math

import pytest

from optkit import optimize
from optkit.data import third_party as tp

INT8 = ["ort-int8-dynamic", "ort-int8-static", "ort-int8-search"]
# name -> (rows, recipes, time_budget_s, the quality measure its output calls for)
SETTINGS = {
    "text-direction": (48, INT8, 12.0, "accuracy"),
    "text-detector": (32, INT8, 10.0, "sqnr_db"),
    "text-recognizer": (32, INT8, 12.0, "sequence_agreement"),
    "silero-vad": (64, INT8, 8.0, "agreement"),
    "fer-keras": (32, ["tflite-float32", "tflite-int8"], 15.0, "agreement"),
    "fer-tflite": (32, None, 5.0, "agreement"),
}
def _optimize(name, data, tmp, lines):
    rows, recipes, budget, _ = SETTINGS[name]
    return optimize.optimize(tp.model_path(name), data, output_dir=tmp / "runs", recipes=recipes,
                             batch_sizes=[1, 4], time_budget_s=budget, threads=1, log=lines.append)


@pytest.fixture(scope="module", params=list(SETTINGS))
def run(request, tmp_path_factory):
    """One optimize run per zoo model, on its realistic inputs."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    data = tp.build_inputs(name, tmp, n=SETTINGS[name][0])
    lines: list[str] = []
    return name, _optimize(name, data, tmp, lines), lines


def test_every_zoo_model_gets_a_report_and_a_recommendation(run):
    name, opt, lines = run
    for file in ("results.json", "report.md", "report.html"):
        assert (opt.run_dir / file).is_file() and (opt.run_dir / file).stat().st_size > 0
    results = json.loads((opt.run_dir / "results.json").read_text())
    rec = results["recommendation"]
    names = {"baseline"} | {c.name for c in opt.candidates}
    assert rec["name"] in names and rec["name"] == opt.recommendation.name  # "baseline" = the model as given
    assert opt.recommendation.name in opt.recommendation.eligible
    said = [line for line in lines if "recommended" in line][-1]
    if opt.recommendation.name == "baseline":
        assert "model as given" in said and "faster than the baseline" not in said
    else:
        assert opt.recommendation.speedup > 1.0 and "faster than the baseline" in said
    tried = {c.recipe for c in opt.candidates} | {o.recipe for o in opt.outcomes}
    asked = SETTINGS[name][1] or [r.name for r in opt.applicable_recipes()]
    assert set(asked) <= tried  # every recipe asked for is either a candidate or reported with its reason
    assert all(o.reason for o in opt.outcomes)
    assert opt.model_path.name in (opt.run_dir / "report.md").read_text()


def test_the_quality_measure_fits_the_output(run):
    name, opt, _ = run
    kind = SETTINGS[name][3]
    assert {c.quality_kind for c in opt.checks.values()} == {kind}
    base = opt.checks["baseline"]
    assert base.ok and (math.isinf(base.quality) if kind == "sqnr_db" else base.quality == pytest.approx(1.0))
    for cand, check in opt.checks.items():
        if kind == "sqnr_db":
            assert "iou" in check.details or cand == "baseline"
        if kind == "sequence_agreement":
            assert 0.0 <= check.details["exact_sequence_agreement"] <= check.quality <= 1.0
        if not check.ok:
            assert check.why  # a rejected candidate says why
    if kind == "accuracy":
        assert opt.data.labels is not None and opt.checks["baseline"].accuracy >= 0.9  # the classifier reads our text


def test_the_int8_recipes_ran_or_said_why_on_every_onnx_model(run):
    name, opt, _ = run
    if opt.summary.format != "onnx":
        pytest.skip(f"{name} is not an ONNX model: its int8 recipes are TFLite's")
    for recipe in INT8:
        built = [c for c in opt.candidates if c.recipe == recipe]
        said = [o for o in opt.outcomes if o.recipe == recipe]
        assert len(built) + len(said) >= 1, recipe
        for c in built:
            assert c.precision == "int8" or "int8" in c.technique.lower()


def test_the_text_models_quantize_per_channel_after_converting_old_opsets(run):
    name, opt, _ = run
    if name not in ("text-direction", "text-detector", "text-recognizer"):
        pytest.skip("only the PaddleOCR exports are at opset 11-12")
    static = [c for c in opt.candidates if c.recipe == "ort-int8-static"]
    assert static, [o for o in opt.outcomes if o.recipe == "ort-int8-static"]
    assert static[0].config["per_channel"] is True
    assert any("opset 1" in n and "converted" in n for n in static[0].notes)


def test_silero_vad_keeps_its_scalar_sample_rate_as_a_scalar(tmp_path):
    """The .npz holds ``sr`` as a 0-d int64, as the model takes it: loading must not make it (1,)."""
    from optkit.optimize.inputs import load_data
    from optkit.optimize.inspection import inspect_model

    data = tp.build_inputs("silero-vad", tmp_path, n=8)
    sample = load_data(data, inspect_model(tp.model_path("silero-vad")), batch_sizes=[1, 4], seed=0)
    feed = sample.to_model(sample.batch(4))
    assert feed["sr"].shape == () and int(feed["sr"]) == 16000, feed["sr"]
    assert feed["input"].shape[0] == 4 and feed["state"].shape[1] == 4  # the state's batch axis is 1
