"""optkit.runtimes.formats: the one registry io, serve and the capstone dispatch through."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optkit.runtimes import formats, model_files
from optkit.data import models
from optkit import optimize, serve
from optkit.core.errors import OptkitError


@pytest.mark.parametrize("name, key", [("m.onnx", "onnx"), ("m.pt2", "torch_export"), ("m.PT", "torch_pickle"),
                                       ("pytorch_model.bin", "torch_pickle"), ("m.keras", "keras"),
                                       ("m.h5", "keras"), ("m.tflite", "tflite"), ("m.txt", None)])
def test_find_by_suffix(tmp_path, name, key):
    found = formats.find(tmp_path / name)
    assert (found.key if found else None) == key


def test_folders_are_saved_models_only_when_they_hold_one(tmp_path):
    assert formats.find(tmp_path) is None
    (tmp_path / "saved_model.pb").write_bytes(b"x")
    assert formats.find(tmp_path).key == "saved_model"


def test_every_consumer_agrees_with_the_registry(tmp_path):
    # the capstone reads what the registry says, SavedModel folders as Keras models
    for f in formats.FORMATS.values():
        if f.folder:
            continue
        assert optimize.detect_format(tmp_path / f"m{f.suffixes[0]}") == f.key
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"x")
    assert optimize.detect_format(saved) == "keras"
    # io refuses the TensorFlow formats with a pointer to optkit.runtimes.tflow, whatever their suffix
    for suffix in formats.suffixes_of("keras", "tflite"):
        path = tmp_path / f"model{suffix}"
        path.write_bytes(b"x")
        with pytest.raises(OptkitError, match="optkit.runtimes.tflow"):
            model_files.load_model(path)


def test_load_runner_and_load_artifact_are_one_path(tmp_path):
    from optkit.runtimes import onnxrt as ox

    torch.manual_seed(0)
    net = models.build("mlp", in_features=64, hidden=(32, 16)).eval()
    x = torch.rand(4, 64)
    path = ox.export(net, x, tmp_path / "mlp.onnx").path
    runner = formats.load_runner(path, threads=1)
    assert runner.format.key == "onnx" and runner.shape == (64,) and runner.dtype == "float32"
    fn, shape, dtype = serve.load_artifact(path, threads=1)
    assert (shape, dtype) == (runner.shape, runner.dtype)
    with torch.inference_mode():
        ref = net(x).numpy()
    np.testing.assert_allclose(np.asarray(runner.fn(x.numpy())), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fn(x.numpy())), ref, atol=1e-5)


def test_load_runner_refuses_what_it_cannot_run(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(OptkitError, match=r"PyTorch file.*cannot run directly.*\.onnx, \.pt2 or \.tflite"):
        formats.load_runner(path)
    with pytest.raises(OptkitError, match="unsupported suffix '.pt'"):
        serve.load_artifact(path)
