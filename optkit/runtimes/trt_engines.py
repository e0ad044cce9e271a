"""TensorRT engines from ONNX: build (FP32, FP16, INT8 from Q/DQ or a calibrator), save, load, run.

TensorRT needs an NVIDIA GPU and NVIDIA's own wheels; neither is on the machines this course is
tested on, so every entry point first calls :func:`available`, which says *why* TensorRT cannot
run here (no ``tensorrt`` module, a lean/dispatch runtime without a builder, no CUDA device), and
raises :class:`TensorRTUnavailable` (an ``OptkitError``) with that reason. Nothing is imported at
module level: ``import optkit.runtimes.trt_engines`` is free on any machine.

What it offers, written against the TensorRT 10 Python API (named tensors, ``execute_async_v3``)
and its 11.x changes (strongly typed networks only; no FP16/INT8 builder flags, no calibrators):

- :func:`available` / :func:`require` - can TensorRT build and run here, and if not, why;
- :func:`build_engine` - ONNX parser -> network -> optimization profile for the dynamic batch
  (min/opt/max) -> builder config (FP16, INT8 from an explicitly quantized Q/DQ model, or INT8
  from a calibrator on 10.x), with a timing cache reused across builds; the serialized engine is
  written atomically with a JSON side file recording the TensorRT version and GPU it is tied to;
- :func:`check_compatible` - read that side file and refuse, with the reason, an engine built by
  another TensorRT version or for another GPU (deserializing it would fail or return ``None``);
- :class:`Engine` - deserialize and run with named tensors (``set_input_shape``,
  ``set_tensor_address``, ``execute_async_v3`` on a CUDA stream), buffers held as torch CUDA
  tensors so no pycuda is needed;
- :func:`qdq_problems` - why TensorRT would refuse or mis-build a Q/DQ ONNX file (non-zero zero
  points, uint8 activations, per-channel axes off the output channel); pure ONNX, runs anywhere;
- :func:`entropy_calibrator` - an ``IInt8EntropyCalibrator2`` over real batches (TensorRT 10.x;
  deprecated there since 10.1 and removed in 11 in favour of Q/DQ models);
- :func:`evaluate_runtimes` - PyTorch modules, TensorRT engines and ONNX Runtime runners in one
  ``variant.evaluate`` comparison on one device (inputs already there, ``sync`` for GPU timing,
  CUDA memory per call on a GPU); runs on a CPU too, with the engines left out.

Taught in 08_tensorrt.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from optkit.core.errors import OptkitError, check_choice, check_destination, check_path_exists

__all__ = [
    "TensorRTUnavailable",
    "available",
    "require",
    "PRECISIONS",
    "BuildResult",
    "build_engine",
    "engine_metadata",
    "check_compatible",
    "Engine",
    "entropy_calibrator",
    "qdq_problems",
    "evaluate_runtimes",
]

#: ``build_engine(precision=...)`` choices.
PRECISIONS = ("fp32", "fp16", "int8-qdq", "int8-calibrator")


class TensorRTUnavailable(OptkitError):
    """TensorRT cannot build or run on this machine; ``reason`` says why.

    Taught in 08_tensorrt.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__("tensorrt", "unavailable", reason,
                         "run on a machine with an NVIDIA GPU and `pip install tensorrt` from NVIDIA's index "
                         "(pypi.nvidia.com); the ONNX preparation in notebook 08 runs anywhere")


def _cuda_device() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False, "torch is not installed (optkit uses torch CUDA tensors as TensorRT buffers)"
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return False, f"no CUDA GPU is visible ({build}, torch.cuda.is_available() is False)"
    return True, torch.cuda.get_device_name(0)


def available() -> tuple[bool, str]:
    """``(True, "TensorRT <version> on <GPU>")`` when engines can be built and run here, else
    ``(False, reason)``. Checks, in order: the ``tensorrt`` module, a full build (``Builder`` and
    ``OnnxParser``; the lean/dispatch wheels have neither), a CUDA device.

    Taught in 08_tensorrt.
    """
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as e:
        return False, (f"the tensorrt Python package is not installed ({e.__class__.__name__}: {e}); its wheels "
                       "come from NVIDIA's index, which this machine cannot reach")
    except Exception as e:  # a broken install (missing libnvinfer) raises OSError and others
        return False, f"importing tensorrt failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        return False, (f"tensorrt {getattr(trt, '__version__', '?')} is a lean or dispatch runtime "
                       "(no Builder/OnnxParser): it can run engines but not build them")
    ok, device = _cuda_device()
    if not ok:
        return False, device
    return True, f"TensorRT {trt.__version__} on {device}"


