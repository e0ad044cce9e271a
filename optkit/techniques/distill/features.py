"""Feature distillation (FitNets-style hints): read, project and match intermediate outputs.

:class:`FeatureHooks` records the outputs of named submodules through forward hooks (no special
``forward`` needed); :func:`projection` builds the learned 1x1 conv / linear map from the
student's width to the teacher's; :func:`feature_loss` is the mean squared error between the two.

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from optkit.core.errors import OptkitError


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
