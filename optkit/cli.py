"""The ``optkit`` command.

- ``optkit curriculum run|test`` runs the notebooks (see :mod:`optkit.course.curriculum`);
- ``optkit optimize [MODEL] [--data DATA.npz] [--max-accuracy-drop 1.0] [--output-dir DIR] ...``
  runs the capstone on your model (see :mod:`optkit.optimize`): directly (the default) or, with
  ``--via papermill``, by executing notebook 10 with the same parameters. Every parameter of the
  notebook has an option, ``_`` written as ``-``. Bad input prints one line on stderr and exits
  with status 2.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
from pathlib import Path

__all__ = ["main", "optimize_parser", "NOTEBOOK"]

ROOT = Path(__file__).resolve().parent.parent
#: The notebook ``--via papermill`` executes.
NOTEBOOK = ROOT / "notebooks" / "10_optimize_your_own_model.ipynb"

_HELP = """usage: optkit {curriculum,optimize} ...

  curriculum run    execute every notebook into runs/<time>/ with a summary page
  curriculum test   unit tests, papermill of every notebook, nbval
  optimize [MODEL]  optimize your model: verified, benchmarked artifacts and a report
                    (optkit optimize --help for its options)"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2), not usage + error."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _float_or_none(text: str):
    return None if text.lower() in ("none", "") else float(text)


def optimize_parser() -> argparse.ArgumentParser:
    """The ``optkit optimize`` argument parser (option names mirror notebook 10's parameters)."""
    from optkit.optimize.recipes import RUNTIMES

    p = _Parser(prog="optkit optimize",
                description="Try every applicable optimization recipe on your model, verify each candidate "
                            "against the original (parity, accuracy on your labels), time them interleaved, and "
                            "write the artifacts, results.json and a report recommending one. Without MODEL: the "
                            "bundled reference CNN and its data.")
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="your model: .onnx, .pt2 (torch.export), .keras/.h5/SavedModel folder, or .tflite "
                        "(default: the bundled reference CNN with its data)")
    p.add_argument("--model-path", dest="model_path", default=None, help="the same as MODEL")
    p.add_argument("--data", "--data-path", dest="data_path", default=None,
                   help=".npz with one array per model input (or one array) and optional labels 'y'; "
                        "without it, inputs are generated (latency and parity only)")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="largest accuracy loss (points) a recommended candidate may have (default: 1.0)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32],
                   help="batch sizes to time; the largest decides the recommendation (default: 1 32)")
    p.add_argument("--runtimes", nargs="+", default=None, choices=list(RUNTIMES), metavar="RUNTIME",
                   help=f"only try recipes for these runtimes: {', '.join(RUNTIMES)} (default: all that apply)")
    p.add_argument("--recipes", nargs="+", default=None,
                   help="only try these recipes (see --list-recipes; default: all that apply)")
    p.add_argument("--time-budget-s", type=float, default=45.0,
                   help="soft time budget (s) for building and timing candidates (default: 45)")
    p.add_argument("--output-dir", default="optkit-optimize",
                   help="folder for the runs: each run writes <output-dir>/<run id>/ and 'latest' names the newest "
                        "(default: optkit-optimize)")
    p.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: all cores)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept a pickled PyTorch module (.pt/.pth): loading it runs code from the file")
    p.add_argument("--min-sqnr-db", type=float, default=20.0,
                   help="without labels, for outputs that are not class scores: the SQNR a candidate needs (default: 20)")
    p.add_argument("--task", default="auto", choices=["auto", "classification", "sequence", "dense", "regression"],
                   help="what the first output is, when its shape misleads (default: auto, by shape)")
    p.add_argument("--metric", default=None, metavar="MODULE:FUNCTION",
                   help="your quality measure: a function(outputs, labels) -> score in [0, 1], higher is better")
    p.add_argument("--run-name", default=None, help="name of the run folder (default: <time>-<model name>)")
    p.add_argument("--via", choices=["direct", "papermill"], default="direct",
                   help="run the code directly (default), or execute notebook 10 with these parameters via papermill")
    p.add_argument("--list-recipes", action="store_true", help="list the registered recipes and exit")
    p.add_argument("--quiet", action="store_true", help="print only the result")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    return p


def _parameters(args: argparse.Namespace) -> dict:
    """Notebook 10's parameters from the parsed options (paths made absolute)."""
    model = args.model or args.model_path
    if args.model and args.model_path and args.model != args.model_path:
        from optkit.core.errors import OptkitError

        raise OptkitError("model_path", args.model_path, f"differs from MODEL {args.model!r}", "give the model once")

    def absolute(path):
        return None if path in (None, "") else str(Path(path).expanduser().resolve())

    return {"model_path": absolute(model), "data_path": absolute(args.data_path),
            "max_accuracy_drop": float(args.max_accuracy_drop), "batch_sizes": list(args.batch_sizes),
            "runtimes": args.runtimes, "recipes": args.recipes, "time_budget_s": float(args.time_budget_s),
            "output_dir": absolute(args.output_dir), "threads": args.threads, "allow_pickle": bool(args.allow_pickle),
            "min_sqnr_db": float(args.min_sqnr_db), "run_name": args.run_name,
            **({"task": args.task} if args.task != "auto" else {}),
            **({"metric": args.metric} if args.metric else {})}