def require() -> Any:
    """Return the ``tensorrt`` module, or raise :class:`TensorRTUnavailable` with the reason.

    Taught in 08_tensorrt.
    """
    ok, reason = available()
    if not ok:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt

    return trt


def _major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


@dataclass
class BuildResult:
    """What :func:`build_engine` wrote: the engine ``path``, its ``precision``, build ``seconds``,
    engine ``size_bytes``, the ``tensorrt_version`` and ``gpu`` it is tied to, the optimization
    profile ``(min, opt, max)`` batch sizes, and the ``timing_cache`` file used (if any).

    Taught in 08_tensorrt.
    """

    path: Path
    precision: str
    seconds: float
    size_bytes: int
    tensorrt_version: str
    gpu: str
    compute_capability: str
    batch_profile: tuple
    timing_cache: Path | None = None

    def __repr__(self) -> str:
        return (f"BuildResult({self.path.name}: {self.precision}, {self.size_bytes / 1e6:.2f} MB, built in "
                f"{self.seconds:.1f} s by TensorRT {self.tensorrt_version} for {self.gpu} "
                f"(sm_{self.compute_capability}), batch {self.batch_profile})")


class _Logger:
    """A TensorRT logger that keeps messages (so a failed parse or build can say why)."""

    def __new__(cls, trt, severity=None):
        class KeepingLogger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.messages: list[str] = []
                self.min_severity = severity if severity is not None else trt.ILogger.Severity.WARNING

            def log(self, sev, msg):
                if sev <= self.min_severity:
                    self.messages.append(f"[{sev.name}] {msg}")

        return KeepingLogger()


def _device_info() -> tuple[str, str]:
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}{minor}"


