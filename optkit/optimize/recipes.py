"""The capstone's recipe registry: what a recipe is, and the recipes optkit tries on each format.

A :class:`Recipe` is a small frozen record: a ``name``, the model ``formats`` it applies to, the
``runtime`` it produces a candidate for, and a ``build(context) -> Candidate`` function. A
:class:`Candidate` is something that can be called on a batch (``run(feed) -> outputs``), with the
artifact it wrote (if any), its size and how long it took to build. :func:`register` adds a
recipe of your own; :func:`recipes_for` lists the ones that apply to a format.

A recipe that cannot apply here raises :class:`RecipeSkipped` with the reason (no GPU, nothing to
quantize); any other exception is a failure. :class:`optkit.optimize.Optimization` catches both
per recipe, reports the reason and goes on with the others.

Built-in recipes, by format:

- ONNX: ORT offline graph optimization, ORT with one thread, ORT dynamic int8 (MatMul/Gemm/RNN
  weights), ORT static QDQ int8 (per-channel, uint8 activations, calibrated on your data), fp16
  and TensorRT (skipped with a reason unless a GPU and the provider are present);
- torch.export programs (``.pt2``): ``torch.compile``, PT2E static int8 and PT2E dynamic int8
  (x86 inductor quantizer, compiled with freezing), bf16 (where the CPU or GPU has it), and the
  ONNX Runtime route (export to ONNX, then fp32 and static int8 in ORT);
- Keras: XLA (``jit_compile``), TFLite float32, dynamic-range, float16 and full int8;
- TFLite: LiteRT with one thread.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from optkit.runtimes import formats as _formats
from optkit.core import sizes
from optkit.core.errors import OptkitError

__all__ = [
    "FORMATS", "RUNTIMES", "Recipe", "Candidate", "Context", "RecipeSkipped",
    "register", "unregister", "recipes_for", "all_recipes", "get_recipe",
]

#: Model formats the capstone reads -> what they are (from the one registry, optkit.runtimes.formats).
FORMATS = {key: _formats.FORMATS[key].description for key in ("onnx", "torch_export", "keras", "tflite")}
#: Runtimes a recipe can produce a candidate for (the ``runtimes`` parameter filters by these).
RUNTIMES = ("onnxruntime", "pytorch", "tensorflow", "tflite", "tensorrt")


class RecipeSkipped(Exception):
    """Raised by a recipe's ``build`` when it does not apply to this model or machine; the message
    says why (e.g. "no GPU: fp16 pays only on a GPU")."""


@dataclass
class Candidate:
    """One way of running the model, ready to be verified and timed.

    ``run(feed)`` takes a dict ``{input name: np.ndarray batch}`` and returns the list of outputs
    as numpy arrays. ``artifact`` is the file or folder the recipe wrote (None when the recipe
    changes how the model is run, not the file: thread counts, ``torch.compile``); ``size_bytes``
    is what would ship. ``notes`` are sentences for the report; ``info`` recipe details.

    Taught in 10_optimize_your_own_model.
    """

    name: str
    recipe: str
    technique: str
    runtime: str
    run: Callable[[dict], list]
    artifact: Path | None = None
    size_bytes: int | None = None
    build_s: float = 0.0
    notes: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __call__(self, feed: dict) -> list:
        return self.run(feed)

    def __repr__(self) -> str:
        size = "?" if self.size_bytes is None else f"{self.size_bytes / 1e6:.2f} MB"
        where = self.artifact.name if self.artifact is not None else "no new file"
        return (f"Candidate({self.name!r}: {self.technique}, {self.runtime}, {size}, {where}, "
                f"built in {self.build_s:.1f} s)")


@dataclass
class Context:
    """What a recipe's ``build`` gets: the model (``summary``: format, path, inputs, outputs), the
    data (``data``: calibration batches, inputs), a folder for artifacts, the thread count, the
    baseline candidate and a ``cache`` shared by recipes (an ONNX export of a torch program, say).

    ``artifact(filename)`` returns a fresh path inside the artifacts folder (never an existing
    file, never the input model).

    Taught in 10_optimize_your_own_model.
    """

    summary: Any
    data: Any
    artifacts: Path
    threads: int
    baseline: Candidate | None = None
    cache: dict = field(default_factory=dict)
    gpu: bool = False

    def artifact(self, filename: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / filename
        stem, suffix = path.name[: -len("".join(path.suffixes)) or None], "".join(path.suffixes)
        i = 2
        while path.exists():
            path = self.artifacts / f"{stem}-{i}{suffix}"
            i += 1
        if path.resolve() == Path(self.summary.path).resolve():  # pragma: no cover - a fresh folder
            raise OptkitError("output_dir", str(self.artifacts), "would write over the input model",
                              "choose an output_dir that is not the model's own folder")
        return path

    def calibration(self, batch_size: int = 16) -> list[dict]:
        """Calibration feeds (dicts of arrays) from the held-out calibration rows of the data."""
        return self.data.calibration(batch_size=batch_size)


@dataclass(frozen=True)
class Recipe:
    """A way to make a model faster or smaller: ``build(context) -> Candidate``.

    ``formats``: the model formats it applies to (keys of :data:`FORMATS`); ``runtime``: one of
    :data:`RUNTIMES`; ``technique``: a few words for tables; ``description``: one sentence for
    the report. Register your own with :func:`register`.

    Taught in 10_optimize_your_own_model.
    """

    name: str
    formats: tuple
    runtime: str
    technique: str
    build: Callable[[Context], Candidate]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise OptkitError("name", self.name, "must be a non-empty name without spaces",
                              "use e.g. 'ort-int8-static-entropy'")
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        unknown = [f for f in formats if f not in FORMATS]
        if not formats or unknown:
            raise OptkitError("formats", self.formats, "holds no known model format" if not unknown
                              else f"holds unknown formats {unknown}", "use some of " + ", ".join(FORMATS))
        object.__setattr__(self, "formats", formats)
        if self.runtime not in RUNTIMES:
            raise OptkitError("runtime", self.runtime, "is not a known runtime", "use one of " + ", ".join(RUNTIMES))
        if not callable(self.build):
            raise OptkitError("build", self.build, "is not callable", "pass a function build(context) -> Candidate")

    def applies_to(self, fmt: str) -> bool:
        """Whether this recipe is tried on models of format ``fmt``."""
        return fmt in self.formats

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}: {self.technique}, {self.runtime}, for {', '.join(self.formats)})"


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Add ``recipe`` to the registry (tried in registration order); ``replace=True`` swaps a
    recipe of the same name. Returns the recipe.

    Taught in 10_optimize_your_own_model.
    """
    if not isinstance(recipe, Recipe):
        raise OptkitError("recipe", type(recipe).__name__, "is not a Recipe",
                          "build one with optkit.optimize.Recipe(name, formats, runtime, technique, build)")
    if recipe.name in _REGISTRY and not replace:
        raise OptkitError("recipe", recipe.name, "is already registered", "pick another name, or pass replace=True")
    _REGISTRY[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    """Remove the recipe called ``name`` (an unknown name is an OptkitError)."""
    get_recipe(name)
    del _REGISTRY[name]


def get_recipe(name: str) -> Recipe:
    """The registered recipe called ``name``."""
    if name not in _REGISTRY:
        raise OptkitError("recipes", name, "is not a registered recipe", "use some of " + ", ".join(_REGISTRY))
    return _REGISTRY[name]


def all_recipes() -> list[Recipe]:
    """Every registered recipe, in the order they are tried."""
    return list(_REGISTRY.values())


def recipes_for(fmt: str, runtimes: Sequence[str] | None = None, names: Sequence[str] | None = None) -> list[Recipe]:
    """The registered recipes that apply to format ``fmt``, optionally only those producing one
    of ``runtimes`` and only those called one of ``names``.

    Taught in 10_optimize_your_own_model.
    """
    if names is not None:
        for n in names:
            get_recipe(n)
    out = []
    for r in _REGISTRY.values():
        if not r.applies_to(fmt):
            continue
        if runtimes is not None and r.runtime not in runtimes:
            continue
        if names is not None and r.name not in names:
            continue
        out.append(r)
    return out


# =============================================================================== helpers

def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:limit] if text else "") or type(e).__name__


