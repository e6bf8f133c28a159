"""MB-DFKD memory-bank replay (Binici et al., "Preventing Catastrophic Forgetting and Distribution
Mismatch in Knowledge Distillation via Synthetic Data", WACV 2022).

The paper keeps a dynamic, bounded collection of past synthetic samples and rehearses them with every
new batch; its generator, which seeks maximal student-teacher disagreement, is also held to the real
data distribution through the teacher's BatchNorm statistics - in datafree that is the synthesizer's
``bn`` term together with its ``adv`` term, so it holds for any synthesizer here.

Per synthesized batch (``observe``), every ``add_every``-th batch offers a random ``add_fraction`` of
its samples to the bank, which keeps at most ``capacity`` samples (or ``capacity_bytes``, pixels as
uint8 plus the cached teacher logits) by
- ``reservoir`` (default): sample i of the stream is kept with probability capacity / i, replacing a
  random slot - the bank stays a uniform sample of the whole history (Vitter's algorithm R);
- ``fifo``: the oldest samples are overwritten (the ring buffer of the reference re-implementation).
Each student batch then takes a share ``ratio`` of replay samples drawn uniformly from the bank.
With ``mix`` > 0 a replay is instead a pixel blend lam x_i + (1 - lam) x_j of two stored samples, lam ~
Beta(mix, mix), which the engine's teacher reads live (so the bank caches no logits and a sample costs its
pixels alone): the bank's counterpart of the VAE's blended replays (``replay/vae.py``), so that the two can be
compared with the blending held fixed.  Not in the paper; off by default.
Deviations: the paper (and its re-implementations) push whole batches every few epochs into a FIFO
of fixed slots; here samples enter continuously, reservoir by default, and the bank stores teacher
logits with each sample so that rehearsal needs no teacher pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from datafree.errors import DatafreeError
from datafree.io.budget import parse_bytes
from datafree.replay.base import ReplayContext, beta_blend
from datafree.synthesis.pool import SamplePool


def reservoir_slots(seen: int, capacity: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vitter's algorithm R for n samples offered after ``seen`` earlier ones: (indices of the kept ones,
    their slots).  Slots at or past the store's fill level come first and in order (the store grows)."""
    idx = torch.arange(n)
    pos = seen + idx  # 0-based position of each sample in the offered stream
    slot = torch.where(pos < capacity, pos, (torch.rand(n) * (pos + 1).double()).long())
    keep = slot < capacity
    return idx[keep], slot[keep]


@dataclass
class MemoryBankConfig:
    capacity: int = 200_000  # samples
    capacity_bytes: str | int | None = None  # e.g. "40MB"; overrides capacity
    policy: str = "reservoir"  # reservoir | fifo
    ratio: float = 0.5  # share of each student batch drawn from the bank
    add_every: int = 1  # refresh policy: every k-th synthesized batch is offered to the bank ...
    add_fraction: float = 1.0  # ... and this random share of its samples
    mix: float = 0.0  # > 0: each replay is a Beta(mix, mix) pixel blend of two stored samples, read by a live teacher


class MemoryBank:
    def __init__(self, cfg: MemoryBankConfig, ctx: ReplayContext) -> None:
        if cfg.policy not in ("reservoir", "fifo"):
            raise DatafreeError(f"memory-bank policy must be reservoir or fifo, got '{cfg.policy}'")
        if not 0.0 <= cfg.ratio < 1.0:
            raise DatafreeError(f"memory-bank ratio must be in [0, 1), got {cfg.ratio}")
        if not 0.0 < cfg.add_fraction <= 1.0 or cfg.add_every < 1:
            raise DatafreeError("memory-bank add_fraction must be in (0, 1] and add_every >= 1")
        if cfg.mix < 0:
            raise DatafreeError(f"memory-bank mix must be >= 0 (0: replay the stored samples), got {cfg.mix}")
        self.cfg, self.ratio, self.shape = cfg, cfg.ratio, tuple(ctx.input_shape)
        pixels = int(torch.tensor(self.shape).prod())
        self.caching = ctx.cache_logits and not cfg.mix  # blends are new images: no logits to cache
        self.sample_bytes = pixels + (4 * ctx.views * ctx.num_classes if self.caching else 0)
        cap = cfg.capacity
        if cfg.capacity_bytes is not None:
            cap = parse_bytes(cfg.capacity_bytes) // self.sample_bytes
        if cap < 1:
            raise DatafreeError(f"memory-bank capacity is below one sample ({self.sample_bytes} bytes each)")
        self.capacity = int(cap)
        self.bank = SamplePool(self.capacity, self.shape)
        self.calls = 0

    @property
    def ready(self) -> bool:
        return len(self.bank) > 0

    def _slots(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices of the offered samples that are stored, their slots) under the policy."""
        if self.cfg.policy == "fifo":
            idx = torch.arange(n)
            return idx, (self.bank.count + idx) % self.capacity
        return reservoir_slots(self.bank.count, self.capacity, n)

    def observe(self, images01: torch.Tensor, logits: torch.Tensor | None, progress: float) -> dict:
        self.calls += 1
        if (self.calls - 1) % self.cfg.add_every:
            return {"bank_size": len(self.bank)}
        if self.cfg.add_fraction < 1.0:
            pick = torch.randperm(len(images01))[: max(1, round(self.cfg.add_fraction * len(images01)))]
            images01, logits = images01[pick], (logits[pick] if logits is not None else None)
        idx, slots = self._slots(len(images01))
        kept = logits[idx] if logits is not None and self.caching else None
        self.bank.write(slots, images01[idx], kept, offered=len(images01))
        return {"bank_size": len(self.bank)}

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.cfg.mix:
            return self.bank.sample(n)
        (a, _), (b, _) = self.bank.sample(n), self.bank.sample(n)
        return beta_blend(a, b, self.cfg.mix), None

    def footprint(self) -> dict:
        return {"bytes": self.bank.nbytes, "capacity_bytes": self.capacity * self.sample_bytes,
                "samples": len(self.bank), "capacity_samples": self.capacity, "sample_bytes": self.sample_bytes}

    def save(self, directory: Path) -> dict:
        return {"manifest": self.bank.flush(directory, prefix="bank"), "calls": self.calls}

    def load(self, directory: Path, state: dict) -> None:
        self.bank = SamplePool.restore(directory, state["manifest"], self.capacity, self.shape)
        self.calls = state["calls"]

    def prune(self, directory: Path, state: dict) -> None:
        SamplePool.prune(directory, state["manifest"], prefix="bank")