def _list_recipes() -> int:
    from optkit.optimize.recipes import all_recipes

    width = max(len(r.name) for r in all_recipes())
    for r in all_recipes():
        print(f"{r.name:<{width}}  {', '.join(r.formats):<13} {r.runtime:<12} {r.description}")
    return 0


def _print_result(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    rec = results.get("recommendation") or {}
    if rec.get("name"):
        extra = ""
        if rec["name"] == "baseline":
            extra = ": keep the model as given (no candidate was faster beyond the noise)"
        elif rec.get("speedup"):
            extra = f": {rec['speedup']:.2f}x faster than the baseline at batch {rec['batch_size']}"
            if rec.get("size_ratio") and abs(rec["size_ratio"] - 1.0) > 0.02:
                extra += f", {rec['size_ratio']:.2f}x smaller" if rec["size_ratio"] > 1 else \
                    f", {1 / rec['size_ratio']:.2f}x larger"
        print(f"recommended: {rec['name']}{extra}")
        if rec.get("artifact"):
            print(f"artifact:    {run_dir / rec['artifact']}")
    else:
        print("recommended: none (see the report)")
    print(f"report:      {run_dir / 'report.html'}")


def _run_direct(params: dict, quiet: bool) -> int:
    from optkit.optimize import Optimization

    log = None if quiet else (lambda line: print(line, flush=True))
    opt = Optimization(**params, log=log).run()
    _print_result(opt.run_dir)
    return 0


def _run_papermill(params: dict, quiet: bool) -> int:
    from optkit.core.errors import OptkitError
    from optkit.optimize import Optimization

    if not NOTEBOOK.exists():
        raise OptkitError("via", "papermill", f"the notebook {NOTEBOOK} is not here (an installed copy of optkit "
                          "ships without notebooks)", "use --via direct, or run from a checkout of the repository")
    from optkit.core.errors import check_path_exists
    from optkit.optimize import detect_format

    extra = sorted({"task", "metric"} & set(params))
    if extra:
        raise OptkitError(extra[0], params[extra[0]], "is not a parameter of notebook 10",
                          "use --via direct (the default) for --task and --metric")
    opt = Optimization(**params, log=None)  # check the parameters here, before starting a kernel
    detect_format(check_path_exists("model_path", opt.model_path))
    if opt.data_path is not None:
        check_path_exists("data_path", opt.data_path)
    import papermill as pm

    out_dir = Path(params["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.\-]+", "_", Path(params["model_path"]).stem) if params["model_path"] else "reference_cnn"
    run_name = params["run_name"] or f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{stem}"
    # the notebook's defaults for the two paths are "" (papermill lists str parameters, not None ones)
    params = {**params, "run_name": run_name, "model_path": params["model_path"] or "",
              "data_path": params["data_path"] or ""}
    executed = out_dir / f".{run_name}.notebook.ipynb"
    if not quiet:
        print(f"[optimize] executing {NOTEBOOK.name} with papermill ...", flush=True)
    os.environ.setdefault("OPTKIT_STATIC", "1")
    try:
        pm.execute_notebook(str(NOTEBOOK), str(executed), parameters=params, kernel_name="optkit",
                            cwd=str(NOTEBOOK.parent), progress_bar=False)
    except pm.PapermillExecutionError as e:
        keep = out_dir / f"{run_name}.failed.ipynb"
        if executed.exists():
            os.replace(executed, keep)
        if e.ename == "OptkitError":
            raise _TextError(str(e.evalue).strip().splitlines()[0] if e.evalue else "bad input") from None
        print(f"optkit optimize: the notebook failed: {e.ename}: {str(e.evalue).splitlines()[0] if e.evalue else ''} "
              f"(executed copy: {keep})", file=sys.stderr)
        return 1
    run_dir = out_dir / run_name
    target = run_dir / "notebook.ipynb"
    if run_dir.is_dir():
        os.replace(executed, target)
    _print_result(run_dir)
    if not quiet:
        print(f"notebook:    {target}")
    return 0


class _TextError(Exception):
    """An OptkitError raised inside the notebook's kernel, as the one line papermill hands back."""


def optimize_main(argv: list[str]) -> int:
    """``optkit optimize ...``: returns the exit status (0 ok, 2 bad input, 1 failure)."""
    from optkit.core.errors import OptkitError

    parser = optimize_parser()
    args = parser.parse_args(argv)
    if args.list_recipes:
        return _list_recipes()
    try:
        params = _parameters(args)
        if args.via == "papermill":
            return _run_papermill(params, args.quiet)
        return _run_direct(params, args.quiet)
    except (OptkitError, _TextError) as e:
        print(f"optkit optimize: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optkit optimize: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"optkit optimize: failed: {type(e).__name__}: {first} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_HELP)
        return 0
    if argv[0] == "curriculum":
        from optkit.course.curriculum import main as curriculum_main

        return curriculum_main(argv[1:])
    if argv[0] == "optimize":
        return optimize_main(argv[1:])
    print(f"optkit: unknown command {argv[0]!r}; known: curriculum, optimize (see `optkit --help`)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
