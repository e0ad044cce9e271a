"""optkit.techniques.distill: the KD loss against a hand computation, EMA against its formula, hooks, the trainer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from optkit.techniques import distill
from optkit.course.exercises import nb04 as exercises
from optkit.data import models
from optkit.core.errors import OptkitError

# 2 examples, 3 classes: small enough to compute by hand with math.exp
S = [[1.0, 2.0, 0.0], [0.5, -1.0, 1.5]]
T = [[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]
Y = [1, 2]


def _softmax(z, temp):
    e = [math.exp(v / temp) for v in z]
    return [v / sum(e) for v in e]


def _hand_kd(temp, alpha):
    soft, hard = 0.0, 0.0
    for s, t, y in zip(S, T, Y):
        p, q = _softmax(t, temp), _softmax(s, temp)
        soft += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
        hard += -math.log(_softmax(s, 1.0)[y])
    return alpha * temp ** 2 * soft / len(S) + (1 - alpha) * hard / len(S)


@pytest.mark.parametrize("temp, alpha", [(1.0, 0.5), (4.0, 0.9), (2.0, 0.0), (3.0, 1.0), (0.5, 0.3)])
def test_kd_loss_equals_hand_computation(temp, alpha):
    got = distill.kd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), temperature=temp, alpha=alpha)
    assert math.isclose(float(got), _hand_kd(temp, alpha), rel_tol=1e-5)


def test_alpha_ends_are_cross_entropy_and_soft_targets_only():
    s, t, y = torch.tensor(S), torch.tensor(T), torch.tensor(Y)
    assert torch.allclose(distill.kd_loss(s, t, y, 4.0, 0.0), nn.functional.cross_entropy(s, y))
    assert torch.allclose(distill.kd_loss(s, t, None, 4.0, 1.0), distill.soft_target_loss(s, t, 4.0))
    # identical logits: nothing to learn from the soft term
    assert float(distill.soft_target_loss(s, s.clone(), 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_t_squared_keeps_gradient_scale_at_high_temperature():
    """Without T^2 the soft term's gradient shrinks like 1/T^2; with it, it approaches a constant."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 10, generator=g)
    s0 = torch.randn(64, 10, generator=g)
    norms = []
    for temp in (8.0, 16.0, 32.0):
        s = s0.clone().requires_grad_(True)
        distill.soft_target_loss(s, t, temp).backward()
        norms.append(float(s.grad.norm()))
    # high-temperature limit: gradient -> (z_s - z_t - mean diff) / (C * batch), independent of T
    assert max(norms) / min(norms) < 1.1


def test_teacher_gets_no_gradient():
    s = torch.tensor(S, requires_grad=True)
    t = torch.tensor(T, requires_grad=True)
    distill.kd_loss(s, t, torch.tensor(Y)).backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize("kw, name", [({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
                                      ({"temperature": float("nan")}, "temperature"), ({"alpha": 1.5}, "alpha"),
                                      ({"alpha": -0.1}, "alpha")])
def test_bad_temperature_and_alpha_are_clear_errors(kw, name):
    with pytest.raises(OptkitError) as err:
        distill.kd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), **kw)
    assert str(err.value).startswith(f"{name}=") and "Fix:" in str(err.value)


def test_kd_loss_rejects_mismatched_logits_and_missing_labels():
    with pytest.raises(OptkitError, match="teacher_logits"):
        distill.kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor(Y))
    with pytest.raises(OptkitError, match="targets"):
        distill.kd_loss(torch.tensor(S), torch.tensor(T), None, alpha=0.5)


def test_ema_update_matches_formula():
    ema = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    params = [torch.tensor([3.0, 2.0]), torch.tensor([[-0.5]])]
    distill.ema_update(ema, params, 0.9)
    assert torch.allclose(ema[0], torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * -2 + 0.1 * 2]))
    assert torch.allclose(ema[1], torch.tensor([[0.9 * 0.5 + 0.1 * -0.5]]))
    with pytest.raises(OptkitError, match="decay"):
        distill.ema_update(ema, params, 1.0)


