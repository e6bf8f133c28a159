"""Accuracy of a model: on tensors already in its input space (``evaluate``), or on a labelled dataset whose pixels
are normalised as the model expects (``evaluate_dataset``)."""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from datafree.data.augment import normalize
from datafree.data.loaders import ImageSet, load_dataset
from datafree.errors import DatafreeError
from datafree.models import ModelMeta, as_model, data_meta
from datafree.precision import channels_last_works
from datafree.types import Data, EvalData, Floats, Shape


def _batch(x: torch.Tensor, i: int, batch_size: int, channels_last: bool) -> torch.Tensor:
    # channels_last input: oneDNN's NHWC convolutions ran ResNet-56 inference faster on 2 AVX2 cores (1,000
    # CIFAR images, batch 128: float32 3.39 s NCHW, 1.91 s NHWC; bf16 autocast 93.8 s, 18.7 s; max |logit
    # difference| 5e-6); the whole test set in float32 took 21.7 s, against about 39 s at NCHW, batch 500
    xb = x[i : i + batch_size].float()
    return xb.contiguous(memory_format=torch.channels_last) if channels_last else xb


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """``model``'s float32 outputs on ``x``, in eval mode, batch by batch."""
    cl = channels_last_works(model, x)
    was = model.training
    model.eval()
    try:
        return torch.cat([model(_batch(x, i, batch_size, cl)).float() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
             bf16: bool = False) -> dict:
    """Top-1 accuracy (0..1) and mean cross-entropy of ``model`` on float NCHW ``x``."""
    if x.ndim != 4:
        raise DatafreeError(f"evaluate expects an N x C x H x W tensor, got shape {tuple(x.shape)}")
    if len(x) != len(y):
        raise DatafreeError(f"{len(x)} images but {len(y)} labels")
    cl = channels_last_works(model, x)
    was = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = _batch(x, i, batch_size, cl), y[i : i + batch_size]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(xb).float()
            if out.ndim != 2:
                raise DatafreeError(f"model output has shape {tuple(out.shape)}; expected N x num_classes")
            if int(yb.max()) >= out.shape[1]:
                raise DatafreeError(f"labels go up to {int(yb.max())} but the model has {out.shape[1]} classes: "
                                    "class-count mismatch between data and model")
            correct += int((out.argmax(1) == yb).sum())
            loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise DatafreeError(f"the model cannot run on inputs of shape {tuple(x.shape[1:])}: {first}") from None
    finally:
        model.train(was)
    return {"accuracy": correct / max(1, len(x)), "loss": loss_sum / max(1, len(x)), "n": len(x)}


def eval_tensors(data: EvalData | None, meta: ModelMeta) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """Held-out data -> (x in the model input space, y); accepts a path, an ImageSet or (x, y)."""
    if data is None:
        return None, None
    if isinstance(data, (str, os.PathLike)):
        data = load_dataset(str(data))
    if isinstance(data, ImageSet):
        if tuple(data.x.shape[1:]) != tuple(meta.input_shape):
            raise DatafreeError(f"held-out images have shape {tuple(data.x.shape[1:])} but the models take "
                                f"{tuple(meta.input_shape)}")
        x, y = normalize(data.float(), meta.mean, meta.std), data.y
    else:
        x, y = data
        x = x.float()
    if len(y) and int(y.max()) >= meta.num_classes:  # before minutes of synthesis or calibration, not after
        raise DatafreeError(f"class-count mismatch: held-out labels go up to {int(y.max())} but the model has "
                            f"{meta.num_classes} classes: "
                            "pass held-out data of the model's classes (or the right --num-classes)")
    return x, y


def evaluate_dataset(model: nn.Module | str, data: Data, *, weights: str | None = None, num_classes: int | None = None,
                     input_shape: Shape | None = None, mean: Floats | None = None, std: Floats | None = None) -> dict:
    """Accuracy of ``model`` on labelled data given as a path (npz / folder / mnist5k:test) or ImageSet;
    pixels are normalised with the model's recorded mean/std (or the ones passed).  ``weights`` may be a
    quantize run's quantized.safetensors: the quantized model is evaluated."""
    model = as_model(model, weights, num_classes, quantized=True)
    ds = load_dataset(str(data)) if isinstance(data, (str, os.PathLike)) else data
    meta = data_meta(model, tuple(ds.x.shape[1:]), "the data's images", input_shape, num_classes, mean, std)
    x, y = eval_tensors(ds, meta)
    res = evaluate(model, x, y)
    if not math.isfinite(res["loss"]):
        raise DatafreeError("the model's outputs are NaN or infinite on this data: check the weights and the "
                            "input normalisation (--mean/--std)")
    return res
