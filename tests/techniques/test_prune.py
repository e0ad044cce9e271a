"""optkit.techniques.prune: exact sparsity, permanent masks, sizes, schedules, channel removal that follows dependencies."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from optkit.data import models
from optkit.techniques import prune
from optkit.core import sizes
from optkit.core.errors import OptkitError


# --------------------------------------------------------------------------- fixtures
# (``digits``, sklearn's 8x8 digits as an optkit Dataset, comes from conftest.py)

def _train(model, ds, epochs, lr=3e-3, seed=0):
    models.train(model, ds, epochs=epochs, lr=lr, seed=seed, progress=False, val_split=None)
    return model


@pytest.fixture(scope="module")
def trained_cnn(digits):
    """SmallCNN on 8x8 digits, trained for a few seconds (about 98 % test accuracy)."""
    models.set_seed(0)
    return _train(models.build("small_cnn", in_size=8), digits, epochs=12, lr=1e-2).eval()


def acc(model, ds, split="test"):
    return models.evaluate(model, ds, split=split).accuracy


def tiny_resnet():
    torch.manual_seed(0)
    return models.build("resnet_cnn", widths=(8, 16, 32)).eval()


X8 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- fine-grained primitive

def test_fine_grained_prune_hand_made_tensor():
    t = torch.tensor([[-0.46, -0.40, 0.39, 0.19, 0.37],
                      [0.00, 0.40, 0.17, -0.15, 0.16],
                      [-0.20, -0.23, 0.36, 0.25, 0.03],
                      [0.24, 0.41, 0.07, 0.13, -0.15],
                      [0.48, -0.09, -0.36, 0.12, 0.45]])
    before = t.clone()
    out = prune.fine_grained_prune(t, 0.75)
    assert torch.equal(t, before), "the input must not be modified"
    assert int((out == 0).sum()) == round(0.75 * 25)
    kept = out[out != 0].abs()
    pruned = t[out == 0].abs()
    assert kept.min() >= pruned.max()
    assert torch.equal(out[out != 0], t[out != 0])


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.33, 0.9, 0.999])
def test_magnitude_mask_exact_count_with_ties(sparsity):
    t = torch.zeros(7, 13)
    t[:, :5] = 1.0  # many ties: sorting alone must give the exact count
    mask = prune.magnitude_mask(t, sparsity)
    assert int((~mask).sum()) == round(sparsity * t.numel())


# --------------------------------------------------------------------------- unstructured on a model

def test_prune_unstructured_reaches_each_target_within_one_weight():
    torch.manual_seed(0)
    m = models.build("small_cnn", in_size=8)
    prune.prune_unstructured_(m, 0.6)
    report = prune.sparsity_report(m)
    for layer in report.layers:
        assert abs(layer.zeros - 0.6 * layer.total) <= 1, layer
    # targets are absolute: pruning again to 0.8 ends at 80 %, not 92 %
    prune.prune_unstructured_(m, {"conv1": 0.8, "fc1": 0.9})
    report = prune.sparsity_report(m)
    assert abs(report["conv1"].zeros - 0.8 * report["conv1"].total) <= 1
    assert abs(report["fc1"].zeros - 0.9 * report["fc1"].total) <= 1
    assert abs(report["fc2"].zeros - 0.6 * report["fc2"].total) <= 1


def test_prune_global_reaches_global_target_unevenly():
    torch.manual_seed(0)
    m = models.build("small_cnn", in_size=8)
    with torch.no_grad():
        m.conv2.weight.mul_(0.01)  # make one layer's weights small: global pruning takes them first
    prune.prune_global_(m, 0.5)
    report = prune.sparsity_report(m)
    assert abs(report.zeros - 0.5 * report.total) <= 1
    assert report["conv2"].sparsity > 0.99
    assert report["conv1"].sparsity < 0.5


def test_make_permanent_drops_masks_keeps_zeros_and_outputs():
    torch.manual_seed(0)
    m = models.build("small_cnn", in_size=8).eval()
    dense_bytes = sizes.model_size(m)
    prune.prune_global_(m, 0.7)
    assert prune.is_pruned(m)
    assert any(k.endswith("weight_mask") for k in m.state_dict())
    assert prune.mask_overhead_bytes(m) > 0
    assert sizes.model_size(m) > 1.5 * dense_bytes  # weight_orig + weight_mask saved too
    with torch.no_grad():
        y_masked = m(X8)
    zeros = prune.sparsity_report(m).zeros
    prune.make_permanent(m)
    assert not prune.is_pruned(m)
    assert not any(k.endswith(("_orig", "_mask")) for k in m.state_dict())
    assert prune.mask_overhead_bytes(m) == 0
    assert prune.sparsity_report(m).zeros == zeros
    with torch.no_grad():
        assert torch.equal(m(X8), y_masked)
    assert abs(sizes.model_size(m) - dense_bytes) < 0.02 * dense_bytes


def test_compressed_size_shrinks_with_sparsity():
    torch.manual_seed(0)
    dense = models.build("small_cnn", in_size=28)
    sparse = prune.make_permanent(prune.prune_global_(copy.deepcopy(dense), 0.8))
    gz_dense, gz_sparse = prune.compressed_size(dense), prune.compressed_size(sparse)
    assert gz_dense > 0.85 * sizes.model_size(dense)  # random fp32 hardly compresses
    assert gz_dense / gz_sparse > 2.5
    assert prune.compressed_size(sparse, "csr") < 0.35 * prune.compressed_size(dense, "csr")
    assert prune.compressed_size(sparse, "csr+gzip") < gz_dense
    # a masked model is measured by its effective weights
    masked = prune.prune_global_(copy.deepcopy(dense), 0.8)
    assert abs(prune.compressed_size(masked) - gz_sparse) < 0.02 * gz_sparse


def test_storage_stats_count_zeros_and_compare_gzip_with_the_reference():
    torch.manual_seed(0)
    dense = models.build("small_cnn", in_size=28)
    sparse = prune.prune_global_(copy.deepcopy(dense), 0.8)  # masks attached: the effective weights count
    d, s = prune.storage_stats(dense, reference=dense), prune.storage_stats(sparse, reference=dense)
    assert d["nonzero_params"] == models.count_params(dense) - prune.sparsity_report(dense).params_zeros
    # pruning zeroes conv/linear weights only, so exactly that many fewer nonzero parameters
    assert d["nonzero_params"] - s["nonzero_params"] == prune.sparsity_report(sparse).zeros
    assert d["gzip_ratio"] == 1.0 and d["gzip_bytes"] == prune.compressed_size(dense)
    assert s["gzip_ratio"] == pytest.approx(d["gzip_bytes"] / s["gzip_bytes"]) and s["gzip_ratio"] > 2.5
    assert set(prune.storage_stats(sparse)) == {"nonzero_params", "gzip_bytes"}  # no reference, no ratio
    with pytest.raises(OptkitError, match="reference"):
        prune.storage_stats(sparse, reference="dense")


def test_storage_stats_reach_every_table_of_a_comparison():
    """03's closing table: variant.evaluate, the stats in Record.extra, one table per batch size."""
    from optkit.core import report, variant

    torch.manual_seed(0)
    dense = models.build("small_cnn", in_size=8).eval()
    sparse = prune.make_permanent(prune.prune_global_(copy.deepcopy(dense), 0.8))
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = dense(x).argmax(1).detach().numpy()  # labels the dense model gets all right
    nets = {"dense": dense, "sparse": sparse}
    records = variant.evaluate([variant.Variant(n, m) for n, m in nets.items()],
                               variant.Workload("SmallCNN", "test", "random (40)"), data=(x, y),
                               inputs={1: x[:1], 4: x[:4]}, max_time_s=0.02, rounds=2, progress=False, env={},
                               memory=False)
    for r in records:
        r.extra.update(prune.storage_stats(nets[r.name], reference=dense))
    summaries = report.tables(records, baseline="dense", extra=["nonzero_params", "gzip_bytes", "gzip_ratio"])
    assert sorted(bs for _, bs in summaries) == [1, 4]
    for frame in summaries.values():
        assert frame.loc["dense", "accuracy"] == 1.0 and frame.loc["dense", "gzip_ratio"] == 1.0
        assert frame.loc["sparse", "gzip_ratio"] > 2.0
        assert frame.loc["sparse", "nonzero_params"] < 0.3 * frame.loc["dense", "nonzero_params"]


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_ratio_outside_range_is_a_clear_error(bad):
    m = models.build("small_cnn", in_size=8)
    for call in (lambda: prune.prune_unstructured_(m, bad), lambda: prune.prune_global_(m, bad),
                 lambda: prune.fine_grained_prune(torch.ones(3), bad),
                 lambda: prune.prune_channels(m, bad, X8),
                 lambda: prune.sensitivity_scan(m, lambda _: 1.0, [0.5, bad])):
        with pytest.raises(OptkitError, match=r"\[0, 1\)|number"):
            call()


