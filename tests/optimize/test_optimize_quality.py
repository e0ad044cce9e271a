"""optkit.optimize.quality: a quality measure that fits the output, with an interval and its n."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from optkit.core.errors import OptkitError
from optkit.optimize import quality

RNG = np.random.default_rng(0)
KW = dict(max_drop=1.0, min_sqnr_db=20.0)


def test_the_task_follows_the_output_shape_unless_told():
    assert quality.task_of(np.zeros((4, 10))) == "classification"
    assert quality.task_of(np.zeros((4,))) == "classification"  # one score per row: binary
    assert quality.task_of(np.zeros((4, 7, 30))) == "sequence"
    assert quality.task_of(np.zeros((4, 1, 16, 16))) == "dense"
    assert quality.task_of(np.zeros((4, 1)), "regression") == "regression"
    with pytest.raises(OptkitError, match="task"):
        quality.task_of(np.zeros((4, 2)), "segmentation")


def test_accuracy_with_labels_carries_a_paired_interval_and_flags_a_straddled_budget():
    labels = RNG.integers(0, 5, 400)
    ref = np.eye(5)[labels] + 0.01  # always right
    out = ref.copy()
    out[:4] = np.eye(5)[(labels[:4] + 1) % 5]  # wrong on 4 of 400 rows: a 1.0-point drop
    check = quality.judge("c", [ref], [out], labels=labels, **KW)
    assert check.quality_kind == "accuracy" and check.n == 400
    assert check.drop_points == pytest.approx(1.0) and check.ok
    lo, hi = check.interval
    assert lo < 1.0 < hi and check.uncertain  # 4 errors cannot tell 1 point from 0.5 or 2
    clear = quality.judge("same", [ref], [ref.copy()], labels=labels, **KW)
    assert clear.drop_points == 0 and not clear.uncertain


def test_sequences_are_judged_per_position_and_whole():
    ref = RNG.random((50, 8, 6))
    out = ref.copy()
    out[0, 0] = -ref[0, 0]  # one position of one row: its arg-max becomes the arg-min
    check = quality.judge("seq", [ref], [out], labels=None, **KW)
    assert check.quality_kind == "sequence_agreement"
    assert check.quality == pytest.approx(1 - 1 / 400)
    assert check.details["exact_sequence_agreement"] == pytest.approx(49 / 50)
    assert check.ok  # 0.25 point drop


def test_dense_maps_get_sqnr_and_iou():
    ref = RNG.random((6, 1, 16, 16))
    noisy = np.clip(ref + RNG.normal(0, 0.01, ref.shape), 0, 1)
    check = quality.judge("map", [ref], [noisy], labels=None, **KW)
    assert check.quality_kind == "sqnr_db" and check.ok and 0.9 < check.details["iou"] <= 1.0
    assert quality.map_iou(np.zeros((2, 4)), np.zeros((2, 4))) == 1.0


def test_regression_uses_relative_error():
    ref = RNG.normal(5, 1, (100, 1))
    check = quality.judge("reg", [ref], [ref * 1.002], labels=None, task="regression", **KW)
    assert check.quality_kind == "relative_error" and check.drop_points == pytest.approx(0.2) and check.ok
    bad = quality.judge("reg", [ref], [ref * 1.05], labels=None, task="regression", **KW)
    assert not bad.ok and "relative error" in bad.why


def _top1(outputs, labels):
    return float(np.mean(outputs[0].argmax(1) == labels))


def test_a_user_metric_judges_by_its_own_score(tmp_path, monkeypatch):
    labels = RNG.integers(0, 3, 200)
    ref = np.eye(3)[labels]
    out = ref.copy()
    out[:10] = np.eye(3)[(labels[:10] + 1) % 3]
    check = quality.judge("m", [ref], [out], labels=labels, metric=_top1, **KW)
    assert check.quality_kind == "metric" and check.drop_points == pytest.approx(5.0) and not check.ok
    (tmp_path / "mymetric.py").write_text("def score(outputs, labels):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = quality.load_metric("mymetric:score")
    assert fn([ref], labels) == 0.5
    sys.modules.pop("mymetric", None)
    with pytest.raises(OptkitError, match="metric"):
        quality.load_metric("no_such_module_here:f")
    with pytest.raises(OptkitError, match="metric"):
        quality.load_metric("not a spec")


def test_non_finite_outputs_are_never_eligible():
    ref = RNG.random((10, 3))
    out = ref.copy()
    out[0, 0] = np.nan
    check = quality.judge("nan", [ref], [out], labels=None, **KW)
    assert not check.ok and "NaN" in check.why
