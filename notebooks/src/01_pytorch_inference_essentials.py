# %% [markdown]
# # 01 · PyTorch inference essentials
#
# Before quantizing or pruning anything, get the basics right: the mode, autograd, dtype, threads,
# memory layout, compilation and the input pipeline. Each is one line of code, several are worth
# more than a clever optimization, and the fastest float version they produce is the baseline every
# later notebook must beat.
#
# **You will learn to**
# - put a model in inference mode properly (`eval()`, `inference_mode`) and see what goes wrong if you don't,
#   down to BatchNorm's running statistics drifting;
# - measure dtype (fp32, bf16), intra- and inter-op threads, `channels_last`, `torch.compile` (and what
#   freezing changes in the compiled graph), `torch.export` + AOTInductor;
# - recognise TorchScript as legacy (and the warning it prints);
# - load weights safely onto the right device, keep the model fed (workers, `pin_memory`, a dataset cache),
#   and profile where time goes;
# - train a few steps in mixed precision (bf16 autocast on CPU; fp16 + `GradScaler` on a GPU);
# - know the GPU-only switches (cuDNN benchmark, half precision, CUDA graphs, one process per GPU) and when they apply;
# - put every variant through `variant.evaluate` for one honest closing table, against the fastest float variant.
#
# **Time:** about 3 minutes on a 2-core laptop (two compilations take most of it). **GPU:** optional;
# the GPU cells run when one is present and say why they skip otherwise.

# %%
import copy
import dataclasses
import os
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

import optkit
from optkit.core import bench, progress, record, report, variant, verify
from optkit import data
from optkit.course import claims, notebook
from optkit.course.exercises import nb01 as exercises
from optkit.runtimes import gpu, model_files
from optkit.runtimes import torch_engineering as te
from optkit.data import models


# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=01` lists them)
threads = None  # torch intra-op threads; None: every core this process may use
model_name = "resnet_cnn"  # the model most sections time: resnet_cnn or small_cnn
batch_size = 32  # the batch size of the closing table (batch 1 is measured too)
max_time_s = 0.5  # time budget per measurement (seconds; 1.0 before, for tighter intervals)
run_compile = True  # torch.compile and AOTInductor take ~10-40 s each to compile
eval_samples = 2000  # test images used for the accuracy checks (10000: the whole test split)
bf16_samples = 250  # of those, the images the bf16 variants are scored on (emulated bf16 is slow; 500 before)
train_steps = 3  # optimizer steps of the mixed-precision training demonstration
output_dir = "../runs/artifacts/01_pytorch_inference_essentials"

# %%
params = notebook.check_parameters(ranges={"threads": (1, 256), "batch_size": (1, 4096),
                                           "max_time_s": (0.01, 600), "eval_samples": (100, 10000),
                                           "bf16_samples": (50, 10000), "train_steps": (1, 1000)},
                                   choices={"model_name": ["resnet_cnn", "small_cnn"]})
env = notebook.setup(threads=threads)
fmnist = data.fashion_mnist()
test_subset = fmnist.test.subset(eval_samples)
x1, xb = fmnist.example_batch(1), fmnist.example_batch(batch_size)
variants, convert_of = [], {}  # the closing table's variants (section 10 measures them all in one run)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)


def as_tensor(a):
    """A batch of the data's (read-only) numpy rows as a new tensor."""
    return torch.from_numpy(np.array(a))


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
# activations at random, and BatchNorm normalises each batch with *that batch's* mean and variance
# instead of the running statistics it learned. Forgetting `model.eval()` is the most common inference
# bug, and it does not crash. How much it hurts depends on the batch: a large batch drawn from the
# test distribution has statistics close to the running ones, so its answers can barely change; a
# batch of one image, or a batch of similar inputs (a stream of requests for one class), normalises
# away the very differences the model needs. First the correct answer, eval mode on the test images:

# %%
# NBCHECK_APPROX accuracy
net = models.pretrained(model_name)
with torch.inference_mode():
    eager_out = verify.predict_all(net, test_subset.x, batch_size=batch_size, convert=as_tensor)
