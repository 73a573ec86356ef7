"""SAM and GrabCut prompt engines, the merge rule and the fallback when no checkpoint exists."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from annotate import BoxPrompt, GrabCutEngine, SamEngine, label_image, make_engine, merge_masks
from segmodels.errors import MarsamError


@pytest.fixture(scope="module")
def sam_engine(tiny_sam):
    img = np.random.default_rng(3).integers(0, 255, (200, 240, 3), dtype=np.uint8)
    engine = SamEngine(tiny_sam, clip_to_box=False)
    engine.set_image(img)
    return engine, img


BOXES = [BoxPrompt((20, 30, 120, 150), 0), BoxPrompt((50, 60, 90, 100), 3), BoxPrompt((150, 20, 230, 190), 1)]


def test_batched_decoding_matches_segment_anything_predictor(sam_engine, tiny_sam):
    """Our one-batch decode equals SamPredictor.predict box by box (best-IoU mask of 3)."""
    from segment_anything import SamPredictor
    engine, img = sam_engine
    masks = engine.segment(BOXES)
    assert len(masks) == 3 and all(m.shape == (200, 240) and m.dtype == bool for m in masks)
    predictor = SamPredictor(tiny_sam.sam)
    tile = engine.embedding.tiles[0]
    predictor.features, predictor.is_image_set = tile.embedding, True
    predictor.original_size, predictor.input_size = (200, 240), tile.input_size
    for p, ours in zip(BOXES, masks):
        ref, scores, _ = predictor.predict(box=np.array(p.box), multimask_output=True)
        theirs = ref[int(np.argmax(scores))]
        assert (ours != theirs).mean() < 1e-3


def test_batch_equals_one_at_a_time_and_points_refine(sam_engine):
    engine, _ = sam_engine
    refined = BoxPrompt((20, 30, 120, 150), 0, positive_points=[(70, 90)], negative_points=[(25, 35)])
    together = engine.segment(BOXES + [refined])
    for i, p in ((1, BOXES[1]), (3, refined)):
        assert (together[i] != engine.segment([p])[0]).mean() < 1e-3
    assert (together[3] != together[0]).any(), "points must change the box's mask"


def test_multimask_choices(sam_engine, tiny_sam):
    engine, _ = sam_engine
    outs = {}
    for mode in ("best", "single", 0, 1, 2):
        e = SamEngine(tiny_sam, multimask=mode, clip_to_box=False)
        e.set_embedding(engine.embedding)
        outs[mode] = e.segment(BOXES[:1])[0]
    assert any((outs[k] != outs["best"]).any() for k in ("single", 0, 1, 2))
    with pytest.raises(MarsamError, match="multimask"):
        SamEngine(tiny_sam, multimask="all")


def test_sam_masks_stay_in_their_box_and_bad_boxes_are_skipped(sam_engine, tiny_sam, caplog):
    engine, img = sam_engine
    e = SamEngine(tiny_sam)
    e.set_embedding(engine.embedding)
    with caplog.at_level(logging.WARNING):
        masks = e.segment([BoxPrompt((20, 30, 120, 150), 0), BoxPrompt((50, 50, 50, 80), 1),
                           BoxPrompt((200, 150, 400, 400), 2)])
    assert not masks[0][:30].any() and not masks[0][:, 120:].any()
    assert not masks[1].any() and "zero area" in caplog.text
    assert masks[2].shape == (200, 240)  # clipped to the image, not an error
    with pytest.raises(MarsamError, match="set_image"):
        SamEngine(tiny_sam).segment(BOXES)


def test_tiled_image_answers_from_the_right_tile(tiny_sam):
    """A box in the right-hand tile of a 700 x 1300 image gets the mask SAM gives on that tile alone."""
    img = np.random.default_rng(4).integers(0, 255, (700, 1300, 3), dtype=np.uint8)
    box = BoxPrompt((1100, 200, 1250, 400), 1)
    e = SamEngine(tiny_sam, clip_to_box=False)
    e.set_image(img)
    assert len(e.embedding.tiles) == 2
    full = e.segment([box])[0]
    crop = SamEngine(tiny_sam, clip_to_box=False)
    crop.set_image(np.ascontiguousarray(img[:, 276:]))
    alone = crop.segment([BoxPrompt((1100 - 276, 200, 1250 - 276, 400), 1)])[0]
    assert (full[:, 276:] != alone).mean() < 1e-3
    assert not full[:, :276].any()


def test_merge_rule_smaller_masks_win():
    soil = np.zeros((10, 10), bool)
    soil[1:9, 1:9] = True
    rock = np.zeros((10, 10), bool)
    rock[3:5, 3:5] = True
    for order in ((soil, 0, rock, 3), (rock, 3, soil, 0)):  # regardless of prompt order
        lm = merge_masks([order[0], order[2]], [order[1], order[3]], (10, 10))
        assert lm.dtype == np.uint8
        assert (lm[3:5, 3:5] == 3).all() and lm[1, 1] == 0 and lm[0, 0] == 255
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert merge_masks([a, b], [1, 2], (4, 4))[1, 0] == 2  # equal areas: the later prompt wins
    with pytest.raises(MarsamError, match="class"):
        merge_masks([a], [1, 2], (4, 4))
    with pytest.raises(MarsamError, match="shape"):
        merge_masks([a], [1], (5, 5))


def test_grabcut_finds_a_bright_disk(disk_image):
    img, disk = disk_image
    engine = GrabCutEngine()
    engine.set_image(img)
    (mask,) = engine.segment([BoxPrompt((45, 55, 115, 125), 2)])
    iou = (mask & disk).sum() / (mask | disk).sum()
    assert iou > 0.8
    # points mark definite foreground / background
    (pts,) = engine.segment([BoxPrompt((45, 55, 115, 125), 2, positive_points=[(80, 90)],
                                       negative_points=[(80, 60)])])
    assert pts[90, 80] and not pts[60, 80]


def test_grabcut_degenerate_boxes(disk_image, caplog):
    img, _ = disk_image
    lm = label_image(GrabCutEngine(), img, [BoxPrompt((0, 0, 240, 200), 0), BoxPrompt((10, 10, 10, 40), 1)])
    assert lm.shape == (200, 240)
    assert (lm != 255).any()  # the whole-image box still yields a label
    flat = np.zeros((50, 50), np.uint8)  # a flat grey image has no colour model: whole box
    (m,) = (e := GrabCutEngine()).set_image(flat) or e.segment([BoxPrompt((0, 0, 50, 50), 0)])
    assert m.all()


def test_label_image_on_16bit_and_rgba(disk_image):
    img, disk = disk_image
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    grey16 = img[:, :, 0].astype(np.uint16) * 257
    for variant in (rgba, grey16, img.astype(np.float32) / 255):
        lm = label_image(GrabCutEngine(), variant, [BoxPrompt((45, 55, 115, 125), 2)])
        assert ((lm == 2) & disk).sum() > 0.7 * disk.sum()


def test_make_engine(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    monkeypatch.setenv("MARSAM_OFFLINE", "1")
    with caplog.at_level(logging.WARNING):
        engine = make_engine("sam")
    assert isinstance(engine, GrabCutEngine) and engine.name == "grabcut"
    assert "GrabCut" in caplog.text and "no SAM checkpoint" in caplog.text
    assert isinstance(make_engine("grabcut"), GrabCutEngine)
    with pytest.raises(MarsamError, match="does not exist"):
        make_engine("sam", checkpoint=tmp_path / "nope.pth")  # named weights stay an error
    with pytest.raises(MarsamError, match="unknown engine"):
        make_engine("mask-rcnn")


def test_sam_without_weights_falls_back_to_grabcut_only_when_none_were_named(tmp_path, monkeypatch):
    """The fallback is decided by the error's type (WeightsUnavailable), not by its text."""
    from annotate.engines import make_engine
    from annotate.sam_loading import find_checkpoint
    from segmodels.errors import WeightsUnavailable
    monkeypatch.setenv("MARSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MARSAM_OFFLINE", "1")
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    with pytest.raises(WeightsUnavailable):
        find_checkpoint("vit_b")
    engine = make_engine("sam", "vit_b")
    assert isinstance(engine, GrabCutEngine) and "no SAM vit_b checkpoint" in engine.fallback_reason
    with pytest.raises(MarsamError, match="does not exist") as e:   # named weights that are missing: an error
        make_engine("sam", "vit_b", checkpoint=tmp_path / "missing.pth")
    assert not isinstance(e.value, WeightsUnavailable)
