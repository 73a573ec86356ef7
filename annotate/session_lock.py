"""One writer per session folder: an advisory OS lock held for the writer's lifetime.

Two writers on one session each save their whole in-memory copy, so the later save drops the
other's records (two ``marsam annotate`` runs, or the napari annotator and a CLI run). The first
writer takes an exclusive lock on ``SESSION/.marsam.lock`` (``flock`` on POSIX, ``msvcrt`` on
Windows) and writes its PID there; a second writer is refused with one line naming that PID.
The operating system drops the lock when its process ends, however it ends (a kill -9
included), so a stale lock file never blocks: only a living holder does. Readers (export,
training on a session) take no lock; atomic writes keep every file they read whole.

Within one process the lock is shared (a napari widget and a worker thread hold one Session;
tests open a session twice), counted by references.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

from segmodels.errors import MarsamError

LOCK_FILE = ".marsam.lock"

_held: dict[Path, list] = {}          # resolved folder -> [file object, reference count]
_guard = threading.Lock()


def _try_lock(f) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt
        try:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(path: Path) -> str:
    try:
        first = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "another process"
    info = dict(line.split("=", 1) for line in first if "=" in line)
    pid, host, cmd = info.get("pid", "?"), info.get("host", "?"), info.get("command", "")
    return f"PID {pid} on {host}" + (f" ({cmd[:60]})" if cmd else "")


def acquire(folder: str | os.PathLike) -> Path:
    """Hold the writer lock of ``folder`` (re-entrant within a process); MarsamError if another holds it."""
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held:
            _held[folder][1] += 1
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_FILE
        try:
            f = open(path, "a+", encoding="utf-8")
        except OSError as e:
            raise MarsamError(f"cannot create the lock file {path} ({e.strerror or e}); the session "
                              "folder must be writable") from None
        if not _try_lock(f):
            f.close()
            raise MarsamError(f"session {folder} is open for writing by {_holder(path)}; close it there "
                              "first (or label into another --out); two writers would lose each other's records")
        f.seek(0)
        f.truncate()
        f.write(f"pid={os.getpid()}\nhost={socket.gethostname()}\ncommand={' '.join(sys.argv)[:200]}\n")
        f.flush()
        _held[folder] = [f, 1]
        return folder


def release(folder: str | os.PathLike) -> None:
    """Drop one reference to the lock; the last one unlocks (the lock file stays, harmless)."""
    folder = Path(folder).resolve()
    with _guard:
        entry = _held.get(folder)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _held[folder]
            entry[0].close()  # closing the file releases flock / msvcrt locks


def holds(folder: str | os.PathLike) -> bool:
    return Path(folder).resolve() in _held
