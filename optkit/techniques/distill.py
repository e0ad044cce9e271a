"""Knowledge distillation: train a small student to imitate a large teacher.

What it offers:

- **Soft-target distillation** (Hinton et al., 2015): :func:`kd_loss` is
  ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)``,
  written out term by term (:func:`soft_target_loss` is the first term alone). The ``T^2`` keeps the
  soft term's gradients the same size at every temperature, so ``alpha`` means the same thing
  whatever ``T`` is.
- **Feature distillation** (FitNets-style hints): :class:`FeatureHooks` reads intermediate
  outputs of any model through forward hooks (no special ``forward`` needed), and
  :func:`projection` builds the learned 1x1 conv / linear map that takes the student's width to the
  teacher's when they differ; :func:`feature_loss` is the mean squared error between the two.
- **Self-distillation with an EMA teacher**: :class:`EMATeacher` keeps a ``copy.deepcopy`` of the
  student whose weights follow the student's by an exponential moving average
  (:func:`ema_update`, ``ema = decay * ema + (1 - decay) * weight`` after every step), used as
  the teacher.
- **The trainer**: :func:`train_student` runs any of these (plain cross-entropy, soft targets,
  soft targets + features, EMA self-distillation) with identical initial weights and batch order
  per seed. A frozen teacher's outputs are computed once by :func:`cache_teacher` and looked up
  by example index, so distilling costs little more than training from scratch.
- **Honest comparisons**: :func:`train_seeds` repeats one method over seeds (each seed fixes the
  initial weights and the batch order, the same for every method), :func:`summarize` (mean and spread over seeds) and
  :func:`paired_difference` (the difference between two methods seed by seed, with a 95 %
  confidence interval that says whether it is inside the noise).
- :class:`StudentCNN`: a small CNN for Fashion-MNIST (about 106 k parameters, under a quarter of
  the reference ``ResNetCNN``).

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

import copy
import math
import numbers
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from optkit.core.errors import OptkitError, check_range

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "StudentCNN",
    "check_temperature",
    "check_alpha",
    "soft_target_loss",
    "kd_loss",
    "FeatureHooks",
    "projection",
    "feature_loss",
    "ema_update",
    "EMATeacher",
    "TeacherOutputs",
    "cache_teacher",
    "Distilled",
    "train_student",
    "SeedRuns",
    "train_seeds",
    "summarize",
    "Difference",
    "paired_difference",
    "plot_runs",
]


# =========================================================================== the student

class StudentCNN(nn.Module):
    """conv(1->w, 3x3) ReLU maxpool, conv(w->2w, 3x3) ReLU maxpool, linear(2w*7*7 -> hidden) ReLU,
    linear(hidden -> 10).

    With the defaults (``width=16, hidden=64``) it has 105,866 parameters: 15 % of the reference
    ``ResNetCNN`` teacher (696,042) and about 1.4 % of its multiply-adds. Every layer is a named
    module (``conv2``, ``pool2``, ``fc1`` ...) so :class:`FeatureHooks` can read any of them.

    Taught in 04_knowledge_distillation.
    """

    def __init__(self, width: int = 16, hidden: int = 64, in_channels: int = 1, num_classes: int = 10,
                 in_size: int = 28):
        super().__init__()
        check_range("width", width, 1)
        check_range("hidden", hidden, 1)
        if in_size < 4 or in_size % 4:
            raise OptkitError("in_size", in_size, "must be a multiple of 4 (two 2x2 poolings)",
                              "pass 28 for Fashion-MNIST or 8 for digits")
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * (in_size // 4) ** 2, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


# =========================================================================== losses

def check_temperature(temperature: Any) -> float:
    """Return ``temperature`` as a float if it is a finite number above zero, else raise OptkitError.

    Taught in 04_knowledge_distillation.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(float(temperature)):
        raise OptkitError("temperature", temperature, "must be a finite number",
                          "pass a temperature above 0, e.g. 4.0")
    if float(temperature) <= 0:
        raise OptkitError("temperature", temperature,
                          "must be above 0 (softmax(z / T) is undefined at T = 0 and reversed below it)",
                          "pass a temperature above 0: 1 is the plain softmax, 2-8 are usual for distillation")
    return float(temperature)