hits_eval = verify.correct(eager_out, test_subset.y)
accuracy_eval = float(hits_eval.mean())
lo, hi = verify.accuracy_interval(hits_eval)
print(f"eval mode: accuracy {accuracy_eval:.2%} (95 % interval {lo:.2%} to {hi:.2%}) on {len(hits_eval)} test images")

# %% [markdown]
# Now the mistake, each time on a fresh copy of the model (why a copy: below). `order="skewed"` sorts
# the images by class, so every batch holds one or two classes; batch 8 runs on the first 500 images and
# batch 1 on the first 200. The drift is how far BatchNorm's running statistics moved meanwhile: the
# largest shift of a running mean, in standard deviations of its channel, or relative change of a
# running variance (0: unchanged).

# %%
# NBCHECK_APPROX accuracy float
settings = [(256, "mixed", None), (8, "mixed", 500), (256, "skewed", None), (1, "mixed", 200)]
runs, victims = {}, {}
for bs, order, limit in progress.bar(settings, desc="train-mode passes"):
    victims[bs, order] = copy.deepcopy(net)
    r = runs[bs, order] = te.train_mode_accuracy(victims[bs, order], test_subset, batch_size=bs, order=order,
                                                  limit=limit)
    print(f"train mode, batch {bs:>3}, {order:>6} classes: accuracy {r.accuracy:6.2%} on {r.n:>4} images "
          f"(eval mode on the same images: {hits_eval[:r.n].mean():6.2%}); "
          f"drift of the running statistics {r.drift:.2f}")

# %% [markdown]
# Which of these differences are real? Each claim below compares eval and train mode on the same
# images (a paired interval of the difference); an interval touching zero is inside the noise.

# %%
# NBCHECK_APPROX accuracy interval verdict
for (bs, order), label in [((256, "mixed"), "a batch of 256 mixed test images"), ((8, "mixed"), "a batch of 8"),
                           ((256, "skewed"), "batches of 256 sorted by class"), ((1, "mixed"), "batch 1")]:
    r = runs[bs, order]
    d = verify.paired_difference(hits_eval[:r.n], r.hits)
    claims.better(f"eval mode scores higher than train mode on {label}", float(hits_eval[:r.n].mean()),
                  r.accuracy, interval=(d.low, d.high), n=d.n)

# %% [markdown]
# The damage also outlives the mistake: in training mode every forward pass *updates* BatchNorm's
# running statistics (`running_mean = 0.9 * running_mean + 0.1 * batch_mean`, the same for the
# variance), so the model stays changed after you switch back to `eval()`. Here is the first BatchNorm
# layer of the copy that ran at batch 1 (its running statistics now mostly describe the last few single
# images it saw), and that copy back in eval mode on all the test images:

# %%
# NBCHECK_APPROX float accuracy interval verdict
drifted = victims[1, "mixed"].eval()
layer = next(iter(te.batchnorm_stats(net)))
(m0, v0), (m1, v1) = te.batchnorm_stats(net)[layer], te.batchnorm_stats(drifted)[layer]
print(f"{layer}.running_mean, channels 0-3: {m0[:4].numpy().round(3)} -> {m1[:4].numpy().round(3)}")
print(f"{layer}.running_var,  channels 0-3: {v0[:4].numpy().round(3)} -> {v1[:4].numpy().round(3)}")
with torch.inference_mode():
    hits_drift = verify.correct(verify.predict_all(drifted, test_subset.x, batch_size=batch_size,
                                                   convert=as_tensor), test_subset.y)
claims.check("train-mode passes move BatchNorm's running statistics", holds=runs[1, "mixed"].drift > 0,
             evidence=f"drift {runs[1, 'mixed'].drift:.2f} over all layers", depends=())
d = verify.paired_difference(hits_eval, hits_drift)
claims.better("after its train-mode passes, the copy scores lower than the original in eval mode",
              accuracy_eval, float(hits_drift.mean()), interval=(d.low, d.high), n=d.n);

