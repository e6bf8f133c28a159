"""Post-training quantization with integer and minifloat formats, calibrated on synthetic (default) or
real data.

    res = datafree.quantize(model, QuantConfig(weights="int4", activations="fp8_e4m3",
                                               algorithms=["gptq", "bias_correction"]), calib=x)
    res.model, res.report           # the fake-quantized model (BN folded) and what was done and measured

Pipeline (``quantize``): fold BatchNorm, wrap every Conv2d/Linear in a ``QuantLayer`` (first and last
layers at ``edge_bits`` of the same family), then the selected algorithms in a fixed order:
cross-layer equalization -> SmoothQuant -> activation calibration -> AdaRound or GPTQ (else
round-to-nearest) -> bias correction.  Registry: algorithm name -> (config dataclass, function).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypeAlias

import torch
from torch import nn

from datafree.config import make_strategy_config
from datafree.errors import DatafreeError
from datafree.quant.adaround import AdaRoundConfig, adaround
from datafree.quant.bias_correction import BiasCorrectionConfig, bias_correction
from datafree.quant.calib import calibrate_activations, synthetic_calibration
from datafree.quant.equalize import CLEConfig, cross_layer_equalization
from datafree.quant.formats import IntFormat, MinifloatFormat, as_saturating, parse_format
from datafree.quant.gptq import GPTQConfig, gptq
from datafree.quant.graph import prepare, quant_layers, quantize_residuals, share_input_quantizers
from datafree.quant.quantizer import QuantLayer, QuantSpec, onnx_int8_activations, onnx_int8_weights
from datafree.quant.smoothquant import SmoothQuantConfig, smoothquant

# the config of one algorithm of the recipe (``QuantConfig.algorithm_config``)
AlgorithmConfig: TypeAlias = CLEConfig | SmoothQuantConfig | AdaRoundConfig | GPTQConfig | BiasCorrectionConfig

ALGORITHMS = {  # in pipeline order
    "cle": (CLEConfig, cross_layer_equalization),
    "smoothquant": (SmoothQuantConfig, smoothquant),
    "adaround": (AdaRoundConfig, adaround),
    "gptq": (GPTQConfig, gptq),
    "bias_correction": (BiasCorrectionConfig, bias_correction),
}
ALIASES = {"equalization": "cle", "weight_equalization": "cle", "bias_corr": "bias_correction", "bc": "bias_correction",
           "sq": "smoothquant", "rtn": None, "none": None}


def canonical_algorithm(name: str) -> str | None:
    """An algorithm's registry name from what a user typed ('BC', 'bias-correction', 'sq'); None: round to nearest."""
    key = name.strip().lower().replace("-", "_")
    return ALIASES.get(key, key)


