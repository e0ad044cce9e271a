"""Checkers for notebook 04_knowledge_distillation's exercises.

Like :mod:`optkit.course.exercises`: each ``check_*`` runs the learner's function on hand-made cases,
prints ``✓`` or a ``✗`` line with a hint, returns True or False and never raises on a wrong
answer. ``reference_*`` are solutions to compare with after trying.

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

import math
from typing import Callable

from optkit.course.exercises import _report, _try

__all__ = [
    "check_kd_loss",
    "reference_kd_loss",
    "check_ema_update",
    "reference_ema_update",
]

# Hand-made logits: 3 examples, 4 classes; the teacher is confident on example 0, unsure on 2.
_STUDENT = [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, -0.4], [1.5, 1.4, -2.0, 0.3]]
_TEACHER = [[4.0, 1.0, -2.0, 0.5], [-1.0, 2.5, 0.0, 0.2], [1.0, 1.1, -1.0, 0.9]]
_LABELS = [0, 1, 3]


def reference_kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``, batch mean."""
    import torch.nn.functional as F

    t = float(temperature)
    log_q = F.log_softmax(student_logits / t, dim=1)
    log_p = F.log_softmax(teacher_logits / t, dim=1)
    soft = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean() * t * t
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def check_kd_loss(fn: Callable) -> bool:
    """Exercise 04.1: ``fn(student_logits, teacher_logits, labels, temperature, alpha)`` is the KD loss."""
    import torch

    s, t, y = torch.tensor(_STUDENT), torch.tensor(_TEACHER), torch.tensor(_LABELS)
    cases = [(4.0, 0.9), (1.0, 0.5), (2.0, 1.0), (3.0, 0.0), (8.0, 0.7)]
    for temperature, alpha in cases:
        got, err = _try(fn, s.clone(), t.clone(), y.clone(), temperature, alpha)
        want = float(reference_kd_loss(s, t, y, temperature, alpha))
        label = f"T={temperature}, alpha={alpha}"
        if err:
            return _report(False, f"kd_loss at {label} {err}. Hint: F.log_softmax(logits / T, dim=1) for both, "
                                  "then sum p * (log p - log q) over classes")
        try:
            value = float(got)
        except (TypeError, ValueError):
            return _report(False, f"at {label} it returned {type(got).__name__}; expected a scalar tensor")
        if math.isclose(value, want, rel_tol=1e-4, abs_tol=1e-6):
            continue
        no_t2 = float(reference_kd_loss(s, t, y, temperature, alpha)) if temperature == 1.0 else \
            alpha * float(reference_kd_loss(s, t, y, temperature, 1.0)) / temperature ** 2 + \
            (1 - alpha) * float(reference_kd_loss(s, t, y, temperature, 0.0))
        swapped = alpha * float(reference_kd_loss(t, s, y, temperature, 1.0)) + \
            (1 - alpha) * float(reference_kd_loss(s, t, y, temperature, 0.0))
        hint = "check the formula term by term"
        if math.isclose(value, no_t2, rel_tol=1e-4):
            hint = "the soft term is missing its T^2 factor (without it, its gradients shrink like 1/T^2)"
        elif math.isclose(value, swapped, rel_tol=1e-4):
            hint = "KL is taken the wrong way round: it is KL(teacher || student) = sum p_t (log p_t - log p_s)"
        return _report(False, f"at {label} got {value:.6f}, expected {want:.6f}. Hint: {hint}")
    return _report(True, f"matches the hand computation on {len(cases)} (T, alpha) pairs, from pure cross-entropy "
                         "(alpha=0) to soft targets only (alpha=1)")


def reference_ema_update(ema, weight, decay: float):
    """The new EMA tensor: ``decay * ema + (1 - decay) * weight``."""
    return decay * ema + (1 - decay) * weight


def check_ema_update(fn: Callable) -> bool:
    """Exercise 04.2: ``fn(ema, weight, decay)`` returns ``decay * ema + (1 - decay) * weight``."""
    import torch

    ema = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    weight = torch.tensor([[3.0, 2.0], [0.5, -4.0]])
    cases = [(0.9, ema, weight), (0.0, ema, weight), (0.99, weight, ema), (0.5, ema, ema)]
    for decay, e, w in cases:
        got, err = _try(fn, e.clone(), w.clone(), decay)
        want = reference_ema_update(e, w, decay)
        if err:
            return _report(False, f"ema_update with decay={decay} {err}. Hint: one line of arithmetic")
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return _report(False, f"with decay={decay} it returned {type(got).__name__}; expected a tensor of shape "
                                  f"{tuple(want.shape)} (return the new EMA)")
        if not torch.allclose(got, want, atol=1e-6):
            swapped = reference_ema_update(w, e, decay)
            hint = ("decay weighs the *old average*, 1 - decay the new weight" if torch.allclose(got, swapped)
                    else "ema = decay * ema + (1 - decay) * weight")
            return _report(False, f"with decay={decay} got {got.tolist()}, expected {want.tolist()}. Hint: {hint}")
    return _report(True, f"the EMA formula holds on {len(cases)} hand-made cases (decay 0 copies the weights)")
