"""The capstone's recipes for a torch.export program (``.pt2``): ``torch.compile``, PT2E static and
dynamic int8 (x86 inductor quantizer, compiled with freezing), bf16/fp16 autocast, and the export
to ONNX that the ONNX Runtime route (:mod:`optkit.optimize.recipes.onnx_runtime`) starts from.

:func:`torch_runner` turns a module into a candidate's ``predict(feed)``. torch and torchao are
imported inside the functions, as everywhere in optkit.optimize.

Taught in 10_optimize_your_own_model.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optkit.core import sizes
from optkit.optimize.recipes.registry import Candidate, Context, RecipeSkipped, _first_line, _size

__all__ = ["torch_runner"]

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
    """``predict(feed)`` for a torch module or compiled function taking the model's inputs in order
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
    return Candidate(name="torch-compile", predict=torch_runner(ctx, compiled), recipe="torch-compile",
                     technique="torch.compile (inductor)", runtime="pytorch", precision="fp32",
                     config={"backend": "inductor", "dynamic": False}, size_bytes=ctx.summary.size_bytes,
                     notes=["Same program, compiled by inductor for each batch size on first use (seconds); "
                            "no new file: compile at load time in your service."])


def _pt2e(ctx: Context, dynamic: bool) -> Candidate:
    import torch

    from optkit.techniques import quantize as q

    ops = ctx.summary.op_counts
    linear = sum(v for k, v in ops.items() if "linear" in k or "addmm" in k or k.endswith("mm.default"))
    conv = sum(v for k, v in ops.items() if "conv" in k)
    if dynamic and not linear:
        raise RecipeSkipped("nothing to quantize: dynamic int8 handles linear layers and the program has none")
    if not dynamic and not (linear or conv):
        raise RecipeSkipped("nothing to quantize: the program has no convolution or linear layer")
    batches = (_torch_inputs(ctx, feed) for feed in ctx.calibration(batch_size=16))
    converted, n = q.pt2e_int8(_program(ctx), batches, dynamic=dynamic)  # what 02 teaches, on the loaded program
    q.drop_dead_weights_(converted)
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
    return Candidate(name=f"pt2e-int8-{kind}", predict=torch_runner(ctx, compiled), recipe=f"pt2e-int8-{kind}",
                     technique=f"int8 {kind} (PT2E, x86)", runtime="pytorch",
                     precision="int8-dynamic" if dynamic else "int8", artifact=artifact, size_bytes=size, notes=notes,
                     config={"quantizer": "x86 inductor", "dynamic": dynamic, "calibration_examples": n,
                             "freezing": True})


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
    short = "fp16" if dtype == "float16" else "bf16"
    return Candidate(name=f"{short}-autocast", predict=torch_runner(ctx, compiled, autocast=dtype),
                     recipe="torch-reduced-float", technique=f"{dtype} autocast, compiled", runtime="pytorch",
                     precision=short, config={"autocast": dtype, "device": "cuda" if ctx.gpu else "cpu"},
                     size_bytes=ctx.summary.size_bytes,
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
