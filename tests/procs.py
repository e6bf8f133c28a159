"""Run a CLI twice - once uninterrupted, once killed with SIGKILL mid-run and resumed - for resume tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def full_and_killed_then_resumed(cli: Callable[..., list[str]], tmp: Path, kill_after_rows: int) -> tuple[Path, Path]:
    """``cli(out, *extra)`` gives the command line; returns the run directories (uninterrupted, resumed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    full, killed = tmp / "full", tmp / "killed"
    subprocess.run(cli(full), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(cli(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after_rows:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "student.safetensors").exists(), "the run finished before it could be killed"
    subprocess.run(cli(killed, "--resume"), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return full, killed
