"""Model zoo by name, plus loading of any ``path/to/file.py:factory`` and of weights.

Each zoo entry records input shape, class count and input normalization, so a user never passes
them by hand for zoo models.  ``create_model`` stores them on the module as ``model.datafree_meta``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from datafree.errors import DatafreeError
from datafree.models.external import IMAGENET_NORM, create_external, is_external
from datafree.models.generator import Generator
from datafree.models.lenet import LeNet5
from datafree.models.mobilenetv2 import MobileNetV2
from datafree.models.resnet_cifar import CifarResNet
from datafree.models.wrn import WideResNet

CIFAR10_NORM = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_NORM = ((0.507, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761))
MNIST_NORM = ((0.1307,), (0.3081,))


@dataclass(frozen=True)
class ModelSpec:
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kwargs: dict = field(default_factory=dict)


_C10 = dict(input_shape=(3, 32, 32), num_classes=10)
MODELS: dict[str, ModelSpec] = {
    # akamaster's CIFAR-10 checkpoints were trained with ImageNet statistics (../shared/models/README.md)
    **{f"resnet{d}": ModelSpec(CifarResNet, **_C10, mean=IMAGENET_NORM[0], std=IMAGENET_NORM[1],
                               kwargs={"depth": d, "option": "A"}) for d in (20, 32, 44, 56)},
    "cifar100_resnet56": ModelSpec(CifarResNet, (3, 32, 32), 100, *CIFAR100_NORM, kwargs={"depth": 56, "option": "B"}),
    **{f"wrn{d}_{k}": ModelSpec(WideResNet, **_C10, mean=CIFAR10_NORM[0], std=CIFAR10_NORM[1],
                                kwargs={"depth": d, "widen": k}) for d, k in ((16, 1), (16, 2), (40, 2))},
    "mobilenetv2": ModelSpec(MobileNetV2, **_C10, mean=CIFAR10_NORM[0], std=CIFAR10_NORM[1]),
    "lenet5": ModelSpec(LeNet5, (1, 28, 28), 10, *MNIST_NORM),
    "lenet5_half": ModelSpec(LeNet5, (1, 28, 28), 10, *MNIST_NORM, kwargs={"width": 0.5}),
}

# sha256 of the verified checkpoints in ../shared/models -> the zoo name they belong to
KNOWN_CHECKPOINTS = {
    "2684892afba237d0d86a0f57415dc19741ca1c854f687af524c37552926a5a8a": "resnet20",
    "89ed279ea22dff369830a40e67a13fefc25a2634c5b721d1b85bbb8c660ba1c2": "resnet32",
    "13bc7df4e9b3ef1f721210f27fcc1ad907a27542770d75da219276a8e5997c1c": "resnet44",
    "dd41b0ddd0a69f42b2939720b10cb6f5bc912a86253b283897bc8258ba7a1401": "resnet56",
    "f2eff4c8461ca1e0d39af83a65f7243bf7d29ec421efee3064bcee93a3caaa73": "cifar100_resnet56",
}

# where those checkpoints live in ../shared/models: a file there that fails its checksum is corrupt
KNOWN_PATHS = {("cifar10", f"resnet{d}.pt"): f"resnet{d}" for d in (20, 32, 44, 56)}
KNOWN_PATHS[("cifar100", "resnet56.pt")] = "cifar100_resnet56"


@dataclass
class ModelMeta:
    """What the engine needs to know about a model's input space."""

    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    name: str = "custom"


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, num_classes: int | None = None) -> nn.Module:
    """A zoo model by name, ``timm:NAME`` / ``torchvision:NAME`` where that library is installed
    (``datafree.models.external``), or ``path/to/file.py:factory`` (the factory is called with no arguments,
    or with ``num_classes`` if given)."""
    if ":" in name and name.split(":", 1)[0].endswith(".py"):
        return _from_file(name, num_classes)
    if is_external(name):
        model, (shape, nc, mean, std) = create_external(name, num_classes)
        model.datafree_meta = ModelMeta(shape, nc, mean, std, name)
        return model
    if name not in MODELS:
        raise DatafreeError(f"unknown model '{name}'; choose one of {', '.join(list_models())}, "
                            "timm:NAME or torchvision:NAME (if installed), or pass path/to/file.py:factory")
    spec = MODELS[name]
    nc = num_classes or spec.num_classes
    kwargs = dict(spec.kwargs)
    model = spec.factory(num_classes=nc, **kwargs)
    model.datafree_meta = ModelMeta(spec.input_shape, nc, spec.mean, spec.std, name)
    return model