def test_unknown_layer_lists_known_ones():
    m = models.build("small_cnn", in_size=8)
    with pytest.raises(OptkitError, match="conv2") as e:
        prune.prune_unstructured_(m, {"conv3": 0.5})
    assert "conv3" in str(e.value) and "fc1" in str(e.value)
    with pytest.raises(OptkitError, match="fc1"):
        prune.prune_channels(m, {"nope": 0.5}, X8)
    with pytest.raises(OptkitError, match="conv1"):
        prune.sensitivity_scan(m, lambda _: 1.0, layers=["relu1"])


def test_structured_pruning_of_unshrinkable_layer_is_refused():
    m = models.build("small_cnn", in_size=8)
    with pytest.raises(OptkitError, match="model output"):
        prune.prune_channels(m, {"fc2": 0.5}, X8)

    class Cat(nn.Module):  # channels that meet in torch.cat: not followed, so refused
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.head(torch.cat([self.a(x), self.b(x)], dim=1)).mean((2, 3))

    with pytest.raises(OptkitError, match="cat"):
        prune.prune_channels(Cat(), {"a": 0.5}, X8)


def test_two_ratios_for_one_residual_group_is_refused():
    m = tiny_resnet()
    with pytest.raises(OptkitError, match="residual"):
        prune.prune_channels(m, {"layer1.0.conv2": 0.5, "stem.conv": 0.25}, X8)


