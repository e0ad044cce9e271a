"""optkit.techniques.compress: k-means sharing, storage accounting, SVD factorization, efficient blocks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from optkit.techniques import compress
from optkit.course.exercises import nb05 as exercises
from optkit.data import models
from optkit.core import report, variant
from optkit.core.errors import OptkitError


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return models.SmallCNN(in_size=8).eval()


def test_kmeans_holds_at_most_k_values_and_assigns_nearest():
    torch.manual_seed(1)
    w = torch.randn(40, 30)
    for k in (1, 2, 5, 16):
        centroids, idx = compress.kmeans_1d(w, k)
        rebuilt = centroids[idx]
        assert rebuilt.shape == w.shape and torch.unique(rebuilt).numel() <= k
        nearest = (w.reshape(-1, 1) - centroids.reshape(1, -1)).abs().argmin(1).reshape(w.shape)
        assert torch.equal(centroids[nearest], rebuilt)
    # every value its own centroid: exact
    c, idx = compress.kmeans_1d(torch.tensor([3.0, -1.0, 0.5]), 3)
    assert torch.equal(c[idx], torch.tensor([3.0, -1.0, 0.5]))


def test_kmeans_rejects_k_larger_than_the_weights():
    with pytest.raises(OptkitError) as err:
        compress.kmeans_1d(torch.randn(10), 11)
    assert str(err.value).startswith("k=11: is larger than the number of weights (10)")
    with pytest.raises(OptkitError, match="larger than the number of weights of 'fc2'"):
        compress.share_weights(models.SmallCNN(in_size=8), {"fc2": 10_000})
    with pytest.raises(OptkitError, match="k=0"):
        compress.kmeans_1d(torch.randn(10), 0)


def test_shared_layers_hold_at_most_k_values_and_match_their_dense_form(net):
    shared = compress.share_weights(net, 8)
    layers = compress.shared_layers(shared)
    assert set(layers) == {"conv1", "conv2", "fc1", "fc2"}
    for layer in layers.values():
        assert layer.distinct_values() <= 8 and layer.indices.dtype == torch.uint8
    x = torch.randn(5, 1, 8, 8)
    dense = compress.decompress(shared)
    assert not compress.shared_layers(dense)
    assert torch.allclose(dense(x), shared(x), atol=1e-6)
    assert isinstance(dense.fc1, nn.Linear) and isinstance(dense.conv1, nn.Conv2d)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients(net):
    layer = compress.SharedLinear.from_linear(net.fc2, k=4)
    x = torch.randn(3, net.fc2.in_features)
    w = layer.weight.detach().clone().requires_grad_(True)
    (nn.functional.linear(x, w, layer.bias) ** 2).sum().backward()
    (layer(x) ** 2).sum().backward()
    idx = layer.indices.long()
    want = torch.stack([w.grad[idx == c].sum() for c in range(4)])
    assert torch.allclose(layer.codebook.grad, want, atol=1e-5)


def test_shared_state_dict_round_trips(net):
    shared = compress.share_weights(net, 16)
    fresh = compress.SharedConv2d(1, 16, 3, padding=1, k=16)
    fresh.load_state_dict(shared.conv1.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(fresh(x), shared.conv1(x))


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip_at_every_width(bits):
    g = torch.Generator().manual_seed(bits)
    n = 1001
    idx = torch.randint(0, 2 ** bits, (n,), generator=g)
    packed = compress.pack_indices(idx, bits)
    assert len(packed) == math.ceil(n * bits / 8)
    assert torch.equal(compress.unpack_indices(packed, bits, n), idx)


def test_pack_rejects_indices_too_wide():
    with pytest.raises(OptkitError, match="does not fit in 2 bits"):
        compress.pack_indices(torch.tensor([0, 4]), 2)


def test_storage_report_counts_bits_and_codebooks(net):
    assert [compress.index_bits(k) for k in (1, 2, 3, 4, 5, 16, 17, 256)] == [0, 1, 2, 2, 3, 4, 5, 8]
    shared = compress.share_weights(net, 16)
    rep = compress.storage_report(shared)
    fc1 = next(layer for layer in rep.layers if layer.name == "fc1")
    n = net.fc1.weight.numel()
    assert (fc1.index_bytes, fc1.codebook_bytes, fc1.fp32_bytes) == (math.ceil(n * 4 / 8), 64, 4 * n)
    assert fc1.int8_bytes == n + 4 * net.fc1.out_features
    assert rep.fp32_bytes == 4 * sum(m.weight.numel() for m in (net.conv1, net.conv2, net.fc1, net.fc2))
    biases = 4 * sum(m.bias.numel() for m in (net.conv1, net.conv2, net.fc1, net.fc2))
    assert rep.other_bytes == biases
    packed = sum(len(compress.pack_indices(m.indices, 4)) for m in compress.shared_layers(shared).values())
    assert packed == sum(layer.index_bytes for layer in rep.layers)
    # 4-bit indices + small codebooks: close to 8x smaller than fp32
    assert 7.0 < rep.ratio < 8.0 and rep.int8_ratio < 4.0
    dense_rep = compress.storage_report(net)
    assert dense_rep.ratio == pytest.approx(1.0) and "StorageReport" in repr(dense_rep)


@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_factorized_linear_at_full_rank_reproduces_the_original(shape):
    torch.manual_seed(2)
    lin = nn.Linear(shape[1], shape[0])
    low = compress.factorize_linear(lin, min(shape))
    x = torch.randn(7, shape[1])
    assert torch.allclose(low(x), lin(x), atol=1e-5)
    assert low.rank == low.full_rank == min(shape)


def test_factorized_conv_at_full_rank_reproduces_the_original():
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    low = compress.factorize_conv2d(conv, 6)
    x = torch.randn(2, 4, 9, 9)
    assert torch.allclose(low(x), conv(x), atol=1e-5)
    wide = nn.Conv2d(2, 32, 3, padding=1, bias=False)  # full rank = min(32, 2 * 9) = 18
    low_wide = compress.factorize_conv2d(wide, 18)
    assert low_wide.second.bias is None and torch.allclose(low_wide(x[:, :2]), wide(x[:, :2]), atol=1e-5)


def test_truncated_factorization_is_the_best_rank_r_approximation():
    torch.manual_seed(4)
    lin = nn.Linear(30, 10, bias=False)
    s = compress.singular_values(lin)
    for r in (1, 4, 9):
        low = compress.factorize_linear(lin, r)
        product = low.second.weight @ low.first.weight
        err = torch.linalg.norm(lin.weight - product)
        assert float(err.detach()) == pytest.approx(float(s[r:].pow(2).sum().sqrt()), rel=1e-4)


def test_rank_above_full_rank_and_bad_layers_are_clear_errors():
    with pytest.raises(OptkitError) as err:
        compress.factorize_linear(nn.Linear(8, 5), 6)
    assert str(err.value).startswith("rank=6: is above the full rank") and "between 1 and 5" in str(err.value)
    with pytest.raises(OptkitError, match="rank=0"):
        compress.factorize_conv2d(nn.Conv2d(3, 4, 3), 0)
    with pytest.raises(OptkitError, match="grouped"):
        compress.factorize_conv2d(nn.Conv2d(4, 4, 3, groups=4), 1)
    with pytest.raises(OptkitError, match="exactly one"):
        compress.choose_rank(nn.Linear(8, 8))


def test_choose_rank_by_energy_and_by_compression():
    w = torch.diag(torch.tensor([4.0, 2.0, 1.0, 1.0]))  # energies 16, 4, 1, 1 of 22
    assert compress.choose_rank(w, energy=16 / 22) == 1
    assert compress.choose_rank(w, energy=0.9) == 2
    assert compress.choose_rank(w, energy=1.0) == 4
    lin = nn.Linear(1568, 128)
    r = compress.choose_rank(lin, compression=2.0)
    assert r * (1568 + 128) <= 1568 * 128 / 2 < (r + 1) * (1568 + 128)
    with pytest.raises(OptkitError, match="cannot be reached"):
        compress.choose_rank(nn.Linear(2, 2), compression=4.0)


def test_factorize_model_replaces_layers_drop_in(net):
    small = compress.factorize(net, layers=["fc1", "conv2"], compression=2.0)
    assert isinstance(small.fc1, compress.LowRankLinear) and isinstance(small.conv2, compress.LowRankConv2d)
    assert isinstance(net.fc1, nn.Linear)  # original untouched
    x = torch.randn(3, 1, 8, 8)
    assert small(x).shape == net(x).shape
    fc1_params = sum(p.numel() for p in small.fc1.parameters())
    assert fc1_params <= sum(p.numel() for p in net.fc1.parameters()) / 2 + net.fc1.out_features
    full = compress.factorize(net, {"fc1": 128, "conv2": 32})
    assert torch.allclose(full(x), net(x), atol=1e-4)
    with pytest.raises(OptkitError, match="not a Linear or Conv2d"):
        compress.factorize(net, {"relu1": 2})


def test_macs_of_a_factorized_model_count_the_thin_layers_only(net):
    x = torch.zeros(1, 1, 8, 8)
    low = compress.factorize(net, {"fc1": 8, "conv2": 4})
    saved_fc1 = 128 * 128 - 8 * (128 + 128)
    saved_conv2 = 4 * 4 * 32 * 16 * 9 - 4 * 4 * (4 * 16 * 9 + 32 * 4)  # 4x4 output pixels after the first pool
    assert models.count_macs(low, x) == models.count_macs(net, x) - saved_fc1 - saved_conv2


def test_efficient_blocks_keep_shapes_and_cut_parameters():
    c, x = 32, torch.randn(2, 32, 14, 14)
    std = compress.ConvBNReLU(c, c)
    ds = compress.DepthwiseSeparableConv(c, c)
    ir = compress.InvertedResidual(c, c, expansion=6)
    for block in (std, ds, ir):
        assert block.eval()(x).shape == (2, c, 14, 14)
    conv_params = lambda m: sum(p.numel() for mod in m.modules() if isinstance(mod, nn.Conv2d)  # noqa: E731
                                for p in mod.parameters())
    assert conv_params(std) == 9 * c * c
    assert conv_params(ds) == 9 * c + c * c
    assert conv_params(ir) == 2 * 6 * c * c + 9 * 6 * c
    assert ir.use_residual and not compress.InvertedResidual(c, 64, stride=2).use_residual
    assert compress.InvertedResidual(c, 64, stride=2).eval()(x).shape == (2, 64, 7, 7)
    assert models.count_macs(ds.eval(), x[:1]) == 14 * 14 * (9 * c + c * c)


def test_as_variant_sizes_by_what_is_stored_and_runs_the_dense_form(net):
    shared = compress.share_weights(net, 4).train()
    x1 = torch.randn(1, 1, 8, 8)
    dense = compress.as_variant("k-means 4", shared, x1, technique="weight sharing", config={"k": 4})
    codebook = compress.as_variant("codebook", shared, x1, technique="weight sharing", dense=False)
    fp32 = compress.as_variant("fp32", net, x1, technique="baseline")
    assert not shared.training  # put in eval mode: evaluation refuses training mode
    assert dense.size_bytes == codebook.size_bytes == compress.storage_report(shared).model_bytes
    assert fp32.size_bytes == 4 * models.count_params(net)  # SmallCNN: every parameter fp32, no buffers
    assert not compress.shared_layers(dense.predict) and codebook.predict is shared
    assert dense.params == models.count_params(net) > codebook.params  # codebook form: codebooks + biases only
    assert dense.macs == codebook.macs == models.count_macs(net, x1)
    assert dense.precision == "fp32" and dense.is_float and dense.config == {"k": 4}
    # through the one measurement path: the dense form computes what the codebook form computes
    x = torch.randn(40, 1, 8, 8)
    y = net.eval()(x).argmax(1).numpy()
    workload = variant.Workload("SmallCNN 8x8", "random", "random (40)")
    records = variant.evaluate([fp32, dense, codebook], workload, data=(x, y), inputs={4: x[:4]}, max_time_s=0.02,
                               rounds=1, reference="k-means 4", progress=False, memory=False)
    by_name = {r.name: r for r in records}
    assert by_name["fp32"].accuracy == 1.0
    assert by_name["k-means 4"].accuracy == by_name["codebook"].accuracy
    assert by_name["k-means 4"].size_bytes < by_name["fp32"].size_bytes / 7
    parity = by_name["codebook"].parity
    assert parity["top1_agreement"] == 1.0 and parity["max_abs"] < 1e-5


def test_compare_blocks_keeps_the_faster_layout_under_its_own_workload():
    c, x = 8, torch.randn(2, 8, 6, 6)
    blocks = {"standard": compress.ConvBNReLU(c, c), "depthwise-separable": compress.DepthwiseSeparableConv(c, c)}
    records = compress.compare_blocks(blocks, x, max_time_s=0.02, rounds=1, env={})
    assert [r.name for r in records] == list(blocks)
    for r, block in zip(records, blocks.values()):
        times = {layout: r.extra[f"latency_{layout}_ms"] for layout in compress.LAYOUTS}
        assert r.latency_ms == min(times.values()) == times[r.extra["layout"]]
        assert r.batch_size == 2 and r.macs == models.count_macs(block, x[:1]) and r.params == models.count_params(block)
        assert r.workload == records[0].workload == "conv blocks, 8 channels · random input (2, 8, 6, 6)"
        assert r.p95_ms is not None and r.peak_mem_bytes is not None and r.peak_mem_bytes >= 0
    assert all(p.is_contiguous() for b in blocks.values() for p in b.parameters())  # the blocks are left alone
    table = report.table(records, baseline="standard")
    assert table.loc["standard", "speedup"] == 1.0
    # a block on a random feature map never shares a table (or a ratio) with a model on a dataset
    model_record = records[0].replace(name="fp32", workload="SmallCNN · Fashion-MNIST test (10,000)")
    with pytest.raises(OptkitError, match="one workload"):
        report.table(records + [model_record], baseline="fp32")
    assert len(report.tables(records + [model_record], baseline="fp32")) == 2


def test_compare_blocks_refuses_blocks_that_do_different_jobs():
    x = torch.randn(1, 8, 6, 6)
    with pytest.raises(OptkitError, match="differs from 'standard'"):
        compress.compare_blocks({"standard": compress.ConvBNReLU(8, 8),
                                 "strided": compress.InvertedResidual(8, 8, stride=2)}, x, max_time_s=0.01)
    with pytest.raises(OptkitError, match="4-D"):
        compress.compare_blocks({"standard": compress.ConvBNReLU(8, 8)}, torch.randn(8, 6, 6))
    with pytest.raises(OptkitError, match="non-empty dict"):
        compress.compare_blocks({}, x)


def test_exercise_checkers_accept_reference_and_reject_common_mistakes(capsys):
    assert exercises.check_shared_storage_bytes(exercises.reference_shared_storage_bytes)
    assert not exercises.check_shared_storage_bytes(lambda n, k: math.ceil(n * math.log2(max(k, 2)) / 8))
    assert exercises.check_low_rank(exercises.reference_low_rank)

    def smallest(w, r):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, -r:] * s[-r:], vh[-r:]

    assert not exercises.check_low_rank(smallest)
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and out.count("✗") == 2


def test_forward_call_runs_the_module_without_autograd_and_refuses_bad_input():
    torch.manual_seed(0)
    lin, x = torch.nn.Linear(6, 24), torch.randn(10, 6)
    seen = []
    lin.register_forward_hook(lambda m, i, o: seen.append((o.shape, o.requires_grad)))
    assert compress.forward_call(lin, x)() is None
    assert seen == [((10, 24), False)]  # one forward, under inference_mode
    # a factorized layer is a drop-in: the same call works on it, and at full rank the output is the same
    low = compress.factorize_linear(lin, 6)
    with torch.inference_mode():
        assert torch.allclose(low(x), lin(x), atol=1e-5)
    compress.forward_call(low, x)()
    with pytest.raises(OptkitError, match="not a torch module"):
        compress.forward_call(lambda t: t, x)
    with pytest.raises(OptkitError, match="not a tensor"):
        compress.forward_call(lin, [[1.0] * 6])
