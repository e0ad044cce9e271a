"""More routes where they pay: a .pt2 program is also compiled and run in ONNX Runtime so the best fp32
candidate is a fair one; a Keras model and a float .tflite file go through tf2onnx into ONNX Runtime."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from optkit import optimize

FAST = dict(batch_sizes=[1, 8], time_budget_s=4.0, threads=1, log=None)
KERAS_CNN = Path(__file__).resolve().parents[2] / "data" / "capstone" / "keras_cnn.keras"
FASHION = KERAS_CNN.with_name("fashion_mnist_nhwc_256.npz")


def _mlp_program(path: Path) -> Path:
    import torch

    from optkit.runtimes.model_files import save_program

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(model, (torch.zeros(2, 32),), dynamic_shapes=({0: batch},))
    return save_program(ep, path)


@pytest.mark.slow  # torch.compile and the ONNX export: tens of seconds on two cores
def test_a_pt2_report_names_the_best_fp32_candidate_and_its_ratio(tmp_path):
    opt = optimize.optimize(_mlp_program(tmp_path / "mlp.pt2"), None, output_dir=tmp_path / "runs",
                            recipes=["torch-compile", "torch-to-onnx"], **{**FAST, "batch_sizes": [8]})
    fp32 = {c.name: c for c in opt.candidates if c.precision == "fp32"}
    assert {"torch-compile", "onnx-ort"} <= set(fp32), opt.outcomes  # compiled and ORT fp32 of the same program
    saved = json.loads((opt.run_dir / "results.json").read_text())
    best = saved["best_fp32"]
    rows = {r["name"]: r for r in saved["records"] if r["batch_size"] == 8}
    eligible_fp32 = {n: r["latency_ms"] for n, r in rows.items() if r["extra"]["eligible"]}
    assert best["name"] == min(eligible_fp32, key=eligible_fp32.get)
    assert best["speedup_vs_baseline"] == pytest.approx(rows["baseline"]["latency_ms"] / best["latency_ms"])
    md = (opt.run_dir / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("Fastest fp32 candidate:"))
    if best["name"] == "baseline":
        assert "the model as given" in line
    else:
        assert best["name"] in line and f"{best['speedup_vs_baseline']:.2f}x the model as given" in line
        assert f"speedup_vs_{best['name']}" in md  # the table's ratio against it


def _built(model: Path, tmp_path: Path, *recipes: str) -> optimize.Optimization:
    """A run that builds and verifies the named recipes (always tried: no time budget), without timing."""
    from optkit.optimize.recipes import get_recipe

    opt = optimize.Optimization(model, FASHION, output_dir=tmp_path / "runs", **FAST)
    opt.try_recipes([get_recipe(r) for r in recipes])
    opt.verify()
    return opt


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_keras_through_tf2onnx_into_onnx_runtime_matches_the_keras_model(tmp_path):
    opt = _built(KERAS_CNN, tmp_path, "keras-onnx", "keras-onnx-int8-static")
    names = {c.name: c for c in opt.candidates}
    assert {"keras-onnx", "keras-onnx-int8-static"} <= set(names), opt.outcomes
    onnx_fp32 = names["keras-onnx"]
    assert onnx_fp32.runtime == "onnxruntime" and Path(onnx_fp32.artifact).name == "model.from-keras.onnx"
    check = opt.checks["keras-onnx"]
    assert check.parity.max_abs < 1e-4 and check.ok
    assert opt.checks["keras-onnx"].accuracy == opt.checks["baseline"].accuracy
    int8 = names["keras-onnx-int8-static"]
    assert int8.precision == "int8" and int8.size_bytes < onnx_fp32.size_bytes  # built from the converted file


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    from optkit.runtimes import tflow as otf
    from optkit.runtimes.tflow.env import _keras

    keras = _keras(False)
    folder = tmp_path_factory.mktemp("tflite")
    with otf.silenced():
        model = keras.models.load_model(str(KERAS_CNN))
        x = np.load(FASHION)["x"][:32]
        flt = otf.to_tflite(model, folder / "cnn.float32.tflite", variant="float32")
        int8 = otf.to_tflite(model, folder / "cnn.int8.tflite", variant="int8", representative=list(x[:16, None]))
    return Path(flt), Path(int8)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_float_tflite_file_also_runs_in_onnx_runtime(tmp_path, tflite_files):
    flt, _ = tflite_files
    opt = _built(flt, tmp_path, "tflite-onnx", "tflite-onnx-int8-static")
    names = {c.name: c for c in opt.candidates}
    assert {"tflite-onnx", "tflite-onnx-int8-static"} <= set(names), opt.outcomes
    assert opt.checks["tflite-onnx"].parity.max_abs < 1e-4 and opt.checks["tflite-onnx"].ok
    assert names["tflite-onnx"].config["threads"] == 1 and names["tflite-onnx-int8-static"].precision == "int8"
    assert any("XNNPACK" in n for n in opt.baseline.notes)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_int8_tflite_file_says_in_one_line_why_no_onnx_route(tmp_path, tflite_files):
    _, int8 = tflite_files
    opt = optimize.optimize(int8, FASHION, output_dir=tmp_path / "runs",
                            recipes=["tflite-onnx", "tflite-onnx-int8-static"], **FAST)
    assert not opt.candidates
    reasons = {o.recipe: o for o in opt.outcomes}
    for name in ("tflite-onnx", "tflite-onnx-int8-static"):
        assert reasons[name].status == "skipped" and "\n" not in reasons[name].reason
        assert re.search(r"full-integer .*no float graph", reasons[name].reason)
    assert "full-integer" in (opt.run_dir / "report.md").read_text()
