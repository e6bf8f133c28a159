"""LeNet-5 (LeCun et al. 1998) for 1x28x28 digits, and LeNet-5-half (half the channels), the
teacher/student pair of DAFL (Chen et al., ICCV 2019).

Deviation from the 1998 net: ReLU, max-pooling and a BatchNorm after each conv.  The BN layers give
the inversion its strongest prior (their running statistics); pass ``bn=False`` for the classic net.
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 1, bn: bool = True) -> None:
        super().__init__()
        c1, c2, c3, f1 = (max(1, int(c * width)) for c in (6, 16, 120, 84))
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), norm(c1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), norm(c2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 5), norm(c3), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Linear(c3, f1), nn.ReLU(inplace=True), nn.Linear(f1, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
