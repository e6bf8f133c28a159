"""AdaRound (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020),
layer-wise, or block-wise as in BRECQ (Li et al., ICLR 2021), for integer and minifloat weights.

Each weight is rounded either down or up to its neighbouring grid points lo <= w/s <= hi (on the integer
grid, or on the format's minifloat grid - the adaptation to minifloats), chosen by a learned soft
variable:  W~ = s * (lo + h(V) * (hi - lo)),  h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)
with zeta = 1.1, gamma = -0.1 (Eq. 22-23), V initialised so that h(V) equals the fractional position.
V minimises (Eq. 25)
    || f(W x) - f(W~ x~) ||^2  +  lambda * sum(1 - |2 h(V) - 1|^beta)
with x the float model's input to the layer and x~ the quantized model's (BRECQ's asymmetric
reconstruction, which also absorbs upstream error), beta annealed from 20 to 2 after a 20 % warm-up
without the regulariser, lambda = 0.01; at the end every weight is rounded by h(V) >= 0.5.
``mode="block"`` reconstructs the output of each block (``graph.blocks``, e.g. a residual block) with
all its layers' V jointly; layers outside blocks stay layer-wise.  Deviation for a CPU budget: 1,000
Adam steps per layer (lr 1e-2) on batches of 32 calibration samples (the papers: 10-20 k).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datafree.errors import DatafreeError
from datafree.progress import Progress
from datafree.quant.calib import capture, float_mode
from datafree.quant.formats import as_saturating
from datafree.quant.graph import block_of, quant_layers
from datafree.quant.quantizer import QuantLayer

ZETA, GAMMA = 1.1, -0.1


@dataclass
class AdaRoundConfig:
    iters: int = 1000
    lr: float = 1e-2
    reg: float = 0.01  # lambda
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2
    batch: int = 32
    mode: str = "layer"  # layer | block

    def __post_init__(self) -> None:  # a bad value fails before calibration, not as a crash or a silent no-op
        beta = self.beta
        if not (isinstance(beta, (tuple, list)) and len(beta) == 2 and all(isinstance(b, (int, float)) for b in beta)
                and beta[0] >= beta[1] > 0):
            raise DatafreeError(f"adaround beta must be two numbers start >= end > 0 (the annealed exponent of "
                                f"the rounding regulariser: adaround.beta=[20,2]), got {beta!r}")
        self.beta = (float(beta[0]), float(beta[1]))
        if self.iters < 1 or self.batch < 1 or self.lr <= 0 or self.reg < 0 or not 0 <= self.warmup < 1:
            raise DatafreeError(f"adaround needs iters >= 1, batch >= 1, lr > 0, reg >= 0 and 0 <= warmup < 1, got "
                                f"iters={self.iters} batch={self.batch} lr={self.lr} reg={self.reg} "
                                f"warmup={self.warmup}")
        if self.mode not in ("layer", "block"):
            raise DatafreeError(f"adaround mode must be layer or block, got '{self.mode}'")


class _Rounding:
    """The learnable rounding of one layer's weight."""

    def __init__(self, m: QuantLayer) -> None:
        m.set_weight()  # the scales (and the RTN weight, the fallback)
        self.m = m
        w = m.weight
        s = m.w_scale.expand(len(w), w[0].numel()).reshape(w.shape) if m.w_scale.numel() > 1 else m.w_scale.reshape(())
        self.s = s
        fmt = as_saturating(m.w_spec.fmt)
        self.lo, self.hi = fmt.neighbours(w / s)
        gap = (self.hi - self.lo)
        rest = torch.where(gap > 0, (w / s - self.lo) / gap.clamp(min=1e-12), torch.zeros_like(w)).clamp(0.01, 0.99)
        self.v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)

    def h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def soft(self) -> torch.Tensor:
        return self.s * (self.lo + self.h() * (self.hi - self.lo))

    def hard(self) -> torch.Tensor:
        return self.s * (self.lo + (self.v.detach() >= 0).to(self.lo.dtype) * (self.hi - self.lo))

    def reg(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()


def _optimize(roundings: list[_Rounding], fwd, x_q: torch.Tensor, y: torch.Tensor, cfg: AdaRoundConfig) -> float:
    opt = torch.optim.Adam([r.v for r in roundings], cfg.lr)
    start = int(cfg.warmup * cfg.iters)
    rec = torch.zeros(())
    for it in range(cfg.iters):
        idx = torch.randint(len(x_q), (min(cfg.batch, len(x_q)),))
        out = fwd(x_q[idx])
        rec = (out - y[idx]).pow(2).sum(1).mean()
        loss = rec
        if it >= start:
            t = (it - start) / max(1, cfg.iters - start)
            beta = cfg.beta[1] + (cfg.beta[0] - cfg.beta[1]) * (1 - t)
            loss = loss + cfg.reg * sum(r.reg(beta) for r in roundings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(rec.detach())


def _unit_io(model: nn.Module, unit: nn.Module, calib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of ``unit`` in the quantized model, output of ``unit`` in the float model)."""
    with float_mode(model):
        _, y = capture(model, unit, calib)
    x_q, _ = capture(model, unit, calib, outputs=False)
    return x_q, y


def adaround(model: nn.Module, calib: torch.Tensor, cfg: AdaRoundConfig, progress: bool = False) -> dict:
    model.eval()
    layers = quant_layers(model)
    units: list[nn.Module] = []
    owners = block_of(model) if cfg.mode == "block" else {}
    seen_blocks: list[nn.Module] = []
    for m in layers:  # execution order; a block is handled when its first layer comes up
        owner = owners.get(id(m))
        if owner is None:
            units.append(m)
        elif owner not in seen_blocks:
            seen_blocks.append(owner)
            units.append(owner)
    losses = []
    bar = Progress("adaround", progress)
    for i, unit in enumerate(units):
        bar.update(i / len(units), info=f"unit {i + 1} of {len(units)}", force=i == 0)
        x_q, y = _unit_io(model, unit, calib)
        inner = [unit] if isinstance(unit, QuantLayer) else [m for m in unit.modules() if isinstance(m, QuantLayer)]
        rounds = [_Rounding(m) for m in inner]
        if isinstance(unit, QuantLayer):
            def fwd(x, m=unit, r=rounds[0]):
                return m.forward_with(m.quantize_input(x), r.soft())
        else:
            for m, r in zip(inner, rounds):
                m.weight_override = r.soft
            fwd = unit
        try:
            with torch.enable_grad():
                losses.append(_optimize(rounds, fwd, x_q, y, cfg))
        finally:
            for m in inner:
                m.weight_override = None
        for m, r in zip(inner, rounds):
            m.set_weight(r.hard())
    bar.update(1.0, info=f"{len(units)} units", force=True)
    bar.close()
    return {"adaround_units": len(units), "adaround_final_rec": sum(losses) / max(1, len(losses))}
