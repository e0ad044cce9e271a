"""Pruning: zero the weights that matter least, then make the zeros pay.

Two kinds of pruning, and what each one buys:

- **Unstructured** (:mod:`.masks`): zero single weights by magnitude (:func:`prune_unstructured_`
  per layer, :func:`prune_global_` with one threshold, both in place), fold the masks in
  (:func:`make_permanent`), and measure what the zeros buy: :func:`sparsity_report`,
  :func:`compressed_size` (gzip, CSR), :func:`storage_stats` (nonzero parameters and gzip bytes, for a
  comparison's records), :func:`recalibrate_batchnorm`.
- **Structured** (:mod:`.graph`, :mod:`.structured`): remove whole channels, so the model is
  physically smaller and faster. :class:`DependencyGraph` traces the model with ``torch.fx``
  into :class:`Group` s of channels that must go together (residual adds included);
  :func:`prune_channels` removes the lowest-norm channels of each group.

:mod:`.crosscheck` checks structured pruning two ways: :func:`torch_pruning_channels` (the same cut
by Torch-Pruning, an optional dependency; :func:`shape_differences` compares the results) and
:func:`mask_channels_` (``ln_structured``: filters zeroed behind masks, shapes kept, no speed-up).

:mod:`.schedule` decides how much to prune: :func:`sensitivity_scan` (each layer alone) and
:func:`iterative_prune` (prune, fine-tune, repeat up to a ``sparsity``).

Taught in 03_pruning.
"""
from __future__ import annotations

from optkit.techniques.prune.crosscheck import mask_channels_, shape_differences, torch_pruning_channels
from optkit.techniques.prune.graph import ChannelGroup, DependencyGraph, Group, channel_groups
from optkit.techniques.prune.masks import (
    PRUNABLE_TYPES,
    LayerSparsity,
    SparsityReport,
    compressed_size,
    fine_grained_prune,
    is_pruned,
    magnitude_mask,
    make_permanent,
    mask_overhead_bytes,
    prunable_layers,
    prune_global,
    prune_global_,
    prune_unstructured,
    prune_unstructured_,
    recalibrate_batchnorm,
    serialized_size,
    sparsity_report,
    storage_stats,
)
from optkit.techniques.prune.schedule import (
    PruneHistory,
    PruneStep,
    SensitivityScan,
    iterative_prune,
    sensitivity_scan,
    sparsity_report_of,
)
from optkit.techniques.prune.structured import (
    channel_importance,
    prune_batchnorm,
    prune_channels,
    prune_conv_in_channels,
    prune_conv_out_channels,
    prune_linear_in_features,
    prune_linear_out_features,
)

__all__ = [
    # reports and sizes (masks)
    "LayerSparsity",
    "SparsityReport",
    "sparsity_report",
    "serialized_size",
    "compressed_size",
    "storage_stats",
    "mask_overhead_bytes",
    # unstructured (masks)
    "magnitude_mask",
    "fine_grained_prune",
    "prunable_layers",
    "prune_unstructured_",
    "prune_global_",
    "prune_unstructured",
    "prune_global",
    "make_permanent",
    "is_pruned",
    "recalibrate_batchnorm",
    # sensitivity and schedules (schedule)
    "SensitivityScan",
    "sensitivity_scan",
    "PruneStep",
    "PruneHistory",
    "iterative_prune",
    # dependency graph (graph)
    "DependencyGraph",
    "Group",
    "ChannelGroup",
    "channel_groups",
    # structured (structured)
    "prune_channels",
    "channel_importance",
    "prune_conv_out_channels",
    "prune_conv_in_channels",
    "prune_batchnorm",
    "prune_linear_in_features",
    "prune_linear_out_features",
    # cross-checks (crosscheck)
    "torch_pruning_channels",
    "shape_differences",
    "mask_channels_",
    # helpers
    "PRUNABLE_TYPES",
    "sparsity_report_of",
]
