"""Running annotate's slow calls off the Qt thread.

Why: embedding an image with SAM's ViT takes seconds; on the Qt thread napari would freeze
("not responding"), which is the main complaint about tools that do so. Every engine call runs
in a napari ``thread_worker`` (with napari's progress bar for the slow ones); results come back
to the Qt thread through the worker's signals.

:class:`EngineRunner` serialises calls to one engine: ``set_image`` and ``segment`` share the
engine's current image, so two of them must never interleave. It has no Qt in it.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from .notify import report


def worker_threads():
    """Torch's threads while a worker computes: ``segmodels.device.default_threads`` (all cores
    unless ``MARSAM_GUI_THREADS`` says otherwise), the previous setting restored after."""
    from segmodels.device import default_threads, torch_threads
    return torch_threads(default_threads())


class EngineRunner:
    """One prompt engine, its lock and the token of the image it holds."""

    def __init__(self, engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._token: object = object()   # matches no image yet
        self.last_segment_s = 0.0          # the engine's time for the last segment() call

    @property
    def name(self) -> str:
        return getattr(self.engine, "name", type(self.engine).__name__)

    def _ensure_image(self, token, image: np.ndarray) -> None:
        if self._token != token:
            self._token = None          # a failure below must not leave a stale token
            self.engine.set_image(image)
            self._token = token

    def set_image(self, token, image: np.ndarray) -> object:
        """The slow step for SAM (embedding, read from annotate's cache when it is there)."""
        with self._lock, worker_threads():
            self._ensure_image(token, image)
        return token

    def segment(self, token, image: np.ndarray, prompts: list) -> list:
        return self.segment_with_notes(token, image, prompts)[0]

    def segment_with_notes(self, token, image: np.ndarray, prompts: list) -> tuple[list, list]:
        """Masks (windows, not full-image masks), and per prompt why the engine fell back to a
        shape prior (GrabCut's ``last_fallbacks``: None where the engine's own mask was used)."""
        with self._lock, worker_threads():
            self._ensure_image(token, image)
            from annotate.engines import segment_windows
            t0 = time.perf_counter()
            masks = segment_windows(self.engine, prompts)
            self.last_segment_s = time.perf_counter() - t0
            notes = list(getattr(self.engine, "last_fallbacks", None) or [])
        if len(notes) != len(masks):
            notes = [None] * len(masks)
        return masks, notes

    def locked(self, fn: Callable, *args):
        """``fn(*args)`` while holding the engine's lock, so the SAM model is never run by two
        threads at once: a background prefetch running the encoder beside a foreground embedding
        hung the whole napari process in testing."""
        with self._lock, worker_threads():
            return fn(*args)


class _Failed:
    """What a worker returns instead of raising: napari would otherwise both re-raise the error
    in Qt and show its traceback; this way it becomes one notification (see :mod:`.notify`)."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _catching(fn: Callable, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - handed to the Qt thread and shown there
        return _Failed(e)


def in_turns(steps, then: Callable | None = None, doing: str = "") -> None:
    """Run ``steps`` (callables) on the Qt thread, one per turn of the event loop, then ``then()``.

    Why: napari builds a new layer's vispy visuals and controls on the Qt thread, 45-60 ms per
    layer on the 2-core laptop; a prediction adding its Labels and entropy layers in one turn
    froze the GUI for 126 ms (benchmarks/bench_napari_loop.py). One layer a turn lets Qt paint and
    handle input in between. The first step runs now; an error ends the chain as a notification
    and ``then`` still runs.
    """
    from qtpy.QtCore import QTimer
    queue = list(steps)

    def turn():
        while queue:
            step = queue.pop(0)
            try:
                step()
            except Exception as e:  # noqa: BLE001 - shown, the chain ends, then() still runs
                report(e, doing)
                queue.clear()
                break
            if queue:
                QTimer.singleShot(1, turn)      # not 0: Qt runs a chain of 0 ms timers ahead of
                return                          # every other timer (measured: none fired between)
        if then is not None:
            then()

    turn()


def start(fn: Callable, *args, on_done: Callable | None = None, doing: str = "",
          progress: str | None = None, on_finally: Callable | None = None):
    """Run ``fn(*args)`` in a napari worker thread; ``on_done(result)`` runs on the Qt thread.

    ``progress`` names an (indeterminate) napari progress bar shown while it runs. Errors are
    shown as notifications, never raised into Qt; ``on_finally()`` runs after success or error.
    """
    from napari.qt.threading import create_worker
    kwargs = {"_progress": {"desc": progress}} if progress else {}
    worker = create_worker(_catching, fn, *args, _start_thread=False, _ignore_errors=True, **kwargs)

    def _returned(result):
        if isinstance(result, _Failed):
            report(result.exc, doing)
        elif on_done is not None:
            try:
                on_done(result)
            except Exception as e:  # noqa: BLE001
                report(e, doing)
        if on_finally is not None:
            on_finally()

    worker.returned.connect(_returned)
    worker.start()
    return worker
