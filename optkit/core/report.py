"""Tables and plots drawn from Records and Measurements, the same way in every notebook.

``table`` lines variants up against a baseline (speedup, size ratio, accuracy change);
``plot_latency`` shows each variant's latency distribution, not just its median;
``plot_throughput`` shows how throughput (and latency) grow with the batch size;
``plot_pareto`` and ``pareto_front`` show which variants are worth keeping when speed or size is
traded for accuracy. Plots use matplotlib's object API and return the Figure: leave it as the
last expression of a notebook cell to display it, or call ``fig.savefig(...)``. Nothing here
calls ``plt.show()``.

Taught in 00_measure_first.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import Record, _as_records

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from optkit.core.bench import Measurement

__all__ = ["table", "tables", "select_columns", "groups", "fastest", "fastest_float", "pareto_front", "plot_latency", "plot_throughput",
           "plot_pareto"]

# Record fields a table shows, in order; size_bytes is shown as size_mb, peak_mem_bytes as peak_mem_mb.
_TABLE_COLUMNS = ("technique", "runtime", "workload", "batch_size", "latency_ms", "p90_ms", "p95_ms", "p99_ms",
                  "throughput", "size_bytes", "peak_mem_bytes", "accuracy", "params", "macs")
_NUMERIC_FIELDS = ("batch_size", "latency_ms", "p90_ms", "p95_ms", "p99_ms", "throughput", "size_bytes",
                   "peak_mem_bytes", "accuracy", "params", "macs")
_RENAMED = {"size_bytes": "size_mb", "peak_mem_bytes": "peak_mem_mb"}
_LABELS = {
    "latency_ms": "latency (ms, median)", "p90_ms": "p90 latency (ms)", "p95_ms": "p95 latency (ms)",
    "peak_mem_bytes": "peak memory added by a call (MB)",
    "p99_ms": "p99 latency (ms)", "throughput": "throughput (items/s)",
    "size_bytes": "size (MB)", "accuracy": "accuracy", "params": "parameters",
    "macs": "MACs", "batch_size": "batch size",
}
_SCALE = {"size_bytes": 1e-6, "peak_mem_bytes": 1e-6}


# --------------------------------------------------------------------------- helpers

def _records(records: Any) -> list[Record]:
    return _as_records(records)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _check_key(parameter: str, key: str, records: Sequence[Record]) -> str:
    if key in _NUMERIC_FIELDS or any(key in r.extra for r in records):
        return key
    raise OptkitError(parameter, key, "is not a numeric Record field or a key of extra",
                      "use one of " + ", ".join(_NUMERIC_FIELDS))


def _value(record: Record, key: str) -> float | None:
    raw = getattr(record, key) if key in _NUMERIC_FIELDS else record.extra.get(key)
    return _finite(raw)


def _new_axes(ax: "Axes | None", figsize: tuple[float, float]) -> tuple["Figure", "Axes"]:
    """The given axes and their figure, or a new figure detached from pyplot's registry.

    A new figure is closed in pyplot right away, so a notebook shows it once (as the cell's
    value) rather than twice; the returned Figure still draws and saves normally.
    """
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig, ax


# --------------------------------------------------------------------------- workloads

GroupKey = tuple  # (workload, batch_size)


def _same(a: Any, b: Any) -> bool:
    """Two workload (or batch size) labels agree; None means "not stated" and agrees with anything."""
    return a is None or b is None or a == b


def _describe(r: Record) -> str:
    where = f"workload {r.workload!r}" if r.workload else "no stated workload"
    return f"{where}, batch size {r.batch_size}" if r.batch_size is not None else where


def _check_comparable(parameter: str, value: Any, items: Sequence[Record], *, batch: bool = True) -> None:
    """Refuse records that measure different workloads (or batch sizes): a ratio between them is meaningless."""
    ref = next((r for r in items if r.workload), None)
    mixed = [r for r in items if ref is not None and not _same(r.workload, ref.workload)]
    if not mixed and batch:
        ref = next((r for r in items if r.batch_size is not None), None)
        mixed = [r for r in items if ref is not None and not _same(r.batch_size, ref.batch_size)]
    if mixed:
        shown = ", ".join(f"{r.name!r} ({_describe(r)})" for r in mixed[:4])
        raise OptkitError(
            parameter, value,
            f"would compare {ref.name!r} ({_describe(ref)}) with {shown}"
            f"{' and others' if len(mixed) > 4 else ''}: ratios and accuracy changes mean something only "
            "within one workload and one batch size",
            "split them with report.tables(records, baseline=...) (one table per workload and batch size), "
            "or pass only the records of one group")


def groups(records: Iterable[Record]) -> dict[GroupKey, list[Record]]:
    """Records grouped by ``(workload, batch_size)``, in order of first appearance."""
    out: dict[GroupKey, list[Record]] = {}
    for r in _records(records):
        out.setdefault((r.workload, r.batch_size), []).append(r)
    return out


def fastest(records: Iterable[Record], where: Callable[[Record], bool] | None = None) -> str | None:
    """Name of the record with the lowest ``latency_ms`` among those ``where`` accepts (None if none).

    The usual baseline of a fair comparison: ``fastest(group, where=is_float)`` is the best float
    variant, so an int8 speed-up is measured against the best the float model can do.
    """
    timed = [r for r in _records(records) if _finite(r.latency_ms) is not None and (where is None or where(r))]
    return min(timed, key=lambda r: r.latency_ms).name if timed else None


def fastest_float(records: Iterable[Record]) -> str | None:
    """Name of the fastest record whose variant computes in a float precision (fp32, bf16, fp16,
    mixed; records from :func:`optkit.core.variant.evaluate` carry it in ``extra['precision']``;
    records without one count as float). The fair baseline: ``tables(records, baseline=fastest_float)``.
    """
    floats = ("fp32", "bf16", "fp16", "mixed")
    return fastest(records, where=lambda r: r.extra.get("precision", "fp32") in floats)


def tables(records: Iterable[Record],
           baseline: str | Callable[[list[Record]], str | None] | None = None, *, extra: Sequence[str] = (),
           columns: Sequence[str] | None = None) -> dict[GroupKey, "pd.DataFrame"]:
    """One :func:`table` per ``(workload, batch_size)`` group, keyed by that pair.

    ``baseline`` is a record name (used in the groups that contain it), or a function from a
    group's records to the name of its baseline (e.g. ``lambda g: report.fastest(g, is_float)``),
    or None (no ratio columns). ``extra`` and ``columns`` are passed to :func:`table`.

    Taught in 00_measure_first.
    """
    out = {}
    for key, group in groups(records).items():
        if callable(baseline):
            base = baseline(group)
        else:
            base = baseline if baseline in {r.name for r in group} else None
        out[key] = table(group, baseline=base, extra=extra, columns=columns)
    return out


# --------------------------------------------------------------------------- table

def table(records: Iterable[Record], baseline: str | None = None, *, extra: Sequence[str] = (),
          columns: Sequence[str] | None = None) -> "pd.DataFrame":
    """A DataFrame indexed by name with the columns that have values, plus ratios vs a baseline.

    Columns (only those some record fills): technique, runtime, workload, batch_size, latency_ms,
    p90_ms, p95_ms, p99_ms, throughput, size_mb (= size_bytes / 1e6), peak_mem_mb (=
    peak_mem_bytes / 1e6: the resident memory one call added), accuracy, params, macs, then
    ``agreement`` and ``sqnr_db`` from ``parity`` (top-1 agreement with the reference's outputs and
    their SQNR, as :func:`optkit.core.variant.evaluate` records them) and the ``extra`` keys named. With
    ``baseline`` (a record's name) three more: ``speedup`` = baseline latency / latency,
    ``size_ratio`` = baseline size / size (both above 1 means better than the baseline) and
    ``acc_delta`` = accuracy - baseline accuracy in percentage points (accuracies in [0, 1] are
    scaled by 100). A ratio column appears only when the baseline has that value.

    Ratios are computed only within one workload and one batch size: with a ``baseline``, records
    of another workload or batch size raise :class:`OptkitError` (use :func:`tables`).
    ``columns`` keeps only the named columns, in that order.

    Taught in 00_measure_first.
    """
    return select_columns(_table(records, baseline, tuple(extra)), columns)


def select_columns(frame: "pd.DataFrame", columns: Sequence[str] | None) -> "pd.DataFrame":
    """``frame`` with only ``columns``, in that order (all of them for None); an unknown name raises
    an :class:`OptkitError` that lists the columns there are."""
    if columns is None:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise OptkitError("columns", missing, "are not columns of this table",
                          "choose from " + ", ".join(frame.columns))
    return frame[list(columns)]


def _table(records: Iterable[Record], baseline: str | None, extra: tuple[str, ...]) -> "pd.DataFrame":
    import pandas as pd

    items = _records(records)
    names = [r.name for r in items]
    rows = []
    for r in items:
        row: dict[str, Any] = {"name": r.name}
        for key in _TABLE_COLUMNS:
            value = getattr(r, key)
            if key in _RENAMED:
                row[_RENAMED[key]] = None if _finite(value) is None else value / 1e6
            else:
                row[key] = value
        row["agreement"] = r.parity.get("top1_agreement")
        row["sqnr_db"] = r.parity.get("sqnr_db")
        for key in extra:
            row[key] = r.extra.get(key)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["name", *[_RENAMED.get(c, c) for c in _TABLE_COLUMNS],
                                        "agreement", "sqnr_db", *extra])
    frame = frame.set_index("name")
    frame = frame[[c for c in frame.columns if frame[c].notna().any()]]
    if baseline is None:
        return frame

    if baseline not in names:
        raise OptkitError("baseline", baseline, "is not the name of any record",
                          "use one of " + ", ".join(repr(n) for n in names))
    if names.count(baseline) > 1:
        raise OptkitError("baseline", baseline, f"names {names.count(baseline)} records",
                          "give each record a unique name")
    base = items[names.index(baseline)]
    _check_comparable("baseline", baseline, [base] + [r for r in items if r is not base])

    def ratio(num: Any, den: Any) -> float:
        a, b = _finite(num), _finite(den)
        return float("nan") if a is None or b is None or b == 0 else a / b

    if _finite(base.latency_ms) is not None:
        frame["speedup"] = [ratio(base.latency_ms, r.latency_ms) for r in items]
    if _finite(base.size_bytes) is not None:
        frame["size_ratio"] = [ratio(base.size_bytes, r.size_bytes) for r in items]
    if _finite(base.accuracy) is not None:
        accs = [_finite(r.accuracy) for r in items]
        scale = 100.0 if all(a is None or a <= 1.0 for a in accs) else 1.0
        frame["acc_delta"] = [float("nan") if a is None else (a - base.accuracy) * scale
                              for a in accs]
    return frame


# --------------------------------------------------------------------------- pareto

def pareto_front(records: Iterable[Record], x: str = "latency_ms",
                 y: str = "accuracy") -> list[Record]:
    """The records no other record beats on both ``x`` (lower is better) and ``y`` (higher is better).

    Records missing either value are ignored. The front is returned in increasing ``x``; along
    it ``y`` strictly increases. Of records with identical values the first is kept. ``x`` and
    ``y`` name numeric Record fields (latency_ms, size_bytes, accuracy, ...) or keys of ``extra``.

    Taught in 00_measure_first.
    """
    items = _records(records)
    _check_key("x", x, items)
    _check_key("y", y, items)
    points = [(xv, -yv, i) for i, r in enumerate(items)
              if (xv := _value(r, x)) is not None and (yv := _value(r, y)) is not None]
    front, best = [], -math.inf
    for xv, neg_y, i in sorted(points):
        if -neg_y > best:
            front.append(items[i])
            best = -neg_y
    return front


def plot_pareto(records: Iterable[Record], x: str = "latency_ms", y: str = "accuracy",
                ax: "Axes | None" = None, annotate: bool = True, *,
                log_x: bool = False) -> "Figure":
    """Scatter of every record on (``x``, ``y``) with the Pareto front drawn as a step line.

    Lower ``x`` and higher ``y`` are better, so good variants sit up and to the left; the step
    line is the best ``y`` reachable at each ``x``. ``annotate`` writes each record's name
    beside its point. ``size_bytes`` is plotted in MB. Returns the Figure.

    One plot shows one workload: records of several workloads (one accuracy axis across tasks)
    raise :class:`OptkitError`, and so do several batch sizes when an axis is a latency or a
    throughput. Plot each group of :func:`groups` on its own axes instead.

    Taught in 00_measure_first.
    """
    items = _records(records)
    _check_key("x", x, items)
    _check_key("y", y, items)
    timed = {x, y} & {"latency_ms", "p90_ms", "p95_ms", "p99_ms", "throughput"}
    _check_comparable("records", [r.name for r in items], items, batch=bool(timed))
    shown = [r for r in items if _value(r, x) is not None and _value(r, y) is not None]
    if not shown:
        raise OptkitError("records", [r.name for r in items], f"none has both {x} and {y}",
                          f"fill {x} and {y} on the records first")
    sx, sy = _SCALE.get(x, 1.0), _SCALE.get(y, 1.0)
    fig, ax = _new_axes(ax, (6.0, 4.0))
    xs = np.array([_value(r, x) for r in shown]) * sx
    ys = np.array([_value(r, y) for r in shown]) * sy
    ax.scatter(xs, ys, s=36, color="tab:blue", zorder=3, label="variants", gid="points")

    front = pareto_front(shown, x, y)
    fx = np.array([_value(r, x) for r in front]) * sx
    fy = np.array([_value(r, y) for r in front]) * sy
    ax.step(fx, fy, where="post", color="tab:orange", lw=1.5, marker="o", mfc="none",
            ms=10, zorder=2, label="Pareto front", gid="front")
    if annotate:
        for r, px, py in zip(shown, xs, ys):
            ax.annotate(r.name, (px, py), xytext=(4, 4), textcoords="offset points", fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    ax.set_title("lower x and higher y are better", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


# --------------------------------------------------------------------------- latency and throughput

def _measurement_map(measurements: Any) -> dict[str, "Measurement"]:
    if hasattr(measurements, "measurements") and isinstance(measurements.measurements, Mapping):
        measurements = measurements.measurements  # a bench.Comparison
    if hasattr(measurements, "samples_s"):
        measurements = [measurements]
    if isinstance(measurements, Mapping):
        out = dict(measurements)
    else:
        try:
            out = {m.name: m for m in measurements}
        except (TypeError, AttributeError):
            raise OptkitError("measurements", measurements, "is not a list or dict of Measurements",
                              "pass the result of bench.compare(...) or a list of bench.measure(...)"
                              ) from None
    if not out:
        raise OptkitError("measurements", measurements, "is empty", "pass at least one Measurement")
    for name, m in out.items():
        if not hasattr(m, "samples_s"):
            raise OptkitError(f"measurements[{name!r}]", m, "is not a Measurement",
                              "pass results of optkit.core.bench.measure or compare")
    return out


def plot_latency(measurements: Any, ax: "Axes | None" = None, *, kind: str = "box",
                 log: bool = False) -> "Figure":
    """Latency distribution per variant (box or violin) with the median and its 95 % interval.

    ``measurements``: a :class:`optkit.core.bench.Comparison`, a dict name -> Measurement, or a list
    of Measurements. ``kind`` is ``"box"`` (whiskers at the 1st and 99th percentile) or
    ``"violin"``; ``log=True`` puts latency on a log scale, useful when variants differ a lot.
    Returns the Figure.

    Taught in 00_measure_first.
    """
    if kind not in ("box", "violin"):
        raise OptkitError("kind", kind, "is not a known plot kind", "use 'box' or 'violin'")
    ms = _measurement_map(measurements)
    names = list(ms)
    data = [np.asarray(m.samples_s) * 1e3 for m in ms.values()]
    pos = np.arange(1, len(names) + 1)
    fig, ax = _new_axes(ax, (max(4.0, 1.2 * len(names) + 2.0), 4.0))
    if kind == "box":
        ax.boxplot(data, positions=pos, widths=0.5, whis=(1, 99), patch_artist=True,
                   showfliers=True, flierprops={"markersize": 2, "alpha": 0.4},
                   boxprops={"facecolor": "tab:blue", "alpha": 0.25},
                   medianprops={"color": "none"})
    else:
        ax.violinplot(data, positions=pos, widths=0.7, showextrema=False)
    med = np.array([m.median_ms for m in ms.values()])
    ci = np.array([m.ci_median_ms for m in ms.values()])
    bars = ax.errorbar(pos, med, yerr=[med - ci[:, 0], ci[:, 1] - med], fmt="D", ms=6,
                       color="tab:red", capsize=4, zorder=4, label="median (95% CI)")
    bars.lines[0].set_gid("medians")
    ax.set_xticks(pos, names, rotation=20 if len(names) > 3 else 0)
    ax.set_ylabel("latency per call (ms)")
    if log:
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_throughput(sweeps: Mapping[str, Sequence["Measurement"]] | Sequence["Measurement"],
                    ax: "Axes | None" = None, *, latency: bool = True) -> "Figure":
    """Throughput (items/s) against batch size, one line per series; latency on a twin axis.

    ``sweeps`` maps a series name to the list :func:`optkit.core.bench.throughput_sweep` returned
    (a bare list is one series). Batch sizes go on a log-2 axis. With ``latency=True`` each
    series' median latency per call is drawn dashed on a right-hand axis in the same colour,
    showing the price of batching: more items per second, but each call takes longer.
    Returns the Figure.

    Taught in 00_measure_first.
    """
    if not isinstance(sweeps, Mapping):
        sweeps = {"sweep": sweeps}
    if not sweeps:
        raise OptkitError("sweeps", sweeps, "is empty",
                          "pass {'name': throughput_sweep(...)} with at least one series")
    fig, ax = _new_axes(ax, (6.0, 4.0))
    twin = ax.twinx() if latency else None
    all_bs: set[int] = set()
    for i, (name, series) in enumerate(sweeps.items()):
        series = sorted(_measurement_map(list(series)).values(), key=lambda m: m.batch_size)
        bs = [m.batch_size for m in series]
        all_bs.update(bs)
        color = f"C{i % 10}"
        ax.plot(bs, [m.throughput for m in series], marker="o", color=color, label=name)
        if twin is not None:
            twin.plot(bs, [m.median_ms for m in series], marker="x", ls="--", color=color,
                      alpha=0.7, label=f"{name} latency")
    ax.set_xscale("log", base=2)
    ticks = sorted(all_bs)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (items/s, solid)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if twin is not None:
        twin.set_ylabel("latency per call (ms, dashed)")
    return fig
