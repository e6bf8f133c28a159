"""Tiny models for fast tests (also loadable from the CLI as tests/tiny.py:tiny_cnn)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(num_classes: int = 4, bn: bool = True) -> nn.Module:
    """3x8x8 -> num_classes; BatchNorm after each conv unless bn=False."""
    norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), norm(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, num_classes),
    )


def tiny_cnn_nobn(num_classes: int = 4) -> nn.Module:
    return tiny_cnn(num_classes, bn=False)


def trained_tiny_teacher(seed: int = 0, steps: int = 150) -> nn.Module:
    """A tiny teacher fitted to a fixed synthetic 4-class task (colour-channel dominance), so it has
    meaningful BN statistics and decisions; deterministic for a given seed."""
    g = torch.Generator().manual_seed(seed)
    model = tiny_cnn()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    for _ in range(steps):
        y = torch.randint(0, 4, (64,), generator=g)
        x = torch.rand(64, 3, 8, 8, generator=g) * 0.5
        x[y < 3, y[y < 3]] += 0.5  # class c < 3: channel c bright; class 3: all dim
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
