"""Parameterised Verilog for one multiply-accumulate (MAC) unit per (weight, activation) format pair.

The datapath follows the minifloat MAC of Aggarwal et al. ("Shedding the Bits", FPL 2024) and the
fixed-point accumulation of FPGA minifloat dot products:
- an operand is decoded into sign, significand and exponent: an integer is sign + magnitude with
  exponent 0; a minifloat ExMy has the hidden bit 1 for a normal exponent field and 0 for a
  subnormal one (whose exponent then reads as 1), so value = (-1)^s * sig * 2^(exp - bias - m);
- the significands are multiplied (an integer (ma+1) x (mw+1)-bit multiplier), the exponents added;
- the product is aligned by a left shift of (exp_w + exp_a - their minimum) into a fixed-point,
  two's-complement accumulator wide enough for every product (plus ``GUARD`` bits of headroom for
  sums of 2^GUARD products), negated when the signs differ, and accumulated.
Inputs and the accumulator are registered, so the unit is a realistic pipelined stage.  Integer x
integer pairs reduce to a signed multiplier and an adder.  No special values: minifloats here use
all codes as numbers (the FPGA formats); a saturating quantizer never produces the OCP NaN codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from datafree.quant.formats import Format, IntFormat, MinifloatFormat

GUARD = 8  # accumulator headroom: 2^8 = 256 products without overflow


@dataclass(frozen=True)
class Operand:
    """How a format decodes: significand width (hidden bit included), exponent range, signedness."""

    bits: int
    sig: int  # significand bits (magnitude, unsigned)
    exp_bits: int  # exponent field bits (0 for integers)
    exp_max: int  # largest effective (biased) exponent value
    exp_min: int  # smallest effective exponent value

    @staticmethod
    def of(fmt: Format) -> Operand:
        if isinstance(fmt, IntFormat):
            return Operand(fmt.bits, fmt.bits - 1 if fmt.signed else fmt.bits, 0, 0, 0)
        return Operand(fmt.bits, fmt.m + 1, fmt.e, 2**fmt.e - 1, 1)


def acc_width(w: Format, a: Format) -> int:
    ow, oa = Operand.of(w), Operand.of(a)
    shift = (ow.exp_max - ow.exp_min) + (oa.exp_max - oa.exp_min)
    return ow.sig + oa.sig + shift + 2 + GUARD  # magnitude (+1 for -2^(b-1) squared) + alignment + sign + headroom


def _decode(name: str, fmt: Format) -> list[str]:
    """Verilog wires {name}_s, {name}_sig, {name}_exp for a registered operand {name}_r."""
    o = Operand.of(fmt)
    if isinstance(fmt, IntFormat):
        if not fmt.signed:
            return [f"  wire {name}_s = 1'b0;", f"  wire [{o.sig - 1}:0] {name}_sig = {name}_r;",
                    f"  wire [0:0] {name}_exp = 1'b0;"]
        return [f"  wire {name}_s = {name}_r[{fmt.bits - 1}];",
                f"  wire [{fmt.bits - 1}:0] {name}_abs = {name}_s ? -{name}_r : {name}_r;",
                # |-2^(b-1)| needs b bits: keep the full width as the significand
                f"  wire [{fmt.bits - 1}:0] {name}_sig = {name}_abs;",
                f"  wire [0:0] {name}_exp = 1'b0;"]
    assert isinstance(fmt, MinifloatFormat)
    e, m = fmt.e, fmt.m
    lines = [f"  wire {name}_s = {name}_r[{e + m}];",
             f"  wire [{e - 1}:0] {name}_e = {name}_r[{e + m - 1}:{m}];",
             f"  wire {name}_h = |{name}_e;"]
    if m:
        lines.append(f"  wire [{m}:0] {name}_sig = {{{name}_h, {name}_r[{m - 1}:0]}};")
    else:
        lines.append(f"  wire [0:0] {name}_sig = {name}_h;")
    lines.append(f"  wire [{e - 1}:0] {name}_exp = {name}_h ? {name}_e : {e}'d1;")
    return lines


def _sig_width(fmt: Format) -> int:
    if isinstance(fmt, IntFormat):
        return fmt.bits
    return fmt.m + 1


def _exp_width(fmt: Format) -> int:
    return fmt.e if isinstance(fmt, MinifloatFormat) else 1


def mac_verilog(w: Format, a: Format, module: str = "mac", product_only: bool = False) -> str:
    """A registered MAC: acc <= acc + w * a, for weight format ``w`` and activation format ``a``.
    ``product_only``: a combinational module with inputs w_r, a_r and output ``p`` = the aligned,
    signed product as it enters the accumulator (for functional tests)."""
    acc = acc_width(w, a)
    if isinstance(w, IntFormat) and isinstance(a, IntFormat):
        pw = w.bits + a.bits + (not w.signed) + (not a.signed)
        body = [f"  wire signed [{pw - 1}:0] prod = $signed({_ext(w, 'w_r')}) * $signed({_ext(a, 'a_r')});",
                f"  wire [{acc - 1}:0] p = {{{{{acc - pw}{{prod[{pw - 1}]}}}}, prod}};",
                "  always @(posedge clk) acc <= acc + p;"]
        decode: list[str] = []
    else:
        sw, sa = _sig_width(w), _sig_width(a)
        ew, ea = _exp_width(w), _exp_width(a)
        ps = sw + sa
        emin = Operand.of(w).exp_min + Operand.of(a).exp_min
        es = max(ew, ea) + 1
        decode = _decode("w", w) + _decode("a", a)
        body = [f"  wire [{ps - 1}:0] prod = w_sig * a_sig;",
                f"  wire [{es - 1}:0] esum = w_exp + a_exp - {es}'d{emin};",
                f"  wire [{acc - 1}:0] aligned = {{{{{acc - ps}{{1'b0}}}}, prod}} << esum;",
                "  wire neg = w_s ^ a_s;",
                f"  wire [{acc - 1}:0] p = neg ? -aligned : aligned;",
                "  always @(posedge clk) acc <= acc + p;"]
    if product_only:
        body = [ln.replace(f"  wire [{acc - 1}:0] p = ", "  assign p = ") for ln in body if "always" not in ln]
        return "\n".join([
            f"module {module}(input [{w.bits - 1}:0] w_r, input [{a.bits - 1}:0] a_r, output [{acc - 1}:0] p);",
            *decode, *body, "endmodule", ""])
    return "\n".join([
        f"// datafree MAC: weights {w.name}, activations {a.name}; accumulator {acc} bits",
        f"module {module}(input clk, input [{w.bits - 1}:0] w_in, input [{a.bits - 1}:0] a_in,",
        f"           output reg [{acc - 1}:0] acc);",
        f"  reg [{w.bits - 1}:0] w_r;",
        f"  reg [{a.bits - 1}:0] a_r;",
        "  always @(posedge clk) begin w_r <= w_in; a_r <= a_in; end",
        *decode, *body, "endmodule", ""])


def _ext(fmt: IntFormat, reg: str) -> str:
    """A signed view of an integer operand register (unsigned ones get a zero sign bit)."""
    return reg if fmt.signed else f"{{1'b0, {reg}}}"
