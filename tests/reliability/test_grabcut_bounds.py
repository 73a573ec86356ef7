"""GrabCut labels depend only on the image and its prompts, and cost windows, not full masks.

Tried: the same HiRISE image labelled by a fresh engine and after two other images (the old
engine differed by up to 61,223 px); 20 boxes on a 4000 x 4000 image with numpy's peak
allocation traced (full masks per box would be 20 x 16 MB).
"""
from __future__ import annotations

import tracemalloc

import numpy as np

from annotate.boxfiles import read_boxes
from annotate.engines import GrabCutEngine, label_image
from annotate.prompts import BoxPrompt
from segmodels.images import list_images, load_image
from segmodels.labels import HIRISE_PITS


def test_label_depends_only_on_image_and_prompts(hirise_dir):
    images = list_images(hirise_dir / "valid" / "images")[7:9]   # the old engine: 4583 px differ on the 2nd
    boxes = read_boxes(hirise_dir / "valid" / "labels", "yolo", label_spec=HIRISE_PITS)
    target = images[-1]
    fresh = label_image(GrabCutEngine(), load_image(target), boxes[target.name])
    engine = GrabCutEngine()
    for p in images:  # the same engine, after another image
        out = label_image(engine, load_image(p), boxes[p.name])
    assert np.array_equal(out, fresh)


def test_many_boxes_on_a_large_image_cost_windows_only():
    rng = np.random.default_rng(0)
    side = 4000
    img = rng.integers(0, 60, (side, side), dtype=np.uint8)
    prompts = []
    for k in range(20):
        x, y = rng.integers(0, side - 200, 2)
        img[y + 40:y + 160, x + 40:x + 160] += 120
        prompts.append(BoxPrompt((x + 30, y + 30, x + 170, y + 170), class_id=1))
    engine = GrabCutEngine()
    tracemalloc.start()
    try:
        lab = label_image(engine, img, prompts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lab.shape == (side, side) and (lab == 1).sum() > 20 * 100 * 100 * 0.5
    # the label map (16 MB) plus a few crops; one full mask per box would be 20 x 16 MB
    assert peak < 3 * side * side, f"peak numpy allocation {peak / 1e6:.0f} MB"
