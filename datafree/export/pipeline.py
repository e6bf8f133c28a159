"""The export command (``datafree export``, ``datafree.export_model``): a model to ONNX, measured.

A float model becomes FP32 ONNX; a quantized one INT8 QDQ ONNX (``datafree.export.onnx``: int8 weights and
activations, integer kernels in onnxruntime).  The file is checked against the PyTorch model it came from
(logit differences and top-1 agreement on the held-out images, or on random inputs without them), its
accuracy is measured in onnxruntime when ``eval_data`` is given, and its latency at ``batch``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from datafree.errors import DatafreeError
from datafree.evaluate import eval_tensors
from datafree.export.onnx import export_onnx, latency, run_onnx
from datafree.models import as_model, check_model, data_meta, model_meta
from datafree.quant.quantizer import QuantLayer
from datafree.types import EvalData, Floats, Shape


def _check_out(out: str | os.PathLike) -> Path:
    path = Path(out)
    if path.suffix != ".onnx":
        raise DatafreeError(f"--out must name an .onnx file, got '{out}'")
    if path.is_dir():
        raise DatafreeError(f"'{out}' is a directory: give the .onnx file to write")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DatafreeError(f"the folder of '{out}' does not exist: create it first")
    if not os.access(parent, os.W_OK):
        raise DatafreeError(f"cannot write into '{parent}': choose another --out")
    return path


def export_model(model: nn.Module | str, out: str | os.PathLike, *, weights: str | None = None,
                 num_classes: int | None = None, input_shape: Shape | None = None, mean: Floats | None = None,
                 std: Floats | None = None, eval_data: EvalData | None = None, batch: int = 64) -> dict:
    """Write ``model`` with ``weights`` to the ONNX file ``out`` (INT8 for a quantized model) and measure it."""
    path = _check_out(out)
    if batch < 1:
        raise DatafreeError(f"the latency batch must be at least 1, got {batch}")
    m = as_model(model, weights, num_classes, quantized=True).eval()
    int8 = any(isinstance(x, QuantLayer) for x in m.modules())
    shape = model_meta(m, input_shape, num_classes).input_shape
    meta = data_meta(m, shape, "inputs", input_shape, num_classes, mean, std)  # a zoo model keeps its input shape
    check_model(m, meta, "model")
    ex, ey = eval_tensors(eval_data, meta)  # before the export: a bad --eval-data fails first
    export_onnx(m, path, meta.input_shape, int8=int8)
    report: dict = {"onnx": str(path), "format": "int8 (QDQ)" if int8 else "fp32", "bytes": path.stat().st_size,
                    "input_shape": list(meta.input_shape)}
    xs = ex[:1000] if ex is not None else torch.randn(64, *meta.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(xs).float()
    onnx_out = run_onnx(path, ex if ex is not None else xs)  # every held-out image once: agreement and accuracy
    got = onnx_out[: len(xs)]
    report["vs_pytorch"] = {"images": len(xs), "inputs": "held-out" if ex is not None else "random normal",
                            "max_abs_logit_diff": float((got - ref).abs().max()),
                            "top1_agreement": float((got.argmax(1) == ref.argmax(1)).float().mean())}
    if ex is not None:
        report["accuracy"] = float((onnx_out.argmax(1) == ey).float().mean())
        report["eval_images"] = len(ex)
    report["latency"] = {"batch": batch, **latency(path, meta.input_shape, batch=batch)}
    return report
