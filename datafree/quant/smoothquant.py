"""SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models", ICML 2023, Eq. 4), applied to every layer whose input is quantized.

Activation outliers concentrate in a few input channels; dividing input channel j by
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplying the weights' input channel j by s_j keeps
the product and migrates the difficulty from activations to weights (alpha = 0.5 by default).
Where the input comes from a plain layer through a ReLU (``graph.equalizable_pairs``), 1/s is folded
into that layer's output channels, as the paper folds it into the preceding LayerNorm; elsewhere
(a network input, a residual sum) the division stays an explicit per-channel scale in front of the
activation quantizer.  Works for integer and minifloat formats alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datafree.errors import DatafreeError
from datafree.quant.calib import float_mode, run
from datafree.quant.equalize import _in_range
from datafree.quant.graph import equalizable_pairs, quant_layers


@dataclass
class SmoothQuantConfig:
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise DatafreeError(f"smoothquant alpha (the migration strength) must be in [0, 1], got {self.alpha}")


@torch.no_grad()
def smoothquant(model: nn.Module, calib: torch.Tensor, cfg: SmoothQuantConfig) -> dict:
    layers = [m for m in quant_layers(model) if m.a_spec is not None]
    amax: dict[nn.Module, torch.Tensor] = {}  # per-input-channel max |x|, in float mode

    def hook(mod, args):
        x = args[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        v = x.abs().amax(dims)
        amax[mod] = torch.maximum(amax[mod], v) if mod in amax else v

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        with float_mode(model):
            run(model, calib)
    finally:
        for h in handles:
            h.remove()
    producer = {b: a for a, b in equalizable_pairs(model)}
    folded = 0
    for m in layers:
        xa, wa = amax[m], _in_range(m.layer.weight)
        s = (xa.clamp(min=1e-5) ** cfg.alpha / wa.clamp(min=1e-5) ** (1 - cfg.alpha)).clamp(min=1e-5)
        s = torch.where((xa > 0) & (wa > 0), s, torch.ones_like(s))
        a = producer.get(m)
        if a is not None:  # fold 1/s into the producer's output channels
            a.layer.weight.div_(s.view(-1, *([1] * (a.layer.weight.dim() - 1))))
            if a.layer.bias is not None:
                a.layer.bias.div_(s)
            m.layer.weight.mul_(s.view(1, -1, *([1] * (m.layer.weight.dim() - 2))))
            folded += 1
        else:
            m.smooth = s
    for m in quant_layers(model):
        m.set_weight()
    return {"smoothquant_layers": len(layers), "smoothquant_folded": folded}
