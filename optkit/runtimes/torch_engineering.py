"""PyTorch engineering around inference: train-mode mistakes, compiled graphs, feeding, mixed precision, GPUs.

- :func:`train_mode_accuracy` runs a model in train mode (the forgotten ``model.eval()``) over real
  data, in mixed, class-sorted (skewed) or single-image batches, and reports the accuracy and how far
  BatchNorm's running statistics drifted (:func:`batchnorm_stats`, :func:`stats_drift`).
- :func:`compile_with_code` compiles a model with ``torch.compile`` (with or without Inductor's
  ``freezing``) and returns the generated code; :func:`count_kernels` counts what that code calls
  per forward pass (fused Inductor kernels, library calls, prepacked oneDNN/MKL calls, weights
  passed as arguments or folded in as constants).
- :class:`EncodedImages` stores images PNG-encoded and decodes one per item, as a pipeline reading
  files does; :class:`CachedDataset` decodes every item once and serves them from memory;
  :func:`loader_throughput` times a ``DataLoader`` end to end (``num_workers``, ``pin_memory``).
- :func:`autocast_train_steps` runs a few optimizer steps under ``torch.autocast``: bf16 on CPU,
  fp16 with ``torch.amp.GradScaler`` on a CUDA GPU.
- :func:`distributed_predict` runs inference with one process per device (``torch.distributed``,
  each rank a shard of the data); :func:`multi_gpu_reason` says why it cannot use several GPUs here.

Taught in 01_pytorch_inference_essentials.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optkit.core.errors import OptkitError, check_choice, check_int

__all__ = ["batchnorm_stats", "stats_drift", "TrainModeResult", "train_mode_accuracy", "compile_with_code",
           "count_kernels", "EncodedImages", "CachedDataset", "loader_throughput", "TrainSteps",
           "autocast_train_steps", "multi_gpu_reason", "distributed_predict"]


def _torch():
    import torch

    return torch


def _bn_layers(model):
    torch = _torch()
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


def batchnorm_stats(model) -> dict[str, tuple[Any, Any]]:
    """A copy of every BatchNorm layer's ``(running_mean, running_var)``, by layer name."""
    return {n: (m.running_mean.detach().clone(), m.running_var.detach().clone()) for n, m in _bn_layers(model).items()}


def stats_drift(before: dict, after: dict) -> float:
    """How far BatchNorm's running statistics moved between two :func:`batchnorm_stats` snapshots.

    The largest, over layers and channels, of the running mean's shift in units of the channel's
    standard deviation (``|mean_after - mean_before| / sqrt(var_before)``) and the running
    variance's relative change (``|var_after - var_before| / var_before``); 0 means nothing moved.
    """
    if set(before) != set(after):
        raise OptkitError("after", sorted(after)[:3], "names other BatchNorm layers than `before`",
                          "take both snapshots of the same model")
    worst = 0.0
    for name, (mean0, var0) in before.items():
        mean1, var1 = after[name]
        scale = var0.clamp_min(1e-8)
        worst = max(worst, float(((mean1 - mean0).abs() / scale.sqrt()).max()),
                    float(((var1 - var0).abs() / scale).max()))
    return worst


@dataclass(frozen=True)
class TrainModeResult:
    """Accuracy of a model run in train mode, on how many rows, and BatchNorm's drift meanwhile."""

    mode: str
    batch_size: int
    accuracy: float
    n: int
    drift: float
    hits: np.ndarray


