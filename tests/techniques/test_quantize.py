"""Invariants of optkit.techniques.quantize: the arithmetic on hand-made tensors, then each recipe on
sklearn digits with tiny models (no timing, no compilation: the whole file runs in seconds)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from optkit import data
from optkit.data import models
from optkit.techniques import quantize as Q
from optkit.core import sizes, verify
from optkit.core.errors import OptkitError

# A hand-made 5x5 tensor: rows are the same pattern scaled 1..5, so per-channel scales differ by row.
X55 = torch.tensor([[-1.0, 0.0, 0.5, 1.0, 2.0]] * 5) * torch.arange(1, 6, dtype=torch.float32)[:, None]


# ------------------------------------------------------------------------------- arithmetic

def test_qrange():
    assert Q.qrange(8) == (-128, 127)
    assert Q.qrange(4) == (-8, 7)
    assert Q.qrange(2) == (-2, 1)
    for bad in (1, 9, 8.0, True):
        with pytest.raises(OptkitError, match="bits"):
            Q.qrange(bad)


def test_asymmetric_per_tensor_exact_values():
    scale, zp = Q.choose_qparams(X55)  # range [-5, 10] over [-128, 127]
    assert scale.shape == () and zp.shape == ()
    assert math.isclose(float(scale), 15 / 255, rel_tol=1e-6)
    assert int(zp) == round(-128 + 5 / (15 / 255)) == -43
    q = Q.quantize(X55, scale, zp)
    assert q.dtype == torch.int8
    # zero is exactly representable: it maps to the zero point and back to 0.0
    assert int(q[0, 1]) == int(zp)
    assert float(Q.dequantize(q, scale, zp)[0, 1]) == 0.0
    assert int(q.min()) == -128 and int(q.max()) == 127


def test_symmetric_per_channel_exact_values():
    scale, zp = Q.choose_qparams(X55, symmetric=True, axis=0)
    assert scale.shape == (5,) and zp.shape == (5,)
    assert torch.equal(zp, torch.zeros(5, dtype=torch.int32))
    assert torch.allclose(scale, torch.arange(1, 6, dtype=torch.float32) * 2 / 127)
    q = Q.quantize(X55, scale, zp, axis=0)
    # every row is the same pattern on its own grid: -1 -> -64 (round half to even of -63.5), 2 -> 127
    expected = torch.tensor([-64, 0, 32, 64, 127], dtype=torch.int8).expand(5, 5)
    assert torch.equal(q, expected)


def test_per_channel_scale_count_matches_axis():
    w = torch.randn(16, 8, 3, 3)
    s0, z0 = Q.choose_qparams(w, symmetric=True, axis=0)
    s1, _ = Q.choose_qparams(w, axis=1)
    assert s0.shape == (16,) and z0.shape == (16,) and s1.shape == (8,)
    assert Q.quantize(w, s0, z0, axis=0).shape == w.shape


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_round_trip_error_at_most_half_a_step(symmetric, axis, bits):
    torch.manual_seed(0)
    x = torch.randn(6, 50) * torch.linspace(0.1, 3, 6)[:, None]
    scale, zp = Q.choose_qparams(x, bits, symmetric, axis)
    err = (x - Q.dequantize(Q.quantize(x, scale, zp, bits, axis), scale, zp, axis)).abs()
    bound = scale[:, None] if axis == 0 else scale
    assert bool((err <= bound / 2 + 1e-6).all())
    assert torch.allclose(Q.quantization_error(x, bits, symmetric, axis), x - Q.fake_quantize(x, bits, symmetric, axis))


def test_sqnr_floors_and_six_db_per_bit():
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    s8 = Q.sqnr(w, Q.fake_quantize(w, 8, symmetric=True, axis=0))
    s4 = Q.sqnr(w, Q.fake_quantize(w, 4, symmetric=True, axis=0))
    assert s8 > 35.0  # stated floor for 8-bit per-channel weights of a Gaussian layer
    assert s4 > 12.0
    assert 18.0 < s8 - s4 < 30.0  # about 6 dB per bit
    assert Q.sqnr(w, w) == math.inf
    assert Q.sqnr is verify.sqnr  # one implementation, named where 02 teaches it


def test_per_channel_beats_per_tensor_when_channels_differ():
    torch.manual_seed(0)
    w = torch.randn(32, 64) * torch.logspace(-2, 0, 32)[:, None]  # channel ranges span 100x
    per_tensor = Q.sqnr(w, Q.fake_quantize(w, 8, symmetric=True))
    per_channel = Q.sqnr(w, Q.fake_quantize(w, 8, symmetric=True, axis=0))
    assert per_channel > per_tensor + 3.0


def test_all_zero_channel_does_not_divide_by_zero():
    w = torch.zeros(3, 4)
    w[1] = 1.0
    out = Q.fake_quantize(w, 8, symmetric=True, axis=0)
    assert torch.isfinite(out).all() and torch.allclose(out, w)


def test_arithmetic_bad_input():
    with pytest.raises(OptkitError, match="axis"):
        Q.choose_qparams(X55, axis=2)
    with pytest.raises(OptkitError, match="floating-point"):
        Q.choose_qparams(torch.ones(3, dtype=torch.int64))
    scale, zp = Q.choose_qparams(X55, axis=0)
    with pytest.raises(OptkitError, match="axis"):
        Q.quantize(X55, scale, zp)  # per-channel parameters without the axis
    with pytest.raises(OptkitError, match="size"):
        Q.sqnr(torch.ones(3), torch.ones(4))


# ------------------------------------------------------------------------------- recipes

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny models gain nothing from two, and on a busy 2-core machine
    spinning OpenMP workers can make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def _train(model, ds, epochs=15):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        models.train(model, ds, epochs=epochs, batch_size=32, lr=3e-3, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def cnn(digits):
    models.set_seed(0)
    return _train(models.build("small_cnn", in_size=8), digits)


@pytest.fixture(scope="module")
def mlp(digits):
    models.set_seed(0)
    return _train(models.build("mlp", in_features=64, hidden=(256, 256)), digits, epochs=3)


def test_static_per_channel_stores_int8_and_keeps_accuracy(digits, cnn):
    base = models.evaluate(cnn, digits).accuracy
    assert base > 0.95
    q = Q.static_int8(cnn, digits.torch_loader("calib", batch_size=64), digits.example_batch(1), compile=False)
    stored = Q.int8_tensors(q.module)
    assert len(stored) == 4  # conv1, conv2, fc1, fc2 weights
    assert all(dtype == "int8" for dtype, _ in stored.values())
    assert Q.weight_storage(q.module)["int8"] == sum(p.numel() for n, p in cnn.named_parameters() if n.endswith("weight"))
    ev = q.evaluate(digits.test, reference=cnn)
    assert ev["accuracy"] >= base - 0.01  # stated drop: at most 1 point on the real test split
    assert ev["parity"]["sqnr_db"] > 25.0
    assert ev["parity"]["top1_agreement"] >= 0.98
    assert q.info["calibration_examples"] == 200
    # the input model is untouched
    assert all(p.dtype == torch.float32 for p in cnn.parameters())


def test_int8_is_at_least_3_5x_smaller(digits, mlp):
    fp32 = sizes.model_size(mlp)
    static = Q.static_int8(mlp, digits.torch_loader("calib", batch_size=100), digits.example_batch(1), compile=False)
    dynamic = Q.dynamic_int8(mlp)
    legacy = Q.dynamic_int8(mlp, backend="legacy")
    for q in (static, dynamic, legacy):
        assert fp32 / q.size_bytes >= 3.5, (q.technique, fp32, q.size_bytes)
        assert q.evaluate(digits.test, mlp)["parity"]["sqnr_db"] > 25.0


def test_dynamic_torchao_stores_int8(digits, mlp):
    q = Q.dynamic_int8(mlp)
    assert q.info["layers"] == ["fc1", "fc2", "fc3"]
    assert len(Q.int8_tensors(q.module)) == 3
    w = Q.dynamic_int8(mlp, weight_only=True)
    assert len(Q.int8_tensors(w.module)) == 3
    assert w.evaluate(digits.test, mlp)["parity"]["top1_agreement"] >= 0.99


def test_legacy_dynamic_quantizes_lstm():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.lstm = nn.LSTM(16, 32, batch_first=True)
            self.fc = nn.Linear(32, 2)

        def forward(self, ids):
            out, _ = self.lstm(self.emb(ids))
            return self.fc(out[:, -1])

    torch.manual_seed(0)
    model = Tiny().eval()
    q = Q.dynamic_int8(model, kinds=("lstm", "linear"), backend="legacy")
    assert q.module.lstm._get_name() == "DynamicQuantizedLSTM"
    assert Q.weight_storage(q.module).get("int8", 0) >= 4 * 16 * 32 + 4 * 32 * 32
    ids = torch.randint(0, 50, (8, 12))
    with torch.no_grad():
        assert Q.sqnr(model(ids), q(ids)) > 20.0
    with pytest.raises(OptkitError, match="Linear only"):
        Q.dynamic_int8(model, kinds=("lstm",))


def test_per_tensor_and_observers_run(digits, cnn):
    calib = digits.torch_loader("calib", batch_size=64)
    for per_channel, observer in [(False, "minmax"), (True, "minmax"), (True, "moving_average")]:
        q = Q.static_int8(cnn, calib, digits.example_batch(1), per_channel=per_channel, observer=observer,
                          compile=False, max_batches=2)
        assert q.info["calibration_examples"] == 128
        assert q.evaluate(digits.test, cnn)["parity"]["sqnr_db"] > 20.0


def test_qat_converts_to_int8(digits, cnn):
    q = Q.qat_int8(cnn, digits.torch_loader("train", batch_size=64), digits.example_batch(1), steps=10,
                   compile=False)
    assert q.info["steps"] == 10
    assert len(Q.int8_tensors(q.module)) == 4
    assert q.evaluate(digits.test)["accuracy"] > 0.93


def test_sensitivity_and_mixed_precision(digits, cnn):
    ranking = Q.sensitivity(cnn, digits.test, bits=4)
    assert [r.name for r in ranking] != [] and {r.name for r in ranking} == {"conv1", "conv2", "fc1", "fc2"}
    assert [r.sqnr_db for r in ranking] == sorted(r.sqnr_db for r in ranking)
    # the model's weights are restored after each trial
    assert models.evaluate(cnn, digits).accuracy > 0.95
    q = Q.mixed_precision(cnn, digits.torch_loader("calib", batch_size=64), digits.example_batch(1), ranking,
                          keep_float=1, compile=False)
    assert q.info["skip"] == [ranking[0].name]
    assert len(Q.int8_tensors(q.module)) == 3  # one layer kept in float


def test_reduced_float(digits, cnn):
    q = Q.reduced_float(cnn, "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in q.module.parameters())
    assert sizes.model_size(cnn) / q.size_bytes > 1.8
    assert q.evaluate(digits.test, cnn)["parity"]["top1_agreement"] >= 0.98
    if not torch.cuda.is_available():
        with pytest.raises(OptkitError, match="GPU"):
            Q.reduced_float(cnn, "float16")


def test_to_record(digits, cnn):
    q = Q.static_int8(cnn, digits.torch_loader("calib", batch_size=64), digits.example_batch(1), compile=False)
    r = q.to_record("int8 b8", digits.test, reference=cnn, batch_size=8, max_time_s=0.05, warmup=1,
                    min_repeats=3)
    assert r.batch_size == 8 and r.latency_ms > 0 and r.size_bytes == q.size_bytes
    assert r.accuracy > 0.95 and r.parity["sqnr_db"] > 25.0 and r.technique.startswith("int8 static")


# ------------------------------------------------------------------------------- bad input

def test_no_layers_of_requested_kind(digits):
    convs_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    with pytest.raises(OptkitError, match="no layers of that kind"):
        Q.dynamic_int8(convs_only)
    with pytest.raises(OptkitError, match="no layers of that kind"):
        Q.static_int8(nn.Sequential(nn.ReLU()), [torch.rand(2, 1, 8, 8)], digits.example_batch(1))
    with pytest.raises(OptkitError, match="not a known choice"):
        Q.dynamic_int8(convs_only, kinds=("attention",))


def test_old_layers_keyword_still_chooses_kinds_with_a_warning(digits, mlp, cnn):
    # layers= names a model's own modules in optkit; layer types are kinds= (docs/ARCHITECTURE.md)
    with pytest.warns(DeprecationWarning, match=r"dynamic_int8\(kinds=\.\.\.\)"):
        q = Q.dynamic_int8(mlp, layers=("linear",))
    assert q.info["layers"] == ["fc1", "fc2", "fc3"]
    with pytest.warns(DeprecationWarning, match=r"sensitivity\(kinds=\.\.\.\)"):
        ranking = Q.sensitivity(cnn, digits.test, layers="linear")
    assert {r.name for r in ranking} == {"fc1", "fc2"}
    with pytest.raises(OptkitError, match="pass only kinds="):
        Q.dynamic_int8(mlp, ("linear",), layers=("linear",))
    with pytest.raises(OptkitError, match=r"kinds=\('linear',\)"):
        Q.dynamic_int8(nn.Sequential(nn.Conv2d(1, 4, 3)).eval())


def test_empty_calibration_loader(digits, cnn):
    with pytest.raises(OptkitError, match="no batches"):
        Q.static_int8(cnn, [], digits.example_batch(1), compile=False)
    with pytest.raises(OptkitError, match="no calibration data"):
        Q.static_int8(cnn, None, digits.example_batch(1), compile=False)


def test_calibration_batch_of_wrong_shape(digits, cnn):
    with pytest.raises(OptkitError, match=r"does not match the model's input \(batch, 1, 8, 8\)"):
        Q.static_int8(cnn, [torch.rand(4, 1, 28, 28)], digits.example_batch(1), compile=False)
    with pytest.raises(OptkitError, match="dtype"):
        Q.static_int8(cnn, [torch.rand(4, 1, 8, 8).double()], digits.example_batch(1), compile=False)


def test_mixed_precision_bad_names(digits, cnn):
    with pytest.raises(OptkitError, match="names no module"):
        Q.static_int8(cnn, [torch.rand(4, 1, 8, 8)], digits.example_batch(1), skip=["conv9"], compile=False)
    with pytest.raises(OptkitError, match="keep_float"):
        Q.mixed_precision(cnn, [torch.rand(4, 1, 8, 8)], digits.example_batch(1), ["conv1"], keep_float=3)


def test_legacy_static_eager(digits, cnn):
    calib = digits.torch_loader("calib", batch_size=64)
    broken = Q.legacy_static_int8(cnn, calib, digits.example_batch(1), quant_stub=False)
    with pytest.raises(NotImplementedError, match="quantized::conv2d"):
        broken(digits.example_batch(2))
    fixed = Q.legacy_static_int8(cnn, calib, digits.example_batch(1),
                                 fuse=[["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]])
    assert fixed.module.module.conv1._get_name() == "QuantizedConvReLU2d"
    assert fixed.evaluate(digits.test, cnn)["parity"]["sqnr_db"] > 20.0


def test_evaluate_compiled_runs_fixed_size_batches_and_matches_eager():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    shapes = []

    def model(x):
        shapes.append(x.shape[0])
        return net(x)

    v = Q.Quantized(model=model, module=net, eager=net, technique="test")
    x = torch.randn(10, 4)
    y = net(x).argmax(1)
    got = v.evaluate((x, y), reference=net, batch_size=4, compiled=True)
    assert shapes == [4, 4, 4]  # 10 rows -> the last batch padded to 4
    assert got["accuracy"] == 1.0 and got["parity"]["top1_agreement"] == 1.0
    with pytest.raises(OptkitError, match="batch_size=0"):
        v.evaluate((x, y), batch_size=0, compiled=True)


def test_int8_reduce_range_follows_the_kernels_the_cpu_will_run(monkeypatch):
    # oneDNN capped below VNNI (as `make test ISA=avx2` does, and as a CPU without VNNI is) must
    # halve the activation range: uint8 x int8 pairs would saturate int16 (the model then loses tens of dB)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert Q.int8_reduce_range() is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert Q.int8_reduce_range() is (not torch.cpu._is_vnni_supported())


def test_dynamic_int8_records_whether_it_reduced_the_range(mlp, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert Q.dynamic_int8(mlp).info["reduce_range"] is True
    assert Q.dynamic_int8(mlp, weight_only=True).info["reduce_range"] is False


# ------------------------------------------------------------------------------- comparisons (02's closing tables)

def test_fixed_batches_calls_only_the_timed_sizes_and_answers_as_one_call():
    torch.manual_seed(0)
    net = nn.Linear(4, 3).eval()
    seen = []

    def model(x):
        seen.append(x.shape[0])
        return net(x)

    wrapped = Q.fixed_batches(model, [4, 1])
    x = torch.randn(10, 4)
    with torch.no_grad():
        out, want = wrapped(x), net(x)
    assert seen == [4, 4, 4]  # 10 rows -> chunks of max(sizes), the last padded, never a new shape
    assert out.shape == (10, 3) and torch.allclose(out, want)
    seen.clear()
    with torch.no_grad():
        wrapped(x[:1]), wrapped(x[:4])
    assert seen == [1, 4]  # the timed sizes go through unchanged
    # named inputs (a dict), several outputs (a tuple), numpy in and out
    pair = Q.fixed_batches(lambda b: (b["a"] * 2, b["a"].sum(1)), [3])
    a = np.arange(14.0).reshape(7, 2)
    doubled, sums = pair({"a": a})
    assert np.array_equal(doubled, a * 2) and np.array_equal(sums, a.sum(1))
    for bad in ([], 0, [0], None):
        with pytest.raises(OptkitError, match="sizes"):
            Q.fixed_batches(model, bad)
    with pytest.raises(OptkitError, match="callable"):
        Q.fixed_batches("model", [1])


def test_every_recipe_names_its_precision_and_becomes_a_variant(digits, cnn, mlp):
    calib = digits.torch_loader("calib", batch_size=64)
    loader = digits.torch_loader("train", batch_size=32, seed=0)
    cases = {
        "int8": [Q.static_int8(cnn, calib, digits.example_batch(1), compile=False),
                 Q.qat_int8(cnn, loader, digits.example_batch(1), steps=2, compile=False),
                 Q.legacy_static_int8(cnn, calib, digits.example_batch(1)),
                 Q.mixed_precision(cnn, calib, digits.example_batch(1), ["conv1"], keep_float=1, compile=False)],
        "int8-dynamic": [Q.dynamic_int8(mlp)],
        "int8-weight-only": [Q.dynamic_int8(mlp, weight_only=True)],
        "bf16": [Q.reduced_float(cnn, "bfloat16")],
        "fp32": [Q.Quantized(model=cnn, module=cnn, technique="fp32 eager")],
    }
    for precision, results in cases.items():
        for q in results:
            v = q.to_variant("v", notes="a note")
            assert q.precision == precision and v.precision == precision, q.technique
            assert v.is_float == (precision in ("fp32", "bf16"))  # int8 is never a table's baseline
            assert not q.compiled and getattr(v.predict, "__wrapped__", v.predict) is q.model  # the model itself
            assert (v.technique, v.runtime, v.size_bytes, v.notes) == (q.technique, q.runtime, q.size_bytes, "a note")
            assert v.config == q.info and v.config is not q.info


def test_to_variant_of_a_compiled_model_keeps_it_to_the_timed_shapes(digits, cnn):
    seen = []

    def compiled(x):  # stands in for torch.compile(dynamic=False): records every shape it is called with
        seen.append(x.shape[0])
        return cnn(x)

    q = Q.Quantized(model=compiled, module=cnn, eager=cnn, technique="int8 static PTQ (per-channel, histogram)")
    assert q.compiled
    v = q.to_variant("int8", shapes=[1, 32])
    out = verify.predict_all(v.predict, digits.test.x, batch_size=256, convert=torch.tensor)
    assert set(seen) <= {1, 32} and len(out) == len(digits.test.x)
    assert verify.accuracy(out, digits.test.y) == models.evaluate(cnn, digits).accuracy


def test_float_variants_are_the_same_function_and_the_fastest_is_the_baseline(digits, cnn, monkeypatch):
    from optkit.core import report, variant
    from optkit.techniques.quantize import analysis

    shapes_seen = []

    def fake_compile(module):  # compile_frozen without the seconds of compilation
        def run(x):
            shapes_seen.append(x.shape[0])
            return module(x)
        return run

    monkeypatch.setattr(analysis, "compile_frozen", fake_compile)
    fp32 = Q.float_variants(cnn, "CNN ", shapes=[1, 8])
    assert [v.name for v in fp32] == ["CNN fp32 eager", "CNN fp32 channels_last", "CNN fp32 compiled"]
    assert all(v.is_float and v.size_bytes == sizes.model_size(cnn) for v in fp32)
    assert [v.name for v in Q.float_variants(cnn, channels_last=False, compile=False)] == ["fp32 eager"]
    int8 = Q.static_int8(cnn, digits.torch_loader("calib", batch_size=64), digits.example_batch(1), compile=False)
    workload = variant.Workload("SmallCNN (8x8)", "digits", "digits test")
    records = variant.evaluate(fp32 + [int8.to_variant("CNN int8")], workload, data=digits.test, convert=torch.tensor,
                               inputs={1: digits.example_batch(1), 8: digits.example_batch(8)}, max_time_s=0.02,
                               rounds=2, env={"cpu": "test"}, progress=False, memory=False)
    assert set(shapes_seen) <= {1, 8}  # scoring the test set compiled no other shape
    by = {(r.name, r.batch_size): r for r in records}
    for name in ("CNN fp32 channels_last", "CNN fp32 compiled"):  # same function as eager: same answers
        assert by[name, 8].parity["top1_agreement"] == 1.0 and by[name, 8].parity["max_abs"] < 1e-4
        assert by[name, 8].accuracy == by["CNN fp32 eager", 8].accuracy
    for group in report.groups(records).values():  # the baseline is a float variant, whatever int8's latency
        assert report.fastest_float(group).startswith("CNN fp32")


def test_exercise_smallest_within_reads_one_table_and_accepts_ties(capsys):
    from optkit.core.record import Record
    from optkit.course.exercises import nb02

    def row(name, size, acc, workload="SmallCNN", bs=32):
        return Record(name, workload=workload, batch_size=bs, size_bytes=size, accuracy=acc)

    table = [row("fp32", 830, 0.912), row("int8 PTQ", 215, 0.911), row("int8 QAT", 215, 0.9115),
             row("int8 2 bits", 60, 0.80), row("bf16", 417, 0.912)]
    assert nb02.check_smallest_within("int8 PTQ", table, 0.912)  # same size as QAT: both are right
    assert nb02.check_smallest_within("int8 QAT", table, 0.912)
    assert not nb02.check_smallest_within("bf16", table, 0.912)
    assert not nb02.check_smallest_within("int8 2 bits", table, 0.912)  # smaller, but 11 points down
    mixed = table + [row("int8 PTQ", 215, 0.911, bs=1)]
    assert not nb02.check_smallest_within("int8 PTQ", mixed, 0.912)
    assert "span 2 tables" in capsys.readouterr().out
