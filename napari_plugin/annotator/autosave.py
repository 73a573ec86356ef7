"""Saving the session off the Qt thread: coalesced, ordered, still atomic.

Why: every box the expert draws changes the label map, and writing it (a PNG of the whole image
plus ``session.json``) costs tens of milliseconds, more on a busy laptop; on the Qt thread that
is a visible stall after every box. The widget hands a snapshot (the boxes and a copy of the
label map) to :meth:`Autosaver.request` and carries on; one background thread writes it with
annotate's Session, whose writes are atomic (temporary file, then ``os.replace``).

Coalesced: requests for the same image made while a write runs replace each other, so only the
newest snapshot of each image is written. Ordered: every snapshot carries a sequence number and
an older one is never written after a newer one of the same image. :meth:`flush` writes what is
pending on the calling thread and waits for the write in flight; the widget calls it before it
changes the session in any other way (another image, another session, an explicit save), and the
loop widget before it trains on the saved labels. Errors are shown as notifications (napari's
notifications are thread-safe); the snapshot stays pending, so the next request or flush retries.
No Qt here.
"""
from __future__ import annotations

import threading
from typing import Callable, Hashable

from ..notify import report


class Autosaver:
    """One background writer; ``write(*snapshot)`` is called with the newest snapshot per key."""

    def __init__(self, write: Callable[..., None], doing: str = "saving the session",
                 on_error: Callable[[BaseException, str], None] = report):
        self._write = write
        self._doing = doing
        self._on_error = on_error
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._pending: dict[Hashable, tuple[int, tuple]] = {}
        self._written: dict[Hashable, int] = {}
        self._seq = 0
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.writes = 0                  #: snapshots written (tests and benchmarks read it)

    def request(self, key: Hashable, *snapshot) -> None:
        """Save ``snapshot`` for ``key`` soon, in the background (newest wins)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the autosaver is closed")
            self._seq += 1
            self._pending[key] = (self._seq, snapshot)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="marsam-autosave", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def pending(self) -> bool:
        with self._cond:
            return bool(self._pending) or self._busy

    def flush(self) -> None:
        """Write everything pending now, on this thread, after the write in flight (if any)."""
        with self._cond:
            items = list(self._pending.items())
            self._pending.clear()
        failed = None
        for key, (seq, snapshot) in items:
            try:
                self._write_one(key, seq, snapshot)
            except Exception as e:  # noqa: BLE001 - kept pending and re-raised below
                with self._cond:
                    self._pending.setdefault(key, (seq, snapshot))
                failed = failed or e
        with self._cond:                 # the background write that was in flight
            while self._busy:
                self._cond.wait()
        if failed is not None:
            raise failed

    def close(self) -> None:
        """Flush, then stop the background thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _write_one(self, key, seq: int, snapshot: tuple) -> None:
        with self._write_lock:
            if self._written.get(key, 0) >= seq:
                return                   # a newer snapshot of this image is on disk already
            self._write(*snapshot)
            self._written[key] = seq
            self.writes += 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                key = next(iter(self._pending))
                seq, snapshot = self._pending.pop(key)
                self._busy = True
            try:
                self._write_one(key, seq, snapshot)
            except Exception as e:  # noqa: BLE001 - shown; the snapshot waits for the next try
                with self._cond:
                    self._pending.setdefault(key, (seq, snapshot))
                    self._busy = False
                    self._cond.notify_all()
                self._on_error(e, self._doing)
                with self._cond:         # no busy retry loop: wait for the next request or flush
                    while key in self._pending and self._pending[key][0] == seq and not self._closed:
                        self._cond.wait()
                continue
            with self._cond:
                self._busy = False
                self._cond.notify_all()
