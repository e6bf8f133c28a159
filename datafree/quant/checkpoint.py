"""Save and load a fake-quantized model with everything ``quantize`` decided, so that the file alone gives back
the model whose accuracy the report states:
- each quantized layer's weights as bit-packed codes on its format's grid and their scales (per tensor, row or
  group: ``datafree.quant.codes``), so a 4-bit layer takes half a byte per weight; no float copy is kept;
- the float tensors outside the layers' weights (biases, what the quantizer does not touch);
- what lives outside the state dict: each activation and output quantizer's format, scale and zero point,
  SmoothQuant's per-channel factors and the bias correction.

    qmodel = load_quantized(create_model("resnet20"), "run/quantized.safetensors")

The file's metadata holds the ``QuantConfig`` (JSON), from which the model is prepared again before the
tensors are loaded into it.  A loaded layer's float weight is its quantized weight (the float original is not
in the file): quantize again from the float model, not from a loaded one.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch
from torch import nn

from datafree.errors import DatafreeError
from datafree.io.safetensors import load_safetensors, read_metadata, save_safetensors
from datafree.quant.codes import compact_scale, decode, encode, expand_scale
from datafree.quant.formats import IntFormat, MinifloatFormat, as_saturating
from datafree.quant.graph import prepare, quant_layers, quantize_residuals, share_input_quantizers

_EXTRA = "quant::"  # prefix of the tensors that are not in the model's state dict
_FORMATS = {"IntFormat": IntFormat, "MinifloatFormat": MinifloatFormat}


def _format_json(fmt) -> str:
    return json.dumps({"kind": type(fmt).__name__, **dataclasses.asdict(fmt)})


def _format_from_json(s: str):
    d = json.loads(s)
    return _FORMATS[d.pop("kind")](**d)


def save_quantized(qmodel: nn.Module, cfg, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """``qmodel`` (from ``datafree.quant.quantize`` with ``cfg``) as one safetensors file."""
    from datafree.config import to_dict

    tensors = {k: v for k, v in qmodel.state_dict().items()}
    meta = {**(metadata or {}), "quant_config": json.dumps(to_dict(cfg))}
    for m in quant_layers(qmodel):
        key = f"{_EXTRA}{m.name}"
        tensors.update({f"{key}.{k}": v for k, v in _weight_codes(m).items()})
        for k in ("layer.weight", "weight_q", "w_scale"):  # the codes and scales above give them back
            del tensors[f"{m.name}.{k}"]
        for tag, q in (("act", m.act), ("out", m.out)):
            if q is not None and q.scale is not None:
                tensors[f"{key}.{tag}_scale"] = q.scale.reshape(-1)
                if q.zero is not None:
                    tensors[f"{key}.{tag}_zero"] = q.zero.reshape(-1)
                meta[f"{key}.{tag}_format"] = _format_json(q.fmt)
        for name in ("smooth", "bias_corr"):
            if getattr(m, name) is not None:
                tensors[f"{key}.{name}"] = getattr(m, name)
    save_safetensors(tensors, path, meta)


def _weight_codes(m) -> dict[str, torch.Tensor]:
    """A layer's quantized weight as packed codes and compact scales, checked to decode bit for bit."""
    spec, w = m.w_spec, m.weight_q
    scale = compact_scale(m.w_scale, spec.granularity, spec.group_size)
    out = {"weight_codes": encode(w.reshape(len(w), -1) / m.w_scale, as_saturating(spec.fmt)), "w_scale": scale}
    if not torch.equal(_decoded_weight(m, out)[0], w):
        raise DatafreeError(f"layer '{m.name}': its quantized weights are not on the {spec.fmt.name} grid of their "
                            "scales, so they cannot be stored as codes")
    return out


def _decoded_weight(m, stored: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantized weight of ``m`` (its shape and spec) from ``_weight_codes``' tensors, and its per-element
    scale (``QuantLayer.w_scale``)."""
    spec, shape = m.w_spec, m.layer.weight.shape
    rows, cols = shape[0], m.layer.weight[0].numel()
    values = decode(stored["weight_codes"], as_saturating(spec.fmt), rows * cols).reshape(rows, cols)
    scale = expand_scale(stored["w_scale"], spec.granularity, spec.group_size, cols)
    return (values * scale).reshape(shape), scale


def load_quantized(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """The fake-quantized model saved in ``path`` (by ``datafree quantize``), built on ``model``'s architecture
    (its weights are replaced by the file's)."""
    from datafree.config import from_dict
    from datafree.quant import QuantConfig

    meta = read_metadata(path)
    if "quant_config" not in meta:
        raise DatafreeError(f"'{path}' holds no quantization settings: it was not written by datafree quantize")
    cfg = from_dict(QuantConfig, json.loads(meta["quant_config"]))
    w, a, edge = cfg.specs()
    qmodel = prepare(model, w, a, edge)
    if cfg.quantize_residuals:
        quantize_residuals(qmodel)
    tensors = load_safetensors(path)
    extra = {k[len(_EXTRA):]: tensors.pop(k) for k in list(tensors) if k.startswith(_EXTRA)}
    for m in quant_layers(qmodel):
        stored = {k: extra.get(f"{m.name}.{k}") for k in ("weight_codes", "w_scale")}
        if any(v is None for v in stored.values()):
            raise DatafreeError(f"'{path}' holds no quantized weights for layer '{m.name}': pass the model it was "
                                "quantized from, or quantize it again")
        try:
            w_q, w_scale = _decoded_weight(m, stored)
        except (DatafreeError, RuntimeError) as e:
            raise DatafreeError(f"'{path}' does not fit this architecture at layer '{m.name}' ({e}): pass the "
                                "model it was quantized from") from None
        smooth = extra.get(f"{m.name}.smooth")
        tensors[f"{m.name}.weight_q"] = w_q
        tensors[f"{m.name}.w_scale"] = w_scale
        unsmoothed = w_q if smooth is None else w_q / smooth.view(1, -1, *([1] * (w_q.dim() - 2)))
        tensors[f"{m.name}.layer.weight"] = unsmoothed  # the float weight is not in the file: the quantized one
        for tag, q in (("act", m.act), ("out", m.out)):
            if q is not None and f"{m.name}.{tag}_scale" in extra:
                q.fmt = _format_from_json(meta[f"{_EXTRA}{m.name}.{tag}_format"])
                q.scale = extra[f"{m.name}.{tag}_scale"].reshape(())
                zero = extra.get(f"{m.name}.{tag}_zero")
                q.zero = zero.reshape(()) if zero is not None else None
        m.smooth, m.bias_corr = extra.get(f"{m.name}.smooth"), extra.get(f"{m.name}.bias_corr")
    expected = qmodel.state_dict()
    bad = next((k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape), None)
    if bad is not None or len(tensors) != len(expected):
        raise DatafreeError(f"'{path}' does not fit this architecture (first at '{bad}'): pass the model it was "
                            "quantized from")
    for k, v in expected.items():  # w_scale's shape follows the weights' granularity: copy in place of loading
        with torch.no_grad():
            v.copy_(tensors[k])
    return share_input_quantizers(qmodel) if cfg.quantize_residuals else qmodel
