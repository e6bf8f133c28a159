"""ONNX export (FP32, and INT8 as QuantizeLinear/DequantizeLinear pairs) and onnxruntime inference.

The INT8 graph carries datafree's own scales: every quantized layer becomes
    x -> [÷ smooth] -> Q/DQ (per tensor, int8 or uint8, zero-point) -> Conv/Gemm(W: Q/DQ per output
    channel, int8, symmetric; bias float) -> [Q/DQ of the output when it feeds a residual add]
which onnxruntime's QDQ transformers fuse into QLinearConv / integer GEMM kernels.  Residual adds,
pooling and the option-A shortcut stay float between DQ'd tensors.  Needs the ``export`` extra
(onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import DatafreeError
from datafree.quant.graph import InputQuant, _set
from datafree.quant.quantizer import ActQuant, QuantLayer, onnx_int8_activations, onnx_int8_weights

if TYPE_CHECKING:
    import onnxruntime


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise DatafreeError(f"ONNX export needs {module}: pip install 'datafree[export]'") from None


def _int8_act(q: ActQuant, where: str) -> tuple[float, int, int, int]:
    fmt = q.fmt
    if not onnx_int8_activations(fmt) or q.scale is None:
        raise DatafreeError(f"INT8 ONNX export needs 8-bit integer activations; {where} has "
                            f"{getattr(fmt, 'name', 'none')}: quantize with --a int8")
    zero = int(q.zero) if q.zero is not None else 0
    return float(q.scale), zero, fmt.qmin, fmt.qmax


class _QDQLayer(nn.Module):
    """What a QuantLayer computes, written with torch's fake-quant ops (exported as QDQ pairs)."""

    def __init__(self, m: QuantLayer) -> None:
        super().__init__()
        if not onnx_int8_weights(m.w_spec):
            spec = m.w_spec
            raise DatafreeError(f"INT8 ONNX export needs int8 weights per channel or per tensor; layer "
                                f"'{m.name}' has {spec.fmt.name} per {spec.granularity}: quantize with --w int8")
        if m.act is None:
            raise DatafreeError(f"INT8 ONNX export needs quantized activations; layer '{m.name}' has none")
        self.is_conv = m.is_conv
        self.conv = {k: getattr(m.layer, k) for k in ("stride", "padding", "dilation", "groups")} if m.is_conv else {}
        self.weight = nn.Parameter(m.weight_q.detach().clone(), requires_grad=False)
        b = m.bias(True)
        self.bias = nn.Parameter(b.detach().clone(), requires_grad=False) if b is not None else None
        rows = len(self.weight)
        self.w_scale = m.w_scale.reshape(-1).expand(rows).clone().float() if m.w_scale.numel() in (1, rows) else None
        self.smooth = m.smooth.clone() if m.smooth is not None else None
        self.a = None if m.input_prequantized else _int8_act(m.act, m.name)
        self.o = _int8_act(m.out, m.name + " (output)") if m.out is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth.view(1, -1, *([1] * (x.dim() - 2)))
        if self.a is not None:
            s, z, lo, hi = self.a
            x = torch.fake_quantize_per_tensor_affine(x, s, z, lo, hi)
        w = torch.fake_quantize_per_channel_affine(self.weight, self.w_scale, torch.zeros_like(self.w_scale,
                                                   dtype=torch.int32), 0, -128, 127)
        y = F.conv2d(x, w, self.bias, **self.conv) if self.is_conv else F.linear(x, w, self.bias)
        if self.o is not None:
            s, z, lo, hi = self.o
            y = torch.fake_quantize_per_tensor_affine(y, s, z, lo, hi)
        return y


