# %% [markdown]
# # 00 · Measure first
#
# Every later notebook claims that something is *smaller* or *faster*. Those claims are only as
# good as the measurements behind them, so we start by measuring the models we will optimize and
# by seeing, with numbers, how easy it is to measure wrongly.
#
# **You will learn to**
# - load the curriculum's real data (Fashion-MNIST, sentence polarity) and reference models;
# - state a baseline: accuracy on the real test split, parameters, MACs, size on disk, latency and throughput;
# - avoid the classic timing mistakes (no warm-up, one-shot timing, ignored thread count, batch size, noise);
# - put every comparison through one path: `variant.Variant` (a version of a model), `variant.Workload`
#   (what it is measured on) and `variant.evaluate` (accuracy, parity, interleaved timing, one `Record` each);
# - trust `optkit.core.bench` because it agrees with `torch.utils.benchmark.Timer`.
#
# **Time:** about 3 minutes at the default parameters on a 2-core laptop. **GPU:** not needed; nothing here uses one.
#
# Every number below is printed by the cell that measured it, and the first cell says which machine
# and how many threads it ran on.
#
# **Conclusions are printed, not written.** Whether batching pays or a warm-up matters depends on
# the machine, so the text says what to *expect* and why, and the cell that measured decides:
# `claims.faster(...)`, `claims.better(...)` and `claims.check(...)` print `✔ holds here`,
# `✘ does not hold here` or `≈ inside the noise here` with the numbers and the machine facts
# (cores, VNNI, AMX, AVX-512 BF16) the verdict rests on. On your machine you see your verdict.

# %%
import time
from types import SimpleNamespace

import numpy as np
import torch

import optkit
from optkit.core import bench, record, report, variant
from optkit import data
from optkit.course import claims, notebook
from optkit.course.exercises import nb00 as exercises
from optkit.data import models


# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=00` lists them)
threads = None  # torch intra-op threads; None: every core this process may use
models_to_measure = ["small_cnn", "resnet_cnn", "mlp", "text_lstm"]
batch_sizes = [1, 32]  # batch sizes for the baseline table
sweep_batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128]  # for the throughput curve (256 was in it too before: add it back for a longer curve)
max_time_s = 1.0  # time budget per measurement (seconds); raise it for tighter intervals
latency_budget_ms = 5.0  # the budget used in exercise 2
output_dir = "../runs/artifacts/00_measure_first"

# %%
params = notebook.check_parameters(
    ranges={"threads": (1, 256), "batch_sizes": (1, 4096), "sweep_batch_sizes": (1, 4096),
            "max_time_s": (0.01, 600), "latency_budget_ms": (0, None)})
unknown = sorted(set(models_to_measure) - set(models.NAMES))
if unknown:
    raise optkit.core.errors.OptkitError("models_to_measure", unknown, "names no reference model",
                                    f"use some of {list(models.NAMES)}")
env = notebook.setup(threads=threads)

# %% [markdown]
# ## 1 · The data and the models
#
# The image lessons use **Fashion-MNIST** (70,000 grey 28×28 images of clothing in 10 classes, MIT
# licence) shipped in `data/` with checksums; the text lessons use **sentence polarity** (Rotten
# Tomatoes review snippets, fresh or rotten) installed by the set-up. Splits are fixed, so every
# learner sees the same test accuracy. A *calibration* subset, drawn from the training split, is
# what quantization will later use to choose its scales.

# %%
fmnist = data.fashion_mnist()
text = data.rotten_tomatoes()
print(fmnist)
print(text)

# %%
import matplotlib.pyplot as plt

x_show, y_show = fmnist.numpy("test")
fig, axes = plt.subplots(2, 8, figsize=(9, 2.6))
for ax, i in zip(axes.flat, range(16)):
    ax.imshow(x_show[i, 0], cmap="gray_r")
    ax.set_title(fmnist.classes[y_show[i]], fontsize=7)
    ax.axis("off")
fig.suptitle("Fashion-MNIST test images (the first 16)")
plt.show()