def test_ema_teacher_is_a_frozen_copy_that_follows_by_the_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = distill.EMATeacher(model, decay=0.8, warmup=False)
    assert all(not p.requires_grad for p in ema.module.parameters())
    before = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(7.0)
    ema.update(model)
    for b, e, p in zip(before, ema.module.parameters(), model.parameters()):
        assert torch.allclose(e, 0.8 * b + 0.2 * p)
        assert e.data_ptr() != p.data_ptr()
    assert torch.equal(ema.module[1].running_mean, torch.full((3,), 7.0))
    warm = distill.EMATeacher(model, decay=0.99, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert "updates=1" in repr(ema)


def test_feature_hooks_record_outputs_and_remove_cleanly():
    model = distill.StudentCNN()
    x = torch.randn(2, 1, 28, 28)
    with distill.FeatureHooks(model, ["conv2", "pool2"]) as hooks:
        out = model(x)
        ref = model.pool2(model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(x))))))
        assert torch.allclose(hooks["pool2"], ref)
        assert hooks["conv2"].shape == (2, 32, 14, 14) and hooks["pool2"].requires_grad
    assert not hooks.active and not model.conv2._forward_hooks
    assert torch.allclose(model(x), out)
    with pytest.raises(OptkitError, match="not a submodule"):
        distill.FeatureHooks(model, ["layer9"])


def test_projection_maps_student_width_to_teacher_width():
    assert isinstance(distill.projection((32, 7, 7), (32, 7, 7)), nn.Identity)
    conv = distill.projection((32, 7, 7), (128, 7, 7))
    assert conv(torch.randn(2, 32, 7, 7)).shape == (2, 128, 7, 7)
    pooled = distill.projection((16, 14, 14), (64, 7, 7))
    assert pooled(torch.randn(2, 16, 14, 14)).shape == (2, 64, 7, 7)
    assert distill.projection((64,), (128,))(torch.randn(3, 64)).shape == (3, 128)
    with pytest.raises(OptkitError):
        distill.projection((32, 7, 7), (128,))


def test_student_has_at_most_a_quarter_of_the_teachers_parameters():
    student, teacher = distill.StudentCNN(), models.ResNetCNN()
    assert models.count_params(student) <= models.count_params(teacher) / 4


@pytest.fixture(scope="module")
def digit_teacher(digits):
    models.set_seed(0)
    teacher = models.SmallCNN(in_size=8)
    models.train(teacher, digits, epochs=3, lr=3e-3, progress=False, val_split=None)
    return teacher


def test_cache_teacher_matches_live_outputs(digits, digit_teacher):
    cache = distill.cache_teacher(digit_teacher, digits, feature_layers=["pool2"], batch_size=100)
    x = torch.from_numpy(np.array(digits.train.x[:10]))
    with torch.no_grad():
        assert torch.allclose(cache.logits[:10], digit_teacher(x), atol=1e-5)
    assert cache.features["pool2"].shape == (len(digits.train), 32, 2, 2)
    assert "n=" in repr(cache) and len(cache) == len(digits.train)


def _student():
    return distill.StudentCNN(width=8, hidden=32, in_size=8)


def test_identical_init_and_batches_make_alpha_zero_equal_to_scratch(digits, digit_teacher):
    cache = distill.cache_teacher(digit_teacher, digits)
    a, b = [distill.train_seeds(_student, digits, seeds=[3], eval_data=digits.val, epochs=1, **kw)
            for kw in ({}, {"teacher": cache, "alpha": 0.0})]
    for pa, pb in zip(a.students[0].parameters(), b.students[0].parameters()):
        assert torch.equal(pa, pb)


def test_every_method_trains_and_cached_equals_live_teacher(digits, digit_teacher):
    cache = distill.cache_teacher(digit_teacher, digits, feature_layers=["pool2"])
    runs = {}
    for name, kw in {"kd": {"teacher": cache}, "kd live": {"teacher": digit_teacher},
                     "features": {"teacher": cache, "feature_layers": {"pool2": "pool2"}, "feature_weight": 0.1},
                     "ema": {"ema_decay": 0.9}}.items():
        runs[name] = distill.train_seeds(_student, digits, seeds=2, eval_data={"val": digits.val},
                                         epochs=3, batch_size=32, lr=1e-2, temperature=2.0, alpha=0.5, **kw)
        assert min(runs[name].scores["val"]) > 0.5, name  # 10 classes: chance is 0.1
    assert runs["kd"].scores["val"] == pytest.approx(runs["kd live"].scores["val"], abs=0.02)
    feats = runs["features"].results[0]
    assert feats.method == "soft targets + features"
    assert feats.projections["pool2"].weight.shape == (32, 16, 1, 1)
    assert runs["ema"].results[0].ema.updates == 3 * math.ceil(len(digits.train) / 32)
    assert not runs["features"].students[0].pool2._forward_hooks  # hooks removed after training


