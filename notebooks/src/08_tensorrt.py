# %% [markdown]
# # 08 · TensorRT
#
# TensorRT is NVIDIA's inference compiler: it takes an ONNX graph, fuses layers, picks the fastest
# kernel for every layer *on the GPU it builds on* (timing candidates, the "tactics"), and writes a
# serialized **engine**. Engines are fast and tied: to one GPU architecture and one TensorRT version.
#
# **You will learn to**
# - prepare an ONNX model TensorRT accepts: dynamic batch, FP16, symmetric int8 Q/DQ (and check it on a CPU);
# - build engines with the current Python API (10.x/11.x): ONNX parser, an optimization profile for the
#   dynamic batch, FP16, INT8 from a Q/DQ model or (10.x only) a calibrator, a timing cache;
# - run an engine with named tensors (`set_input_shape`, `set_tensor_address`, `execute_async_v3`) and
#   check it against ONNX Runtime; time it against PyTorch and ORT on the GPU;
# - know why an engine refuses to load elsewhere, and where Torch-TensorRT and TF-TRT fit.
#
# **Time:** about 30 seconds without a GPU (the ONNX preparation runs; every engine step is skipped
# with the reason); a few minutes with one (engine builds autotune). **GPU:** an NVIDIA GPU with the
# `tensorrt` package (NVIDIA's index) for sections 2-5; everything else runs on a CPU.
#
# TensorRT is not on this course's CI machines: the cells that need it check `optkit.runtimes.trt_engines.available()`
# first and print why they skip. No number in this notebook comes from anywhere but a cell that ran.

# %%
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from optkit.core import bench, report, variant, verify
from optkit import data
from optkit.course.exercises import nb08 as exercises
from optkit.data import models
from optkit.course import claims, notebook
from optkit.runtimes import onnxrt
from optkit.runtimes import trt_engines
from optkit.core.errors import OptkitError

# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=08` lists them)
threads = None  # intra-op threads for torch and ONNX Runtime on the CPU; None: every core this process may use
calibration_batches = 4  # batches of 32 calibration-split images (Q/DQ scales and the TensorRT calibrator)
min_batch = 1  # smallest batch of the engines' optimization profile
opt_batch = 32  # batch size TensorRT tunes its kernels for
max_batch = 64  # largest batch of the optimization profile
test_samples = 1000  # test images for accuracy and parity checks
fp16_check_samples = 100  # test images for the FP16 check on the CPU (ORT runs fp16 slowly there)
max_time_s = 0.5  # time budget per latency measurement (seconds)
output_dir = "../runs/artifacts/08_tensorrt"

# %%
params = notebook.check_parameters(
    ranges={"threads": (1, 256), "calibration_batches": (1, 31), "min_batch": (1, 4096), "opt_batch": (1, 4096),
            "max_batch": (1, 4096), "test_samples": (100, 10_000), "fp16_check_samples": (10, 10_000),
            "max_time_s": (0.01, 600)})
env = notebook.setup(threads=threads)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 0 · Can TensorRT run here?
# `trt_engines.available()` checks, in order: the `tensorrt` module (its wheels come from NVIDIA's index), a
# full build (the `tensorrt-lean` and `tensorrt-dispatch` wheels run engines but cannot build them),
# and a CUDA device. Every later TensorRT cell uses it and prints the reason when it skips.

# %%
TRT_OK, TRT_WHY = trt_engines.available()
print(f"TensorRT usable: {TRT_OK} ({TRT_WHY})")
print("ONNX Runtime providers in this build:", ort.get_available_providers())
print("CUDA visible to torch:", torch.cuda.is_available())


def skip(step):
    """Print why a TensorRT step does not run here."""
    print(f"skipped {step}: {TRT_WHY}")

# %% [markdown]
# ## 1 · ONNX preparation (runs anywhere)
# ### 1.1 fp32 with a dynamic batch
# The reference ResNetCNN, exported as in notebook 06 and checked by ONNX Runtime. TensorRT's ONNX
# parser supports every operator it uses.

# %%
# NBCHECK_APPROX accuracy
fmnist = data.fashion_mnist()
cnn = models.pretrained("resnet_cnn")
x_test, y_test = np.array(fmnist.test.x[:test_samples]), np.array(fmnist.test.y[:test_samples])
fp32 = onnxrt.export(cnn, fmnist.example_batch(2), out / "resnet_cnn.onnx", overwrite=True)
info = onnxrt.check(fp32.path)
print(info)
fp32_runner = onnxrt.Runner(fp32.path, threads=env["torch_threads"])
fp32_acc = float(np.mean(fp32_runner(x_test).argmax(1) == y_test))
print(f"ORT fp32 accuracy on {len(x_test):,} test images: {100 * fp32_acc:.2f} %")

