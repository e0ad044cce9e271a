"""Run the whole curriculum, or the whole test suite, with each stage timed.

``python -m optkit.course.curriculum run`` executes every notebook with papermill into
``runs/<timestamp>/`` (``runs/latest`` points at the newest) and writes ``summary.md``,
``summary.html`` and ``summary.json`` there: each notebook, whether it passed, how long it took
and its headline figures (see :func:`optkit.course.notebook.headline`).

``python -m optkit.course.curriculum test`` is what ``make test`` and CI run: the unit tests, papermill
execution of every notebook (plus parameterized runs), nbval's output comparison between the
committed notebooks and papermill's executed copies (:mod:`optkit.course.nbcheck`, with stated
tolerances for float results), and the browser test of JupyterLab with a widget
(``tests/course/test_browser.py``).

Used by the README's two commands; taught nowhere.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optkit.core.errors import OptkitError
from optkit.course.claims import CLAIM_KEY
from optkit.course.notebook import HEADLINE_KEY

__all__ = ["NotebookResult", "notebooks", "execute", "run", "write_summary", "test", "main",
           "PARAMETERIZED_RUNS"]

ROOT = Path(__file__).resolve().parents[2]  # the repository (optkit/<layer>/<module>.py)
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL = "optkit"

#: Extra papermill runs that prove parameterization works: (notebook stem, parameters).
PARAMETERIZED_RUNS: list[tuple[str, dict[str, Any]]] = [
    ("00_measure_first", {"batch_sizes": [1, 8], "max_time_s": 0.3, "models_to_measure": ["small_cnn"]}),
    # The capstone on three models of different kinds (its default run is the ONNX CNN with labels,
    # and section 9's third-party model, which these runs leave out: the default run covers it).
    ("10_optimize_your_own_model", {"model_path": "../data/capstone/text_transformer.onnx",
                                    "data_path": "../data/capstone/rotten_tomatoes_512.npz", "time_budget_s": 25.0,
                                    "third_party_model": ""}),
    ("10_optimize_your_own_model", {"model_path": "../data/capstone/keras_cnn.keras",
                                    "data_path": "../data/capstone/fashion_mnist_nhwc_256.npz", "time_budget_s": 25.0,
                                    "third_party_model": ""}),
]


@dataclass
class NotebookResult:
    """How one notebook's execution went."""

    notebook: str
    output: str
    ok: bool
    seconds: float
    parameters: dict = field(default_factory=dict)
    error: str = ""
    headlines: list = field(default_factory=list)
    claims: list = field(default_factory=list)

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"FAILED ({self.error.splitlines()[0] if self.error else '?'})"
        return f"NotebookResult({self.notebook!r}: {state}, {self.seconds:.0f} s, {len(self.headlines)} headlines)"


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The curriculum's notebooks in order; ``only`` filters by prefix (``["00", "02"]``)."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        unknown = [o for o in only if not any(p.stem.startswith(o) for p in paths)]
        if unknown:
            raise OptkitError("only", unknown, "matches no notebook",
                              "use prefixes of: " + ", ".join(p.stem for p in paths))
        paths = chosen
    return paths


def _tagged(nb, key: str) -> list[dict]:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get(key)
            if meta:
                found.append(dict(meta))
    return found


def _headlines(nb) -> list[dict]:
    return _tagged(nb, HEADLINE_KEY)


def claims_of(nb) -> list[dict]:
    """The conclusions a run checked (:func:`optkit.course.claims.check`), in order."""
    return _tagged(nb, CLAIM_KEY)


