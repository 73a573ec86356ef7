"""GrabCut engine on grey textured terrain, its fallback guard, points and colour images."""
from __future__ import annotations

import numpy as np
import pytest

from annotate import BoxPrompt, GrabCutEngine
from annotate.grabcut import feature_image, is_grey
from segmodels.errors import MarsamError

H, W = 160, 180
CX, CY, R = 90, 80, 38
BOX = (CX - R, CY - R, CX + R + 1, CY + R + 1)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def textured_disk():
    """Grey image: a rough disk (strong texture) on smooth ground of the same mean brightness."""
    import cv2
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:H, :W]
    disk = (xx - CX) ** 2 + (yy - CY) ** 2 <= R ** 2
    ground = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 4)
    ground = 120 + 6 * ground / ground.std()
    rough = 120 + 45 * rng.normal(0, 1, (H, W))
    img = np.clip(np.where(disk, rough, ground), 0, 255).astype(np.uint8)
    return img, disk


def test_grey_textured_disk_is_found(textured_disk):
    img, disk = textured_disk
    engine = GrabCutEngine()
    engine.set_image(np.dstack([img] * 3))
    (mask,) = engine.segment([BoxPrompt(BOX, 1)])
    assert engine.last_fallbacks == [None]  # GrabCut itself found it, no shape prior
    assert _iou(mask, disk) > 0.8
    assert not mask[:, :BOX[0]].any() and not mask[BOX[3]:].any()  # nothing outside the box


def test_flat_image_falls_back_and_records_it():
    flat = np.full((120, 120), 90, np.uint8)
    engine = GrabCutEngine(fallback="ellipse")
    engine.set_image(flat)
    masks = engine.segment([BoxPrompt((30, 40, 90, 80), 0), BoxPrompt((0, 0, 120, 120), 1)])
    assert all(m.any() for m in masks)
    # GrabCut grows nothing beyond its centre core -> the ellipse; no background at all -> the whole box
    assert engine.last_fallbacks == ["tiny", "no-background"]
    assert engine.fallback_counts == {"tiny": 1, "no-background": 1}
    inner = masks[0]
    assert not inner[:40].any() and not inner[:, :30].any() and inner[60, 60]
    assert not inner[40, 30] and 0.7 * 60 * 40 < inner.sum() < 0.85 * 60 * 40  # ellipse: pi/4 of the box
    assert masks[1].all()
    (m,) = engine.segment([BoxPrompt((30, 40, 90, 80), 0)])
    assert engine.last_fallbacks == ["tiny"] and engine.fallback_counts["tiny"] == 2  # per call / cumulative


def test_points_refine_the_mask(textured_disk):
    img, disk = textured_disk
    engine = GrabCutEngine()
    engine.set_image(img)
    neg = (CX, CY - R + 8)  # a negative click on the disk's top edge
    (m,) = engine.segment([BoxPrompt(BOX, 1, positive_points=[(CX + 20, CY + 10)], negative_points=[neg])])
    assert m[CY + 10, CX + 20] and not m[neg[1], neg[0]]
    assert _iou(m, disk) > 0.7


def test_colour_image_keeps_rgb_and_separates_by_colour():
    """A reddish disk on a bluish ground of equal grey level: only colour separates them."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:H, :W]
    disk = (xx - CX) ** 2 + (yy - CY) ** 2 <= R ** 2
    img = np.where(disk[..., None], np.array([170, 100, 80]), np.array([90, 110, 150])).astype(float)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    assert not is_grey(img)
    engine = GrabCutEngine()
    engine.set_image(img)
    (m,) = engine.segment([BoxPrompt(BOX, 1)])
    assert engine.last_fallbacks == [None] and _iou(m, disk) > 0.85


def test_feature_image_channels():
    rng = np.random.default_rng(3)
    crop = np.dstack([rng.integers(0, 255, (40, 50), dtype=np.uint8)] * 3)
    f = feature_image(crop)
    assert f.shape == (40, 50, 3) and f.dtype == np.uint8
    assert is_grey(crop)
    flat = feature_image(np.full((20, 20, 3), 7, np.uint8))
    assert not flat.any()  # a flat crop has no contrast to stretch


def test_mask_far_short_of_a_loose_box_side_falls_back(textured_disk):
    """A box twice the disk's width: the disk spans half of it, so the box is not tight around it."""
    img, disk = textured_disk
    loose = (BOX[0], BOX[1], min(W, BOX[2] + 2 * R), BOX[3])
    engine = GrabCutEngine()
    engine.set_image(img)
    (m,) = engine.segment([BoxPrompt(loose, 1)])
    assert engine.last_fallbacks == ["short"] and m[BOX[1]:BOX[3], loose[0]:loose[2]].all()
    engine.min_extent = 0.0  # loose boxes: trust GrabCut's mask
    (m,) = engine.segment([BoxPrompt(loose, 1)])
    assert engine.last_fallbacks == [None] and _iou(m, disk) > 0.8


@pytest.mark.parametrize("kwargs, match", [({"features": "hsv"}, "features"), ({"core": 1.5}, "core"),
                                           ({"min_fraction": -0.1}, "min_fraction"), ({"min_extent": 2}, "min_extent"),
                                           ({"fallback": "circle"}, "fallback"), ({"iterations": 0}, "iteration")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(MarsamError, match=match):
        GrabCutEngine(**kwargs)