def _size(path: Path) -> int:
    from optkit.runtimes.model_files import file_size

    return int(file_size(path))


# ------------------------------------------------------------------------------- ONNX Runtime

#: ONNX operators whose constant weights int8 quantization turns into integer arithmetic.
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention", "MultiHeadAttention"}
_DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]


def _weighted_ops(path: Path, kinds: Iterable[str]) -> dict[str, int]:
    """Operators of ``kinds`` in the graph with at least one constant (initializer) input."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    consts = {t.name for t in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    kinds = set(kinds)
    found: dict[str, int] = {}
    for n in proto.graph.node:
        if n.op_type in kinds and any(i in consts for i in n.input[1:] or n.input):
            found[n.op_type] = found.get(n.op_type, 0) + 1
    return found


def _require_weights(ctx: Context, path: Path, kinds: Iterable[str]) -> dict[str, int]:
    found = _weighted_ops(path, kinds)
    if not found:
        from optkit.runtimes.onnxrt import op_counts

        have = ", ".join(sorted(op_counts(path))[:12]) or "none"
        raise RecipeSkipped(f"nothing to quantize: no {'/'.join(sorted(set(kinds)))} with constant weights "
                            f"(the model's operators: {have})")
    return found


def _quantized_ops(path: Path) -> dict[str, int]:
    from optkit.runtimes.onnxrt import op_counts

    return {k: v for k, v in op_counts(path).items()
            if "Quant" in k or "Integer" in k or k.startswith("QLinear") or k in ("QGemm", "QAttention")}


def ort_candidate(ctx: Context, name: str, recipe: str, technique: str, path: Path, *,
                  threads: int | None = None, artifact: bool = True, notes: Sequence[str] = (),
                  info: dict | None = None, providers: Sequence | None = None) -> Candidate:
    """A :class:`Candidate` running the ONNX file ``path`` in an ONNX Runtime session
    (``threads`` intra-op threads, default the context's). Records how long the session took to
    load (``info["load_s"]``).

    Taught in 10_optimize_your_own_model.
    """
    from optkit.runtimes import onnxrt as ox

    start = time.perf_counter()
    runner = ox.Runner(path, threads=threads or ctx.threads, providers=providers)
    load_s = time.perf_counter() - start
    seen: dict = {}

    def run(feed: dict) -> list:
        # the Runner checks names, ranks and dtypes (a clear error naming the input); once a feed
        # has passed, later calls with the same arrays go straight to the session, so timing
        # measures ONNX Runtime, not the checks
        if seen.get("feed") is not feed:
            out = runner.run_all(feed)
            seen["feed"] = feed
            return out
        return runner.session.run(None, feed)

    return Candidate(name=name, recipe=recipe, technique=technique, runtime="onnxruntime",
                     run=run, artifact=path if artifact else None,
                     size_bytes=_size(path), notes=list(notes),
                     info={"load_s": load_s, "threads": threads or ctx.threads, **(info or {})})


def _onnx_source(ctx: Context) -> Path:
    """The ONNX file the ORT recipes work on: the model itself, or the export of a torch program."""
    if ctx.summary.format == "onnx":
        return Path(ctx.summary.path)
    if "onnx_export" not in ctx.cache:
        ctx.cache["onnx_export"] = _export_program_to_onnx(ctx)
    result = ctx.cache["onnx_export"]
    if isinstance(result, Exception):
        raise RecipeSkipped(f"the torch program could not be exported to ONNX: {_first_line(result)}")
    return result


def _ort_optimized(ctx: Context) -> Candidate:
    from optkit.runtimes import onnxrt as ox

    dst = ox.optimize(_onnx_source(ctx), ctx.artifact("model.ort-optimized.onnx"), level="extended")
    return ort_candidate(ctx, "ort-optimized", "ort-optimized", "graph optimized offline (extended)", dst,
                         notes=["ONNX Runtime's fusions saved into the file: the session loads faster; "
                                "run-time speed matches the default session, which applies them at load."])


def _ort_one_thread(ctx: Context) -> Candidate:
    if ctx.threads <= 1:
        raise RecipeSkipped("the baseline already runs on one thread")
    src = _onnx_source(ctx)
    return ort_candidate(ctx, "ort-1-thread", "ort-1-thread", "fp32, 1 intra-op thread", src, threads=1,
                         artifact=False, notes=["Same file, one thread: slower per call on a quiet machine, "
                                                "but leaves the other cores to other work (and wins when "
                                                "the cores are already busy)."])


def _ort_int8_dynamic(ctx: Context) -> Candidate:
    from optkit.runtimes import onnxrt as ox

    src = _onnx_source(ctx)
    found = _require_weights(ctx, src, _DYNAMIC_OPS)
    dst = ox.quantize_dynamic(src, ctx.artifact("model.int8-dynamic.onnx"), op_types=_DYNAMIC_OPS)
    if not _quantized_ops(dst):
        raise RecipeSkipped("ONNX Runtime's dynamic quantizer left every operator in float")
    return ort_candidate(ctx, "ort-int8-dynamic", "ort-int8-dynamic", "int8 dynamic (MatMul/Gemm/RNN)", dst,
                         info={"quantized_ops": found},
                         notes=["int8 weights, activations quantized per batch at run time; convolutions are "
                                "left in float (ORT's dynamic ConvInteger is slower than fp32 on x86)."])


def _ort_int8_static(ctx: Context) -> Candidate:
    from optkit.runtimes import onnxrt as ox

    src = _onnx_source(ctx)
    found = _require_weights(ctx, src, _WEIGHTED_OPS)
    calib = ctx.calibration(batch_size=16)
    dst = ox.quantize_static(src, ctx.artifact("model.int8-static-qdq.onnx"), calib, per_channel=True,
                             activation_type="uint8", weight_type="int8", method="minmax")
    if "QuantizeLinear" not in ox.op_counts(dst):
        raise RecipeSkipped("ONNX Runtime's static quantizer inserted no QuantizeLinear node")
    n = sum(len(next(iter(b.values()))) for b in calib)
    return ort_candidate(ctx, "ort-int8-static", "ort-int8-static", "int8 static QDQ (per-channel, U8S8)", dst,
                         info={"quantized_ops": found, "calibration_examples": n},
                         notes=[f"Activation ranges calibrated on {n} of your examples (min-max); uint8 "
                                "activations with int8 per-channel weights, the fast combination on x86."])


def _ort_fp16(ctx: Context) -> Candidate:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RecipeSkipped("no GPU: this onnxruntime build has no CUDA provider, and fp16 pays only on a GPU "
                            "(a CPU without native fp16 arithmetic emulates it)")
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from optkit.runtimes.model_files import save_onnx

    src = _onnx_source(ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    dst = save_onnx(half, ctx.artifact("model.fp16.onnx"))
    return ort_candidate(ctx, "ort-fp16", "ort-fp16", "fp16 weights and compute (GPU)", dst,
                         providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def _tensorrt(ctx: Context) -> Candidate:
    import importlib.util

    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        why = ("TensorRT is not installed" if importlib.util.find_spec("tensorrt") is None
               else "this onnxruntime build has no TensorRT provider")
        raise RecipeSkipped(f"{why}: it needs an NVIDIA GPU and NVIDIA's own package index")
    src = _onnx_source(ctx)
    return ort_candidate(ctx, "tensorrt-fp16", "tensorrt", "TensorRT fp16 (via ORT)", src, artifact=False,
                         providers=[("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                                    "CUDAExecutionProvider", "CPUExecutionProvider"])


# ------------------------------------------------------------------------------- PyTorch (torch.export)

def _torch_inputs(ctx: Context, feed: dict) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in ctx.summary.inputs)


def _flat_numpy(out: Any) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach().float().cpu().numpy() if out.is_floating_point() else out.detach().cpu().numpy()]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        flat = []
        for o in out:
            flat += _flat_numpy(o)
        return flat
    return [np.asarray(out)]


def torch_runner(ctx: Context, module: Callable, *, autocast: str | None = None) -> Callable[[dict], list]:
    """``run(feed)`` for a torch module or compiled function taking the model's inputs in order
    (under ``inference_mode``, optionally under ``torch.autocast`` to ``autocast`` dtype).

    Taught in 10_optimize_your_own_model.
    """
    import torch

    def run(feed: dict) -> list:
        args = _torch_inputs(ctx, feed)
        with torch.inference_mode():
            if autocast:
                device = "cuda" if ctx.gpu else "cpu"
                with torch.autocast(device, dtype=getattr(torch, autocast)):
                    return _flat_numpy(module(*args))
            return _flat_numpy(module(*args))

    return run


def _program(ctx: Context):
    """A fresh copy of the torch program's module (recipes must not change the baseline's)."""
    ep = ctx.cache.get("program")
    if ep is None:  # pragma: no cover - set when the model is loaded
        raise RecipeSkipped("no torch program loaded")
    return copy.deepcopy(ep.module())


def _example(ctx: Context) -> tuple:
    return _torch_inputs(ctx, ctx.data.calibration(batch_size=2)[0])


def _torch_compile(ctx: Context) -> Candidate:
    import torch

    module = _program(ctx)
    compiled = torch.compile(module, dynamic=False)
    return Candidate(name="torch-compile", recipe="torch-compile", technique="torch.compile (inductor)",
                     runtime="pytorch", run=torch_runner(ctx, compiled), size_bytes=ctx.summary.size_bytes,
                     notes=["Same program, compiled by inductor for each batch size on first use (seconds); "
                            "no new file: compile at load time in your service."])


def _pt2e(ctx: Context, dynamic: bool) -> Candidate:
    import torch

    from optkit.techniques import quantize as q

    with q.quiet_torchao():
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    ops = ctx.summary.op_counts
    linear = sum(v for k, v in ops.items() if "linear" in k or "addmm" in k or k.endswith("mm.default"))
    conv = sum(v for k, v in ops.items() if "conv" in k)
    if dynamic and not linear:
        raise RecipeSkipped("nothing to quantize: dynamic int8 handles linear layers and the program has none")
    if not dynamic and not (linear or conv):
        raise RecipeSkipped("nothing to quantize: the program has no convolution or linear layer")
    module = _program(ctx)
    from optkit.techniques.quantize import int8_reduce_range

    config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic, reduce_range=int8_reduce_range())
    quantizer = xiq.X86InductorQuantizer().set_global(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(module, quantizer)
        n = 0
        with torch.no_grad():
            for feed in ctx.calibration(batch_size=16):
                args = _torch_inputs(ctx, feed)
                prepared(*args)
                n += len(args[0])
        converted = convert_pt2e(prepared)
    _drop_unused_attributes(converted)
    artifact, size, notes = None, sizes.model_size(converted), []
    try:  # the int8 program as a .pt2 file, what you would ship
        from optkit.runtimes.model_files import save_program

        batch = torch.export.Dim.AUTO  # the batch range the original program allowed
        example = _example(ctx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(converted, example, dynamic_shapes=tuple({0: batch} for _ in example))
        artifact = save_program(ep, ctx.artifact(f"model.int8-{'dynamic' if dynamic else 'static'}.pt2"))
        size = _size(artifact)
    except Exception as e:  # the candidate still runs; say why there is no file
        notes.append(f"could not save the int8 program as .pt2 ({_first_line(e, 120)}); size is its state dict")
    compiled = q.compile_frozen(converted)
    kind = "dynamic" if dynamic else "static"
    notes.insert(0, ("int8 weights for linear layers, activations quantized per batch" if dynamic else
                     f"int8 weights and activations, calibrated on {n} of your examples")
                 + "; compiled by inductor with freezing (without it PT2E int8 is slower than fp32).")
    if artifact is not None:
        notes.append("To load the .pt2: `import torchao.quantization.pt2e` first (it registers the quantized "
                     "operators), then torch.export.load(...).module(), then compile it with "
                     "torch._inductor.config.freezing = True.")
    return Candidate(name=f"pt2e-int8-{kind}", recipe=f"pt2e-int8-{kind}", technique=f"int8 {kind} (PT2E, x86)",
                     runtime="pytorch", run=torch_runner(ctx, compiled), artifact=artifact, size_bytes=size,
                     notes=notes, info={"calibration_examples": n})


def _drop_unused_attributes(gm) -> None:
    """Remove parameters and buffers a converted graph no longer reads (``convert_pt2e`` leaves the
    float weights attached beside their int8 copies; exported, they would double the file)."""
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name in used or any(name.startswith(u + ".") for u in used):
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        if attr in owner._parameters:
            del owner._parameters[attr]
        elif attr in owner._buffers:
            del owner._buffers[attr]


def _pt2e_static(ctx: Context) -> Candidate:
    return _pt2e(ctx, dynamic=False)


def _pt2e_dynamic(ctx: Context) -> Candidate:
    return _pt2e(ctx, dynamic=True)


def _bf16(ctx: Context) -> Candidate:
    import torch

    from optkit.core import bench

    if ctx.gpu:
        dtype = "float16"
    else:
        flags = bench.environment().get("cpu_flags") or {}
        if not (flags.get("avx512_bf16") or flags.get("amx_bf16")):
            raise RecipeSkipped("this CPU has no native bf16 arithmetic (AVX-512 BF16 or AMX) and there is no GPU")
        dtype = "bfloat16"
    module = _program(ctx)
    compiled = torch.compile(module, dynamic=False)
    return Candidate(name=f"{'fp16' if dtype == 'float16' else 'bf16'}-autocast", recipe="torch-reduced-float",
                     technique=f"{dtype} autocast, compiled", runtime="pytorch",
                     run=torch_runner(ctx, compiled, autocast=dtype), size_bytes=ctx.summary.size_bytes,
                     notes=[f"Matrix products in {dtype} under torch.autocast, weights kept in fp32 (the file is "
                            "unchanged); compiled by inductor."])


def _export_program_to_onnx(ctx: Context):
    from optkit.runtimes import onnxrt as ox

    try:
        module = _program(ctx)
        example = _example(ctx)
        names = [s.name for s in ctx.summary.inputs]
        result = ox.export(module, example if len(example) > 1 else example[0],
                           ctx.artifact("model.from-torch.onnx"), input_names=names)
        return Path(result.path)
    except Exception as e:  # cached: every ORT recipe reports the same reason
        return e


def _torch_to_ort(ctx: Context) -> Candidate:
    src = _onnx_source(ctx)
    return ort_candidate(ctx, "onnx-ort", "torch-to-onnx", "exported to ONNX, fp32 in ORT", src,
                         notes=["The program exported with optkit.runtimes.onnxrt.export (dynamo exporter, dynamic batch) "
                                "and run in ONNX Runtime."])


# ------------------------------------------------------------------------------- Keras / TFLite

def _keras_model(ctx: Context):
    model = ctx.cache.get("keras_model")
    if model is None:  # pragma: no cover - set when the model is loaded
        raise RecipeSkipped("no Keras model loaded")
    return model


def _single_input(ctx: Context) -> str:
    if len(ctx.summary.inputs) != 1:
        raise RecipeSkipped("only single-input Keras models are converted here")
    return ctx.summary.inputs[0].name


def litert_candidate(ctx: Context, name: str, recipe: str, technique: str, path: Path, *,
                     threads: int | None = None, artifact: bool = True, notes: Sequence[str] = (),
                     info: dict | None = None) -> Candidate:
    """A :class:`Candidate` running the ``.tflite`` file ``path`` with LiteRT (``threads`` threads).

    Taught in 10_optimize_your_own_model.
    """
    from optkit.runtimes import tflow as otf

    runner = otf.LiteRT(path, num_threads=threads or ctx.threads)
    names = [s.name for s in ctx.summary.inputs]

    def run(feed: dict) -> list:
        return runner.run_all(*[feed[n] for n in names])

    return Candidate(name=name, recipe=recipe, technique=technique, runtime="tflite", run=run,
                     artifact=path if artifact else None, size_bytes=_size(path), notes=list(notes),
                     info={"threads": threads or ctx.threads, **(info or {})})


def _tflite(variant: str) -> Callable[[Context], Candidate]:
    def build(ctx: Context) -> Candidate:
        from optkit.runtimes import tflow as otf

        name = _single_input(ctx)
        rep = None
        notes = {"float32": ["The Keras graph converted as it is: float weights and activations."],
                 "dynamic": ["Dynamic-range quantization: int8 weights, float activations quantized on the fly."],
                 "float16": ["fp16 weights (half the size), expanded to float32 when loaded on a CPU."],
                 "int8": []}[variant]
        if variant == "int8":
            rep = [feed[name] for feed in ctx.calibration(batch_size=1)][:200]
            notes = [f"Full integer quantization calibrated on {len(rep)} of your examples; int8 input and output "
                     "(LiteRT applies the input scale and zero point)."]
        source = Path(ctx.summary.path)  # a SavedModel converts from its folder; a Keras file from the model
        path = otf.to_tflite(source if source.is_dir() else _keras_model(ctx), ctx.artifact(f"model.{variant}.tflite"),
                             variant=variant, representative=rep)
        return litert_candidate(ctx, f"tflite-{variant}", f"tflite-{variant}", f"TFLite {variant}", path, notes=notes)

    return build


def _keras_xla(ctx: Context) -> Candidate:
    from optkit.runtimes import tflow as otf

    name = _single_input(ctx)
    predict = otf.keras_predict(_keras_model(ctx), jit_compile=True)
    return Candidate(name="keras-xla", recipe="keras-xla", technique="XLA (jit_compile)", runtime="tensorflow",
                     run=lambda feed: [predict(feed[name])], size_bytes=ctx.summary.size_bytes,
                     notes=["Same model, its tf.function compiled with XLA (jit_compile=True); no new file."])


def _litert_one_thread(ctx: Context) -> Candidate:
    if ctx.threads <= 1:
        raise RecipeSkipped("the baseline already runs on one thread")
    return litert_candidate(ctx, "litert-1-thread", "litert-1-thread", "LiteRT, 1 thread", Path(ctx.summary.path),
                            threads=1, artifact=False,
                            notes=["Same file, one interpreter thread (what a phone app often gets)."])


# ------------------------------------------------------------------------------- the built-in registry

_BUILTIN = [
    Recipe("ort-optimized", ("onnx",), "onnxruntime", "graph optimized offline", _ort_optimized,
           "ONNX Runtime's graph optimizations (constant folding, fusions) saved into the file."),
    Recipe("ort-1-thread", ("onnx",), "onnxruntime", "fp32, 1 thread", _ort_one_thread,
           "The same model on one intra-op thread."),
    Recipe("ort-int8-dynamic", ("onnx",), "onnxruntime", "int8 dynamic", _ort_int8_dynamic,
           "ONNX Runtime dynamic quantization of MatMul/Gemm/RNN weights."),
    Recipe("ort-int8-static", ("onnx",), "onnxruntime", "int8 static QDQ", _ort_int8_static,
           "ONNX Runtime static QDQ quantization, per-channel, U8S8, calibrated on your data."),
    Recipe("ort-fp16", ("onnx",), "onnxruntime", "fp16 (GPU)", _ort_fp16, "fp16 weights and compute on a GPU."),
    Recipe("tensorrt", ("onnx",), "tensorrt", "TensorRT fp16", _tensorrt, "TensorRT through ONNX Runtime."),
    Recipe("torch-compile", ("torch_export",), "pytorch", "torch.compile", _torch_compile,
           "torch.compile (inductor) of the exported program."),
    Recipe("pt2e-int8-static", ("torch_export",), "pytorch", "int8 static (PT2E)", _pt2e_static,
           "PT2E post-training int8 with the x86 inductor quantizer, compiled with freezing."),
    Recipe("pt2e-int8-dynamic", ("torch_export",), "pytorch", "int8 dynamic (PT2E)", _pt2e_dynamic,
           "PT2E dynamic int8 of linear layers, compiled with freezing."),
    Recipe("torch-reduced-float", ("torch_export",), "pytorch", "bf16/fp16 autocast", _bf16,
           "Reduced-precision matrix products under torch.autocast, compiled."),
    Recipe("torch-to-onnx", ("torch_export",), "onnxruntime", "ONNX Runtime fp32", _torch_to_ort,
           "Export the program to ONNX and run it in ONNX Runtime."),
    Recipe("torch-to-onnx-int8-static", ("torch_export",), "onnxruntime", "ONNX Runtime int8 static",
           lambda ctx: _renamed(_ort_int8_static(ctx), "onnx-ort-int8-static", "torch-to-onnx-int8-static"),
           "Export to ONNX, then ONNX Runtime static QDQ int8 calibrated on your data."),
    Recipe("keras-xla", ("keras",), "tensorflow", "XLA", _keras_xla, "The Keras model compiled with XLA."),
    Recipe("tflite-float32", ("keras",), "tflite", "TFLite float32", _tflite("float32"),
           "Conversion to TFLite, float32."),
    Recipe("tflite-dynamic", ("keras",), "tflite", "TFLite dynamic-range int8", _tflite("dynamic"),
           "TFLite dynamic-range quantization (int8 weights)."),
    Recipe("tflite-float16", ("keras",), "tflite", "TFLite float16", _tflite("float16"),
           "TFLite with fp16 weights."),
    Recipe("tflite-int8", ("keras",), "tflite", "TFLite full int8", _tflite("int8"),
           "TFLite full-integer quantization calibrated on your data."),
    Recipe("litert-1-thread", ("tflite",), "tflite", "LiteRT, 1 thread", _litert_one_thread,
           "The same .tflite file on one interpreter thread."),
]


def _renamed(c: Candidate, name: str, recipe: str) -> Candidate:
    c.name, c.recipe = name, recipe
    return c


for _r in _BUILTIN:
    register(_r)