# %% [markdown]
# ### 1.2 FP16
# TensorRT 10 builds FP16 from this fp32 file with a builder flag (`BuilderFlag.FP16`: TensorRT may pick
# FP16 kernels layer by layer). TensorRT 11 removed that flag: networks are **strongly typed**, so
# the precision comes from the file. `onnxrt.convert_fp16` converts weights and computation to float16
# and keeps float32 inputs and outputs. Checked here in ORT on the CPU (slow there, fine for a check):

# %%
# NBCHECK_APPROX sqnr
fp16_path = onnxrt.convert_fp16(fp32.path, out / "resnet_cnn.fp16.onnx", overwrite=True)
p16 = onnxrt.verify(cnn, fp16_path, x_test[:fp16_check_samples], atol=float("inf"), min_top1=0.99, min_sqnr_db=40)
print(f"fp16 file {onnxrt.inspect(fp16_path).size_bytes / 1e6:.2f} MB (fp32 {info.size_bytes / 1e6:.2f} MB); "
      f"top-1 agreement with PyTorch {100 * p16.top1_agreement:.0f} %, SQNR {p16.sqnr_db:.0f} dB "
      f"on {fp16_check_samples} images")

# %% [markdown]
# ### 1.3 INT8 as an explicitly quantized (Q/DQ) model
# TensorRT's current INT8 path is **explicit quantization**: the ONNX file carries
# QuantizeLinear/DequantizeLinear pairs with their scales, and TensorRT fuses them into int8 kernels.
# TensorRT implements **symmetric** quantization only: zero points must be int8 zeros. ONNX Runtime's
# fast x86 choice (uint8 activations, notebook 06) is therefore *not* what TensorRT takes.
# `trt_engines.qdq_problems` says what is wrong with a Q/DQ file:

# %%
# NBCHECK_APPROX int8 sqnr
calib_x = np.array(fmnist.calib.x[:32 * calibration_batches])
calib = [calib_x[i:i + 32] for i in range(0, len(calib_x), 32)]
ort_style = onnxrt.quantize_static(fp32.path, out / "resnet_cnn.qdq_u8s8.onnx", calib, overwrite=True)
trt_style = onnxrt.quantize_static(fp32.path, out / "resnet_cnn.qdq_sym_int8.onnx", calib, activation_type="int8",
                               symmetric=True, overwrite=True)
for name, path in [("ORT's U8S8 (notebook 06)", ort_style), ("symmetric int8 for TensorRT", trt_style)]:
    problems = trt_engines.qdq_problems(path)
    print(f"{name:<30} {len(problems):>3} problems{': ' + problems[0] if problems else ''}")
p8 = onnxrt.verify(cnn, trt_style, x_test, atol=float("inf"), min_top1=0.97, min_sqnr_db=20)
int8_acc = float(np.mean(onnxrt.Runner(trt_style)(x_test).argmax(1) == y_test))
print(f"symmetric int8 Q/DQ in ORT: accuracy {100 * int8_acc:.2f} % (fp32 {100 * fp32_acc:.2f} %), "
      f"SQNR {p8.sqnr_db:.1f} dB, top-1 agreement {100 * p8.top1_agreement:.1f} %")

# %% [markdown]
# The same file that TensorRT will compile runs in ONNX Runtime, so its accuracy is known before any
# GPU is involved: the engine should agree with it, not with the fp32 model.
#
# **Exercise 1.** An optimization profile gives TensorRT three shapes per dynamic input: the smallest,
# the one to tune for, the largest. Write `profile_shapes(input_shape, min_batch, opt_batch, max_batch)`
# returning `(min_shape, opt_shape, max_shape)` for an input like `("batch", 1, 28, 28)`.

# %%
def profile_shapes(input_shape, min_batch, opt_batch, max_batch):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_profile_shapes(profile_shapes);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def profile_shapes(input_shape, min_batch, opt_batch, max_batch):
#     rest = tuple(input_shape[1:])
#     return tuple((b,) + rest for b in (min_batch, opt_batch, max_batch))
# ```
# </details>
#
# **Exercise 2.** Write `is_symmetric(path)`: True when every QuantizeLinear/DequantizeLinear zero
# point of the ONNX file is an int8 zero. (`onnx.load`, `onnx.numpy_helper.to_array` on the initializers.)

