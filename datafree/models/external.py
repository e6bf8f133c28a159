"""Architectures from libraries a user has installed: ``timm:NAME`` and ``torchvision:NAME``.

datafree depends on neither (torchvision's PyPI build does not import beside our CPU torch); when one imports,
its architectures are models like the zoo's.  Nothing is downloaded: the model is built with random weights
(``pretrained=False`` / ``weights=None``) and its trained weights come from ``--weights`` / ``--teacher-weights``
(a timm or torchvision checkpoint is a plain state_dict or a safetensors file).  The input space is the one the
library records for the architecture (timm's ``pretrained_cfg``: input size, mean, std; torchvision's
classification models: 3 x 224 x 224 under ImageNet statistics); ``--input-shape``/``--mean``/``--std`` override it
for a model trained on other inputs (a CIFAR-sized timm ResNet: ``--input-shape 3,32,32``).
"""

from __future__ import annotations

import importlib

from torch import nn

from datafree.errors import DatafreeError

LIBRARIES = ("timm", "torchvision")
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # (mean, std); also the zoo's CIFAR ResNets'


def is_external(name: str) -> bool:
    return ":" in name and name.split(":", 1)[0] in LIBRARIES


def _import(lib: str, ref: str):
    try:
        return importlib.import_module(lib)
    except Exception as e:  # noqa: BLE001 - missing, or installed but broken (torchvision beside another torch)
        raise DatafreeError(f"'{ref}' needs {lib}, which does not import here ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no message'}); "
                            f"install a {lib} that matches this torch, or pass path/to/file.py:factory") from None


def create_external(ref: str, num_classes: int | None = None):
    """(model, (input_shape, num_classes, mean, std)) for ``timm:NAME`` or ``torchvision:NAME``, random weights."""
    lib, arch = ref.split(":", 1)
    module = _import(lib, ref)
    kwargs = {"num_classes": num_classes} if num_classes else {}
    if lib == "timm":
        if not module.is_model(arch):
            raise DatafreeError(f"timm has no architecture '{arch}'; list them with timm.list_models()")
        model = module.create_model(arch, pretrained=False, **kwargs)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        shape = tuple(cfg.get("input_size", (3, 224, 224)))
        mean, std = tuple(cfg.get("mean", IMAGENET_NORM[0])), tuple(cfg.get("std", IMAGENET_NORM[1]))
    else:
        try:
            model = module.models.get_model(arch, weights=None, **kwargs)
        except ValueError as e:
            raise DatafreeError(f"torchvision has no architecture '{arch}' ({e}); list them with "
                                "torchvision.models.list_models()") from None
        shape, (mean, std) = (3, 224, 224), IMAGENET_NORM
    if not isinstance(model, nn.Module):
        raise DatafreeError(f"'{ref}' gave {type(model).__name__}, not a torch.nn.Module")
    nc = num_classes or getattr(model, "num_classes", None) or 1000
    return model, (shape, int(nc), mean, std)
