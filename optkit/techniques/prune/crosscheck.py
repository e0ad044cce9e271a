"""Cross-checks of structured pruning: the same cut by Torch-Pruning, and the same cut as masks only.

- :func:`torch_pruning_channels` removes channels with Torch-Pruning (``torch-pruning`` on PyPI,
  an optional dependency imported only here), the maintained reference for dependency-aware
  removal, so optkit's own :func:`~optkit.techniques.prune.prune_channels` can be checked
  against it: :func:`shape_differences` lists the tensors whose shapes differ.
- :func:`mask_channels_` is what ``torch.nn.utils.prune.ln_structured`` does: it zeroes whole
  filters but keeps every tensor its shape, so dense kernels do the same work. Timed beside a
  physically smaller model, it shows that structure pays only once the channels are gone.

Taught in 03_pruning.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from optkit.core.errors import OptkitError, check_choice
from optkit.techniques.prune.masks import _fraction, _module, _resolve_layers, is_pruned

__all__ = ["torch_pruning_channels", "shape_differences", "mask_channels_"]


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError:
        raise OptkitError("torch_pruning", "not installed", "is needed for this cross-check (an optional "
                          "dependency of optkit)", "pip install torch-pruning (it needs only torch and numpy)") from None
    return torch_pruning


def _last_linear(model: nn.Module) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1:]


def torch_pruning_channels(model: nn.Module, channel_ratio: float, example_input: torch.Tensor, *,
                           p: int = 1, ignored: Iterable[str] | None = None) -> nn.Module:
    """A copy of ``model`` with ``channel_ratio`` of the channels of every group removed by Torch-Pruning.

    Torch-Pruning's ``MetaPruner`` with ``MagnitudeImportance(p=p)`` (L1 by default), one step,
    the same ratio in every group. ``ignored`` names layers whose outputs stay (default: the last
    ``nn.Linear``, the classifier, whose outputs are the classes). Its importance sums the
    magnitudes of *every* tensor in a group (BatchNorm scales and the next layers' input weights
    too) where optkit's :func:`~optkit.techniques.prune.prune_channels` ranks by the producers'
    filters, so the shapes should agree and the kept channels may not. The original model is
    untouched. Raises :class:`OptkitError` when ``torch_pruning`` is not installed.

    Taught in 03_pruning.
    """
    ratio = _fraction("channel_ratio", channel_ratio)
    if not isinstance(example_input, torch.Tensor):
        raise OptkitError("example_input", type(example_input).__name__, "is not a tensor",
                          "pass a real input batch, e.g. dataset.example_batch(1)")
    if is_pruned(model):
        raise OptkitError("model", type(model).__name__, "still carries unstructured pruning masks",
                          "call make_permanent(model) first, or prune channels of the dense model")
    names = _last_linear(model) if ignored is None else list([ignored] if isinstance(ignored, str) else ignored)
    known = dict(model.named_modules())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise OptkitError("ignored", unknown, "names no module of the model",
                          "use names from [n for n, _ in model.named_modules()]")
    tp = _torch_pruning()
    pruned = copy.deepcopy(model)
    was = pruned.training
    pruned.eval()
    pruner = tp.pruner.MetaPruner(pruned, example_input, importance=tp.importance.MagnitudeImportance(p=p),
                                  pruning_ratio=ratio, ignored_layers=[pruned.get_submodule(n) for n in names])
    pruner.step()
    return pruned.train(was)


def shape_differences(a: nn.Module, b: nn.Module) -> dict[str, tuple]:
    """``{tensor name: (shape in a, shape in b)}`` for every parameter or buffer whose shape differs
    or that only one model has (its missing side is None). Empty: the two models have one shape.

    Taught in 03_pruning.
    """
    for parameter, value in (("a", a), ("b", b)):
        if not isinstance(value, nn.Module):
            raise OptkitError(parameter, type(value).__name__, "is not a torch.nn.Module", "pass a model")
    sa = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    sb = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    return {k: (sa.get(k), sb.get(k)) for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)}


def mask_channels_(model: nn.Module, channel_ratio: float, layers: Iterable[str] | None = None, *,
                   norm: str = "l1") -> nn.Module:
    """Zero ``channel_ratio`` of the output filters of each conv (lowest L1 or L2 norm), in place.

    ``torch.nn.utils.prune.ln_structured(module, "weight", amount=channel_ratio, n=1 or 2, dim=0)``
    on every conv with ``groups=1`` in ``layers`` (default: all of them). The filters become zeros
    behind a mask; every tensor keeps its shape, so dense kernels do exactly the work they did
    before (compare :func:`~optkit.techniques.prune.prune_channels`, which removes them). Each
    layer is ranked on its own, not by coupled groups: zeroing needs no dependency graph because
    nothing changes shape. Returns ``model``; :func:`~optkit.techniques.prune.make_permanent`
    folds the masks in.

    Taught in 03_pruning.
    """
    ratio = _fraction("channel_ratio", channel_ratio)
    check_choice("norm", norm, ["l1", "l2"])
    names = [n for n in _resolve_layers(model, layers)
             if isinstance(_module(model, n), nn.Conv2d) and _module(model, n).groups == 1]
    if not names:
        raise OptkitError("layers", layers, "selects no conv layer with groups=1",
                          "pass conv layer names, or None for every conv")
    for name in names:
        tprune.ln_structured(_module(model, name), "weight", amount=ratio, n=1 if norm == "l1" else 2, dim=0)
    return model
