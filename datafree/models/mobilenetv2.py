"""MobileNetV2 (Sandler et al., CVPR 2018) adapted to 32x32 inputs: stride-1 stem and first stage,
as in the common CIFAR variant, inverted residual blocks with linear bottlenecks."""

from __future__ import annotations

import torch
from torch import nn

# (expansion t, channels c, repeats n, first stride s) from Table 2, strides adapted for CIFAR
_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _cbr(cin: int, cout: int, k: int, s: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hid = cin * t
        layers = [] if t == 1 else [_cbr(cin, hid, 1, 1)]
        layers += [_cbr(hid, hid, 3, stride, groups=hid), nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        cin = int(32 * width)
        layers: list[nn.Module] = [_cbr(3, cin, 3, 1)]
        for t, c, n, s in _CFG:
            cout = int(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = max(1280, int(1280 * width))
        layers.append(_cbr(cin, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))
