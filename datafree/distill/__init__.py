"""Distillation: the shared data-free loop and supervised training (for teachers and baselines)."""

from datafree.distill.engine import DistillConfig, Distiller, DistillResult, summarize
from datafree.distill.kd import kd_loss
from datafree.distill.supervised import TrainConfig, train_supervised

__all__ = ["DistillConfig", "DistillResult", "Distiller", "TrainConfig", "kd_loss", "summarize", "train_supervised"]