def check_alpha(alpha: Any) -> float:
    """Return ``alpha`` as a float if it lies in [0, 1], else raise OptkitError.

    Taught in 04_knowledge_distillation.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or math.isnan(float(alpha)):
        raise OptkitError("alpha", alpha, "must be a number", "pass a weight in [0, 1], e.g. 0.9")
    if not 0.0 <= float(alpha) <= 1.0:
        raise OptkitError("alpha", alpha, "is outside [0, 1] (it weighs the soft term against the hard one)",
                          "pass a value in [0, 1]: 0 is plain cross-entropy, 1 is soft targets only")
    return float(alpha)


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if not isinstance(student_logits, torch.Tensor) or not isinstance(teacher_logits, torch.Tensor):
        raise OptkitError("logits", (type(student_logits).__name__, type(teacher_logits).__name__),
                          "must be tensors", "pass the raw (pre-softmax) outputs of both models")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise OptkitError("teacher_logits", tuple(teacher_logits.shape),
                          f"must have the student's shape (batch, classes) = {tuple(student_logits.shape)}",
                          "compute both on the same batch, with the same number of classes")


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float = 4.0) -> torch.Tensor:
    """``T^2 * KL(p_teacher || p_student)`` with both softened by ``T``, averaged over the batch.

    ``p = softmax(logits / T)``. ``KL(p || q) = sum_c p_c (log p_c - log q_c)``. The gradient of the
    KL term with respect to the student's logits shrinks like ``1 / T^2`` as ``T`` grows; the
    ``T^2`` factor undoes that. The teacher's logits are detached.

    Taught in 04_knowledge_distillation.
    """
    t = check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    log_q = F.log_softmax(student_logits / t, dim=1)
    log_p = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return kl * (t * t)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None = None,
            temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """The distillation loss ``alpha * T^2 * KL(soft teacher || soft student) + (1 - alpha) * CE(student, y)``.

    ``alpha = 0`` is plain cross-entropy on the labels, ``alpha = 1`` soft targets only (then
    ``targets`` may be None). Bad input (``temperature <= 0``, ``alpha`` outside [0, 1], logits of
    different shapes) raises :class:`~optkit.core.errors.OptkitError`.

    Taught in 04_knowledge_distillation.
    """
    a = check_alpha(alpha)
    soft = soft_target_loss(student_logits, teacher_logits, temperature)
    if a == 1.0:
        return soft
    if targets is None:
        raise OptkitError("targets", None, f"are needed when alpha < 1 (alpha={a})",
                          "pass the labels, or alpha=1.0 for soft targets only")
    hard = F.cross_entropy(student_logits, targets)
    return a * soft + (1.0 - a) * hard


# =========================================================================== features

def _check_layers(model: nn.Module, layers: Iterable[str], parameter: str = "layers") -> list[str]:
    names = dict(model.named_modules())
    out = []
    for name in ([layers] if isinstance(layers, str) else list(layers)):
        if name not in names or name == "":
            near = [n for n in names if n][:12]
            raise OptkitError(parameter, name, f"is not a submodule of {type(model).__name__}",
                              "use one of " + ", ".join(repr(n) for n in near) + (" ..." if len(names) > 13 else ""))
        out.append(name)
    if not out:
        raise OptkitError(parameter, layers, "names no layer", "pass at least one submodule name")
    return out


class FeatureHooks:
    """Record the outputs of named submodules on every forward pass, through forward hooks.

    ``hooks = FeatureHooks(model, ["layer2", "layer3"])``; after ``model(x)``,
    ``hooks.features["layer3"]`` holds that layer's output for ``x`` (with its autograd graph, so
    a loss on it trains the model). The model's ``forward`` is not changed. Use it as a context
    manager, or call :meth:`remove` when done: a forgotten hook keeps every output alive.

    Taught in 04_knowledge_distillation.
    """

    def __init__(self, model: nn.Module, layers: str | Iterable[str], *, detach: bool = False):
        self.layers = _check_layers(model, layers)
        self.detach = bool(detach)
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in self.layers:
            self._handles.append(model.get_submodule(name).register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def fn(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            self.features[name] = out.detach() if self.detach else out
        return fn

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.features:
            raise OptkitError("name", name, "has no recorded output yet" if name in self.layers
                              else "is not a hooked layer", "run the model forward first" if name in self.layers
                              else "use one of " + ", ".join(repr(n) for n in self.layers))
        return self.features[name]

    def remove(self) -> None:
        """Detach every hook and forget the recorded outputs."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.features.clear()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "FeatureHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        shapes = {n: tuple(t.shape) for n, t in self.features.items()}
        return f"FeatureHooks(layers={self.layers}, active={self.active}, recorded={shapes})"


