"""Supervised training on real labelled data: the demo's teacher, and real-data baselines."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datafree.data.augment import normalize, random_crop_flip
from datafree.errors import DatafreeError
from datafree.io.budget import cosine
from datafree.progress import Progress


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    flip: bool = True
    bf16: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise DatafreeError(f"training needs epochs >= 1, batch_size >= 1 and lr > 0, got {self.epochs}, "
                                f"{self.batch_size}, {self.lr}")


def train_supervised(model: nn.Module, x01: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, mean=None, std=None,
                     progress: bool = True) -> list[dict]:
    """SGD + cosine over ``cfg.epochs``; returns one metrics row per epoch."""
    torch.manual_seed(cfg.seed)
    opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    n, steps_per_epoch = len(y), math.ceil(len(y) / cfg.batch_size)
    total, bar, history = cfg.epochs * steps_per_epoch, Progress("train", progress), []
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            xb, yb = x01[idx], y[idx]
            if cfg.augment:
                xb = random_crop_flip(xb, padding=max(1, xb.shape[-1] // 8), flip=cfg.flip)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * cosine(step / total)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                out = model(normalize(xb, mean, std)).float()
            loss = F.cross_entropy(out, yb)
            if not torch.isfinite(loss):
                raise DatafreeError(f"training loss became {loss.item()} in epoch {epoch + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            step += 1
            bar.update(step / total, info=f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.3f}")
        history.append({"epoch": epoch + 1, "loss": loss_sum / n, "train_accuracy": correct / n})
    bar.close()
    return history
