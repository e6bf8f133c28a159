"""Direct pixel optimisation: DeepInversion (Yin et al., "Dreaming to Distill", CVPR 2020, Eq. 2-5)
with the Adaptive DeepInversion competition term.

Each call optimises a fresh batch of images (parametrised as sigmoid(v) so they stay in [0, 1]) for
``iterations`` Adam steps on
    oh * CE(T(x), y) + bn * L_BN + tv * R_TV(x) + l2 * ||x||^2 + adv * L_adv(S, T)
under random jitter/flip, plus, with a guide, the feature-alignment loss towards condensed samples
(``synthesis.guide``: adv * L_FA; the base class updates the discriminator on the final batch).
Much slower than the generator (no amortisation), kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datafree.data.augment import random_crop_flip
from datafree.errors import DatafreeError
from datafree.io.budget import cosine
from datafree.synthesis.base import (
    InversionSynthesizer,
    SynthBatch,
    TeacherInverter,
    adversarial_loss,
    class_stats,
    finite,
)


@dataclass
class PixelConfig:
    batch_size: int = 128
    iterations: int = 200
    lr: float = 0.1
    bn: float = 10.0
    oh: float = 1.0
    tv: float = 1e-3 * 32 * 32
    l2: float = 0.0
    adv: float = 0.5

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.iterations < 1 or not self.lr > 0:
            raise DatafreeError(f"pixel inversion needs batch_size >= 1, iterations >= 1 and lr > 0, got "
                                f"{self.batch_size}, {self.iterations}, {self.lr}")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (DeepInversion's R_TV prior)."""
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()


class PixelSynthesizer(InversionSynthesizer):
    def __init__(self, cfg: PixelConfig, inverter: TeacherInverter, input_shape: tuple[int, ...]) -> None:
        self.cfg, self.inv, self.shape = cfg, inverter, tuple(input_shape)
        self.calls = 0

    def _run(self, student: nn.Module, adversarial: bool) -> SynthBatch:
        cfg, inv = self.cfg, self.inv
        v = torch.randn(cfg.batch_size, *self.shape).mul_(0.5).requires_grad_(True)
        y = inv.balanced_targets(cfg.batch_size)
        opt = torch.optim.Adam([v], cfg.lr, betas=(0.5, 0.9))
        w = None  # L_FA's weight, set at the first iteration
        for it in range(cfg.iterations):
            for g in opt.param_groups:  # cosine decay, as in the reference implementation
                g["lr"] = cfg.lr * cosine(it / cfg.iterations)
            x = torch.sigmoid(v)
            xa = random_crop_flip(x, padding=2)
            t, l_align = self._teacher_pass(xa, y)
            loss = cfg.oh * F.cross_entropy(t, y) + cfg.bn * inv.bn_loss() + cfg.tv * total_variation(x)
            if cfg.l2:
                loss = loss + cfg.l2 * x.pow(2).mean()
            if cfg.adv and adversarial:
                loss = loss + cfg.adv * adversarial_loss(inv.logits(xa, student), t)
            if l_align is not None:
                if w is None:  # the call's first step sets it
                    w = self.guide.align_weight(loss, l_align, xa)
                loss = loss + w * l_align
            finite(loss)
            (g,) = torch.autograd.grad(loss, [v])
            v.grad = g
            opt.step()
        with torch.no_grad():
            x = torch.sigmoid(v)
            stats = class_stats(inv.logits(x), inv.num_classes)
        if l_align is not None:  # of the last iteration, like loss_synth
            stats.update(loss_align=l_align.item(), align_weight=w)
        return SynthBatch(x, y, {"loss_synth": finite(loss), **stats})

    def state_dict(self) -> dict:
        return {"calls": self.calls, "guide": self._guide_state()}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]
        self._load_guide_state(state)
