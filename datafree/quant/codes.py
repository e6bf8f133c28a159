"""Quantized weights as bit-packed codes: what ``quantized.safetensors`` stores instead of float tensors.

A weight quantized with format F and scale s holds values ``v * s`` with ``v`` on F's grid (an integer in
[qmin, qmax], or a finite minifloat).  The code of a value is its index in F's signed grid, ascending; a code
takes ``ceil(log2(len(grid)))`` bits (int4: 4, fp6_e3m2: 6, int8 and fp8: 8), and the codes of a tensor are
packed back to back, most significant bit first (``numpy.packbits``), so a 4-bit weight costs half a byte.
Decoding looks the codes up in the grid and multiplies by the scale in float32: the same product the quantizer
computed, so the weights come back bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from datafree.errors import DatafreeError
from datafree.quant.formats import Format, IntFormat


def signed_grid(fmt: Format) -> torch.Tensor:
    """Every value of ``fmt``, ascending, in float32."""
    if isinstance(fmt, IntFormat):
        return torch.arange(fmt.qmin, fmt.qmax + 1, dtype=torch.float32)
    g = fmt.grid()
    return torch.cat([-g[1:].flip(0), g]).float()


def code_bits(fmt: Format) -> int:
    return max(1, math.ceil(math.log2(len(signed_grid(fmt)))))


def encode(values: torch.Tensor, fmt: Format) -> torch.Tensor:
    """Grid values (any shape, each taken to its nearest grid value) as packed codes (uint8, 1-D)."""
    grid = signed_grid(fmt)
    v = values.detach().float().reshape(-1)
    idx = torch.searchsorted(grid, v).clamp(max=len(grid) - 1)
    lower = (idx - 1).clamp(min=0)
    idx = torch.where((grid[lower] - v).abs() < (grid[idx] - v).abs(), lower, idx)  # the nearest grid value
    bits = code_bits(fmt)
    big_endian = idx.numpy().astype(">u2").view(np.uint8).reshape(-1, 2)  # formats have at most 16 bits
    unpacked = np.unpackbits(big_endian, axis=1)[:, 16 - bits:]
    return torch.from_numpy(np.packbits(unpacked.reshape(-1)))


def decode(packed: torch.Tensor, fmt: Format, n: int) -> torch.Tensor:
    """The ``n`` grid values (float32, 1-D) that ``encode`` packed."""
    bits = code_bits(fmt)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or len(packed) != math.ceil(n * bits / 8):
        raise DatafreeError(f"{tuple(packed.shape)} packed codes do not hold {n} weights of {bits} bits")
    b = np.unpackbits(packed.numpy())[: n * bits].reshape(n, bits).astype(np.int64)
    idx = torch.from_numpy(b @ (1 << np.arange(bits - 1, -1, -1)))
    grid = signed_grid(fmt)
    if n and int(idx.max()) >= len(grid):
        raise DatafreeError(f"a weight code ({int(idx.max())}) lies outside the {len(grid)} values of {fmt.name}")
    return grid[idx]


def compact_scale(w_scale: torch.Tensor, granularity: str, group_size: int) -> torch.Tensor:
    """One scale per tensor, row or group: ``weight_scale``'s per-element group scales folded back."""
    return w_scale[:, ::group_size].contiguous() if granularity == "group" else w_scale


def expand_scale(scale: torch.Tensor, granularity: str, group_size: int, cols: int) -> torch.Tensor:
    """``compact_scale`` undone: what ``weight_scale`` returns."""
    return scale.repeat_interleave(group_size, 1)[:, :cols] if granularity == "group" else scale
