"""Issue 17's targets on the zoo: optkit optimize's recommendation against ONNX Runtime's own plain
quantization recipes, on every ONNX model of :mod:`optkit.data.third_party`, measured side by side.

For each model, on the same rows (:func:`optkit.data.third_party.build_inputs`, split as
``optkit optimize`` splits them: the calibration rows drawn at random with seed 0, quality measured
on the others):

- optkit: ``optimize.optimize(model, data)`` with its default recipes and the given budget; its
  recommendation and the candidate object it built;
- ONNX Runtime, as its documentation shows: ``quant_pre_process`` then ``quantize_dynamic``
  (defaults) and ``quantize_static`` (QDQ, defaults; and once with ``per_channel=True``) with a
  ``CalibrationDataReader`` over the same calibration rows;
- one interleaved :func:`optkit.core.bench.compare` of the model as given, optkit's recommendation
  and every plain recipe at one batch size; quality of each against the fp32 model with the
  measure optimize uses for that output (:func:`optkit.optimize.quality.judge`).

Prints one table per model and the machine line. Run:
``.venv/bin/python benchmarks/zoo_targets.py --time-budget-s 30 --threads 1``.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np

from optkit.core import bench
from optkit.data import third_party as tp

ONNX_MODELS = [m.name for m in tp.zoo_models() if m.file.endswith(".onnx")]


def rows(npz: Path, summary, seed: int = 0):
    """(rows-first inputs, constants, batch axes, n_calibration) from ``npz``, split the way
    :func:`optkit.optimize.load_data` splits (read here so a model it refuses still gets measured)."""
    from optkit.optimize.inputs import batch_axes

    axes = batch_axes(summary)
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    inputs = {s.name: np.moveaxis(arrays[s.name], axes[s.name], 0) for s in summary.inputs if axes[s.name] is not None}
    constants = {s.name: arrays[s.name] for s in summary.inputs if axes[s.name] is None}
    n = len(next(iter(inputs.values())))
    n_cal = int(min(128, n // 4))
    order = np.random.default_rng(seed).permutation(n)
    inputs = {k: np.ascontiguousarray(v[order]) for k, v in inputs.items()}
    return inputs, constants, {k: axes[k] for k in inputs}, n_cal


def model_feed(inputs, constants, axes, idx):
    """The model-layout feed of rows ``idx``."""
    feed = {k: np.ascontiguousarray(np.moveaxis(v[idx], 0, axes[k])) for k, v in inputs.items()}
    return {**feed, **constants}


def plain_ort(model: Path, out: Path, calibration: list[dict]) -> dict:
    """ONNX Runtime's plain recipes, as its documentation shows them: name -> path, or the error."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    made: dict = {}
    pre = out / "pre.onnx"
    try:
        with contextlib.chdir(out):  # its symbolic shape inference leaves a temporary file in the working folder
            quant_pre_process(str(model), str(pre))
    except Exception as e:  # noqa: BLE001 - report and quantize the model as given
        made["pre_process"] = f"failed ({type(e).__name__}: {str(e)[:80]}); quantized the model as given"
        pre = model
    recipes = {
        "ort dynamic (defaults)": lambda p: quantize_dynamic(str(pre), str(p)),
        "ort static QDQ (defaults)": lambda p: quantize_static(str(pre), str(p), Reader(calibration),
                                                               quant_format=QuantFormat.QDQ),
        "ort static QDQ per-channel": lambda p: quantize_static(str(pre), str(p), Reader(calibration),
                                                                quant_format=QuantFormat.QDQ, per_channel=True),
    }
    for i, (name, build) in enumerate(recipes.items()):
        path = out / f"plain{i}.onnx"
        try:
            build(path)
            made[name] = path
        except Exception as e:  # noqa: BLE001 - a plain recipe that fails is a result too
            made[name] = f"{type(e).__name__}: {str(e)[:100]}"
    return made


def run_optkit(model: Path, data: Path, out: Path, budget: float, batch: int, threads: int):
    """optkit optimize's run (default recipes), or the error it raised."""
    from optkit import optimize

    try:
        return optimize.optimize(model, data, output_dir=out, batch_sizes=[1, batch], time_budget_s=budget,
                                 threads=threads, log=None)
    except Exception as e:  # noqa: BLE001 - the table says it
        return f"{type(e).__name__}: {str(e)[:160]}"


