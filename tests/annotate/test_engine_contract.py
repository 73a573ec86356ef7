"""The PromptEngine contract, run for every engine (SAM on the tiny random-weight SAM, GrabCut).

One suite, many engines (as segmentation_models.pytorch's BaseModelTester runs every model): a
new engine is added to ENGINES and must pass the same cases. What the contract says, and the
bad inputs it tries:

- ``segment`` before ``set_image`` is a MarsamError that says to call ``set_image``;
- one mask per prompt, boolean, image-sized, in prompt order; no prompt gives no mask;
- a mask never leaves its box (SAM clips, GrabCut works inside the box);
- a zero-area box gives an empty mask and a warning, not an error; a box reaching past the
  image is clipped to it;
- grey, RGB, RGBA, uint16 and float images are accepted;
- ``segment_crops`` (the windows the annotator keeps) equals ``segment``;
- ``label_image`` with no prompt is all unlabelled and does no work.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from annotate import BoxPrompt, GrabCutEngine, SamEngine, label_image
from segmodels.errors import MarsamError

ENGINES = {"sam": lambda tiny_sam: SamEngine(tiny_sam), "grabcut": lambda tiny_sam: GrabCutEngine()}


@pytest.fixture(params=sorted(ENGINES))
def engine(request, tiny_sam):
    return ENGINES[request.param](tiny_sam)


@pytest.fixture(scope="module")
def scene():
    img = np.full((120, 160, 3), 40, np.uint8)
    yy, xx = np.mgrid[:120, :160]
    img[(xx - 60) ** 2 + (yy - 60) ** 2 <= 25 ** 2] = 210
    img[20:50, 110:150] = 150
    rng = np.random.default_rng(0)
    return np.clip(img.astype(int) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


PROMPTS = [BoxPrompt((30, 30, 90, 90), 1), BoxPrompt((105, 15, 155, 55), 2, positive_points=[(130, 35)]),
           BoxPrompt((0, 0, 160, 120), 0)]


def test_segment_needs_an_image(engine):
    with pytest.raises(MarsamError, match="set_image"):
        engine.segment(PROMPTS)


def test_one_boolean_image_sized_mask_per_prompt_inside_its_box(engine, scene):
    engine.set_image(scene)
    masks = engine.segment(PROMPTS)
    assert len(masks) == len(PROMPTS) and engine.segment([]) == []
    for m, p in zip(masks, PROMPTS):
        assert m.dtype == bool and m.shape == scene.shape[:2]
        x0, y0, x1, y1 = (int(round(v)) for v in p.box)
        outside = m.copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any(), f"{engine.name}: mask leaves box {p.box}"
    crops = engine.segment_crops(PROMPTS)
    assert all((c.full() == m).all() for c, m in zip(crops, masks))


def test_degenerate_and_oversized_boxes(engine, scene, caplog):
    engine.set_image(scene)
    with caplog.at_level(logging.WARNING):
        empty, clipped = engine.segment([BoxPrompt((50, 50, 50, 80), 1), BoxPrompt((100, 60, 400, 400), 2)])
    assert not empty.any() and "zero area" in caplog.text
    assert clipped.shape == scene.shape[:2]


@pytest.mark.parametrize("variant", ["grey", "rgba", "uint16", "float"])
def test_image_kinds(engine, scene, variant):
    img = {"grey": scene[:, :, 0], "rgba": np.dstack([scene, np.full(scene.shape[:2], 255, np.uint8)]),
           "uint16": scene[:, :, 0].astype(np.uint16) * 257, "float": scene.astype(np.float32) / 255}[variant]
    engine.set_image(img)
    (m,) = engine.segment(PROMPTS[:1])
    assert m.shape == scene.shape[:2]


def test_label_image_without_prompts_is_unlabelled(engine, scene):
    lm = label_image(engine, scene, [], ignore_index=255)
    assert lm.dtype == np.uint8 and (lm == 255).all()
    lm = label_image(engine, scene, PROMPTS)
    assert lm.shape == scene.shape[:2] and set(np.unique(lm)) <= {0, 1, 2, 255}