class _QDQInput(nn.Module):
    def __init__(self, q: InputQuant, where: str) -> None:
        super().__init__()
        self.a = _int8_act(q.act, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, z, lo, hi = self.a
        return torch.fake_quantize_per_tensor_affine(x, s, z, lo, hi)


def to_qdq(qmodel: nn.Module) -> nn.Module:
    """A copy of a quantized model with every QuantLayer (and moved input quantizer) as fake-quant ops
    that export to QDQ."""
    model = copy.deepcopy(qmodel).eval()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLayer):
            _set(model, name, _QDQLayer(mod))
        elif isinstance(mod, InputQuant):
            _set(model, name, _QDQInput(mod, name))
    return model


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...], int8: bool = False) -> Path:
    """Write ``model`` (``int8``: a datafree-quantized model, as QDQ) to ``path`` with a dynamic batch."""
    _need("onnx")
    model = to_qdq(model) if int8 else copy.deepcopy(model).eval()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    x = torch.zeros(2, *input_shape)
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # the TorchScript exporter: torch.export has no fake-tensor rule for fake_quantize with a dynamic batch
        torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"], dynamo=False,
                          opset_version=17, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if int8:
        import onnx

        proto = onnx.load(str(tmp))
        _store_integer_weights(proto)
        onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def _store_integer_weights(proto) -> int:
    """The exporter writes each weight as float32 followed by QuantizeLinear, so the file is no smaller than the
    FP32 one and every session requantizes at load.  Fold those QuantizeLinear nodes (constant input, scale and
    zero point) into the integer initializers they produce - ONNX's own rounding: half to even, plus the zero
    point, saturated - so the DequantizeLinear after them reads int8 from the file.  Returns how many."""
    from onnx import numpy_helper

    g = proto.graph
    const = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            const[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    folded, drop = [], set()
    for n in g.node:
        if n.op_type != "QuantizeLinear" or len(n.input) < 3 or not all(i in const for i in n.input[:3]):
            continue
        w, scale, zero = (const[i] for i in n.input[:3])
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and w.ndim > 1:  # per channel along ``axis``
            shape = [1] * w.ndim
            shape[axis % w.ndim] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(w / scale) + zero.astype(np.int64), info.min, info.max).astype(zero.dtype)
        g.initializer.append(numpy_helper.from_array(q, n.output[0]))
        folded.append(n)
        if uses.get(n.input[0]) == 1:
            drop.add(n.input[0])
    for n in folded:
        g.node.remove(n)
    for init in [i for i in g.initializer if i.name in drop]:
        g.initializer.remove(init)
    return len(folded)


def session(path: str | os.PathLike, threads: int | None = None) -> onnxruntime.InferenceSession:
    ort = _need("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(path_or_session: str | os.PathLike | onnxruntime.InferenceSession, x: torch.Tensor,
             batch_size: int = 256) -> torch.Tensor:
    sess = session(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else path_or_session
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + batch_size].numpy().astype(np.float32)})[0]
            for i in range(0, len(x), batch_size)]
    return torch.from_numpy(np.concatenate(outs))


def latency(path: str | os.PathLike, input_shape: tuple[int, ...], batch: int = 64, repeats: int = 30,
            warmup: int = 5, threads: int | None = None) -> dict:
    """Median and mean wall time of one batch in onnxruntime (after ``warmup`` runs)."""
    return compare_latency({"model": path}, input_shape, batch, repeats, warmup, threads)["model"]


def compare_latency(paths: dict[str, str | os.PathLike], input_shape: tuple[int, ...], batch: int = 64,
                    repeats: int = 60, warmup: int = 5, threads: int | None = None,
                    block: int = 10) -> dict[str, dict]:
    """``latency`` for several models, timed in alternating blocks of ``block`` runs (A..A B..B A..A ...)
    so that a slow spell of the machine weighs on every model alike.

    Blocks, not single runs: onnxruntime's worker threads spin for a while after each run, so with
    runs interleaved one by one the idle session's spinning threads compete with the running one for the
    cores (on 2 cores this made both models ~1.5x slower and the INT8/FP32 ratio 1.8x instead of 2.4x).
    The first run of each block is untimed for the same reason."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    while any(len(t) < repeats for t in times.values()):
        for k, s in sessions.items():
            s.run(None, feeds[k])
            for _ in range(min(block, repeats - len(times[k]))):
                t0 = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append(time.perf_counter() - t0)
    return {k: {"batch": batch, "median_ms": 1e3 * float(np.median(t)), "mean_ms": 1e3 * float(np.mean(t)),
                "p90_ms": 1e3 * float(np.percentile(t, 90)), "repeats": len(t),
                "blocks_of": block if len(times) > 1 else None,
                "threads": sessions[k].get_session_options().intra_op_num_threads} for k, t in times.items()}
