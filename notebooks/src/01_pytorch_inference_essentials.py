# %% [markdown]
# # 01 · PyTorch inference essentials
#
# Before quantizing or pruning anything, get the basics right: the mode, autograd, dtype, threads,
# memory layout, compilation and the input pipeline. Each is one line of code, several are worth
# more than a clever optimization, and the fastest float version they produce is the baseline every
# later notebook must beat.
#
# **You will learn to**
# - put a model in inference mode properly (`eval()`, `inference_mode`) and see what goes wrong if you don't;
# - measure dtype (fp32, bf16), threads, `channels_last`, `torch.compile`, `torch.export` + AOTInductor;
# - recognise TorchScript as legacy (and the warning it prints);
# - load weights safely onto the right device, keep the model fed, and profile where time goes;
# - know the GPU-only switches (cuDNN benchmark, half precision, CUDA graphs, multi-GPU) and when they apply;
# - put every variant through `variant.evaluate` for one honest closing table, against the fastest float variant.
#
# **Time:** about 4 minutes on a 2-core laptop (two compilations take most of it). **GPU:** optional;
# the GPU section runs when one is present and says why it skips otherwise.

# %%
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch

import optkit
from optkit.core import bench, record, report, variant
from optkit import data
from optkit.course import notebook
from optkit.course.exercises import nb01 as exercises
from optkit.runtimes import gpu, model_files
from optkit.data import models

# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=01` lists them)
threads = None  # torch intra-op threads; None: every core this process may use
model_name = "resnet_cnn"  # the model most sections time: resnet_cnn or small_cnn
batch_size = 32  # the batch size of the closing table (batch 1 is measured too)
max_time_s = 1.0  # time budget per measurement (seconds)
run_compile = True  # torch.compile and AOTInductor take ~10-40 s each to compile
eval_samples = 2000  # test images used for the accuracy checks (10000: the whole test split)
output_dir = "../runs/artifacts/01_pytorch_inference_essentials"

# %%
params = notebook.check_parameters(ranges={"threads": (1, 256), "batch_size": (1, 4096),
                                           "max_time_s": (0.01, 600), "eval_samples": (100, 10000)},
                                   choices={"model_name": ["resnet_cnn", "small_cnn"]})
env = notebook.setup(threads=threads)
fmnist = data.fashion_mnist()
test_subset = fmnist.test.subset(eval_samples)
x1, xb = fmnist.example_batch(1), fmnist.example_batch(batch_size)
variants, convert_of = [], {}  # the closing table's variants (section 10 measures them all in one run)


def to_cl(x):
    """The same batch in channels_last (NHWC) memory layout."""
    return x.contiguous(memory_format=torch.channels_last)


def add(name, predict, prep=None, **fields):
    """Register a variant.Variant for the closing table. ``prep`` turns an input batch into what
    ``predict`` takes (a layout, a dtype): once for the timing batch, and for every evaluation batch."""
    prep = prep or (lambda x: x)
    variants.append(variant.Variant(name, predict, inputs={batch_size: prep(xb)}, **fields))
    convert_of[name] = lambda a: prep(torch.from_numpy(np.array(a)))  # a copy: the data's arrays are read-only

# %% [markdown]
# ## 1 · `eval()` and `inference_mode`
# A model trained with Dropout and BatchNorm behaves differently in training mode: Dropout zeroes
# activations at random and BatchNorm normalises with the *batch's* statistics instead of the
# running ones it learned. Forgetting `model.eval()` is the most common inference bug; it does not
# crash, it just gives worse, non-deterministic answers.

# %%
net = models.pretrained(model_name)
accuracy_eval = models.evaluate(net, test_subset).accuracy


def accuracy_in_train_mode(model, split, bs):
    """Accuracy if someone forgets model.eval() (BatchNorm uses each batch's statistics)."""
    model.train()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split), bs):
            xs = torch.from_numpy(np.array(split.x[i:i + bs]))
            correct += (model(xs).argmax(1) == torch.from_numpy(np.array(split.y[i:i + bs]))).sum().item()
    model.eval()
    return correct / len(split)


import copy