def train_mode_accuracy(model, split, *, batch_size: int, order: str = "mixed", limit: int | None = None,
                        eval_mode: bool = False) -> TrainModeResult:
    """Accuracy of ``model`` on ``split`` run in **train mode** (or eval mode), and its BatchNorm drift.

    ``order``: ``"mixed"`` keeps the split's order (classes mixed in every batch); ``"skewed"`` sorts
    the rows by label, so each batch holds one or two classes (a stream of similar requests).
    ``limit`` uses the first rows only (batch 1 is slow). The model's running statistics change as
    they would in the mistake (run it on a copy); its mode is restored afterwards. ``hits`` are the
    per-row hits in the split's row order (for :func:`optkit.core.verify.paired_difference`).
    """
    torch = _torch()
    batch_size = check_int("batch_size", batch_size, 1)
    check_choice("order", order, ["mixed", "skewed"])
    n = len(split.y) if limit is None else min(check_int("limit", limit, 1), len(split.y))
    rows = np.arange(n) if order == "mixed" else np.argsort(np.asarray(split.y[:n]), kind="stable")
    before, was_training = batchnorm_stats(model), model.training
    model.train(not eval_mode)
    hits = np.zeros(n, dtype=bool)
    try:
        with torch.no_grad():
            for i in range(0, n, batch_size):
                idx = rows[i:i + batch_size]
                pred = model(torch.from_numpy(np.array(split.x[idx]))).argmax(1).numpy()
                hits[idx] = pred == np.asarray(split.y[idx])
    finally:
        model.train(was_training)
    return TrainModeResult("eval" if eval_mode else "train", batch_size, float(hits.mean()), n,
                           stats_drift(before, batchnorm_stats(model)), hits)


def compile_with_code(model, example, *, freezing: bool):
    """``(compiled callable, generated code, first-call seconds)`` for ``torch.compile(model)`` on ``example``.

    Compiles with ``dynamic=False`` under ``inference_mode`` and Inductor's ``freezing`` flag, and
    keeps the Python code Inductor wrote (what :func:`count_kernels` reads). Later calls of the
    returned callable must use the same settings (inference mode), as the notebook does.
    """
    torch = _torch()
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code

    with inductor_config.patch(freezing=bool(freezing)), torch.inference_mode():
        fn = torch.compile(copy.deepcopy(model), dynamic=False)  # a copy: its own cache entry, never a reuse
        t0 = time.perf_counter()
        _, codes = run_and_get_code(fn, example)
        seconds = time.perf_counter() - t0
    if not codes:
        raise OptkitError("model", type(model).__name__, "compiled from a cache: no code was generated",
                          "call torch._dynamo.reset() first")
    return fn, "\n".join(codes), seconds


_CALLS = {"fused Inductor kernels": r"\bcpp_fused_\w+\(|\btriton_\w+\.run\(",
          "library calls (convolution, matmul)": r"\bextern_kernels\.\w+\(",
          "prepacked oneDNN/MKL calls": r"\btorch\.ops\.(?:mkldnn|mkl|onednn)\.\w+(?:\.\w+)?\("}


def count_kernels(code: str) -> dict[str, int]:
    """What one forward pass of Inductor-generated ``code`` calls, counted in its ``call`` function.

    Keys: ``"kernels"`` (all calls below), ``"fused Inductor kernels"``, ``"library calls
    (convolution, matmul)"``, ``"prepacked oneDNN/MKL calls"``, ``"weights passed per call"`` (graph
    arguments besides the input: unfrozen graphs receive every weight each call) and ``"constants
    folded in"`` (``_frozen_param`` tensors: weights with BatchNorm folded in, prepacked once).
    """
    if not isinstance(code, str) or "def call(" not in code:
        raise OptkitError("code", code, "is not Inductor output code (no `def call(`)",
                          "pass the code returned by compile_with_code")
    body = code[code.rfind("def call("):]
    end = re.search(r"\n\S", body)
    body = body[:end.start()] if end else body
    counts = {k: len(re.findall(p, body)) for k, p in _CALLS.items()}
    counts["kernels"] = sum(counts.values())
    first = re.search(r"^\s*([\w, ]+?),?\s*=\s*args\s*$", body, re.M)
    counts["weights passed per call"] = max(0, len([a for a in first.group(1).split(",") if a.strip()]) - 1) \
        if first else 0
    counts["constants folded in"] = len(set(re.findall(r"\b_frozen_param\d+\b", body)))
    return counts


