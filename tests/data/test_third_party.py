"""The zoo of third-party models (optkit.data.third_party): entries, licences, and the inputs built
for each, checked for shape, dtype, value range, balance and reproducibility."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from optkit.core.errors import OptkitError
from optkit.data import third_party as tp

N = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    return {name: dict(np.load(tp.build_inputs(name, out, n=N))) for name in tp.ZOO_NAMES}


def test_the_zoo_has_six_models_of_the_kinds_the_issue_asks_for():
    models = tp.zoo_models()
    assert [m.name for m in models] == list(tp.ZOO_NAMES) and len(set(tp.ZOO_NAMES)) == 6
    kinds = " ".join(m.kind for m in models).lower()
    for word in ("cnn classifier", "dense output", "sequence", "recurrent", "keras", "tflite"):
        assert word in kinds, word
    for m in models:
        assert m.path.is_file() and m.path == tp.model_path(m.name)
        assert m.inputs and m.quality and m.to_dict()["version"] == m.version


def test_licences_and_versions_match_the_installed_metadata_and_the_makefile():
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    for m in tp.zoo_models():
        meta = importlib.metadata.metadata(m.package)
        declared = " ".join(filter(None, [meta.get("License"), meta.get("License-Expression"),
                                          *meta.get_all("Classifier", [])]))
        assert m.licence.split("-")[0] in declared, (m.package, declared)
        assert f"{m.package}=={m.version}" in makefile  # the version make env pins


@pytest.mark.parametrize("name", ["text-direction", "text-recognizer", "text-detector"])
def test_text_inputs_are_normalized_like_rapidocr(built, name):
    x = built[name]["x"]
    shape = {"text-direction": (3, 48, 192), "text-recognizer": (3, 48, 320), "text-detector": (3, 96, 320)}[name]
    assert x.dtype == np.float32 and x.shape == (N, *shape)
    assert x.min() >= -1.0 and x.max() <= 1.0
    if name != "text-detector":  # lines narrower than the input are padded with zeros on the right
        assert any(np.all(x[i, :, :, -4:] == 0) for i in range(N))
        assert (x > 0.4).mean() > 0.3 and (x < -0.2).mean() > 0.005  # a light background with dark text
    else:
        assert (x > 0.3).mean() > 0.8 and (x < -0.3).mean() > 0.002  # a mostly light page with some text


def test_direction_labels_are_balanced_and_mean_turned_180_degrees(built):
    y = built["text-direction"]["y"]
    assert y.dtype == np.int64 and set(y) == {0, 1} and abs(int(y.sum()) * 2 - N) <= 1
    x = built["text-direction"]["x"]
    # a turned line's padding is still on the right: the content was turned before resizing
    assert all(np.abs(x[i, :, :, :8]).max() > 0 for i in range(N))


def test_silero_rows_carry_the_state_the_stream_reached(built):
    z = built["silero-vad"]
    assert z["input"].shape == (N, 576) and z["input"].dtype == np.float32
    assert z["state"].shape == (2, N, 128) and z["state"].dtype == np.float32
    assert z["sr"].shape == () and z["sr"].dtype == np.int64 and int(z["sr"]) == 16000
    assert np.abs(z["input"]).max() <= 1.0 and np.abs(z["state"]).max() > 0  # the model had run before these rows
    import onnxruntime as ort

    session = ort.InferenceSession(str(tp.model_path("silero-vad")), providers=["CPUExecutionProvider"])
    prob, state = session.run(None, {"input": z["input"], "state": z["state"], "sr": z["sr"]})
    assert prob.shape == (N, 1) and np.all((prob >= 0) & (prob <= 1)) and state.shape == (2, N, 128)


@pytest.mark.parametrize("name", ["fer-keras", "fer-tflite"])
def test_faces_are_grey_64_by_64_in_minus_one_to_one(built, name):
    x = built[name]["x"]
    assert x.shape == (N, 64, 64, 1) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.2
    assert len({x[i].tobytes() for i in range(N)}) > 1  # different frames


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_rows(tmp_path):
    for name in ("text-direction", "silero-vad"):
        a = tp.build_inputs(name, tmp_path / "a", n=6)
        b = tp.build_inputs(name, tmp_path / "b", n=6)
        c = tp.build_inputs(name, tmp_path / "c", n=6, seed=1)
        assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
        assert a.name == f"{name}.npz" and not list((tmp_path / "a").glob(".*tmp"))  # written atomically


def test_every_built_file_loads_against_its_model(tmp_path, built):
    from optkit.optimize.inputs import load_data
    from optkit.optimize.inspection import inspect_model

    for name in ("text-direction", "text-detector", "fer-tflite"):
        data = load_data(tp.build_inputs(name, tmp_path, n=N), inspect_model(tp.model_path(name)))
        assert data.n == N and (data.labels is not None) == (name == "text-direction")


def test_render_text_line_is_a_bgr_crop_of_the_text():
    img = tp.render_text_line("invoice 17.50", np.random.default_rng(0))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] > 2 * img.shape[0]
    page = tp.render_text_page(np.random.default_rng(0))
    assert page.shape == (96, 320, 3) and page.dtype == np.uint8


def test_bad_arguments_name_the_parameter_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(OptkitError, match=r"^name='ocr': is not a known choice\. Fix: use one of"):
        tp.build_inputs("ocr", tmp_path)
    with pytest.raises(OptkitError, match=r"^n=1"):
        tp.build_inputs("text-direction", tmp_path, n=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptkitError, match=r"^out_dir=.*is a file"):
        tp.build_inputs("text-direction", tmp_path / "file")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "rapidocr_onnxruntime" else real(m, *a))
    with pytest.raises(OptkitError) as err:
        tp.build_inputs("text-recognizer", tmp_path)
    msg = str(err.value)
    assert msg.startswith("name='text-recognizer'") and msg.count("Fix:") == 1
    assert re.search(r"pip install --no-deps rapidocr-onnxruntime==1\.4\.4", msg)
    assert not (tmp_path / "text-recognizer.npz").exists()