torch.manual_seed(0)
for bs in (256, 8):
    victim = copy.deepcopy(net)  # a copy: see below
    acc_train = accuracy_in_train_mode(victim, test_subset, bs)
    print(f"train mode, batch {bs:>3}: accuracy {100 * acc_train:5.2f} %")
print(f"eval mode            : accuracy {100 * accuracy_eval:5.2f} %   ({eval_samples} test images)")
drifted = models.evaluate(victim, test_subset).accuracy
print(f"the copy, back in eval mode after those train-mode passes: {100 * drifted:5.2f} %")

# %% [markdown]
# Worse, the damage outlives the mistake: in training mode every forward pass also *updates*
# BatchNorm's running statistics, so the model stays changed after you switch back to `eval()`
# (the last line above). That is why the demonstration ran on a copy.
#
# In eval mode, autograd still records every operation unless told not to. `torch.no_grad()` stops
# that; `torch.inference_mode()` goes further (no version counters, no view tracking) and is the
# right default for serving. Its tensors cannot later be used in autograd, which is the point.

# %%
# NBVAL_IGNORE_OUTPUT
def plain():
    net(xb)


def no_grad():
    with torch.no_grad():
        net(xb)


def inference():
    with torch.inference_mode():
        net(xb)


def autograd_on(x):
    """The closing table's autograd-on variant: evaluate runs every variant under inference_mode,
    so this switches it off again (and copies an input made under it, which autograd refuses to save)."""
    with torch.inference_mode(False):
        return net(x.clone() if x.is_inference() else x)


cmp = bench.compare({f"{model_name} b{batch_size} autograd on": plain, f"{model_name} b{batch_size} no_grad": no_grad,
                     f"{model_name} b{batch_size} inference_mode": inference}, batch_size=batch_size,
                    max_time_s=max_time_s)
add("eager fp32 (autograd on)", autograd_on, technique="autograd on")
add("eager fp32 inference_mode", net, technique="inference_mode", size_bytes=model_files.model_size(net))
print("Measured on:", bench.environment_line())
cmp.table()

# %% [markdown]
# The time saved is modest; the memory is not. With autograd on, every output keeps the activations
# its backward pass would need, for as long as the output lives. A loop that collects outputs
# (as an evaluation loop does) holds all of them:

# %%
# NBVAL_IGNORE_OUTPUT
def collect(n=8, grad=True):
    with torch.inference_mode(mode=not grad):
        return [net(xb) for _ in range(n)]


for label, grad in [("autograd on", True), ("inference_mode", False)]:
    mem = bench.peak_memory(collect, grad=grad)
    print(f"{label:<15} keeping 8 outputs of batch {batch_size}: +{mem.delta_rss_bytes / 2**20:6.1f} MiB "
          f"resident during the loop (peak {mem.peak_rss_bytes / 2**20:.0f} MiB)")

# %% [markdown]
# ## 2 · Threads and batch size
# Intra-op threads split one operator across cores; inter-op threads run independent operators
# side by side (rarely useful for these models). On a shared machine, fewer threads per process
# and more processes can serve more requests. Batch 1 measures the latency a single request sees;
# there is little work per operator to split there, so a second thread may buy nothing or even cost
# time (compare the two tables below). Never run two processes that *each* use every core: their
# threads wait on each other and latency can grow tenfold.

# %%
# NBVAL_IGNORE_OUTPUT
n_cores = len(os.sched_getaffinity(0))
for bs, x in [(1, x1), (batch_size, xb)]:
    fns = {}
    for n in sorted({1, n_cores}):
        def fn(n=n, x=x):
            with bench.threads(n), torch.inference_mode():
                net(x)
        fns[f"{model_name} b{bs} {n} thread(s)"] = fn
    print(bench.compare(fns, batch_size=bs, max_time_s=max_time_s))


def one_thread(x):
    with bench.threads(1):
        return net(x)


if n_cores > 1:
    add("eager fp32, 1 thread", one_thread, technique="1 thread", config={"threads": 1})

# %% [markdown]
# ## 3 · Memory format: `channels_last`
# Convolutions on x86 run fastest on NHWC data (channels last); PyTorch's default is NCHW, so
# oneDNN converts back and forth around every convolution. Converting the model and the input once
# removes that. Later notebooks compare against the fastest float version of a model, whichever it
# turns out to be on your machine; the closing table (section 10) finds it.

