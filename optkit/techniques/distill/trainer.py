"""The trainer: :func:`train_student` and the :class:`Distilled` result it returns.

:func:`train_student` runs every method of the notebook (plain cross-entropy, soft targets, soft
targets + features, EMA self-distillation) with identical initial weights and batch order per
seed. Its steps: ``_checked_setup`` (arguments and data), ``_add_projections`` (the learned maps
for feature distillation, shaped from one example), then ``_train_epoch`` once per epoch, each
batch's loss from ``_batch_loss``. A frozen teacher's cached :class:`TeacherOutputs` are looked up
by example index, so distilling costs little more than training from scratch.

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from optkit.core import progress as _progress
from optkit.core.errors import OptkitError, check_range
from optkit.techniques.distill.features import FeatureHooks, feature_loss, projection
from optkit.techniques.distill.losses import check_alpha, check_temperature, kd_loss, soft_target_loss
from optkit.techniques.distill.teachers import EMATeacher, TeacherOutputs, _as_xy, _check_decay


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


def _checked_labelled(labelled: Any, n: int) -> torch.Tensor | None:
    """``labelled`` as a bool tensor of length ``n`` (None stays None: every label is used)."""
    if labelled is None:
        return None
    try:
        mask = torch.as_tensor(labelled)
    except (TypeError, ValueError, RuntimeError):
        mask = None
    if mask is None or mask.dtype != torch.bool or mask.shape != (n,):
        raise OptkitError("labelled", getattr(labelled, "shape", type(labelled).__name__),
                          f"must be a boolean mask with one entry per training example ({n:,})",
                          "pass e.g. numpy.arange(n) < n_labelled, or None to use every label")
    if not bool(mask.any()):
        raise OptkitError("labelled", "no True entry", "leaves no label to train on",
                          "mark at least one example as labelled, or pass None")
    return mask


def _checked_setup(data: Any, teacher: Any, temperature: Any, alpha: Any, feature_layers: Any,
                   feature_weight: Any, ema_decay: Any, epochs: Any, batch_size: Any, lr: Any):
    """Check :func:`train_student`'s arguments against each other and read ``data``.

    Returns ``(alpha, temperature, feature_layers as a dict, x, y, cached)``; ``cached`` is the
    teacher's :class:`TeacherOutputs` when it was given as such, else None.
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
    return a, t, feature_layers, x, y, cached


def _add_projections(projections: nn.ModuleDict, student: nn.Module, teacher: Any,
                     cached: TeacherOutputs | None, feature_layers: dict[str, str], x: torch.Tensor,
                     s_hooks: FeatureHooks, t_hooks: FeatureHooks | None) -> None:
    """Fill ``projections`` with one learned map per (student layer, teacher layer) pair.

    The shapes come from one example run through both models (the teacher only when its features
    are not cached), with the student briefly in eval mode.
    """
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


@dataclass
class _Run:
    """Everything one training run of :func:`train_student` carries from epoch to epoch."""

    student: nn.Module
    teacher: Any
    cached: TeacherOutputs | None
    ema: EMATeacher | None
    projections: nn.ModuleDict
    s_hooks: FeatureHooks | None
    t_hooks: FeatureHooks | None
    feature_layers: dict[str, str]
    feature_weight: float
    temperature: float
    alpha: float
    use_soft: bool
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    epochs: Any  # as given (the progress bar prints it)
    progress: bool
    labelled: torch.Tensor | None = None  # rows whose labels the hard term may use (None: all)
    label_smoothing: float = 0.0


def _batch_loss(run: _Run, logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor,
                idx: torch.Tensor) -> torch.Tensor:
    """One batch's loss: cross-entropy or :func:`kd_loss`, plus ``feature_weight *`` :func:`feature_loss` per pair.

    With a ``labelled`` mask the hard term is the cross-entropy over the batch's labelled rows only
    (zero when it has none), while the soft term covers every row.
    """
    plain = run.labelled is None and run.label_smoothing == 0.0
    if not run.use_soft:
        loss = _hard_loss(run, logits, yb, idx)
    elif not plain:
        t_logits = _teacher_logits(run, xb, idx)
        loss = run.alpha * soft_target_loss(logits, t_logits, run.temperature)
        if run.alpha < 1.0:
            loss = loss + (1.0 - run.alpha) * _hard_loss(run, logits, yb, idx)
    else:
        loss = kd_loss(logits, _teacher_logits(run, xb, idx), yb, run.temperature, run.alpha)
    if run.feature_layers:
        if run.cached is None and not run.use_soft:
            with torch.no_grad():
                run.teacher(xb)
        for s_name, t_name in run.feature_layers.items():
            t_feat = run.cached.features[t_name][idx] if run.cached is not None else run.t_hooks[t_name]
            loss = loss + run.feature_weight * feature_loss(
                run.s_hooks[s_name], t_feat, run.projections[s_name.replace(".", "_")])
    return loss