# %% [markdown]
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
# Expect the time saved to be modest and the memory saved not to be: with autograd on, every output
# keeps the activations its backward pass would need, for as long as the output lives. A loop that
# collects outputs (as an evaluation loop does) holds all of them:

# %%
# NBVAL_IGNORE_OUTPUT
def collect(n=8, grad=True):
    with torch.inference_mode(mode=not grad):
        return [net(xb) for _ in range(n)]


held = {}
for label, grad in [("autograd on", True), ("inference_mode", False)]:
    mem = bench.peak_memory(collect, grad=grad)
    held[label] = mem.delta_rss_bytes / 2**20
    print(f"{label:<15} keeping 8 outputs of batch {batch_size}: +{held[label]:6.1f} MiB "
          f"resident during the loop (peak {mem.peak_rss_bytes / 2**20:.0f} MiB)")
claims.check("autograd holds more memory than inference_mode while outputs are kept",
             holds=held["autograd on"] > 1.5 * max(held["inference_mode"], 1.0),
             evidence=f"+{held['autograd on']:.1f} MiB vs +{held['inference_mode']:.1f} MiB for 8 kept outputs",
             depends=());

# %% [markdown]
# ## 2 · Threads and batch size
# Intra-op threads split one operator across cores; inter-op threads run independent operators
# side by side. On a shared machine, fewer threads per process and more processes can serve more
# requests. Batch 1 measures the latency a single request sees; there is little work per operator
# to split there, so expect a second thread to buy less at batch 1 than at batch 32, maybe nothing.
# Never run two processes that *each* use every core: their threads wait on each other and latency
# can grow tenfold.

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
    cmp_t = bench.compare(fns, batch_size=bs, max_time_s=max_time_s)
    print(cmp_t)
    if n_cores > 1:
        claims.faster(f"{n_cores} intra-op threads are faster than 1 at batch {bs}",
                      cmp_t[f"{model_name} b{bs} {n_cores} thread(s)"], cmp_t[f"{model_name} b{bs} 1 thread(s)"],
                      depends=("cores",))

# %% [markdown]
# **Inter-op threads** (`torch.set_num_interop_threads`, settable once, before any parallel work) only
# run work that is handed to them as a separate task: `torch.jit.fork` (legacy, it warns) or a
# TorchScript graph's independent branches. Eager PyTorch, `torch.compile` and AOTInductor run one
# operator after another, so for them this setting changes nothing. The one case it can help: two
# independent pieces of work, here two requests, each already splitting its operators over the
# intra-op threads. When those threads already keep every core busy, expect no gain.

# %%
# NBVAL_IGNORE_OUTPUT
def two_in_sequence():
    with torch.inference_mode():
        return net(xb), net(xb)


def two_as_interop_tasks():
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.fork/wait are deprecated: the only door to the pool
        task = torch.jit.fork(net, xb)
        return net(xb), torch.jit.wait(task)


cmp_io = bench.compare({"two requests, one after another": two_in_sequence,
                        "two requests, one as an inter-op task": two_as_interop_tasks},
                       batch_size=2 * batch_size, max_time_s=max_time_s)
print(cmp_io)
print(f"inter-op threads: {torch.get_num_interop_threads()}, intra-op threads: {torch.get_num_threads()}")
claims.faster("running the second request as an inter-op task beats running both in turn",
              cmp_io["two requests, one as an inter-op task"], cmp_io["two requests, one after another"],
              depends=("cores",));

# %% [markdown]
# ## 3 · Memory format: `channels_last`
# oneDNN's convolutions on x86 prefer NHWC data (channels last); PyTorch's default is NCHW, so
# oneDNN may convert back and forth around every convolution. Converting the model and the input once
# removes that. Later notebooks compare against the fastest float version of a model, whichever it
# turns out to be on your machine; the closing table (section 10) finds it. The quick comparisons in
# sections 3, 5 and 6 get half the time budget: the closing table times these variants again, together.

# %%
# NBVAL_IGNORE_OUTPUT
net_cl = models.pretrained(model_name).to(memory_format=torch.channels_last)
xb_cl = to_cl(xb)


