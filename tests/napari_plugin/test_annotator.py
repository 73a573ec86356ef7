"""The annotator driven as a user would: through the viewer's layers and the widget's controls."""
from __future__ import annotations

import numpy as np
import pytest

from segmodels.labels import AI4MARS


pytestmark = pytest.mark.gui

SQUARE = np.array([[30, 30], [110, 110]])      # (row, col) corners around the bright square 40..100


@pytest.fixture
def open_layer(wait_idle, square):
    """open_layer(viewer, widget, image=None): label an Image layer with GrabCut."""
    def run(viewer, widget, image=None, name="square"):
        return _label_layer_image(viewer, widget, wait_idle, square() if image is None else image, name)
    return run


def _label_layer_image(viewer, widget, wait_idle, image, name):
    from annotate.engines import GrabCutEngine
    layer = viewer.add_image(image, name=name)
    widget.use_engine(GrabCutEngine())
    widget.use_layer(layer)
    wait_idle(widget)
    return layer


def test_box_paints_its_class_and_deleting_it_removes_the_pixels(annotator, qtbot, wait_idle, open_layer):
    viewer, w = annotator
    open_layer(viewer, w)
    w.choose_class(AI4MARS.class_id("sand"))
    w.shapes.add_rectangles(SQUARE)
    wait_idle(w)
    labels = np.asarray(w.labels_layer.data)
    inside = labels[40:100, 40:100]
    assert (inside == 2).mean() > 0.9                       # the square is sand
    assert (np.delete(labels, np.s_[30:111], axis=0) == 255).all()  # nothing outside the box
    assert w.shapes.features["class_id"].tolist() == [2]
    saved = w.state.session.label_map(w.state.image.key)    # autosaved after the change
    np.testing.assert_array_equal(saved, labels)

    w.shapes.selected_data = {0}
    w.shapes.remove_selected()
    wait_idle(w)
    assert (np.asarray(w.labels_layer.data) == 255).all()
    assert w.state.session.prompts(w.state.image.key) == []

    w.undo()                                                # the box and its pixels come back
    wait_idle(w)
    assert len(w.shapes.data) == 1
    np.testing.assert_array_equal(np.asarray(w.labels_layer.data), labels)


def test_moving_a_box_resegments_and_class_change_repaints(annotator, qtbot, wait_idle, open_layer, square):
    viewer, w = annotator
    img = square(size=200)
    img[130:180, 130:180] = 220                              # a second bright square
    open_layer(viewer, w, img)
    w.shapes.add_rectangles(SQUARE)
    wait_idle(w)
    assert (np.asarray(w.labels_layer.data)[40:100, 40:100] == 0).mean() > 0.9
    w.shapes.data = [np.array([[120, 120], [120, 190], [190, 190], [190, 120]], float)]  # moved
    wait_idle(w)
    labels = np.asarray(w.labels_layer.data)
    assert (labels[40:100, 40:100] == 255).all() and (labels[135:175, 135:175] == 0).mean() > 0.9
    w.shapes.selected_data = {0}
    w.choose_class(AI4MARS.class_id("big_rock"))             # recolours the selected box
    wait_idle(w)
    assert (np.asarray(w.labels_layer.data)[135:175, 135:175] == 3).mean() > 0.9


def test_a_new_box_repaints_only_its_region_and_is_saved_off_the_qt_thread(annotator, qtbot, wait_idle,
                                                                          open_layer, square, monkeypatch):
    import threading
    from napari_plugin.annotator import project
    viewer, w = annotator
    img = square(size=200)
    img[130:180, 130:180] = 220
    open_layer(viewer, w, img)
    w.shapes.add_rectangles(SQUARE)
    wait_idle(w)
    threads, updates = [], []
    original = project.save_snapshot
    monkeypatch.setattr(w.autosaver, "_write",
                        lambda *a: (threads.append(threading.current_thread()), original(*a)))
    w.labels_layer.events.labels_update.connect(lambda e: updates.append((e.offset, e.data.shape)))
    before = np.asarray(w.labels_layer.data).copy()
    w.shapes.add_rectangles(np.array([[125, 125], [185, 185]]))
    wait_idle(w)
    after = np.asarray(w.labels_layer.data)
    assert (after[135:175, 135:175] == 0).mean() > 0.9
    np.testing.assert_array_equal(after[:120], before[:120])     # the first box's pixels untouched
    y0, y1, x0, x1 = w.controller.dirty
    assert y0 >= 125 and x0 >= 125 and y1 <= 186 and x1 <= 186   # merged and repainted there only
    assert updates and all(off[0] >= 125 and off[1] >= 125 for off, _ in updates)
    assert threads and all(t is not threading.main_thread() for t in threads)
    np.testing.assert_array_equal(w.state.session.label_map(w.state.image.key), after)