def _hard_loss(run: _Run, logits: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the labels (smoothed by ``label_smoothing``), over the labelled rows only."""
    if run.labelled is not None:
        keep = run.labelled[idx]
        if not bool(keep.any()):
            return logits.sum() * 0.0
        logits, yb = logits[keep], yb[keep]
    return F.cross_entropy(logits, yb, label_smoothing=run.label_smoothing)


def _teacher_logits(run: _Run, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    if run.ema is not None:
        return run.ema(xb)
    if run.cached is not None:
        return run.cached.logits[idx]
    with torch.no_grad():
        return run.teacher(xb)


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One pass over the data in a freshly seeded order; returns the epoch's row of the history."""
    run.student.train()
    run.projections.train()
    n = len(run.x)
    perm = torch.randperm(n, generator=run.generator)
    batches = [perm[i:i + run.batch_size] for i in range(0, n, run.batch_size)]
    batches = _progress.bar(batches, enabled=run.progress, desc=f"epoch {epoch}/{run.epochs}", leave=False)
    loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
    for idx in batches:
        xb, yb = run.x[idx], run.y[idx]
        logits = run.student(xb)
        loss = _batch_loss(run, logits, xb, yb, idx)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.student)
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(idx)
    return {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
            "seconds": time.perf_counter() - t0}


def train_student(student: nn.Module, data: Any, *, teacher: nn.Module | TeacherOutputs | None = None,
                  temperature: float = 4.0, alpha: float = 0.9,
                  feature_layers: Mapping[str, str] | None = None, feature_weight: float = 1.0,
                  ema_decay: float | None = None, epochs: int = 2, batch_size: int = 128, lr: float = 2e-3,
                  weight_decay: float = 0.01, seed: int = 0, progress: bool = False,
                  labelled: Any = None, label_smoothing: float = 0.0) -> Distilled:
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

    - ``labelled``: a boolean mask over ``data``'s examples; the hard (label) term uses only the
      masked rows, the soft term every row (fewer labels than images, the teacher covering the
      rest). ``label_smoothing`` (in [0, 1)) smooths the hard term's targets, as
      ``nn.CrossEntropyLoss(label_smoothing=...)``: the control for self-distillation.

    ``data`` is an optkit Dataset (its train split), a Split or an ``(x, y)`` pair. Batches are
    drawn by a permutation seeded with ``seed`` each epoch, so two runs with the same ``seed`` and
    the same initial weights see the same batches in the same order whatever the method. AdamW
    with a cosine decay to zero, as :func:`optkit.data.models.train`. The student ends in eval mode.

    Taught in 04_knowledge_distillation.
    """
    a, t, feature_layers, x, y, cached = _checked_setup(data, teacher, temperature, alpha, feature_layers,
                                                        feature_weight, ema_decay, epochs, batch_size, lr)
    mask = _checked_labelled(labelled, len(x))
    check_range("label_smoothing", label_smoothing, 0, 1, high_open=True)
    use_soft = (teacher is not None and a > 0) or ema_decay is not None
    method = _method(teacher, ema_decay, a, feature_layers)
    if label_smoothing > 0 and not use_soft:
        method = f"cross-entropy, label smoothing {float(label_smoothing):g}"

    # --- hooks and projections (shapes from one example)
    s_hooks = FeatureHooks(student, list(feature_layers)) if feature_layers else None
    t_hooks = (FeatureHooks(teacher, list(feature_layers.values()), detach=True)
               if feature_layers and cached is None else None)
    projections = nn.ModuleDict()
    try:
        if feature_layers:
            _add_projections(projections, student, teacher, cached, feature_layers, x, s_hooks, t_hooks)
        if isinstance(teacher, nn.Module):
            teacher.eval()

        from optkit.data.models import set_seed

        set_seed(seed)
        ema = EMATeacher(student, decay=ema_decay) if ema_decay is not None else None
        params = list(student.parameters()) + list(projections.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(len(x) / int(batch_size))
        total = int(epochs) * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        run = _Run(student, teacher, cached, ema, projections, s_hooks, t_hooks, feature_layers, feature_weight,
                   t, a, use_soft, optimizer, scheduler, torch.Generator().manual_seed(int(seed)), x, y,
                   int(batch_size), epochs, progress, mask, float(label_smoothing))
        start = time.perf_counter()
        history = [_train_epoch(run, epoch) for epoch in range(1, int(epochs) + 1)]
    finally:
        for h in (s_hooks, t_hooks):
            if h is not None:
                h.remove()
    student.eval()
    return Distilled(method, history, projections, ema, time.perf_counter() - start)
