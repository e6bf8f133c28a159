"""Hardware-friendly sparsity patterns on a weight's GEMM view, and the masked-weight parametrization.

A conv weight (out, in, kh, kw) is seen as the matrix the im2col / NHWC GEMM multiplies: rows = output
channels, columns = (kh, kw, in) with the input channel fastest, so that
- N:M keeps N of every M consecutive columns of a row: N of M consecutive *input channels* at one kernel
  tap - the reduction-dimension grouping of sparse tensor cores (2:4) and of N:M accelerators;
- a B x B block spans B output channels and B consecutive columns; blocks are removed whole, and every
  block-row keeps the same number of blocks (load balance across the rows a PE array computes at once).
A Linear weight (out, in) is its own GEMM view.
"""

from __future__ import annotations

import torch
from torch import nn


def gemm_view(w: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) -> (out, kh*kw*in), input channel fastest; (out, in) unchanged."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.ndim == 4 else w


def from_gemm_view(m: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of ``gemm_view`` for a tensor of the weight's ``shape``."""
    if len(shape) == 4:
        out, cin, kh, kw = shape
        return m.reshape(out, kh, kw, cin).permute(0, 3, 1, 2).contiguous()
    return m.reshape(shape)


def nm_ok(w: torch.Tensor, m: int) -> bool:
    """N:M along input channels needs the input-channel count (the group axis) to be a multiple of M."""
    return w.shape[1] % m == 0


def block_ok(w: torch.Tensor, block: int) -> bool:
    g = gemm_view(w)
    return g.shape[0] % block == 0 and g.shape[1] % block == 0


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest-scoring weights of every ``m`` consecutive ones along the input channels
    (ties: the lower index).  ``score`` has the weight's shape; returns a {0, 1} mask of that shape."""
    g = gemm_view(score)
    groups = g.reshape(-1, m)
    keep = groups.topk(n, dim=1, sorted=False).indices
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
    return from_gemm_view(mask.reshape(g.shape), score.shape)


def block_scores(score: torch.Tensor, block: int) -> torch.Tensor:
    """Sum of ``score`` over each B x B block of the GEMM view: (out/B, cols/B)."""
    g = gemm_view(score)
    r, c = g.shape[0] // block, g.shape[1] // block
    return g.reshape(r, block, c, block).sum((1, 3))


def block_mask(scores: torch.Tensor, keep_per_row: int, block: int, shape: torch.Size) -> torch.Tensor:
    """{0, 1} mask of the weight ``shape`` keeping the ``keep_per_row`` best blocks of every block-row."""
    keep = scores.topk(keep_per_row, dim=1).indices
    m = torch.zeros_like(scores).scatter_(1, keep, 1.0)
    full = m.repeat_interleave(block, 0).repeat_interleave(block, 1)
    return from_gemm_view(full, shape)


def is_nm(w: torch.Tensor, n: int, m: int) -> bool:
    """Every group of ``m`` consecutive input channels holds at most ``n`` non-zeros."""
    return bool(((gemm_view(w) != 0).reshape(-1, m).sum(1) <= n).all())


def pattern_bits(w: torch.Tensor, value_bits: int, n: int = 2, m: int = 4, block: int = 16) -> int:
    """Bits of ``w`` stored in its sparse pattern: the kept blocks' N:M values at ``value_bits`` each plus
    ceil(log2 M) index bits per value where every row is N:M (the 2:4 sparse-tensor-core layout), and a
    1-bit map per B x B block where the GEMM view tiles into blocks.  A zero inside a kept N:M slot is
    stored like any value; a layer with no such pattern (or no zero) is stored dense."""
    g = gemm_view(w) != 0
    dense = w.numel() * value_bits
    if bool(g.all()):
        return dense
    rows, cols = g.shape
    slots, map_bits = torch.ones_like(g), 0  # the positions the layout stores
    if rows % block == 0 and cols % block == 0:
        kept = g.reshape(rows // block, block, cols // block, block).any(3).any(1)
        slots = kept.repeat_interleave(block, 0).repeat_interleave(block, 1)
        map_bits = kept.numel()
    values, index_bits = int(slots.sum()), 0
    if cols % m == 0 and is_nm(w, n, m):
        # N values for every M-group that meets a kept block (a group may straddle two when B % M != 0)
        values = n * int(slots.reshape(-1, m).any(1).sum())
        index_bits = values * (m - 1).bit_length()  # ceil(log2 M)
    return min(dense, values * value_bits + index_bits + map_bits)


class _SRSTE(torch.autograd.Function):
    """Forward: the masked weight.  Backward: the gradient reaches the dense weight unmasked (straight-
    through), plus ``decay`` * (1 - mask) * w on the pruned entries - SR-STE (Zhou et al., "Learning N:M
    Fine-grained Structured Sparse Neural Networks From Scratch", ICLR 2021, Eq. 6), the estimator CRISP
    fine-tunes with - so a pruned weight fades unless its gradient keeps it alive for a later mask."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.save_for_backward(w, mask)
        ctx.decay = decay
        return w * mask

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        w, mask = ctx.saved_tensors
        return g + ctx.decay * (1 - mask) * w, None, None


class Masked(nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrization: weight -> weight * mask (SR-STE gradient)."""

    def __init__(self, mask: torch.Tensor, decay: float = 2e-4) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.decay = decay

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _SRSTE.apply(w, self.mask, self.decay)
