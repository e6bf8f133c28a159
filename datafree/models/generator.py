"""The image generator G(z) used for model inversion (DAFL / Fast-DFKD layout).

[z, onehot(y)] -> linear -> (2*ngf) x s/4 x s/4 -> [BN, up x2, conv, BN, LeakyReLU] x2 -> conv -> sigmoid.
Output is an image in [0, 1] pixel space; the teacher's normalization is applied outside.
With ``num_classes`` > 0 the generator is class-conditional: the one-hot target is appended to z.
"""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, channels: int = 3,
                 num_classes: int = 0) -> None:
        super().__init__()
        if img_size % 4:
            raise ValueError(f"generator image size must be a multiple of 4, got {img_size}")
        self.nz, self.init, self.num_classes = nz, img_size // 4, num_classes
        self.l1 = nn.Linear(nz + num_classes, 2 * ngf * self.init**2)
        self.blocks = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, channels, 3, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if y is None:
                raise ValueError("this generator is class-conditional: pass the target classes y")
            z = torch.cat([z, torch.nn.functional.one_hot(y, self.num_classes).to(z.dtype)], 1)
        x = self.l1(z).view(z.shape[0], -1, self.init, self.init)
        return self.blocks(x)
