"""Torch-only augmentation on whole batches (no per-sample Python loop)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per sample, for an NCHW batch."""
    n, _, h, w = x.shape
    if padding:
        xp = F.pad(x, (padding,) * 4)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (oy[:, None] + torch.arange(h)[None]).to(x.device)  # n x h
        cols = (ox[:, None] + torch.arange(w)[None]).to(x.device)  # n x w
        idx_n = torch.arange(n, device=x.device)[:, None, None, None]
        idx_c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        m = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(m, x.flip(3), x)
    return x


def normalize(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """[0, 1] pixels -> the model's input space (identity when mean/std are None)."""
    if mean is None or std is None:
        return x
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
