"""Figures of the TensorFlow lesson: input-pipeline throughput, and latency by variant and runtime.

- :func:`plot_pipelines`: images per second of each input-pipeline variant, one panel per
  comparison (e.g. the input alone, and input plus model), so it shows at a glance which part of a
  pass a pipeline change can speed up;
- :func:`plot_latencies`: median latency and p95 of each record as horizontal bars, coloured by
  runtime, on a log axis (TFLite at batch 1 and the Keras graph differ by an order of magnitude).

Both return a Figure already closed in pyplot (show it as a cell's value or with ``display``).
Importing this module does not import TensorFlow or matplotlib.

Taught in 07_tensorflow_and_tflite.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import Record, _as_records

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_pipelines", "plot_latencies"]


def _figure(rows: int, cols: int, size: tuple[float, float]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, layout="constrained", squeeze=False)
    plt.close(fig)  # shown once, as the cell's value
    return fig, axes.ravel()


def plot_pipelines(comparisons: Mapping[str, Any], *, unit: str = "images/s") -> "Figure":
    """Throughput of each variant as horizontal bars, one panel per comparison; the fastest in orange.

    ``comparisons`` maps a panel title to a :class:`optkit.core.bench.Comparison` (or a dict
    name -> Measurement) whose ``batch_size`` is the number of items one call processes, e.g.
    ``{"input only": cmp_input, "input + model": cmp_full}``. The first variant of each panel is
    its baseline: a dashed line marks its throughput, and each bar is labelled with its speed-up.

    Taught in 07_tensorflow_and_tflite.
    """
    if not isinstance(comparisons, Mapping) or not comparisons:
        raise OptkitError("comparisons", comparisons, "must be a non-empty dict title -> Comparison",
                          "pass e.g. {'input only': bench.compare(...)}")
    panels = {}
    for title, cmp in comparisons.items():
        ms = getattr(cmp, "measurements", cmp)
        if not isinstance(ms, Mapping) or not ms or not all(hasattr(m, "throughput") for m in ms.values()):
            raise OptkitError(f"comparisons[{title!r}]", type(cmp).__name__, "is not a Comparison of Measurements",
                              "pass the result of optkit.core.bench.compare(...)")
        panels[title] = {str(k): float(m.throughput) for k, m in ms.items()}
    height = 0.45 * max(len(v) for v in panels.values()) + 1.2
    fig, axes = _figure(1, len(panels), (5.2 * len(panels), height))
    for ax, (title, values) in zip(axes, panels.items()):
        names, rates = list(values)[::-1], np.array(list(values.values())[::-1])
        colours = ["tab:orange" if r == rates.max() else "tab:blue" for r in rates]
        ax.barh(names, rates, color=colours, alpha=0.8, gid="bars")
        base = rates[-1]
        ax.axvline(base, color="grey", ls="--", lw=1)
        for i, r in enumerate(rates):
            ax.annotate(f"{r / base:.2f}x", (r, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"throughput ({unit}, higher is better)")
        ax.set_xlim(0, rates.max() * 1.2)
        ax.grid(True, axis="x", alpha=0.3)
    return fig


def plot_latencies(records: Iterable[Record], *, title: str = "") -> "Figure":
    """Median latency (bar) and p95 (black tick) of each record, coloured by runtime, log axis.

    One batch size and one workload per figure (records of several raise :class:`OptkitError`:
    their latencies are not comparable). Records without a latency are skipped.

    Taught in 07_tensorflow_and_tflite.
    """
    items = [r for r in _as_records(records) if r.latency_ms is not None]
    if not items:
        raise OptkitError("records", records, "holds no record with a latency", "pass variant.evaluate(...)'s records")
    for key in ("batch_size", "workload"):
        values = {getattr(r, key) for r in items}
        if len(values) > 1:
            raise OptkitError("records", sorted(map(str, values)), f"mix several {key} values",
                              f"plot one {key} per figure, e.g. [r for r in records if r.{key} == ...]")
    fig, (ax,) = _figure(1, 1, (7.0, 0.38 * len(items) + 1.4))
    runtimes = list(dict.fromkeys(r.runtime or "?" for r in items))
    colour = {rt: f"C{i % 10}" for i, rt in enumerate(runtimes)}
    pos = np.arange(len(items))[::-1]
    for rt in runtimes:
        idx = [i for i, r in enumerate(items) if (r.runtime or "?") == rt]
        ax.barh(pos[idx], [items[i].latency_ms for i in idx], color=colour[rt], alpha=0.8, label=rt)
    p95 = [(p, r.p95_ms) for p, r in zip(pos, items) if r.p95_ms is not None]
    if p95:
        ax.plot([v for _, v in p95], [p for p, _ in p95], "|", color="black", ms=12, mew=2, label="p95", gid="p95")
    ax.set_yticks(pos, [r.name for r in items])
    ax.set_xscale("log")
    ax.set_xlabel(f"latency per call at batch {items[0].batch_size} (ms, log scale; lower is better)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