# %%
# NBVAL_IGNORE_OUTPUT
net_cl = models.pretrained(model_name).to(memory_format=torch.channels_last)
xb_cl = to_cl(xb)


def eager_cl():
    with torch.inference_mode():
        net_cl(xb_cl)


cmp_cl = bench.compare({f"{model_name} b{batch_size} eager fp32": inference,
                        f"{model_name} b{batch_size} channels_last": eager_cl},
                       batch_size=batch_size, max_time_s=max_time_s)
add("channels_last", net_cl, prep=to_cl, technique="channels_last", config={"memory_format": "channels_last"})
print(cmp_cl)

# %% [markdown]
# ## 4 · dtype: bf16 on this CPU
# bfloat16 keeps fp32's range with 8 bits of mantissa. CPUs with AVX-512 BF16 or AMX run it natively;
# others emulate it and can be *slower* than fp32. Two ways in: convert the model (`.to(torch.bfloat16)`,
# half the weight bytes) or `torch.autocast`, which runs selected ops in bf16 and keeps the rest in fp32.
# fp16 on CPU is rarely fast; on GPU it is the standard (section 9).

# %%
# NBVAL_IGNORE_OUTPUT
flags = bench.environment().get("cpu_flags", {})
print("CPU bf16 support:", {k: v for k, v in flags.items() if "bf16" in k or "amx" in k} or "unknown")
net_bf16 = models.pretrained(model_name).to(torch.bfloat16)
xb_bf16 = xb.to(torch.bfloat16)


def bf16_model():
    with torch.inference_mode():
        net_bf16(xb_bf16)