# %% [markdown]
# The reference models come trained (`data/models/`, recipe and accuracy in `reference.json`;
# `python -m optkit.data.train_reference` retrains them). They load with `weights_only=True`: loading
# never unpickles code from a file. Accuracy is measured here, on the real test split.
#
# Each model also becomes a **`variant.Variant`**: the one description of "a version of a model you
# could ship" that every table of the course is drawn from. It says what the version is (name,
# technique, runtime, precision, the exact configuration applied), what it costs (size, parameters,
# MACs) and how to call it (`predict`, a batch in, outputs out). `models.as_variant` fills in the
# costs of a PyTorch model: parameters, multiply-accumulates per sample, state-dict bytes.

# %%
# NBCHECK_APPROX accuracy
dataset_of = {"small_cnn": fmnist, "resnet_cnn": fmnist, "mlp": fmnist, "text_lstm": text}
nets, results, baseline = {}, {}, {}
for name in models_to_measure:
    nets[name] = net = models.pretrained(name)
    results[name] = models.evaluate(net, dataset_of[name], split="test")
    baseline[name] = b = models.as_variant(net, dataset_of[name].example_batch(1), name, technique="fp32 eager")
    print(f"{name:<11} test accuracy {100 * results[name].accuracy:5.2f} %  params {b.params:>9,}  "
          f"MACs/sample {b.macs:>12,}  state dict {b.size_bytes / 1e6:6.2f} MB")
print(next(iter(baseline.values())))

# %% [markdown]
# Accuracy is one number; the per-class view shows where a model struggles (shirts look like
# T-shirts, pullovers and coats). Later notebooks watch whether an optimization hurts some classes
# more than others.

# %%
# NBCHECK_APPROX accuracy
if "resnet_cnn" in nets:
    for cls, acc in results["resnet_cnn"].per_class.items():
        print(f"{cls:<12} {100 * acc:5.1f} %")

# %% [markdown]
# ## 2 · The baseline: latency and throughput
#
# Every comparison in this course takes one path, **`variant.evaluate(variants, workload, data=...,
# inputs=...)`**, which for every variant
#
# 1. computes its **accuracy** on the workload's real labelled data (`verify.accuracy`);
# 2. compares its outputs with a **reference** variant's (the first, unless told): top-1 agreement and
#    SQNR say what an optimization changed. Here the variants are different models, so those columns
#    say little and the tables leave them out; from notebook 02 on they are the point;
# 3. **times** all variants at each batch size of `inputs` *interleaved* (`bench.compare`, round-robin
#    blocks), each with warm-up first, then repeats bounded by count and time, reported as median, p90
#    and p99 with a 95 % confidence interval for the median;
# 4. returns one `record.Record` per variant and batch size, labelled with its **`variant.Workload`**
#    (the models, the task, the evaluation set).
#
# Ratios mean something only within one workload and one batch size: a sentiment model is not "slower"
# or "less accurate" than a clothing classifier. So there is one workload per task (`models.workload_for`),
# and `report` refuses ratios across workloads. Timing inputs are real test inputs (latency does not
# depend on their content, but there is no reason to invent them).

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary by machine)
baseline_records = []
for ds in {dataset_of[n].name: dataset_of[n] for n in nets}.values():  # one workload per task
    names = [n for n in nets if dataset_of[n] is ds]
    workload = models.workload_for(ds, [nets[n] for n in names])
    print(workload)
    baseline_records += variant.evaluate([baseline[n] for n in names], workload, data=ds.test,
                                         inputs={bs: ds.example_batch(bs) for bs in batch_sizes},
                                         convert=torch.from_numpy, max_time_s=max_time_s, env=env)
for r in baseline_records:
    lo, hi = r.extra["ci_median_ms"]
    print(f"{r.name:<11} batch {r.batch_size:>3}: median {r.latency_ms:8.3f} ms (95 % CI [{lo:.3f}, {hi:.3f}]), "
          f"p95 {r.p95_ms:8.3f} ms, p99 {r.p99_ms:8.3f} ms, {r.throughput:>9,.0f} items/s")

# %% [markdown]
# `evaluate` measured accuracy again, on the same test split, through `verify.accuracy`; it must agree
# with `models.evaluate` above to the last digit (both count a correct arg-max the same way):

# %%
# NBCHECK_APPROX accuracy
for r in baseline_records:
    if r.batch_size == min(batch_sizes):
        same = r.accuracy == results[r.name].accuracy
        print(f"{r.name:<11} evaluate {100 * r.accuracy:5.2f} %  models.evaluate {100 * results[r.name].accuracy:5.2f} %"
              f"  {'same' if same else 'DIFFERENT'}")

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary by machine)
print("Measured on:", bench.environment_line())
report.table(baseline_records, columns=["workload", "batch_size", "latency_ms", "p90_ms", "p95_ms", "p99_ms",
                                        "throughput", "peak_mem_mb", "size_mb", "accuracy", "params", "macs"]).round(4)

