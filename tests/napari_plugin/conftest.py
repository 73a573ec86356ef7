"""Fixtures for the napari plugin tests: a docked annotator and small images.

Every test here drives napari through its viewer and layers, so it needs Qt and a display
(Xvfb in CI); without napari the whole folder is skipped.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

pytestmark = pytest.mark.gui

# torchvision (via segment-anything) pulls in triton, whose LLVM must load before Mesa's OpenGL
# (napari's canvas); importing it here, before any viewer, is what `marsam gui` does too.
import segment_anything  # noqa: E402,F401


def bright_square(size: int = 160, lo: int = 40, hi: int = 60) -> np.ndarray:
    """A dark noisy image with a bright square at rows/cols lo*.. : GrabCut finds it exactly."""
    rng = np.random.default_rng(0)
    img = rng.integers(10, 40, (size, size)).astype(np.uint8)
    img[lo:lo + hi, lo:lo + hi] = rng.integers(200, 240, (hi, hi))
    return img


@pytest.fixture
def notes(monkeypatch):
    """Every napari notification the plugin shows, as (level, message)."""
    import napari.utils.notifications as nn
    seen = []
    for level in ("show_error", "show_warning", "show_info"):
        monkeypatch.setattr(nn, level, lambda msg, _l=level: seen.append((_l, str(msg))))
    return seen


@pytest.fixture
def annotator(make_napari_viewer, tmp_path):
    """(viewer, widget) with the annotator docked and a session folder in tmp_path."""
    from napari_plugin.annotator.widget import AnnotatorWidget
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.session_dir.value = tmp_path / "session"
    return viewer, widget


@pytest.fixture
def wait_idle(qtbot):
    """wait_idle(widget): block (running the Qt loop) until the annotator has finished its work."""
    def wait(widget, timeout=30000):
        qtbot.waitUntil(lambda: widget.idle, timeout=timeout)
    return wait


@pytest.fixture
def square():
    return bright_square