# %%
def is_symmetric(path):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_is_symmetric(is_symmetric);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def is_symmetric(path):
#     proto = onnx.load(str(path))
#     init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
#     for node in proto.graph.node:
#         if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
#             zp = init[node.input[2]]
#             if zp.dtype != np.int8 or (zp != 0).any():
#                 return False
#     return True
# ```
# </details>
#
# ## 2 · Building engines
# `trt_engines.build_engine` follows the TensorRT 10 Python API step by step:
#
# ```python
# builder = trt.Builder(logger)
# network = builder.create_network(flags)            # STRONGLY_TYPED for Q/DQ models (and all of 11.x)
# parser = trt.OnnxParser(network, logger)
# parser.parse_from_file("model.onnx")                # errors: parser.get_error(i)
# config = builder.create_builder_config()
# config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
# config.set_flag(trt.BuilderFlag.FP16)               # 10.x only; 11.x takes FP16 from the file
# config.clear_flag(trt.BuilderFlag.TF32)             # fp32 means fp32 (TF32 is on by default on Ampere+)
# profile = builder.create_optimization_profile()
# profile.set_shape("x", (1, 1, 28, 28), (32, 1, 28, 28), (64, 1, 28, 28))
# config.add_optimization_profile(profile)
# config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
# plan = builder.build_serialized_network(network, config)   # an IHostMemory: the engine's bytes
# ```
#
# The **timing cache** stores how long each candidate kernel took; a second build on the same GPU and
# TensorRT version reads it and skips most of the autotuning. Each precision gets its own engine:

# %%
# NBVAL_IGNORE_OUTPUT
engines = {}
if TRT_OK:
    import tensorrt as trt

    cache = out / "timing.cache"
    plans = [("fp32", fp32.path, "fp32"),
             ("fp16", fp16_path if int(trt.__version__.split(".")[0]) >= 11 else fp32.path, "fp16"),
             ("int8 Q/DQ", trt_style, "int8-qdq")]
    if int(trt.__version__.split(".")[0]) < 11:  # implicit INT8 with a calibrator: deprecated in 10.1, gone in 11
        plans.append(("int8 calibrator", fp32.path, "int8-calibrator"))
    for name, src, precision in plans:
        built = trt_engines.build_engine(src, out / f"resnet_cnn.{precision}.engine", precision=precision,
                                  min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                                  calibration=calib if precision == "int8-calibrator" else None,
                                  timing_cache=cache, overwrite=True)
        engines[name] = built
        print(built)
    rebuilt = trt_engines.build_engine(fp32.path, out / "resnet_cnn.fp32.rebuilt.engine", min_batch=min_batch,
                                opt_batch=opt_batch, max_batch=max_batch, timing_cache=cache, overwrite=True)
    print(f"fp32 rebuilt with the timing cache: {rebuilt.seconds:.1f} s (first build {engines['fp32'].seconds:.1f} s)")
else:
    skip("building the fp32, fp16 and int8 engines")

# %% [markdown]
# ## 3 · Running an engine, checked against ONNX Runtime
# TensorRT 10 replaced bindings by **named tensors**. `trt_engines.Engine` deserializes the plan with
# `trt.Runtime`, creates an execution context, and per call:
#
# ```python
# context.set_input_shape("x", x.shape)                # within the profile
# context.set_tensor_address("x", x_gpu.data_ptr())    # every input and output, by name
# context.set_tensor_address("output", out_gpu.data_ptr())
# context.execute_async_v3(stream.cuda_stream)         # enqueue on a CUDA stream
# stream.synchronize()
# ```
#
# Buffers are torch CUDA tensors, so no pycuda is needed. Each engine is checked with `onnxrt.verify`
# against the ONNX Runtime model it was built from (fp32 engines against fp32, the Q/DQ engine against
# the same Q/DQ file in ORT) on real test images, at a batch size inside the profile that is not
# `opt_batch`:

