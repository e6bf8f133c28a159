"""The synthetic-sample pool the student trains on (Fast-DFKD keeps every synthesized batch).

Images are stored as uint8 in a ring buffer of ``capacity`` samples (FIFO once full), optionally with
per-sample teacher logits (e.g. for the image and its mirror) so training needs no teacher pass.  Every
``add`` is also recorded as a *chunk*; ``flush(dir)`` writes the chunks added since the last flush,
each to its own file, so a checkpoint costs only the new samples and a resume replays the chunks.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from datafree.io.atomic import atomic_write_bytes


class SamplePool:
    def __init__(self, capacity: int, shape: tuple[int, ...]) -> None:
        self.capacity, self.shape = capacity, tuple(shape)
        self.data = torch.empty((0, *shape), dtype=torch.uint8)  # grows up to capacity
        self.logits: torch.Tensor | None = None  # N x views x classes, aligned with data
        self.count = 0  # total samples ever added
        self.pending: list[torch.Tensor] = []
        self.chunks_written = 0

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    @property
    def nbytes(self) -> int:
        return len(self) * int(torch.tensor(self.shape).prod())

    @staticmethod
    def quantize(images01: torch.Tensor) -> torch.Tensor:
        """The values the pool will hold, as floats in [0, 1] (compute cached logits on these)."""
        return images01.detach().clamp(0, 1).mul(255).round().div(255)

    def add(self, images01: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        q = images01.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
        lg = logits.detach().float() if logits is not None else None
        self._insert(q, lg)
        self.pending.append((q, lg))

    def _insert(self, q: torch.Tensor, lg: torch.Tensor | None = None) -> None:
        q = q[-self.capacity :]
        lg = lg[-self.capacity :] if lg is not None else None
        if lg is not None and self.logits is None:
            self.logits = torch.empty((0, *lg.shape[1:]))
        n = len(q)
        if len(self.data) < self.capacity:  # still growing
            room = self.capacity - len(self.data)
            self.data = torch.cat([self.data, q[:room]])
            if lg is not None:
                self.logits = torch.cat([self.logits, lg[:room]])
                lg = lg[room:]
            q = q[room:]
            self.count += n - len(q)
            n = len(q)
        if n:
            idx = (self.count + torch.arange(n)) % self.capacity
            self.data[idx] = q
            if lg is not None:
                self.logits[idx] = lg
            self.count += n

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n random samples in [0, 1] (with replacement across calls, without within one), and their
        cached logits if the pool has them."""
        size = len(self)
        idx = torch.randperm(size)[:n] if n < size else torch.randint(size, (n,))
        return self.data[idx].float().div_(255.0), (self.logits[idx] if self.logits is not None else None)

    def flush(self, directory: str | os.PathLike) -> int:
        """Persist new chunks; returns how many chunk files now describe the pool."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for q, lg in self.pending:
            buf = io.BytesIO()
            torch.save({"x": q.clone(), "logits": lg}, buf)
            atomic_write_bytes(d / f"chunk_{self.chunks_written:06d}.pt", buf.getvalue())
            self.chunks_written += 1
        self.pending = []
        return self.chunks_written

    @classmethod
    def restore(cls, directory: str | os.PathLike, n_chunks: int, capacity: int, shape) -> SamplePool:
        pool = cls(capacity, shape)
        for i in range(n_chunks):
            chunk = torch.load(Path(directory) / f"chunk_{i:06d}.pt", weights_only=True)
            pool._insert(chunk["x"], chunk["logits"])
        pool.chunks_written = n_chunks
        return pool
