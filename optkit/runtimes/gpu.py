"""GPU inference switches as callables to time: cuDNN autotuning, fp16 autocast, CUDA graphs.

- :func:`available` says whether torch sees a CUDA GPU, and why not.
- :func:`cuda_variants` moves a model and a batch to the GPU and returns the three variants a GPU
  lesson times side by side: fp32, fp16 under ``torch.autocast``, and fp32 replayed from a CUDA
  graph (one launch for the whole forward pass instead of one per kernel).
- :func:`synchronize` is the ``sync`` to pass to :func:`optkit.core.bench.compare`: GPU work is
  asynchronous, so a timer that does not wait for it measures only the launch.

Taught in 01_pytorch_inference_essentials (section 9); run on a GPU machine by
``tools/gpu_check.sh``. Without a GPU every function but :func:`available` raises
:class:`~optkit.core.errors.OptkitError` naming the reason.
"""
from __future__ import annotations

from typing import Any, Callable

from optkit.core.errors import OptkitError

__all__ = ["available", "require", "synchronize", "cuda_variants", "describe"]


def available() -> tuple[bool, str]:
    """``(True, device name)`` when torch sees a CUDA GPU, else ``(False, why not)``."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only torch build"
        return False, f"no CUDA GPU is visible to torch ({build}; torch.cuda.is_available() is False)"
    return True, torch.cuda.get_device_name(0)


def require() -> Any:
    """torch, after checking that a CUDA GPU is visible; raises OptkitError otherwise."""
    ok, why = available()
    if not ok:
        raise OptkitError("device", "cuda", why, "run this on a machine with an NVIDIA GPU and a CUDA build "
                          "of torch; the CPU lessons need none")
    import torch

    return torch


def synchronize() -> None:
    """Wait for every queued GPU kernel (the ``sync`` for :func:`optkit.core.bench.compare`)."""
    require().cuda.synchronize()


def cuda_variants(model, example, *, channels_last: bool = True, cudnn_benchmark: bool = True,
                  warmup: int = 3) -> dict[str, Callable[[], Any]]:
    """Callables running ``model`` on ``example`` on the GPU: fp32, fp16 autocast, CUDA graph fp32.

    The model is copied to the GPU (the argument stays where it is). ``channels_last`` suits
    convolutions on tensor cores; ``cudnn_benchmark`` lets cuDNN time its algorithms for this
    shape once (fixed shapes only). The CUDA graph is captured after ``warmup`` calls on a side
    stream, as PyTorch's documentation prescribes; replaying it reuses the captured input buffer.
    """
    import copy

    torch = require()
    if not isinstance(example, torch.Tensor):
        raise OptkitError("example", type(example).__name__, "must be one input tensor (a batch)",
                          "pass e.g. dataset.example_batch(32)")
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    net = copy.deepcopy(model).eval().cuda()
    x = example.cuda()
    if channels_last and x.dim() == 4:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def fp32():
        with torch.inference_mode():
            return net(x)

    def fp16_autocast():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            return net(x)

    static_in = x.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                net(static_in)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            static_out = net(static_in)

    def cuda_graph():
        graph.replay()
        return static_out

    return {"GPU fp32": fp32, "GPU fp16 autocast": fp16_autocast, "GPU CUDA graph fp32": cuda_graph}


def describe() -> str:
    """One line: how many GPUs, which, and the CUDA and cuDNN versions torch was built with."""
    torch = require()
    return (f"{torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}; CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}")