# %%
# NBVAL_IGNORE_OUTPUT
runners = {}
if TRT_OK:
    sources = {"fp32": (fp32.path, 1e-3, 1.0), "fp16": (fp32.path, float("inf"), 0.99),
               "int8 Q/DQ": (trt_style, float("inf"), 0.97), "int8 calibrator": (fp32.path, float("inf"), 0.97)}
    odd = max(min_batch, min(max_batch, opt_batch - 5))
    for name, built in engines.items():
        engine = trt_engines.Engine(built.path)
        runners[name] = engine
        src, atol, top1 = sources[name]
        batches = [x_test[i:i + odd] for i in range(0, len(x_test) - odd + 1, odd)]
        x_chk = np.concatenate(batches)
        p = onnxrt.verify(onnxrt.Runner(src), engine, x_chk, atol=atol, min_top1=top1, batch_size=odd)
        acc = float(np.mean(np.concatenate([engine(b).argmax(1) for b in batches]) == y_test[:len(x_chk)]))
        print(f"{name:<16} vs ORT: {p}; accuracy {100 * acc:.2f} %")
    print(runners["fp32"])
else:
    skip("running the engines and checking them against ONNX Runtime")

# %% [markdown]
# ## 4 · Latency on the GPU: TensorRT vs PyTorch vs ONNX Runtime
# The course's one measurement path, `variant.evaluate`, through `trt_engines.evaluate_runtimes`:
# every variant's accuracy and agreement with PyTorch fp32 on the test images, then one
# interleaved timing per batch size, inputs already on the GPU for TensorRT and PyTorch
# (`run_torch` leaves outputs there) and `sync=torch.cuda.synchronize`, so each timed call waits
# for its GPU work. ORT's CUDA provider joins when this onnxruntime build has it. The table is
# against the fastest float variant; its `peak_mem_mb` column is **CUDA memory** here: what one
# call allocates through torch (activations and output buffers; not the weights, not TensorRT's
# own workspace). Expect TensorRT to lead at the tuned batch size, and int8 to pay only where the
# GPU has int8 tensor cores and the batch is large enough to use them: the claim below says
# whether it did on this GPU.

# %%
# NBVAL_IGNORE_OUTPUT
if TRT_OK:
    has_ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    ort_gpu = {"ORT CUDA fp32": (onnxrt.Runner(fp32.path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]),
                                 "fp32")} if has_ort_cuda else {}
    gpu_records = trt_engines.evaluate_runtimes(
        variant.Workload("resnet_cnn", "Fashion-MNIST classification", f"Fashion-MNIST test (first {len(x_test):,})"),
        (x_test, y_test), batch_sizes=(1, opt_batch), device="cuda", sync=torch.cuda.synchronize,
        torch_models={"PyTorch fp32": (models.pretrained("resnet_cnn").to("cuda").eval(), torch.float32),
                      "PyTorch fp16": (models.pretrained("resnet_cnn").to("cuda").half().eval(), torch.float16)},
        engines={f"TensorRT {name}": e for name, e in runners.items()}, ort_runners=ort_gpu,
        max_time_s=max_time_s, env=env, progress=False)
    print("Measured on:", bench.environment_line(), "| peak_mem_mb: CUDA memory one call allocates")
    for (_, bs), frame in report.tables(gpu_records, baseline=report.fastest_float, columns=[
            "runtime", "latency_ms", "p95_ms", "speedup", "peak_mem_mb", "accuracy", "acc_delta", "agreement"]).items():
        print(f"batch {bs}")
        display(frame.round(3))
    at_opt = [r for r in gpu_records if r.batch_size == opt_batch]
    best_float = next(r for r in at_opt if r.name == report.fastest_float(at_opt))
    int8_rec = next((r for r in at_opt if r.name == "TensorRT int8 Q/DQ"), None)
    if int8_rec is not None:
        claims.faster(f"TensorRT int8 (Q/DQ) is faster than the best float variant at batch {opt_batch}", int8_rec,
                      best_float, depends=("gpu",))
else:
    skip("timing TensorRT against PyTorch and ONNX Runtime on the GPU")

# %% [markdown]
# ## 5 · An engine is tied to its GPU and its TensorRT version
# The plan holds kernels chosen for one GPU architecture (compute capability) by one TensorRT
# version. Another TensorRT version refuses it (`deserialize_cuda_engine` returns `None` and logs a
# version error) unless it was built with the version-compatible flag (at some speed cost), and a GPU
# of another architecture lacks its kernels unless built hardware-compatible. `build_engine` writes a
# `<engine>.json` beside each engine with the version and GPU; `trt_engines.check_compatible` reads it and
# refuses a mismatch *before* trying, with the reason. What it says for a machine with another
# TensorRT version and another GPU:

