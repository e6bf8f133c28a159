"""Number formats for quantization: integers and minifloats (ExMy).

``IntFormat(bits, signed, symmetric)``: two's-complement (or unsigned) integers of 2-16 bits; symmetric
formats have a zero-point of 0, asymmetric ones an integer zero-point.

``MinifloatFormat(e, m, bias, subnormals, saturating, nan)``: a sign bit, ``e`` exponent bits and ``m``
mantissa bits (Aggarwal et al., "Shedding the Bits", FPL 2024; OCP 8-bit FP and MX specifications).
``nan`` says which codes are not finite:
- ``"ieee"``: the top exponent is reserved for inf and NaN (OCP E5M2);
- ``"fn"``: finite, the all-ones code (S.1111.111) is NaN (OCP E4M3FN);
- ``"fnuz"``: finite, no negative zero, the code 1.000..0 is the only NaN (E4M3FNUZ, E5M2FNUZ);
- ``"none"``: every code is a finite number (MX FP6 E3M2/E2M3, FP4 E2M1, and the FPGA formats).
Rounding is to nearest, ties to even; values between zero and the smallest normal use subnormals (or
flush to the nearer of 0 and the smallest normal without them).  Above the largest finite value a
``saturating`` format clamps; otherwise it overflows as ``ml_dtypes`` does (inf for "ieee", NaN for
"fn"/"fnuz", and the MX "none" formats saturate).  With default arguments the named OCP/MX formats
round bit-exactly like ml_dtypes' float8_e4m3fn, float8_e5m2, float8_e4m3fnuz, float8_e5m2fnuz,
float6_e3m2fn, float6_e2m3fn and float4_e2m1fn (tests check every code and every tie).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch

from datafree.errors import DatafreeError
from datafree.precision import compile_or_none


@dataclass(frozen=True)
class IntFormat:
    bits: int
    signed: bool = True
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise DatafreeError(f"integer formats have 2 to 16 bits, got {self.bits}")

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.bits}{'' if self.symmetric else '_asym'}"

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def max_value(self) -> float:
        """The largest magnitude a symmetric scale maps |x|max onto."""
        return float(self.qmax)

    @property
    def is_float(self) -> bool:
        return False

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Round already-scaled (and zero-point shifted) values onto the integer grid, clamped."""
        return torch.round(x).clamp_(self.qmin, self.qmax)

    def neighbours(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid points just below and above x (equal when x is on the grid), clamped to the range."""
        return torch.floor(x).clamp(self.qmin, self.qmax), torch.ceil(x).clamp(self.qmin, self.qmax)


@dataclass(frozen=True)
class MinifloatFormat:
    e: int
    m: int
    bias: int | None = None  # default 2^(e-1) - 1
    subnormals: bool = True
    saturating: bool = True
    nan: str = "none"  # ieee | fn | fnuz | none

    def __post_init__(self) -> None:
        if self.e < 1 or self.m < 0:
            raise DatafreeError(f"a minifloat needs e >= 1 and m >= 0, got e={self.e} m={self.m}")
        if self.e > 8 or self.m > 23 or self.bits > 16:  # rounding runs in float32: its range and precision
            raise DatafreeError(f"minifloats have at most 16 bits, 8 exponent and 23 mantissa bits, got "
                                f"e{self.e}m{self.m}")
        if not (-126 <= 1 - self.exp_bias and self.max_exp <= 127):
            raise DatafreeError(f"e{self.e}m{self.m} with bias {self.exp_bias} leaves float32's exponent range")
        if self.nan not in ("ieee", "fn", "fnuz", "none"):
            raise DatafreeError(f"minifloat nan mode must be ieee, fn, fnuz or none, got '{self.nan}'")
        if self.nan == "ieee" and self.e < 2:
            raise DatafreeError("an IEEE-style minifloat needs at least 2 exponent bits")
        if self.nan == "fn" and self.e + self.m < 2:
            raise DatafreeError("an fn minifloat needs at least 2 bits besides the sign")

    @property
    def bits(self) -> int:
        return 1 + self.e + self.m

    @property
    def exp_bias(self) -> int:
        return self.bias if self.bias is not None else 2 ** (self.e - 1) - 1

    @property
    def name(self) -> str:
        suffix = {"ieee": "", "fn": "fn", "fnuz": "fnuz", "none": ""}[self.nan]
        return f"fp{self.bits}_e{self.e}m{self.m}{suffix}"

    @property
    def is_float(self) -> bool:
        return True

    @property
    def min_normal_exp(self) -> int:
        return 1 - self.exp_bias

    @property
    def max_exp(self) -> int:
        top = 2**self.e - 1 - (1 if self.nan == "ieee" else 0)
        return top - self.exp_bias

    @property
    def max_value(self) -> float:
        frac = 2 - 2.0 ** (1 - self.m) if self.nan == "fn" else 2 - 2.0 ** (-self.m)
        if self.nan == "fn" and self.m == 0:  # the only mantissa code at the top exponent is NaN
            return 2.0 ** (self.max_exp - 1)
        return frac * 2.0**self.max_exp

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.min_normal_exp - self.m)

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Round already-scaled values to the nearest representable value (ties to even); overflow
        saturates or becomes inf/NaN as described in the module docstring."""
        if (self.saturating or self.nan == "none") and self.subnormals and x.dtype == torch.float32 \
                and x.numel() >= FAST_MIN_NUMEL and not x.requires_grad:
            fast = _fast_round()
            if fast is not None:  # the same arithmetic, fused by torch.compile (10x on activations)
                # one grad mode and the format's constants as 0-d tensors: one graph for every format
                # (a grad-mode switch or a new Python constant would recompile until dynamo gives up)
                with torch.no_grad():
                    return fast(x, *_consts(self.m, self.min_normal_exp, self.max_value, self.nan == "none",
                                            self.nan == "fnuz"))
        # exact in float32 too: steps are powers of two, so x / step and round(.) * step lose nothing
        xd = x if x.dtype in (torch.float32, torch.float64) else x.float()
        a = xd.abs()
        _, ex = torch.frexp(a)  # a = f * 2^ex with f in [0.5, 1): floor(log2 a) = ex - 1
        exp = torch.clamp(ex.to(a.dtype) - 1, min=self.min_normal_exp)
        step = torch.exp2(exp - self.m)
        q = torch.round(a / step) * step
        if not self.subnormals:
            mn = 2.0**self.min_normal_exp
            q = torch.where(a < mn, torch.where(a >= mn / 2, torch.full_like(a, mn), torch.zeros_like(a)), q)
        big = self.max_value
        over = q > big
        if self.saturating or self.nan == "none":
            q = torch.where(over, torch.full_like(q, big), q)
        else:
            q = torch.where(over, torch.full_like(q, math.inf if self.nan == "ieee" else math.nan), q)
        q = torch.copysign(q, xd)
        if self.nan == "fnuz":  # no negative zero
            q = torch.where(q == 0, torch.zeros_like(q), q)
        # NaN in: NaN out; the MX formats have no NaN code and ml_dtypes maps it to a zero of the other sign
        q = torch.where(torch.isnan(xd), torch.copysign(torch.zeros_like(q), -xd) if self.nan == "none" else
                        torch.full_like(q, math.nan), q)
        if self.nan != "ieee":  # an infinite input has no code: NaN, or the largest value when saturating
            fill = big if (self.saturating or self.nan == "none") else math.nan
            q = torch.where(torch.isinf(xd), torch.copysign(torch.full_like(q, fill), xd), q)
        return q.to(x.dtype)

    def grid(self) -> torch.Tensor:
        """All non-negative finite values, ascending (float64)."""
        vals = [0.0]
        if self.subnormals:
            vals += [k * self.min_subnormal for k in range(1, 2**self.m)]
        for ex in range(self.min_normal_exp, self.max_exp + 1):
            for k in range(2**self.m):
                v = (1 + k / 2**self.m) * 2.0**ex
                if v <= self.max_value:
                    vals.append(v)
        return torch.tensor(sorted(set(vals)), dtype=torch.float64)

    def neighbours(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid points just below and above x (equal when x is on the grid), clamped to the range."""
        g = self.grid()
        full = torch.cat([-g.flip(0)[:-1], g]).to(x.dtype)
        xc = x.clamp(float(full[0]), float(full[-1]))
        hi_i = torch.searchsorted(full, xc.contiguous(), right=False).clamp(max=len(full) - 1)
        hi = full[hi_i]
        lo_i = torch.where(hi == xc, hi_i, (hi_i - 1).clamp(min=0))
        return full[lo_i], hi


Format = IntFormat | MinifloatFormat

FAST_MIN_NUMEL = 1 << 16  # smaller tensors (weights, tests) stay eager: compiling would cost more than it saves


def _consts(m: int, min_exp: int, big: float, nan_zero: bool, fnuz: bool) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(float(v)) for v in (m, min_exp, big, nan_zero, fnuz))


def _round_core(x: torch.Tensor, m: torch.Tensor, min_exp: torch.Tensor, big: torch.Tensor,
                nan_zero: torch.Tensor, fnuz: torch.Tensor) -> torch.Tensor:
    """Saturating minifloat rounding with subnormals: MinifloatFormat.round's arithmetic (the constants are
    float32 0-d tensors; every value involved is exact in float32).  An infinity saturates; a NaN stays NaN,
    or where the format has no NaN code (``nan_zero`` 1, the MX formats) becomes ml_dtypes' zero of the
    other sign; ``fnuz`` 1: no negative zero."""
    a = x.abs()
    _, ex = torch.frexp(a)
    step = torch.exp2(torch.clamp(ex.to(a.dtype) - 1, min=min_exp) - m)
    q = torch.copysign(torch.clamp(torch.round(a / step) * step, max=big), x)
    q = torch.where((q == 0) & (fnuz > 0), torch.zeros_like(q), q)
    return torch.where(torch.isnan(x) & (nan_zero > 0), torch.copysign(torch.zeros_like(x), -x), q)


@functools.cache
def _fast_round():
    """``_round_core`` compiled once (``datafree.precision.compile_or_none``), or None (eager)."""

    def warmup(fn):
        with torch.no_grad():
            fn(torch.linspace(-3, 3, 1 << 16), *_consts(3, -6, 448.0, False, False))

    return compile_or_none(_round_core, warmup)

# OCP FP8, FNUZ variants and MX FP6/FP4 with the semantics of their ml_dtypes namesakes (non-saturating
# casts, as ml_dtypes does); quantizers use saturating copies (``as_saturating``).
NAMED: dict[str, Format] = {
    "fp8_e4m3": MinifloatFormat(4, 3, 7, nan="fn", saturating=False),
    "fp8_e5m2": MinifloatFormat(5, 2, 15, nan="ieee", saturating=False),
    "fp8_e4m3fnuz": MinifloatFormat(4, 3, 8, nan="fnuz", saturating=False),
    "fp8_e5m2fnuz": MinifloatFormat(5, 2, 16, nan="fnuz", saturating=False),
    "fp6_e3m2": MinifloatFormat(3, 2, 3, nan="none"),
    "fp6_e2m3": MinifloatFormat(2, 3, 1, nan="none"),
    "fp4_e2m1": MinifloatFormat(2, 1, 1, nan="none"),
}
ML_DTYPES = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2", "fp8_e4m3fnuz": "float8_e4m3fnuz",
             "fp8_e5m2fnuz": "float8_e5m2fnuz", "fp6_e3m2": "float6_e3m2fn", "fp6_e2m3": "float6_e2m3fn",
             "fp4_e2m1": "float4_e2m1fn"}


def as_saturating(fmt: Format) -> Format:
    if isinstance(fmt, MinifloatFormat) and not fmt.saturating:
        return MinifloatFormat(fmt.e, fmt.m, fmt.bias, fmt.subnormals, True, fmt.nan)
    return fmt


def parse_format(name: str) -> Format:
    """'int8', 'uint4', 'int6_asym', 'fp8_e4m3', 'fp6_e2m3', 'e3m2' (any ExMy: all codes finite, IEEE
    bias), 'e4m3b6' (bias 6), 'e2m1_nosub' (no subnormals); minifloats used to quantize saturate."""
    s = name.strip().lower()
    if s in NAMED:
        return NAMED[s]
    m = re.fullmatch(r"(u?)int(\d+)(_asym)?", s)
    if m:
        try:
            return IntFormat(int(m.group(2)), signed=not m.group(1), symmetric=not m.group(3))
        except DatafreeError as e:
            raise DatafreeError(f"format '{name}': {e}") from None
    m = re.fullmatch(r"(?:fp\d+_)?e(\d+)m(\d+)(?:b(-?\d+))?(_nosub)?", s)
    if m:
        fmt = MinifloatFormat(int(m.group(1)), int(m.group(2)), int(m.group(3)) if m.group(3) else None,
                              subnormals=not m.group(4))
        if s.startswith("fp") and int(s[2 : s.index("_")]) != fmt.bits:
            raise DatafreeError(f"format '{name}': e{fmt.e}m{fmt.m} has {fmt.bits} bits, not {s[2:s.index('_')]}")
        return fmt
    raise DatafreeError(f"unknown number format '{name}'; use int2..int16 (uint8, int4_asym), fp8_e4m3, "
                        f"fp8_e5m2, fp8_e4m3fnuz, fp8_e5m2fnuz, fp6_e3m2, fp6_e2m3, fp4_e2m1 or any ExMy like e3m2")


def format_splits(bits: int) -> list[Format]:
    """Every format of ``bits`` bits the design-space sweep tries: the integer and each minifloat split
    (sign + e + m = bits, e >= 1)."""
    return [IntFormat(bits)] + [MinifloatFormat(e, bits - 1 - e) for e in range(1, bits)]
