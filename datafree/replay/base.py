"""The ``Replay`` protocol: what the student rehearses besides the newest synthetic samples.

The distiller keeps a small window of *novel* samples (the current round's synthesis).  A replay
strategy sees every new synthetic batch (``observe``) and hands back *replay* samples for a share
``ratio`` of each student batch (``sample``).  Without replay (``none``) the student only ever sees
the current generator's output and forgets what earlier rounds taught it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch


@dataclass
class ReplayContext:
    """What a replay strategy may use: the teacher (through the inverter), shapes, and whether the
    engine caches teacher logits per sample (then replay samples must come with theirs)."""

    inverter: object  # datafree.synthesis.TeacherInverter
    input_shape: tuple[int, ...]
    num_classes: int
    cache_logits: bool
    views: int = 2  # cached logits per sample: the image and its mirror


def beta_blend(a: torch.Tensor, b: torch.Tensor, mix: float) -> torch.Tensor:
    """Row-wise lam * a + (1 - lam) * b with lam ~ Beta(mix, mix): the blended replays of the bank (pixels) and
    the VAE (latent codes), new inputs at every call that the engine's teacher reads live (Beyer et al. 2022)."""
    n = len(a)
    lam = torch.distributions.Beta(mix, mix).sample((n,)).view(n, *[1] * (a.dim() - 1))
    return torch.lerp(b, a, lam)


class Replay(Protocol):
    ratio: float  # share of each student batch drawn from replay once ``ready``

    @property
    def ready(self) -> bool:
        """Whether ``sample`` can serve replay samples yet."""
        ...

    def observe(self, images01: torch.Tensor, logits: torch.Tensor | None, progress: float) -> dict:
        """A new synthetic batch (pixels as the pool stores them, cached teacher logits N x views x C or
        None); ``progress`` in [0, 1] of the budget.  Returns metrics to log."""
        ...

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n replay samples in [0, 1] and their cached teacher logits: None without the engine's cache, or for
        replays made anew at each call (the engine's teacher then reads them live)."""
        ...

    def footprint(self) -> dict:
        """Bytes the strategy holds (``bytes`` is the number compared across strategies)."""
        ...

    def save(self, directory: Path) -> dict:
        """Persist to ``directory`` what is not in the returned (small) state; returns the state."""
        ...

    def load(self, directory: Path, state: dict) -> None: ...

    def prune(self, directory: Path, state: dict) -> None:
        """Delete files in ``directory`` that ``state`` (now checkpointed) no longer needs."""
        ...


class NoReplay:
    """``none``: the student trains on the novel window only (the forgetting baseline)."""

    ratio = 0.0
    ready = False

    def __init__(self, cfg: object, ctx: ReplayContext) -> None:
        self.cfg = cfg

    def observe(self, images01: torch.Tensor, logits: torch.Tensor | None, progress: float) -> dict:
        return {}

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise RuntimeError("no replay: nothing to sample")

    def footprint(self) -> dict:
        return {"bytes": 0}

    def save(self, directory: Path) -> dict:
        return {}

    def load(self, directory: Path, state: dict) -> None:
        pass

    def prune(self, directory: Path, state: dict) -> None:
        pass
