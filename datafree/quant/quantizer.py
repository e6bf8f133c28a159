"""Scales, observers and the fake-quantized layer.

A weight is quantized on its 2-D view W (rows = output channels, columns = fan-in) with one scale per
tensor, per output channel or per group of ``group_size`` consecutive columns of a row; an activation
with one scale per tensor.  Scales are float or powers of two; ``amax`` comes from an observer:
- ``minmax``: the largest magnitude;
- ``percentile``: the ``percentile``-th percentile of |x| (outliers clipped);
- ``mse``: the clipping value among 100 candidates in [0.2, 1] x max|x| with the least quantization MSE.
For a symmetric format the scale maps amax onto the format's largest value (an integer's qmax, a
minifloat's max finite value); asymmetric integers map [min, max] onto [qmin, qmax] with a zero-point.
Integer activation quantizers switch to the unsigned variant for non-negative tensors (post-ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import DatafreeError
from datafree.quant.formats import Format, IntFormat, as_saturating

OBSERVERS = ("minmax", "percentile", "mse")


@dataclass(frozen=True)
class QuantSpec:
    fmt: Format
    granularity: str = "tensor"  # tensor | channel | group
    group_size: int = 32
    scale_type: str = "float"  # float | po2
    observer: str = "minmax"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if self.granularity not in ("tensor", "channel", "group"):
            raise DatafreeError(f"granularity must be tensor, channel or group, got '{self.granularity}'")
        if self.scale_type not in ("float", "po2"):
            raise DatafreeError(f"scale type must be float or po2, got '{self.scale_type}'")
        if self.observer not in OBSERVERS:
            raise DatafreeError(f"observer must be one of {', '.join(OBSERVERS)}, got '{self.observer}'")


def onnx_int8_weights(spec: QuantSpec) -> bool:
    """Weights the INT8 ONNX (QDQ) export takes: int8 symmetric (saturating or not), per tensor or per channel."""
    fmt = as_saturating(spec.fmt)
    return isinstance(fmt, IntFormat) and fmt.bits == 8 and fmt.symmetric and spec.granularity != "group"


def onnx_int8_activations(fmt: Format | None) -> bool:
    """Activations the INT8 ONNX (QDQ) export takes: 8-bit integers (signed or not, any zero point)."""
    return isinstance(fmt, IntFormat) and fmt.bits == 8


def qdq(x: torch.Tensor, fmt: Format, scale: torch.Tensor, zero: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize ``x`` with broadcastable ``scale`` (and integer ``zero``-point)."""
    if isinstance(fmt, IntFormat):
        z = zero if zero is not None else 0.0
        return (fmt.round(x / scale + z) - z) * scale
    return fmt.round(x / scale) * scale


def _po2(scale: torch.Tensor) -> torch.Tensor:
    return torch.exp2(torch.ceil(torch.log2(scale)))


def scale_for(amax: torch.Tensor, fmt: Format, scale_type: str = "float") -> torch.Tensor:
    s = amax.clamp(min=1e-12) / fmt.max_value
    return _po2(s) if scale_type == "po2" else s


def _mse_amax(rows: torch.Tensor, fmt: Format, scale_type: str) -> torch.Tensor:
    """Per row of ``rows``: the clipping value with the least quantization MSE (symmetric)."""
    top = rows.abs().amax(1, keepdim=True).clamp(min=1e-12)
    best, best_err = top.clone(), torch.full_like(top, float("inf"))
    for a in torch.linspace(0.2, 1.0, 100):
        amax = top * a
        err = (qdq(rows, fmt, scale_for(amax, fmt, scale_type)) - rows).pow(2).mean(1, keepdim=True)
        better = err < best_err
        best, best_err = torch.where(better, amax, best), torch.where(better, err, best_err)
    return best


