"""The annotator's rules without Qt: which boxes need masks, merging, undo, clipping."""
from __future__ import annotations

import numpy as np
import pytest

from napari_plugin.annotator.controller import AnnotatorController, Box, clip_box
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS


def _mask(box, shape=(50, 50)):
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    m[y0:y1, x0:x1] = True
    return m


def _fill(c: AnnotatorController):
    todo = c.missing()
    c.add_masks(todo, [_mask(b.box) for b in todo])
    return len(todo)


def test_only_new_geometry_needs_a_mask_and_class_changes_repaint():
    c = AnnotatorController(AI4MARS, (50, 50))
    a, b = Box((0, 0, 20, 20), 0), Box((10, 10, 30, 30), 3)
    assert c.update([a]) == [a] and _fill(c) == 1
    assert c.update([a, b]) == [b] and _fill(c) == 1
    lm = c.render()
    assert lm[5, 5] == 0 and lm[15, 15] == 3 and lm[40, 40] == 255   # smaller (later) box on top
    assert c.update([Box(a.box, 2), b]) == []                         # new class: no new mask
    assert c.render()[5, 5] == 2
    assert c.update([b]) == [] and c.render()[5, 5] == 255            # deleted: pixels gone


def test_undo_restores_the_previous_boxes_without_segmenting_again():
    c = AnnotatorController(AI4MARS, (50, 50))
    a = Box((0, 0, 20, 20), 1)
    c.update([a]); _fill(c)
    c.update([])
    assert c.undo() == [a] and c.missing() == [] and c.render()[5, 5] == 1
    c.undo()
    with pytest.raises(MarsamError, match="nothing to undo"):
        c.undo()


def test_points_are_part_of_what_a_mask_depends_on():
    a = Box((0, 0, 20, 20), 1)
    refined = Box(a.box, 1, negative=((5.0, 5.0),))
    c = AnnotatorController(AI4MARS, (50, 50))
    c.update([a]); _fill(c)
    assert c.update([refined]) == [refined]
    assert refined.prompt().negative_points == [(5.0, 5.0)]


def test_boxes_are_clipped_and_boxes_outside_the_image_are_refused():
    assert clip_box((40, 45, -5, 10), (50, 50)) == (0.0, 10.0, 40.0, 45.0)  # dragged up-left
    with pytest.raises(MarsamError, match="outside"):
        clip_box((60, 60, 90, 90), (50, 50))


def test_a_saved_label_map_is_shown_as_saved():
    c = AnnotatorController(AI4MARS, (50, 50))
    saved = np.full((50, 50), 255, np.uint8)
    saved[:10, :10] = 1
    c.load([Box((0, 0, 10, 10), 1).prompt()], saved)
    np.testing.assert_array_equal(c.label_map, saved)
    with pytest.raises(MarsamError):
        c.load([], np.full((50, 50), 9, np.uint8))                    # class 9 is not in AI4Mars


def test_incremental_render_equals_a_full_merge_and_names_the_changed_region():
    """Random add / delete / re-class / undo sequences: the incrementally merged label map is
    annotate's merge_masks of all current masks, and pixels outside ``dirty`` never change."""
    from hypothesis import given, settings, strategies as st
    from annotate.engines import merge_masks

    shape = (40, 60)
    box = st.tuples(st.integers(0, 55), st.integers(0, 35), st.integers(1, 30), st.integers(1, 30),
                    st.integers(0, 3))
    edit = st.one_of(st.tuples(st.just("add"), box), st.tuples(st.just("del"), st.integers(0, 9)),
                     st.tuples(st.just("cls"), st.integers(0, 9), st.integers(0, 3)),
                     st.tuples(st.just("undo")))

    def blob(b):                       # a non-rectangular mask inside its box (rounded corners)
        x, y, w, h, _ = b
        m = np.zeros(shape, bool)
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        cx, cy = x + w / 2, y + h / 2
        m[((xx - cx) / max(w / 2, 0.5)) ** 2 + ((yy - cy) / max(h / 2, 0.5)) ** 2 <= 1.2] = True
        return m

    @settings(max_examples=60, deadline=None)
    @given(st.lists(edit, min_size=1, max_size=14))
    def check(edits):
        c = AnnotatorController(AI4MARS, shape)
        for e in edits:
            boxes = list(c.boxes)
            if e[0] == "add":
                x, y, w, h, k = e[1]
                boxes.append(Box((float(x), float(y), float(min(x + w, 60)), float(min(y + h, 40))), k))
            elif e[0] == "del" and boxes:
                boxes.pop(e[1] % len(boxes))
            elif e[0] == "cls" and boxes:
                i = e[1] % len(boxes)
                boxes[i] = Box(boxes[i].box, e[2])
            elif e[0] == "undo" and c.can_undo:
                c.undo()
                boxes = None
            if boxes is not None:
                c.update(boxes)
            todo = c.missing()
            c.add_masks(todo, [blob((*b.box[:2], b.box[2] - b.box[0], b.box[3] - b.box[1], 0)) for b in todo])
            before = c.label_map.copy()
            lm = c.render().copy()
            want = merge_masks([c.mask(b) for b in c.boxes], [b.class_id for b in c.boxes], shape,
                               ignore_index=255) if c.boxes else np.full(shape, 255, np.uint8)
            np.testing.assert_array_equal(lm, want)
            outside = np.ones(shape, bool)
            if c.dirty is not None:
                y0, y1, x0, x1 = c.dirty
                outside[y0:y1, x0:x1] = False
            np.testing.assert_array_equal(lm[outside], before[outside])

    check()