def _from_file(ref: str, num_classes: int | None) -> nn.Module:
    path, factory = ref.rsplit(":", 1)
    if not os.path.isfile(path):
        raise DatafreeError(f"model file '{path}' not found")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file: its own error, in one line
        raise DatafreeError(f"model file '{path}' fails to import: {type(e).__name__}: {e}") from None
    fn = getattr(module, factory, None)
    if fn is None:
        raise DatafreeError(f"'{path}' has no attribute '{factory}'")
    try:
        model = fn(num_classes=num_classes) if num_classes else fn()
    except TypeError as e:
        raise DatafreeError(f"'{ref}' cannot be called as {factory}({'num_classes=N' if num_classes else ''}): {e}; "
                            "the factory must take num_classes as a keyword") from None
    if not isinstance(model, nn.Module):
        raise DatafreeError(f"'{ref}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def fixed_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape a zoo model is built for, which data must match (None for other models; for timm/torchvision
    the recorded 224 px is only a default: they pool globally)."""
    meta: ModelMeta | None = getattr(model, "datafree_meta", None)
    return tuple(meta.input_shape) if meta is not None and not is_external(meta.name) else None


def data_meta(model: nn.Module, data_shape: tuple[int, ...], what: str, input_shape: Sequence[int] | None = None,
              num_classes: int | None = None, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> ModelMeta:
    """``model_meta`` for a model about to see images of ``data_shape``: a zoo model's fixed input shape (or an
    explicit one) must be the data's, else one clear error about ``what`` ("training images")."""
    fixed = fixed_input_shape(model)
    if fixed and input_shape and tuple(input_shape) != fixed:
        raise DatafreeError(f"{model.datafree_meta.name} is built for inputs {fixed}, not {tuple(input_shape)}: "
                            "--input-shape is for models outside the zoo; choose a model for this data (`datafree "
                            "models`)")
    meta = model_meta(model, input_shape or (None if fixed else tuple(data_shape)), num_classes, mean, std)
    if tuple(data_shape) != tuple(meta.input_shape):
        raise DatafreeError(f"{what} have shape {tuple(data_shape)} but {meta.name if fixed else 'the model'} takes "
                            f"{tuple(meta.input_shape)}" + (": choose a model for this data (`datafree models`)"
                                                            if fixed else ""))
    return meta