def autocast_bf16(x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return net(x)


def bf16_autocast():
    with torch.inference_mode():
        autocast_bf16(xb)


cmp_bf = bench.compare({f"{model_name} b{batch_size} eager fp32": inference,
                        f"{model_name} b{batch_size} bf16 weights": bf16_model,
                        f"{model_name} b{batch_size} bf16 autocast": bf16_autocast},
                       batch_size=batch_size, max_time_s=max_time_s)
print(cmp_bf)

# %%
acc_bf16 = models.evaluate(lambda x: net_bf16(x.to(torch.bfloat16)), test_subset).accuracy
print(f"bf16 weights: accuracy {100 * acc_bf16:.2f} % vs fp32 {100 * accuracy_eval:.2f} %; "
      f"state dict {model_files.model_size(net_bf16) / 1e6:.2f} MB vs {model_files.model_size(net) / 1e6:.2f} MB")
add("bf16 weights", net_bf16, prep=lambda x: x.to(torch.bfloat16), technique="bf16 weights", precision="bf16",
    size_bytes=model_files.model_size(net_bf16))
add("bf16 autocast", autocast_bf16, technique="bf16 autocast", precision="mixed")

# %% [markdown]
# ## 5 · `torch.compile`
# `torch.compile` captures the model as a graph and generates fused kernels (Inductor). The first
# call compiles (seconds); later calls are fast. On CPU, `freezing` also folds weights into the
# graph as constants (BatchNorm into convolutions, weight layouts prepacked), which matters for
# inference. The compiled code is cached under the system's temp folder. `dynamic=False` compiles
# one graph specialised to each batch size it meets, every one under the settings it was compiled
# with (a model served at fixed batch sizes wants exactly that).

# %%
# NBVAL_IGNORE_OUTPUT
import time

compiled = {}
if run_compile:
    import torch._inductor.config as inductor_config

    for label, freeze in [("torch.compile", False), ("torch.compile + freezing", True)]:
        torch._dynamo.reset()
        model_c = models.pretrained(model_name).to(memory_format=torch.channels_last)
        with inductor_config.patch(freezing=freeze), torch.inference_mode():
            fn_c = torch.compile(model_c, dynamic=False)
            t0 = time.perf_counter()
            fn_c(xb_cl)
            first = time.perf_counter() - t0
            fn_c(to_cl(x1))  # batch 1 too: a second graph
        compiled[label] = fn_c
        print(f"{label}: first call (compilation) {first:.1f} s")
else:
    print("run_compile=False: skipping torch.compile (set -p run_compile True)")

# %%
# NBVAL_IGNORE_OUTPUT
if compiled:
    fns = {f"{model_name} b{batch_size} channels_last": eager_cl}
    for label, fn_c in compiled.items():
        def call(fn_c=fn_c):
            with torch.inference_mode():
                fn_c(xb_cl)
        fns[f"{model_name} b{batch_size} {label}"] = call
    print(bench.compare(fns, batch_size=batch_size, max_time_s=max_time_s))
    for label, fn_c in compiled.items():
        add(label, fn_c, prep=to_cl, technique=label, runtime="torch.compile",
            config={"freezing": label.endswith("freezing"), "dynamic": False, "memory_format": "channels_last"})

# %%
# NBVAL_IGNORE_OUTPUT
if compiled:
    fn_c = compiled["torch.compile + freezing"]
    with torch.inference_mode():
        ref = net(xb)
        out = fn_c(xb_cl)
    parity = optkit.core.verify.compare_outputs(ref, out)
    print(f"compiled (frozen) vs eager on {batch_size} real images: {parity}")
    print("Fused kernels sum in a different order, so logits differ in the last digits; "
          + ("the predictions agree." if parity.top1_agreement == 1 else
             f"top-1 agreement {parity.top1_agreement:.1%}: a near-tie flipped."))

# %% [markdown]
# ## 6 · `torch.export` and AOTInductor: a deployable artifact
# `torch.compile` optimizes inside a Python process. To *ship* a model, export it: `torch.export`
# produces an `ExportedProgram` (a full graph with a declared input signature, here a dynamic batch),
# saved as `.pt2` and loaded without the model's Python class and without unpickling code.
# AOTInductor then compiles that program ahead of time into a shared library packaged in a `.pt2`.

# %%
from pathlib import Path

out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
batch_dim = torch.export.Dim("batch", min=1, max=4096)
program = torch.export.export(models.pretrained(model_name), (xb,), dynamic_shapes=({0: batch_dim},))
program_path = out / f"{model_name}.pt2"
model_files.save_program(program, program_path, overwrite=True)
loaded = model_files.load_program(program_path).module()
with torch.inference_mode():
    p = optkit.core.verify.compare_outputs(net(x1), loaded(x1))
print(f"exported program: {model_files.file_size(program_path) / 1e6:.2f} MB; batch 1 runs though we exported at "
      f"batch {batch_size}; top-1 agreement {p.top1_agreement:.0%}")

# %%
# NBVAL_IGNORE_OUTPUT
if run_compile:
    t0 = time.perf_counter()
    aoti_path = torch._inductor.aoti_compile_and_package(program, package_path=str(out / f"{model_name}_aoti.pt2"))
    print(f"AOTInductor compile: {time.perf_counter() - t0:.1f} s, package {model_files.file_size(aoti_path) / 1e6:.2f} MB")
    aoti = torch._inductor.aoti_load_package(aoti_path)

    def aoti_call():
        with torch.inference_mode():
            aoti(xb)

    cmp_a = bench.compare({f"{model_name} b{batch_size} eager fp32": inference,
                           f"{model_name} b{batch_size} AOTInductor": aoti_call},
                          batch_size=batch_size, max_time_s=max_time_s)
    add("AOTInductor", aoti, technique="AOTInductor", runtime="AOTInductor", artifact=aoti_path,
        size_bytes=model_files.file_size(aoti_path))
    print(cmp_a)

# %% [markdown]
# A compiled package is built for the inputs it was compiled with, down to their *strides* (how far
# apart in memory neighbouring elements are). A batch of one-channel images has a channel dimension
# of size 1, whose stride can be anything without moving a byte: `xb` carries 784 there, while a
# batch sliced from a numpy array may carry 1. Both are the same images. Below, the package and eager
# PyTorch run on both forms of the same batch; where the package's agreement is not 100 % on the
# second form, it answers wrongly *without an error*. The remedy is a fresh contiguous copy
# (`x.clone(memory_format=torch.contiguous_format)`, or `np.array(batch)` before `torch.from_numpy`,
# which the closing table does), and the lesson is to check every artifact's accuracy rather than
# trust it.

# %%
# NBCHECK_APPROX agreement
if run_compile:
    odd = xb.as_strided(xb.shape, (xb.stride(0), 1, *xb.stride()[2:]))  # the same bytes; channel stride 1
    with torch.inference_mode():
        for label, x in [(f"strides {tuple(xb.stride())}", xb), (f"strides {tuple(odd.stride())}", odd)]:
            p = optkit.core.verify.compare_outputs(net(x), aoti(x))
            print(f"AOTInductor vs eager, {label}: top-1 agreement {p.top1_agreement:.1%}"
                  f"{'' if p.top1_agreement == 1 else '  <- wrong answers, and no error'}")
else:
    print("run_compile=False: no AOTInductor package to check")

# %% [markdown]
# ## 7 · TorchScript: legacy
# Most tutorials still show `torch.jit.trace`/`torch.jit.script`. In the pinned PyTorch every entry
# point warns that it is deprecated in favour of `torch.compile` and `torch.export`. You will meet it in
# older code; here is the warning, and the number, so you know what you are replacing.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    scripted = torch.jit.freeze(torch.jit.trace(models.pretrained(model_name), xb))
print(sorted({str(w.message) for w in caught if "deprecated" in str(w.message)}))

# %%
# NBVAL_IGNORE_OUTPUT
with warnings.catch_warnings():
    warnings.simplefilter("ignore")

    def ts_call():
        with torch.inference_mode():
            scripted(xb)

    cmp_ts = bench.compare({f"{model_name} b{batch_size} eager fp32": inference,
                            f"{model_name} b{batch_size} TorchScript (legacy)": ts_call},
                           batch_size=batch_size, max_time_s=max_time_s)
add("TorchScript (legacy)", scripted, technique="TorchScript", runtime="TorchScript")
print(cmp_ts)

# %% [markdown]
# ## 8 · Loading onto a device, keeping the model fed, and profiling
# **Device and `map_location`.** Weights saved on a GPU machine carry their device; `map_location`
# puts them where *you* run. `weights_only=True` refuses anything but tensors and plain containers,
# so a malicious file cannot run code when loaded (`optkit.runtimes.model_files.load_state_dict` always does this).

# %%
device = "cuda" if torch.cuda.is_available() else "cpu"
state_path = out / f"{model_name}_state.pt"
model_files.save_state_dict(net, state_path, overwrite=True)
state = torch.load(state_path, map_location=device, weights_only=True)
print(f"device: {device}; {len(state)} tensors loaded onto {next(iter(state.values())).device} with weights_only=True")

# %% [markdown]
# **Keeping the model fed.** Throughput is capped by whatever feeds the model. Below, a `DataLoader`
# applies a per-image transform in Python (as decoding or augmentation would). Worker processes move
# that work off the main process, but on a 2-core machine they compete with PyTorch's own threads.
# `pin_memory` only matters when copying to a GPU.

# %%
class DecodedImages(torch.utils.data.Dataset):
    """Images stored as uint8 (like decoded files) converted per item, as a real input pipeline would."""

    def __init__(self, split):
        self.raw = (split.x * 255).round().astype(np.uint8)
        self.y = split.y

    def __len__(self):
        return len(self.raw)

    def __getitem__(self, i):
        img = torch.from_numpy(self.raw[i]).float().div_(255.0)  # uint8 -> float in [0, 1], as training saw
        return img, int(self.y[i])


def feed_throughput(num_workers, prefetch_factor=None):
    loader = torch.utils.data.DataLoader(DecodedImages(test_subset), batch_size=batch_size, num_workers=num_workers,
                                         prefetch_factor=prefetch_factor, pin_memory=torch.cuda.is_available())
    t0 = time.perf_counter()
    n = 0
    with torch.inference_mode():
        for xs, _ in loader:
            net_cl(xs.contiguous(memory_format=torch.channels_last))
            n += len(xs)
    return n / (time.perf_counter() - t0)

# %%
# NBVAL_IGNORE_OUTPUT
for workers, prefetch in [(0, None), (1, 2), (2, 2), (2, 4)]:
    rate = feed_throughput(workers, prefetch)
    print(f"num_workers={workers} prefetch_factor={prefetch}: {rate:,.0f} images/s end to end")
print("Measured on:", bench.environment_line())

# %% [markdown]
# **Where does the time go?** `torch.profiler` lists operators by time. For a CNN on CPU, convolutions
# dominate; if you see `copy_`/`to` or layout conversions near the top, fix the format before anything else.

# %%
# NBVAL_IGNORE_OUTPUT
from torch.profiler import ProfilerActivity, profile

with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
    for _ in range(5):
        net(xb)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))