# %%
# NBVAL_IGNORE_OUTPUT
for r in baseline_records:
    notebook.headline(f"{r.name} b{r.batch_size} fp32 latency", r.latency_ms, "ms", fmt=".3f",
                      note=f"{r.throughput:,.0f} items/s")

# %% [markdown]
# ## 3 · Five ways to measure wrongly
#
# ### 3.1 No warm-up
# The first calls of a model pay for one-off work: memory allocation, oneDNN choosing and caching
# kernels, lazy initialisation. A loop that includes them reports a number nobody will see in
# production. For an eager model that cost is small; expect the first call of a new shape to be a
# little slower than the rest. Below: the first 30 calls of a freshly loaded model at a batch size
# (24) this process has not run yet, one by one. (oneDNN caches its kernels per shape, so only a new
# shape shows the cost.)

# %%
def forward_fn(net, x):
    """A call to time: one forward pass under inference_mode (what evaluate does for a torch model)."""
    def call():
        with torch.inference_mode():
            net(x)
    return call


fresh = models.pretrained("resnet_cnn")
x32 = fmnist.example_batch(32)
x_new = fmnist.example_batch(24)
first_calls = []
for _ in range(30):
    t0 = time.perf_counter()
    with torch.inference_mode():
        fresh(x_new)
    first_calls.append(1e3 * (time.perf_counter() - t0))
steady = float(np.median(first_calls[10:]))

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots()
ax.plot(range(1, 31), first_calls, marker="o")
ax.axhline(steady, ls="--", c="gray", label=f"median of calls 11-30: {steady:.2f} ms")
ax.set(xlabel="call number", ylabel="latency (ms)", title="ResNetCNN, batch 24: the first calls of a new shape")
ax.legend()
plt.show()
print(f"first call {first_calls[0]:.2f} ms = {first_calls[0] / steady:.1f}x the steady state; "
      f"mean of the first 5 calls {np.mean(first_calls[:5]):.2f} ms")

# %% [markdown]
# The warm-up that matters comes with compilers. `torch.compile` (notebook 01) and PT2E
# quantization (notebook 02) do their work on the **first call**: trace the Python code into a
# graph, fuse it, generate and compile C++ kernels. Expect that call to take seconds, thousands of
# times a steady call; a benchmark that includes it, or a server that does not warm up before
# taking traffic, reports a number nobody will see again. The smallest reference model, the MLP,
# compiled with the default backend (a few seconds, once):

# %%
# NBVAL_IGNORE_OUTPUT
compiled = torch.compile(models.pretrained("mlp"))
compiled_calls = []
for _ in range(12):
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(x32)
    compiled_calls.append(1e3 * (time.perf_counter() - t0))
compiled_steady = float(np.median(compiled_calls[2:]))
print(f"torch.compile(mlp), batch 32: first call {compiled_calls[0] / 1e3:.2f} s, then median "
      f"{compiled_steady:.3f} ms per call (calls 3-12)")
claims.check("the first call of a compiled model costs over 100x a steady call",
             holds=compiled_calls[0] > 100 * compiled_steady,
             evidence=f"first call {compiled_calls[0]:,.0f} ms vs steady {compiled_steady:.3f} ms: "
                      f"{compiled_calls[0] / compiled_steady:,.0f}x",
             depends=("cores",));

# %% [markdown]
# ### 3.2 One reading with `time.time()`
# `time.time()` is wall-clock time: it can jump when the system clock is adjusted, and on some
# systems it ticks coarsely. `time.perf_counter()` is monotonic and has the finest resolution.
# Worse than the clock is taking **one** reading: here are 200 single readings of the same call.

# %%
print("time.time      :", time.get_clock_info("time"))
print("time.perf_counter:", time.get_clock_info("perf_counter"))

# %%
# NBVAL_IGNORE_OUTPUT
small, x1 = nets.get("small_cnn", fresh), fmnist.example_batch(1)
single = []
for _ in range(200):
    t0 = time.time()
    with torch.inference_mode():
        small(x1)
    single.append(1e3 * (time.time() - t0))