def _local_kernel_manager() -> type:
    """A kernel manager that talks to its kernel over Unix sockets (IPC), not TCP on loopback.

    A kernel started over TCP logs "Kernel is running over TCP without encryption" once per
    notebook; papermill's kernel is a child of this process on this machine, so IPC is both the
    quieter and the safer transport. The socket files live beside the connection file in Jupyter's
    runtime folder and are removed when the kernel stops.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class LocalKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    return LocalKernelManager


def execute(path: Path, output: Path, parameters: dict | None = None, *, kernel: str = KERNEL,
            timeout_s: int = 1800) -> NotebookResult:
    """Execute one notebook with papermill; never raises for a failing notebook."""
    import nbformat
    import papermill as pm

    os.environ["OPTKIT_STATIC"] = "1"  # widgets show their static result
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    error = ""
    try:
        pm.execute_notebook(str(path), str(output), parameters=parameters or {}, kernel_name=kernel,
                            cwd=str(path.parent), progress_bar=False, execution_timeout=timeout_s,
                            kernel_manager_class=_local_kernel_manager())
        ok = True
    except Exception as exc:  # papermill wraps the cell's exception; keep its message
        ok = False
        error = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
    seconds = time.perf_counter() - start
    executed = nbformat.read(str(output), as_version=4) if output.exists() else None
    heads = _headlines(executed) if executed is not None else []
    checked = claims_of(executed) if executed is not None else []
    return NotebookResult(path.stem, str(output), ok, seconds, parameters or {}, error, heads, checked)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_VERDICT = {True: "holds", False: "does not hold", None: "inside the noise"}


def _claims_markdown(results: list[NotebookResult]) -> list[str]:
    """A section listing every checked conclusion with its verdict on this machine."""
    lines = ["", "## Conclusions checked on this machine", ""]
    for r in results:
        for c in r.claims:
            lines.append(f"- {r.notebook}: **{_VERDICT.get(c.get('holds'), '?')}**: {c.get('statement')}"
                         + (f" ({c['evidence']})" if c.get("evidence") else ""))
    return lines if len(lines) > 3 else []


def _claims_html(results: list[NotebookResult]) -> str:
    items = [f"<li>{html.escape(r.notebook)}: <b>{_VERDICT.get(c.get('holds'), '?')}</b>: "
             f"{html.escape(str(c.get('statement')))}"
             + (f" <small>({html.escape(str(c['evidence']))})</small>" if c.get("evidence") else "") + "</li>"
             for r in results for c in r.claims]
    return f"<h2>Conclusions checked on this machine</h2><ul>{''.join(items)}</ul>" if items else ""


def write_summary(results: list[NotebookResult], out_dir: Path, title: str = "optkit curriculum run") -> None:
    """Write summary.json, summary.md and summary.html for a run."""
    from optkit.core import bench

    env = bench.environment()
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    data = {"title": title, "finished": stamp, "environment": env, "results": [asdict(r) for r in results]}
    (out_dir / "summary.json").write_text(json.dumps(data, indent=2, default=str))

    def heads_text(r: NotebookResult, sep: str) -> str:
        items = [f"{h['label']}: {_fmt(h['value'])}{(' ' + h['unit']) if h.get('unit') else ''}" for h in r.headlines]
        return sep.join(items) if items else "-"

    md = [f"# {title}", "", f"Finished {stamp} on {bench.environment_line()}.", "",
          "| notebook | result | minutes | headline figures |", "|---|---|---|---|"]
    for r in results:
        state = "passed" if r.ok else f"**failed**: {r.error.splitlines()[0] if r.error else ''}"
        label = r.notebook + (f" {r.parameters}" if r.parameters else "")
        md.append(f"| [{label}]({Path(r.output).name}) | {state} | {r.seconds / 60:.1f} | {heads_text(r, '<br>')} |")
    md += _claims_markdown(results)
    (out_dir / "summary.md").write_text("\n".join(md) + "\n")

    rows = []
    for r in results:
        state = "passed" if r.ok else "failed: " + html.escape(r.error.splitlines()[0] if r.error else "")
        label = html.escape(r.notebook + (f" {r.parameters}" if r.parameters else ""))
        heads = "<br>".join(html.escape(x) for x in heads_text(r, "\n").splitlines())
        colour = "#e6f4ea" if r.ok else "#fce8e6"
        rows.append(f"<tr style='background:{colour}'><td><a href='{html.escape(Path(r.output).name)}'>{label}</a>"
                    f"</td><td>{state}</td><td>{r.seconds / 60:.1f}</td><td>{heads}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top}}
table{{border-collapse:collapse}}</style></head><body><h1>{html.escape(title)}</h1>
<p>Finished {stamp} on {html.escape(bench.environment_line())}.</p>
<table><tr><th>notebook</th><th>result</th><th>minutes</th><th>headline figures</th></tr>{''.join(rows)}</table>
{_claims_html(results)}<p>Open a notebook with <code>make lab</code>, or read the executed copies beside this page.</p></body></html>"""
    (out_dir / "summary.html").write_text(page)