class EncodedImages:
    """A ``torch.utils.data.Dataset`` of images stored PNG-encoded, decoded on every access.

    Like a folder of image files: each ``__getitem__`` decodes one PNG (Pillow) and converts it to a
    float tensor in [0, 1] of shape ``(1, H, W)``. ``split.x`` is float NCHW in [0, 1], one channel.
    """

    def __init__(self, split):
        from PIL import Image

        x = np.asarray(split.x)
        if x.ndim != 4 or x.shape[1] != 1:
            raise OptkitError("split.x", x.shape, "must be one-channel images (N, 1, H, W)",
                              "pass a split of data.fashion_mnist() or data.mnist()")
        self.files = []
        for img in (x[:, 0] * 255).round().astype(np.uint8):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            self.files.append(buf.getvalue())
        self.y = np.asarray(split.y)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        torch = _torch()
        pixels = np.array(Image.open(io.BytesIO(self.files[i])))  # a writable copy
        return torch.from_numpy(pixels).float().div_(255.0).unsqueeze(0), int(self.y[i])


class CachedDataset:
    """A ``Dataset`` that decodes every item of ``dataset`` once, then serves it from memory.

    ``seconds`` is what the one pass cost (paid once, instead of every epoch or every request);
    ``nbytes`` what the cache holds.
    """

    def __init__(self, dataset):
        torch = _torch()
        t0 = time.perf_counter()
        items = [dataset[i] for i in range(len(dataset))]
        self.x = torch.stack([x for x, _ in items])
        self.y = torch.tensor([y for _, y in items])
        self.seconds = time.perf_counter() - t0
        self.nbytes = self.x.element_size() * self.x.nelement()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def loader_throughput(dataset, *, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                      consume: Callable[[Any], Any] | None = None, epochs: int = 1, device: str = "cpu") -> float:
    """Images per second through a ``DataLoader`` over ``dataset`` (and ``consume``, e.g. the model).

    Each batch is moved to ``device`` ("cuda": asynchronously when pinned) before ``consume``.
    ``pin_memory`` copies each batch into page-locked memory, which only speeds up a copy to a GPU:
    it is refused without one (an OptkitError says so). Worker start-up is included, as a server
    or an epoch pays it.
    """
    torch = _torch()
    batch_size = check_int("batch_size", batch_size, 1)
    num_workers = check_int("num_workers", num_workers, 0, 64)
    epochs = check_int("epochs", epochs, 1)
    check_choice("device", device, ["cpu", "cuda"])
    if (pin_memory or device == "cuda") and not torch.cuda.is_available():
        raise OptkitError("pin_memory", pin_memory, "only helps copies to a CUDA GPU and there is none",
                          "pass pin_memory=False on a CPU-only machine")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         pin_memory=bool(pin_memory))
    t0, n = time.perf_counter(), 0
    with torch.inference_mode():
        for _ in range(epochs):
            for xs, _ in loader:
                if consume is not None:
                    consume(xs.to(device, non_blocking=bool(pin_memory)))
                n += len(xs)
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


@dataclass(frozen=True)
class TrainSteps:
    """Losses of a few training steps, the seconds per step, and the precision they ran in."""

    losses: list[float]
    seconds_per_step: float
    device: str
    dtype: str
    scaler: bool


