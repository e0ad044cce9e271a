"""Structured (channel) pruning: remove whole filters so the model is physically smaller and faster.

The verb-object primitives (:func:`prune_conv_out_channels` and friends) shrink one module at a
time and know nothing about dependencies: that is their point in the lesson. :func:`prune_channels`
uses the :class:`~optkit.techniques.prune.graph.DependencyGraph` to remove the lowest-norm
channels (:func:`channel_importance`) of each coupled :class:`~optkit.techniques.prune.graph.Group`
at once, following residual connections, and returns a new, smaller dense model.

Taught in 03_pruning.
"""
from __future__ import annotations

import copy
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from optkit.core.errors import OptkitError, check_choice, check_int
from optkit.core.deprecation import renamed_keyword
from optkit.techniques.prune.graph import Group, channel_groups
from optkit.techniques.prune.masks import _fraction, _module, _set_module, is_pruned, prunable_layers

__all__ = [
    "prune_channels",
    "channel_importance",
    "prune_conv_out_channels",
    "prune_conv_in_channels",
    "prune_batchnorm",
    "prune_linear_in_features",
    "prune_linear_out_features",
]


# =========================================================================== structured: primitives

def _as_index(keep: Sequence[int] | torch.Tensor, size: int, parameter: str = "keep") -> torch.Tensor:
    idx = torch.as_tensor(keep, dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise OptkitError(parameter, list(idx.tolist()), "keeps no channel", "keep at least one channel")
    if int(idx.min()) < 0 or int(idx.max()) >= size:
        raise OptkitError(parameter, idx.tolist()[:8], f"has indices outside 0..{size - 1}", "pass valid channel ids")
    return idx


def _copy_into(new: nn.Module, old: nn.Module) -> nn.Module:
    new.train(old.training)
    return new.to(device=next(old.parameters()).device, dtype=next(old.parameters()).dtype)


def prune_conv_out_channels(conv: nn.Conv2d, keep) -> nn.Conv2d:
    """A new conv with only the output filters in ``keep`` (weights and bias copied). Pure.

    Taught in 03_pruning.
    """
    if conv.groups != 1:
        raise OptkitError("conv", conv, "is a grouped/depthwise conv", "only groups=1 convs are pruned here")
    idx = _as_index(keep, conv.out_channels)
    new = type(conv)(conv.in_channels, len(idx), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     1, conv.bias is not None, conv.padding_mode)
    new = _copy_into(new, conv)
    with torch.no_grad():
        new.weight.copy_(conv.weight[idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[idx])
    return new


def prune_conv_in_channels(conv: nn.Conv2d, keep) -> nn.Conv2d:
    """A new conv reading only the input channels in ``keep``. Pure.

    Taught in 03_pruning.
    """
    if conv.groups != 1:
        raise OptkitError("conv", conv, "is a grouped/depthwise conv", "only groups=1 convs are pruned here")
    idx = _as_index(keep, conv.in_channels)
    new = type(conv)(len(idx), conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     1, conv.bias is not None, conv.padding_mode)
    new = _copy_into(new, conv)
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def prune_batchnorm(bn: nn.modules.batchnorm._BatchNorm, keep) -> nn.modules.batchnorm._BatchNorm:
    """A new BatchNorm over only the channels in ``keep`` (affine params and running stats). Pure.

    Taught in 03_pruning.
    """
    idx = _as_index(keep, bn.num_features)
    new = type(bn)(len(idx), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats)
    new.train(bn.training)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[idx])
            new.bias.copy_(bn.bias[idx])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.to(bn.running_mean.device if bn.running_mean is not None else "cpu")


def prune_linear_in_features(linear: nn.Linear, keep, block: int = 1) -> nn.Linear:
    """A new linear reading only input channels ``keep``; each channel spans ``block`` features.

    ``block`` is H*W when the linear follows ``flatten`` of an (N, C, H, W) map (channel c owns
    features c*H*W .. c*H*W + H*W - 1); 1 after global pooling. Pure.

    Taught in 03_pruning.
    """
    if linear.in_features % block:
        raise OptkitError("block", block, f"does not divide in_features={linear.in_features}",
                          "pass H*W of the flattened feature map")
    idx = _as_index(keep, linear.in_features // block)
    cols = (idx[:, None] * block + torch.arange(block)[None, :]).flatten()
    new = _copy_into(nn.Linear(len(cols), linear.out_features, linear.bias is not None), linear)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, cols])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def prune_linear_out_features(linear: nn.Linear, keep) -> nn.Linear:
    """A new linear producing only the output features in ``keep``. Pure.

    Taught in 03_pruning.
    """
    idx = _as_index(keep, linear.out_features)
    new = _copy_into(nn.Linear(linear.in_features, len(idx), linear.bias is not None), linear)
    with torch.no_grad():
        new.weight.copy_(linear.weight[idx])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[idx])
    return new


# =========================================================================== structured: groups

def channel_importance(model: nn.Module, group: Group, norm: str = "l1") -> torch.Tensor:
    """Importance of each channel of ``group``: the L1 or L2 norm of its filters, summed over producers.

    Taught in 03_pruning.
    """
    check_choice("norm", norm, ["l1", "l2"])
    p = 1 if norm == "l1" else 2
    score = torch.zeros(group.channels)
    with torch.no_grad():
        for name in group.producers:
            w = _module(model, name).weight.detach().float().cpu()
            score += w.reshape(w.shape[0], -1).norm(p=p, dim=1)
    return score


