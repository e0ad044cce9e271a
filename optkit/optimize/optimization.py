"""The capstone's run: :class:`Optimization` holds one run on one model, its steps as methods
(inspect, load_data, measure_baseline, try_recipes, verify, benchmark, recommend, write_report)
and their results as attributes; :func:`optimize` runs them all.

Recipes come from :mod:`optkit.optimize.recipes`; models are read by
:mod:`~optkit.optimize.inspection`, data by :mod:`~optkit.optimize.inputs`; the rule and its
explanation live in :mod:`~optkit.optimize.recommendation`, the run folder and the report in
:mod:`~optkit.optimize.reporting`.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from optkit.core import verify
from optkit.core.errors import OptkitError, check_int, check_range
from optkit.core.record import Record, jsonable
from optkit.core.variant import Workload
from optkit.optimize import reporting
from optkit.optimize.inputs import SampleData, load_data, output_axes, regenerate, rows_first
from optkit.optimize.inspection import ModelSummary, _format_text, _load_model
from optkit.optimize.recipes import (RUNTIMES, Candidate, Context, Recipe, RecipeSkipped, all_recipes,
                                     litert_candidate, ort_candidate, recipes_for, torch_runner)
from optkit.optimize.recommendation import Recommendation, explain, recommend
from optkit.optimize.reference import REFERENCE_DATA, REFERENCE_MODEL
from optkit.optimize.quality import judge, load_metric, task_of
from optkit.optimize.verification import Check, _check_text, _padded, class_scores, outputs

__all__ = ["Optimization", "Outcome", "optimize", "FP32_REFERENCES"]

#: Recipes whose fp32 candidates make the "best fp32" comparison fair (a compiled program, the same
#: program in ONNX Runtime): tried even when the time budget would skip them.
FP32_REFERENCES = ("torch-compile", "torch-to-onnx")


# =============================================================================== helpers

def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    msg = text[0][:limit] if text else ""
    if isinstance(e, (OptkitError, RecipeSkipped)):
        return msg or type(e).__name__
    if isinstance(e, NotImplementedError) and not msg:
        return "NotImplementedError (its build function is not written yet)"
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def _check_list_of(parameter: str, value: Any, allowed: Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise OptkitError(parameter, value, "must be a list of names", f"pass e.g. [{', '.join(map(repr, (allowed or ['name'])[:2]))}]")
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise OptkitError(parameter, unknown, "are not known names", "use some of " + ", ".join(allowed))
    return list(value)


# =============================================================================== the run

@dataclass
class Outcome:
    """A recipe that produced no candidate: ``status`` is ``"skipped"`` (does not apply here) or
    ``"failed"`` (it raised, or its candidate failed verification), with the ``reason``."""

    recipe: str
    status: str
    reason: str
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return jsonable(self.__dict__, strict=False)

    def __repr__(self) -> str:
        return f"{self.recipe}: {self.status} - {self.reason}"


class Optimization:
    """One capstone run on one model: the steps as methods, their results as attributes.

    Parameters (the same names as notebook 10's and the ``optkit optimize`` options):
    ``model_path`` (None: the bundled reference CNN, with its data), ``data_path`` (an ``.npz``;
    None: generated inputs, unless the model is the reference), ``max_accuracy_drop`` (points,
    default 1), ``batch_sizes`` (timed; the largest decides the recommendation), ``runtimes``
    (restrict to some of :data:`RUNTIMES`), ``recipes`` (restrict to some recipe names),
    ``time_budget_s`` (soft budget for building and timing candidates: recipes still waiting when
    60 % of it is spent are skipped, timing shares the rest), ``output_dir``, ``threads`` (None:
    every core this process may use), ``allow_pickle``, ``min_sqnr_db`` (eligibility when outputs
    are not class scores and there are no labels), ``log`` (a function receiving progress lines),
    ``task`` (``"auto"``, or what the first output is when its shape misleads: ``"classification"``,
    ``"sequence"``, ``"dense"``, ``"regression"``) and ``metric`` (your quality measure: a
    function(outputs, labels) -> score in [0, 1], or ``"module:function"``); see
    :mod:`optkit.optimize.quality` for how each output is judged.

    Attributes filled as the steps run: ``summary``, ``data``, ``workload`` (the
    :class:`optkit.core.variant.Workload` every record is measured on), ``baseline``,
    ``candidates`` (:class:`Candidate`, each an :class:`optkit.core.variant.Variant`), ``outcomes``
    (skipped and failed recipes), ``checks``, ``records`` (from :func:`optkit.core.variant.evaluate`,
    one per variant and batch size), ``recommendation``, ``run_dir``; ``started_at`` is when the
    run was created (ISO time).

    Taught in 10_optimize_your_own_model.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, data_path: str | os.PathLike | None = None, *,
                 max_accuracy_drop: float = 1.0, batch_sizes: Sequence[int] = (1, 32),
                 runtimes: Sequence[str] | None = None, recipes: Sequence[str] | None = None,
                 time_budget_s: float = 45.0, output_dir: str | os.PathLike = "optkit-optimize",
                 threads: int | None = None, allow_pickle: bool = False, min_sqnr_db: float = 20.0,
                 run_name: str | None = None, log: Callable[[str], Any] | None = print, task: str = "auto",
                 metric: str | Callable | None = None):
        if model_path is None or str(model_path) == "":
            model_path = REFERENCE_MODEL
            if data_path is None or str(data_path) == "":
                data_path = REFERENCE_DATA
        self.model_path = Path(model_path).expanduser()
        self.data_path = None if data_path is None or str(data_path) == "" else Path(data_path).expanduser()
        check_range("max_accuracy_drop", max_accuracy_drop, 0, 100)
        self.max_accuracy_drop = float(max_accuracy_drop)
        if isinstance(batch_sizes, int) and not isinstance(batch_sizes, bool):
            batch_sizes = [batch_sizes]
        if not isinstance(batch_sizes, (list, tuple)) or not batch_sizes or not all(
                isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 65536 for b in batch_sizes):
            raise OptkitError("batch_sizes", batch_sizes, "must be a non-empty list of whole numbers from 1 to 65536",
                              "pass e.g. [1, 32]")
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        self.runtimes = _check_list_of("runtimes", runtimes, list(RUNTIMES))
        self.recipe_names = _check_list_of("recipes", recipes, [r.name for r in all_recipes()])
        check_range("time_budget_s", time_budget_s, 0, low_open=True)
        self.time_budget_s = float(time_budget_s)
        threads = check_int("threads", threads, 1, allow_none=True)
        self.threads = threads if threads is not None else _default_threads()
        out = Path(output_dir).expanduser()
        if out.exists() and not out.is_dir():
            raise OptkitError("output_dir", str(output_dir), "is a file, not a folder", "pass a folder path")
        self.output_dir = out
        if not isinstance(allow_pickle, bool):
            raise OptkitError("allow_pickle", allow_pickle, "must be True or False", "pass allow_pickle=True to opt in")
        self.allow_pickle = allow_pickle
        check_range("min_sqnr_db", min_sqnr_db, 0)
        self.min_sqnr_db = float(min_sqnr_db)
        if run_name is not None and (not isinstance(run_name, str) or not re.fullmatch(r"[\w.\-]+", run_name)):
            raise OptkitError("run_name", run_name, "must be letters, digits, '.', '-' or '_'", "pass e.g. 'trial-1'")
        self.run_name = run_name
        task_of(np.zeros((1, 2)), task)  # checks the name
        self.task = task
        self.metric = load_metric(metric)
        self.log = log or (lambda line: None)
        self.summary: ModelSummary | None = None
        self.data: SampleData | None = None
        self.workload: Workload | None = None
        self.baseline: Candidate | None = None
        self.candidates: list[Candidate] = []
        self.outcomes: list[Outcome] = []
        self.checks: dict[str, Check] = {}
        self.baseline_timing: dict = {}
        self.records: list[Record] = []
        self.recommendation: Recommendation | None = None
        self.run_dir: Path | None = None
        self.env: dict = {}
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self._cache: dict = {}
        self._loaded = None
        self._reference_outputs: list | None = None
        self._verified: dict[str, list] = {}  # candidate name -> its outputs on the evaluation rows
        self._budget_start: float | None = None
        self._started = time.perf_counter()
        self.started_at = _dt.datetime.now().isoformat(timespec="seconds")

    @property
    def elapsed_s(self) -> float:
        """Seconds since this Optimization was created."""
        return time.perf_counter() - self._started

    # ----------------------------------------------------------------- steps
    def _say(self, line: str) -> None:
        self.log(line)

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def inspect(self) -> ModelSummary:
        """Step 1: read the model and describe it (see :class:`ModelSummary`)."""
        start = time.perf_counter()
        summary, loaded, cache = _load_model(self.model_path, allow_pickle=self.allow_pickle,
                                             data_path=self.data_path, threads=self.threads)
        self.summary, self._loaded = summary, loaded
        self._cache.update(cache)
        fixed = [s.shape[0] for s in summary.inputs if s.shape and isinstance(s.shape[0], int)]
        if summary.inputs and len(fixed) == len(summary.inputs) and self.batch_sizes != [min(fixed)]:
            self.notes.append(f"the model fixes its batch size at {min(fixed)}, so it is timed at batch "
                              f"{min(fixed)} only (batch_sizes asked for {self.batch_sizes})")
            self.batch_sizes = [min(fixed)]
        self._timed("inspect", start)
        self._say(f"[optimize] model: {Path(summary.path).name} ({_format_text(summary.format)}, "
                  f"{summary.size_bytes / 1e6:.2f} MB)")
        return summary

    def _set_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def load_data(self) -> SampleData:
        """Step 1b: read and check the data (see :func:`load_data`); build the baseline runner and
        run it once on the data, so a model that cannot take this data fails here, clearly."""
        if self.summary is None:
            self.inspect()
        start = time.perf_counter()
        self._set_threads()
        self.data = load_data(self.data_path, self.summary, batch_sizes=self.batch_sizes)
        self.workload = self._workload()
        self.baseline = self._adapted(self._baseline_candidate())
        probe = self.data.batch(min(self.batch_sizes))
        try:
            self._probe(probe)
        except OptkitError as e:  # keep its own fix: one "Fix:" per message
            raise OptkitError("data_path", str(self.data_path or "generated inputs"),
                              f"the model cannot run on it: {e.parameter}={str(e.value)[:120]!r}: {e.problem}", e.fix) from None
        except Exception as e:
            raise OptkitError("data_path", str(self.data_path or "generated inputs"),
                              f"the model failed on the first examples ({_first_line(e, 200)})",
                              "check the data against the model's inputs (shapes, dtypes, value ranges)") from None
        if self.data.labels is not None and self.metric is None:
            out = self.baseline.predict(probe)[0]
            if class_scores(out) is None or task_of(out, self.task) != "classification":
                raise OptkitError("data_path", str(self.data_path), f"has labels, but the model's first output has "
                                  f"shape {np.asarray(out).shape}, which is not one score per class",
                                  "drop the labels (quality is then measured against the original model), or "
                                  "pass metric= (a function(outputs, labels) -> score) that knows these labels")
        self._timed("load_data", start)
        self._say(f"[optimize] data: {self.data.n} examples"
                  + (" with labels" if self.data.labels is not None else " without labels")
                  + ("" if self.data.source == "file" else " (generated)"))
        return self.data

    def _probe(self, probe: dict) -> None:
        """Run the baseline once; generated inputs the model rejects are regenerated with larger
        dynamic sizes (:func:`optkit.optimize.inputs.regenerate`)."""
        try:
            self.baseline.predict(probe)
        except Exception:
            if self.data.source != "generated":
                raise

            def build(data: SampleData) -> None:
                self.data = data
                self.baseline = self._adapted(self._baseline_candidate())
                self.baseline.predict(data.batch(min(self.batch_sizes)))

            first = (self.data, self.baseline)
            if regenerate(self.summary, self.batch_sizes, build) is None:
                self.data, self.baseline = first
                raise

    def _baseline_candidate(self) -> Candidate:
        s = self.summary
        ctx = self._context()
        if s.format == "onnx":
            c = ort_candidate(ctx, "baseline", "baseline", "as given (ORT defaults)", Path(s.path),
                              artifact=False)
        elif s.format == "torch_export":
            c = Candidate("baseline", torch_runner(ctx, self._cache["program"].module()), recipe="baseline",
                          technique="as given (eager)", runtime="pytorch", precision="fp32", size_bytes=s.size_bytes)
        elif s.format == "keras":
            from optkit.runtimes import tflow as otf

            if len(s.inputs) != 1:
                raise OptkitError("model_path", str(s.path), f"has {len(s.inputs)} inputs; only single-input Keras "
                                  "models are handled", "export it to ONNX (tf2onnx) and pass the .onnx")
            predict = otf.keras_predict(self._cache["keras_model"])
            name = s.inputs[0].name
            c = Candidate("baseline", lambda feed: [predict(feed[name])], recipe="baseline",
                          technique="as given (Keras, tf.function)", runtime="tensorflow", precision="fp32",
                          size_bytes=s.size_bytes)
        else:
            c = litert_candidate(ctx, "baseline", "baseline", "as given (LiteRT)", Path(s.path), artifact=False)
            c.notes.append(f"LiteRT runs it on {self.threads} interpreter thread(s) with its default XNNPACK "
                           "delegate (float and int8 kernels); the tflite-onnx recipes try ONNX Runtime on a "
                           "float file.")
        c.notes.append("The model as you gave it, in its own runtime with default settings: the reference "
                       "every candidate is compared with.")
        c.params = s.params
        return c

    def _workload(self) -> Workload:
        """What every record of this run is measured on: the model file, the task, the evaluation rows."""
        source = self.data.path.name if self.data.source == "file" and self.data.path else "generated inputs"
        return Workload(Path(self.summary.path).name,
                        "classification" if self.data.labels is not None else "outputs only",
                        f"{source} ({self.data.n_eval:,} rows)")

    def _context(self) -> Context:
        artifacts = (self.run_dir / "artifacts") if self.run_dir is not None else Path(os.devnull)
        deadline = (self._budget_start or self._started) + 0.8 * self.time_budget_s
        return Context(summary=self.summary, data=self.data, artifacts=artifacts, threads=self.threads,
                       baseline=self.baseline, cache=self._cache, gpu=_gpu(), judge=self._judge, deadline=deadline)

    def _judge(self, cand: Candidate) -> tuple[Check, float]:
        """A searching recipe's verdict on ``cand``: its check and its interleaved speed-up."""
        from optkit.core import bench

        adapted = self._adapted(cand)
        check = self._quality(cand.name, self._outputs(adapted))
        feed = self.data.batch(max(self.batch_sizes))
        times = bench.compare({"baseline": lambda: self.baseline.predict(feed), cand.name: lambda: adapted.predict(feed)},
                              batch_size=max(self.batch_sizes), max_time_s=0.25, rounds=3, warmup=2, min_repeats=5)
        return check, times["baseline"].median_ms / times[cand.name].median_ms

    def measure_baseline(self, max_time_s: float = 0.5) -> dict:
        """Step 2: time the model as given at each batch size with :func:`optkit.core.bench.measure`
        (the closing comparison times it again, interleaved with the candidates)."""
        from optkit.core import bench

        if self.baseline is None:
            self.load_data()
        start = time.perf_counter()
        for bs in self.batch_sizes:
            feed = self.data.batch(bs)
            self.baseline_timing[bs] = bench.measure(lambda f=feed: self.baseline.predict(f), name=f"baseline b{bs}",
                                                     batch_size=bs, warmup=2, min_repeats=5, max_time_s=max_time_s,
                                                     threads=self.threads)
        self._timed("baseline", start)
        self._say("[optimize] baseline: " + ", ".join(f"batch {bs} {m.median_ms:.3g} ms"
                                                      for bs, m in self.baseline_timing.items()))
        return self.baseline_timing

    def applicable_recipes(self) -> list[Recipe]:
        """The recipes this run will try: those for the model's format, filtered by ``runtimes``
        and ``recipes``."""
        if self.summary is None:
            self.inspect()
        fmt = "torch_export" if self.summary.format == "torch_pickle" else self.summary.format
        return recipes_for(fmt, self.runtimes, self.recipe_names)

    def _ensure_run_dir(self) -> Path:
        if self.run_dir is None:
            self.run_dir = reporting.new_run_dir(self.output_dir, self.run_name, self.model_path)
        return self.run_dir

    def try_recipes(self, recipes: Sequence[Recipe] | None = None) -> list[Candidate]:
        """Step 3: build a candidate with every applicable recipe (or the given ones), each caught
        on its own: a recipe that raises :class:`RecipeSkipped` is reported as skipped, any other
        error as failed, and the others go on. Artifacts go to ``<run dir>/artifacts``. Applicable
        recipes still waiting when 60 % of ``time_budget_s`` is spent are skipped, except those of
        :data:`FP32_REFERENCES` (the fair fp32 comparison); recipes passed here explicitly are always tried."""
        if self.baseline is None:
            self.load_data()
        self._ensure_run_dir()
        if self._budget_start is None:
            self._budget_start = time.perf_counter()
        ctx = self._context()
        todo = list(recipes) if recipes is not None else self.applicable_recipes()
        phase = time.perf_counter()
        for recipe in todo:
            spent = time.perf_counter() - self._budget_start
            # recipes you name are always tried, and so are those building the fair fp32 comparison
            if recipes is None and spent > 0.6 * self.time_budget_s and recipe.name not in FP32_REFERENCES:
                self._outcome(recipe.name, "skipped", f"time budget: {spent:.0f} s of time_budget_s="
                              f"{self.time_budget_s:g} spent before it could start")
                continue
            start = time.perf_counter()
            try:
                with _quiet_warnings(optkit_deprecations=True):
                    cand = recipe.build(ctx)
                if not isinstance(cand, Candidate):
                    raise TypeError(f"build returned {type(cand).__name__}, not a Candidate")
            except RecipeSkipped as e:
                self._outcome(recipe.name, "skipped", str(e), time.perf_counter() - start)
                continue
            except Exception as e:  # one recipe failing must not stop the others
                self._outcome(recipe.name, "failed", _first_line(e), time.perf_counter() - start)
                continue
            cand.build_s = time.perf_counter() - start
            if cand.params is None:
                cand.params = self.summary.params  # the recipes change how weights are stored, not how many
            if any(c.name == cand.name for c in [self.baseline, *self.candidates]):
                cand.name = f"{cand.name}-{len(self.candidates) + 1}"
            self.candidates.append(self._adapted(cand))
            self._say(f"[optimize] built {cand.name} ({cand.technique}) in {cand.build_s:.1f} s")
        self._timed("recipes", phase)
        return self.candidates

    def _adapted(self, cand: Candidate) -> Candidate:
        """``cand`` taking rows-first feeds (see :func:`optkit.optimize.inputs.rows_first`)."""
        return cand.replace(predict=rows_first(cand.predict, self.data, output_axes(self.summary)))

    def _outcome(self, recipe: str, status: str, reason: str, seconds: float = 0.0) -> None:
        self.outcomes.append(Outcome(recipe, status, reason, seconds))
        self._say(f"[optimize] {status} {recipe}: {reason}")

    def _chunk(self) -> int:
        return max(self.batch_sizes)

    def _outputs(self, cand: Candidate) -> list[np.ndarray]:
        """Every output of ``cand`` on the evaluation rows (:func:`optkit.core.verify.predict_all`,
        in chunks of the largest batch size)."""
        return outputs(cand.predict, self.data.eval_inputs(), self._chunk(), self.batch_sizes)

    def _reference(self) -> list[np.ndarray]:
        if self._reference_outputs is None:
            self._reference_outputs = self._outputs(self.baseline)
        return self._reference_outputs

    def _accuracy(self, outs: list[np.ndarray]) -> float | None:
        """Accuracy on the evaluation labels (:func:`optkit.core.verify.accuracy`); None without labels."""
        labels = self.data.eval_labels()
        if labels is None:
            return None
        scores = class_scores(outs[0])
        if scores is None or self.metric is not None:
            return None  # a user metric judges these outputs
        return verify.accuracy(scores, labels)

    def _quality(self, name: str, outs: list[np.ndarray], base_acc: float | None = None) -> Check:
        """The candidate's :class:`Check` against the original (:func:`optkit.optimize.quality.judge`)."""
        return judge(name, self._reference(), outs, labels=self.data.eval_labels(), max_drop=self.max_accuracy_drop,
                     min_sqnr_db=self.min_sqnr_db, task=self.task, metric=self.metric)

    def verify(self) -> dict[str, Check]:
        """Step 4: run the baseline and every candidate on the evaluation rows (in chunks of the
        largest batch size) and compare: parity, accuracy or agreement, eligibility. A candidate
        that raises here is dropped and reported as failed."""
        if self.baseline is None:
            self.load_data()
        start = time.perf_counter()
        base_outs = self._reference()
        base_acc = self._accuracy(base_outs)
        self.checks["baseline"] = self._quality("baseline", base_outs, base_acc)
        kept = []
        for cand in self.candidates:
            if cand.name in self.checks:
                kept.append(cand)
                continue
            try:
                with _quiet_warnings():
                    outs = self._outputs(cand)
                check = self._quality(cand.name, outs, base_acc)
                self._verified[cand.name] = outs  # evaluate() reuses them instead of running again
            except Exception as e:
                self._outcome(cand.recipe, "failed", f"its candidate failed on your data: {_first_line(e)}")
                continue
            self.checks[cand.name] = check
            kept.append(cand)
            self._say(f"[optimize] verified {cand.name}: " + _check_text(check))
        self.candidates = kept
        self._timed("verify", start)
        return self.checks

    def benchmark(self, max_time_s: float | None = None) -> dict:
        """Step 5: the one measurement path, :func:`optkit.core.variant.evaluate`, on the baseline and
        every verified candidate (eligible or not: the report shows what the ineligible ones would
        have gained): accuracy and parity on the evaluation rows, then one interleaved
        :func:`optkit.core.bench.compare` per batch size. Its records, with each candidate's check
        added to ``extra`` (``eligible``, ``quality`` ...), become ``records``. ``max_time_s`` per
        variant and batch size defaults to a share of what is left of ``time_budget_s``. Returns
        :meth:`timing_tables`."""
        from optkit.core import bench, variant

        if not self.checks:
            self.verify()
        start = time.perf_counter()
        cands = [self.baseline] + [c for c in self.candidates if c.name in self.checks]
        if max_time_s is None:
            spent = time.perf_counter() - (self._budget_start or self._started)
            left = max(self.time_budget_s - spent, 0.0)
            max_time_s = min(2.0, max(0.15, 0.85 * left / (len(cands) * len(self.batch_sizes))))
        chunk, labels = self._chunk(), self.data.eval_labels()
        ref_outs = self._reference()
        ref = ref_outs[0]
        if labels is not None and not (ref.ndim == 2 and ref.shape[1] >= 2):
            labels = None  # one score per row (binary): verify.accuracy cannot count it; the check's accuracy is used
        self.env = bench.environment()
        with _quiet_warnings():
            records = variant.evaluate(
                [c.replace(predict=_padded(c.predict, chunk, self.batch_sizes)) for c in cands], self.workload,
                data=(self.data.eval_inputs(), labels), inputs={bs: self.data.batch(bs) for bs in self.batch_sizes},
                reference="baseline", eval_batch_size=chunk, max_time_s=max_time_s, rounds=5, threads=self.threads,
                env=self.env, progress=False, warmup=2, min_repeats=5,
                outputs={"baseline": ref_outs, **{n: o for n, o in self._verified.items() if n in self.checks}})
        by_name = {c.name: c for c in cands}
        self.records = sorted((self._checked(r, by_name[r.name]) for r in records), key=lambda r: r.batch_size)
        for bs in self.batch_sizes:
            self._say(f"[optimize] timed batch {bs}: " + ", ".join(
                f"{r.name} {r.latency_ms:.3g} ms" for r in self.records if r.batch_size == bs))
        self._timed("benchmark", start)
        return self.timing_tables()

    def _checked(self, record: Record, cand: Candidate) -> Record:
        """``record`` with what the rule, the table and the report read in ``extra``: the candidate's
        check and build, its artifact relative to the run folder (``info`` repeats ``config``, for
        readers of results format 1)."""
        check = self.checks[cand.name]
        art = None if cand.artifact is None else os.path.relpath(cand.artifact, self.run_dir) \
            if self.run_dir is not None else str(cand.artifact)
        extra = {**record.extra, "recipe": cand.recipe, "eligible": check.ok, "why_not": check.why,
                 "quality": check.quality, "quality_kind": check.quality_kind, "drop_points": check.drop_points,
                 "interval": check.interval, "n": check.n, "uncertain": check.uncertain, **check.details,
                 "artifact": art, "build_s": cand.build_s, "info": record.extra.get("config")}
        accuracy = record.accuracy if record.accuracy is not None else check.accuracy
        return record.replace(accuracy=accuracy, extra=extra)

    def timing_tables(self) -> dict:
        """Batch size -> a DataFrame of that size's interleaved timing, from ``records``: median
        latency, p90, p95, p99, items/s, the memory one call adds, timed runs and speed-up over the baseline."""
        from optkit.core import report

        if not self.records:
            raise OptkitError("records", [], "nothing has been timed yet", "run benchmark() first")
        columns = ["latency_ms", "p90_ms", "p95_ms", "p99_ms", "throughput", "peak_mem_mb", "runs", "speedup"]
        frames = {bs: report.table([r for r in self.records if r.batch_size == bs], baseline="baseline", extra=["runs"])
                  for bs in self.batch_sizes}
        return {bs: f[[c for c in columns if c in f.columns]] for bs, f in frames.items()}

    def table(self, batch_size: int | None = None):
        """A DataFrame of every measured variant at ``batch_size`` (default: the largest), with
        speed-up, size ratio and accuracy change against the baseline, eligibility, and the latency
        at the other batch sizes."""
        return reporting.candidates_table(self, batch_size)

    def recommend(self) -> Recommendation:
        """Step 6: apply :func:`recommend` to the records at the largest batch size and explain
        the choice in one paragraph built from the numbers."""
        if not self.records:
            self.benchmark()
        bs = max(self.batch_sizes)
        rows = {r.name: r for r in self.records if r.batch_size == bs}
        name = recommend(list(rows.values()), batch_size=bs)
        eligible = sorted((r for r in rows.values() if r.extra.get("eligible")), key=lambda r: r.latency_ms)
        rejected = {r.name: r.extra.get("why_not") for r in rows.values() if not r.extra.get("eligible")}
        base = rows["baseline"]
        rec = rows.get(name) if name else None
        self.recommendation = Recommendation(
            name=name, reason=explain(self, rec, base, eligible, rejected, bs), batch_size=bs,
            eligible=[r.name for r in eligible], rejected=rejected,
            speedup=(base.latency_ms / rec.latency_ms) if rec else None,
            size_ratio=(base.size_bytes / rec.size_bytes) if rec and rec.size_bytes and base.size_bytes else None,
            artifact=rec.extra.get("artifact") if rec else None)
        if rec is not None and name == "baseline":
            said = " (the model as given: no candidate was faster beyond the noise)"
        elif rec is not None:
            said = f" ({self.recommendation.speedup:.2f}x faster than the baseline at batch {bs})"
        else:
            said = ""
        self._say(f"[optimize] recommended: {name}{said}")
        return self.recommendation

    # ----------------------------------------------------------------- output
    def plot(self):
        """The Pareto plot: quality against latency (left) and against size (right), at the largest
        batch size. The step line joins the candidates no other beats on both axes; grey crosses
        are not eligible, the star is the recommendation. Candidates at the same spot share a label."""
        return reporting.pareto_figure(self)

    def write_report(self) -> Path:
        """Step 7: write ``results.json``, ``report.md``, ``report.html`` and ``pareto.png`` into
        the run folder, then point ``output_dir/latest`` at it. Returns the run folder."""
        if self.recommendation is None:
            self.recommend()
        return reporting.write_report(self, self._ensure_run_dir())

    def results(self) -> dict:
        """Everything measured, as a JSON-ready dict (what ``results.json`` holds)."""
        return reporting.results(self)

    def parameters(self) -> dict:
        return {"model_path": str(self.model_path), "data_path": None if self.data_path is None else str(self.data_path),
                "max_accuracy_drop": self.max_accuracy_drop, "batch_sizes": self.batch_sizes,
                "runtimes": self.runtimes, "recipes": self.recipe_names, "time_budget_s": self.time_budget_s,
                "output_dir": str(self.output_dir), "threads": self.threads, "allow_pickle": self.allow_pickle,
                "min_sqnr_db": self.min_sqnr_db}

    # ----------------------------------------------------------------- all steps
    def run(self) -> "Optimization":
        """Every step in order (inspect, load_data, measure_baseline, try_recipes, verify,
        benchmark, recommend, write_report); returns ``self``."""
        self.inspect()
        self.load_data()
        self.measure_baseline()
        self.try_recipes()
        self.verify()
        self.benchmark()
        self.recommend()
        self.write_report()
        return self

    def __repr__(self) -> str:
        state = (f"recommended {self.recommendation.name!r}" if self.recommendation else
                 f"{len(self.candidates)} candidates" if self.candidates else "not run")
        return f"Optimization({self.model_path.name!r}, {state}, run_dir={str(self.run_dir) if self.run_dir else None!r})"


def _gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


@contextlib.contextmanager
def _quiet_warnings(optkit_deprecations: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if optkit_deprecations:  # what a team's recipe written against 0.1 has to change, e.g. Candidate(run=...)
            warnings.filterwarnings("default", message=r".*goes in optkit 0\.3", category=DeprecationWarning)
        yield


def optimize(model_path: str | os.PathLike | None = None, data_path: str | os.PathLike | None = None,
             **kwargs: Any) -> Optimization:
    """Run every step on ``model_path`` (see :class:`Optimization` for the parameters) and return
    the finished :class:`Optimization`: ``.recommendation``, ``.table()``, ``.run_dir``.

    Taught in 10_optimize_your_own_model.
    """
    return Optimization(model_path, data_path, **kwargs).run()
