"""Type aliases of the public API's arguments (annotations only).  It imports only ``datafree.data.loaders``,
which imports no other datafree module but ``errors`` and ``io``: the low-level modules (``data.augment``,
``models``) do not import it, so it makes no import cycle."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeAlias

import torch

from datafree.data.loaders import ImageSet

# a file or folder path
PathLike: TypeAlias = str | os.PathLike
# labelled images: a path (npz / folder / 'mnist5k'), or an ImageSet in memory
Data: TypeAlias = str | os.PathLike | ImageSet
# held-out data: as ``Data``, or (x, y) already in the model's input space
EvalData: TypeAlias = str | os.PathLike | ImageSet | tuple[torch.Tensor, torch.Tensor]
# an input shape (C, H, W)
Shape: TypeAlias = Sequence[int]
# per-channel normalisation statistics (mean or std)
Floats: TypeAlias = Sequence[float]
