"""Bounded stores of synthetic samples: the student's window of new samples and the replay memory bank.

Images are kept as uint8 (what a PNG of the sample would hold), optionally with per-sample teacher
logits (for the image and its mirror) so that training needs no teacher pass.  A write puts samples
into given *slots*; ``add`` is the FIFO (ring) policy, other policies (reservoir) choose their own slots.

Persistence is incremental so that a checkpoint every round stays cheap even for a large bank: every
write is also logged as a *chunk*; ``flush(dir)`` writes the chunks logged since the last flush (or one
snapshot of the whole store once the chunks would outweigh it) and returns a manifest, the list of
files that describe the store; ``restore(dir, manifest)`` rebuilds it exactly; ``prune(dir, manifest)``
deletes files the manifest no longer names (call it only after the checkpoint naming the manifest is
written, so that a kill -9 at any moment leaves a consistent checkpoint).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from datafree.io.atomic import atomic_write_bytes


def sample_indices(size: int, n: int) -> torch.Tensor:
    """n random indices below ``size``: without replacement when there are enough, else with it."""
    return torch.randperm(size)[:n] if n <= size else torch.randint(size, (n,))


class SamplePool:
    def __init__(self, capacity: int, shape: tuple[int, ...]) -> None:
        if capacity < 1:
            raise ValueError(f"a sample pool needs a capacity of at least 1, got {capacity}")
        self.capacity, self.shape = int(capacity), tuple(shape)
        self.data = torch.empty((0, *self.shape), dtype=torch.uint8)  # grows by doubling up to capacity
        self.logits: torch.Tensor | None = None  # N x views x classes, aligned with data
        self.size = 0  # valid samples (slots 0..size-1)
        self.count = 0  # samples ever offered (drives FIFO position and reservoir odds)
        self.pending: list[dict] = []  # writes since the last flush
        self.pending_bytes = 0
        self.manifest: list[str] = []  # files describing the store as of the last flush
        self.files_written = 0

    def __len__(self) -> int:
        return self.size

    @property
    def sample_bytes(self) -> int:
        """Bytes per stored sample: uint8 pixels plus float32 logits if the pool caches them."""
        n = int(torch.tensor(self.shape).prod())
        if self.logits is not None:
            n += 4 * int(torch.tensor(self.logits.shape[1:]).prod())
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.sample_bytes

    @staticmethod
    def quantize(images01: torch.Tensor) -> torch.Tensor:
        """The values the pool will hold, as floats in [0, 1] (compute cached logits on these)."""
        return images01.detach().clamp(0, 1).mul(255).round().div(255)

    @staticmethod
    def to_uint8(images01: torch.Tensor) -> torch.Tensor:
        return images01.detach().clamp(0, 1).mul(255).round().to(torch.uint8)

    # -- writing -------------------------------------------------------------------------------
    def add(self, images01: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        """FIFO: new samples fill free slots, then overwrite the oldest."""
        n = len(images01)
        slots = (self.count + torch.arange(n)) % self.capacity
        self.write(slots, images01, logits, offered=n)

    def write(self, slots: torch.Tensor, images01: torch.Tensor, logits: torch.Tensor | None = None,
              offered: int | None = None) -> None:
        """Put sample i into ``slots[i]`` (a slot may only be ``len(self)`` or below, so the store stays
        dense); ``offered`` (default: all) samples count as seen, including ones a policy dropped."""
        q = images01 if images01.dtype == torch.uint8 else self.to_uint8(images01)
        lg = logits.detach().float() if logits is not None else None
        self._apply(slots.long(), q, lg, offered if offered is not None else len(q))
        self.pending.append({"slots": slots.long().clone(), "x": q.clone(), "logits": lg,
                             "offered": offered if offered is not None else len(q)})
        self.pending_bytes += len(q) * self.sample_bytes

    def _apply(self, slots: torch.Tensor, q: torch.Tensor, lg: torch.Tensor | None, offered: int) -> None:
        self.count += offered
        if len(slots) == 0:
            return
        slots, keep = last_writes(slots)
        q = q[keep]
        lg = lg[keep] if lg is not None else None
        top = int(slots.max()) + 1
        fresh = slots[slots >= self.size]
        if top > self.capacity or int(slots.min()) < 0 or (len(fresh) and int(fresh.max()) >= self.size + len(fresh)):
            raise IndexError(f"slots must fill the pool densely within its capacity {self.capacity}")
        self._reserve(top, lg)
        self.data[slots] = q
        if lg is not None:
            self.logits[slots] = lg
        self.size = max(self.size, top)

    def _reserve(self, n: int, lg: torch.Tensor | None) -> None:
        if lg is not None and self.logits is None:
            self.logits = torch.empty((len(self.data), *lg.shape[1:]))
        if n <= len(self.data):
            return
        new = min(self.capacity, max(n, 2 * len(self.data), 64))
        data = torch.empty((new, *self.shape), dtype=torch.uint8)
        data[: self.size] = self.data[: self.size]
        self.data = data
        if self.logits is not None:
            logits = torch.empty((new, *self.logits.shape[1:]))
            logits[: self.size] = self.logits[: self.size]
            self.logits = logits

    # -- reading -------------------------------------------------------------------------------
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n random samples in [0, 1] (without replacement when the pool is large enough), and their
        cached logits if the pool has them."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty pool")
        return self.get(sample_indices(self.size, n))

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.data[idx].float().div_(255.0), (self.logits[idx] if self.logits is not None else None)

    # -- persistence ---------------------------------------------------------------------------
    def flush(self, directory: str | os.PathLike, prefix: str = "pool") -> dict:
        """Persist what changed since the last flush; returns the manifest: the files that describe the
        store, in the order they apply, and the next file number."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.pending_bytes > max(self.nbytes, 1):  # a snapshot is smaller than the chunk log
            name = f"{prefix}_{self.files_written:06d}_snapshot.pt"
            self._save(d / name, {"snapshot": True, "x": self.data[: self.size].clone(), "count": self.count,
                                  "logits": self.logits[: self.size].clone() if self.logits is not None else None})
            self.files_written += 1
            self.manifest = [name]
        else:
            for chunk in self.pending:
                name = f"{prefix}_{self.files_written:06d}.pt"
                self._save(d / name, chunk)
                self.files_written += 1
                self.manifest.append(name)
        self.pending, self.pending_bytes = [], 0
        return {"files": list(self.manifest), "next": self.files_written}

    @staticmethod
    def _save(path: Path, obj: dict) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def restore(cls, directory: str | os.PathLike, manifest: dict, capacity: int, shape) -> SamplePool:
        pool = cls(capacity, shape)
        for name in manifest["files"]:
            rec = torch.load(Path(directory) / name, weights_only=True)
            if rec.get("snapshot"):
                n = len(rec["x"])
                pool._apply(torch.arange(n), rec["x"], rec["logits"], 0)
                pool.count = rec["count"]
            else:
                pool._apply(rec["slots"], rec["x"], rec["logits"], rec["offered"])
        pool.manifest, pool.files_written = list(manifest["files"]), manifest["next"]
        return pool

    @staticmethod
    def prune(directory: str | os.PathLike, manifest: dict, prefix: str = "pool") -> None:
        """Delete this pool's files that ``manifest`` no longer names."""
        d = Path(directory)
        if not d.is_dir():
            return
        keep = set(manifest["files"])
        for f in d.glob(f"{prefix}_*.pt"):
            if f.name not in keep:
                f.unlink(missing_ok=True)


def last_writes(slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ``slots`` and, for each, the index of its last write: a slot written twice in one batch
    keeps the later sample, as writing them in sequence would."""
    uniq, inv = torch.unique(slots, return_inverse=True)
    pos = torch.arange(len(slots))
    last = torch.full((len(uniq),), -1, dtype=torch.long).scatter_reduce(0, inv, pos, "amax")
    return uniq, last
