"""Choosing a model's layers by name and swapping in a replacement: what :func:`share_weights`
(:mod:`.weight_sharing`) and :func:`factorize` (:mod:`.low_rank`) have in common.

``layers=`` here, as everywhere in optkit, names the model's own submodules (``"fc1"``,
``"features.0"``), never layer types.

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from optkit.core.errors import OptkitError

_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def _layers(model: nn.Module, layers: Iterable[str] | None, types=_LAYER_TYPES, what="Linear or Conv2d") -> list[str]:
    known = [n for n, m in model.named_modules() if isinstance(m, types)]
    if layers is None:
        return known
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        if name not in known:
            raise OptkitError("layers", name, f"is not a {what} layer of this model",
                              "use one of " + ", ".join(repr(k) for k in known))
    return names


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
