"""Speed switches of every stage: whether bf16 autocast pays on this CPU (``bf16="auto"``), and the
small hot functions fused by ``torch.compile`` (:func:`compile_or_none`).

bf16 autocast is only fast where oneDNN has vector bf16 kernels: the native instructions (AVX512-BF16, AMX,
Arm's BF16 extension) or at least AVX512 (bf16 converted in 512-bit registers).  On an AVX2-only CPU
the same work falls to slow paths: on a 2-core AMD EPYC with AVX2 alone, resnet20 forward + backward on
128 images ran at 25-39 images/s under bf16 autocast against 312-367 in float32 - ten times slower.  So
``auto`` (the default of ``distill``, ``condense``, the calibration inversion and the reference speed)
turns bf16 on only where one of those instruction sets is present; ``True`` / ``False`` force it.

``torch.compile`` is used for a few element-wise hot spots only (minifloat rounding, the BN-statistics
loss of inversion), each compiled once with dynamic shapes and used only for tensors large enough to pay
for the compilation (each caller's threshold); where it is unavailable (no C++ toolchain) or off
(``DATAFREE_COMPILE=0``) the same arithmetic runs eagerly.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86 flags of native bf16 arithmetic
AVX512_FLAGS = {"avx512f", "avx512bw"}  # enough for oneDNN's vectorised bf16 conversion path


def compile_or_none(fn: Callable, warmup: Callable[[Callable], object]) -> Callable | None:
    """``fn`` under ``torch.compile`` (dynamic shapes), compiled now by ``warmup(compiled_fn)`` so that a
    missing toolchain fails here rather than mid-run; None where torch.compile is unavailable or disabled
    (``DATAFREE_COMPILE=0``), and the caller stays eager."""
    if os.environ.get("DATAFREE_COMPILE", "1") == "0":
        return None
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices on importing inductor: not the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            compiled = torch.compile(fn, dynamic=True)
            warmup(compiled)
    except Exception:  # noqa: BLE001 - no C++ toolchain, unsupported platform: stay eager
        return None
    return compiled


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name and instruction flags ({} of flags where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux
        return {"model": platform.processor() or "unknown", "flags": frozenset(), "known": False}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), v.strip())  # the first CPU's line of each field
    flags = fields.get("flags", "") or fields.get("Features", "")  # x86 | aarch64
    return {"model": fields.get("model name", "") or fields.get("CPU part", "unknown"),
            "flags": frozenset(flags.split()), "known": True}


def bf16_fast(info: dict | None = None) -> bool:
    """True where bf16 autocast runs at least about as fast as float32 (see the module docstring)."""
    if info is None:
        return _this_cpu_bf16_fast()
    flags = info["flags"]
    if not info.get("known", True):
        return False  # no way to tell: float32 is never the slow choice
    return bool(flags & BF16_FLAGS) or AVX512_FLAGS <= flags or "bf16" in flags  # "bf16": aarch64 FEAT_BF16


@functools.cache
def _this_cpu_bf16_fast() -> bool:
    return bf16_fast(cpu_info())


def resolve_bf16(value: bool | str) -> bool:
    """``"auto"`` -> :func:`bf16_fast`; booleans (and on/off/true/false strings) are taken as given."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v == "auto":
        return bf16_fast()
    if v in ("1", "true", "on", "yes"):
        return True
    if v in ("0", "false", "off", "no"):
        return False
    from datafree.errors import DatafreeError

    raise DatafreeError(f"bf16 must be auto, on or off, got '{value}'")


def channels_last_works(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model`` runs on a channels_last batch like ``x`` (NHWC convolutions are faster on oneDNN):
    a model that flattens its features with ``.view`` does not, and then stays NCHW.  One eval-mode forward
    pass of two images, no gradient."""
    if x.ndim != 4:
        return False
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x[:2].float().contiguous(memory_format=torch.channels_last))
        return True
    except RuntimeError:
        return False
    finally:
        model.train(was)
