"""A dependency-free progress bar with ETA on stderr (one line per update when not a terminal)."""

from __future__ import annotations

import sys
import time


def fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, desc: str, enabled: bool = True, min_interval: float = 0.5) -> None:
        self.desc, self.enabled, self.min_interval = desc, enabled, min_interval
        self.tty = sys.stderr.isatty()
        self.t0, self.last = time.perf_counter(), 0.0

    def update(self, fraction: float, elapsed: float | None = None, info: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < (self.min_interval if self.tty else 30.0):
            return
        self.last = now
        el = elapsed if elapsed is not None else now - self.t0
        eta = el * (1 - fraction) / fraction if fraction > 1e-6 else float("nan")
        bar = "#" * int(24 * fraction)
        line = (f"{self.desc} [{bar:<24}] {100 * fraction:5.1f}% {fmt_s(el)}<"
                f"{fmt_s(eta) if eta == eta else '?'} {info}")
        if self.tty:
            sys.stderr.write("\r" + line[:160].ljust(100))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
