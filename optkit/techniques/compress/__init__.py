"""Compression beyond quantization and pruning: shared weights, low rank, cheaper blocks.

- :mod:`.weight_sharing`: **weight sharing by k-means** (Deep Compression, Han et al. 2016):
  :func:`kmeans_1d`, the shared-weight layers :class:`SharedLinear` / :class:`SharedConv2d` (a
  trainable codebook plus one small index per weight), :func:`share_weights` / :func:`decompress`
  for a whole model, and the storage they really need (:func:`storage_report`, with
  :func:`index_bits`, :func:`pack_indices` / :func:`unpack_indices`);
- :mod:`.low_rank`: **low-rank factorization by SVD**: :func:`singular_values`, :func:`choose_rank`
  (by retained energy or by a target compression), :func:`factorize_linear` /
  :func:`factorize_conv2d` (drop-in :class:`LowRankLinear` / :class:`LowRankConv2d`) and
  :func:`factorize` for a whole model;
- :mod:`.blocks`: **efficient blocks**: :class:`ConvBNReLU` (a standard convolution),
  :class:`DepthwiseSeparableConv` (MobileNetV1) and :class:`InvertedResidual` (MobileNetV2), with
  the same input and output shapes so their parameters, MACs and latency can be compared;
- :mod:`.measuring`: **measuring them**: :func:`as_variant` (a compressed model as a
  ``variant.Variant``, sized by what it stores, run decompressed) and :func:`compare_blocks` (blocks
  timed in both memory layouts, interleaved, as Records under a workload of their own).

``layers=`` names the model's own modules (``"fc1"``), as everywhere in optkit.

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

from optkit.techniques.compress.blocks import ConvBNReLU, DepthwiseSeparableConv, InvertedResidual
from optkit.techniques.compress.low_rank import (LowRankConv2d, LowRankLinear, choose_rank, factorize, factorize_conv2d,
                                                 factorize_linear, singular_values)
from optkit.techniques.compress.measuring import LAYOUTS, as_variant, compare_blocks, forward_call
from optkit.techniques.compress.weight_sharing import (LayerStorage, SharedConv2d, SharedLinear, StorageReport,
                                                       decompress, index_bits, kmeans_1d, pack_indices,
                                                       share_weights, shared_layers, storage_report, unpack_indices)

__all__ = [
    # weight sharing
    "kmeans_1d",
    "SharedLinear",
    "SharedConv2d",
    "share_weights",
    "decompress",
    "shared_layers",
    "index_bits",
    "pack_indices",
    "unpack_indices",
    "LayerStorage",
    "StorageReport",
    "storage_report",
    # low rank
    "singular_values",
    "choose_rank",
    "LowRankLinear",
    "LowRankConv2d",
    "factorize_linear",
    "factorize_conv2d",
    "factorize",
    # blocks
    "ConvBNReLU",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    # measuring
    "as_variant",
    "forward_call",
    "compare_blocks",
    "LAYOUTS",
]
