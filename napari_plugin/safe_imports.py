"""Importing torchvision inside napari without crashing the process.

torchvision imports ``torch._dynamo``, which imports triton when it is installed. Triton's
bundled LLVM crashes the process (segmentation fault) when it is loaded after an OpenGL context
of Mesa (llvmpipe, radeonsi: Mesa's own LLVM) exists, which is the case once napari shows a
canvas. Seen with torch 2.14 / triton / Mesa llvmpipe under Xvfb.

So: ``marsam gui`` and the tests import segment-anything (hence torchvision) before napari
starts. When a widget is opened from a napari that is already running and torchvision was never
imported, :func:`import_torchvision_safely` hides triton from torch first (marsam runs models
eagerly and never compiles kernels), so torch takes its no-triton path. Every widget of this
plugin that may import torchvision calls it on the main thread before its first worker.
"""
from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def _qt_running() -> bool:
    qt = sys.modules.get("qtpy.QtWidgets")
    return qt is not None and qt.QApplication.instance() is not None


def import_torchvision_safely() -> None:
    if "torchvision" in sys.modules:
        return
    if "triton" not in sys.modules and _qt_running():
        log.info("hiding triton from torch: its LLVM conflicts with the OpenGL driver's")
        sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError
    import torchvision  # noqa: F401
