"""The teachers: an EMA copy of the student, and a frozen teacher's outputs cached once.

- :func:`ema_update` (``ema = decay * ema + (1 - decay) * weight``) and :class:`EMATeacher`, the
  moving-average copy used for self-distillation.
- :func:`cache_teacher` runs a frozen teacher once over the training data and returns its logits
  and hooked features as :class:`TeacherOutputs`, looked up by example index while training.
- ``_as_xy``: the one reader of the data forms the trainer accepts (Dataset, Split, ``(x, y)``).

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from optkit.core.errors import OptkitError, check_range
from optkit.techniques.distill.features import FeatureHooks


# =========================================================================== EMA teacher

def _check_decay(decay: Any) -> float:
    # an EMA decay lies in [0, 1): 0.99 averages over roughly 1 / (1 - decay) = 100 steps
    return float(check_range("decay", decay, 0, 1, high_open=True))


@torch.no_grad()
def ema_update(ema_params: Iterable[torch.Tensor], params: Iterable[torch.Tensor], decay: float) -> None:
    """In place, for each pair: ``ema = decay * ema + (1 - decay) * param``.

    Taught in 04_knowledge_distillation.
    """
    d = _check_decay(decay)
    ema_list, p_list = list(ema_params), list(params)
    if len(ema_list) != len(p_list):
        raise OptkitError("params", len(p_list), f"must pair with {len(ema_list)} EMA tensors",
                          "pass the parameters of the same architecture the EMA copy was made from")
    for e, p in zip(ema_list, p_list):
        e.mul_(d).add_(p.detach(), alpha=1.0 - d)


class EMATeacher:
    """A frozen ``copy.deepcopy`` of a model whose weights follow it by an exponential moving average.

    ``ema = EMATeacher(student, decay=0.99)``; after every optimizer step ``ema.update(student)``;
    ``ema(x)`` runs the averaged copy (in eval mode, no gradients). With ``warmup=True`` the decay
    used at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` (as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so early on the copy tracks the fast-moving
    student instead of its random initial weights. Buffers (BatchNorm statistics) are copied.

    Taught in 04_knowledge_distillation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99, *, warmup: bool = True):
        self.decay = _check_decay(decay)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the copy's parameters toward ``model``'s; copy its buffers."""
        ema_update(self.module.parameters(), model.parameters(), self.current_decay())
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.updates += 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def __repr__(self) -> str:
        return (f"EMATeacher({type(self.module).__name__}, decay={self.decay}, warmup={self.warmup}, "
                f"updates={self.updates})")


# =========================================================================== cached teacher

@dataclass(repr=False)
class TeacherOutputs:
    """A frozen teacher's logits (and hooked features) for every example of a training set, in order.

    Row ``i`` belongs to example ``i``, so a trainer that shuffles by index can look them up
    instead of running the teacher again. Taught in 04_knowledge_distillation.
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.logits, *self.features.values()])

    def __repr__(self) -> str:
        feats = ", ".join(f"{k}: {tuple(v.shape[1:])}" for k, v in self.features.items()) or "none"
        return (f"TeacherOutputs(n={len(self):,}, logits={tuple(self.logits.shape[1:])}, features=[{feats}], "
                f"{self.nbytes / 1e6:.1f} MB, computed in {self.seconds:.1f} s)")


def _as_xy(data: Any, split: str = "train") -> tuple[torch.Tensor, torch.Tensor | None]:
    from optkit.data import Dataset, Split

    if isinstance(data, Dataset):
        data = data.split(split)
    if isinstance(data, Split):
        return torch.from_numpy(np.array(data.x)), torch.from_numpy(np.array(data.y))
    if isinstance(data, torch.Tensor):
        return data, None
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.array(data)), None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a)) for a in data)
        if len(x) != len(y):
            raise OptkitError("data", f"{len(x)} inputs, {len(y)} labels", "lengths differ",
                              "pass as many labels as inputs")
        return x, y.long()
    raise OptkitError("data", type(data).__name__, "is not something the distillation trainer can read",
                      "pass an optkit Dataset (its train split is used), a Split, or an (x, y) pair of tensors")


@torch.no_grad()
def cache_teacher(teacher: nn.Module, data: Any, *, feature_layers: Iterable[str] = (), batch_size: int = 256,
                  split: str = "train") -> TeacherOutputs:
    """Run the teacher once over ``data`` (in order, eval mode) and keep its logits and hooked features.

    ``data``: an optkit Dataset (``split`` is used), a Split, a tensor of inputs or an ``(x, y)``
    pair. ``feature_layers`` are teacher submodules whose outputs :func:`train_student` will match.
    Memory: one row of every cached tensor per example (a 128x7x7 feature map is 25 kB an image).

    Taught in 04_knowledge_distillation.
    """
    check_range("batch_size", batch_size, 1)
    x, _ = _as_xy(data, split)
    was_training = teacher.training
    teacher.eval()
    start = time.perf_counter()
    logits, feats = [], {name: [] for name in feature_layers}
    hooks = FeatureHooks(teacher, list(feature_layers), detach=True) if feats else None
    try:
        for i in range(0, len(x), int(batch_size)):
            logits.append(teacher(x[i:i + int(batch_size)]).float())
            for name in feats:
                feats[name].append(hooks[name].float())
    finally:
        if hooks is not None:
            hooks.remove()
        teacher.train(was_training)
    return TeacherOutputs(torch.cat(logits), {k: torch.cat(v) for k, v in feats.items()},
                          time.perf_counter() - start)
