"""Atomic writes: user work is never replaced by a half-written file.

Everything that holds user work (sessions, label maps, checkpoints, caches) is written to a
temporary file in the destination folder, flushed to disk and moved over the old file with
``os.replace``, which is atomic on POSIX and Windows. A crash or a kill leaves either the old
file or the new one, never a mix.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import disk_full


# read once at import: os.umask can only be read by setting it, which would race with other threads
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, else what the umask gives a new file (mkstemp would
    leave 0600, making shared labels and checkpoints unreadable to colleagues)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, nbytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    A full disk (ENOSPC, EDQUOT) becomes one :class:`DiskFullError` naming the folder (and
    ``nbytes``, the size being written, when the caller knows it); the old file stays as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except OSError as e:
        full = disk_full(e, path, nbytes)
        if full is None:
            raise
        raise full from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, nbytes=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """PNG of a uint8 label map (mode L) or an RGB/RGBA uint8 image."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """A .npy file written straight to the temporary file (no in-memory copy of a large array)."""
    array = np.asarray(array)
    with atomic_path(path, nbytes=array.nbytes) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def remove_stale_temporaries(folders, min_age_s: float = 600.0) -> int:
    """Delete temporary files (``.<name>.*.tmp``) a killed writer left in ``folders``; returns how many.

    Only files older than ``min_age_s`` go, so a write in progress in another process is never
    touched; a caller that knows it is the folder's only writer (a session's lock holder) passes 0.
    """
    import time
    now, removed = time.time(), 0
    for d in [folders] if isinstance(folders, (str, os.PathLike)) else folders:
        d = Path(d)
        if not d.is_dir():
            continue
        for tmp in d.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink()
                    removed += 1
            except OSError:
                pass
    return removed
