"""Calibration plumbing: run calibration data through the model, switch quantization off (float mode),
capture a layer's (or block's) inputs and outputs, and calibrate activation quantizers.

Calibration data is synthetic by default - images inverted from the model itself by BatchNorm-statistics
matching (DeepInversion; ZeroQ's "distilled data" for PTQ) with ``synthetic_calibration`` - or real
samples when the user has them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from datafree.evaluate import logits
from datafree.precision import channels_last_works
from datafree.quant.graph import quant_layers
from datafree.quant.quantizer import QuantLayer


class _Stop(Exception):
    pass


def batches(x: torch.Tensor, size: int = 128) -> Iterator[torch.Tensor]:
    for i in range(0, len(x), size):
        yield x[i : i + size]


@contextlib.contextmanager
def float_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every QuantLayer runs in float (its smoothing, if any, stays: it cancels exactly)."""
    layers = [m for m in model.modules() if isinstance(m, QuantLayer)]
    saved = [(m.quant_act, m.quant_weight) for m in layers]
    for m in layers:
        m.quant_act = m.quant_weight = False
    try:
        yield model
    finally:
        for m, (a, w) in zip(layers, saved):
            m.quant_act, m.quant_weight = a, w


def run(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """A forward pass over ``x`` for the hooks that observe it; leaves ``model`` in eval mode."""
    model.eval()
    return logits(model, x, batch_size)


@torch.no_grad()
def stream(model: nn.Module, target: nn.Module, x: torch.Tensor, batch_size: int = 128,
           outputs: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per batch of ``x``: the input (first positional argument) and output of ``target`` inside
    ``model``; each forward pass stops at ``target``."""
    got: list = []
    cl = channels_last_works(model, x)  # NHWC convolutions: see datafree.evaluate

    def pre(mod, args):
        got.append(args[0].detach())
        if not outputs:
            raise _Stop

    def post(mod, args, out):
        got.append(out.detach())
        raise _Stop

    h1 = target.register_forward_pre_hook(pre)
    h2 = target.register_forward_hook(post) if outputs else None
    model.eval()
    try:
        for b in batches(x, batch_size):
            got.clear()
            try:
                model(b.contiguous(memory_format=torch.channels_last) if cl else b)
            except _Stop:
                pass
            yield got[0], (got[1] if outputs else None)
    finally:
        h1.remove()
        if h2 is not None:
            h2.remove()


def capture(model: nn.Module, target: nn.Module, x: torch.Tensor, batch_size: int = 128,
            outputs: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The inputs and (optionally) outputs of ``target`` when ``model`` runs on ``x``."""
    pairs = list(stream(model, target, x, batch_size, outputs))
    return torch.cat([p[0] for p in pairs]), (torch.cat([p[1] for p in pairs]) if outputs else None)


@torch.no_grad()
def calibrate_activations(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> None:
    """Observe every quantized layer's input on ``x`` in float mode, then fix the activation scales."""
    layers = quant_layers(model)
    for m in layers:
        m.start_calibration()
    with float_mode(model):
        run(model, x, batch_size)
    for m in layers:
        m.finish_calibration()


def synthetic_calibration(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, n: int = 512,
                          mean=None, std=None, iterations: int = 200, batch_size: int = 128, seed: int = 0,
                          progress: bool = True, classes: list[int] | None = None, oh: float = 1.0) -> torch.Tensor:
    """``n`` images inverted from ``model`` (class-balanced, BN-statistics matching; DeepInversion with
    the model as its own teacher), returned in the model's input space.  Needs BatchNorm layers to be
    informative; without them only the class term shapes the images.  ``classes``: invert only these
    (balanced among them; CRISP's user classes); ``oh``: weight of the class term against BN's 10 - at 1
    the images match the BN statistics but few are read as their target class (probe, ResNet-56, 32 images,
    100 iterations: 5 of 32), at 10 most are (30 of 32, BN loss 162 against ~100)."""
    from datafree.data.augment import normalize
    from datafree.progress import Progress
    from datafree.synthesis import PixelConfig, PixelSynthesizer, TeacherInverter

    torch.manual_seed(seed)
    teacher = _copy_eval(model)
    inv = TeacherInverter(teacher, num_classes, mean, std, 0.0, bf16="auto", channels_last=False)
    if classes is not None:
        inv.target_classes = torch.tensor(sorted(set(classes)))
    pcfg = PixelConfig(batch_size=min(batch_size, n), iterations=iterations, adv=0.0, oh=oh)  # 16 asked: 16 made
    synth = PixelSynthesizer(pcfg, inv, input_shape)
    bar = Progress("calibration data", progress)
    out = []
    while sum(len(b) for b in out) < n:
        out.append(synth.synthesize(nn.Identity(), adversarial=False).images)
        bar.update(min(1.0, sum(len(b) for b in out) / n), info="inverting the model (BN statistics)")
    bar.close()
    for h in inv.hooks:
        h.remove()
    return normalize(torch.cat(out)[:n], mean, std)


def _copy_eval(model: nn.Module) -> nn.Module:
    import copy

    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m
