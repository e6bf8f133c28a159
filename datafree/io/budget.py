"""Budgets: wall-clock ("90s", "15m", "1h30m") or a count of rounds."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from datafree.errors import DatafreeError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int) -> float:
    """'60m' -> 3600.0 seconds; a bare number means seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", s)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != s.replace(" ", ""):
        raise DatafreeError(f"cannot parse budget '{text}': use e.g. 90s, 15m, 1h30m")
    return sum(float(a) * _UNITS[b] for a, b in parts)


def cosine(progress: float, floor: float = 0.0) -> float:
    """The cosine schedule's factor at ``progress`` in [0, 1]: 1 at the start, ``floor`` at the end."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Budget:
    """Either ``seconds`` of (method) wall-clock or ``rounds``; progress() in [0, 1] drives schedules."""

    seconds: float | None = None
    rounds: int | None = None

    @classmethod
    def parse(cls, text: str | int | float | None, rounds: int | None = None) -> Budget:
        if rounds is None:
            if text is None:
                raise DatafreeError("no budget given: pass --budget (e.g. 15m) or --rounds N")
            s = str(text).strip().lower()
            if s.endswith("r") and s[:-1].isdigit():
                rounds = int(s[:-1])
        if rounds is not None:
            if rounds <= 0:
                raise DatafreeError(f"the round budget must be positive, got {rounds}")
            return cls(rounds=rounds)
        try:
            secs = parse_duration(s)
        except DatafreeError:
            raise DatafreeError(f"cannot parse budget '{text}': use e.g. 90s, 15m, 1h30m or rounds like 40r") from None
        if secs <= 0:
            raise DatafreeError(f"budget must be positive, got '{text}'")
        return cls(seconds=secs)

    def progress(self, elapsed_s: float, rounds_done: int) -> float:
        if self.rounds is not None:
            return min(1.0, rounds_done / max(1, self.rounds))
        return min(1.0, elapsed_s / self.seconds)

    def done(self, elapsed_s: float, rounds_done: int) -> bool:
        return self.progress(elapsed_s, rounds_done) >= 1.0

    def __str__(self) -> str:
        return f"{self.rounds} rounds" if self.rounds is not None else f"{self.seconds:g}s"


class Stopwatch:
    """Accumulates method time only: paused around evaluation, which a data-free user would not run."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self._start: float | None = None

    def start(self) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def pause(self) -> None:
        if self._start is not None:
            self.offset += time.perf_counter() - self._start
            self._start = None

    @property
    def elapsed(self) -> float:
        live = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.offset + live


_BYTE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_bytes(text: str | int | float) -> int:
    """'40MB' -> 40_000_000, '1.5GiB' -> 1610612736; a bare number means bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*", str(text).lower())
    if not m or (m.group(2) or "") not in _BYTE_UNITS:
        raise DatafreeError(f"cannot parse a size from '{text}': use e.g. 40MB, 512KiB or 1.5GB")
    return int(float(m.group(1)) * _BYTE_UNITS[m.group(2) or ""])
