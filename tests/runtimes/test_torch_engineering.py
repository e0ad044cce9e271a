"""optkit.runtimes.torch_engineering: BatchNorm drift, kernel counts, datasets, autocast training, sharded inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optkit import data
from optkit.core import verify
from optkit.core.errors import OptkitError
from optkit.data import models
from optkit.runtimes import torch_engineering as te


@pytest.fixture(scope="module")
def fmnist_test():
    return data.fashion_mnist().test.subset(512)


def test_train_mode_moves_running_stats_and_eval_mode_does_not(fmnist_test):
    net = models.pretrained("resnet_cnn")
    acc_eval = models.evaluate(net, fmnist_test).accuracy
    same = te.train_mode_accuracy(net, fmnist_test, batch_size=64, eval_mode=True)
    assert same.drift == 0 and same.accuracy == pytest.approx(acc_eval) and same.n == len(fmnist_test)
    victim = models.pretrained("resnet_cnn")
    skewed = te.train_mode_accuracy(victim, fmnist_test, batch_size=16, order="skewed")
    assert skewed.drift > 0.01 and not victim.training  # the statistics moved; the mode was restored
    assert skewed.accuracy < acc_eval - 0.1  # one-class batches normalise away what tells classes apart
    one = te.train_mode_accuracy(models.pretrained("resnet_cnn"), fmnist_test, batch_size=1, limit=40)
    assert one.n == 40 and one.hits.shape == (40,)
    with pytest.raises(OptkitError, match="order"):
        te.train_mode_accuracy(net, fmnist_test, batch_size=8, order="sorted")


def test_stats_drift_is_relative_and_checks_layers():
    bn = nn.Sequential(nn.BatchNorm1d(3))
    before = te.batchnorm_stats(bn)
    with torch.no_grad():
        bn[0].running_var.mul_(1.5)
    assert te.stats_drift(before, te.batchnorm_stats(bn)) == pytest.approx(0.5, rel=1e-3)
    with pytest.raises(OptkitError, match="after"):
        te.stats_drift(before, {})


def test_freezing_folds_batchnorm_and_weights_into_constants():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(2, 1, 8, 8)
    counts = {}
    for freeze in (False, True):
        fn, code, seconds = te.compile_with_code(model, x, freezing=freeze)
        with torch.inference_mode():
            assert torch.allclose(fn(x), model(x), atol=1e-4)
        counts[freeze] = te.count_kernels(code)
    assert counts[False]["weights passed per call"] >= 5 and counts[False]["constants folded in"] == 0
    assert counts[True]["weights passed per call"] == 0 and counts[True]["constants folded in"] >= 2
    assert counts[True]["prepacked oneDNN/MKL calls"] >= 1 and counts[False]["prepacked oneDNN/MKL calls"] == 0
    with pytest.raises(OptkitError, match="code"):
        te.count_kernels("print('no graph')")


def test_encoded_images_decode_to_the_data_and_the_cache_serves_the_same(fmnist_test):
    split = fmnist_test.subset(64)
    encoded = te.EncodedImages(split)
    x0, y0 = encoded[5]
    assert x0.shape == (1, 28, 28) and y0 == int(split.y[5])
    assert np.abs(x0.numpy() - split.x[5]).max() <= 0.5 / 255 + 1e-6  # uint8 PNG: exact to a grey level
    cached = te.CachedDataset(encoded)
    assert len(cached) == 64 and torch.equal(cached[5][0], x0) and cached.nbytes == 64 * 28 * 28 * 4
    assert te.loader_throughput(cached, batch_size=16) > 0
    if not torch.cuda.is_available():
        with pytest.raises(OptkitError, match="pin_memory"):
            te.loader_throughput(cached, batch_size=16, pin_memory=True)
    with pytest.raises(OptkitError, match="split.x"):
        te.EncodedImages(data.Split(np.zeros((2, 3, 4, 4), np.float32), np.zeros(2, np.int64)))


def test_bf16_autocast_training_tracks_fp32_and_leaves_the_model_alone(fmnist_test):
    net = models.pretrained("small_cnn")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fp32 = te.autocast_train_steps(net, fmnist_test, steps=3, batch_size=32, precision="fp32")
    mixed = te.autocast_train_steps(net, fmnist_test, steps=3, batch_size=32)
    assert mixed.dtype == "bfloat16" and not mixed.scaler and fp32.dtype == "float32"
    assert all(np.isfinite(mixed.losses)) and len(mixed.losses) == 3
    assert mixed.losses[0] == pytest.approx(fp32.losses[0], rel=0.05, abs=0.02)  # same batch, same weights
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    if not torch.cuda.is_available():
        with pytest.raises(OptkitError, match="device"):
            te.autocast_train_steps(net, fmnist_test, device="cuda")


def test_distributed_predict_on_two_cpu_processes_matches_one_model(fmnist_test):
    net = models.pretrained("small_cnn")
    x = fmnist_test.x[:9]
    out = te.distributed_predict(net, x, world_size=2, device_type="cpu")
    ref = verify.predict_all(net, x, convert=torch.from_numpy)
    assert out.shape == ref.shape and np.allclose(out, ref, atol=1e-4)
    if torch.cuda.device_count() < 2:
        assert "needs at least 2" in te.multi_gpu_reason()
        with pytest.raises(OptkitError, match="at least 2"):
            te.distributed_predict(net, x)
