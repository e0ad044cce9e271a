"""optkit.core.verify: parity math on hand-made tensors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optkit.core import verify
from optkit.core.errors import OptkitError


def test_sqnr_known_value():
    ref = torch.ones(4, dtype=torch.float64)
    test = ref + torch.tensor([0.1, -0.1, 0.1, -0.1], dtype=torch.float64)
    # signal 4, noise 4 * 0.01 = 0.04 -> 10 log10(100) = 20 dB
    assert verify.sqnr(ref, test) == pytest.approx(20.0, abs=1e-9)
    assert verify.sqnr(ref.numpy(), test.numpy()) == pytest.approx(20.0, abs=1e-9)


def test_sqnr_identical_is_infinite_and_one_bit_is_about_six_db():
    x = np.linspace(-1, 1, 101)
    assert verify.sqnr(x, x.copy()) == math.inf
    assert verify.sqnr(np.zeros(3), np.ones(3)) == -math.inf
    # noise amplitude halved -> +6.02 dB
    noise = np.random.default_rng(0).standard_normal(101)
    gain = verify.sqnr(x, x + 0.01 * noise) - verify.sqnr(x, x + 0.02 * noise)
    assert gain == pytest.approx(20 * math.log10(2), abs=1e-9)


def test_compare_outputs_by_hand():
    ref = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 5.0, 1.0], [2.0, 0.0, -4.0]])
    test = ref.clone()
    test[3, 1] = 3.0          # row 3's arg-max moves from 0 to 1
    test[0, 0] = 1.5
    parity = verify.compare_outputs(ref, test)
    assert parity.max_abs == pytest.approx(3.0)
    assert parity.max_rel == pytest.approx(3.0 / 5.0)
    assert parity.mean_abs == pytest.approx(3.5 / 12)
    assert parity.top1_agreement == 0.75 and parity.n == 4
    signal = float((ref ** 2).sum())
    assert parity.sqnr_db == pytest.approx(10 * math.log10(signal / (9.0 + 0.25)))
    assert "dB" in repr(parity) and "75.00 %" in repr(parity)
    assert parity.to_dict()["top1_agreement"] == 0.75


def test_top1_only_for_two_dimensional_outputs():
    assert verify.compare_outputs(torch.rand(5), torch.rand(5)).top1_agreement is None
    assert verify.compare_outputs(torch.rand(2, 3, 4), torch.rand(2, 3, 4)).top1_agreement is None


def test_shape_mismatch_is_an_optkit_error():
    with pytest.raises(OptkitError, match="shape"):
        verify.compare_outputs(torch.rand(2, 3), torch.rand(3, 2))
    with pytest.raises(OptkitError, match="outputs"):
        verify.compare_outputs([torch.rand(2)], [torch.rand(2), torch.rand(2)])
    with pytest.raises(OptkitError):
        verify.compare_outputs([torch.rand(2)], torch.rand(2))


def test_lists_of_outputs_are_compared_pairwise_and_pooled():
    a, b = torch.ones(2, 2), torch.ones(3)
    parity = verify.compare_outputs([a, b.numpy()], [a + 0.5, b])
    assert parity.max_abs == pytest.approx(0.5) and parity.mean_abs == pytest.approx(2.0 / 7)
    assert parity.sqnr_db == pytest.approx(10 * math.log10(7 / 1.0))
    assert parity.top1_agreement == 1.0


def test_check_parity_names_what_failed():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert verify.check_parity(ref, ref + 1e-6).max_abs <= 1e-4
    with pytest.raises(verify.ParityError) as err:
        verify.check_parity(ref, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert isinstance(err.value, AssertionError)
    assert "max_abs" in str(err.value) and "top-1 agreement 50.00 %" in str(err.value)
    assert len(err.value.failures) == 2
    # judged by SQNR and top-1 instead of a fixed tolerance
    verify.check_parity(ref, ref * 1.01, atol=math.inf, min_sqnr_db=30)
    with pytest.raises(verify.ParityError, match="SQNR"):
        verify.check_parity(ref, ref * 1.1, atol=math.inf, min_sqnr_db=30)


def test_nan_always_fails():
    ref = torch.ones(2, 2)
    bad = ref.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(verify.ParityError):
        verify.check_parity(ref, bad, atol=math.inf, min_top1=None)


def test_compare_models_runs_both():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3).eval()
    x = torch.rand(5, 4)
    parity = verify.compare_models(net, lambda t: net(t).numpy().astype(np.float16), x)
    assert 0 < parity.max_abs < 1e-2 and parity.top1_agreement == 1.0 and parity.n == 5


def test_judge_parity_checks_relative_error_and_lists_every_miss():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    test = ref * np.float32(1.1)  # 10 % off everywhere, same argmax
    p = verify.compare_outputs(ref, test)
    assert verify.judge_parity(p, atol=1.0, max_rel=0.2) is p
    with pytest.raises(verify.ParityError) as err:
        verify.judge_parity(p, atol=0.01, max_rel=0.05)
    assert len(err.value.failures) == 2 and "max_rel" in err.value.failures[1]


def test_accuracy_interval_and_paired_difference():
    from optkit.core import verify as v

    hits = np.array([True] * 90 + [False] * 10)
    lo, hi = v.accuracy_interval(hits)
    assert lo < 0.9 < hi and 0.82 < lo and hi < 0.95  # Wilson interval of 90/100
    a = np.array([True] * 95 + [False] * 5)
    d = v.paired_difference(a, hits)
    assert d.diff == pytest.approx(0.05) and d.n == 100 and d.low < d.diff < d.high
    assert not d.inside_noise  # A is never wrong where B is right: a consistent 5-point gain
    same = v.paired_difference(hits, hits)
    assert same.diff == 0 and same.inside_noise
    swapped = v.paired_difference(np.r_[a[:50], ~a[50:]], np.r_[~a[:50], a[50:]])
    assert swapped.inside_noise  # disagreements cancel
    with pytest.raises(OptkitError, match="hits_b"):
        v.paired_difference(a, hits[:10])
    assert list(v.correct(np.eye(3), [0, 2, 2])) == [True, False, True]