def measure(name: str, n: int, budget: float, batch: int, threads: int, work: Path) -> list[dict]:
    """One model: optkit's recommendation and the plain recipes, timed side by side; table rows."""
    import onnxruntime as ort

    from optkit.optimize.inspection import inspect_model
    from optkit.optimize.quality import judge

    model = tp.model_path(name)
    npz = tp.build_inputs(name, work, n=n)
    summary = inspect_model(model)
    inputs, constants, axes, n_cal = rows(npz, summary)
    n_rows = len(next(iter(inputs.values())))
    calibration = [model_feed(inputs, constants, axes, np.arange(i, min(i + 8, n_cal))) for i in range(0, n_cal, 8)]
    opt = run_optkit(model, npz, work / "runs", budget, batch, threads)
    plain = plain_ort(model, work, calibration)

    def session(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return lambda feed: s.run(None, feed)

    runners = {"as given": session(model)}
    runners.update({k: session(v) for k, v in plain.items() if isinstance(v, Path)})
    timing_rows = np.arange(batch) % n_rows
    fns = {k: (lambda r=r: r(model_feed(inputs, constants, axes, timing_rows))) for k, r in runners.items()}
    rec, own = None, ""
    if not isinstance(opt, str):  # optkit's recommended file, in the same kind of session as the others
        rec = opt.recommendation.name
        cand = opt.baseline if rec == "baseline" else next(c for c in opt.candidates if c.name == rec)
        own = f" (optkit's own run: {opt.recommendation.speedup:.2f}x)"
        if rec == "baseline":
            pass  # the model as given: its row is the "as given" row
        elif cand.artifact is not None and str(cand.artifact).endswith(".onnx"):
            runners[f"optkit: {rec}"] = session(cand.artifact)
            fns[f"optkit: {rec}"] = lambda r=runners[f"optkit: {rec}"]: r(model_feed(inputs, constants, axes,
                                                                                      timing_rows))
        else:
            feed_rows = {k: np.ascontiguousarray(v[timing_rows]) for k, v in inputs.items()}
            fns[f"optkit: {rec}"] = lambda: cand.predict(feed_rows)
    times = bench.compare(fns, batch_size=batch, max_time_s=2.0, rounds=5, warmup=3, min_repeats=10)
    eval_idx = np.arange(n_cal, n_rows)
    outs = {k: np.concatenate([r(model_feed(inputs, constants, axes, eval_idx[i:i + batch]))[0]
                               for i in range(0, len(eval_idx), batch)]) for k, r in runners.items()}
    table = []
    for key in fns:
        row = {"model": name, "variant": key, "speedup": times["as given"].median_ms / times[key].median_ms,
               "latency_ms": times[key].median_ms}
        if key in outs:
            check = judge(key, [outs["as given"]], [outs[key]], labels=None, max_drop=1.0, min_sqnr_db=20.0)
        else:
            check = opt.checks[rec]
        row.update(quality=f"{check.quality_kind} {check.quality:.4g}" + (own if key.startswith("optkit") else ""),
                   ok=check.ok)
        table.append(row)
    if rec == "baseline":
        table.append({**table[0], "variant": "optkit: baseline (the model as given)",
                      "quality": table[0]["quality"] + own})
    for key, value in plain.items():
        if isinstance(value, str):
            table.append({"model": name, "variant": key, "speedup": None, "latency_ms": None, "quality": value,
                          "ok": False})
    if isinstance(opt, str):
        table.append({"model": name, "variant": "optkit", "speedup": None, "latency_ms": None, "quality": opt,
                      "ok": False})
    return table


def show(table: list[dict], batch: int) -> None:
    """Print one model's rows and the verdict: optkit's speed-up against the best plain setting
    that stays within the quality budget."""
    print(f"\n## {table[0]['model']} (batch {batch}, speed-up against the model as given)")
    print(f"| {'variant':<34} | {'latency ms':>10} | {'speed-up':>8} | quality vs fp32 | within budget |")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 10}|-----------------|---------------|")
    for r in table:
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3g}"
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"| {r['variant']:<34} | {lat:>10} | {sp:>8} | {r['quality']} | {'yes' if r['ok'] else 'no'} |")
    plain = [r for r in table if r["variant"].startswith("ort ") and r["ok"] and (r["speedup"] or 0) > 1.0]
    best = max(plain, key=lambda r: r["speedup"], default=None)
    mine = next((r for r in table if r["variant"].startswith("optkit") and r["speedup"]), None)
    print("best plain ORT within budget: " + (f"{best['variant']} {best['speedup']:.2f}x" if best else "none faster")
          + "; optkit: " + (f"{mine['variant'][8:]} {mine['speedup']:.2f}x" if mine else "no recommendation"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=ONNX_MODELS, choices=ONNX_MODELS)
    parser.add_argument("--n", type=int, default=96, help="rows per model (a quarter calibrates)")
    parser.add_argument("--time-budget-s", type=float, default=30.0, help="optkit optimize's time budget")
    parser.add_argument("--batch", type=int, default=8, help="the batch size timed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(bench.environment_line())
    for name in args.models:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as work:
            show(measure(name, args.n, args.time_budget_s, args.batch, args.threads, Path(work)), args.batch)
        print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
