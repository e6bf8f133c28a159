"""The facts about the machine that every result JSON and report records."""

from __future__ import annotations

import os
import platform

import torch

from datafree.omp import spin_setting
from datafree.precision import BF16_FLAGS, bf16_fast, cpu_info
from datafree.synthesis.base import fused_bn_used


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name, its native bf16 instructions (AVX512-BF16 / AMX) and whether the engine runs
    bf16 autocast on it (``bf16_autocast``, datafree.precision): with the native instructions the engine's
    work runs about twice as fast (reference speed 858 vs 318-417 images/s on two 2-core VMs of this
    workplace), and an AVX2-only CPU runs float32, so wall-clock results of such machines are not comparable."""
    info = cpu_info(cpuinfo)
    native = (sorted(info["flags"] & BF16_FLAGS) or False) if info["known"] else None  # None: not Linux
    return {"cpu_model": info["model"] or "unknown", "cpu_bf16": native, "bf16_autocast": bf16_fast(info)}


def machine_info(bf16: bool | None = None, threads: int | None = None) -> dict:
    """The machine facts; ``bf16``: the autocast setting the run used (``--bf16 on|off`` overrides what ``auto``
    picks on this CPU, which ``bf16_autocast`` records when no run setting is given); ``threads``: the intra-op
    threads the run used (``--deterministic`` runs one), where they differ from torch's setting now."""
    facts = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
             **cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
             "torch": torch.__version__, "fused_bn_stats": fused_bn_used(), "omp_spin": spin_setting()}
    if bf16 is not None:
        facts["bf16_autocast"] = bool(bf16)
    if threads is not None:
        facts["torch_threads"] = threads
    return facts
