"""The distillation losses and their argument checks.

:func:`kd_loss` is ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
CE(student, y)`` (Hinton et al., 2015), written out term by term; :func:`soft_target_loss` is the
first term alone. :func:`check_temperature` and :func:`check_alpha` are the checks every caller of
``T`` and ``alpha`` shares (the trainer included).

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch.nn import functional as F

from optkit.core.errors import OptkitError


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