def run(out_dir: Path | None = None, only: list[str] | None = None, parameters: dict | None = None,
        *, extra_runs: list[tuple[str, dict]] | None = None) -> list[NotebookResult]:
    """Execute the curriculum into ``out_dir`` (default ``runs/<timestamp>``) and write its summary."""
    if out_dir is None:
        out_dir = ROOT / "runs" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in notebooks(only):
        print(f"[run] {path.stem} ...", flush=True)
        r = execute(path, out_dir / path.name, parameters)
        print(f"[run] {path.stem}: {'passed' if r.ok else 'FAILED: ' + r.error} in {r.seconds:.0f} s", flush=True)
        results.append(r)
    seen: dict[str, int] = {}
    for stem, params in extra_runs or []:
        path = NOTEBOOK_DIR / f"{stem}.ipynb"
        seen[stem] = seen.get(stem, 0) + 1  # several runs of one notebook each keep their own copy
        suffix = "parameterized" if seen[stem] == 1 else f"parameterized-{seen[stem]}"
        print(f"[run] {stem} with {params} ...", flush=True)
        r = execute(path, out_dir / f"{stem}.{suffix}.ipynb", params)
        print(f"[run] {stem} (parameterized): {'passed' if r.ok else 'FAILED: ' + r.error} in {r.seconds:.0f} s",
              flush=True)
        results.append(r)
    write_summary(results, out_dir)
    latest = out_dir.parent / "latest"
    if out_dir.parent.name == "runs":
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(out_dir.name)
        except OSError:
            pass
    print(f"[run] summary: {out_dir / 'summary.html'}")
    return results


def _stage(name: str, times: list[tuple[str, float, bool]], fn) -> bool:
    print(f"\n===== stage: {name} =====", flush=True)
    start = time.perf_counter()
    ok = bool(fn())
    seconds = time.perf_counter() - start
    times.append((name, seconds, ok))
    print(f"===== stage {name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s =====", flush=True)
    return ok


def test(only: list[str] | None = None) -> int:
    """The README's test command: unit tests, papermill of every notebook, nbval. Returns an exit code."""
    py = sys.executable
    env = {**os.environ, "OPTKIT_STATIC": "1"}
    times: list[tuple[str, float, bool]] = []
    out_dir = ROOT / "runs" / ("test-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))

    def unit() -> bool:
        return subprocess.call([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not browser", "tests"],
                               cwd=ROOT, env=env) == 0

    def browser() -> bool:
        # JupyterLab + headless Chromium + a widget (tests/course/test_browser.py); screenshots land in out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        code = subprocess.call([py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "browser", "tests"],
                               cwd=ROOT, env={**env, "OPTKIT_RUN_DIR": str(out_dir)})
        return code == 0

    def papermill_all() -> bool:
        results = run(out_dir, only, extra_runs=[] if only else PARAMETERIZED_RUNS)
        return all(r.ok for r in results)

    def nbval() -> bool:
        # nbval's comparison of each committed notebook with papermill's fresh copy (optkit.course.nbcheck):
        # executing every notebook a second time under `pytest --nbval` would double the CPU time.
        paths = [str(p.relative_to(ROOT)) for p in notebooks(only)]
        cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "optkit.course.nbcheck",
               "--nbcheck-executed", str(out_dir), "--nbval-sanitize-with", "notebooks/nbval_sanitize.cfg", *paths]
        return subprocess.call(cmd, cwd=ROOT, env=env) == 0

    ok = True
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"kernels: {'held to ' + isa + ' (ISA=' + isa.lower() + ')' if isa else 'native'}; "
          f"comparing with the committed outputs of notebooks/", flush=True)
    for name, fn in [("unit tests", unit), ("papermill (every notebook)", papermill_all),
                     ("nbval (committed vs executed outputs)", nbval), ("browser (JupyterLab + widgets)", browser)]:
        ok = _stage(name, times, fn) and ok
    print("\n===== stage times =====")
    for name, seconds, passed in times:
        print(f"{name:<30} {seconds:7.0f} s  {'ok' if passed else 'FAILED'}")
    print(f"{'total':<30} {sum(t for _, t, _ in times):7.0f} s")
    return 0 if ok else 1


def _parse_value(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optkit.course.curriculum", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks and write a summary page")
    p_run.add_argument("--out", type=Path, default=None, help="run folder (default runs/<timestamp>)")
    p_run.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 00 01")
    p_run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                       help="papermill parameter for every notebook run (Python literal)")
    p_test = sub.add_parser("test", help="unit tests, papermill and nbval, each stage timed")
    p_test.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 00 01")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            params = {name: _parse_value(value) for name, value in args.parameter}
            results = run(args.out, args.only, params)
            return 0 if all(r.ok for r in results) else 1
        return test(args.only)
    except OptkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
