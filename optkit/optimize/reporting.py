"""Step 7 of the capstone: what a run leaves behind. Each run gets a fresh folder
``output_dir/<run id>/`` (:func:`new_run_dir`, never an earlier run's), and :func:`write_report`
fills it: ``results.json`` (:func:`results`: every measurement with the environment), ``report.md``,
``report.html`` and ``pareto.png`` (:func:`pareto_figure`), then points ``output_dir/latest`` at it.

``results.json`` (format :data:`RESULTS_FORMAT`, ``"optkit.optimize/1"``) holds ``parameters``,
``environment``, ``model``, ``data``, ``workload`` (what every record was measured on),
``candidates`` (name, recipe, technique, runtime, precision, artifact relative to the run folder,
size, build time, notes, ``config``: the recipe's settings), ``checks`` (the verification of each),
``outcomes`` (recipes that were skipped or failed, with the reason), ``baseline_timing``,
``records`` (:meth:`optkit.core.record.Record.to_dict`, one per variant and batch size, from
:func:`optkit.core.variant.evaluate`; ``extra`` holds the timing details, ``precision``, ``config``,
``reference`` and the capstone's ``recipe``, ``eligible``, ``why_not``, ``quality``,
``quality_kind``, ``drop_points``, ``artifact``, ``build_s``), ``recommendation``, ``best_fp32``
(:func:`best_fp32_summary`: the fastest eligible fp32 candidate, its ratio to the model as given
and the recommendation's ratio to it), ``timings_s`` and ``notes``. Since the capstone measures through :func:`optkit.core.variant.evaluate` the format only
gained keys (``workload``, ``precision``, ``config``, ``reference``); ``info``, the 0.1 name of
``config``, is still written (the same dict) for format-1 readers and goes in optkit 0.3.

The functions take the :class:`~optkit.optimize.Optimization` whose results they write; its
methods (``plot``, ``results``, ``write_report``) call them.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io as _io
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from optkit.core.errors import OptkitError
from optkit.core.record import jsonable

__all__ = ["RESULTS_FORMAT", "new_run_dir", "pareto_figure", "write_report", "results", "markdown_report",
           "html_report", "best_fp32_summary", "search_summary"]

RESULTS_FORMAT = "optkit.optimize/1"


# =============================================================================== the run folder

def new_run_dir(output_dir: Path, run_name: str | None, model_path: Path) -> Path:
    """A fresh folder under ``output_dir``: ``run_name``, or ``<timestamp>-<model stem>``; a name
    already taken gets ``-2``, ``-3``, ..."""
    stem = re.sub(r"[^\w.\-]+", "_", Path(model_path).stem) or "model"
    return _fresh_dir(output_dir, run_name or f"{_stamp()}-{stem}")


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _fresh_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = parent / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OptkitError("output_dir", str(parent), "has no free run folder name", "choose another output_dir")


# =============================================================================== the report

def pareto_figure(opt):
    """The Pareto plot: quality against latency (left) and against size (right), at the largest
    batch size. The step line joins the candidates no other beats on both axes; grey crosses
    are not eligible, the star is the recommendation. Candidates at the same spot share a label."""
    import matplotlib.pyplot as plt

    from optkit.core import report

    bs = max(opt.batch_sizes)
    rows = [r for r in opt.records if r.batch_size == bs]
    kind = rows[0].extra.get("quality_kind") if rows else "accuracy"
    scale = 1.0 if kind == "sqnr_db" else 100.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    plt.close(fig)
    finite = [r.extra["quality"] for r in rows if _finite(r.extra.get("quality"))]
    top = max(finite or [0.0])
    # identical outputs (SQNR inf) or an unknown quality are drawn just above the best finite value
    shown = [r.replace(extra={**r.extra, "quality": scale * (r.extra["quality"] if _finite(r.extra.get("quality"))
                                                              else top + (10.0 if kind == "sqnr_db" else 0.01))})
             for r in rows]
    label = {"accuracy": "accuracy (%)", "agreement": "top-1 agreement with the original (%)",
             "sqnr_db": "SQNR vs the original (dB; identical drawn on top)",
             "sequence_agreement": "per-position agreement with the original (%)",
             "relative_error": "1 - relative error (%)", "metric": "your metric (x100)"}[kind]
    picked = opt.recommendation.name if opt.recommendation else None
    for ax, x in zip(axes, ("latency_ms", "size_bytes")):
        report.plot_pareto(shown, x=x, y="quality", ax=ax, annotate=False)
        sx = 1e-6 if x == "size_bytes" else 1.0
        pts = [(getattr(r, x) * sx, r.extra["quality"], r) for r in shown if getattr(r, x) is not None]
        bad = [(px, py) for px, py, r in pts if not r.extra.get("eligible")]
        if bad:
            ax.scatter(*zip(*bad), marker="x", s=60, color="grey", zorder=4, label="not eligible")
        star = [(px, py) for px, py, r in pts if r.name == picked]
        if star:
            ax.scatter(*zip(*star), marker="*", s=260, color="tab:green", zorder=5, label="recommended")
        ax.margins(x=0.12, y=0.25)
        ax.set_ylabel(label)
        ax.legend(fontsize=8, loc="best")
        _label_clusters(ax, pts)
    axes[0].set_xlabel(f"latency at batch {bs} (ms, median)")
    fig.suptitle(f"{Path(opt.summary.path).name}: every candidate at batch {bs}", fontsize=10)
    return fig


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _figure_png(opt) -> bytes | None:
    """The Pareto figure as PNG bytes, or None (logged) when it cannot be drawn: the report is
    written in every case."""
    try:
        fig = opt.plot()
        buf = _io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()
    except Exception as exc:  # a plot must never cost the user the report
        opt.log(f"[optimize] no Pareto plot: {exc}")
        return None


def candidates_table(opt, batch_size: int | None = None):
    """What :meth:`Optimization.table` returns (see there)."""
    from optkit.core import report
    from optkit.optimize.recommendation import best_fp32

    if not opt.records:
        raise OptkitError("records", [], "nothing has been timed yet", "run benchmark() first")
    bs = batch_size if batch_size is not None else max(opt.batch_sizes)
    rows = [r for r in opt.records if r.batch_size == bs]
    frame = report.table(rows, baseline="baseline")
    keep = [c for c in ("technique", "runtime", "latency_ms", "p95_ms", "speedup", "size_mb", "size_ratio",
                        "peak_mem_mb", "accuracy", "acc_delta") if c in frame.columns]
    frame = frame[keep]
    kinds = {r.extra.get("quality_kind") for r in rows}
    if "agreement" in kinds:
        frame["agreement"] = [r.extra.get("quality") for r in rows]
    if "sqnr_db" in kinds:
        frame["sqnr_db"] = [r.parity.get("sqnr_db") for r in rows]
    frame["eligible"] = [bool(r.extra.get("eligible")) for r in rows]
    best = best_fp32(rows)
    if best is not None and best.name != "baseline":  # the baseline a team should also see
        frame[f"speedup_vs_{best.name}"] = [best.latency_ms / r.latency_ms for r in rows]
    base = {r.batch_size: r.latency_ms for r in opt.records if r.name == "baseline"}
    for other in opt.batch_sizes:
        if other == bs:
            continue
        lat = {r.name: r.latency_ms for r in opt.records if r.batch_size == other}
        frame[f"latency_b{other}_ms"] = [lat.get(r.name) for r in rows]
        frame[f"speedup_b{other}"] = [base[other] / lat[r.name] if lat.get(r.name) else None for r in rows]
    return frame


def write_report(opt, run_dir: Path) -> Path:
    """Write ``results.json``, ``report.md``, ``report.html`` and ``pareto.png`` of the finished run
    ``opt`` into ``run_dir``, then point ``output_dir/latest`` at it. Returns ``run_dir``."""
    from optkit.runtimes.model_files import atomic_write

    png = _figure_png(opt)
    if png is not None:
        with atomic_write(run_dir / "pareto.png") as tmp:
            tmp.write_bytes(png)
    results = opt.results()
    with atomic_write(run_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    md = markdown_report(opt, plotted=png is not None)
    with atomic_write(run_dir / "report.md") as tmp:
        tmp.write_text(md)
    with atomic_write(run_dir / "report.html") as tmp:
        tmp.write_text(html_report(opt, png))
    with atomic_write(opt.output_dir / "latest", overwrite=True) as tmp:
        tmp.write_text(run_dir.name + "\n")
    opt.log(f"[optimize] report: {run_dir / 'report.html'}")
    return run_dir


def results(opt) -> dict:
    """Everything measured, as a JSON-ready dict (what ``results.json`` holds)."""
    return jsonable({
        "format": RESULTS_FORMAT,
        "run_id": None if opt.run_dir is None else opt.run_dir.name,
        "started": opt.started_at,
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "wall_s": opt.elapsed_s,
        "parameters": opt.parameters(),
        "environment": opt.env,
        "environment_line": _env_line(opt.env),
        "model": opt.summary.to_dict() if opt.summary else None,
        "data": opt.data.to_dict() if opt.data else None,
        "workload": None if opt.workload is None else str(opt.workload),
        "candidates": [{"name": c.name, "recipe": c.recipe, "technique": c.technique, "runtime": c.runtime,
                        "precision": c.precision, "artifact": None if c.artifact is None or opt.run_dir is None
                        else os.path.relpath(c.artifact, opt.run_dir),
                        "size_bytes": c.size_bytes, "build_s": c.build_s, "notes": c.notes, "config": c.config,
                        "info": c.config}
                       for c in [opt.baseline, *opt.candidates] if c is not None],
        "checks": {k: v.to_dict() for k, v in opt.checks.items()},
        "outcomes": [o.to_dict() for o in opt.outcomes],
        "baseline_timing": {str(bs): m.to_dict() for bs, m in opt.baseline_timing.items()},
        "records": [r.to_dict() for r in opt.records],
        "recommendation": opt.recommendation.to_dict() if opt.recommendation else None,
        "best_fp32": best_fp32_summary(opt),
        "timings_s": opt.timings,
        "notes": opt.notes,
    }, strict=False)


def _table_rows(opt) -> tuple[list[str], list[list[str]]]:
    frame = opt.table()
    cols = list(frame.columns)
    rows = []
    for name, row in frame.iterrows():
        cells = [str(name)]
        for c in cols:
            v = row[c]
            if isinstance(v, (bool, np.bool_)):
                cells.append("yes" if v else "no")
            elif isinstance(v, (float, np.floating)):
                if not math.isfinite(v):
                    cells.append("-")
                elif c in ("accuracy", "agreement"):
                    cells.append(f"{100 * v:.2f} %")
                elif c in ("speedup", "size_ratio") or c.startswith("speedup_"):
                    cells.append(f"{v:.2f}x")
                elif c == "acc_delta":
                    cells.append(f"{v:+.2f}")
                else:
                    cells.append(f"{v:.3g}")
            elif v is None:
                cells.append("-")
            else:
                cells.append(str(v))
        rows.append(cells)
    return ["name"] + cols, rows


def markdown_report(opt, plotted: bool = True) -> str:
    """``report.md``: the recommendation, the table, the plot, every recipe's outcome, model and data."""
    bs = max(opt.batch_sizes)
    head, rows = _table_rows(opt)
    rec = opt.recommendation
    lines = [f"# optkit optimize: {Path(opt.summary.path).name}", "",
             f"Run `{opt.run_dir.name}`, {opt.started_at}, on {_env_line(opt.env)}, "
             f"{opt.threads} thread(s); wall time {opt.elapsed_s:.0f} s.", "",
             "## Recommendation", "", f"**{rec.name or 'none'}**" + (
                 f" - `{rec.artifact}`" if rec.artifact else ""), "", rec.reason, ""]
    fp32 = _fp32_sentence(opt)
    lines += ([fp32, ""] if fp32 else []) + [
             f"## Candidates at batch {bs}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "`speedup` and `size_ratio` are against the baseline (above 1 is better); `acc_delta` in "
              "points. Every number is in `results.json` with the environment.", "",
              "![Pareto plot: quality against latency and size](pareto.png)" if plotted
              else "(No Pareto plot: it could not be drawn for this run; see the log.)", ""]
    if opt.outcomes:
        lines += ["## Recipes without a candidate", ""]
        lines += [f"- **{o.recipe}** ({o.status}): {o.reason}" for o in opt.outcomes]
        lines.append("")
    lines += _search_lines(opt)
    lines += ["## What each candidate is", ""]
    for c in [opt.baseline, *opt.candidates]:
        art = "" if c.artifact is None else f" `{os.path.relpath(c.artifact, opt.run_dir)}`."
        lines.append(f"- **{c.name}** ({c.technique}, {c.runtime}): {' '.join(c.notes)}{art}")
    if opt.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in opt.notes]
    lines += ["", "## Model", "", "```", opt.summary.describe(), "```", "", "## Data", "", "```",
              opt.data.describe(), "```", "", "## Parameters", "", "```",
              json.dumps(jsonable(opt.parameters(), strict=False), indent=2), "```", ""]
    return "\n".join(lines)


