"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2).

depth = 6n + 2, three stages of widths 16/32/64, BasicBlocks.  Two shortcut flavours:

* option "A" (parameter-free): at a stage transition take ``x[:, :, ::2, ::2]`` and zero-pad the
  channels symmetrically (``planes // 4`` before and after) - the layout of akamaster's CIFAR-10
  checkpoints in ``../shared/models/cifar10``;
* option "B": a 1x1 strided conv + BatchNorm (``downsample.0/1``) - chenyaofo's CIFAR-100 layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = 0
        if option == "B" and (stride != 1 or in_planes != planes):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.downsample = None
            if stride != 1 or in_planes != planes:
                self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            sc = self.downsample(x)
        elif self.pad:
            sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        else:
            sc = x
        return F.relu(out + sc)


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, option: str = "A") -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes_in = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(planes_in, planes, stride, option))
                planes_in = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        head = nn.Linear(64, num_classes)
        # the two checkpoint families name their head differently
        if option == "A":
            self.linear = head
        else:
            self.fc = head
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x) if hasattr(self, "linear") else self.fc(x)
