"""The run directory every command writes: resolved config, metrics.jsonl, checkpoints, weights,
report.  All files are written atomically; metrics.jsonl is append-only and fsynced per line."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from datafree.config import dump_yaml, load_yaml
from datafree.errors import DatafreeError
from datafree.io.atomic import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from datafree.io.safetensors import save_safetensors

# the command a run directory's config belongs to
KINDS = ("distill", "train", "quantize", "prune", "condense", "sweep")


def config_kind(cfg: dict) -> str | None:
    """The command whose run a resolved config describes (None: none of KINDS)."""
    return next((k for k in KINDS if k in cfg), None)


class RunDir:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = ensure_writable_dir(path)
        self.ckpt_dir = self.path / "checkpoint"

    def file(self, name: str) -> Path:
        return self.path / name

    def expect(self, kind: str) -> None:
        """Before a command writes here: a directory that holds another command's run is refused."""
        old = self.read_config()
        if old is not None and kind not in old:
            other = config_kind(old)
            raise DatafreeError(f"'{self.path}' holds {f'a {other}' if other else 'another'} run, not a {kind} one; "
                                "choose another --out")

    def write_config(self, cfg: dict) -> None:
        """Write the resolved config (after ``expect``: another command's run is refused, not overwritten)."""
        kind = config_kind(cfg)
        if kind:
            self.expect(kind)
        atomic_write_text(self.file("config.yaml"), dump_yaml(cfg) + "\n")

    def read_config(self) -> dict | None:
        f = self.file("config.yaml")
        if not f.exists():
            return None
        try:
            cfg = load_yaml(f.read_text())
        except Exception as e:  # noqa: BLE001 - not ours, damaged: PyYAML's and our own parsers raise different types
            raise DatafreeError(f"'{f}' is not a config datafree can read ({type(e).__name__}); choose another --out, "
                                "or delete that directory") from None
        if not isinstance(cfg, dict):
            raise DatafreeError(f"'{f}' is not a config datafree wrote; choose another --out, or delete that directory")
        return cfg

    def has_checkpoint(self) -> bool:
        return (self.ckpt_dir / "state.pt").is_file()

    def claim(self, cfg: dict, resume: bool, free: frozenset[str] = frozenset(), resumable: bool = True) -> None:
        """Before a command writes anything here: another command's run is refused, a fresh run must not overwrite
        a run this directory already holds (``resumable``: the error offers --resume), and a resumed one must have
        the settings its checkpoint was made with (dotted keys of ``cfg`` in ``free``, such as the budget, may
        change).  Then the resolved config is written."""
        kind = config_kind(cfg)
        if kind:
            self.expect(kind)  # first: "--resume" is no answer to a directory holding another command's run
        if resume and self.has_checkpoint():
            old = self.read_config()
            if old is not None:
                diff = config_difference(old, load_yaml(dump_yaml(cfg)), free)
                if diff:
                    raise DatafreeError(f"the checkpoint in '{self.path}' was made with other settings ({diff}); "
                                        "resume with the same options or use another --out")
        elif not resume:
            self.refuse_if_taken(resumable)
        self.write_config(cfg)

    def refuse_if_taken(self, resumable: bool = True) -> None:
        """A fresh run must not overwrite the run (or report) this directory holds."""
        if self.has_checkpoint() or self.file("report.json").is_file():
            resume = "pass --resume to continue it, or " if resumable else ""
            raise DatafreeError(f"'{self.path}' already holds a run; {resume}choose another --out (or delete that "
                                "directory)")

    def reset_metrics(self) -> None:
        atomic_write_text(self.file("metrics.jsonl"), "")

    def log_metrics(self, row: dict) -> None:
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, max_round: int) -> None:
        """On resume, forget rows logged after the checkpoint we restart from."""
        f = self.file("metrics.jsonl")
        if not f.exists():
            return
        rows = [json.loads(s) for s in f.read_text().splitlines() if s.strip()]
        keep = [r for r in rows if r.get("round", 0) <= max_round]
        atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in keep))

    def save_weights(self, model: torch.nn.Module, name: str, metadata: dict | None = None) -> Path:
        out = self.file(name)
        sd = {k: v for k, v in model.state_dict().items()}
        save_safetensors(sd, out, metadata)
        return out

    def save_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.file(name), json.dumps(data, indent=2) + "\n")

    # checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        self.ckpt_dir.mkdir(exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.ckpt_dir / "state.pt", buf.getvalue())

    def load_checkpoint(self) -> dict | None:
        f = self.ckpt_dir / "state.pt"
        if not f.exists():
            return None
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise DatafreeError(f"checkpoint '{f}' is unreadable ({type(e).__name__}); "
                                "delete it to start over") from None


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty dict adds no key: {} and {ngf: 32} differ in 'ngf'
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_difference(old: dict, new: dict, free: frozenset[str] = frozenset()) -> str | None:
    """The settings (dotted keys) in which two resolved configs differ, as 'key: then ..., now ...' - the
    options a user set first, then what follows from them; keys in ``free`` are ignored."""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in set(a) | set(b) if k not in free and a.get(k) != b.get(k)]
    keys.sort(key=lambda k: (k.count(".") != 1 or not k.startswith("distill."), k))  # distill.<option> first
    if not keys:
        return None
    return "; ".join(f"{k}: {a.get(k)!r} then, {b.get(k)!r} now" for k in keys[:3]) + \
        (f"; {len(keys) - 3} more" if len(keys) > 3 else "")
