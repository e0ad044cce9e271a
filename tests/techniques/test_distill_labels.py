"""optkit.techniques.distill in the few-labels regime: label masks, label smoothing, and the notebook's markdown."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from optkit.core.errors import OptkitError
from optkit.data import models
from optkit.techniques import distill

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "src" / "04_knowledge_distillation.py"


def test_notebook_markdown_has_no_control_characters():
    """A Python escape (``"\\theta"`` is a TAB + "heta") would break the LaTeX of a markdown cell."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from build_notebooks import parse
    finally:
        sys.path.remove(str(ROOT / "tools"))
    cells = [c for c in parse(NOTEBOOK.read_text()) if c.cell_type == "markdown"]
    assert cells
    for cell in cells:
        bad = re.findall(r"[\x00-\x09\x0b-\x1f\x7f]", cell.source)
        assert not bad, f"control characters {bad!r} in markdown cell starting {cell.source[:60]!r}"
    formulas = [c.source for c in cells if "$$" in c.source]
    assert any(r"\theta_{\text{EMA}}" in f for f in formulas)  # the EMA formula, intact


def test_label_subset_marks_exactly_n_labelled_and_is_reproducible():
    mask = distill.label_subset(100, 30, seed=1)
    assert mask.dtype == bool and mask.shape == (100,) and mask.sum() == 30
    assert np.array_equal(mask, distill.label_subset(100, 30, seed=1))
    assert not np.array_equal(mask, distill.label_subset(100, 30, seed=2))
    assert distill.label_subset(5, 5).all()
    with pytest.raises(OptkitError, match="n_labelled"):
        distill.label_subset(10, 11)
    with pytest.raises(OptkitError, match="n_labelled"):
        distill.label_subset(10, 0)


def _student():
    return distill.StudentCNN(width=8, hidden=32, in_size=8)


@pytest.fixture(scope="module")
def digit_cache(digits):
    models.set_seed(0)
    teacher = models.SmallCNN(in_size=8)
    models.train(teacher, digits, epochs=2, lr=3e-3, progress=False, val_split=None)
    return distill.cache_teacher(teacher, digits)


def _weights(runs):
    return [p.detach().clone() for p in runs.students[0].parameters()]


def _train(data, val=None, epochs=1, **kw):
    return distill.train_seeds(_student, data, seeds=[2], eval_data=val if val is not None else data.val,
                               epochs=epochs, batch_size=32, **kw)


def test_a_full_mask_trains_exactly_as_no_mask(digits, digit_cache):
    full = np.ones(len(digits.train), dtype=bool)
    a = _train(digits, teacher=digit_cache, temperature=2.0, alpha=0.5)
    b = _train(digits, teacher=digit_cache, temperature=2.0, alpha=0.5, labelled=full)
    for pa, pb in zip(_weights(a), _weights(b)):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_labels_outside_the_mask_are_never_used(digits, digit_cache):
    mask = distill.label_subset(len(digits.train), 100, seed=0)
    x, y = np.asarray(digits.train.x), np.asarray(digits.train.y)
    y_scrambled = y.copy()
    y_scrambled[~mask] = (y[~mask] + 3) % 10  # wrong labels where the student may not look
    kw = dict(teacher=digit_cache, temperature=2.0, alpha=0.5, labelled=mask)
    a, b = _train((x, y), digits.val, **kw), _train((x, y_scrambled), digits.val, **kw)
    for pa, pb in zip(_weights(a), _weights(b)):
        assert torch.equal(pa, pb)
    c = _train((x, y_scrambled), digits.val, teacher=digit_cache, temperature=2.0, alpha=0.5)  # no mask: they are used
    assert any(not torch.equal(pa, pc) for pa, pc in zip(_weights(a), _weights(c)))


def test_label_smoothing_changes_training_and_names_the_method(digits):
    plain, smooth = _train(digits, epochs=3, lr=1e-2), _train(digits, epochs=3, lr=1e-2, label_smoothing=0.1)
    assert smooth.method == "cross-entropy, label smoothing 0.1"
    assert any(not torch.equal(p, q) for p, q in zip(_weights(plain), _weights(smooth)))
    assert min(smooth.scores["accuracy"]) > 0.3  # 10 classes: chance is 0.1


def test_bad_masks_and_smoothing_are_clear_errors(digits, digit_cache):
    s = _student()
    with pytest.raises(OptkitError, match="labelled"):
        distill.train_student(s, digits, teacher=digit_cache, labelled=np.ones(3, dtype=bool))
    with pytest.raises(OptkitError, match="labelled"):
        distill.train_student(s, digits, teacher=digit_cache, labelled=np.zeros(len(digits.train), dtype=bool))
    with pytest.raises(OptkitError, match="label_smoothing"):
        distill.train_student(s, digits, label_smoothing=1.0)


def test_progress_bars_are_silent_in_static_runs(digits, monkeypatch, capsys):
    monkeypatch.setenv("OPTKIT_STATIC", "1")
    _train(digits, progress=True)
    out = capsys.readouterr()
    assert "epoch" not in out.err + out.out and "%|" not in out.err + out.out