def projection(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """The learned map from a student feature to the teacher's width, for feature distillation.

    Shapes are of one example (no batch): ``(C, H, W)`` for conv features, ``(D,)`` for vectors.
    Conv features get a 1x1 ``Conv2d(C_s, C_t)`` (and an adaptive average pool when the spatial
    sizes differ); vectors a ``Linear(D_s, D_t)``; equal shapes an ``Identity``. It is trained
    along with the student and thrown away afterwards.

    Taught in 04_knowledge_distillation.
    """
    s, t = tuple(int(v) for v in student_shape), tuple(int(v) for v in teacher_shape)
    if len(s) != len(t) or len(s) not in (1, 3):
        raise OptkitError("teacher_shape", t, f"cannot be matched with the student's {s}",
                          "pass per-example shapes of the same kind: (C, H, W) for both, or (D,) for both")
    if s == t:
        return nn.Identity()
    if len(s) == 1:
        return nn.Linear(s[0], t[0])
    conv = nn.Conv2d(s[0], t[0], 1, bias=False)
    if s[1:] == t[1:]:
        return conv
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(t[1:]))


def feature_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
                 proj: nn.Module | None = None) -> torch.Tensor:
    """Mean squared error between ``proj(student_feature)`` and the (detached) teacher feature.

    Taught in 04_knowledge_distillation.
    """
    s = student_feature if proj is None else proj(student_feature)
    t = teacher_feature.detach().to(s.dtype)
    if s.shape != t.shape:
        raise OptkitError("teacher_feature", tuple(t.shape), f"does not match the projected student feature "
                          f"{tuple(s.shape)}", "build the projection with distill.projection(student_shape, teacher_shape)")
    return F.mse_loss(s, t)


# =========================================================================== EMA teacher

def _check_decay(decay: Any) -> float:
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0.0 <= float(decay) < 1.0:
        raise OptkitError("decay", decay, "must lie in [0, 1)",
                          "pass e.g. 0.99 (the EMA averages over roughly 1 / (1 - decay) = 100 steps)")
    return float(decay)


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


# =========================================================================== trainer

@dataclass(repr=False)
class Distilled:
    """What :func:`train_student` returns: the per-epoch ``history``, the learned feature
    ``projections`` (a ModuleDict, empty without feature distillation), the ``ema`` teacher (for
    self-distillation, else None) and the training time. The student itself is trained in place.

    Taught in 04_knowledge_distillation.
    """

    method: str
    history: list[dict]
    projections: nn.ModuleDict
    ema: EMATeacher | None
    seconds: float

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        return (f"Distilled(method={self.method!r}, epochs={len(self.history)}, final loss "
                f"{last.get('loss', float('nan')):.4f}, train acc {100 * last.get('train_acc', float('nan')):.2f} %, "
                f"{self.seconds:.1f} s)")


def _method(teacher, ema_decay, alpha, feature_layers) -> str:
    if ema_decay is not None:
        return "self-distillation (EMA teacher)"
    if teacher is None or (alpha == 0 and not feature_layers):
        return "cross-entropy (from scratch)"
    if feature_layers:
        return "soft targets + features" if alpha > 0 else "cross-entropy + features"
    return "soft targets"