def eager_cl():
    with torch.inference_mode():
        net_cl(xb_cl)


cmp_cl = bench.compare({f"{model_name} b{batch_size} eager fp32": inference,
                        f"{model_name} b{batch_size} channels_last": eager_cl},
                       batch_size=batch_size, max_time_s=max_time_s / 2)
add("channels_last", net_cl, prep=to_cl, technique="channels_last", config={"memory_format": "channels_last"})
print(cmp_cl)

# %% [markdown]
# ## 4 · dtype: bf16 on this CPU
# bfloat16 keeps fp32's range with 8 bits of mantissa. CPUs with AVX-512 BF16 or AMX run it natively;
# others emulate it and can be *slower* than fp32. Two ways in: convert the model (`.to(torch.bfloat16)`,
# half the weight bytes) or `torch.autocast`, which runs selected ops in bf16 and keeps the rest in fp32.
# fp16 on CPU is rarely fast; on GPU it is the standard (section 9). Where bf16 is emulated a call can
# take most of a second, so this comparison (and the closing table) asks for fewer warm-up and timed
# calls than `bench.compare`'s defaults; the fast variants still fill their time budget.

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
                       batch_size=batch_size, max_time_s=max_time_s, warmup=2, min_repeats=5)
print(cmp_bf)

# %% [markdown]
# Accuracy on the first `bf16_samples` of the test images (emulated bf16 is slow; the closing table
# reuses these outputs), paired with fp32 on the same images:

# %%
# NBCHECK_APPROX accuracy agreement interval verdict
bf16_rows = min(bf16_samples, len(test_subset))
y_small = test_subset.y[:bf16_rows]
bf16_out = {}
with torch.inference_mode():
    bf16_out["bf16 weights"] = verify.predict_all(lambda x: net_bf16(x.to(torch.bfloat16)).float(),
                                                  test_subset.x[:bf16_rows], batch_size=batch_size, convert=as_tensor)
    bf16_out["bf16 autocast"] = verify.predict_all(lambda x: autocast_bf16(x).float(), test_subset.x[:bf16_rows],
                                                   batch_size=batch_size, convert=as_tensor)
for name, o in bf16_out.items():
    hits = verify.correct(o, y_small)
    d = verify.paired_difference(hits_eval[:bf16_rows], hits)
    agree = verify.compare_outputs(eager_out[:bf16_rows], o).top1_agreement
    print(f"{name}: top-1 agreement with fp32 {agree:.1%}")
    claims.better(f"the {name} variant loses accuracy against fp32", float(hits_eval[:bf16_rows].mean()),
                  float(hits.mean()), interval=(d.low, d.high), n=d.n)
print(f"state dict: bf16 {model_files.model_size(net_bf16) / 1e6:.2f} MB, "
      f"fp32 {model_files.model_size(net) / 1e6:.2f} MB")
add("bf16 weights", net_bf16, prep=lambda x: x.to(torch.bfloat16), technique="bf16 weights", precision="bf16",
    size_bytes=model_files.model_size(net_bf16))
add("bf16 autocast", autocast_bf16, technique="bf16 autocast", precision="mixed")

# %% [markdown]
# ## 5 · `torch.compile`
# `torch.compile` captures the model as a graph and generates fused kernels (Inductor). The first
# call compiles (seconds); later calls are fast. On CPU, Inductor's `freezing` option treats the
# weights as constants of the graph: it can fold BatchNorm into the convolutions and prepack the weights
# once into oneDNN's blocked layout, instead of receiving every weight as an argument on every call.
# The compiled code is cached under the system's temp folder. `dynamic=False` compiles one graph
# specialised to each batch size it meets, every one under the settings it was compiled with (a model
# served at fixed batch sizes wants exactly that). `te.compile_with_code` keeps the code Inductor wrote,
# so we can count what one forward pass calls.

# %%
# NBVAL_IGNORE_OUTPUT
compiled, kernels = {}, {}
if run_compile:
    for label, freeze in [("torch.compile", False), ("torch.compile + freezing", True)]:
        fn_c, code, first = te.compile_with_code(net_cl, xb_cl, freezing=freeze)
        compiled[label], kernels[label] = fn_c, te.count_kernels(code)
        print(f"{label}: first call (compilation) {first:.1f} s")
