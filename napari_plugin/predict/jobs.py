"""Progress and cancellation for the long model calls of the predict, explain and train widgets.

Why a separate object: the slow calls (captum attributions, MC dropout, decoder training,
ranking a folder by uncertainty) run in a napari worker thread, but their progress must be
shown, and their Cancel button served, on the Qt thread. A :class:`Job` is the only thing both
threads touch: the worker writes ``done``/``total`` and reads ``cancelled``; the Qt thread
reads the counters on a timer and sets the cancel flag. No Qt lives here, so the rules are
testable without a display.

Cancelling a library call that offers no callback (captum's ``attribute``, MC dropout) works
through :meth:`Job.watch`: a forward pre-hook on the model counts the forward passes (the unit
of work of every method) and raises :class:`JobCancelled` at the next pass once the user has
pressed Cancel, so a 30 s LIME run stops within one batch instead of running to its end.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from torch import nn


class JobCancelled(Exception):
    """Raised inside the worker when the user pressed Cancel; never shown as an error."""


class Job:
    """Counters of one long call: ``done`` out of ``total`` units, and a cancel flag."""

    def __init__(self, desc: str, total: int = 0):
        self.desc = desc
        self.total = int(total)
        self.done = 0
        self.message = ""
        self._cancel = threading.Event()

    # --- written by the worker ---------------------------------------------------------------
    def update(self, done: int, total: int | None = None, message: str | None = None) -> None:
        if total is not None:
            self.total = int(total)
        self.done = int(done)
        if message is not None:
            self.message = message

    def step(self, n: int = 1) -> None:
        self.done += n

    def check(self) -> None:
        """Raise :class:`JobCancelled` when Cancel was pressed (call between units of work)."""
        if self._cancel.is_set():
            raise JobCancelled(self.desc)

    # callbacks in the form distill's training functions take
    def training_progress(self, epoch: int, total: int, metrics: dict) -> None:
        loss = metrics.get("train_loss")
        self.update(epoch, total, f"epoch {epoch}/{total}" + (f", loss {loss:.3f}" if loss is not None else ""))

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    # --- written by the Qt thread ---------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def fraction(self) -> float | None:
        """Share done in [0, 1), or None when the amount of work is unknown. Estimates of
        forward-pass counts can be low, so the bar stops short of full until the call returns."""
        if self.total <= 0:
            return None
        return min(self.done / self.total, 0.99)

    @contextlib.contextmanager
    def watch(self, model: nn.Module | None, forwards: int | None = None) -> Iterator[None]:
        """Count ``model``'s forward passes as progress and stop them when cancelled (a model
        kind without a torch module, e.g. ONNX, is only checked for Cancel around the call)."""
        if forwards is not None:
            self.update(0, forwards)
        if model is None:
            self.check()
            yield
            self.check()
            return

        def hook(module, args):
            self.check()
            self.step()

        handle = model.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()
