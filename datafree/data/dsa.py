"""Differentiable Siamese Augmentation (Zhao & Bilen, "Dataset Condensation with Differentiable Siamese
Augmentation", ICML 2021), batched and differentiable with respect to the images.

Each call picks one transformation at random from the strategy (``color`` applies brightness,
saturation and contrast in turn) - the reference code's mode 'S':
- brightness: x + (u - 0.5) * 1.0;  saturation: mean_c + (x - mean_c) * 2u;  contrast: mean + (x - mean) * (u + 0.5)
- crop: shift by up to 1/8 of the side (zero padding);  cutout: zero a square of half the side
- flip: horizontal, p = 0.5;  scale: x and y by factors in [1/1.2, 1.2];  rotate: up to 15 degrees.
*Siamese*: with a ``seed``, every image of the batch gets the same parameters and the same seed gives
the same transformation to another batch (real and synthetic images of a class in condensation);
without one, parameters are drawn per image (training on condensed samples).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def _u(n: int, g: torch.Generator | None, shared: bool) -> torch.Tensor:
    u = torch.rand(1 if shared else n, generator=g)
    return u.expand(n) if shared else u


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def dsa(x: torch.Tensor, strategy: str = DEFAULT_STRATEGY, seed: int | None = None) -> torch.Tensor:
    """One random DSA transformation of the batch ``x`` (N x C x H x W, any value range)."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    shared = seed is not None
    ops = [s for s in strategy.split("_") if s]
    if not ops:
        return x
    op = ops[int(torch.randint(len(ops), (1,), generator=g))]
    n = len(x)

    def u() -> torch.Tensor:
        return _u(n, g, shared).to(x.device, x.dtype)

    if op == "color":
        x = x + (u() - 0.5).view(-1, 1, 1, 1)
        m = x.mean(1, keepdim=True)
        x = m + (x - m) * (2 * u()).view(-1, 1, 1, 1)
        m = x.mean((1, 2, 3), keepdim=True)
        return m + (x - m) * (u() + 0.5).view(-1, 1, 1, 1)
    h, w = x.shape[-2:]
    if op == "crop":
        pad = max(1, round(h * 0.125))
        sx = (u() * (2 * pad + 1)).floor() - pad
        sy = (u() * (2 * pad + 1)).floor() - pad
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2], theta[:, 1, 2] = 2 * sx / (w - 1), 2 * sy / (h - 1)
        return _affine(x, theta)
    if op == "cutout":
        size = round(h * 0.5)
        cy = (u() * h).floor().long()
        cx = (u() * w).floor().long()
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        box = ((ys - cy.view(-1, 1, 1)).abs() <= size // 2) & ((xs - cx.view(-1, 1, 1)).abs() <= size // 2)
        return x * (~box).unsqueeze(1).to(x.dtype)
    if op == "flip":
        m = (u() < 0.5).view(-1, 1, 1, 1)
        return torch.where(m, x.flip(3), x)
    if op == "scale":
        r = 1.2
        fx, fy = 1 / r + u() * (r - 1 / r), 1 / r + u() * (r - 1 / r)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1] = fx, fy
        return _affine(x, theta)
    if op == "rotate":
        a = (u() - 0.5) * 2 * 15 / 180 * math.pi
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
        return _affine(x, theta)
    raise ValueError(f"unknown DSA transformation '{op}' in strategy '{strategy}'")