else:
    print("run_compile=False: skipping torch.compile (set -p run_compile True)")

# %% [markdown]
# What freezing changed, counted in the generated code of one forward pass at batch `batch_size`:

# %%
# NBVAL_IGNORE_OUTPUT
if kernels:
    import pandas as pd

    u, f = kernels["torch.compile"], kernels["torch.compile + freezing"]
    display(pd.DataFrame(kernels))
    claims.check("freezing turns the weights into constants of the graph (none passed per call)",
                 holds=f["weights passed per call"] == 0 and f["constants folded in"] > 0,
                 evidence=f"weights passed per call {u['weights passed per call']} -> {f['weights passed per call']}, "
                          f"constants {u['constants folded in']} -> {f['constants folded in']}", depends=())
    claims.check("the frozen graph calls prepacked oneDNN/MKL kernels", holds=f["prepacked oneDNN/MKL calls"] > 0,
                 evidence=f"{u['prepacked oneDNN/MKL calls']} -> {f['prepacked oneDNN/MKL calls']} calls",
                 depends=("avx512", "isa_cap"))
    claims.check("the frozen graph calls fewer kernels per forward pass", holds=f["kernels"] < u["kernels"],
                 evidence=f"{f['kernels']} vs {u['kernels']} kernels", depends=());

# %%
# NBVAL_IGNORE_OUTPUT
if compiled:
    fns = {f"{model_name} b{batch_size} channels_last": eager_cl}
    for label, fn_c in compiled.items():
        def call(fn_c=fn_c):
            with torch.inference_mode():
                fn_c(xb_cl)
        fns[f"{model_name} b{batch_size} {label}"] = call
    cmp_c = bench.compare(fns, batch_size=batch_size, max_time_s=max_time_s / 2)
    print(cmp_c)
    claims.faster("freezing makes the compiled model faster",
                  cmp_c[f"{model_name} b{batch_size} torch.compile + freezing"],
                  cmp_c[f"{model_name} b{batch_size} torch.compile"], depends=("cores", "avx512"))
    for label, fn_c in compiled.items():
        add(label, fn_c, prep=to_cl, technique=label, runtime="torch.compile",
            config={"freezing": label.endswith("freezing"), "dynamic": False, "memory_format": "channels_last"})

# %%
# NBVAL_IGNORE_OUTPUT
if compiled:
    fn_c = compiled["torch.compile + freezing"]
    with torch.inference_mode():
        ref = net(xb)
        out_c = fn_c(xb_cl)
    parity = optkit.core.verify.compare_outputs(ref, out_c)
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
                          batch_size=batch_size, max_time_s=max_time_s / 2)
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
# Older code and most tutorials use TorchScript: `torch.jit.trace`/`torch.jit.script` to capture the
# model, `torch.jit.save`/`torch.jit.load` to ship it. Its job is now done by `torch.export` and
# AOTInductor (section 6). In the pinned PyTorch every TorchScript entry point warns that it is
# deprecated; here are the warnings you will meet in such code, once, so you recognise them. The
# closing table does not time it: nothing new is learned from a deprecated path.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    scripted = torch.jit.script(models.pretrained(model_name))
    torch.jit.save(scripted, str(out / f"{model_name}_scripted.pt"))
    reloaded = torch.jit.load(str(out / f"{model_name}_scripted.pt"))
for message in sorted({str(w.message) for w in caught if "deprecated" in str(w.message)}):
    print("warning:", message)
with torch.inference_mode():
    p = optkit.core.verify.compare_outputs(net(xb), reloaded(xb))
