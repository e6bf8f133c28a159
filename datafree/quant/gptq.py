"""GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023, Algorithm 1), for integer and minifloat weights.

Layer by layer in execution order, with the inputs X the layer receives in the model quantized so far
(activation quantizer included; convolutions as im2col columns):
    H = 2 X X^T / n,   H += damp * mean(diag H) * I,   U = chol(H^-1)^T  (upper)
then the columns of W are quantized one at a time, each one's error spread over the columns not yet
quantized:  q_j = Q(w_j),  e = (w_j - q_j) / U_jj,  W[:, j:] -= e U[j, j:]  - in lazy blocks of
``block_size`` columns (the rest is updated once per block).  ``act_order`` quantizes columns in
order of decreasing H_jj; scales (per channel or per group) are fixed from the original weights
before the first column ("static groups"), so act-order and groups combine.  Q is round-to-nearest on
the layer's own format - the integer grid or the minifloat grid - with its scale, which is all the
adaptation minifloats need (as in Brevitas' GPTQ for minifloats).

Sparse weights (``keep_zeros``, on by default): a weight that is exactly zero - a pruned model's, e.g. CRISP's
2:4 + blocks - is quantized to zero whatever error has reached it, and that error is spread over the
columns not yet quantized like any other (the fixed-mask form of SparseGPT, Frantar & Alistarh, ICML 2023,
Algorithm 1).  Without it, the error updates would fill the pruned positions and undo the sparsity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import DatafreeError
from datafree.progress import Progress
from datafree.quant.calib import capture
from datafree.quant.formats import as_saturating
from datafree.quant.graph import block_of, quant_layers
from datafree.quant.quantizer import QuantLayer, qdq


@dataclass
class GPTQConfig:
    damp: float = 0.01
    act_order: bool = True
    block_size: int = 128
    batch_size: int = 128
    keep_zeros: bool = True  # weights that are exactly zero stay zero (a pruned model keeps its sparsity)

    def __post_init__(self) -> None:
        if self.damp < 0 or self.block_size < 1 or self.batch_size < 1:
            raise DatafreeError(f"gptq needs damp >= 0, block_size >= 1 and batch_size >= 1, got damp={self.damp} "
                                f"block_size={self.block_size} batch_size={self.batch_size}")


def _columns(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as fan-in columns: (features, samples)."""
    if layer.is_conv:
        c = layer.layer
        cols = F.unfold(x, c.kernel_size, c.dilation, c.padding, c.stride)  # N x (C k k) x L
        return cols.transpose(0, 1).reshape(cols.shape[1], -1)
    return x.reshape(-1, x.shape[-1]).t()


def hessian(layer: QuantLayer, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    h, n = None, 0
    for i in range(0, len(x), batch_size):
        # float32 products summed in float64 (the reference code keeps H in float32); float64 products
        # took twice as long: ResNet-56, 384 images, 2 AVX2 cores, 30 s against 15 s of a 70 s GPTQ
        cols = _columns(layer, layer.quantize_input(x[i : i + batch_size])).float()
        hh = (cols @ cols.t()).double()
        h = hh if h is None else h + hh
        n += cols.shape[1]
    return 2 * h / n


def gptq_weight(w2: torch.Tensor, h: torch.Tensor, quant: Callable[[torch.Tensor, int], torch.Tensor],
                damp: float = 0.01, act_order: bool = True, block_size: int = 128,
                keep: torch.Tensor | None = None) -> torch.Tensor:
    """Algorithm 1 on a (rows x cols) weight with Hessian ``h``; ``quant(col, j)`` quantizes column j;
    where the boolean ``keep`` is False the weight is quantized to zero (a fixed sparsity mask)."""
    w = w2.double().clone()
    h = h.clone()
    cols = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    keep = keep[:, perm] if keep is not None else None
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        wb = w[:, i1:i2].clone()
        err = torch.zeros_like(wb)
        ub = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = wb[:, i]
            qc = quant(col, int(perm[i1 + i]))
            if keep is not None:
                qc = qc * keep[:, i1 + i]
            q[:, i1 + i] = qc
            e = (col - qc) / ub[i, i]
            wb[:, i:] -= e[:, None] * ub[i, i:][None, :]
            err[:, i] = e
        w[:, i2:] -= err @ u[i1:i2, i2:]
    out = torch.empty_like(q)
    out[:, perm] = q
    return out.to(w2.dtype)


@torch.no_grad()
def gptq(model: nn.Module, calib: torch.Tensor, cfg: GPTQConfig, progress: bool = False) -> dict:
    model.eval()
    gains = []
    # a layer inside a block (a ResNet block) takes its input from the block run on the block's input, captured
    # once per block: one forward pass of the model's prefix per block instead of per layer, the same tensors
    owner = block_of(model)
    cached: tuple[nn.Module | None, torch.Tensor | None] = (None, None)
    layers = quant_layers(model)
    bar = Progress("gptq", progress)
    for i, m in enumerate(layers):
        bar.update(i / len(layers), info=f"layer {i + 1} of {len(layers)}", force=i == 0)
        b = owner.get(id(m))
        if b is None:
            x, _ = capture(model, m, calib, cfg.batch_size, outputs=False)
        else:
            if cached[0] is not b:
                cached = (b, capture(model, b, calib, cfg.batch_size, outputs=False)[0])
            x, _ = capture(b, m, cached[1], cfg.batch_size, outputs=False)
        h = hessian(m, x, cfg.batch_size)
        w = m.weight
        w2 = w.reshape(len(w), -1)
        m.set_weight()  # round-to-nearest, and the scales GPTQ keeps
        scale = m.w_scale.expand_as(w2).double()
        fmt = as_saturating(m.w_spec.fmt)
        nz = w2 != 0
        keep = nz if cfg.keep_zeros and not bool(nz.all()) else None
        q = gptq_weight(w2, h, lambda col, j, f=fmt, s=scale: qdq(col, f, s[:, j]), cfg.damp, cfg.act_order,
                        cfg.block_size, keep)
        rtn = m.weight_q.reshape_as(w2).double()
        d_rtn, d_gptq = rtn - w2.double(), q.double() - w2.double()
        gains.append(float(torch.einsum("ij,jk,ik->", d_gptq, h, d_gptq) /
                           torch.einsum("ij,jk,ik->", d_rtn, h, d_rtn).clamp(min=1e-30)))
        m.set_weight(q.reshape(w.shape).to(w.dtype))
    bar.update(1.0, info=f"{len(layers)} layers", force=True)
    bar.close()
    return {"gptq_layers": len(gains), "gptq_error_vs_rtn": sum(gains) / max(1, len(gains))}
