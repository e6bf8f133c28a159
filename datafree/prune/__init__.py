"""Pruning for the classes a user cares about, to sparsity patterns hardware can exploit.

Registry: name -> (config dataclass, implementation with ``prune(model, teacher, x, ...)``):
- ``crisp``  CRISP: class-aware gradient saliency, hybrid N:M + block sparsity (``crisp.py``);
the patterns themselves and the masked-weight parametrization live in ``sparsity.py``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from datafree.config import make_strategy_config
from datafree.prune.crisp import CRISP, CRISPConfig, sparsity_stats
from datafree.prune.sparsity import gemm_view, is_nm, nm_mask


class Pruner(Protocol):
    def prune(self, model: nn.Module, teacher: nn.Module, x: torch.Tensor, evaluate=None, log=None,
              progress: bool = True, checkpoint=None, state: dict | None = None) -> tuple[nn.Module, list[dict]]: ...


PRUNERS = {"crisp": (CRISPConfig, CRISP)}


def make_pruner_config(name: str, **overrides) -> CRISPConfig:
    return make_strategy_config(PRUNERS, "pruner", name, overrides)


def build_pruner(name: str, cfg: CRISPConfig) -> Pruner:
    return PRUNERS[name][1](cfg)


__all__ = ["CRISP", "CRISPConfig", "PRUNERS", "Pruner", "build_pruner", "gemm_view", "is_nm", "make_pruner_config",
           "nm_mask", "sparsity_stats"]