def model_meta(model: nn.Module, input_shape: Sequence[int] | None = None, num_classes: int | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ModelMeta:
    """Merge what the zoo recorded with what the caller passed (explicit arguments win)."""
    meta: ModelMeta | None = getattr(model, "datafree_meta", None)
    shape = tuple(input_shape) if input_shape else (meta.input_shape if meta else None)
    nc = num_classes or (meta.num_classes if meta else None)
    if shape is None or nc is None:
        raise DatafreeError("this model is not from the zoo: pass input_shape=(C, H, W) and num_classes")
    for name, v in (("mean", mean), ("std", std)):
        if v is not None and len(tuple(v)) not in (1, shape[0]):
            raise DatafreeError(f"--{name} has {len(tuple(v))} values but the model's inputs have {shape[0]} "
                                "channel(s): give one value per channel")
    return ModelMeta(shape, nc,
                     tuple(mean) if mean is not None else (meta.mean if meta else None),
                     tuple(std) if std is not None else (meta.std if meta else None),
                     meta.name if meta else "custom")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """safetensors, or a torch file loaded with ``weights_only=True`` (never unpickles code)."""
    path = str(path)
    if os.path.isdir(path):
        raise DatafreeError(f"'{path}' is a directory; pass the weights file in it (e.g. {path}/model.safetensors)")
    if not os.path.isfile(path):
        raise DatafreeError(f"weights file '{path}' not found")
    if path.endswith(".safetensors"):
        from datafree.io.safetensors import load_safetensors

        return load_safetensors(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a plain state_dict"
        if "weights_only" in str(e) or "Weights only load failed" in str(e):  # a pickle beyond tensors
            raise DatafreeError(f"'{path}' holds Python objects besides tensors, which datafree never unpickles: save "
                                "a state_dict of tensors (torch.save(model.state_dict(), ...)) or use .safetensors"
                                ) from None
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else "no message"
        raise DatafreeError(f"cannot read '{path}': it is damaged or not a torch weights file ({type(e).__name__}: "
                            f"{first})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise DatafreeError(f"'{path}' does not hold a state_dict (got {type(sd).__name__})")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_weights(model: nn.Module, path: str | os.PathLike, name: str | None = None) -> nn.Module:
    """Load ``path`` into ``model``; a known checkpoint is verified by sha256, and any mismatch names
    the first offending key/shape."""
    sd = read_state_dict(path)
    digest = sha256_file(path)
    owner = KNOWN_CHECKPOINTS.get(digest)
    known_as = KNOWN_PATHS.get((Path(path).parent.name, Path(path).name))
    if known_as and owner is None and Path(path).parent.parent.name == "models":
        raise DatafreeError(f"'{path}' fails its sha256 check (got {digest[:16]}...): it is not the verified "
                            f"{known_as} checkpoint; copy it again")
    name = name or getattr(getattr(model, "datafree_meta", None), "name", None)
    if owner and name and name in MODELS and owner != name:
        raise DatafreeError(f"'{path}' is the verified {owner} checkpoint, not {name}: pass the matching model")
    expected = model.state_dict()
    if any(k.endswith(".w_scale") for k in sd) and not any(k.endswith(".w_scale") for k in expected):
        raise DatafreeError(f"'{path}' holds a quantized model (quantize's quantized.safetensors): datafree evaluate "
                            "reads it and datafree.quant.load_quantized(model, path) loads it; to quantize, prune or "
                            "distill, start from the float weights")
    for k, v in expected.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k not in sd:
            raise DatafreeError(f"weights '{path}' do not match the architecture: missing key '{k}' "
                                f"(shape {tuple(v.shape)})")
        if tuple(sd[k].shape) != tuple(v.shape):
            raise DatafreeError(f"weights '{path}' do not match the architecture: '{k}' has shape "
                                f"{tuple(sd[k].shape)} in the file, {tuple(v.shape)} in the model")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise DatafreeError(f"weights '{path}' do not match the architecture: unexpected key '{extra[0]}'")
    bad = next((k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise DatafreeError(f"weights '{path}' hold NaN or infinite values (first in '{bad}'): the checkpoint is "
                            "broken; use another one")
    model.load_state_dict(sd, strict=False)
    return model


__all__ = ["Generator", "KNOWN_CHECKPOINTS", "MODELS", "ModelMeta", "ModelSpec", "create_model", "data_meta",
           "fixed_input_shape", "is_external", "list_models", "load_weights", "model_meta", "read_state_dict",
           "sha256_file"]


def as_model(model: nn.Module | str, weights: str | None = None, num_classes: int | None = None,
             quantized: bool = False) -> nn.Module:
    """A zoo name or a module, with ``weights`` loaded.  Weights a datafree run wrote (a distilled student, a
    trained or pruned model) record the input shape, class count and normalisation the model was trained in; they
    win over the zoo's defaults (a zoo student of a teacher with other statistics learnt in the teacher's input
    space), so evaluating or quantizing it needs no --mean/--std again (explicit arguments still win).
    ``quantized``: weights that quantize wrote (quantized.safetensors) give the quantized model."""
    safetensors = bool(weights) and str(weights).endswith(".safetensors")
    recorded = recorded_meta(weights) if safetensors else None
    if isinstance(model, str):  # a zoo model trained for another class count is built for it
        m = create_model(model, num_classes or (recorded.num_classes if recorded else None))
    else:
        m = model
    if weights and quantized and safetensors and _quantized_file(weights):
        from datafree.quant import load_quantized

        meta = getattr(m, "datafree_meta", None)  # the BN-folded copy drops the zoo's record
        m = load_quantized(m, weights)
        if meta is not None:
            m.datafree_meta = meta
    elif weights:
        load_weights(m, weights)
    if weights and recorded is not None:
        m.datafree_meta = recorded
    return m


def _quantized_file(path: str | os.PathLike) -> bool:
    from datafree.io.safetensors import read_metadata

    try:
        return "quant_config" in read_metadata(path)
    except Exception:  # noqa: BLE001 - a missing or corrupt file: load_weights says so in one line
        return False


def meta_record(meta: ModelMeta) -> dict[str, str]:
    """What a run records of a model's input space in its weights' safetensors metadata (``recorded_meta``)."""
    return {"arch": meta.name, "num_classes": str(meta.num_classes), "mean": str(meta.mean), "std": str(meta.std),
            "input_shape": str(tuple(meta.input_shape))}


def recorded_meta(path: str | os.PathLike) -> ModelMeta | None:
    """The ModelMeta a datafree run recorded in a safetensors file's metadata (None when it recorded none)."""
    import ast

    from datafree.io.safetensors import read_metadata

    try:
        md = read_metadata(path)
    except Exception:  # noqa: BLE001 - a missing or corrupt file: load_weights says so in one line
        return None
    try:  # literal_eval evaluates literals only, never code; anything odd means "nothing recorded"
        shape, nc = ast.literal_eval(md["input_shape"]), int(md["num_classes"])
        mean, std = ast.literal_eval(md.get("mean", "None")), ast.literal_eval(md.get("std", "None"))
        norm = [tuple(float(x) for x in v) if isinstance(v, (tuple, list)) else None for v in (mean, std)]
    except (KeyError, ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    if not (isinstance(shape, tuple) and all(isinstance(v, int) for v in shape)):
        return None
    return ModelMeta(shape, nc, norm[0], norm[1], md.get("arch", "custom"))


def check_model(model: nn.Module, meta: ModelMeta, role: str) -> None:
    """Run one dummy batch: wrong input shape or class count fail here with one clear line."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *meta.input_shape))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:160]
        raise DatafreeError(f"the {role} cannot run on inputs of shape {tuple(meta.input_shape)} ({first}); "
                            "pass the right --input-shape") from None
    finally:
        model.train(was)
    if out.ndim != 2 or out.shape[1] != meta.num_classes:
        raise DatafreeError(f"class-count mismatch: the {role} outputs {tuple(out.shape[1:])} values per image "
                            f"but {meta.num_classes} classes are expected")