def train_student(student: nn.Module, data: Any, *, teacher: nn.Module | TeacherOutputs | None = None,
                  temperature: float = 4.0, alpha: float = 0.9,
                  feature_layers: Mapping[str, str] | None = None, feature_weight: float = 1.0,
                  ema_decay: float | None = None, epochs: int = 2, batch_size: int = 128, lr: float = 2e-3,
                  weight_decay: float = 0.01, seed: int = 0, progress: bool = False) -> Distilled:
    """Train ``student`` in place, from labels alone or distilled from a teacher; return a :class:`Distilled`.

    - ``teacher=None, ema_decay=None`` (or ``alpha=0`` without features): plain cross-entropy, the
      from-scratch baseline.
    - ``teacher`` a frozen model, or its :class:`TeacherOutputs` from :func:`cache_teacher` on the
      same ``data`` (looked up by example index: no teacher forward passes while training): the
      loss is :func:`kd_loss` with ``temperature`` and ``alpha``.
    - ``feature_layers={"student_layer": "teacher_layer"}`` adds ``feature_weight *``
      :func:`feature_loss` for each pair, through :class:`FeatureHooks` on both models and a learned
      :func:`projection` where widths differ (trained with the student, returned in ``projections``).
    - ``ema_decay``: self-distillation. The teacher is an :class:`EMATeacher` of the student
      itself (``copy.deepcopy`` before the first step, updated after every step); ``teacher``
      must then be None.

    ``data`` is an optkit Dataset (its train split), a Split or an ``(x, y)`` pair. Batches are
    drawn by a permutation seeded with ``seed`` each epoch, so two runs with the same ``seed`` and
    the same initial weights see the same batches in the same order whatever the method. AdamW
    with a cosine decay to zero, as :func:`optkit.data.models.train`. The student ends in eval mode.

    Taught in 04_knowledge_distillation.
    """
    a = check_alpha(alpha)
    t = check_temperature(temperature)
    check_range("epochs", epochs, 1)
    check_range("batch_size", batch_size, 1)
    check_range("lr", lr, 0, low_open=True)
    check_range("feature_weight", feature_weight, 0)
    feature_layers = dict(feature_layers or {})
    if ema_decay is not None:
        _check_decay(ema_decay)
        if teacher is not None:
            raise OptkitError("teacher", type(teacher).__name__, "cannot be combined with ema_decay "
                              "(self-distillation uses the student's own EMA copy as the teacher)",
                              "pass teacher=None for self-distillation, or ema_decay=None to distil from a teacher")
        if feature_layers:
            raise OptkitError("feature_layers", feature_layers, "are not used with the EMA teacher",
                              "drop feature_layers, or distil from a separate teacher")
    if feature_layers and teacher is None:
        raise OptkitError("feature_layers", feature_layers, "need a teacher to match", "pass teacher=...")
    x, y = _as_xy(data)
    if y is None:
        raise OptkitError("data", "inputs only", "has no labels", "pass a Dataset, a Split or an (x, y) pair")
    n = len(x)
    cached = teacher if isinstance(teacher, TeacherOutputs) else None
    if cached is not None:
        if len(cached) != n:
            raise OptkitError("teacher", repr(cached), f"holds {len(cached):,} rows but data has {n:,} examples",
                              "cache the teacher on the same data: distill.cache_teacher(teacher, data)")
        missing = [tl for tl in feature_layers.values() if tl not in cached.features]
        if missing:
            raise OptkitError("feature_layers", feature_layers, f"teacher layers {missing} were not cached",
                              f"cache them: distill.cache_teacher(teacher, data, feature_layers={missing})")
    elif teacher is not None and not isinstance(teacher, nn.Module):
        raise OptkitError("teacher", type(teacher).__name__, "is neither a model nor cached outputs",
                          "pass an nn.Module or distill.cache_teacher(...)'s result")
    use_soft = (teacher is not None and a > 0) or ema_decay is not None
    method = _method(teacher, ema_decay, a, feature_layers)

    # --- hooks and projections (shapes from one example)
    s_hooks = FeatureHooks(student, list(feature_layers)) if feature_layers else None
    t_hooks = (FeatureHooks(teacher, list(feature_layers.values()), detach=True)
               if feature_layers and cached is None else None)
    projections = nn.ModuleDict()
    try:
        if feature_layers:
            was = student.training
            student.eval()
            with torch.no_grad():
                student(x[:1])
                if cached is None:
                    teacher.eval()
                    teacher(x[:1])
            student.train(was)
            for s_name, t_name in feature_layers.items():
                t_shape = (cached.features[t_name].shape[1:] if cached is not None
                           else t_hooks[t_name].shape[1:])
                projections[s_name.replace(".", "_")] = projection(s_hooks[s_name].shape[1:], t_shape)
        if isinstance(teacher, nn.Module):
            teacher.eval()

        from optkit.data.models import set_seed

        set_seed(seed)
        ema = EMATeacher(student, decay=ema_decay) if ema_decay is not None else None
        params = list(student.parameters()) + list(projections.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(n / int(batch_size))
        total = int(epochs) * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        generator = torch.Generator().manual_seed(int(seed))
        history = []
        start = time.perf_counter()
        epoch_iter = range(1, int(epochs) + 1)
        for epoch in epoch_iter:
            student.train()
            projections.train()
            perm = torch.randperm(n, generator=generator)
            batches = [perm[i:i + int(batch_size)] for i in range(0, n, int(batch_size))]
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc=f"epoch {epoch}/{epochs}", leave=False)
            loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
            for idx in batches:
                xb, yb = x[idx], y[idx]
                logits = student(xb)
                if not use_soft:
                    loss = F.cross_entropy(logits, yb)
                else:
                    if ema is not None:
                        t_logits = ema(xb)
                    elif cached is not None:
                        t_logits = cached.logits[idx]
                    else:
                        with torch.no_grad():
                            t_logits = teacher(xb)
                    loss = kd_loss(logits, t_logits, yb, t, a)
                if feature_layers:
                    if cached is None and not use_soft:
                        with torch.no_grad():
                            teacher(xb)
                    for s_name, t_name in feature_layers.items():
                        t_feat = cached.features[t_name][idx] if cached is not None else t_hooks[t_name]
                        loss = loss + feature_weight * feature_loss(
                            s_hooks[s_name], t_feat, projections[s_name.replace(".", "_")])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update(student)
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
            history.append({"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
                            "seconds": time.perf_counter() - t0})
    finally:
        for h in (s_hooks, t_hooks):
            if h is not None:
                h.remove()
    student.eval()
    return Distilled(method, history, projections, ema, time.perf_counter() - start)


