"""optkit.techniques.quantize: weight-only int8/int4, 4-bit packing, low-bit PTQ/QAT and compile_frozen's scope."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from optkit.core import sizes, verify
from optkit.core.errors import OptkitError
from optkit.techniques import quantize as Q


def test_pack_int4_round_trip_and_half_the_bytes():
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 64):
        q = torch.randint(-8, 8, (n,), generator=g, dtype=torch.int8)
        packed = Q.pack_int4(q)
        assert packed.dtype == torch.uint8 and packed.numel() == (n + 1) // 2
        assert torch.equal(Q.unpack_int4(packed, n), q)
    assert Q.pack_int4(torch.tensor([-8, 7], dtype=torch.int8)).tolist() == [0x78]  # low nibble first
    with pytest.raises(OptkitError, match="^q="):
        Q.pack_int4(torch.tensor([8], dtype=torch.int8))
    with pytest.raises(OptkitError, match="^q="):
        Q.pack_int4(torch.tensor([0.5]))
    with pytest.raises(OptkitError, match="^numel="):
        Q.unpack_int4(torch.zeros(2, dtype=torch.uint8), 5)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 64)
        self.fc = nn.Linear(64, 64)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


def test_weight_only_int8_and_int4_store_integers_and_stay_close():
    torch.manual_seed(0)
    model = _Tiny().eval()
    ids = torch.randint(0, 50, (8, 5))
    ref = model(ids).detach()
    q8 = Q.weight_only(model, 8, kinds=("linear", "embedding"))
    q4 = Q.weight_only(model, 4, kinds="linear", group_size=32)
    assert q8.precision == "int8-weight-only" and q4.precision == "int4"
    assert verify.sqnr(ref, q8.model(ids)) > 30  # int8: ~40 dB on random weights
    assert verify.sqnr(ref, q4.model(ids)) > 12  # int4 with groups of 32: ~20 dB
    assert Q.weight_storage(q8.module).get("int8", 0) >= 64 * 64 + 50 * 64
    assert q8.size_bytes < sizes.model_size(model) / 2.5
    assert q4.info["packed_bytes"] < q4.size_bytes  # two 4-bit codes per byte
    assert type(model.fc.weight) is nn.Parameter  # the input model is untouched
    with pytest.raises(OptkitError, match="^bits="):
        Q.weight_only(model, 6)
    with pytest.raises(OptkitError, match="^group_size="):
        Q.weight_only(model, 4, group_size=48)
    with pytest.raises(OptkitError, match="^kinds="):
        Q.weight_only(model, 8, kinds="conv2d")


def test_fewer_weight_bits_cost_sqnr(digits):
    from optkit.data import models

    models.set_seed(0)
    net = models.build("mlp", in_features=64, hidden=(64, 32))
    models.train(net, digits, epochs=2, progress=False)
    net.eval()
    calib = [torch.from_numpy(digits.calib.x[:64])]
    x = torch.from_numpy(digits.test.x)
    ref = net(x).detach()
    q8 = Q.static_int8(net, calib, digits.example_batch(1), compile=False)
    q4 = Q.static_int8(net, calib, digits.example_batch(1), compile=False, per_channel=False, weight_bits=4)
    assert q4.info["weight_bits"] == 4 and "4-bit" in q4.technique
    assert verify.sqnr(ref, q4.module(x)) < verify.sqnr(ref, q8.module(x)) - 6
    with pytest.raises(OptkitError, match="^weight_bits="):
        Q.static_int8(net, calib, digits.example_batch(1), compile=False, weight_bits=9)


def test_compile_frozen_leaves_the_global_freezing_flag_alone():
    import torch._inductor.config as inductor_config

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(4, 8)
    before = inductor_config.freezing
    compiled = Q.compile_frozen(net)
    assert inductor_config.freezing == before
    out = compiled(x)  # compiles now (autograd on: the wrapper turns it off, as freezing needs)
    assert inductor_config.freezing == before
    assert not out.requires_grad
    torch.testing.assert_close(out, net(x).detach(), rtol=1e-4, atol=1e-5)
    assert compiled._orig_mod is net
    with pytest.raises(OptkitError, match="^module="):
        Q.compile_frozen(lambda t: t)


def test_compile_frozen_runs_every_call_under_freezing(monkeypatch):
    """Any call may recompile (a new shape, or a guard that failed: no_grad then inference_mode),
    so every call runs with freezing on: a recompile outside it ran int8 ResNetCNN 4x slower."""
    import torch._inductor.config as inductor_config

    seen = []

    def fake_compile(module, dynamic=None):
        def run(x):
            seen.append((inductor_config.freezing, torch.is_grad_enabled()))
            return module(x)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = nn.Linear(3, 2).eval()
    compiled = Q.compile_frozen(net)
    before = inductor_config.freezing
    compiled(torch.randn(2, 3))  # a new shape
    with torch.inference_mode():
        compiled(torch.randn(2, 3))  # the same shape in another grad mode: dynamo may recompile
    compiled(torch.randn(5, 3))  # a new shape again
    assert seen == [(True, False)] * 3
    assert inductor_config.freezing == before
