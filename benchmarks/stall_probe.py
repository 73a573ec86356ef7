"""Where the Qt thread's stalls come from: a meter on the Qt thread and a GIL probe beside it.

``StallMeter`` ticks a QTimer every 10 ms on the Qt thread; a gap between ticks beyond the period
is a stall (the GUI could not respond). A plain Python thread (the probe) wakes every 2 ms and,
every 10 ms, records the stack of the Qt thread; when the probe itself wakes late it snapshots
every thread's stack at once. For each stall over ``report_ms`` the report says:

- ``cpu_starved``: the probe was late and so was a probe in a separate process (no GIL shared):
  the machine had no core for us (other processes, or our own torch threads);
- ``gil_held_elsewhere``: the probe was late but the other process's probe was not, so the GIL
  was held by another thread of ours (C code that does not release it: an import, matplotlib's
  renderer, a numpy call on big arrays); the stacks taken right after the probe woke name it;
- ``qt_thread_busy``: the probe ran on time and the Qt thread's sampled stack shows Python work
  of its own (a layer update, an event handler);
- ``qt_thread_starved``: the probe ran on time but the Qt thread showed no work of its own: it
  was runnable and got no core (torch's intra-op threads or other processes had them).

Used by benchmarks/bench_napari_loop.py and bench_napari_annotator.py.
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import sys
import threading
import time
import traceback

import numpy as np

IDLE_FRAMES = ("processEvents", "_pump", "exec_", "exec", "sleep", "until", "<lambda>")


def _process_probe(stop, out) -> None:
    """In its own process: report wake-ups later than 30 ms (CLOCK_MONOTONIC, shared by processes)."""
    last = time.perf_counter()
    while not stop.is_set():
        time.sleep(0.002)
        now = time.perf_counter()
        if now - last > 0.03:
            out.put((last, now))
        last = now
    out.put(None)


def _frames(frame, depth: int = 6) -> list[str]:
    out = []
    for fs in traceback.extract_stack(frame)[-depth:][::-1]:
        out.append(f"{fs.name} ({fs.filename.split('site-packages/')[-1].split('/i16/')[-1]}:{fs.lineno})")
    return out


class StallMeter:
    """QTimer ticks on the Qt thread plus the GIL probe; :meth:`stop` returns the report."""

    def __init__(self, period_ms: int = 10, report_ms: float = 50.0):
        from qtpy.QtCore import QTimer
        self.period = period_ms / 1000
        self.report = report_ms / 1000
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.main_id = threading.main_thread().ident
        self._stop = threading.Event()
        self.samples: collections.deque = collections.deque(maxlen=200_000)   # (t, main thread stack)
        self.late: list[tuple[float, float, dict]] = []                       # probe gaps with all stacks

    def _probe(self) -> None:
        last = time.perf_counter()
        next_sample = last
        while not self._stop.is_set():
            time.sleep(0.002)
            now = time.perf_counter()
            if now - last > 0.03:
                stacks = {}
                for tid, fr in sys._current_frames().items():
                    if tid != threading.get_ident():
                        name = next((t.name for t in threading.enumerate() if t.ident == tid), str(tid))
                        stacks[name] = _frames(fr, 8)
                self.late.append((last, now, stacks))
            if now >= next_sample:
                fr = sys._current_frames().get(self.main_id)
                if fr is not None:
                    self.samples.append((now, _frames(fr, 6)))
                next_sample = now + 0.01
            last = now

    def start(self) -> None:
        self.ticks.clear()
        self.samples.clear()
        self.late.clear()
        self._stop.clear()
        self.thread = threading.Thread(target=self._probe, name="stall-probe", daemon=True)
        self.thread.start()
        ctx = mp.get_context("spawn")
        self._pstop, self._pq = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_process_probe, args=(self._pstop, self._pq), daemon=True)
        self.proc.start()
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        self._stop.set()
        self.thread.join(1)
        self._pstop.set()
        machine_late = []
        while True:
            try:
                item = self._pq.get(timeout=10)
            except Exception:  # noqa: BLE001
                break
            if item is None:
                break
            machine_late.append(item)
        self.proc.join(5)
        ticks = np.asarray(self.ticks)
        gaps = np.diff(ticks) if len(ticks) > 1 else np.zeros(1)
        stalls = []
        for i in np.flatnonzero(gaps > self.report):
            a, b = ticks[i], ticks[i + 1]
            probe_late = [(s, e, st) for s, e, st in self.late if s < b and e > a and (min(e, b) - max(s, a)) > 0.5 * (b - a - self.period)]
            main = [st for t, st in self.samples if a < t < b]
            busy = [st for st in main if not any(st[0].startswith(f) for f in IDLE_FRAMES)]
            starved = [(s, e) for s, e in machine_late if s < b and e > a]
            if probe_late and starved:
                kind, where = "cpu_starved", probe_late[0][2]
            elif probe_late:
                kind, where = "gil_held_elsewhere", probe_late[0][2]
            elif busy:
                kind, where = "qt_thread_busy", {"MainThread": collections.Counter(tuple(s) for s in busy).most_common(1)[0][0]}
            else:
                kind, where = "qt_thread_starved", {"MainThread": main[len(main) // 2] if main else []}
            stalls.append({"at_s": round(float(a - ticks[0]), 2), "stall_ms": round(float(b - a - self.period) * 1000, 1),
                           "kind": kind, "stacks": {k: list(v)[:6] for k, v in where.items()}})
        stalls.sort(key=lambda s: -s["stall_ms"])
        kinds = collections.Counter(s["kind"] for s in stalls)
        return {"timer_period_ms": self.period * 1000, "ticks": int(len(ticks)),
                "longest_stall_ms": round(max(0.0, float(gaps.max()) - self.period) * 1000, 1),
                "p99_gap_ms": round(float(np.percentile(gaps, 99)) * 1000, 1),
                "p99_stall_ms": round(max(0.0, float(np.percentile(gaps, 99)) - self.period) * 1000, 1),
                "gaps_over_100ms": int((gaps > 0.1).sum()),
                "other_process_probe_late_over_30ms": len(machine_late),
                f"stalls_over_{int(self.report * 1000)}ms_by_kind": dict(kinds),
                "worst_stalls": stalls[:6]}
