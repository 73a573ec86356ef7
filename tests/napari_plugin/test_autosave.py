"""The background autosave without Qt: newest snapshot per image wins, never an older one after
a newer, flush writes on the caller's thread, a failing write is reported and retried."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_plugin.annotator.autosave import Autosaver


def _wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_requests_coalesce_and_the_newest_snapshot_per_image_is_written():
    gate = threading.Event()
    written = []

    def write(key, value):
        gate.wait(5)
        written.append((key, value))

    saver = Autosaver(write)
    saver.request("a", "a", 1)              # taken by the thread, blocked in write
    _wait(lambda: saver._busy)
    for v in range(2, 30):                  # arrive while the first write runs: coalesce
        saver.request("a", "a", v)
    saver.request("b", "b", 1)
    gate.set()
    _wait(lambda: not saver.pending)
    assert written[0] == ("a", 1)
    assert ("a", 29) in written and ("b", 1) in written and len(written) == 3
    assert saver.writes == 3


def test_flush_writes_on_the_calling_thread_and_an_older_snapshot_never_overwrites():
    threads, written = [], []

    def write(key, value):
        threads.append(threading.current_thread().name)
        written.append(value)

    saver = Autosaver(write)
    with saver._write_lock:                 # hold the writer: the requests stay pending
        saver.request("a", "a", 1)
        saver.request("a", "a", 2)
        time.sleep(0.05)
    saver.flush()
    assert not saver.pending and written[-1] == 2 and 1 not in written
    saver.close()
    with pytest.raises(RuntimeError, match="closed"):
        saver.request("a", "a", 3)


def test_a_failing_write_is_reported_kept_and_retried():
    errors, written = [], []
    fail = {"n": 1}

    def write(key, value):
        if fail["n"]:
            fail["n"] -= 1
            raise OSError("disk full")
        written.append(value)

    saver = Autosaver(write, on_error=lambda e, doing: errors.append(str(e)))
    saver.request("a", "a", np.zeros(3))
    _wait(lambda: errors)
    assert errors == ["disk full"] and saver.pending      # kept, nothing lost
    saver.flush()                                         # the retry succeeds
    assert len(written) == 1 and not saver.pending