print(f"the reloaded TorchScript model agrees with eager on {p.top1_agreement:.0%} of {batch_size} images; "
      "the replacement for this file is the .pt2 program of section 6")

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
# **Keeping the model fed.** Throughput is capped by whatever feeds the model. Below, the test images
# are stored PNG-encoded, as files would be, and a `DataLoader` decodes one per item (`te.EncodedImages`).
# Three ways to feed the model: decode in the main process; decode in worker processes
# (`num_workers`), which on a 2-core machine compete with PyTorch's own threads; or decode every image
# once and keep the decoded tensors in memory (`te.CachedDataset`), so that later epochs, or repeated
# requests for the same items, skip decoding. The cache costs memory and one decoding pass.

# %%
# NBVAL_IGNORE_OUTPUT
encoded = te.EncodedImages(test_subset)
cached = te.CachedDataset(encoded)
print(f"cache: {len(cached)} images decoded once in {cached.seconds:.2f} s; it holds {cached.nbytes / 2**20:.1f} MiB")


def feed(xs):
    return net_cl(xs.contiguous(memory_format=torch.channels_last))


workers = min(2, n_cores)
rates, per_image = {}, {}  # per_image: ms per image, named, for the claims
for label, dataset, nw in [("decode every image, 0 workers", encoded, 0),
                           (f"decode every image, {workers} workers", encoded, workers),
                           ("cached in memory, 0 workers", cached, 0)]:
    rates[label] = te.loader_throughput(dataset, batch_size=batch_size, num_workers=nw, consume=feed)
    per_image[label] = SimpleNamespace(name=f"{label} (ms per image)", latency_ms=1000 / rates[label])
    print(f"{label:<32}: {rates[label]:,.0f} images/s end to end (model included)")
print("Measured on:", bench.environment_line())
claims.faster("serving decoded images from memory is faster than decoding them every time",
              per_image["cached in memory, 0 workers"], per_image["decode every image, 0 workers"],
              depends=("cores",))
claims.faster(f"{workers} decoding workers are faster than decoding in the main process",
              per_image[f"decode every image, {workers} workers"], per_image["decode every image, 0 workers"],
              depends=("cores",));

# %% [markdown]
# `pin_memory=True` makes the loader copy each batch into page-locked memory, from which a copy to a
# GPU can run asynchronously (`x.cuda(non_blocking=True)`). It speeds up exactly that copy and nothing
# else, so it is measured only where there is a GPU:

# %%
# NBVAL_IGNORE_OUTPUT
if torch.cuda.is_available():
    gpu_net = copy.deepcopy(net).cuda()
    for pin in (False, True):
        rate = te.loader_throughput(cached, batch_size=batch_size, pin_memory=pin, consume=gpu_net, device="cuda")
        print(f"pin_memory={pin}: {rate:,.0f} images/s to the GPU and through the model")
else:
    print(f"pin_memory not measured: {gpu.available()[1]}. Without a GPU there is no host-to-device copy to "
          "speed up; DataLoader warns and ignores pin_memory=True.")

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
# ## 9 · Mixed-precision training, and on a GPU
# Models are trained before they are served, and mixed precision is where most of them meet autocast.
# `torch.autocast` runs matrix multiplications and convolutions in a 16-bit type and keeps reductions
# such as the loss in fp32. On CPU the type is bf16: it has fp32's exponent range, so gradients do not
# underflow and no loss scaling is needed. On a GPU the usual type is fp16, whose small range makes
# small gradients round to zero; `torch.amp.GradScaler` multiplies the loss before `backward()` and
# divides the gradients before the step, skipping a step whose gradients overflowed. A few steps on
# real training images, from the pretrained weights (a copy; the model above is untouched):

# %%
# NBVAL_IGNORE_OUTPUT
steps = {p: te.autocast_train_steps(net, fmnist.train, steps=train_steps, batch_size=batch_size, precision=p)
         for p in ("fp32", "mixed")}
for p, st in steps.items():
    print(f"{p:>5} ({st.dtype}, GradScaler {st.scaler}): losses {np.round(st.losses, 4)}, "
          f"{1000 * st.seconds_per_step:.0f} ms per step")
