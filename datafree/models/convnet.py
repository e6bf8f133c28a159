"""ConvNet-D (Gidaris & Komodakis 2018; the evaluation and embedding network of dataset condensation):
D blocks of conv3x3 (width W) -> instance norm (GroupNorm with one group per channel) -> ReLU ->
2x2 average pooling, then a linear classifier; ``embed`` is the flattened feature map."""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(self, channels: int = 3, num_classes: int = 10, width: int = 128, depth: int = 3,
                 img_size: int = 32) -> None:
        super().__init__()
        layers, c, s = [], channels, img_size
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            c, s = width, s // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * s * s, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