def _search_rows(opt) -> list[str]:
    """One line per configuration a searching recipe tried (``config["search"]``)."""
    rows = []
    for c in opt.candidates:
        for r in (c.config or {}).get("search", []):
            measured = ""
            if r.get("quality_kind"):
                q = r["quality"]
                measured = (f"{r['quality_kind'].replace('_', ' ')} "
                            + (f"{q:.1f} dB" if r["quality_kind"] == "sqnr_db" else f"{100 * q:.2f} %")
                            + f", {r['speedup']:.2f}x the original; ")
            rows.append(f"{c.name}: {r['setting']}: {measured}{'kept' if r.get('kept') else 'dropped'} ({r['why']})")
    return rows


def _op_tables(opt) -> list[tuple[str, dict]]:
    """(candidate name, its ``config["op_times"]``) for each search that profiled int8 against float."""
    return [(c.name, c.config["op_times"]) for c in opt.candidates if (c.config or {}).get("op_times")]


def _op_table_md(name: str, table: dict) -> list[str]:
    lines = [f"Per-operator time that decided which operator types {name} kept in float (ONNX Runtime's "
             f"profiler, ms per call at batch {table['batch']}, {table['threads']} thread(s); a Q/DQ pair counts "
             "for the operator it feeds; `total` is the operators' sum, `wall` the whole call):", "",
             "| operator | fp32 ms | int8 ms | int8 / fp32 | decision |", "|---|---|---|---|---|"]
    for r in table["rows"]:
        ratio = f"{r['int8_ms'] / r['fp32_ms']:.2f}x" if r["fp32_ms"] > 0 else "-"
        lines.append(f"| {r['op']} | {r['fp32_ms']:.3g} | {r['int8_ms']:.3g} | {ratio} | {r.get('decision', '-')} |")
    return lines + [""]