single = np.array(single)
print(f"200 one-shot readings: min {single.min():.3f} ms, median {np.median(single):.3f} ms, "
      f"max {single.max():.3f} ms; max/min = {single.max() / single.min():.1f}x")
print("A one-shot claim could be any of these; report the median and the tail (p90/p99) of many.")

# %% [markdown]
# ### 3.3 Ignoring the thread count
# PyTorch runs one operator on several cores (intra-op threads). A number without its thread count
# cannot be compared with anything. `bench.compare` interleaves the variants in rounds, so that
# the machine getting busier during the run cannot favour one of them.

# %%
# NBVAL_IGNORE_OUTPUT
n_cores = len(__import__("os").sched_getaffinity(0))
thread_options = sorted({1, n_cores})


def at_threads(n):
    def call():
        with bench.threads(n), torch.inference_mode():
            fresh(x32)
    return call


threads_cmp = bench.compare({f"{n} thread(s)": at_threads(n) for n in thread_options}, batch_size=32,
                            max_time_s=max_time_s)
print("Measured on:", bench.environment_line())
threads_cmp.table()

# %% [markdown]
# ### 3.4 One batch size
# Batching trades latency for throughput: a bigger batch should keep the cores busier and serve
# more items per second, but every item in it waits for the whole batch. The right batch size
# depends on the latency budget, so we measure the whole curve, and the cell checks whether
# batching paid here.

# %%
# NBVAL_IGNORE_OUTPUT
def make_fn(bs):
    x = fmnist.example_batch(bs)
    return forward_fn(fresh, x)


sweep = bench.throughput_sweep(make_fn, sweep_batch_sizes, name="resnet_cnn", max_time_s=max_time_s / 2)
fig = report.plot_throughput({"resnet_cnn fp32": sweep})
display(fig)
best, one = max(sweep, key=lambda m: m.throughput), min(sweep, key=lambda m: m.batch_size)
notebook.headline("resnet_cnn best throughput", best.throughput, "images/s", fmt=",.0f",
                  note=f"batch {best.batch_size}, {bench.environment_line()}")
per_image = {m.batch_size: SimpleNamespace(name=f"batch {m.batch_size}, per image", latency_ms=1e3 / m.throughput)
             for m in (best, one)}
claims.faster(f"batching raises throughput: an image costs less time at batch {best.batch_size} than at batch "
              f"{one.batch_size}", per_image[best.batch_size], per_image[one.batch_size], depends=("cores",));

# %% [markdown]
# The sweep and the table of section 2 both measured ResNetCNN at the batch sizes they share, but
# they are two measurements at two moments: the table interleaved it with the other Fashion-MNIST
# models for `max_time_s` each, the sweep ran it alone for half that. On a shared machine two
# honest measurements of the same thing differ by the machine's drift (section 3.5 shows how much),
# which is why a comparison is only made *within* one interleaved measurement. Side by side:

# %%
# NBVAL_IGNORE_OUTPUT
in_table = {r.batch_size: r for r in baseline_records if r.name == "resnet_cnn"}
in_sweep = {m.batch_size: m for m in sweep}
for bs in sorted(set(in_table) & set(in_sweep)):
    t, w = in_table[bs].throughput, in_sweep[bs].throughput
    print(f"resnet_cnn batch {bs:>3}: table {t:>7,.0f} images/s, sweep {w:>7,.0f} images/s ({100 * (w / t - 1):+.0f} %)")
print(f"the sweep's best, batch {best.batch_size}: {best.throughput:,.0f} images/s")

# %% [markdown]
# In JupyterLab, pick a batch size and a thread count and the cell re-measures (under papermill it
# shows the result for the defaults).

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets


def measure_one(batch_size, n_threads):
    m = bench.measure(forward_fn(fresh, fmnist.example_batch(batch_size)), name=f"b{batch_size} t{n_threads}",
                      batch_size=batch_size, threads=n_threads, max_time_s=max_time_s)
    print(m)


notebook.explore(measure_one,
                 batch_size=widgets.Dropdown(options=sweep_batch_sizes, value=32, description="batch"),
                 n_threads=widgets.IntSlider(value=n_cores, min=1, max=n_cores, description="threads"))