# %% [markdown]
# ## 9 · On a GPU
# These switches matter only with a CUDA GPU; without one this cell says so and moves on.
# - `torch.backends.cudnn.benchmark = True` lets cuDNN time its algorithms for your shapes (fixed shapes only).
# - Half precision: `model.half()` or `torch.autocast("cuda", dtype=torch.float16)` uses tensor cores.
# - CUDA graphs record a whole forward pass once and replay it, removing per-kernel launch overhead
#   (`torch.compile(mode="reduce-overhead")` does this for you).
# - Several GPUs: one process per GPU (`DistributedDataParallel`-style launch with `torchrun`) beats
#   `DataParallel`, which scatters each batch from one Python thread.

# %%
# NBVAL_IGNORE_OUTPUT
gpu_ok, gpu_why = gpu.available()
if not gpu_ok:
    print(f"Skipping cuDNN benchmark, fp16, CUDA graphs and multi-GPU: {gpu_why}. "
          "Run this notebook on a GPU machine to fill this section.")
else:
    gpu_variants = gpu.cuda_variants(models.pretrained(model_name), xb)  # fp32, fp16 autocast, CUDA graph
    print(bench.compare(gpu_variants, batch_size=batch_size, max_time_s=max_time_s, sync=gpu.synchronize))
    print(gpu.describe())

