"""A real HiRISE crop labelled through the widget, and a screenshot of the docked annotator.

The screenshot is a test artefact: it goes to $MARSAM_SCREENSHOT_DIR when set (the README's
docs/images/annotator.png is made that way), else to the test's temporary folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_hirise_pits_labelled_from_their_expert_boxes(make_napari_viewer, hirise_dir, tmp_path, wait_idle):
    from annotate.boxfiles import read_boxes
    from annotate.engines import GrabCutEngine
    from napari_plugin.annotator.layers import box_vertices
    from napari_plugin.annotator.widget import AnnotatorWidget
    from segmodels.atomic import atomic_write_png
    from segmodels.labels import HIRISE_PITS

    images = hirise_dir / "test" / "images"
    boxes = read_boxes(hirise_dir / "test" / "labels", "yolo", images, label_spec=HIRISE_PITS)
    name = max(sorted(boxes), key=lambda k: len(boxes[k]))          # the crop with the most pits

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    w = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(w, area="right", name="marsam annotator")
    w.state.set_label_spec(HIRISE_PITS)
    w.session_dir.value = tmp_path / "session"
    w.use_engine(GrabCutEngine())
    w.open_folder(images)
    w.go_to([p.name for p in w.state.image_paths].index(Path(name).name))
    wait_idle(w)
    w.choose_class(HIRISE_PITS.class_id("pit"))
    for p in boxes[name]:
        w.shapes.add_rectangles(box_vertices(p.box))
        wait_idle(w)
    labels = np.asarray(w.labels_layer.data)
    assert len(w.shapes.data) == len(boxes[name]) >= 3
    for p in boxes[name]:                                            # every pit box got pit pixels
        x0, y0, x1, y1 = (int(round(v)) for v in p.box)
        assert (labels[y0:y1, x0:x1] == 1).any()
    assert w.state.session.status(w.state.image.key) == "done"

    w.shapes.selected_data = set()
    w.polarity.value = "positive"
    viewer.layers.selection.active = w.shapes
    viewer.reset_view()
    scroll = getattr(w.native, "verticalScrollBar", None)     # show the dock from its top
    if scroll is not None:
        scroll().setValue(0)
    out = Path(os.environ.get("MARSAM_SCREENSHOT_DIR", tmp_path))
    shot = viewer.screenshot(canvas_only=False, flash=False)
    atomic_write_png(out / "annotator.png", np.asarray(shot)[:, :, :3])
    assert shot.shape[0] > 500 and shot[..., :3].std() > 10