# %% [markdown]
# ### 3.5 Run-to-run noise
# Measure the same thing five times. The medians differ; the confidence interval says by how much
# you should expect them to. A 3 % "speed-up" inside that spread is not a speed-up.

# %%
# NBVAL_IGNORE_OUTPUT
repeats = [bench.measure(forward_fn(fresh, x32), name=f"repeat {i}", batch_size=32, max_time_s=max_time_s / 2)
           for i in range(5)]
for m in repeats:
    lo, hi = m.ci_median_ms
    print(f"{m.name}: median {m.median_ms:.3f} ms  95% CI [{lo:.3f}, {hi:.3f}]  p99 {m.p99_ms:.3f} ms")
medians = np.array([m.median_ms for m in repeats])
print(f"spread of the five medians: {100 * (medians.max() - medians.min()) / medians.min():.1f} % "
      f"(on {bench.environment_line()})")
fig = report.plot_latency(repeats)
display(fig)

# %% [markdown]
# ## 4 · Can we trust the harness?
# `torch.utils.benchmark.Timer` is PyTorch's own tool: it handles warm-up and thread settings and
# picks the number of runs itself. If our harness is sound, the two agree on the same workload.

# %%
# NBVAL_IGNORE_OUTPUT
from torch.utils import benchmark as tbench

agreement = []
for bs in (1, 32):
    xb = fmnist.example_batch(bs)
    timer = tbench.Timer(stmt="with torch.inference_mode(): net(x)", globals={"torch": torch, "net": fresh, "x": xb},
                         num_threads=torch.get_num_threads())
    ours, theirs = [], []
    for _ in range(3):  # alternate the two tools, so a busy moment of the machine hits both
        theirs.append(1e3 * timer.blocked_autorange(min_run_time=max_time_s / 3).median)
        ours.append(bench.measure(forward_fn(fresh, xb), batch_size=bs, max_time_s=max_time_s / 3).median_ms)
    ours_ms, theirs_ms = float(np.median(ours)), float(np.median(theirs))
    agreement.append((bs, ours_ms, theirs_ms))
    print(f"batch {bs:>2}: optkit median {ours_ms:.3f} ms, torch Timer median {theirs_ms:.3f} ms, "
          f"ratio {ours_ms / theirs_ms:.3f}  (median of 3 alternating runs each)")
worst = max(abs(o / t - 1) for _, o, t in agreement)
notebook.headline("harness vs torch Timer, worst disagreement", 100 * worst, "%", fmt=".1f",
                  note="within 10 %" if worst <= 0.10 else "MORE than 10 %: rerun with a larger max_time_s")
claims.check("optkit's harness and torch's Timer agree within 10 % on the same calls", holds=worst <= 0.10,
             evidence=", ".join(f"batch {bs}: {o:.3f} vs {t:.3f} ms" for bs, o, t in agreement), depends=("cores",));

# %% [markdown]
# A sound harness agrees with `Timer` within a few per cent, apart from a busy moment of the machine
# (the claim above says whether it did here). The two differ in one respect worth knowing: `Timer` times *blocks* of runs
# and reports the median of block means, which hides the tail; `optkit.core.bench` times every call, so
# it can report p99 — the number a user waiting on a request feels.
#
# ## 5 · Memory and size
# Size on disk is what you ship; peak memory is what the process needs while it runs. The size
# of a state dict is close to 4 bytes × parameters for fp32 models, which is why int8 (1 byte)
# promises up to 4× smaller files in notebook 02.

# %%
for name, b in baseline.items():
    print(f"{name:<11} {b.params:>9,} params × 4 B = {4 * b.params / 1e6:6.2f} MB; "
          f"state dict {b.size_bytes / 1e6:6.2f} MB")

# %%
# NBVAL_IGNORE_OUTPUT
for bs in (32, 512):
    call = forward_fn(fresh, fmnist.example_batch(bs))
    naive, honest = bench.peak_memory(call), bench.call_memory(call)
    print(f"resnet_cnn batch {bs:>3}: peak RSS {naive.peak_rss_bytes / 2**20:7.1f} MiB; the call added "
          f"+{naive.delta_rss_bytes / 2**20:5.1f} MiB read naively, +{honest.delta_rss_bytes / 2**20:5.1f} MiB "
          f"with freed memory released first")