@dataclass(repr=False)
class SeedRuns:
    """One method trained once per seed: the ``students`` (in seed order), each run's :class:`Distilled`
    result, and ``scores[name]`` = one accuracy per seed on each evaluation set given to
    :func:`train_seeds` (``accuracy`` is the first set's). Taught in 04_knowledge_distillation.
    """

    method: str
    seeds: list[int]
    students: list[nn.Module]
    results: list[Distilled]
    scores: dict[str, list[float]]

    @property
    def accuracy(self) -> list[float]:
        return next(iter(self.scores.values()))

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracy, ddof=1)) if len(self.accuracy) > 1 else float("nan")

    @property
    def seconds(self) -> float:
        return float(sum(r.seconds for r in self.results))

    def __repr__(self) -> str:
        first = next(iter(self.scores), "accuracy")
        per_seed = ", ".join(f"{100 * a:.2f}" for a in self.accuracy)
        return (f"SeedRuns({self.method!r}, {len(self.seeds)} seeds: {first} {100 * self.mean:.2f} % "
                f"(sd {100 * self.std:.2f}; per seed {per_seed}))")


def train_seeds(make_student, data: Any, *, seeds: int | Sequence[int] = 3,
                eval_data: Mapping[str, Any] | Any = None, **train_kw: Any) -> SeedRuns:
    """Train one method once per seed and score every student; return a :class:`SeedRuns`.

    For each seed: :func:`optkit.data.models.set_seed`, then ``make_student()`` (so every method gets the
    *same* initial weights for the same seed), then :func:`train_student` with ``seed=seed`` (the
    same batch order) and ``train_kw``. ``eval_data`` is one data set or ``{name: data}`` (a
    Split, an ``(x, y)`` pair, or a Dataset whose test split is used), scored with
    :func:`optkit.data.models.evaluate`. ``seeds`` is a count (0, 1, ...) or a list.

    Taught in 04_knowledge_distillation.
    """
    from optkit.data.models import evaluate, set_seed

    seed_list = list(range(_check_seeds(seeds))) if isinstance(seeds, numbers.Integral) else [int(s) for s in seeds]
    if not seed_list:
        raise OptkitError("seeds", seeds, "names no seed", "pass a count >= 1 or a list of seeds")
    if eval_data is None:
        raise OptkitError("eval_data", None, "is needed to score the students",
                          "pass e.g. eval_data={'test': dataset.test}")
    sets = dict(eval_data) if isinstance(eval_data, Mapping) else {"accuracy": eval_data}
    students, results, scores = [], [], {name: [] for name in sets}
    for seed in seed_list:
        set_seed(seed)
        student = make_student()
        results.append(train_student(student, data, seed=seed, **train_kw))
        students.append(student)
        for name, d in sets.items():
            scores[name].append(evaluate(student, d).accuracy)
    return SeedRuns(results[0].method, seed_list, students, results, scores)


def _check_seeds(seeds: Any) -> int:
    if isinstance(seeds, bool) or int(seeds) < 1:
        raise OptkitError("seeds", seeds, "must be at least 1", "pass 3 or more to see the spread")
    return int(seeds)


# =========================================================================== statistics over seeds