def _search_lines(opt) -> list[str]:
    rows = _search_rows(opt)
    lines = (["## Configurations the search tried", ""] + [f"- {r}" for r in rows] + [""]) if rows else []
    for name, table in _op_tables(opt):
        lines += _op_table_md(name, table)
    return lines


def search_summary(opt) -> str:
    """What the searching recipes tried, as the report shows it: every configuration with its quality,
    speed and why it was kept or dropped, then the per-operator time tables that decided which
    operator types stayed in float; for a search that found nothing, its reason. Empty without a search.

    Taught in 10_optimize_your_own_model.
    """
    lines = _search_lines(opt)
    for o in opt.outcomes:
        if "search" in o.recipe and o.reason:
            lines.append(f"{o.recipe} ({o.status}): {o.reason}")
    return "\n".join(lines).strip()


def _op_tables_html(opt) -> str:
    e = html.escape
    out = []
    for name, table in _op_tables(opt):
        trs = "".join(f"<tr><td>{e(r['op'])}</td><td>{r['fp32_ms']:.3g}</td><td>{r['int8_ms']:.3g}</td>"
                      f"<td>{e(r.get('decision', '-'))}</td></tr>" for r in table["rows"])
        out.append(f"<p>Per-operator time (ONNX Runtime's profiler, ms per call at batch {table['batch']}) that "
                   f"decided which operator types {e(name)} kept in float:</p><table><tr><th>operator</th>"
                   f"<th>fp32 ms</th><th>int8 ms</th><th>decision</th></tr>{trs}</table>")
    return "".join(out)