def build_engine(onnx_path, engine_path, *, precision: str = "fp32", min_batch: int = 1, opt_batch: int = 8,
                 max_batch: int = 32, calibration: Iterable | None = None, timing_cache=None,
                 workspace_gb: float = 2.0, tf32: bool = False, overwrite: bool = False) -> BuildResult:
    """Build a TensorRT engine from an ONNX file and save it (plus ``<engine>.json`` metadata).

    - ``precision``: ``"fp32"``; ``"fp16"`` (TensorRT 10: the FP16 builder flag lets TensorRT choose
      FP16 kernels; TensorRT 11 has no such flag: convert the ONNX model to FP16 first, e.g. with
      ModelOpt AutoCast, and the network is built strongly typed); ``"int8-qdq"`` (an explicitly
      quantized model with symmetric Q/DQ nodes, e.g. ``optkit.runtimes.onnxrt.quantize_static(...,
      activation_type="int8", symmetric=True)``; built strongly typed, so the Q/DQ placement decides
      precision); ``"int8-calibrator"`` (TensorRT 10 only: implicit INT8 with
      :func:`entropy_calibrator` over ``calibration`` batches).
    - One optimization profile covers batch sizes ``min_batch..max_batch``, tuned for ``opt_batch``
      (dim 0 of every input; other dimensions are taken from the model).
    - ``tf32=False`` clears ``BuilderFlag.TF32`` so that fp32 layers compute in fp32 (TensorRT's
      default lets Ampere and newer GPUs use TF32, with ~1e-3 relative error); pass True for speed.
    - ``timing_cache``: a file of kernel timings; loaded if it exists and saved after the build, so
      a rebuild on the same GPU and TensorRT version skips most autotuning.

    Raises :class:`TensorRTUnavailable` where TensorRT cannot run.

    Taught in 08_tensorrt.
    """
    trt = require()
    check_choice("precision", precision, PRECISIONS)
    src = check_path_exists("onnx_path", onnx_path)
    dst = check_destination(engine_path, overwrite=overwrite, parameter="engine_path")
    if not (isinstance(min_batch, int) and isinstance(opt_batch, int) and isinstance(max_batch, int)
            and 1 <= min_batch <= opt_batch <= max_batch):
        raise OptkitError("opt_batch", (min_batch, opt_batch, max_batch), "must satisfy 1 <= min <= opt <= max",
                          "pass e.g. min_batch=1, opt_batch=8, max_batch=32")
    major = _major(trt)
    if precision == "int8-calibrator" and major >= 11:
        raise OptkitError("precision", precision, f"calibrators were removed in TensorRT 11 (this is {trt.__version__})",
                          "quantize the ONNX model with Q/DQ nodes and use precision='int8-qdq'")
    if precision == "int8-calibrator" and calibration is None:
        raise OptkitError("calibration", None, "is required for precision='int8-calibrator'",
                          "pass a list of real input batches (numpy arrays)")

    logger = _Logger(trt)
    builder = trt.Builder(logger)
    strongly_typed = precision == "int8-qdq" or (precision == "fp16" and major >= 11)
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise OptkitError("onnx_path", str(src), "the TensorRT ONNX parser refused it: " + "; ".join(errors)[:500],
                          "check the opset (TensorRT 10 parses opset 9-20+), simplify with optkit.runtimes.onnxrt.simplify, "
                          "or replace unsupported operators")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16" and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on Ampere and newer fp32 layers would run in TF32 (10-bit mantissa)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if any(d < 0 for d in dims[1:]):
            raise OptkitError("onnx_path", str(src), f"input {tensor.name!r} has dynamic dimensions besides the "
                              f"batch ({dims})", "export with only the batch dynamic, or extend the profile by hand")
        profile.set_shape(tensor.name, [min_batch] + dims[1:], [opt_batch] + dims[1:], [max_batch] + dims[1:])
    config.add_optimization_profile(profile)
    if precision == "int8-calibrator":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = entropy_calibrator(calibration, cache_path=dst.with_suffix(".calib"))
        config.set_calibration_profile(profile)
    cache_path = Path(timing_cache).expanduser() if timing_cache is not None else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise OptkitError("onnx_path", str(src), "TensorRT could not build an engine: "
                          + " | ".join(logger.messages[-5:])[:600],
                          "read the messages; unsupported layers or too little workspace are the usual causes")
    from optkit.runtimes.model_files import atomic_write

    gpu, cc = _device_info()
    with atomic_write(dst, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(plan)
    meta = {"tensorrt_version": trt.__version__, "gpu": gpu, "compute_capability": cc, "precision": precision,
            "batch_profile": [min_batch, opt_batch, max_batch], "onnx": src.name}
    with atomic_write(_meta_path(dst), overwrite=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if cache_path is not None:
        with atomic_write(cache_path, overwrite=True) as tmp:
            with open(tmp, "wb") as f:
                f.write(config.get_timing_cache().serialize())
    return BuildResult(path=dst, precision=precision, seconds=seconds, size_bytes=dst.stat().st_size,
                       tensorrt_version=trt.__version__, gpu=gpu, compute_capability=cc,
                       batch_profile=(min_batch, opt_batch, max_batch), timing_cache=cache_path)


def _meta_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def engine_metadata(engine_path) -> dict:
    """The ``<engine>.json`` side file :func:`build_engine` wrote (TensorRT version, GPU, precision,
    batch profile). Reading it needs neither TensorRT nor a GPU.

    Taught in 08_tensorrt.
    """
    p = check_path_exists("engine_path", engine_path)
    meta = _meta_path(p)
    if not meta.is_file():
        raise OptkitError("engine_path", str(p), f"has no metadata file {meta.name}",
                          "build engines with optkit.runtimes.trt_engines.build_engine, or record version and GPU yourself")
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise OptkitError("engine_path", str(meta), f"is not valid JSON ({e.msg})", "rebuild the engine") from None


def check_compatible(engine_path, *, tensorrt_version: str | None = None, gpu: str | None = None,
                     compute_capability: str | None = None) -> dict:
    """Refuse an engine that this TensorRT or GPU cannot load, before trying, with the reason.

    A serialized engine holds kernels chosen for one GPU architecture by one TensorRT version:
    another version refuses the plan (``deserialize_cuda_engine`` returns ``None`` and logs a
    "version" error) unless it was built version-compatible, and another compute capability
    lacks its kernels unless built hardware-compatible. Without arguments the running TensorRT
    and GPU are compared (needs both); pass them to check for a target machine. Returns the
    metadata.

    Taught in 08_tensorrt.
    """
    meta = engine_metadata(engine_path)
    if tensorrt_version is None or compute_capability is None:
        trt = require()
        tensorrt_version = tensorrt_version or trt.__version__
        if compute_capability is None:
            gpu_name, compute_capability = _device_info()
            gpu = gpu or gpu_name
    problems = []
    if str(meta.get("tensorrt_version")) != str(tensorrt_version):
        problems.append(f"built by TensorRT {meta.get('tensorrt_version')}, this is {tensorrt_version}")
    if str(meta.get("compute_capability")) != str(compute_capability):
        problems.append(f"built for sm_{meta.get('compute_capability')} ({meta.get('gpu')}), this GPU is "
                        f"sm_{compute_capability}{f' ({gpu})' if gpu else ''}")
    if problems:
        raise OptkitError("engine_path", str(engine_path), "was " + "; ".join(problems),
                          "rebuild the engine from its ONNX file on the target machine (keep the ONNX file "
                          "and a timing cache, not only the engine)")
    return meta


_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
                 "BOOL": "bool", "BF16": "bfloat16", "UINT8": "uint8"}


class Engine:
    """A deserialized TensorRT engine, callable with numpy arrays or torch tensors.

    ``Engine(path)`` loads the plan with ``trt.Runtime`` (after :func:`check_compatible`) and
    creates one execution context. ``engine(x)`` / ``engine(ids, mask)`` / ``engine({"x": x})``
    sets each input's shape (``set_input_shape``, within the optimization profile), points every
    named tensor at a torch CUDA buffer (``set_tensor_address``), runs ``execute_async_v3`` on a
    CUDA stream, waits, and returns the first output as numpy (``run_all``: every output;
    ``run_torch``: outputs left on the GPU, for timing without copies).

    Taught in 08_tensorrt.
    """

    def __init__(self, path, *, check: bool = True):
        trt = require()
        import torch

        self.path = check_path_exists("path", path)
        self.metadata = check_compatible(self.path) if check else {}
        self._logger = _Logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise OptkitError("path", str(self.path), "TensorRT could not deserialize it: "
                              + " | ".join(self._logger.messages[-3:])[:500],
                              "rebuild the engine with this TensorRT version on this GPU")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: _TORCH_DTYPES.get(self.engine.get_tensor_dtype(n).name, "float32") for n in names}

    def _inputs(self, args: tuple) -> dict:
        import numpy as np
        import torch

        if len(args) == 1 and isinstance(args[0], dict):
            given = args[0]
        else:
            if len(args) != len(self.input_names):
                raise OptkitError("inputs", f"{len(args)} arrays", f"the engine takes {self.input_names}",
                                  "pass one array per input, in this order")
            given = dict(zip(self.input_names, args))
        out = {}
        for name in self.input_names:
            if name not in given:
                raise OptkitError("inputs", sorted(given), f"lack {name!r}", f"pass {self.input_names}")
            value = given[name]
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
            want = getattr(torch, self._dtypes[name])
            if t.dtype != want:
                raise OptkitError(f"input {name!r}", str(t.dtype), f"the engine expects {want}",
                                  f"convert it (x.astype(np.{self._dtypes[name]}))")
            out[name] = t.to("cuda", non_blocking=True).contiguous()
        return out

    def run_torch(self, *args: Any) -> list:
        """Run and return every output as a torch CUDA tensor (no copy back to the host)."""
        import torch

        feeds = self._inputs(args)
        for name, t in feeds.items():
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise OptkitError(f"input {name!r}", tuple(t.shape), "is outside the engine's optimization profile "
                                  f"{self.metadata.get('batch_profile', '')}",
                                  "pass a batch size within the profile, or rebuild with a wider profile")
            self.context.set_tensor_address(name, t.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            buf = torch.empty(shape, dtype=getattr(torch, self._dtypes[name]), device="cuda")
            self.context.set_tensor_address(name, buf.data_ptr())
            outputs.append(buf)
        self.stream.wait_stream(torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise OptkitError("engine", str(self.path), "execute_async_v3 failed",
                              "check the inputs' shapes against the optimization profile")
        self.stream.synchronize()
        return outputs

    def run_all(self, *args: Any) -> list:
        return [o.float().cpu().numpy() for o in self.run_torch(*args)]

    def __call__(self, *args: Any):
        return self.run_all(*args)[0]

    def __repr__(self) -> str:
        meta = self.metadata
        return (f"Engine({self.path.name}: inputs {self.input_names}, outputs {self.output_names}, "
                f"{meta.get('precision', '?')}, TensorRT {meta.get('tensorrt_version', '?')}, {meta.get('gpu', '?')})")


def entropy_calibrator(batches: Iterable, *, cache_path=None):
    """An ``IInt8EntropyCalibrator2`` over real input batches (numpy arrays of one input, or dicts
    name -> array), for implicit INT8 on TensorRT 10.x. Deprecated since TensorRT 10.1 and removed
    in 11: prefer an explicitly quantized (Q/DQ) ONNX model. The calibration table is cached at
    ``cache_path`` so a rebuild skips calibration.

    Taught in 08_tensorrt.
    """
    trt = require()
    import numpy as np
    import torch

    items = list(batches)
    if not items:
        raise OptkitError("batches", batches, "yielded no batches", "pass a few hundred real calibration examples")
    first = items[0]
    batch_size = int((next(iter(first.values())) if isinstance(first, dict) else first).shape[0])

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._it = iter(items)
            self._keep: list = []

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names: Sequence[str]):
            item = next(self._it, None)
            if item is None:
                return None
            feeds = item if isinstance(item, dict) else {names[0]: item}
            self._keep = [torch.from_numpy(np.ascontiguousarray(feeds[n])).cuda() for n in names]
            return [int(t.data_ptr()) for t in self._keep]

        def read_calibration_cache(self):
            if cache_path is not None and Path(cache_path).is_file():
                return Path(cache_path).read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path is not None:
                Path(cache_path).write_bytes(bytes(cache))

    return EntropyCalibrator()


def _asdict(result: BuildResult) -> dict:  # pragma: no cover - convenience for records
    d = asdict(result)
    d["path"] = str(d["path"])
    return d


def qdq_problems(path) -> list[str]:
    """Reasons TensorRT cannot take a Q/DQ ONNX model as it is (an empty list: ready).

    TensorRT implements only **symmetric** int8 quantization: every ``QuantizeLinear`` /
    ``DequantizeLinear`` zero point must be 0 and of type int8 (uint8 activations, ONNX Runtime's
    fast x86 choice, are refused). Quantize for TensorRT with
    ``optkit.runtimes.onnxrt.quantize_static(..., activation_type="int8", symmetric=True)``. Needs only onnx.

    Taught in 08_tensorrt.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    p = check_path_exists("path", path)
    try:
        proto = onnx.load(str(p))
    except Exception as e:
        raise OptkitError("path", str(p), f"is not a readable ONNX model ({type(e).__name__})",
                          "pass an ONNX file written by optkit.runtimes.onnxrt.quantize_static") from None
    init = {t.name: t for t in proto.graph.initializer}
    problems: list[str] = []
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return ["no QuantizeLinear/DequantizeLinear nodes: the model is not explicitly quantized"]
    for node in qdq:
        if len(node.input) < 3 or not node.input[2]:
            continue  # no zero point given: 0 (uint8 by the spec, but TensorRT reads it as int8 0)
        zp = init.get(node.input[2])
        if zp is None:
            problems.append(f"{node.name or node.op_type}: zero point {node.input[2]!r} is computed, not a constant")
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype == np.uint8:
            problems.append(f"{node.name or node.op_type}: uint8 zero point (TensorRT takes int8 only)")
        elif np.any(arr != 0):
            problems.append(f"{node.name or node.op_type}: non-zero zero point (asymmetric; TensorRT is symmetric only)")
    return sorted(set(problems))


_ENGINE_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8-qdq": "int8", "int8-calibrator": "int8"}


def evaluate_runtimes(workload: Any, data: Any, *, batch_sizes: Sequence[int], torch_models: Any = None,
                      engines: Any = None, ort_runners: Any = None, device: str = "cuda", sync: Any = None,
                      memory: bool = True, **evaluate_kw: Any) -> list:
    """PyTorch, TensorRT and ONNX Runtime variants of one model in one interleaved ``variant.evaluate``.

    - ``torch_models``: ``{name: (module, torch dtype)}``, fed tensors already on ``device`` in that
      dtype (outputs stay there);
    - ``engines``: ``{name: Engine}``, fed ``device`` tensors through :meth:`Engine.run_torch`
      (outputs stay on the GPU), precision read from the engine's side file;
    - ``ort_runners``: ``{name: (runner, precision)}``, fed numpy arrays (``onnxrt.Runner`` with
      the CUDA provider, or the CPU one).

    ``data`` is ``(x, y)`` numpy (accuracy and parity against the first variant); each variant's
    timing batches (``x[:bs]`` for each of ``batch_sizes``) are prepared once, in the form it takes,
    so no host-to-device copy is timed for PyTorch and TensorRT. ``sync`` (``torch.cuda.synchronize``
    on a GPU) makes each timed call wait for its GPU work. On CUDA, ``peak_mem_bytes`` is the CUDA
    memory one call allocates through torch (``bench.peak_memory(...).cuda_peak_bytes`` minus what
    was allocated before: activations and output buffers; not the weights, not TensorRT's own
    workspace); on a CPU it stays what ``variant.evaluate`` measures (resident memory). Other
    keywords (``max_time_s``, ``env`` ...) go to ``variant.evaluate``. Returns its Records.

    Taught in 08_tensorrt.
    """
    import numpy as np
    import torch

    from optkit.core import bench, variant

    check_choice("device", str(device).split(":")[0], ["cuda", "cpu"])
    cuda = str(device).startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise OptkitError("device", device, "has no CUDA device here", "pass device='cpu', or run on a GPU")
    x, y = data
    x = np.ascontiguousarray(x)
    sizes = sorted({int(b) for b in batch_sizes})

    def on_device(dtype: Any) -> Any:
        return lambda xb: torch.from_numpy(np.ascontiguousarray(xb)).to(device, dtype)

    items, convert = [], {}
    for name, (module, dtype) in dict(torch_models or {}).items():
        to = on_device(dtype)
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
        items.append(variant.Variant(name, module, runtime=f"pytorch eager ({device})", precision=precision,
                                     inputs={b: to(x[:b]) for b in sizes}))
        convert[name] = to
    for name, engine in dict(engines or {}).items():
        to = on_device(torch.float32)
        precision = _ENGINE_PRECISION.get(getattr(engine, "metadata", {}).get("precision"), "fp32")
        items.append(variant.Variant(name, lambda t, e=engine: e.run_torch(t)[0], runtime="tensorrt",
                                     precision=precision, artifact=getattr(engine, "path", None),
                                     technique=f"TensorRT engine ({precision})", inputs={b: to(x[:b]) for b in sizes}))
        convert[name] = to
    for name, (runner, precision) in dict(ort_runners or {}).items():
        items.append(variant.Variant(name, runner, runtime="onnxruntime", precision=precision, technique="ONNX export",
                                     inputs={b: x[:b] for b in sizes}))
    records = variant.evaluate(items, workload, data=(x, y), inputs={b: x[:b] for b in sizes}, convert=convert,
                               sync=sync, memory=memory, **evaluate_kw)
    if cuda and memory:
        by_name = {v.name: v for v in items}
        for r in records:
            v = by_name[r.name]
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            with torch.inference_mode():
                peak = bench.peak_memory(v.predict, v.inputs[r.batch_size]).cuda_peak_bytes
            r.peak_mem_bytes = None if peak is None else max(0, peak - before)
            r.extra["peak_memory"] = "CUDA memory one call allocates through torch"
    return records