@dataclass
class QuantConfig:
    weights: str = "int8"
    activations: str | None = "int8"  # None: weight-only
    w_granularity: str = "channel"  # tensor | channel | group
    group_size: int = 32
    w_observer: str = "mse"  # minmax | percentile | mse
    a_observer: str = "mse"
    percentile: float = 99.99
    scale_type: str = "float"  # float | po2
    algorithms: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # algorithm name -> its config's options
    edge_bits: int | None = 8  # first and last layer at this many bits of the same family (None: as the rest)
    quantize_residuals: bool = False  # also quantize the conv outputs that feed residual adds (integer-only)

    def resolved_algorithms(self) -> list[str]:
        out = []
        for a in self.algorithms:
            key = canonical_algorithm(a)
            if key is None:
                continue
            if key not in ALGORITHMS:
                raise DatafreeError(f"unknown quantization algorithm '{a}'; choose from {', '.join(ALGORITHMS)}")
            out.append(key)
        if "adaround" in out and "gptq" in out:
            raise DatafreeError("adaround and gptq both choose the weight rounding: pick one")
        return [k for k in ALGORITHMS if k in out]

    def check(self) -> None:
        """Every selected algorithm, every option and the formats are valid, and no option is for an algorithm
        that is not selected (it would be silently ignored): before minutes of calibration, not after."""
        chosen = self.resolved_algorithms()
        for name in chosen:
            self.algorithm_config(name)
        names = {k: canonical_algorithm(k) for k in self.options}
        twice = next((n for n in names.values() if list(names.values()).count(n) > 1), None)
        if twice is not None:
            raise DatafreeError(f"options for quantization algorithm '{twice}' are given under two names; give them "
                                "under one")
        stray = [k for k, n in names.items() if n not in chosen]
        if stray:
            raise DatafreeError(f"options are given for quantization algorithm '{stray[0]}', which is not selected "
                                f"(selected: {', '.join(chosen) or 'none'}); add it to --algo or drop its options")
        self.specs()

    def check_onnx(self) -> None:
        """INT8 ONNX export (``--onnx``) takes int8 weights per channel or per tensor and 8-bit integer activations,
        in every layer (the widened first and last included): refused before calibration, not after it."""
        w, a, edge = self.specs()
        for where, (ws, as_) in (("", (w, a)), (" in the first/last layers (--edge-bits)", edge or (w, a))):
            af = as_.fmt if as_ is not None else None
            if not onnx_int8_weights(ws):
                raise DatafreeError(f"INT8 ONNX export needs int8 weights per channel or per tensor, not {ws.fmt.name}"
                                    f" per {ws.granularity}{where}: quantize with --w int8, or drop --onnx")
            if not onnx_int8_activations(af):
                raise DatafreeError(f"INT8 ONNX export needs 8-bit integer activations, not "
                                    f"{af.name if af else 'float'}{where}: quantize with --a int8, or drop --onnx")

    def algorithm_config(self, name: str) -> AlgorithmConfig:
        opts = {k2: v for k, o in self.options.items() if canonical_algorithm(k) == name for k2, v in o.items()}
        return make_strategy_config(ALGORITHMS, "quantization algorithm", name, opts)

    def specs(self) -> tuple[QuantSpec, QuantSpec | None, tuple[QuantSpec, QuantSpec | None] | None]:
        wf = parse_format(self.weights)
        if isinstance(wf, IntFormat) and not (wf.signed and wf.symmetric):  # uint would clip every negative weight
            raise DatafreeError(f"weights use signed symmetric formats (int4, not {wf.name}); unsigned and "
                                "asymmetric integers are for activations")
        af = parse_format(self.activations) if self.activations else None
        w = QuantSpec(wf, self.w_granularity, self.group_size, self.scale_type, self.w_observer, self.percentile)
        a = QuantSpec(af, "tensor", self.group_size, self.scale_type, self.a_observer, self.percentile) if af else None
        edge = None
        if self.edge_bits:
            def widen(f):
                if f is None or f.bits >= self.edge_bits:
                    return f
                if isinstance(f, IntFormat):
                    return IntFormat(self.edge_bits, f.signed, f.symmetric)
                if self.edge_bits == 8:
                    return parse_format("fp8_e4m3")
                return MinifloatFormat(f.e, self.edge_bits - 1 - f.e)
            edge = (QuantSpec(widen(wf), w.granularity, w.group_size, w.scale_type, w.observer, w.percentile),
                    QuantSpec(widen(af), "tensor", a.group_size, a.scale_type, a.observer, a.percentile) if a else None)
        return w, a, edge


SPARSE_NM = ((1, 4), (2, 4), (2, 8), (4, 8))  # N:M layouts a pruned weight may be stored in
SPARSE_BLOCKS = (8, 16, 32)  # and block sizes of its block map