def best_fp32_summary(opt) -> dict | None:
    """The fastest eligible fp32 record at the largest batch size (the model as given included), its
    ratio to the model as given, and the recommendation's ratio to it; None before timing."""
    from optkit.optimize.recommendation import best_fp32

    if not opt.records:
        return None
    bs = max(opt.batch_sizes)
    rows = {r.name: r for r in opt.records if r.batch_size == bs}
    best, base = best_fp32(list(rows.values())), rows.get("baseline")
    if best is None or base is None:
        return None
    rec = rows.get(opt.recommendation.name) if opt.recommendation and opt.recommendation.name else None
    return {"name": best.name, "batch_size": bs, "latency_ms": best.latency_ms, "technique": best.technique,
            "speedup_vs_baseline": base.latency_ms / best.latency_ms,
            "recommended_vs_best_fp32": None if rec is None else best.latency_ms / rec.latency_ms}


def _fp32_sentence(opt) -> str:
    """One sentence naming the fastest fp32 candidate and the ratios against it."""
    b = best_fp32_summary(opt)
    if b is None:
        return ""
    if b["name"] == "baseline":
        text = (f"Fastest fp32 candidate: the model as given ({b['latency_ms']:.3g} ms at batch {b['batch_size']}); "
                "no float runtime or compilation beat it")
    else:
        text = (f"Fastest fp32 candidate: {b['name']} ({b['technique']}, {b['latency_ms']:.3g} ms at batch "
                f"{b['batch_size']}, {b['speedup_vs_baseline']:.2f}x the model as given)")
    ratio = b["recommended_vs_best_fp32"]
    if ratio is not None and opt.recommendation.name != b["name"]:
        text += f"; the recommendation {opt.recommendation.name} runs at {ratio:.2f}x against it"
    return text + "."