# %% [markdown]
# Why the naive reading is often **+0.0 MiB**: resident memory (RSS) counts the pages the process
# holds, and the allocator keeps the pages of freed tensors for the next call. This shape has run
# before, so its activations fit in memory the process already holds and nothing new becomes
# resident. `bench.call_memory` first hands freed memory back to the system, so the call has to
# take its pages again and the difference shows what one call needs: its activations and
# workspaces (not the weights, which were resident before the call). That is the `peak_mem_mb`
# column of every closing table. A runtime that keeps its own memory pool between calls (ONNX
# Runtime's arena, notebook 06) still hides its reuse from it.

# %% [markdown]
# ## 6 · Summary
# The baseline every later notebook must beat, as every later notebook will show its closing table:
# `report.tables` makes one table per workload and batch size, and `baseline=report.fastest_float`
# adds ratios against the fastest variant that computes in a float precision. Here that is the
# fastest *model* of each task, so `speedup` (below 1: slower) and `acc_delta` (accuracy points)
# show what a bigger model costs and buys; from notebook 02 on, the rows are versions of one model
# and the baseline is its best float version. `p95_ms` is the latency 95 % of calls stay under, and
# `peak_mem_mb` the memory one call adds (section 5). The records are saved as JSON in `output_dir`
# so later notebooks (and you) can compare against them.

# %%
# NBVAL_IGNORE_OUTPUT
from pathlib import Path

Path(output_dir).mkdir(parents=True, exist_ok=True)
record.save_records(baseline_records, Path(output_dir) / "baseline.json")
summaries = report.tables(baseline_records, baseline=report.fastest_float,
                          columns=["latency_ms", "p95_ms", "p99_ms", "throughput", "peak_mem_mb", "size_mb",
                                   "accuracy", "macs", "speedup", "acc_delta"])
print("Measured on:", bench.environment_line(), "| baseline: the fastest float model of each task and batch size")
print("peak_mem_mb: resident memory one call adds (its activations and workspaces; not the weights)")
for (workload, bs), frame in summaries.items():
    print(f"\n{workload}, batch {bs}")
    display(frame.round(4))

# %% [markdown]
# A Pareto plot puts accuracy on one axis, so it shows one task at a time: a sentiment accuracy and
# a Fashion-MNIST accuracy are not points on the same scale (`report.plot_pareto` refuses to mix
# them, and `report.groups` splits records by task and batch size).

# %%
# NBVAL_IGNORE_OUTPUT
largest = [r for r in baseline_records if r.batch_size == max(batch_sizes)]
by_task = {task: recs for (task, _), recs in report.groups(largest).items()}
fig, axes = plt.subplots(1, len(by_task), figsize=(5.2 * len(by_task), 3.8), squeeze=False, layout="constrained")
for ax, (task, recs) in zip(axes[0], by_task.items()):
    report.plot_pareto(recs, x="latency_ms", y="accuracy", ax=ax)
    ax.set_title(f"{task}, batch {max(batch_sizes)}: lower latency and higher accuracy are better", fontsize=9)
plt.show()

# %% [markdown]
# ## Exercises
# **1.** Write `percentile(samples, q)` (q in 0–100) with linear interpolation between the two
# nearest ranks, as numpy does. *Hint:* sort; the position is `(n - 1) * q / 100`.

# %%
def percentile(samples, q):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_percentile(percentile);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def percentile(samples, q):
#     xs = sorted(samples)
#     pos = (len(xs) - 1) * q / 100
#     lo = int(pos); hi = min(lo + 1, len(xs) - 1)
#     return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
# ```
# </details>
#
# **2.** A product needs each request answered within `latency_budget_ms` at p90. Using `sweep`
# from section 3.4, what is the largest batch size that fits? Set `answer` and run the check.
# *Hint:* `[(m.batch_size, m.p90_ms) for m in sweep]`.

# %%
# NBVAL_IGNORE_OUTPUT
# (the right answer depends on this machine's speed)
answer = None  # YOUR ANSWER
exercises.check_batch_budget(answer, sweep, latency_budget_ms);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# answer = max(m.batch_size for m in sweep if m.p90_ms <= latency_budget_ms)
# ```
# </details>
#
# **3.** (Open) Re-run this notebook with `papermill -p threads 1` and compare the tables. Which
# model gains most from a second core, and why might the MLP gain less at batch 1 than at batch 32?