def _values(values: Iterable[float], parameter: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1 or len(arr) == 0 or not np.isfinite(arr).all():
        raise OptkitError(parameter, values, "must be a non-empty list of finite numbers (one per seed)",
                          "pass e.g. [0.861, 0.858, 0.866]")
    return arr


def summarize(results: Mapping[str, Iterable[float]], scale: float = 100.0) -> "pd.DataFrame":
    """One row per method: ``mean``, ``std`` (sample, ddof=1), ``min``, ``max``, ``n`` over its seeds.

    ``results`` maps a method's name to its per-seed values (e.g. accuracies in [0, 1]); ``scale``
    multiplies them (100 gives percent). Taught in 04_knowledge_distillation.
    """
    import pandas as pd

    rows = {}
    for name, vals in results.items():
        arr = _values(vals, f"results[{name!r}]") * scale
        rows[name] = {"mean": arr.mean(), "std": arr.std(ddof=1) if len(arr) > 1 else float("nan"),
                      "min": arr.min(), "max": arr.max(), "n": len(arr)}
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass(frozen=True)
class Difference:
    """``b - a`` seed by seed: ``mean`` and ``std`` of the paired differences, ``n`` seeds, and the 95 %
    confidence interval ``(low, high)`` of the mean difference (Student's t with n-1 degrees of
    freedom). ``inside_noise`` is True when that interval contains 0: the data do not show a
    difference. Values are in the units given (e.g. accuracy points).

    Taught in 04_knowledge_distillation.
    """

    mean: float
    std: float
    n: int
    low: float
    high: float

    @property
    def inside_noise(self) -> bool:
        return self.low <= 0.0 <= self.high

    def __repr__(self) -> str:
        verdict = "inside the noise" if self.inside_noise else "outside the noise"
        return (f"{self.mean:+.2f} (paired over {self.n} seeds: sd {self.std:.2f}, 95 % CI "
                f"[{self.low:+.2f}, {self.high:+.2f}]): {verdict}")


def paired_difference(a: Iterable[float], b: Iterable[float], scale: float = 100.0,
                      confidence: float = 0.95) -> Difference:
    """How much ``b`` beats ``a`` when run with the same seeds (same initial weights and batch order).

    Pairing removes the part of the spread that both share (a lucky initialization helps both), so
    a small but consistent gain can show with few seeds. With one seed no interval can be given
    (``low=-inf, high=inf``: always inside the noise). ``scale=100`` turns accuracies into points.

    Taught in 04_knowledge_distillation.
    """
    from scipy import stats

    xa, xb = _values(a, "a"), _values(b, "b")
    if len(xa) != len(xb):
        raise OptkitError("b", len(xb), f"must have one value per seed of a ({len(xa)})",
                          "run both methods with the same seeds")
    check_range("confidence", confidence, 0, 1, low_open=True, high_open=True)
    d = (xb - xa) * scale
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return Difference(mean, float("nan"), n, float("-inf"), float("inf"))
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Difference(mean, std, n, mean - half, mean + half)


def plot_runs(runs: Mapping[str, "SeedRuns"], score: str | None = None, ax=None, title: str | None = None,
              reference: str | None = None):
    """Each method's per-seed accuracies as dots, with its mean and +-1 sd as a bar; returns the closed Figure.

    Dots of the same seed are joined across methods by a faint line, so a paired gain (every seed
    up) is visible even when the spread between seeds is larger than the gain. ``score`` picks the
    evaluation set (default: the first one); ``reference`` draws that method's mean as a dashed line.

    Taught in 04_knowledge_distillation.
    """
    import matplotlib.pyplot as plt

    if not runs:
        raise OptkitError("runs", runs, "is empty", "pass {method name: SeedRuns}")
    names = list(runs)
    key = score or next(iter(runs[names[0]].scores))
    vals = np.array([[100 * v for v in runs[n].scores[key]] for n in names])  # (methods, seeds)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2.5, 3.4))
    else:
        fig = ax.figure
    pos = np.arange(len(names))
    for j in range(vals.shape[1]):
        ax.plot(pos, vals[:, j], color="0.75", lw=0.8, zorder=1)
        ax.scatter(pos, vals[:, j], s=18, color="tab:blue", zorder=2, label="one seed" if j == 0 else None)
    std = vals.std(axis=1, ddof=1) if vals.shape[1] > 1 else np.zeros(len(names))
    ax.errorbar(pos + 0.12, vals.mean(axis=1), yerr=std, fmt="o", color="tab:red", capsize=4,
                label="mean +- 1 sd", zorder=3)
    if reference is not None:
        ax.axhline(vals[names.index(reference)].mean(), color="tab:red", ls="--", lw=0.8, alpha=0.6)
    ax.set_xticks(pos, names, rotation=15, ha="right")
    ax.set_ylabel(f"{key} accuracy (%)")
    ax.set_title(title or f"{vals.shape[1]} seeds per method (same seed = same initial weights and batches)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