# %%
# NBVAL_IGNORE_OUTPUT
if TRT_OK:
    engine_path = engines["fp32"].path
    print("metadata:", trt_engines.engine_metadata(engine_path))
    print("compatible here:", bool(trt_engines.check_compatible(engine_path)))
    for target in ({"tensorrt_version": "9.9.9", "compute_capability": trt_engines.engine_metadata(engine_path)["compute_capability"]},
                   {"tensorrt_version": trt.__version__, "compute_capability": "75", "gpu": "Tesla T4"}):
        try:
            trt_engines.check_compatible(engine_path, **target)
        except OptkitError as exc:
            print("refused:", exc)
else:
    skip("reading an engine's version and GPU ties")

# %% [markdown]
# Ship the ONNX file (and, per GPU type, a timing cache), not only the engine: build the engine on
# the target, at install or first start. An engine is a cache, not a model format.
#
# ## 6 · Torch-TensorRT and TF-TRT, briefly
# - **Torch-TensorRT** (`torch_tensorrt.compile(model, ir="dynamo", inputs=[...], enabled_precisions=...)`,
#   or `torch.compile(model, backend="tensorrt")`) compiles the parts of a PyTorch graph TensorRT
#   supports into engines and leaves the rest to PyTorch: no ONNX step, and unsupported operators do
#   not block the whole model. Its engines have the same ties.
# - **TF-TRT** (`tf.experimental.tensorrt.Converter`) did the same inside TensorFlow graphs; it needs
#   a TensorFlow build with TensorRT and is not part of recent TensorFlow releases on pip. For
#   TensorFlow models today, convert to ONNX (tf2onnx, notebook 06) and build with TensorRT.
#
# Torch-TensorRT, where it is installed and a GPU is present:

# %%
# NBVAL_IGNORE_OUTPUT
try:
    import torch_tensorrt
except ImportError as exc:
    torch_tensorrt = None
    print(f"skipped Torch-TensorRT: not installed ({exc}); it ships on NVIDIA's index with a CUDA build of torch")
if torch_tensorrt is not None and TRT_OK:
    x_gpu = torch.from_numpy(np.ascontiguousarray(x_test[:opt_batch])).cuda()
    compiled = torch_tensorrt.compile(models.pretrained("resnet_cnn").cuda().eval(), ir="dynamo",
                                      inputs=[torch_tensorrt.Input(min_shape=(min_batch, 1, 28, 28),
                                                                   opt_shape=(opt_batch, 1, 28, 28),
                                                                   max_shape=(max_batch, 1, 28, 28))],
                                      enabled_precisions={torch.float16})
    with torch.inference_mode():
        p = verify.compare_outputs(models.pretrained("resnet_cnn").cuda()(x_gpu), compiled(x_gpu))
    print("Torch-TensorRT fp16 vs PyTorch fp32:", p)
elif torch_tensorrt is not None:
    skip("Torch-TensorRT")

# %% [markdown]
# ## 7 · When it goes wrong
# - **"The engine will not load on the other machine."** Section 5: another TensorRT version or GPU.
#   Rebuild from ONNX on the target; `check_compatible` says which tie broke.
# - **"TensorRT refused my int8 model"** (or built it in float): uint8 or non-zero zero points. ORT's
#   default x86 recipe produces exactly that (section 1.3 counted the problems); quantize with
#   `activation_type="int8", symmetric=True` for TensorRT.
# - **"`set_input_shape` failed"**: the batch is outside the optimization profile. `Engine` raises a
#   clear error; rebuild with a wider profile (several profiles are possible, one per range):

# %%
# NBVAL_IGNORE_OUTPUT
if TRT_OK:
    try:
        runners["fp32"](np.zeros((max_batch + 1, 1, 28, 28), np.float32))
    except Exception as exc:
        print(type(exc).__name__, ":", exc)
else:
    skip("feeding a batch outside the optimization profile")

# %% [markdown]
# - **"My calibrator code no longer works"**: `IInt8EntropyCalibrator2` and `BuilderFlag.INT8` are
#   deprecated since TensorRT 10.1 and removed in 11, with `BuilderFlag.FP16`. `build_engine` refuses
#   `precision="int8-calibrator"` on 11.x with that reason; move to Q/DQ models and FP16 files.
#
# ## Exercises
# Exercises 1 and 2 are in section 1.3. On a machine with a GPU and TensorRT:
#
# **3.** Build the int8 engine from the **U8S8** file `resnet_cnn.qdq_u8s8.onnx` instead of the symmetric
# one. What does TensorRT say, and how does `trt_engines.qdq_problems` predict it?
#
# **4.** Build with `opt_batch` 1 and with 32 and time both engines at batch 1 and 32. How much does
# tuning for the wrong batch size cost?