def _amax(rows: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    if spec.observer == "mse":
        return _mse_amax(rows, spec.fmt, spec.scale_type)
    if spec.observer == "percentile":
        return torch.quantile(rows.abs().float(), spec.percentile / 100, dim=1, keepdim=True)
    return rows.abs().amax(1, keepdim=True)


# -- weights ---------------------------------------------------------------------------------------
def weight_scale(w2: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """The scale of each element of the 2-D weight view (broadcastable to it)."""
    fmt = as_saturating(spec.fmt)
    if spec.granularity == "tensor":
        return scale_for(_amax(w2.reshape(1, -1), spec), fmt, spec.scale_type)  # 1 x 1
    if spec.granularity == "channel":
        return scale_for(_amax(w2, spec), fmt, spec.scale_type)  # rows x 1
    g = spec.group_size
    rows, cols = w2.shape
    pad = (-cols) % g
    wp = F.pad(w2, (0, pad))
    s = scale_for(_amax(wp.reshape(-1, g), spec), fmt, spec.scale_type).reshape(rows, -1)  # rows x groups
    return s.repeat_interleave(g, 1)[:, :cols]


def quantize_weight(w: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Round-to-nearest fake quantization of a weight tensor of any shape (dim 0 = output channels)."""
    if not isinstance(spec.fmt, IntFormat) or spec.fmt.symmetric:
        w2 = w.reshape(len(w), -1)
        s = weight_scale(w2, spec) if scale is None else scale
        return qdq(w2, as_saturating(spec.fmt), s).reshape(w.shape)
    raise DatafreeError("weights use symmetric formats (int4, not int4_asym)")


# -- activations -----------------------------------------------------------------------------------
class ActObserver:
    """Collects what an activation quantizer needs over calibration batches: min, max and a uniform
    random subsample of the values (for percentile and MSE)."""

    def __init__(self, keep: int = 1 << 20) -> None:
        self.lo, self.hi, self.keep = float("inf"), float("-inf"), keep
        self.samples: list[torch.Tensor] = []
        self.n = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        take = min(len(x), max(1, self.keep // 16))
        self.samples.append(x[torch.randint(len(x), (take,))])
        self.n += 1

    def values(self) -> torch.Tensor:
        v = torch.cat(self.samples)
        return v[torch.randperm(len(v))[: self.keep]]


def activation_params(obs: ActObserver, spec: QuantSpec) -> tuple[Format, torch.Tensor, torch.Tensor | None]:
    """(format, scale, zero-point) of a per-tensor activation quantizer from what ``obs`` saw."""
    if obs.n == 0:
        raise DatafreeError("an activation quantizer saw no calibration data")
    fmt = as_saturating(spec.fmt)
    if isinstance(fmt, IntFormat) and fmt.signed and fmt.symmetric and obs.lo >= 0:
        fmt = IntFormat(fmt.bits, signed=False)  # non-negative input: the unsigned grid has twice the steps
    if isinstance(fmt, IntFormat) and not fmt.signed and fmt.symmetric and obs.lo < 0:
        fmt = IntFormat(fmt.bits, signed=False, symmetric=False)  # signed input on an unsigned grid: a zero-point
        # (as ONNX's uint8 has), not a clip of every negative value at 0
    v = obs.values()
    if isinstance(fmt, IntFormat) and not fmt.symmetric:  # affine: [lo, hi] -> [qmin, qmax]
        lo, hi = (min(obs.lo, 0.0), max(obs.hi, 0.0))
        if spec.observer == "percentile":
            lo = min(0.0, float(torch.quantile(v, 1 - spec.percentile / 100)))
            hi = max(0.0, float(torch.quantile(v, spec.percentile / 100)))
        s = torch.tensor(max(hi - lo, 1e-12) / (fmt.qmax - fmt.qmin))
        if spec.scale_type == "po2":
            s = _po2(s)
        return fmt, s, torch.round(fmt.qmin - lo / s)
    if isinstance(fmt, IntFormat) and not fmt.signed:
        top = v.clamp(min=0)[None]
    else:
        top = v[None]
    spec1 = replace(spec, fmt=fmt)
    amax = torch.tensor(max(abs(obs.lo), abs(obs.hi)))[None, None] if spec.observer == "minmax" else _amax(top, spec1)
    return fmt, scale_for(amax, fmt, spec.scale_type).reshape(()), None


# -- the layer --------------------------------------------------------------------------------------
class ActQuant:
    """A per-tensor activation quantizer: observes during calibration, then fake-quantizes."""

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec
        self.fmt: Format | None = None
        self.scale: torch.Tensor | None = None
        self.zero: torch.Tensor | None = None
        self.observer: ActObserver | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(x)
            return x
        return qdq(x, self.fmt, self.scale, self.zero) if self.scale is not None else x

    def start(self) -> None:
        self.observer = ActObserver(keep=1 << 18)

    def finish(self) -> None:
        if self.observer is not None:
            self.fmt, self.scale, self.zero = activation_params(self.observer, self.spec)
        self.observer = None


class QuantLayer(nn.Module):
    """A Conv2d or Linear whose input activation and weight are fake-quantized (and, optionally, its
    output: residual-add inputs for integer-only inference).

    ``weight_q`` (the dequantized quantized weight) is set by ``set_weight`` - round-to-nearest by
    default, or by AdaRound / GPTQ.  ``smooth`` (SmoothQuant) divides the input per channel and
    multiplies the weight's input channels by the same factors.  While calibrating (``observing``) the
    layer records its (smoothed) input and runs in float."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, w_spec: QuantSpec, a_spec: QuantSpec | None,
                 name: str = "") -> None:
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"QuantLayer wraps Conv2d or Linear, got {type(layer).__name__}")
        self.layer, self.w_spec, self.a_spec, self.name = layer, w_spec, a_spec, name
        self.register_buffer("weight_q", layer.weight.detach().clone())
        self.register_buffer("w_scale", torch.ones(1, 1))
        self.smooth: torch.Tensor | None = None
        self.act = ActQuant(a_spec) if a_spec is not None else None
        self.out: ActQuant | None = None  # output quantizer (residual-add inputs), see graph.quantize_residuals
        self.bias_corr: torch.Tensor | None = None  # bias correction, applied only when quantized
        self.weight_override = None  # a callable giving the weight to use (block-wise AdaRound)
        self.quant_act, self.quant_weight = a_spec is not None, True
        self.input_prequantized = False  # the input quantizer was moved in front (graph.share_input_quantizers)
        self.set_weight()

    @property
    def is_conv(self) -> bool:
        return isinstance(self.layer, nn.Conv2d)

    @property
    def observing(self) -> bool:
        return self.act is not None and self.act.observer is not None

    @property
    def a_fmt(self) -> Format | None:
        return self.act.fmt if self.act is not None else None

    @property
    def weight(self) -> torch.Tensor:
        """The float weight, smoothing included."""
        w = self.layer.weight.detach()
        if self.smooth is not None:
            w = w * self.smooth.view(1, -1, *([1] * (w.dim() - 2)))
        return w

    def set_weight(self, weight_q: torch.Tensor | None = None) -> None:
        w = self.weight
        self.w_scale = weight_scale(w.reshape(len(w), -1), self.w_spec)
        # a given weight (AdaRound's, GPTQ's: grid values, some computed in float64) is snapped onto the float32
        # grid of these scales, so that every weight_q is exactly code x scale, as quantized.safetensors stores it
        self.weight_q = quantize_weight(w if weight_q is None else weight_q.detach(), self.w_spec, self.w_scale)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth.view(1, -1, *([1] * (x.dim() - 2)))
        if self.act is not None and (self.quant_act or self.observing) and not self.input_prequantized:
            x = self.act(x)
        return x

    def start_calibration(self) -> None:
        for q in (self.act, self.out):
            if q is not None:
                q.start()

    def finish_calibration(self) -> None:
        for q in (self.act, self.out):
            if q is not None:
                q.finish()

    @property
    def quantized(self) -> bool:
        return self.quant_weight and not self.observing

    def bias(self, quantized: bool | None = None) -> torch.Tensor | None:
        b = self.layer.bias
        if (self.quantized if quantized is None else quantized) and self.bias_corr is not None:
            b = self.bias_corr if b is None else b + self.bias_corr
        return b

    def forward_with(self, x: torch.Tensor, weight: torch.Tensor, quantized: bool = True) -> torch.Tensor:
        """The layer's op on an (already input-quantized) x with the given weight; ``quantized`` adds
        the bias correction and the output quantizer."""
        bias = self.bias(quantized)
        if self.is_conv:
            c = self.layer
            y = F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)
        else:
            y = F.linear(x, weight, bias)
        if self.out is not None and (self.out.observer is not None or (quantized and self.quant_act)):
            y = self.out(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantize_input(x)
        q = self.quantized
        if q and self.weight_override is not None:
            return self.forward_with(x, self.weight_override(), q)
        return self.forward_with(x, self.weight_q if q else self.weight, q)
