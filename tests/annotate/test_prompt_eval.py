"""Prompt evaluation: region prompts from ground truth, IoU matching, the evaluation loop and its CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from annotate.prompt_eval import (TINY_WEIGHTS, best_match_ious, evaluate_prompts, find_samples, format_table, iou,
                                  point_masks)
from annotate.region_prompts import interior_point, jitter_box, region_prompts
from segmodels.cli import main
from segmodels.errors import MarsamError


# --- region prompts ---------------------------------------------------------------------------

def _c_shape(h=40, w=40):
    """A thick 'C' whose centroid lies in its empty mouth: the case a centroid prompt gets wrong."""
    m = np.zeros((h, w), bool)
    m[5:35, 5:35] = True
    m[12:28, 14:35] = False
    return m


def test_regions_one_per_component_tight_boxes_and_ignore():
    lm = np.full((30, 40), 255, np.uint8)
    lm[2:12, 3:13] = 1      # class 1, component A (100 px)
    lm[15:27, 20:38] = 1    # class 1, component B (216 px)
    lm[2:8, 25:35] = 2      # class 2 (60 px)
    lm[28:30, 0:2] = 0      # 4 px sliver, below min_area
    regs = region_prompts(lm, min_area=10)
    assert [(r.class_id, r.area) for r in regs] == [(1, 216), (1, 100), (2, 60)]   # largest first
    assert regs[0].tight_box == regs[0].box == (20.0, 15.0, 38.0, 27.0)           # x0, y0, x1 (excl), y1 (excl)
    assert regs[1].box == (3.0, 2.0, 13.0, 12.0)
    for r in regs:
        assert r.mask.sum() == r.area and (lm[r.mask] == r.class_id).all()
        x, y = r.point
        assert r.mask[int(y), int(x)]
    assert len(region_prompts(lm, min_area=1)) == 4
    assert region_prompts(np.full((10, 10), 255, np.uint8)) == []


def test_interior_point_is_inside_where_the_centroid_is_not():
    m = _c_shape()
    rows, cols = np.nonzero(m)
    assert not m[int(rows.mean()), int(cols.mean())]       # the centroid misses the region
    x, y = interior_point(m)
    assert m[int(y), int(x)]
    # deepest pixel: at least as far from the edge as any other region pixel's distance to background
    from scipy import ndimage
    dist = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    assert dist[int(y), int(x)] == dist.max()
    # a region touching the image border does not get its point on the border
    border = np.zeros((20, 20), bool)
    border[:, :6] = True
    assert 2 <= interior_point(border)[0] <= 4


def test_box_prompt_conversion():
    lm = np.zeros((20, 20), np.uint8)
    lm[5:15, 5:15] = 3
    regs = region_prompts(lm, min_area=5)
    from annotate.prompts import BoxPrompt
    p = regs[1].to_box_prompt()
    assert isinstance(p, BoxPrompt) and p.class_id == 3 and p.box == (5.0, 5.0, 15.0, 15.0)


def test_jitter_is_seeded_bounded_and_never_degenerate():
    lm = np.zeros((64, 64), np.uint8)
    lm[20:40, 10:50] = 1
    a = region_prompts(lm, jitter=0.2, seed=7)
    b = region_prompts(lm, jitter=0.2, seed=7)
    c = region_prompts(lm, jitter=0.2, seed=8)
    assert [r.box for r in a] == [r.box for r in b]
    assert [r.box for r in a] != [r.box for r in c]
    assert [r.box for r in a] != [r.tight_box for r in a]
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0, x1, y1 = jitter_box((60.0, 0.0, 64.0, 3.0), 2.0, rng, (64, 64))
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and x1 - x0 >= 1 - 1e-9 and y1 - y0 >= 1 - 1e-9
    with pytest.raises(MarsamError, match="jitter"):
        jitter_box((0, 0, 5, 5), -0.1, rng, (10, 10))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4, 3), np.uint8), "2-D"),
    (np.zeros((4, 4), np.float32), "integer"),
    (np.full((4, 4), 7, np.uint8), "not classes"),
])
def test_bad_label_maps_are_refused(bad, match):
    with pytest.raises(MarsamError, match=match):
        region_prompts(bad, min_area=1, num_classes=4)


def test_min_area_must_be_positive():
    with pytest.raises(MarsamError, match="min_area"):
        region_prompts(np.zeros((4, 4), np.uint8), min_area=0)


# --- metrics ----------------------------------------------------------------------------------

def test_iou_excludes_ignored_pixels():
    gt = np.zeros((10, 10), bool)
    gt[:, :5] = True
    pred = np.zeros((10, 10), bool)
    pred[:, :8] = True
    assert iou(pred, gt) == pytest.approx(50 / 80)
    valid = np.ones((10, 10), bool)
    valid[:, 5:] = False                    # the spill lands on unlabelled pixels only
    assert iou(pred, gt, valid) == 1.0
    assert iou(np.zeros_like(gt), np.zeros_like(gt)) == 0.0


def test_best_match_takes_the_best_candidate_per_region():
    r1 = np.zeros((8, 8), bool)
    r1[:4] = True
    r2 = ~r1
    half = np.zeros((8, 8), bool)
    half[:2] = True
    valid = np.ones((8, 8), bool)
    got = best_match_ious([half, r1.copy()], [r1, r2], valid)
    assert got.tolist() == pytest.approx([1.0, 0.0])
    assert best_match_ious([], [r1], valid).tolist() == [0.0]
    assert best_match_ious([half], [], valid).shape == (0,)


# --- the evaluation loop ----------------------------------------------------------------------

def _scene(seed=0, size=96):
    """A textured dark background with a bright textured square (class 1) and ground truth."""
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 60, (size, size, 3)).astype(np.uint8)
    gt = np.zeros((size, size), np.uint8)
    gt[30:70, 25:65] = 1
    img[gt == 1] = rng.integers(180, 240, (int((gt == 1).sum()), 3)).astype(np.uint8)
    gt[:6] = 255                                   # an unlabelled strip, as in AI4Mars
    return img, gt


def _dataset(root, n=3, corrupt=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n):
        img, gt = _scene(i)
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        Image.fromarray(gt).save(root / "masks" / f"s{i}.png")
        rows.append({"id": f"s{i}", "split": "val" if i else "train"})
    if corrupt:
        (root / "images" / f"{corrupt}.png").write_bytes(b"not a png")
        Image.fromarray(_scene(9)[1]).save(root / "masks" / f"{corrupt}.png")
        rows.append({"id": corrupt, "split": "val"})
    with open(root / "split.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "split"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_find_samples_follows_split_csv(tmp_path):
    data = _dataset(tmp_path / "d", n=4)
    assert [s.name for s in find_samples(data, "val")] == ["s1", "s2", "s3"]
    assert [s.name for s in find_samples(data, "val", limit=2)] == ["s1", "s2"]
    assert [s.name for s in find_samples(data, None)] == ["s0", "s1", "s2", "s3"]
    with pytest.raises(MarsamError, match="use one of train, val"):
        find_samples(data, "test")
    with pytest.raises(MarsamError, match="images/ and masks/"):
        find_samples(tmp_path)
    with pytest.raises(MarsamError, match="--limit"):
        find_samples(data, "val", limit=0)


def test_grabcut_box_baseline_segments_a_clear_object_and_skips_a_corrupt_image(tmp_path):
    data = _dataset(tmp_path / "d", n=3, corrupt="broken")
    report = evaluate_prompts(find_samples(data, "val"), sam_model=None, modes=("box",), min_area=20)
    gc = report["modes"]["grabcut/box"]
    assert set(report["modes"]) == {"grabcut/box", "fill/box"}
    assert report["images"]["evaluated"] == 2
    assert [s["image"] for s in report["images"]["skipped"]] == ["broken"]
    assert "corrupt" in report["images"]["skipped"][0]["reason"]
    assert gc["regions"] == 4                      # the square and the background of each image
    sq = [r["iou"]["grabcut/box"] for r in report["regions"] if r["class"] == "bedrock"]
    assert len(sq) == 2 and min(sq) > 0.8            # an easy object: GrabCut must find it
    fill = [r["iou"]["fill/box"] for r in report["regions"] if r["class"] == "bedrock"]
    assert fill == [1.0, 1.0]                      # a square's tight box is the square
    assert gc["per_class"]["bedrock"]["regions"] == 2 and gc["per_class"]["sand"]["miou"] is None
    assert gc["ms_per_prompt"] > 0
    assert "grabcut/box" in format_table(report)
    json.dumps(report)                             # JSON-ready
    with pytest.raises(MarsamError, match="need SAM"):
        evaluate_prompts(find_samples(data, "val"), sam_model=None, modes=("box", "point"))


def test_point_masks_match_segment_anything_predictor(tiny_sam):
    """Our point decoding on a cached embedding equals SamPredictor.predict on the image itself."""
    from segment_anything import SamPredictor
    from annotate.embeddings import embed_image
    img, _ = _scene(1, size=80)
    points = [(40.5, 50.5), (10.5, 70.5)]
    ours = point_masks(tiny_sam, embed_image(tiny_sam, img), points)
    pred = SamPredictor(tiny_sam.sam)
    pred.set_image(img)
    for (x, y), m in zip(points, ours):
        masks, scores, _ = pred.predict(np.array([[x, y]]), np.array([1]), multimask_output=True)
        ref = masks[int(np.argmax(scores))]
        # the embedding cache stores float16, so a few border pixels may flip
        assert (m == ref).mean() > 0.99


def test_tiny_sam_runs_every_mode_and_says_its_numbers_are_meaningless(tmp_path, tiny_sam):
    data = _dataset(tmp_path / "d", n=2)
    report = evaluate_prompts(find_samples(data, "val"), sam_model=tiny_sam, modes=("box", "point", "auto"),
                              min_area=20, jitter=0.1, points_per_side=2)
    assert set(report["modes"]) == {"sam/box", "sam/point", "sam/auto", "grabcut/box", "fill/box"}
    assert report["model"]["weights"] == TINY_WEIGHTS and "random" in TINY_WEIGHTS
    for key, m in report["modes"].items():
        assert m["regions"] == 2 and m["images"] == 1
        assert 0.0 <= m["miou_region"] <= 1.0
    assert report["modes"]["sam/box"]["embed_ms_per_image"] > 0
    assert report["modes"]["sam/auto"]["ms_per_image"] > 0
    assert report["settings"]["jitter"] == 0.1
    assert all(set(r["iou"]) == set(report["modes"]) for r in report["regions"])


# --- CLI --------------------------------------------------------------------------------------

def test_cli_prompt_eval_on_ai4mars(ai4mars_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(["prompt-eval", "--data", str(ai4mars_dir), "--limit", "2", "--engine", "grabcut",
               "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["images"]["evaluated"] + len(report["images"]["without_regions"]) == 2
    assert report["settings"]["split"] == "val"
    assert list(report["modes"]) == ["grabcut/box", "fill/box"]
    assert "mIoU/region" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--engine", "grabcut", "--modes", "point"], "need SAM"),
    (["--split", "nope"], "split 'nope'"),
    (["--sam-model-type", "tiny", "--sam-checkpoint", "x.pth"], "takes no --sam-checkpoint"),
    (["--model", "tiny", "--checkpoint", "x.pth"], "takes no --sam-checkpoint"),   # deprecated spellings
    (["--jitter", "-1"], "jitter"),
])
def test_cli_bad_input_is_one_line_error(tmp_path, capsys, argv, match):
    data = _dataset(tmp_path / "d", n=2)
    rc = main(["prompt-eval", "--data", str(data), "--json", str(tmp_path / "o.json")] + argv)
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("marsam: error:")]
    assert rc == 2 and len(errors) == 1 and match in errors[0]