def test_a_negative_point_refines_the_box_it_lies_in(annotator, qtbot, wait_idle, open_layer):
    viewer, w = annotator
    open_layer(viewer, w)
    w.shapes.add_rectangles(SQUARE)
    wait_idle(w)
    assert w.labels_layer.data[70, 70] == 0
    w.toggle_polarity()
    assert w.polarity.value == "negative"
    w.points.add([[70, 70]])
    wait_idle(w)
    prompts = w.state.session.prompts(w.state.image.key)
    assert prompts[0].negative_points == [(70.0, 70.0)] and prompts[0].positive_points == []
    assert w.labels_layer.data[70, 70] == 255                      # GrabCut keeps a negative point out


def test_mistakes_become_notifications(annotator, qtbot, wait_idle, open_layer, notes):
    viewer, w = annotator
    w.save()                                                 # nothing open yet
    w.next_image()                                           # no folder
    assert [lvl for lvl, _ in notes] == ["show_error", "show_error"]
    assert "nothing to save" in notes[0][1] and "no folder" in notes[1][1]
    notes.clear()
    open_layer(viewer, w)
    w.shapes.add_rectangles(np.array([[500, 500], [600, 600]]))   # outside the 160 px image
    wait_idle(w)
    assert len(w.shapes.data) == 0
    assert any(lvl == "show_warning" and "outside the image" in m for lvl, m in notes)
    w.points.add([[5, 5]])                                   # a point in no box
    assert len(w.points.data) == 0
    assert any("inside a box" in m for _, m in notes)


def test_a_sam_checkpoint_that_is_missing_is_a_notification(annotator, qtbot, wait_idle, open_layer, notes, tmp_path):
    from napari_plugin.state import EngineConfig
    viewer, w = annotator
    w.load_engine(EngineConfig("vit_b", str(tmp_path / "missing.pth")))
    qtbot.waitUntil(lambda: not w._loading_engine, timeout=20000)
    assert w.runner is None
    assert notes and notes[-1][0] == "show_error" and "missing.pth" in notes[-1][1]


def test_shortcuts_are_bound_on_the_viewer_and_listed(annotator, wait_idle, open_layer):
    from app_model.types import KeyBinding
    viewer, w = annotator
    open_layer(viewer, w)
    press = {str(k): f for k, f in viewer.keymap.items()}
    press[str(KeyBinding.from_str("Alt-3"))](viewer)
    assert w.class_picker.value == 2
    press[str(KeyBinding.from_str("Alt-P"))](viewer)
    assert w.polarity.value == "negative"
    w.shapes.add_rectangles(SQUARE)
    wait_idle(w)
    press[str(KeyBinding.from_str("Alt-Z"))](viewer)          # undo the box
    wait_idle(w)
    assert len(w.shapes.data) == 0 and (np.asarray(w.labels_layer.data) == 255).all()
    for key in ("Alt-1", "Alt-Right", "Alt-Left", "Alt-S", "Alt-Z"):
        assert key in w.shortcuts.value


def test_grabcut_fallback_is_said_on_the_box_and_in_the_status(annotator, wait_idle, open_layer):
    """A box on featureless noise: GrabCut finds no object and fills the box; the user is told."""
    viewer, w = annotator
    noise = np.random.default_rng(1).integers(100, 110, (160, 160)).astype(np.uint8)
    open_layer(viewer, w, image=noise, name="noise")
    w.shapes.add_rectangles(np.array([[20, 20], [60, 70]]))          # a fallback box
    w.shapes.add_rectangles(np.array([[90, 90], [140, 150]]))
    wait_idle(w)
    notes = list(w.shapes.features["note"])
    assert all(n.startswith("filled box (GrabCut: ") for n in notes), notes
    assert "GrabCut could not segment" in w.status.value and "2 box(es)" in w.status.value


def test_default_class_is_the_first_object_and_complete_is_toggled(annotator, wait_idle, open_layer):
    from segmodels.labels import HIRISE_PITS
    viewer, w = annotator
    assert w.class_picker.value == 0 and not w.complete.enabled          # AI4Mars: terrain, no background
    w.state.set_label_spec(HIRISE_PITS)
    assert w.class_picker.value == HIRISE_PITS.class_id("pit") and w.complete.enabled
    open_layer(viewer, w)
    w.shapes.add_rectangles(SQUARE)
    wait_idle(w)
    session, key = w.state.session, w.state.image.key
    assert (np.asarray(w.labels_layer.data) == 1).any()                   # the first box paints a pit
    assert not session.is_complete(key) and (session.label_map(key) == 255).any()
    w.complete.value = True                                               # the user ticks the box
    assert session.is_complete(key) and not (session.label_map(key) == 255).any()
    assert "complete" in w.status.value
    w.complete.value = False
    assert not session.is_complete(key)