def _apply_keep(model: nn.Module, group: Group, keep: torch.Tensor) -> None:
    for name in group.producers:
        m = _module(model, name)
        new = prune_linear_out_features(m, keep) if isinstance(m, nn.Linear) else prune_conv_out_channels(m, keep)
        _set_module(model, name, new)
    for name in group.norms:
        _set_module(model, name, prune_batchnorm(_module(model, name), keep))
    for name, block in group.consumers:
        m = _module(model, name)
        new = prune_linear_in_features(m, keep, block) if isinstance(m, nn.Linear) else prune_conv_in_channels(m, keep)
        _set_module(model, name, new)


def _plan(model: nn.Module, channel_ratio: float | Mapping[str, float], layers: Iterable[str] | None,
          groups: list[Group]) -> dict[int, tuple[Group, float, str]]:
    """The groups to prune, each with its ratio and the layer that asked for it; refuses what cannot be pruned."""
    by_layer = {name: g for g in groups for name in g.producers}
    known = [n for n in prunable_layers(model) if n in by_layer and by_layer[n].prunable]
    if isinstance(channel_ratio, Mapping):
        requested = {}
        for name, r in channel_ratio.items():
            requested[name] = _fraction(f"channel_ratio[{name!r}]", r)
    else:
        r = _fraction("channel_ratio", channel_ratio)
        if layers is None:
            requested = {n: r for n in known}
        else:
            requested = {n: r for n in ([layers] if isinstance(layers, str) else layers)}
    parameter = "layers" if not isinstance(channel_ratio, Mapping) else "channel_ratio"
    all_layers = prunable_layers(model)
    plan: dict[int, tuple[Group, float, str]] = {}
    for name, r in requested.items():
        if name not in all_layers:
            raise OptkitError(parameter, name, "is not a conv or linear layer of this model",
                              "use one of the prunable layers: " + ", ".join(repr(k) for k in known))
        g = by_layer.get(name)
        if g is None or not g.prunable:
            reason = "; ".join(g.blocked_by) if g is not None else "its output is not followed by the tracer"
            raise OptkitError(parameter, name, f"cannot be pruned structurally: its output channels feed {reason}",
                              "prune another layer; prunable: " + ", ".join(repr(k) for k in known))
        key = id(g)
        if key in plan and plan[key][1] != r:
            raise OptkitError("channel_ratio", {plan[key][2]: plan[key][1], name: r},
                              f"gives two ratios to one group of coupled channels ({', '.join(g.producers)})",
                              "give every layer joined by a residual add the same ratio")
        plan[key] = (g, r, name)
    return plan


def _check_still_runs(pruned: nn.Module, model: nn.Module, example_input: torch.Tensor) -> None:
    try:
        was = pruned.training
        pruned.eval()
        with torch.no_grad():
            pruned(example_input)
        pruned.train(was)
    except Exception as exc:
        raise OptkitError("model", type(model).__name__,
                          f"no longer runs after channel removal ({type(exc).__name__}: {str(exc)[:160]}); its "
                          "forward probably hard-codes a channel count",
                          "compute sizes from tensor shapes in forward (x.flatten(1), x.shape[1]), "
                          "or prune other layers") from None


@renamed_keyword("ratio", "channel_ratio")
def prune_channels(model: nn.Module, channel_ratio: float | Mapping[str, float], example_input: torch.Tensor, *,
                   layers: Iterable[str] | None = None, norm: str = "l1", round_to: int = 1,
                   inplace: bool = False) -> nn.Module:
    """Remove the lowest-norm output channels of conv (and hidden linear) layers; return a smaller dense model.

    ``channel_ratio`` is the fraction of channels to remove: one number for every prunable group
    (or for the groups of ``layers``), or ``{layer_name: channel_ratio}``. Each named layer's
    whole :class:`~optkit.techniques.prune.graph.Group` is pruned: its BatchNorms, the next
    convs' input channels and the linear head shrink with it. **Residual connections**: channels
    joined by an ``add`` are removed together from every conv writing into the sum (the block's
    last conv, the shortcut's conv, the stem), the same indices everywhere, ranked by their
    summed filter norms (as Torch-Pruning does), because an add needs both operands to have the
    same channels. Pruning only each block's inner conv is the special case
    ``layers=[those convs]``; it never touches the residual stream and removes less.

    Raises :class:`OptkitError` for a ratio outside [0, 1), an unknown layer name (listing the
    prunable ones), a layer whose channels cannot be shrunk (they are the model's output, or
    reach an operation the tracer does not follow), or two different ratios for one group.
    The original model is left untouched unless ``inplace``. The model must still run on
    ``example_input`` afterwards; that is checked. (``ratio=``, the 0.1 name of
    ``channel_ratio``, still works with a ``DeprecationWarning``.)

    Taught in 03_pruning.
    """
    check_choice("norm", norm, ["l1", "l2"])
    check_int("round_to", round_to, 1)  # 1, or 8 for SIMD-friendly widths
    if is_pruned(model):
        raise OptkitError("model", type(model).__name__, "still carries unstructured pruning masks",
                          "call make_permanent(model) first, or prune channels of the dense model")
    plan = _plan(model, channel_ratio, layers, channel_groups(model, example_input))
    pruned = model if inplace else copy.deepcopy(model)
    for g, r, _ in plan.values():
        n_keep = g.channels - int(round(r * g.channels))
        if round_to > 1:
            n_keep = max(round_to, int(round(n_keep / round_to)) * round_to)
        n_keep = max(1, min(g.channels, n_keep))
        if n_keep == g.channels:
            continue
        score = channel_importance(pruned, g, norm)
        keep = torch.sort(torch.topk(score, n_keep, largest=True, sorted=False).indices).values
        _apply_keep(pruned, g, keep)
    _check_still_runs(pruned, model, example_input)
    return pruned
