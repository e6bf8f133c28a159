"""Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019, Sec. 4.1).

For consecutive layers a -> ReLU -> b (ReLU is positively homogeneous), scaling output channel i of a
by 1/s_i and input channel i of b by s_i leaves the function unchanged.  With r1_i the range of a's
output channel i and r2_i the range of b's input channel i, s_i = sqrt(r1_i * r2_i) / r2_i equalises
both ranges to sqrt(r1_i r2_i) (Eq. 8-11), which maximises the per-tensor precision of both layers.
Chains of pairs are swept until no scale changes by more than ``tol``.  Works for any weight format
(it only moves ranges); BatchNorm is folded before (``graph.fold_bn``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datafree.errors import DatafreeError
from datafree.quant.graph import equalizable_pairs, quant_layers


@dataclass
class CLEConfig:
    iterations: int = 20
    tol: float = 1e-3

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.tol < 0:
            raise DatafreeError(f"cle needs iterations >= 1 and tol >= 0, got iterations={self.iterations} "
                                f"tol={self.tol}")


def _out_range(w: torch.Tensor) -> torch.Tensor:
    return w.detach().abs().reshape(len(w), -1).amax(1)


def _in_range(w: torch.Tensor) -> torch.Tensor:
    return w.detach().abs().transpose(0, 1).reshape(w.shape[1], -1).amax(1)


@torch.no_grad()
def cross_layer_equalization(model: nn.Module, calib: torch.Tensor | None, cfg: CLEConfig) -> dict:
    pairs = equalizable_pairs(model)
    sweeps, change = 0, 0.0
    while sweeps < cfg.iterations:
        sweeps, change = sweeps + 1, 0.0
        for a, b in pairs:
            wa, wb = a.layer.weight, b.layer.weight
            r1, r2 = _out_range(wa), _in_range(wb)
            ok = (r1 > 0) & (r2 > 0)
            s = torch.where(ok, (r1 * r2).sqrt() / r2.clamp(min=1e-12), torch.ones_like(r1))
            wa.div_(s.view(-1, *([1] * (wa.dim() - 1))))
            if a.layer.bias is not None:
                a.layer.bias.div_(s)
            wb.mul_(s.view(1, -1, *([1] * (wb.dim() - 2))))
            change = max(change, float((s - 1).abs().max()))
        if change < cfg.tol:
            break
    for m in quant_layers(model):
        m.set_weight()
    return {"cle_pairs": len(pairs), "cle_sweeps": sweeps, "cle_last_change": change}