def test_trainer_rejects_inconsistent_setups(digits, digit_teacher):
    cache = distill.cache_teacher(digit_teacher, digits)
    s = _student()
    with pytest.raises(OptkitError, match="ema_decay"):
        distill.train_student(s, digits, teacher=cache, ema_decay=0.99)
    with pytest.raises(OptkitError, match="were not cached"):
        distill.train_student(s, digits, teacher=cache, feature_layers={"pool2": "pool2"})
    with pytest.raises(OptkitError, match="rows"):
        distill.train_student(s, digits.val, teacher=cache)
    with pytest.raises(OptkitError, match="temperature"):
        distill.train_student(s, digits, teacher=cache, temperature=0)


def test_summaries_and_paired_difference():
    scratch, kd = [0.80, 0.82, 0.81], [0.81, 0.83, 0.82]
    frame = distill.summarize({"scratch": scratch, "kd": kd})
    assert frame.loc["kd", "mean"] == pytest.approx(82.0) and frame.loc["scratch", "std"] == pytest.approx(1.0)
    consistent = distill.paired_difference(scratch, kd)
    assert consistent.mean == pytest.approx(1.0) and consistent.std == pytest.approx(0.0, abs=1e-9)
    assert not consistent.inside_noise
    noisy = distill.paired_difference(scratch, [0.82, 0.80, 0.82])
    assert noisy.inside_noise and "inside the noise" in repr(noisy)
    with pytest.raises(OptkitError):
        distill.paired_difference([0.8, 0.9], [0.8])


def _runs(method, val):
    return distill.SeedRuns(method, list(range(len(val))), [], [], {"val": list(val)})


def test_sweep_trains_each_setting_once_and_reuses_scratch_and_known_runs():
    scratch, main = _runs("scratch", [0.80, 0.82, 0.81]), _runs("kd", [0.83, 0.84, 0.82])
    calls = []

    def run(t, a):
        calls.append((t, a))
        return _runs(f"kd T={t} a={a}", [0.8 + 0.01 * t, 0.81, 0.8 + a / 10])

    sweep = distill.train_sweep(run, [1.0, 2, 4.0, 4.0], [0.0, 0.5, 1.0], temperature=2.0, alpha=0.5,
                                reference=scratch, known={(2.0, 0.5): main})
    # the main setting is reused, alpha = 0 is the scratch run, a repeated value is trained once
    assert calls == sweep.trained == [(1.0, 0.5), (4.0, 0.5), (2.0, 1.0)]
    assert sweep.by_temperature[2.0] is main is sweep.by_alpha[0.5] and sweep.by_alpha[0.0] is scratch
    labels = [label for label, _ in sweep.settings()]
    assert labels == ["T=1, alpha=0.5", "T=2, alpha=0.5", "T=4, alpha=0.5", "T=2, alpha=0", "T=2, alpha=1"]
    # without the main temperature in the temperature sweep, the alpha sweep keeps its main row
    only_a = distill.train_sweep(run, [], [0.5], temperature=2.0, alpha=0.5, reference=scratch, known={(2.0, 0.5): main})
    assert [label for label, _ in only_a.settings()] == ["T=2, alpha=0.5"] and len(calls) == 3
    fig = distill.plot_sweep(sweep, score="val")
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    with pytest.raises(OptkitError, match="score"):
        distill.plot_sweep(sweep, score="test")


@pytest.mark.parametrize("kw, name", [({"temperatures": [0.0]}, "temperature"), ({"alphas": [1.5]}, "alpha"),
                                      ({"temperatures": [], "alphas": []}, "temperatures")])
def test_sweep_refuses_bad_settings_before_training(kw, name):
    calls = []
    args = {"temperatures": [1.0], "alphas": [0.5], **kw}
    with pytest.raises(OptkitError) as err:
        distill.train_sweep(lambda t, a: calls.append((t, a)), args["temperatures"], args["alphas"],
                            temperature=2.0, alpha=0.5, reference=_runs("scratch", [0.8]))
    assert str(err.value).startswith(f"{name}=") and calls == []


def test_exercise_checkers_accept_reference_and_reject_common_mistakes(capsys):
    import torch.nn.functional as F

    def no_t_squared(s, t, y, temp, alpha):
        soft = F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1), reduction="batchmean")
        return alpha * soft + (1 - alpha) * F.cross_entropy(s, y)

    assert exercises.check_kd_loss(exercises.reference_kd_loss)
    assert not exercises.check_kd_loss(no_t_squared)
    assert exercises.check_ema_update(exercises.reference_ema_update)
    assert not exercises.check_ema_update(lambda e, w, d: d * w + (1 - d) * e)
    out = capsys.readouterr().out
    assert "T^2" in out and "old average" in out