def test_untraceable_model_and_masked_model_are_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.c(x) if x.sum() > 0 else -self.c(x)

    with pytest.raises(OptkitError, match="torch.fx"):
        prune.prune_channels(Branchy(), 0.5, X8)
    m = prune.prune_global_(models.build("small_cnn", in_size=8), 0.5)
    with pytest.raises(OptkitError, match="make_permanent"):
        prune.prune_channels(m, 0.5, X8)


# --------------------------------------------------------------------------- structured removal

def test_channel_groups_follow_residual_adds():
    groups = prune.channel_groups(tiny_resnet(), X8)
    stem = next(g for g in groups if "stem.conv" in g.producers)
    assert stem.residual and stem.prunable
    assert {"layer1.0.conv2", "layer1.1.conv2"} <= set(stem.producers)
    assert "layer2.0.downsample.0" in [c for c, _ in stem.consumers]
    last = next(g for g in groups if "layer3.0.downsample.0" in g.producers)
    assert ("fc", 1) in last.consumers
    head = next(g for g in groups if "fc" in g.producers)
    assert not head.prunable


def test_resnet_half_channels_has_expected_shapes_and_runs():
    m = tiny_resnet()
    p = prune.prune_channels(m, 0.5, X8)
    assert m.stem.conv.out_channels == 8, "the original must be untouched"
    assert p.stem.conv.out_channels == 4 and p.stem.bn.num_features == 4
    assert p.layer1[0].conv1.in_channels == 4 and p.layer1[0].conv1.out_channels == 4
    assert p.layer2[0].downsample[0].in_channels == 4 and p.layer2[0].downsample[0].out_channels == 8
    assert p.layer2[0].conv2.out_channels == 8 and p.layer2[0].bn2.num_features == 8
    assert p.layer3[1].conv2.out_channels == 16 and p.fc.in_features == 16 and p.fc.out_features == 10
    with torch.no_grad():
        assert p(X8).shape == (4, 10)
        assert p(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    assert models.count_params(p) < 0.3 * models.count_params(m)
    assert models.count_macs(p, X8[:1]) < 0.3 * models.count_macs(m, X8[:1])


def test_smallcnn_flatten_into_linear_is_followed():
    torch.manual_seed(0)
    m = models.build("small_cnn", in_size=8).eval()
    p = prune.prune_channels(m, {"conv2": 0.25, "fc1": 0.5}, X8, norm="l2")
    assert p.conv2.out_channels == 24 and p.fc1.in_features == 24 * 2 * 2
    assert p.fc1.out_features == 64 and p.fc2.in_features == 64
    with torch.no_grad():
        assert p(X8).shape == (4, 10)


def _kept(model, group_layer, ratio, x, norm="l1"):
    g = next(g for g in prune.channel_groups(model, x) if group_layer in g.producers)
    score = prune.channel_importance(model, g, norm)
    n_keep = g.channels - round(ratio * g.channels)
    return torch.sort(torch.topk(score, n_keep).indices).values


def _activation(model, name, x):
    out = {}
    h = model.get_submodule(name).register_forward_hook(lambda mod, i, o: out.setdefault("y", o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    return out["y"]


@pytest.mark.parametrize("layer,watch", [("layer1.0.conv1", "layer1.0.relu1"),
                                          ("stem.conv", "stem.relu"),
                                          ("layer2.0.conv2", "layer2.0.relu2")])
def test_kept_channels_activations_unchanged_right_after_removal(layer, watch):
    m = tiny_resnet()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
    keep = _kept(m, layer, 0.5, X8)
    p = prune.prune_channels(m, {layer: 0.5}, X8)
    before, after = _activation(m, watch, X8), _activation(p, watch, X8)
    assert after.shape[1] == len(keep)
    torch.testing.assert_close(after, before[:, keep], rtol=1e-5, atol=1e-6)


def test_removing_dead_channels_leaves_outputs_identical():
    torch.manual_seed(0)
    m = models.build("small_cnn", in_size=8).eval()
    with torch.no_grad():  # channels whose filters and bias are zero contribute nothing after ReLU
        m.conv1.weight[::2] = 0
        m.conv1.bias[::2] = 0
        m.conv2.weight[1::4] = 0
        m.conv2.bias[1::4] = -1.0
        y = m(X8)
    p = prune.prune_channels(m, {"conv1": 0.5, "conv2": 0.25}, X8)
    assert p.conv1.out_channels == 8 and p.conv2.in_channels == 8 and p.conv2.out_channels == 24
    with torch.no_grad():
        torch.testing.assert_close(p(X8), y, rtol=1e-5, atol=1e-6)


def test_naive_removal_breaks_at_the_residual_add():
    m = tiny_resnet()
    block = m.layer1[0]
    keep = list(range(4))
    block.conv2 = prune.prune_conv_out_channels(block.conv2, keep)
    block.bn2 = prune.prune_batchnorm(block.bn2, keep)
    with pytest.raises(RuntimeError, match="size of tensor"):
        with torch.no_grad():
            m(X8)


def test_primitives_are_pure_and_check_indices():
    conv = nn.Conv2d(3, 6, 3)
    w = conv.weight.detach().clone()
    new = prune.prune_conv_out_channels(conv, [0, 5])
    assert new.weight.shape == (2, 3, 3, 3) and torch.equal(conv.weight, w)
    assert torch.equal(new.weight[1], w[5])
    lin = prune.prune_linear_in_features(nn.Linear(12, 2), [2], block=4)
    assert lin.in_features == 4
    with pytest.raises(OptkitError, match="outside"):
        prune.prune_conv_in_channels(conv, [0, 3])
    with pytest.raises(OptkitError, match="no channel"):
        prune.prune_batchnorm(nn.BatchNorm2d(4), [])


def test_round_to_keeps_multiples():
    p = prune.prune_channels(tiny_resnet(), 0.3, X8, round_to=4)
    for mod in p.modules():
        if isinstance(mod, nn.Conv2d) and mod.in_channels > 1:
            assert mod.out_channels % 4 == 0


def test_dependency_graph_is_public_and_gives_the_same_groups():
    m = tiny_resnet()
    graph = prune.DependencyGraph(m, X8)
    groups = graph.groups()
    assert [g.producers for g in groups] == [g.producers for g in prune.channel_groups(m, X8)]
    assert all(isinstance(g, prune.Group) for g in groups)
    assert prune.ChannelGroup is prune.Group  # the 0.1 name
    assert repr(groups[1]).startswith("Group(")
    with pytest.raises(OptkitError, match="not a tensor"):
        prune.DependencyGraph(m, [1, 2])


# --------------------------------------------------------------------------- 0.1 names

def test_old_names_still_work_with_a_warning():
    torch.manual_seed(0)
    m = models.build("small_cnn", in_size=8)
    with pytest.warns(DeprecationWarning, match="prune_global_"):
        assert prune.prune_global(m, 0.5) is m
    with pytest.warns(DeprecationWarning, match="prune_unstructured_"):
        assert prune.prune_unstructured(m, 0.6) is m
    assert abs(prune.sparsity_report(m)["fc1"].sparsity - 0.6) < 1e-3
    with pytest.warns(DeprecationWarning, match=r"channel_ratio"):
        p = prune.prune_channels(models.build("small_cnn", in_size=8), ratio={"conv1": 0.5}, example_input=X8)
    assert p.conv1.out_channels == 8
    with pytest.raises(OptkitError, match="channel_ratio"):
        prune.prune_channels(models.build("small_cnn", in_size=8), 1.5, X8)


def test_iterative_prune_accepts_target_sparsity_with_a_warning():
    torch.manual_seed(0)
    m = models.build("small_cnn", in_size=8)
    with pytest.warns(DeprecationWarning, match=r"sparsity=\.\.\."):
        hist = prune.iterative_prune(m, target_sparsity=0.5, evaluate_fn=lambda _: 1.0, steps=1)
    assert abs(hist.final_sparsity - 0.5) < 1e-3
    with pytest.raises(OptkitError, match="target_sparsity"):
        prune.iterative_prune(m, target_sparsity=0.5, sparsity=0.5, evaluate_fn=lambda _: 1.0)


# --------------------------------------------------------------------------- accuracy on real data

def test_sensitivity_scan_restores_weights_and_ranks_ratios(trained_cnn, digits):
    m = copy.deepcopy(trained_cnn)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    scan = prune.sensitivity_scan(m, lambda net: acc(net, digits, "val"), ratios=[0.0, 0.5, 0.95])
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k])
    assert list(scan.scores) == ["conv1", "conv2", "fc1", "fc2"]
    for layer, scores in scan.scores.items():
        assert scores[0] == pytest.approx(scan.dense_score)
        assert scores[2] <= scores[0] + 0.02
    assert scan.choose_ratios(max_drop=1.0) == {n: 0.95 for n in scan.scores}
    assert set(scan.to_frame().columns) == {"0.00", "0.50", "0.95"}


def test_global_80_percent_then_fine_tune_keeps_accuracy(trained_cnn, digits):
    base = acc(trained_cnn, digits)
    assert base > 0.9
    m = copy.deepcopy(trained_cnn)
    hist = prune.iterative_prune(m, 0.8, lambda net: acc(net, digits, "val"),
                                 lambda net: _train(net, digits, epochs=2, lr=1e-3), steps=2)
    assert len(hist.steps) == 2
    assert abs(hist.final_sparsity - 0.8) < 1e-3
    report = prune.sparsity_report(m)
    assert abs(report.zeros - 0.8 * report.total) <= 1, "fine-tuning must not regrow pruned weights"
    prune.make_permanent(m)
    assert acc(m, digits) >= base - 0.03  # stated drop: at most 3 points on this small test split


def test_iterative_prune_stops_on_accuracy_drop_and_undoes_the_step(trained_cnn, digits):
    m = copy.deepcopy(trained_cnn)
    hist = prune.iterative_prune(m, 0.99, lambda net: acc(net, digits, "val"), None, steps=3,
                                 schedule="linear", max_drop=0.0, scope="layer")
    assert "stopped" in hist.stopped
    assert hist.final_sparsity < 0.99
    assert all(hist.dense_score - s.score_tuned <= 0.0 for s in hist.steps)
    assert acc(m, digits, "val") >= hist.dense_score


def test_structured_half_channels_fine_tuned_keeps_accuracy(trained_cnn, digits):
    base = acc(trained_cnn, digits)
    assert base > 0.95
    p = prune.prune_channels(trained_cnn, 0.5, digits.example_batch(2))
    assert (p.conv1.out_channels, p.conv2.out_channels, p.fc1.out_features) == (8, 16, 64)
    _train(p, digits, epochs=4, lr=2e-3)
    assert acc(p, digits) >= base - 0.03  # stated drop: at most 3 points after 4 short epochs


def test_recalibrate_batchnorm_matches_fresh_statistics_and_keeps_weights():
    torch.manual_seed(0)
    m = models.build("resnet_cnn", widths=(8, 16, 32)).train()
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    weights = {k: v.clone() for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k}
    prune.recalibrate_batchnorm(m, x, batch_size=64)
    assert m.training and all(mod.training for mod in m.modules())  # modes restored
    for k, v in weights.items():
        assert torch.equal(m.state_dict()[k], v)
    # one batch with cumulative averaging: the running mean is that batch's channel mean
    stem_out = m.stem.conv(x)
    torch.testing.assert_close(m.stem.bn.running_mean, stem_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert m.stem.bn.momentum == 0.1
    assert prune.recalibrate_batchnorm(models.build("small_cnn", in_size=8), x) is not None
