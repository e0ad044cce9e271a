"""optkit.core.report: Pareto front and table ratios on hand-made records; plots return Figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from optkit.core import report  # noqa: E402
from optkit.core.bench import Comparison, Measurement  # noqa: E402
from optkit.core.errors import OptkitError  # noqa: E402
from optkit.core.record import Record  # noqa: E402


def records():
    return [
        Record("fp32", latency_ms=10.0, size_bytes=4_000_000, accuracy=0.90, params=100),
        Record("fp16", latency_ms=8.0, size_bytes=2_000_000, accuracy=0.90),
        Record("int8", latency_ms=5.0, size_bytes=1_000_000, accuracy=0.88),
        Record("bad", latency_ms=12.0, size_bytes=4_000_000, accuracy=0.85),  # dominated
        Record("pruned", latency_ms=5.0, accuracy=0.80),  # same x as int8, worse y
        Record("tiny", latency_ms=1.0, accuracy=0.50),
        Record("unmeasured", accuracy=0.99),  # no latency: ignored by the front
    ]


def by_name(recs):
    return [r.name for r in recs]


def test_pareto_front_hand_made():
    front = report.pareto_front(records(), "latency_ms", "accuracy")
    assert by_name(front) == ["tiny", "int8", "fp16"]


def test_pareto_front_other_axes_and_ties():
    front = report.pareto_front(records(), x="size_bytes", y="accuracy")
    assert by_name(front) == ["int8", "fp16"]
    twins = [Record("a", latency_ms=1.0, accuracy=0.5), Record("b", latency_ms=1.0, accuracy=0.5)]
    assert by_name(report.pareto_front(twins)) == ["a"]
    assert report.pareto_front([Record("x")]) == []


def test_pareto_front_extra_key_and_bad_key():
    recs = [Record("a", accuracy=0.9, extra={"energy_j": 2.0}),
            Record("b", accuracy=0.8, extra={"energy_j": 1.0}),
            Record("c", accuracy=0.7, extra={"energy_j": 3.0})]
    assert by_name(report.pareto_front(recs, x="energy_j", y="accuracy")) == ["b", "a"]
    with pytest.raises(OptkitError) as info:
        report.pareto_front(recs, x="speed", y="accuracy")
    assert info.value.parameter == "x"


def test_table_ratios_vs_baseline():
    t = report.table(records(), baseline="fp32")
    assert list(t.index) == by_name(records())
    assert t.loc["int8", "speedup"] == pytest.approx(2.0)
    assert t.loc["fp16", "size_ratio"] == pytest.approx(2.0)
    assert t.loc["int8", "size_ratio"] == pytest.approx(4.0)
    assert t.loc["int8", "acc_delta"] == pytest.approx(-2.0)
    assert t.loc["fp32", "speedup"] == pytest.approx(1.0)
    assert t.loc["int8", "size_mb"] == pytest.approx(1.0)
    assert math.isnan(t.loc["unmeasured", "speedup"])
    assert math.isnan(t.loc["pruned", "size_ratio"])


def test_table_keeps_only_filled_columns():
    t = report.table(records())
    assert "latency_ms" in t.columns and "size_mb" in t.columns and "params" in t.columns
    assert "technique" not in t.columns and "macs" not in t.columns and "speedup" not in t.columns


def test_table_ratio_columns_need_baseline_values():
    t = report.table([Record("a", latency_ms=2.0), Record("b", latency_ms=1.0)], baseline="a")
    assert "speedup" in t.columns
    assert "size_ratio" not in t.columns and "acc_delta" not in t.columns


def test_table_accuracy_in_percent_is_not_rescaled():
    t = report.table([Record("a", accuracy=90.0), Record("b", accuracy=88.5)], baseline="a")
    assert t.loc["b", "acc_delta"] == pytest.approx(-1.5)


def test_table_unknown_baseline_lists_names():
    with pytest.raises(OptkitError) as info:
        report.table(records(), baseline="fp64")
    assert info.value.parameter == "baseline"
    assert "'int8'" in str(info.value)


def fake_measurement(name, median_s, n=50, batch_size=1, seed=0):
    rng = np.random.default_rng(seed)
    return Measurement(name, median_s * rng.lognormal(0, 0.1, n), batch_size=batch_size)


def gid_line(ax, gid):
    lines = [line for line in ax.get_lines() if line.get_gid() == gid]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_plot_latency_one_marker_per_variant(kind):
    comp = Comparison({f"v{i}": fake_measurement(f"v{i}", 0.001 * (i + 1), seed=i)
                       for i in range(3)})
    fig = report.plot_latency(comp, kind=kind, log=True)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    medians = gid_line(ax, "medians")
    assert len(medians.get_xdata()) == 3
    assert list(medians.get_ydata()) == pytest.approx([m.median_ms for m in comp.measurements.values()])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["v0", "v1", "v2"]
    assert ax.get_yscale() == "log"
    if kind == "box":
        assert len(ax.patches) == 3
    else:
        assert len(ax.collections) >= 3


def test_plot_latency_on_given_axes_and_list_input():
    fig0 = report.plot_latency([fake_measurement("a", 0.002)])
    ax = fig0.axes[0]
    fig = report.plot_latency({"b": fake_measurement("b", 0.001)}, ax=ax)
    assert fig is fig0
    with pytest.raises(OptkitError):
        report.plot_latency([])
    with pytest.raises(OptkitError):
        report.plot_latency([fake_measurement("a", 0.002)], kind="bar")


def test_plot_throughput_lines_per_series():
    sweeps = {
        name: [fake_measurement(f"{name} b{bs}", 0.001 * bs ** 0.5, batch_size=bs) for bs in (1, 4, 16)]
        for name in ("eager", "compiled")
    }
    fig = report.plot_throughput(sweeps)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # throughput plus the twin latency axis
    main, twin = fig.axes
    assert len(main.get_lines()) == 2 and len(twin.get_lines()) == 2
    assert list(main.get_lines()[0].get_xdata()) == [1, 4, 16]
    assert list(main.get_lines()[0].get_ydata()) == pytest.approx(
        [m.throughput for m in sweeps["eager"]])
    fig = report.plot_throughput(sweeps["eager"], latency=False)
    assert len(fig.axes) == 1


def test_plot_pareto_points_front_and_labels():
    recs = records()
    fig = report.plot_pareto(recs)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    points = [c for c in ax.collections if c.get_gid() == "points"]
    assert len(points) == 1 and len(points[0].get_offsets()) == 6  # 'unmeasured' has no latency
    front = gid_line(ax, "front")
    assert list(front.get_xdata()) == [1.0, 5.0, 8.0]
    assert len(ax.texts) == 6
    fig = report.plot_pareto(recs, x="size_bytes", annotate=False)
    ax = fig.axes[0]
    assert len(ax.texts) == 0
    assert list(gid_line(ax, "front").get_xdata()) == pytest.approx([1.0, 2.0])  # MB
    with pytest.raises(OptkitError):
        report.plot_pareto([Record("x")])


# ---------------------------------------------------------------- one workload, one batch size per ratio
def _mixed():
    return [
        Record("cnn fp32 b32", technique="fp32", workload="CNN · Fashion-MNIST", batch_size=32, latency_ms=10.0,
               accuracy=0.91, size_bytes=800),
        Record("cnn int8 b32", technique="int8", workload="CNN · Fashion-MNIST", batch_size=32, latency_ms=4.0,
               accuracy=0.90, size_bytes=200),
        Record("cnn fp32 b1", technique="fp32", workload="CNN · Fashion-MNIST", batch_size=1, latency_ms=1.0,
               accuracy=0.91),
        Record("cnn int8 b1", technique="int8", workload="CNN · Fashion-MNIST", batch_size=1, latency_ms=1.6,
               accuracy=0.90),
        Record("minilm fp32 b32", technique="fp32", workload="MiniLM · polarity", batch_size=32, latency_ms=200.0,
               accuracy=0.74),
    ]


def test_a_ratio_across_workloads_or_batch_sizes_is_refused():
    recs = _mixed()
    with pytest.raises(OptkitError, match="only within one workload and one batch size") as err:
        report.table(recs[:4], baseline="cnn fp32 b32")  # batch 1 rows against a batch-32 baseline
    assert "report.tables" in str(err.value) and "'cnn fp32 b1'" in str(err.value)
    with pytest.raises(OptkitError, match="MiniLM"):
        report.table([recs[0], recs[4]], baseline="cnn fp32 b32")
    # without a baseline nothing is divided: the plain listing stays allowed
    assert len(report.table(recs)) == 5


def test_tables_divide_each_group_by_its_own_best_float():
    out = report.tables(_mixed(), baseline=lambda g: report.fastest(g, where=lambda r: r.technique == "fp32"))
    assert list(out) == [("CNN · Fashion-MNIST", 32), ("CNN · Fashion-MNIST", 1), ("MiniLM · polarity", 32)]
    assert out[("CNN · Fashion-MNIST", 32)].loc["cnn int8 b32", "speedup"] == pytest.approx(2.5)
    # at batch 1 int8 is slower: the ratio says so instead of borrowing the batch-32 baseline
    assert out[("CNN · Fashion-MNIST", 1)].loc["cnn int8 b1", "speedup"] == pytest.approx(1 / 1.6)
    assert out[("MiniLM · polarity", 32)].loc["minilm fp32 b32", "speedup"] == pytest.approx(1.0)


def test_fastest_picks_among_the_accepted_records():
    recs = _mixed()[:2]
    assert report.fastest(recs) == "cnn int8 b32"
    assert report.fastest(recs, where=lambda r: r.technique == "fp32") == "cnn fp32 b32"
    assert report.fastest(recs, where=lambda r: False) is None


def test_one_pareto_plot_shows_one_workload():
    recs = _mixed()
    with pytest.raises(OptkitError, match="only within one workload"):
        report.plot_pareto([recs[0], recs[4]])
    with pytest.raises(OptkitError, match="batch size"):
        report.plot_pareto(recs[:4])  # latency axis, two batch sizes
    fig = report.plot_pareto(recs[:4], x="size_bytes")  # no timed axis: batch sizes may differ
    assert fig is not None


def test_pareto_on_p95_refuses_two_batch_sizes_and_each_group_plots():
    recs = [r.replace(p95_ms=1.2 * r.latency_ms) for r in _mixed()]
    with pytest.raises(OptkitError, match="batch size"):
        report.plot_pareto(recs[:4], x="p95_ms")  # a tail latency is a timed axis too
    for (workload, bs), group in report.groups(recs).items():  # what a notebook does instead: one plot per group
        fig = report.plot_pareto(group, x="p95_ms")
        assert {t.get_text() for t in fig.axes[0].texts} == {r.name for r in group}
