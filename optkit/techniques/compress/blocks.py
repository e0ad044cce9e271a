"""Efficient convolution blocks with the same input and output shapes, so their parameters, MACs
and latency can be compared: :class:`ConvBNReLU` (a standard convolution, the reference),
:class:`DepthwiseSeparableConv` (MobileNetV1) and :class:`InvertedResidual` (MobileNetV2).

Taught in 05_compression_and_efficient_architectures.
"""
from __future__ import annotations

import torch
from torch import nn

from optkit.core.errors import OptkitError, check_int

__all__ = ["ConvBNReLU", "DepthwiseSeparableConv", "InvertedResidual"]


class ConvBNReLU(nn.Sequential):
    """A standard ``k x k`` convolution (no bias) + BatchNorm + ReLU: the reference the blocks are
    measured against. Taught in 05_compression_and_efficient_architectures.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation: type[nn.Module] = nn.ReLU):
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), activation())


class DepthwiseSeparableConv(nn.Sequential):
    """MobileNetV1's block: a depthwise 3x3 conv (one filter per channel, ``groups=in``) + BN + ReLU,
    then a pointwise 1x1 conv mixing channels + BN + ReLU.

    MACs per output pixel ``9 * C_in + C_in * C_out`` instead of ``9 * C_in * C_out``. Taught in
    05_compression_and_efficient_architectures.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),
                         ConvBNReLU(in_channels, out_channels, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1 (``C_in -> t * C_in``) + BN + ReLU6, depthwise 3x3 + BN + ReLU6,
    project 1x1 back down (``-> C_out``) + BN with **no** activation (the linear bottleneck), and a
    residual add when ``stride == 1`` and ``C_in == C_out``.

    ``t`` is ``expansion`` (6 in the paper; 1 skips the expansion). Taught in
    05_compression_and_efficient_architectures.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6):
        super().__init__()
        expansion = check_int("expansion", expansion, 1)
        if stride not in (1, 2):
            raise OptkitError("stride", stride, "must be 1 or 2", "pass stride=1 (same size) or 2 (half)")
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expansion = expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out

    def extra_repr(self) -> str:
        return f"expansion={self.expansion}, residual={self.use_residual}"