# %% [markdown]
# ## 10 · Every variant on this machine
# The table below is the point of this notebook: the same model, the same inputs, the same machine.
# Every variant registered above goes through the one measurement path, `variant.evaluate`: its
# accuracy and its top-1 agreement with eager fp32 on the same `eval_samples` test images, then its
# latency at `batch_size`, all variants timed **in one interleaved run** (round-robin blocks), so a
# busy moment of the machine cannot favour one of them. The baseline is the fastest float variant of
# this very run (`report.fastest_float`; every variant here computes in fp32 or bf16, so it is the
# fastest row and every other `speedup` is below 1); `vs_eager` is the speed-up over plain eager fp32
# with `inference_mode`.

# %%
# NBVAL_IGNORE_OUTPUT
workload = models.workload_for(fmnist, [net], n=len(test_subset))
records = variant.evaluate(variants, workload, data=test_subset, inputs={batch_size: xb}, convert=convert_of,
                           reference="eager fp32 inference_mode", eval_batch_size=batch_size,
                           max_time_s=2 * max_time_s, rounds=8, env=env)
by_name = {r.name: r for r in records}
for r in records:  # the speed-up over plain eager, beside the one over the table's baseline
    r.extra["vs_eager"] = by_name["eager fp32 inference_mode"].latency_ms / r.latency_ms
record.save_records(records, out / "records.json")
baseline_name = report.fastest_float(records)
print("Measured on:", bench.environment_line(), f"| {workload}, batch {batch_size}")
print(f"baseline: {baseline_name!r}, the fastest float variant of this run | vs_eager: speed-up over, and "
      "agreement: top-1 agreement with, eager fp32 inference_mode")
report.table(records, baseline=baseline_name, extra=["precision", "vs_eager"],
             columns=["runtime", "precision", "latency_ms", "p99_ms", "throughput", "size_mb", "accuracy",
                      "agreement", "speedup", "vs_eager", "acc_delta"]).sort_values("speedup", ascending=False).round(4)

# %%
# NBVAL_IGNORE_OUTPUT
best = by_name[baseline_name]
notebook.headline(f"best variant at batch {batch_size}", best.name, note=f"{best.latency_ms:.2f} ms")
notebook.headline(f"{best.name} over eager fp32", best.extra["vs_eager"], "x", fmt=".2f",
                  note=bench.environment_line())
