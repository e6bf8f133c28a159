"""Write-then-rename so that a kill -9 never leaves a half-written artefact behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from datafree.errors import DatafreeError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artefacts get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# directories ensure_writable_dir created in this process: a command that fails removes the ones it left empty
_CREATED: list[Path] = []


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove we can write into it, before any long work starts."""
    path = Path(path)
    try:
        _CREATED.extend(p for p in (*reversed(path.parents), path) if not p.exists())  # outermost first
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".datafree-write-test-{os.getpid()}"  # per process: two runs may share a dir
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DatafreeError(
            f"cannot write to output directory '{path}' ({e.strerror or e}); "
            "choose another --out or fix its permissions"
        ) from None
    return path


def forget_created() -> None:
    """Start of a command: directories made by earlier commands in this process are theirs, not its."""
    _CREATED.clear()


def remove_empty_created() -> list[Path]:
    """After a failed command: remove the directories this process created that are still empty (innermost
    first), so that a refused input leaves no empty ``--out`` behind.  A directory holding anything stays."""
    removed = []
    for p in reversed(_CREATED):
        try:
            p.rmdir()  # only succeeds on an empty directory
            removed.append(p)
        except OSError:
            pass
    _CREATED.clear()
    return removed
