"""Issue-16 regressions and cross-checks of optkit.techniques.prune: the stale weight after an undone
step, Torch-Pruning against optkit's own channel removal, and ln_structured masks that keep shapes."""
from __future__ import annotations

import copy

import pytest
import torch

from optkit.core.errors import OptkitError
from optkit.data import models
from optkit.techniques import prune

X28 = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def resnet(widths=(16, 32, 64)):
    torch.manual_seed(0)
    return models.build("resnet_cnn", widths=widths).eval()


# --------------------------------------------------------------------------- adaptive pruning undone

def test_undone_first_step_reports_the_restored_dense_sparsity():
    """A step that is undone restores weight_orig and the mask; the reported sparsity must be the
    restored one (0), not the stale `weight` of the undone step (the 68 % the notebook printed)."""
    m = resnet()
    hist = prune.iterative_prune(m, 0.97, lambda net: 1.0 if prune.sparsity_report(net).sparsity == 0 else 0.0,
                                 lambda net: None, steps=3, max_drop=0.01)
    assert "step 1" in hist.stopped and hist.steps == []
    assert hist.final_sparsity == 0.0
    assert prune.sparsity_report(m).sparsity == 0.0  # read before any forward pass recomputes `weight`
    with torch.no_grad():
        torch.testing.assert_close(m(X28), resnet()(X28))


def test_undone_later_step_keeps_the_previous_steps_sparsity():
    m = resnet()
    hist = prune.iterative_prune(m, 0.9, lambda net: 1.0 - prune.sparsity_report(net).sparsity ** 4,
                                 None, steps=3, schedule="linear", max_drop=0.2)
    assert len(hist.steps) >= 1 and "undone" in hist.stopped
    assert hist.final_sparsity == pytest.approx(hist.steps[-1].sparsity)
    assert prune.sparsity_report(m).sparsity == pytest.approx(hist.final_sparsity, abs=1e-6)


# --------------------------------------------------------------------------- Torch-Pruning cross-check

@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_torch_pruning_and_optkit_give_the_same_shapes(ratio):
    pytest.importorskip("torch_pruning", reason="torch-pruning is an optional dependency")
    dense = resnet()
    ours = prune.prune_channels(dense, ratio, X28)
    theirs = prune.torch_pruning_channels(dense, ratio, X28)
    assert prune.shape_differences(ours, theirs) == {}
    assert models.count_params(ours) == models.count_params(theirs) < models.count_params(dense)
    assert prune.shape_differences(dense, resnet()) == {}  # the original is untouched
    assert theirs(X28).shape == (1, 10)


def test_shape_differences_names_what_differs():
    a, b = resnet(), resnet(widths=(16, 32, 32))
    diff = prune.shape_differences(a, b)
    assert "fc.weight" in diff and diff["fc.weight"] == ((10, 64), (10, 32))
    assert "stem.conv.weight" not in diff
    with pytest.raises(OptkitError, match="not a torch.nn.Module"):
        prune.shape_differences(a, "b")


def test_torch_pruning_bad_input_is_one_clear_error():
    with pytest.raises(OptkitError, match="channel_ratio"):
        prune.torch_pruning_channels(resnet(), 1.0, X28)
    with pytest.raises(OptkitError, match="ignored"):
        prune.torch_pruning_channels(resnet(), 0.5, X28, ignored=["nope"])


# --------------------------------------------------------------------------- ln_structured masks

def test_mask_channels_zeroes_whole_filters_and_keeps_shapes():
    dense = resnet()
    masked = prune.mask_channels_(copy.deepcopy(dense), 0.5)
    for name in prune.prunable_layers(dense):
        conv = masked.get_submodule(name)
        if not isinstance(conv, torch.nn.Conv2d):
            assert not prune.is_pruned(conv)  # the classifier is left alone
            continue
        zero_filters = int((conv.weight.flatten(1).abs().sum(1) == 0).sum())
        assert zero_filters == round(0.5 * conv.out_channels)
    assert prune.shape_differences(dense, prune.make_permanent(masked)) == {}  # nothing removed
    with pytest.raises(OptkitError, match="selects no conv"):
        prune.mask_channels_(resnet(), 0.5, layers=["fc"])


# --------------------------------------------------------------------------- progress bars

def test_progress_bars_leave_nothing_in_static_runs(monkeypatch, capsys):
    """Under papermill (OPTKIT_STATIC=1) the scan's and the schedule's bars draw nothing, so no
    frozen "0%|" line lands in a committed notebook."""
    monkeypatch.setenv("OPTKIT_STATIC", "1")
    m = resnet(widths=(4, 8, 8))
    scan = prune.sensitivity_scan(m, lambda net: 1.0, ratios=[0.5], layers=["fc"], progress=True)
    prune.iterative_prune(m, 0.5, lambda net: 1.0, None, steps=2, progress=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert scan.scores == {"fc": [1.0]}


def test_a_drop_of_exactly_max_drop_is_kept():
    """5 of 500 images is a drop of exactly one point: within max_drop=0.01, despite float rounding."""
    scores = iter([0.934, 0.924, 0.5])  # dense, step 1, step 2 (no fine-tune: scored once per step)
    m = resnet(widths=(4, 8, 8))
    hist = prune.iterative_prune(m, 0.5, lambda net: next(scores), None, steps=2, max_drop=0.01)
    assert len(hist.steps) == 1 and "step 2" in hist.stopped
