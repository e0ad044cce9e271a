"""The channel dependency graph: which layers' channels must be removed together.

Removing a conv's output channels forces its dependents to shrink with it: the BatchNorm after
it, the next conv's input channels, the linear head after global pooling. Channels joined by a
residual ``add`` must be removed *together* in every layer that writes to that sum, or the add
breaks. :class:`DependencyGraph` finds these coupled sets by tracing the model with ``torch.fx``
(the idea behind Torch-Pruning's ``DependencyGraph``, in miniature); each set is a
:class:`Group`. :func:`channel_groups` is the one-call form. :mod:`.structured` removes channels
group by group.

Taught in 03_pruning.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from optkit.core.errors import OptkitError

__all__ = ["Group", "ChannelGroup", "DependencyGraph", "channel_groups"]


@dataclass
class Group:
    """Channels that must be removed together: one "channel space" of the traced graph.

    ``producers`` write these channels (conv filters / linear rows); ``norms`` are BatchNorms over
    them; ``consumers`` read them, as ``(layer, block)`` where ``block`` is the number of input
    features per channel (H*W after a flatten, 1 otherwise). More than one producer means the
    channels meet in a residual ``add``. ``blocked_by`` says why the group cannot be pruned
    (it reaches the model output, the input, or an operation this tracer does not follow).
    """

    producers: list[str]
    norms: list[str]
    consumers: list[tuple[str, int]]
    channels: int
    blocked_by: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked_by and bool(self.producers)

    @property
    def residual(self) -> bool:
        return len(self.producers) > 1

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else "blocked: " + "; ".join(self.blocked_by)
        joined = " (joined by a residual add)" if self.residual else ""
        cons = ", ".join(f"{c}" + (f"[x{b}]" if b != 1 else "") for c, b in self.consumers)
        return (f"Group({self.channels} ch{joined}; written by {', '.join(self.producers) or '-'}; "
                f"norms {', '.join(self.norms) or '-'}; read by {cons or '-'}; {state})")


#: the 0.1 name of :class:`Group` (kept for one release)
ChannelGroup = Group


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def new(self) -> int:
        i = len(self.parent)
        self.parent[i] = i
        return i

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d,
                 nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d, nn.AvgPool1d,
                 nn.AdaptiveAvgPool1d)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.gelu,
                   torch.nn.functional.silu, torch.sigmoid, torch.tanh, torch.nn.functional.dropout,
                   torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
                   torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d,
                   torch.nn.functional.hardswish, torch.nn.functional.leaky_relu}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCTIONS = {torch.flatten}


def _trace(model: nn.Module, example_input: torch.Tensor):
    """``model`` as an fx ``GraphModule`` whose nodes carry their output shapes (``tensor_meta``)."""
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow and the like
        raise OptkitError("model", type(model).__name__, f"cannot be traced by torch.fx ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120]})",
                          "structured pruning follows dependencies through a traced graph; use a model "
                          "without data-dependent Python control flow, or Torch-Pruning") from None
    was_training = model.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as exc:
        raise OptkitError("example_input", tuple(getattr(example_input, "shape", ())),
                          f"does not run through the model ({type(exc).__name__})",
                          "pass a real input batch of the model's input shape") from None
    finally:
        model.train(was_training)
    return gm


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class DependencyGraph:
    """Channel spaces of a model traced by ``torch.fx`` on ``example_input``; :meth:`groups` lists them.

    Every tensor with a channel dimension (dim 1) belongs to a channel space. A conv or linear
    starts a new space (its output channels) and *consumes* the space it reads; BatchNorm,
    activations, pooling and ``flatten`` pass a space on; an ``add`` merges the spaces of its
    operands (a residual connection); any other operation *blocks* the spaces it touches, as do
    the model's input and output. The result, one :class:`Group` per space, is what
    :func:`~optkit.techniques.prune.structured.prune_channels` removes channels from.

    Taught in 03_pruning.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        if not isinstance(example_input, torch.Tensor):
            raise OptkitError("example_input", type(example_input).__name__, "is not a tensor",
                              "pass a real input batch, e.g. dataset.example_batch(2)")
        gm = _trace(model, example_input)
        self.uf = _UnionFind()
        self.space_of: dict[Any, int] = {}   # fx node -> space id (channel dim 1)
        self.block_of: dict[Any, int] = {}   # fx node -> features per channel (after flatten)
        self.info: dict[int, dict] = {}      # space id -> producers/norms/consumers/blocked/channels
        modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            self._visit(node, modules)
        self.gm = gm

    # ------------------------------------------------------------------ spaces

    def _new_space(self, channels: int) -> int:
        s = self.uf.new()
        self.info[s] = {"producers": [], "norms": [], "consumers": [], "blocked": [], "channels": channels}
        return s

    def _start(self, node, s: int) -> None:
        """``node`` outputs the channels of space ``s``, one feature each."""
        self.space_of[node] = s
        self.block_of[node] = 1

    def _produce(self, node, layer: str, channels: int) -> None:
        """``node`` (conv or linear ``layer``) writes a new space of ``channels`` channels."""
        s = self._new_space(channels)
        self.info[s]["producers"].append(layer)
        self._start(node, s)

    def _block(self, space_node, why: str) -> None:
        for a in ([space_node] if not isinstance(space_node, list) else space_node):
            if a in self.space_of:
                self.info[self.space_of[a]]["blocked"].append(why)

    def _pass(self, node, src) -> None:
        self.space_of[node] = self.space_of[src]
        self.block_of[node] = self.block_of.get(src, 1)

    def _consume(self, src, layer: str, block: int) -> None:
        self.info[self.uf.find(self.space_of[src])]["consumers"].append((layer, block))
        # consumers are attached to the root now; roots may merge later, so merged in groups()

    def _flatten(self, node, src, s_in, s_out, start, end, check_only: bool = False) -> bool:
        if s_in is None or s_out is None or len(s_in) < 2:
            return False
        ndim = len(s_in)
        end = end % ndim if end < 0 else end
        if start != 1 or end != ndim - 1 or len(s_out) != 2 or s_out[1] != math.prod(s_in[1:]):
            return False
        self.space_of[node] = self.space_of[src]
        self.block_of[node] = self.block_of.get(src, 1) * math.prod(s_in[2:])
        return True

    # ------------------------------------------------------------------ nodes

    def _visit(self, node, modules: dict[str, nn.Module]) -> None:
        """Place one fx node's output in a channel space (new, passed on, merged, or blocked)."""
        shp = _shape(node)
        channels = shp[1] if shp is not None and len(shp) >= 2 else 0
        if node.op == "placeholder":
            s = self._new_space(channels)
            self.info[s]["blocked"].append("the model input (its channels are fixed by the data)")
            self._start(node, s)
            return
        if node.op == "output":
            for a in node.all_input_nodes:
                self._block(a, "the model output (its size is fixed by the task)")
            return
        ins = [a for a in node.all_input_nodes if a in self.space_of]
        if node.op == "get_attr":
            return
        if node.op == "call_module":
            why = self._visit_module(node, modules[node.target], shp)
        elif node.op == "call_function":
            why = self._visit_function(node, ins, shp)
        elif node.op == "call_method":
            why = self._visit_method(node, shp)
        else:  # pragma: no cover - fx has no other ops
            why = f"node {node.name}"
        if why is None:
            return
        # unknown consumer: the channels feeding it cannot be changed safely
        self._block(ins, why)
        if shp is not None and len(shp) >= 2:
            s = self._new_space(channels)
            self.info[s]["blocked"].append(f"produced by {why}")
            self._start(node, s)

    def _visit_module(self, node, mod: nn.Module, shp) -> str | None:
        """Follow a ``call_module`` node; None when followed, else why it blocks."""
        src = node.args[0] if node.args else None
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups == 1 and src in self.space_of:
            self._consume(src, node.target, 1)
            self._produce(node, node.target, mod.out_channels)
            return None
        if isinstance(mod, nn.Linear) and src in self.space_of:
            src_shape = _shape(src)
            if src_shape is not None and len(src_shape) == 2:
                self._consume(src, node.target, self.block_of.get(src, 1))
                self._produce(node, node.target, mod.out_features)
                return None
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and src in self.space_of:
            s = self.space_of[src]
            self.info[self.uf.find(s)]["norms"].append(node.target)
            self._start(node, s)
            return None
        if isinstance(mod, _PASS_MODULES) and src in self.space_of:
            self._pass(node, src)
            return None
        if isinstance(mod, nn.Flatten) and src in self.space_of:
            if self._flatten(node, src, _shape(src), shp, mod.start_dim, mod.end_dim):
                return None
        return f"{node.target} ({type(mod).__name__}), which is not followed"

    def _visit_function(self, node, ins: list, shp) -> str | None:
        """Follow a ``call_function`` node (add, activations, flatten, scaling); None when followed."""
        if node.target in _ADD_FUNCTIONS and len(ins) >= 1 and shp is not None:
            same = [a for a in ins if _shape(a) == shp]
            if len(same) == len(ins):
                for a in ins[1:]:
                    self.uf.union(self.space_of[ins[0]], self.space_of[a])
                self._pass(node, ins[0])
                return None
        if node.target in _PASS_FUNCTIONS and ins and node.args[0] in self.space_of:
            self._pass(node, node.args[0])
            return None
        if node.target in _FLATTEN_FUNCTIONS and ins:
            src = node.args[0]
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if self._flatten(node, src, _shape(src), shp, start, end):
                return None
        if node.target in (operator.mul, torch.mul) and len(ins) == 1 and shp == _shape(ins[0]):
            self._pass(node, ins[0])  # scaling by a constant keeps channels
            return None
        return f"{getattr(node.target, '__name__', node.target)} at node {node.name}, which is not followed"

    def _visit_method(self, node, shp) -> str | None:
        """Follow a ``call_method`` node (activations, flatten/view, spatial pooling); None when followed."""
        src = node.args[0] if node.args else None
        if node.target in _PASS_METHODS and src in self.space_of:
            self._pass(node, src)
            return None
        if node.target in ("flatten", "view", "reshape") and src in self.space_of:
            if self._flatten(node, src, _shape(src), shp, 1, -1, check_only=node.target != "flatten"):
                return None
        if node.target in ("mean", "amax", "sum") and src in self.space_of:
            s_in = _shape(src)
            if s_in is not None and shp is not None and len(shp) >= 2 and shp[:2] == s_in[:2]:
                self._pass(node, src)  # pooling over spatial dims
                return None
        return f"method .{node.target}() at node {node.name}, which is not followed"

    # ------------------------------------------------------------------ result

    def groups(self) -> list[Group]:
        """One :class:`Group` per channel space that some conv or linear writes or reads."""
        merged: dict[int, dict] = {}
        for s, info in self.info.items():
            root = self.uf.find(s)
            g = merged.setdefault(root, {"producers": [], "norms": [], "consumers": [], "blocked": [],
                                         "channels": self.info[root]["channels"]})
            for key in ("producers", "norms", "consumers", "blocked"):
                for item in info[key]:
                    if item not in g[key]:
                        g[key].append(item)
        return [Group(g["producers"], g["norms"], g["consumers"], g["channels"], g["blocked"])
                for g in merged.values() if g["producers"] or g["consumers"]]


def channel_groups(model: nn.Module, example_input: torch.Tensor) -> list[Group]:
    """Trace ``model`` and list its groups of coupled channels (see :class:`Group`).

    A conv's output channels flow through BatchNorm, activations and pooling unchanged; an
    ``add`` joins the channel spaces of its inputs (a residual connection), so every conv that
    writes into the sum is in one group; ``flatten`` of an (N, C, H, W) map hands each channel
    H*W features of the next linear. Operations the tracer does not know (``cat``, reshapes to
    other shapes, grouped convs, the model's output) block the groups they touch.
    ``DependencyGraph(model, example_input).groups()`` in one call.

    Taught in 03_pruning.
    """
    return DependencyGraph(model, example_input).groups()