def autocast_train_steps(model, split, *, steps: int = 4, batch_size: int = 32, device: str = "cpu",
                         precision: str = "mixed", lr: float = 1e-3, seed: int = 0) -> TrainSteps:
    """Train a copy of ``model`` for ``steps`` Adam steps on real batches of ``split``.

    ``precision="mixed"``: on CPU ``torch.autocast("cpu", dtype=torch.bfloat16)`` (bf16 has fp32's
    range, so no loss scaling); on CUDA ``torch.autocast("cuda", dtype=torch.float16)`` with a
    ``torch.amp.GradScaler`` (fp16 gradients underflow without scaling). ``"fp32"``: no autocast,
    the reference. The argument model is not changed.
    """
    torch = _torch()
    steps = check_int("steps", steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    check_choice("device", device, ["cpu", "cuda"])
    check_choice("precision", precision, ["mixed", "fp32"])
    if device == "cuda" and not torch.cuda.is_available():
        raise OptkitError("device", device, "no CUDA GPU is visible to torch", "pass device='cpu'")
    torch.manual_seed(seed)
    net = copy.deepcopy(model).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    dtype = (torch.float16 if device == "cuda" else torch.bfloat16) if precision == "mixed" else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    rows = np.random.default_rng(seed).permutation(len(split.y))
    losses, t0 = [], time.perf_counter()
    for s in range(steps):
        idx = np.sort(rows[(s * batch_size) % len(rows):][:batch_size])
        x = torch.from_numpy(np.array(split.x[idx])).to(device)
        y = torch.from_numpy(np.array(split.y[idx])).long().to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            loss = torch.nn.functional.cross_entropy(net(x), y)  # autocast keeps the loss in fp32
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
    if device == "cuda":
        torch.cuda.synchronize()
    name = str(dtype).replace("torch.", "") if dtype is not None else "float32"
    return TrainSteps(losses, (time.perf_counter() - t0) / steps, device, name, scaler is not None)


def multi_gpu_reason() -> str | None:
    """None when torch sees two or more CUDA GPUs, else why multi-GPU inference cannot run here."""
    torch = _torch()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count >= 2:
        return None
    return f"torch sees {count} CUDA GPU{'s' if count != 1 else ''}; one process per GPU needs at least 2"


def _rank_main(rank: int, world: int, model, x, backend: str, device_type: str, port: int, folder: str) -> None:
    torch = _torch()
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        device = torch.device(f"cuda:{rank}") if device_type == "cuda" else torch.device("cpu")
        if device_type == "cpu":
            torch.set_num_threads(1)  # the processes share the cores
        net = model.to(device).eval()
        shard = torch.from_numpy(np.array(x[rank::world]))  # rank r takes rows r, r + world, ...
        with torch.inference_mode():
            out = net(shard.to(device)).float().cpu().numpy()
        np.save(os.path.join(folder, f"rank{rank}.npy"), out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def distributed_predict(model, x, *, world_size: int | None = None, device_type: str = "cuda",
                        port: int = 29517) -> np.ndarray:
    """Outputs of ``model`` on ``x`` computed by one process per device, in ``x``'s row order.

    Each of ``world_size`` processes (``torch.multiprocessing.spawn``; ``torch.distributed`` with
    NCCL on GPUs, Gloo on CPU) loads its own copy of the model on its device and predicts every
    ``world_size``-th row; the shards are put back in order. On CUDA, ``world_size`` defaults to the
    GPU count and fewer than 2 GPUs raise an OptkitError with :func:`multi_gpu_reason`.
    ``device_type="cpu"`` runs the same code on CPU processes (for testing the mechanics).
    """
    torch = _torch()
    import torch.multiprocessing as mp

    check_choice("device_type", device_type, ["cuda", "cpu"])
    if device_type == "cuda":
        why = multi_gpu_reason()
        if why:
            raise OptkitError("device_type", "cuda", why, "run on a multi-GPU machine, or device_type='cpu'")
        world_size = torch.cuda.device_count() if world_size is None else world_size
    world = check_int("world_size", 2 if world_size is None else world_size, 1)
    if device_type == "cuda" and world > torch.cuda.device_count():
        raise OptkitError("world_size", world, f"exceeds the {torch.cuda.device_count()} GPUs", "pass fewer")
    backend = "nccl" if device_type == "cuda" else "gloo"
    x = np.asarray(x)
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank_main, args=(world, copy.deepcopy(model).cpu(), x, backend, device_type, port, folder),
                 nprocs=world, join=True)
        shards = [np.load(os.path.join(folder, f"rank{r}.npy")) for r in range(world)]
    out = np.empty((len(x),) + shards[0].shape[1:], dtype=shards[0].dtype)
    for r, shard in enumerate(shards):
        out[r::world] = shard
    return out