def weight_bits(model: nn.Module) -> dict:
    """Storage of the quantized model: weights at their format's bits, scales and biases in float32; and
    ``sparse_bytes`` with each weight in the smallest of a few sparse layouts (``prune.sparsity.pattern_bits``:
    kept N:M slots, indices and block map; ``SPARSE_NM`` x ``SPARSE_BLOCKS``), for a sparse kernel or
    accelerator that reads it."""
    from datafree.prune.sparsity import pattern_bits

    q_bits = other = fp32 = sparse_bits = 0
    for m in quant_layers(model):
        n, bits = m.layer.weight.numel(), as_saturating(m.w_spec.fmt).bits
        q_bits += n * bits
        wq = m.weight_q.detach()
        sparse_bits += min(pattern_bits(wq, bits, k, mm, blk) for k, mm in SPARSE_NM for blk in SPARSE_BLOCKS)
        rows, cols = len(m.layer.weight), m.layer.weight[0].numel()
        scales = {"tensor": 1, "channel": rows, "group": rows * -(-cols // m.w_spec.group_size)}[m.w_spec.granularity]
        other += 32 * (scales + (m.layer.bias.numel() if m.layer.bias is not None else 0))
        fp32 += 32 * (n + (m.layer.bias.numel() if m.layer.bias is not None else 0))
    rest = sum(p.numel() for n, p in model.named_parameters() if ".layer." not in f".{n}") * 32
    total = q_bits + other + rest
    sparse = sparse_bits + other + rest
    return {"quantized_bytes": total / 8, "fp32_bytes": (fp32 + rest) / 8, "compression": (fp32 + rest) / max(1, total),
            "sparse_bytes": sparse / 8, "sparse_compression": (fp32 + rest) / max(1, sparse)}


def weight_zeros(model: nn.Module, before: dict[str, torch.Tensor]) -> dict:
    """Shares of zero weights before (``before``: masks by layer name) and after quantization, and the share
    of the former that are still zero (1.0: the quantizer kept a pruned model's sparsity)."""
    n = z0 = z1 = kept = 0
    for m in quant_layers(model):
        q, b = m.weight_q.detach() == 0, before.get(m.name)
        n, z1 = n + q.numel(), z1 + int(q.sum())
        if b is not None:
            z0, kept = z0 + int(b.sum()), kept + int((q & b).sum())
    return {"fp32": z0 / max(1, n), "quantized": z1 / max(1, n), "fp32_zeros_kept": kept / z0 if z0 else None}


def quantize(model: nn.Module, cfg: QuantConfig, calib: torch.Tensor, progress: bool = True) -> tuple[nn.Module, dict]:
    """A fake-quantized copy of ``model`` (BN folded) and what each step did; ``calib`` is calibration data
    in the model's input space (N x C x H x W)."""
    algos = cfg.resolved_algorithms()
    w, a, edge = cfg.specs()
    torch.manual_seed(0)
    qmodel = prepare(model, w, a, edge)
    zeros = {m.name: m.weight.detach() == 0 for m in quant_layers(qmodel)}  # a pruned model's mask (BN-folded)
    info: dict = {"algorithms": algos, "steps": {}}
    if cfg.quantize_residuals:
        info["quantized_residual_inputs"] = quantize_residuals(qmodel)
    t0 = time.perf_counter()

    def step(name: str, fn, *args) -> None:
        t = time.perf_counter()
        if progress:
            print(f"quantize: {name}", flush=True)
        # the layer-by-layer methods (minutes on a CPU) show a bar with ETA of their own
        out = (fn(*args, progress=progress) if name in ("adaround", "gptq") else fn(*args)) or {}
        info["steps"][name] = {**out, "seconds": round(time.perf_counter() - t, 2)}

    for name in ("cle", "smoothquant"):
        if name in algos:
            step(name, ALGORITHMS[name][1], qmodel, calib, cfg.algorithm_config(name))
    step("calibrate_activations", calibrate_activations, qmodel, calib)
    for name in ("adaround", "gptq", "bias_correction"):
        if name in algos:
            step(name, ALGORITHMS[name][1], qmodel, calib, cfg.algorithm_config(name))
    if cfg.quantize_residuals:  # the shortcut then carries the same quantized tensor as the layer it skips
        qmodel = share_input_quantizers(qmodel)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    info["size"] = weight_bits(qmodel)
    info["weight_zeros"] = weight_zeros(qmodel, zeros)
    info["layers"] = [{"name": m.name, "weights": as_saturating(m.w_spec.fmt).name,
                       "activations": m.a_fmt.name if m.a_fmt is not None else None} for m in quant_layers(qmodel)]
    return qmodel, info


from datafree.quant.checkpoint import load_quantized, save_quantized  # noqa: E402  (needs QuantConfig above)

__all__ = ["ALGORITHMS", "AdaRoundConfig", "BiasCorrectionConfig", "CLEConfig", "GPTQConfig", "IntFormat",
           "MinifloatFormat", "QuantConfig", "QuantLayer", "QuantSpec", "SmoothQuantConfig", "load_quantized",
           "parse_format", "quantize", "save_quantized", "synthetic_calibration"]