order = sorted(records, key=lambda r: r.latency_ms)
ci = np.array([r.extra["ci_median_ms"] for r in order])
medians = np.array([r.latency_ms for r in order])
fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.2), layout="constrained")
names_ = [r.name for r in order]
ax.errorbar(medians, names_, xerr=[medians - ci[:, 0], ci[:, 1] - medians], fmt="o", capsize=3)
ax.plot([best.latency_ms], [baseline_name], "o", color="tab:orange", ms=9)
ax.invert_yaxis()
ax.grid(True, axis="x", alpha=0.3)
ax.set_xscale("log")
ax.set(xlabel=f"median latency at batch {batch_size} (ms, log scale; whiskers: 95 % CI of the median)",
       title=f"{model_name}: every variant, one interleaved run (orange: the baseline)")
plt.show()

# %% [markdown]
# What this run says, pair by pair. "Faster" or "slower" needs the two medians' 95 % intervals to
# be apart; otherwise the line says the difference is inside the noise.

# %%
# NBVAL_IGNORE_OUTPUT
def versus(a, b):
    """How variant a's median latency compares with b's in the closing run, with the noise verdict."""
    ra, rb = by_name[a], by_name[b]
    (alo, ahi), (blo, bhi) = ra.extra["ci_median_ms"], rb.extra["ci_median_ms"]
    verdict = "faster" if ahi < blo else "slower" if alo > bhi else "no difference beyond the noise"
    return f"{a:<26} {rb.latency_ms / ra.latency_ms:5.2f}x the speed of {b:<26} ({verdict})"


eager_ = "eager fp32 inference_mode"
pairs = [(eager_, "eager fp32 (autograd on)"), ("channels_last", eager_), ("bf16 weights", eager_),
         ("bf16 autocast", eager_), ("torch.compile", "channels_last"), ("torch.compile + freezing", "channels_last"),
         ("AOTInductor", eager_), ("TorchScript (legacy)", eager_), (baseline_name, eager_)]
for a, b in pairs:
    if a in by_name and b in by_name and a != b:
        print(versus(a, b))
native_bf16 = any(v for k, v in flags.items() if "bf16" in k or "amx" in k)
print(f"this CPU {'computes bf16 natively' if native_bf16 else 'has no native bf16 (no AVX512-BF16 or AMX flag)'}; "
      f"bf16 weights change accuracy by {by_name['bf16 weights'].accuracy * 100 - by_name[eager_].accuracy * 100:+.2f} "
      f"points on {eval_samples} images")

# %% [markdown]
# **What to take away.** The lines above are this machine's answers; on another CPU some flip, which
# is why every later notebook measures its own baseline rather than trusting these. What holds
# everywhere: `eval()` is about correctness, not speed (section 1); `inference_mode` only removes
# work, and saves the memory autograd would hold; layout and compilation can be worth more than a
# clever technique, and bf16 can pay only where the CPU computes it natively. Notebook 02 quantizes
# against the *best* float row of its own run (`report.fastest_float`), not against eager.
#
# ## Exercises
# **1.** Write `predict(model, x)` that returns class ids with the model in eval mode and autograd off,
# and leaves the model in whatever mode it was in before. *Hint:* remember `model.training`.

# %%
def predict(model, x):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_predict(predict);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def predict(model, x):
#     was_training = model.training
#     model.eval()
#     try:
#         with torch.inference_mode():
#             return model(x).argmax(dim=1)
#     finally:
#         model.train(was_training)
# ```
# </details>
#
# **2.** Write `export_dynamic(model, example)` returning a `torch.export.ExportedProgram` that runs at
# any batch size. *Hint:* `torch.export.Dim`.

# %%
def export_dynamic(model, example):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_export_dynamic(export_dynamic);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def export_dynamic(model, example):
#     batch = torch.export.Dim("batch", min=1, max=4096)
#     return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
# ```
# </details>
#
# **3.** (Open) Re-run with `-p model_name small_cnn`. Does `channels_last` still pay? Does compilation
# pay more or less for a small model, and why (think of per-operator overhead versus arithmetic)?
