"""Checkers for the exercises of notebook 01_pytorch_inference_essentials (see :mod:`optkit.course.exercises`).

Taught in 01_pytorch_inference_essentials.
"""
from __future__ import annotations

from typing import Callable

from optkit.course.exercises import _report, _try

__all__ = [
    "reference_predict",
    "check_predict",
    "reference_export_dynamic",
    "check_export_dynamic",
]


def reference_predict(model, x):
    """Class ids for ``x`` in eval mode without autograd, leaving ``model`` in the mode it was in."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model(x).argmax(dim=1)
    finally:
        model.train(was_training)


def check_predict(fn: Callable) -> bool:
    """Exercise 01.1: ``fn(model, x)`` predicts like an eval-mode model and restores the mode."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():  # make running stats differ from any single batch's stats
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(2.0)
    x = torch.randn(5, 1, 6, 6)  # latency-style input is enough: this checks mechanics, not accuracy
    expected = reference_predict(model, x)
    model.train()
    got, err = _try(fn, model, x)
    if err:
        return _report(False, f"predict {err}")
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return _report(False, f"predict returned {type(got).__name__} {getattr(got, 'shape', '')}; expected class ids "
                              f"of shape {tuple(expected.shape)}. Hint: argmax over dim 1")
    if got.requires_grad:
        return _report(False, "the result still requires grad: run the model under torch.inference_mode()")
    if not torch.equal(got, expected):
        return _report(False, "predictions differ from an eval-mode model: BatchNorm used batch statistics or "
                              "Dropout was active. Hint: model.eval() before the forward pass")
    if not model.training:
        return _report(False, "predictions are right but the model was left in eval mode; a caller that was "
                              "training it would silently stop updating BatchNorm. Restore model.train(was_training)")
    return _report(True, "eval-mode predictions without autograd, and the model's mode restored")


def reference_export_dynamic(model, example):
    """``torch.export`` with a dynamic batch dimension (named ``batch``) on the first input."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def check_export_dynamic(fn: Callable) -> bool:
    """Exercise 01.2: ``fn(model, example)`` returns an ExportedProgram that runs at any batch size."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    example = torch.randn(2, 1, 8, 8)
    program, err = _try(fn, model, example)
    if err:
        return _report(False, f"export {err}")
    if not isinstance(program, torch.export.ExportedProgram):
        return _report(False, f"returned {type(program).__name__}; expected torch.export.ExportedProgram")
    for bs in (1, 7):
        x = torch.randn(bs, 1, 8, 8)
        try:
            out = program.module()(x)
        except Exception as exc:
            return _report(False, f"the program fails at batch {bs} ({type(exc).__name__}): the batch dimension is "
                                  "static. Hint: dynamic_shapes=({0: torch.export.Dim('batch')},)")
        with torch.no_grad():
            if not torch.allclose(out, model(x), atol=1e-5):
                return _report(False, f"outputs at batch {bs} differ from the eager model")
    return _report(True, "the exported program runs at batch 1 and 7 and matches the eager model")
