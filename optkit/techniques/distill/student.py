"""The student of notebook 04: :class:`StudentCNN`, a small CNN for Fashion-MNIST.

About 106 k parameters, under a quarter of the reference ``ResNetCNN`` teacher; every layer is a
named module so :class:`~optkit.techniques.distill.FeatureHooks` can read any of them.

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

import torch
from torch import nn

from optkit.core.errors import OptkitError, check_range


# =========================================================================== the student

class StudentCNN(nn.Module):
    """conv(1->w, 3x3) ReLU maxpool, conv(w->2w, 3x3) ReLU maxpool, linear(2w*7*7 -> hidden) ReLU,
    linear(hidden -> 10).

    With the defaults (``width=16, hidden=64``) it has 105,866 parameters: 15 % of the reference
    ``ResNetCNN`` teacher (696,042) and about 1.4 % of its multiply-adds. Every layer is a named
    module (``conv2``, ``pool2``, ``fc1`` ...) so :class:`FeatureHooks` can read any of them.

    Taught in 04_knowledge_distillation.
    """

    def __init__(self, width: int = 16, hidden: int = 64, in_channels: int = 1, num_classes: int = 10,
                 in_size: int = 28):
        super().__init__()
        check_range("width", width, 1)
        check_range("hidden", hidden, 1)
        if in_size < 4 or in_size % 4:
            raise OptkitError("in_size", in_size, "must be a multiple of 4 (two 2x2 poolings)",
                              "pass 28 for Fashion-MNIST or 8 for digits")
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * (in_size // 4) ** 2, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))
