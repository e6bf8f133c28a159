"""Empirical bias correction (Nagel et al., ICCV 2019, Sec. 4.2; the "empirical" variant measured on
calibration data, as in Brevitas and AIMET).

Quantization shifts the expected output of a layer: E[W~ x~] != E[W x].  Going through the layers in
execution order, each layer's bias is corrected by the mean (over samples and positions) of
y_float - y_quant, where y_float is the float model's output of the layer and y_quant the quantized
model's - with every earlier layer already quantized and corrected, so the correction also absorbs
the mean error that arrives from upstream and from the activation quantizers.  Format-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datafree.errors import DatafreeError
from datafree.quant.calib import float_mode, stream
from datafree.quant.graph import quant_layers


@dataclass
class BiasCorrectionConfig:
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DatafreeError(f"bias_correction needs batch_size >= 1, got {self.batch_size}")


@torch.no_grad()
def _channel_mean(model: nn.Module, layer: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean of ``layer``'s output per channel over ``x`` (each forward stops at the layer)."""
    total, count = None, 0
    for _, out in stream(model, layer, x, batch_size):
        s = out.sum([d for d in range(out.dim()) if d != 1])
        total = s if total is None else total + s
        count += out.numel() // out.shape[1]
    return total / count


@torch.no_grad()
def bias_correction(model: nn.Module, calib: torch.Tensor, cfg: BiasCorrectionConfig) -> dict:
    model.eval()
    shifts = []
    for m in quant_layers(model):
        with float_mode(model):
            ref = _channel_mean(model, m, calib, cfg.batch_size)
        got = _channel_mean(model, m, calib, cfg.batch_size)
        delta = ref - got
        m.bias_corr = delta if m.bias_corr is None else m.bias_corr + delta
        shifts.append(float(delta.abs().mean()))
    return {"bias_correction_layers": len(shifts), "bias_correction_mean_abs_shift": sum(shifts) / max(1, len(shifts))}
