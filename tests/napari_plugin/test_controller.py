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
