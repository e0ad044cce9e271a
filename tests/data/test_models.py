"""optkit.data.models: shapes, parameter and MAC counts, training, evaluation, pretrained weights."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from torch import nn

from optkit.data import models
from optkit.core.errors import OptkitError

# name -> (build kwargs, input shape without batch, parameter count by hand)
EXPECTED = {
    # conv1 1*16*9+16, conv2 16*32*9+32, fc1 1568*128+128, fc2 128*10+10
    "small_cnn": ({}, (1, 28, 28), 160 + 4_640 + 200_832 + 1_290),
    "mlp": ({}, (1, 28, 28), 401_920 + 131_328 + 2_570),
    "resnet_cnn": ({}, (1, 28, 28), 696_042),
    # embedding 5000*128, LSTM 4*256*(128+256)+2*4*256, fc1 256*256+256, fc2 256*2+2
    "text_lstm": ({"vocab_size": 5000}, (64,), 640_000 + 395_264 + 65_792 + 514),
}


@pytest.mark.parametrize("name", models.NAMES)
def test_output_shape_and_param_count(name):
    kwargs, shape, params = EXPECTED[name]
    model = models.build(name, **kwargs).eval()
    x = torch.randint(0, 5000, (3, *shape)) if name == "text_lstm" else torch.rand(3, *shape)
    with torch.inference_mode():
        assert model(x).shape == (3, 2 if name == "text_lstm" else 10)
    assert models.count_params(model) == params


def test_build_refuses_unknown_names_and_missing_vocab():
    with pytest.raises(OptkitError) as err:
        models.build("resnet50")
    assert all(n in str(err.value) for n in models.NAMES)
    with pytest.raises(OptkitError, match="vocab_size"):
        models.build("text_lstm")
    with pytest.raises(OptkitError, match="SmallCNN"):
        models.build("small_cnn", depth=3)


def test_resnet_module_names_are_plain():
    names = dict(models.build("resnet_cnn").named_modules())
    for name in ("stem.conv", "stem.bn", "layer1.0.conv1", "layer1.1.bn2", "layer2.0.downsample.0",
                 "layer3.1.conv2", "fc"):
        assert name in names
    assert names["layer1.0"].downsample is None
    assert isinstance(names["layer3.0.downsample.1"], nn.BatchNorm2d)
    narrow = models.build("resnet_cnn", widths=(8, 16, 32))
    assert narrow(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_text_lstm_ignores_padding_and_reads_large_ids_as_unknown():
    torch.manual_seed(0)
    model = models.build("text_lstm", vocab_size=50, embed_dim=8, hidden=16).eval()
    ids = torch.tensor([[5, 7, 9, 0, 0, 0]])
    with torch.inference_mode():
        short = model(ids[:, :3])
        padded = model(ids)
        assert torch.allclose(short, padded, atol=1e-6)
        big = model(torch.tensor([[5, 700, 9, 0]]))
        unk = model(torch.tensor([[5, 1, 9, 0]]))
        assert torch.equal(big, unk)


# --------------------------------------------------------------------------- MACs

def test_count_macs_conv_matches_the_formula():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert models.count_macs(conv, torch.rand(2, 3, 10, 10)) == 2 * 8 * 10 * 10 * 3 * 3 * 3
    grouped = nn.Conv2d(8, 16, 3, padding=0, groups=4)
    # output 16 x 8 x 8, each output sums 8/4 input channels x 3x3
    assert models.count_macs(grouped, torch.rand(1, 8, 10, 10)) == 16 * 8 * 8 * 2 * 9
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert models.count_macs(depthwise, torch.rand(1, 8, 5, 5)) == 8 * 5 * 5 * 9


def test_count_macs_linear_and_lstm_match_the_formula():
    assert models.count_macs(nn.Linear(20, 30), torch.rand(5, 20)) == 5 * 20 * 30
    assert models.count_macs(nn.Linear(20, 30), torch.rand(5, 7, 20)) == 5 * 7 * 20 * 30
    lstm = nn.LSTM(10, 20, batch_first=True)
    assert models.count_macs(lstm, torch.rand(2, 7, 10)) == 2 * 7 * 4 * 20 * (10 + 20)


def test_count_macs_small_cnn_and_restores_mode():
    model = models.build("small_cnn").train()
    expected = 16 * 28 * 28 * 9 + 32 * 14 * 14 * 16 * 9 + 1568 * 128 + 128 * 10
    assert models.count_macs(model, torch.rand(1, 1, 28, 28)) == expected
    assert model.training
    assert not any(m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- training and evaluation

def _train_digits(digits, seed=0):
    models.set_seed(seed)
    model = models.build("small_cnn", in_size=8)
    history = models.train(model, digits, epochs=1, batch_size=32, lr=1e-2, seed=seed, progress=False,
                           schedule="constant")
    return model, history


def test_train_small_cnn_on_digits_one_epoch(digits):
    model, history = _train_digits(digits)
    assert len(history) == 1
    entry = history[0]
    assert {"epoch", "train_loss", "train_acc", "val_acc", "lr", "seconds"} <= set(entry)
    assert not model.training
    result = models.evaluate(model, digits, split="test")
    assert result.accuracy > 0.80
    assert result.n == len(digits.test) and set(result.per_class) == set(digits.classes)


def test_train_is_deterministic_for_a_seed(digits):
    a, _ = _train_digits(digits, seed=1)
    b, _ = _train_digits(digits, seed=1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_evaluate_restores_train_mode_and_accepts_several_inputs(digits):
    models.set_seed(0)
    model = models.build("mlp", in_features=64).train()
    by_dataset = models.evaluate(model, digits, split="val")
    assert model.training
    by_split = models.evaluate(model, digits.val)
    by_pair = models.evaluate(model, (digits.val.x, digits.val.y), batch_size=7)
    by_loader = models.evaluate(model, digits.torch_loader("val", batch_size=50))
    assert by_dataset.accuracy == by_split.accuracy == by_pair.accuracy == by_loader.accuracy
    assert by_dataset.loss == pytest.approx(by_pair.loss, rel=1e-5)
    model.eval()
    as_numpy = models.evaluate(lambda x: model(x).numpy(), digits.val)
    assert as_numpy.accuracy == by_split.accuracy and not model.training
    assert "accuracy=" in repr(by_dataset)


def test_evaluate_accepts_an_exported_module(digits):
    models.set_seed(0)
    model = models.build("small_cnn", in_size=8).eval()
    program = torch.export.export(model, (digits.example_batch(2),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    exported = program.module()
    assert models.evaluate(exported, digits.val).accuracy == models.evaluate(model, digits.val).accuracy


def test_evaluate_per_class_counts_by_hand():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    result = models.evaluate(lambda x: logits[x.long().flatten()], (torch.arange(4), torch.tensor([0, 0, 1, 1])))
    assert result.accuracy == 0.75 and result.per_class == {"0": 1.0, "1": 0.5} and result.n == 4


def test_set_seed_makes_initial_weights_repeatable():
    models.set_seed(7)
    a = models.build("small_cnn")
    models.set_seed(7)
    b = models.build("small_cnn")
    assert torch.equal(a.fc1.weight, b.fc1.weight)


# --------------------------------------------------------------------------- pretrained

def test_reference_json_describes_every_shipped_model():
    info = models.reference_info()
    assert set(info["models"]) == set(models.NAMES)
    for name, entry in info["models"].items():
        path = models.MODELS_DIR / entry["file"]
        assert path.stat().st_size == entry["file_bytes"] < 5.2e6
        assert {"epochs", "lr", "batch_size", "seed", "threads", "torch"} <= set(entry["recipe"])
        assert 0.5 < entry["test_accuracy"] <= 1.0 and entry["params"] > 0


def test_pretrained_small_cnn_reaches_its_recorded_accuracy(fmnist):
    model = models.pretrained("small_cnn")
    assert not model.training
    entry = models.reference_info("small_cnn")
    assert models.count_params(model) == entry["params"]
    accuracy = models.evaluate(model, fmnist, split="test", batch_size=1000).accuracy
    assert abs(accuracy - entry["test_accuracy"]) <= 0.005


def test_pretrained_text_lstm_accepts_the_default_vocabulary(text):
    model = models.pretrained("text_lstm")
    with torch.inference_mode():
        assert model(text.example_batch(4)).shape == (4, 2)


def test_pretrained_refuses_an_altered_file(tmp_path, monkeypatch):
    for f in models.MODELS_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    raw = bytearray((tmp_path / "mlp.pt").read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / "mlp.pt").write_bytes(bytes(raw))
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    with pytest.raises(OptkitError, match="does not match reference.json"):
        models.pretrained("mlp")
    assert hashlib.sha256((tmp_path / "small_cnn.pt").read_bytes()).hexdigest() == \
        models.reference_info("small_cnn")["sha256"]


def test_as_variant_fills_costs_per_sample_and_lets_fields_win():
    from optkit.core import sizes

    net = models.build("small_cnn").eval()
    batch = torch.rand(4, 1, 28, 28)
    v = models.as_variant(net, batch, technique="fp32 eager")
    # MACs per sample whatever the example's batch: the first row is counted
    assert v.macs == models.count_macs(net, batch[:1]) == models.count_macs(net, batch) // 4
    assert v.params == models.count_params(net) and v.size_bytes == sizes.model_size(net)
    assert v.name == "SmallCNN" and v.predict is net and v.technique == "fp32 eager" and v.is_float
    assert models.as_variant(net, batch, "mine", size_bytes=123, precision="bf16").size_bytes == 123
    with pytest.raises(OptkitError) as err:
        models.as_variant(lambda x: x, batch)
    assert str(err.value).startswith("model=")


def test_workload_for_labels_one_task_and_its_rows(digits):
    from optkit.core import report, variant

    nets = {"a": models.build("small_cnn", in_size=8), "b": models.build("mlp", in_features=64)}
    whole = models.workload_for(digits, nets.values())
    assert str(whole) == f"SmallCNN, MLP · digits test ({len(digits.test):,})"
    part = models.workload_for(digits, ["small_cnn"], n=100)
    assert part.eval_set == f"digits test (100 of {len(digits.test):,})" and part != whole
    # the models of one workload share one table with ratios; evaluate fills accuracy on the real labels
    variants = [models.as_variant(net.eval(), digits.example_batch(1), name) for name, net in nets.items()]
    recs = variant.evaluate(variants, whole, data=digits.test, inputs={2: digits.example_batch(2)},
                            convert=torch.from_numpy, max_time_s=0.01, rounds=1, progress=False, memory=False)
    assert {r.workload for r in recs} == {str(whole)}
    assert recs[0].accuracy == models.evaluate(nets["a"], digits.test).accuracy
    assert "speedup" in report.table(recs, baseline="a").columns
    with pytest.raises(OptkitError):
        models.workload_for(digits, [])