first_fp32, first_bf16 = steps["fp32"].losses[0], steps["mixed"].losses[0]
claims.check("the bf16-autocast loss matches fp32 to within 5 % on the same first batch",
             holds=abs(first_bf16 - first_fp32) <= 0.05 * first_fp32 + 1e-3,
             evidence=f"{first_bf16:.4f} vs {first_fp32:.4f}", depends=())
claims.faster("a bf16-autocast training step is faster than an fp32 one",
              *[SimpleNamespace(name=f"{p} step", latency_ms=1000 * steps[p].seconds_per_step)
                for p in ("mixed", "fp32")],
              depends=("cores", "avx512_bf16", "amx"));

# %% [markdown]
# The GPU switches matter only with a CUDA GPU; without one each cell below says so and moves on.
# - `torch.backends.cudnn.benchmark = True` lets cuDNN time its algorithms for your shapes (fixed shapes only).
# - Half precision: `model.half()` or `torch.autocast("cuda", dtype=torch.float16)` uses tensor cores;
#   for training, fp16 autocast comes with `GradScaler`.
# - CUDA graphs record a whole forward pass once and replay it, removing per-kernel launch overhead
#   (`torch.compile(mode="reduce-overhead")` does this for you).

# %%
# NBVAL_IGNORE_OUTPUT
gpu_ok, gpu_why = gpu.available()
if not gpu_ok:
    print(f"Skipping cuDNN benchmark, fp16, CUDA graphs and fp16 + GradScaler training: {gpu_why}. "
          "Run this notebook on a GPU machine to fill this cell.")
else:
    gpu_variants = gpu.cuda_variants(models.pretrained(model_name), xb)  # fp32, fp16 autocast, CUDA graph
    print(bench.compare(gpu_variants, batch_size=batch_size, max_time_s=max_time_s, sync=gpu.synchronize))
    print(gpu.describe())
    st = te.autocast_train_steps(net, fmnist.train, steps=train_steps, batch_size=batch_size, device="cuda")
    print(f"fp16 autocast + GradScaler training: losses {np.round(st.losses, 4)}, "
          f"{1000 * st.seconds_per_step:.1f} ms per step")

# %% [markdown]
# **Several GPUs.** For inference, run one process per GPU, each with its own copy of the model and its
# own share of the requests (`torch.distributed`, launched by `torch.multiprocessing.spawn` or
# `torchrun`); `DistributedDataParallel` adds gradient synchronisation, which only training needs.
# `nn.DataParallel` instead scatters every batch from one Python thread and is slower.
# `te.distributed_predict` does the one-process-per-GPU version: rank *r* predicts rows *r*, *r + world*, ...

# %%
# NBVAL_IGNORE_OUTPUT
why_not = te.multi_gpu_reason()
if why_not:
    print(f"Skipping multi-GPU inference: {why_not}.")
else:
    t0 = time.perf_counter()
    multi_out = te.distributed_predict(net, test_subset.x)
    print(f"{torch.cuda.device_count()} GPUs, one process each: {len(test_subset)} images in "
          f"{time.perf_counter() - t0:.1f} s (process start-up included); top-1 agreement with one CPU model "
          f"{verify.compare_outputs(eager_out, multi_out).top1_agreement:.1%}")

# %% [markdown]
# ## 10 · Every variant on this machine
# The table below is the point of this notebook: the same model, the same inputs, the same machine.
# Every variant registered above goes through the one measurement path, `variant.evaluate`: its
# accuracy and its top-1 agreement with eager fp32 on the same test images, then its latency at
# `batch_size`, all variants timed **in one interleaved run** (round-robin blocks), so a busy moment
# of the machine cannot favour one of them. Outputs computed earlier are reused rather than computed
# again: eager fp32's (autograd on computes the very same function), and the bf16 variants', which
# were scored on the first `bf16_samples` images only (`images`: how many images each accuracy rests on).
# The baseline is the fastest float variant of this very run (`report.fastest_float`; every variant
# here computes in fp32 or bf16, so it is the fastest row); `vs_eager` is the speed-up over plain eager
# fp32 with `inference_mode`. `p95_ms` is the 95th-percentile latency; `peak_mem_mb` is the resident
# memory one call adds (its activations and workspaces; not the weights, which are already loaded).
# Accuracy differences between rows are compared on the same images where it matters: section 1 for
# train mode, section 4 for bf16.

