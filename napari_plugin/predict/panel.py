"""The progress bar and Cancel button that every long action of marsam's model widgets shows.

The call itself runs in a napari worker (``napari_plugin.workers.start``, which also turns
errors into notifications and drives napari's activity indicator); a 100 ms QTimer copies the
:class:`~.jobs.Job` counters into the bar on the Qt thread, so the worker never touches a
widget. A cancelled call returns quietly ("cancelled" in the status line, no error).

``on_done`` may return a list of steps (callables that each add or update one layer): they run
one per Qt event-loop turn (:func:`~napari_plugin.workers.in_turns`) and the panel stays
:attr:`~JobPanel.busy` until the last has run.
"""
from __future__ import annotations

from typing import Callable

from magicgui.widgets import Container, Label, ProgressBar, PushButton

from .. import workers
from ..notify import info
from .jobs import Job, JobCancelled

_CANCELLED = object()


def _run_job(fn: Callable, job: Job, args: tuple):
    try:
        with workers.worker_threads():
            return fn(*args, job=job)
    except JobCancelled:
        return _CANCELLED


class JobPanel(Container):
    """Progress bar + message + Cancel; :meth:`run` starts one job at a time."""

    def __init__(self):
        super().__init__(layout="vertical", labels=False)
        self.bar = ProgressBar(value=0, min=0, max=100, visible=False)
        self.cancel_btn = PushButton(text="Cancel", visible=False)
        self.message = Label(value="")
        self.extend([self.bar, self.cancel_btn, self.message])
        self.cancel_btn.changed.connect(self.cancel)
        self.job: Job | None = None
        self.showing = 0                  # jobs whose on_done layer steps still run, one per Qt turn
        self.worker = None
        self._timer = None

    @property
    def busy(self) -> bool:
        return self.job is not None or self.showing > 0

    def run(self, fn: Callable, *args, desc: str, on_done: Callable | None = None,
            on_finally: Callable | None = None) -> Job:
        """Run ``fn(*args, job=job)`` in a worker; ``on_done(result)`` on the Qt thread unless cancelled."""
        from qtpy.QtCore import QTimer
        from segmodels.errors import MarsamError

        if self.job is not None:
            raise MarsamError(f"{self.job.desc} is still running; wait for it or press Cancel")
        job = self.job = Job(desc)
        self.bar.value = 0
        self.bar.visible = self.cancel_btn.visible = True
        self.cancel_btn.enabled = True
        self.message.value = f"{desc} ..."
        self._timer = QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

        outcome = {"text": "failed (see the notification)"}
        timer = self._timer

        def release():
            """End this job's display; on_done may then start the next job (train -> suggest)."""
            timer.stop()
            if self.job is job:
                self.job = None
                self.bar.visible = self.cancel_btn.visible = False

        def done(result):
            release()
            if result is _CANCELLED:
                outcome["text"] = "cancelled"
                info(f"marsam: {desc} cancelled")
                return
            steps = on_done(result) if on_done is not None else None
            outcome["text"] = "done"
            if steps:
                outcome["steps"] = list(steps)
                self.showing += 1

        def finish(shown: bool = False):
            self.showing -= shown
            if self.job is None:
                self.message.value = f"{desc}: {outcome['text']}"
            if on_finally is not None:
                on_finally()

        def always():
            release()
            steps = outcome.pop("steps", None)
            if steps:
                workers.in_turns(steps, then=lambda: finish(shown=True), doing=desc)
            else:
                finish()

        self.worker = workers.start(_run_job, fn, job, args, on_done=done, doing=desc, progress=desc,
                                    on_finally=always)
        return job

    def _tick(self) -> None:
        job = self.job
        if job is None:
            return
        frac = job.fraction
        if frac is None:
            self.bar.max = 0          # Qt's "busy" (indeterminate) bar
        else:
            self.bar.max = 100
            self.bar.value = int(round(100 * frac))
        if job.message:
            self.message.value = f"{job.desc}: {job.message}"

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel_btn.enabled = False
            self.message.value = f"{self.job.desc}: cancelling ..."
