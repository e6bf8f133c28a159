"""The model's structure for quantization: BatchNorm folding, swapping layers for ``QuantLayer``, and
what the algorithms need (layer order, blocks, equalizable conv -> ReLU -> conv pairs).

The prepared model stays an ordinary ``nn.Module`` with its own forward (folded BNs become Identity,
Conv2d/Linear become QuantLayer in place), so blocks such as a ResNet's BasicBlock remain callable for
block-wise reconstruction; torch.fx traces are used only to read the data flow.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from datafree.errors import DatafreeError
from datafree.quant.quantizer import ActQuant, QuantLayer, QuantSpec


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # a moved input quantizer is opaque too: a minifloat's rounding branches on its tensor (the compiled path)
        return isinstance(m, (QuantLayer, InputQuant)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> tuple[fx.Graph, dict[str, nn.Module]]:
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure: one clear line
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DatafreeError(f"cannot trace the model with torch.fx for quantization ({first}); "
                            "data-dependent control flow is not supported") from None
    return graph, dict(model.named_modules())


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which every BatchNorm2d that directly follows a Conv2d (whose
    output has no other user) is folded into that conv's weight and bias and replaced by Identity."""
    model = copy.deepcopy(model).eval()
    graph, mods = trace(model)
    for node in graph.nodes:
        bn = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        conv = mods.get(prev.target) if prev.op == "call_module" else None
        if not isinstance(conv, nn.Conv2d) or len(prev.users) != 1:
            continue
        std = (bn.running_var + bn.eps).sqrt()
        gamma = bn.weight if bn.affine else torch.ones_like(std)
        beta = bn.bias if bn.affine else torch.zeros_like(std)
        k = (gamma / std).detach()
        with torch.no_grad():
            b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(std)
            conv.weight.mul_(k.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(((b - bn.running_mean) * k + beta).detach())
        _set(model, node.target, nn.Identity())
    return model


def quant_layers(model: nn.Module) -> list[QuantLayer]:
    """The model's QuantLayers in execution order."""
    graph, mods = trace(model)
    return [mods[n.target] for n in graph.nodes if n.op == "call_module" and isinstance(mods[n.target], QuantLayer)]


def prepare(model: nn.Module, w_spec: QuantSpec, a_spec: QuantSpec | None,
            edge_specs: tuple[QuantSpec, QuantSpec | None] | None = None) -> nn.Module:
    """BN-folded copy of ``model`` with every Conv2d/Linear wrapped in a QuantLayer; the first and last
    layers (in execution order) get ``edge_specs`` (weights, activations) when given, e.g. 8 bits."""
    model = fold_bn(model)
    graph, mods = trace(model)
    names = [n.target for n in graph.nodes
             if n.op == "call_module" and isinstance(mods[n.target], (nn.Conv2d, nn.Linear))]
    if not names:
        raise DatafreeError("the model has no Conv2d or Linear layer to quantize")
    for i, name in enumerate(names):
        ws, as_ = edge_specs if edge_specs is not None and i in (0, len(names) - 1) else (w_spec, a_spec)
        _set(model, name, QuantLayer(mods[name], ws, as_, name))
    return model


def _is_relu(node: fx.Node, mods: dict) -> bool:
    if node.op == "call_module":
        return isinstance(mods.get(node.target), nn.ReLU)
    return node.op == "call_function" and node.target in (F.relu, torch.relu)


def _skip_identity(node: fx.Node, mods: dict) -> fx.Node:
    while node.op == "call_module" and isinstance(mods.get(node.target), nn.Identity) and len(node.users) == 1:
        node = next(iter(node.users))
    return node


def equalizable_pairs(model: nn.Module) -> list[tuple[QuantLayer, QuantLayer]]:
    """(a, b) where a's output reaches only b, directly or through one ReLU (positively homogeneous:
    relu(s x) = s relu(x) for s > 0), and both are plain (groups=1) layers with a's outputs feeding b's
    input channels - the pairs cross-layer equalization and SmoothQuant's folding may rescale."""
    graph, mods = trace(model)
    pairs = []
    for node in graph.nodes:
        a = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(a, QuantLayer) or len(node.users) != 1:
            continue
        nxt = _skip_identity(next(iter(node.users)), mods)
        if _is_relu(nxt, mods):
            if len(nxt.users) != 1:
                continue
            nxt = _skip_identity(next(iter(nxt.users)), mods)
        b = mods.get(nxt.target) if nxt.op == "call_module" else None
        if isinstance(b, QuantLayer) and getattr(a.layer, "groups", 1) == 1 and getattr(b.layer, "groups", 1) == 1 \
                and b.is_conv == a.is_conv and a.layer.weight.shape[0] == b.layer.weight.shape[1]:
            pairs.append((a, b))
    return pairs


def blocks(model: nn.Module) -> list[nn.Module]:
    """The smallest sub-modules (not containers) holding two or more QuantLayers, e.g. ResNet blocks:
    the units of block-wise reconstruction."""
    out = []

    def count(m: nn.Module) -> int:
        return sum(isinstance(x, QuantLayer) for x in m.modules())

    def visit(m: nn.Module) -> None:
        for child in m.children():
            if isinstance(child, QuantLayer) or count(child) == 0:
                continue
            inner = [c for c in child.children() if not isinstance(c, QuantLayer) and count(c) >= 2]
            if count(child) >= 2 and not isinstance(child, (nn.Sequential, nn.ModuleList)) and not inner:
                out.append(child)
            else:
                visit(child)

    visit(model)
    return out


def block_of(model: nn.Module) -> dict[int, nn.Module]:
    """id(QuantLayer) -> the block (``blocks``; they do not nest) that holds it, for the layers inside one."""
    return {id(layer): b for b in blocks(model) for layer in b.modules() if isinstance(layer, QuantLayer)}


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in (operator.add, torch.add)) or \
        (node.op == "call_method" and node.target == "add")