# %%
# NBVAL_IGNORE_OUTPUT
workload = models.workload_for(fmnist, [net], n=len(test_subset))
shared = {"eager fp32 inference_mode": [eager_out], "eager fp32 (autograd on)": [eager_out]}
shared.update({name: [eager_out] for name in bf16_out})  # placeholders: rescored on their own rows below
records = variant.evaluate(variants, workload, data=test_subset, inputs={batch_size: xb}, convert=convert_of,
                           reference="eager fp32 inference_mode", eval_batch_size=batch_size, outputs=shared,
                           max_time_s=max_time_s, rounds=5, warmup=2, min_repeats=5, env=env)
for i, r in enumerate(records):
    if r.name in bf16_out:  # accuracy and agreement from the first bf16_rows images (section 4)
        o = bf16_out[r.name]
        records[i] = dataclasses.replace(r, accuracy=verify.accuracy(o, y_small), extra=dict(r.extra),
                                         parity=verify.compare_outputs(eager_out[:bf16_rows], o).to_dict())
by_name = {r.name: r for r in records}
for r in records:  # the speed-up over plain eager, beside the one over the table's baseline
    r.extra["vs_eager"] = by_name["eager fp32 inference_mode"].latency_ms / r.latency_ms
    r.extra["images"] = bf16_rows if r.name in bf16_out else len(test_subset)
record.save_records(records, out / "records.json")
baseline_name = report.fastest_float(records)
print("Measured on:", bench.environment_line(), f"| {workload}, batch {batch_size}")
print(f"baseline: {baseline_name!r}, the fastest float variant of this run | vs_eager: speed-up over, and "
      "agreement: top-1 agreement with, eager fp32 inference_mode")
report.table(records, baseline=baseline_name, extra=["precision", "vs_eager", "images"],
             columns=["runtime", "precision", "latency_ms", "p95_ms", "p99_ms", "throughput", "peak_mem_mb",
                      "size_mb", "accuracy", "images", "agreement", "speedup", "vs_eager"]
             ).sort_values("speedup", ascending=False).round(4)

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
# What this run says, pair by pair, each with the CPU features it depends on. Expect bf16 to pay only
# where the CPU computes it natively (AVX-512 BF16 or AMX); elsewhere it is emulated and slower than
# fp32. A ratio within ±5 % of 1 is inside the noise.

# %%
# NBVAL_IGNORE_OUTPUT
eager_ = "eager fp32 inference_mode"
bf16_facts = ("cores", "avx512_bf16", "amx")
pairs = [(eager_, "eager fp32 (autograd on)", ("cores",)), ("channels_last", eager_, ("cores", "avx512")),
         ("bf16 weights", eager_, bf16_facts), ("bf16 autocast", eager_, bf16_facts),
         ("torch.compile", "channels_last", ("cores", "avx512")),
         ("torch.compile + freezing", "torch.compile", ("cores", "avx512")),
         ("AOTInductor", eager_, ("cores", "avx512"))]
for a, b, facts in pairs:
    if a in by_name and b in by_name and a != b:
        claims.faster(f"{a} is faster than {b} at batch {batch_size}", by_name[a], by_name[b], depends=facts)
fastest_of = {p: min((r for r in records if r.extra.get("precision") in ps), key=lambda r: r.latency_ms)
              for p, ps in [("fp32", ("fp32",)), ("bf16", ("bf16", "mixed"))]}
claims.faster(f"the fastest bf16 variant ({fastest_of['bf16'].name}) is faster than the fastest fp32 variant "
              f"({fastest_of['fp32'].name})", fastest_of["bf16"], fastest_of["fp32"], depends=bf16_facts);

# %% [markdown]
# **What to take away.** The lines above are this machine's answers; on another CPU some flip, which
# is why every later notebook measures its own baseline rather than trusting these. What does not
# depend on the CPU: `eval()` is about correctness, not speed (section 1); `inference_mode` only removes
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