def html_report(opt, png: bytes | None) -> str:
    """``report.html``: what ``report.md`` says, opt-contained (the plot inlined as ``png``)."""
    e = html.escape
    head, rows = _table_rows(opt)
    rec = opt.recommendation
    eligible = {r.name: r.extra.get("eligible") for r in opt.records}
    trs = []
    for r in rows:
        colour = "#e6f4ea" if r[0] == rec.name else ("" if eligible.get(r[0]) else "#f4f4f4")
        trs.append(f"<tr style='background:{colour}'>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
    out = "".join(f"<li><b>{e(o.recipe)}</b> ({e(o.status)}): {e(o.reason)}</li>" for o in opt.outcomes)
    cands = "".join(f"<li><b>{e(c.name)}</b> ({e(c.technique)}, {e(c.runtime)}): {e(' '.join(c.notes))}"
                    + (f" <code>{e(os.path.relpath(c.artifact, opt.run_dir))}</code>" if c.artifact else "")
                    + "</li>" for c in [opt.baseline, *opt.candidates])
    img = ("<p>(No Pareto plot: it could not be drawn for this run.)</p>" if png is None else
           f'<img alt="Pareto plot" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
           'style="max-width:100%">')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>optkit optimize: {e(Path(opt.summary.path).name)}</title>
<style>body{{font-family:sans-serif;max-width:75em;margin:2em auto;line-height:1.4}}td,th{{border:1px solid #ccc;padding:.3em .5em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}table{{border-collapse:collapse}}pre{{background:#f6f6f6;padding:.6em}}</style></head><body>
<h1>optkit optimize: {e(Path(opt.summary.path).name)}</h1>
<p>Run <code>{e(opt.run_dir.name)}</code>, {e(opt.started_at)}, on {e(_env_line(opt.env))}, {opt.threads} thread(s).</p>
<h2>Recommendation: {e(rec.name or 'none')}</h2><p>{e(rec.reason)}</p>{'<p>' + e(_fp32_sentence(opt)) + '</p>' if _fp32_sentence(opt) else ''}
<h2>Candidates at batch {max(opt.batch_sizes)}</h2>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{''.join(trs)}</table>
<p>Green: recommended; grey: not eligible. <code>speedup</code> and <code>size_ratio</code> against the baseline; every number is in <code>results.json</code>.</p>
{img}
{'<h2>Recipes without a candidate</h2><ul>' + out + '</ul>' if out else ''}
{'<h2>Configurations the search tried</h2><ul>' + ''.join(f'<li>{e(r)}</li>' for r in _search_rows(opt)) + '</ul>' if _search_rows(opt) else ''}
{_op_tables_html(opt)}
<h2>What each candidate is</h2><ul>{cands}</ul>
{'<h2>Notes</h2><ul>' + ''.join(f'<li>{e(n)}</li>' for n in opt.notes) + '</ul>' if opt.notes else ''}
<h2>Model</h2><pre>{e(opt.summary.describe())}</pre><h2>Data</h2><pre>{e(opt.data.describe())}</pre>
<h2>Parameters</h2><pre>{e(json.dumps(jsonable(opt.parameters(), strict=False), indent=2))}</pre></body></html>
"""


def _label_clusters(ax, pts: list) -> None:
    """Name each point; points closer than a few per cent of the axes share one label."""
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    clusters: list[list] = []
    for px, py, r in sorted(pts, key=lambda p: (p[0], -p[1])):
        for c in clusters:
            if abs(c[0][0] - px) <= 0.04 * dx and abs(c[0][1] - py) <= 0.06 * dy:
                c.append((px, py, r))
                break
        else:
            clusters.append([(px, py, r)])
    placed: list[tuple[float, float, int]] = []  # labels on (nearly) one row alternate up and down
    for c in clusters:
        px, py = c[0][0], c[0][1]
        near = [lv for qx, qy, lv in placed if abs(qy - py) <= 0.06 * dy and abs(qx - px) <= 0.45 * dx]
        level = 0
        while level in near:
            level += 1
        placed.append((px, py, level))
        offset = (6, -12, 17, -23, 28, -34)[level % 6]
        ax.annotate(", ".join(r.name for _, _, r in c), (px, py), xytext=(5, offset), textcoords="offset points",
                    fontsize=8)


def _env_line(env: dict) -> str:
    from optkit.core import bench

    return bench.environment_line(env) if env else bench.environment_line()
