"""Knowledge-distillation losses (Hinton et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float = 1.0,
            kind: str = "kl") -> torch.Tensor:
    """``kl``: T^2 * KL(softmax(t/T) || softmax(s/T)); ``l1``: mean |s - t| on logits."""
    if kind == "l1":
        return (s_logits - t_logits).abs().mean()
    t = temperature
    return F.kl_div(F.log_softmax(s_logits / t, 1), F.softmax(t_logits / t, 1), reduction="batchmean") * t * t