def quantize_residuals(model: nn.Module) -> int:
    """Give an output quantizer to every QuantLayer whose output feeds a residual add (with the layer's
    activation spec), as integer-only inference quantizes both inputs of the add; returns how many."""
    graph, mods = trace(model)
    n = 0
    for node in graph.nodes:
        m = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(m, QuantLayer) or m.a_spec is None or len(node.users) != 1:
            continue
        if _is_add(_skip_identity(next(iter(node.users)), mods)):
            m.out = ActQuant(m.a_spec)
            n += 1
    return n


class InputQuant(nn.Module):
    """A consumer's activation quantizer moved to the producer, so every user of the tensor - the
    layer and, say, a residual shortcut - sees the same quantized values (what an integer engine runs)."""

    def __init__(self, act: ActQuant) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


def share_input_quantizers(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` in which a quantized layer's input quantizer is applied once to its
    input tensor for all of that tensor's users (layers without SmoothQuant scales only).  A second
    quantized consumer of that tensor takes the shared quantized values when its format is the same; every
    other quantized layer reads the float tensor and rounds it itself (never a rounded tensor again)."""
    model = copy.deepcopy(model)
    graph, mods = trace(model)
    gm = fx.GraphModule(model, graph)

    def moved_quantizer(n) -> InputQuant | None:
        if isinstance(n, fx.Node) and n.op == "call_module" and isinstance(mods.get(n.target), InputQuant):
            return mods[n.target]
        return None

    k = 0
    for node in list(gm.graph.nodes):
        m = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(m, QuantLayer) or m.act is None or m.smooth is not None or m.act.scale is None:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or len(src.users) < 2:
            continue
        shared = moved_quantizer(src)
        if shared is not None:  # another consumer of a tensor already quantized for an earlier one
            # one tensor, one quantization, as an integer engine stores it: the same format takes the shared values
            # (its own scale, fitted to the same tensor, differs only by the observer's sampling: 0.4 % in a probe)
            m.input_prequantized = shared.act.fmt == m.act.fmt
            continue
        name = f"input_quant_{k}"
        k += 1
        mods[name] = InputQuant(m.act)
        gm.add_submodule(name, mods[name])
        with gm.graph.inserting_after(src):
            q = gm.graph.call_module(name, (src,))
        src.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
        m.input_prequantized = True
    for node in gm.graph.nodes:  # a layer that rounds its own input (another grid, SmoothQuant) reads the float one
        m = mods.get(node.target) if node.op == "call_module" else None
        if isinstance(m, QuantLayer) and not m.input_prequantized and moved_quantizer(node.args[0]) is not None:
            node.replace_input_with(node.args[0], node.args[0].args[0])
    gm.graph.lint()
    gm.recompile()
    return gm
