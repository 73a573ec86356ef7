"""Prompt-mode evaluation: box, point and automatic SAM masks (and a GrabCut baseline) against ground truth.

This reproduces the paper's prompt-mode comparison on any folder of images with label maps. From
each ground-truth map, :mod:`annotate.region_prompts` derives one region per connected component of
each class, with its (optionally jittered) box and its deepest interior point. Then:

- ``box``: every region's box, decoded in one batch by :class:`~annotate.engines.SamEngine`
  (and by :class:`~annotate.grabcut.GrabCutEngine` as the weight-free baseline);
- ``point``: every region's interior point alone, decoded on the same embedding by
  segment-anything's ``SamPredictor`` (SamEngine takes boxes only), the best of SAM's three
  candidate masks by predicted IoU, as SAM advises for an ambiguous single click;
- ``fill``: the box itself as the mask, a reference: a box engine that does not beat it adds
  nothing to what the expert drew (tight boxes of blocky regions already score high);
- ``auto``: ``SamAutomaticMaskGenerator`` over a point grid, each ground-truth region matched to
  the automatic mask with the highest IoU with it (the most favourable matching, so this is an
  upper bound of what automatic mode offers an annotator).

IoU is computed over labelled pixels only: pixels the ground truth marks as ignore (255) are
unknown terrain, so a mask spreading into them is neither right nor wrong. Scores are reported
as the mean over all regions and as the mean over images of each image's mean. Times: the
embedding per image, and the decoding per prompt (all prompts of an image are one batch, so
per-prompt time is the batch time divided by the number of prompts); automatic mode's time per
image includes its own embedding.
"""
from __future__ import annotations

import logging
import os
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmodels.device import machine_info
from segmodels.errors import MarsamError
from segmodels.images import load_image, to_rgb_uint8
from segmodels.labels import AI4MARS, LabelSpec
from segmodels.mask_folder import SPLIT_FILE, has_layout
from segmodels.mask_folder import pairs as mask_folder_pairs

from .region_prompts import DEFAULT_MIN_AREA, RegionPrompt, region_prompts

log = logging.getLogger(__name__)

SAM_MODES = ("box", "point", "auto")
TINY_WEIGHTS = "random (tiny test SAM): these IoUs measure the pipeline, not SAM's quality"
FILL_WEIGHTS = "none (reference: the box itself as the mask)"


@dataclass
class EvalSample:
    name: str
    image: Path
    mask: Path


def find_samples(data_dir: str | os.PathLike, split: str | None = "val", limit: int | None = None
                 ) -> list[EvalSample]:
    """(image, mask) pairs of ``data_dir/images`` and ``data_dir/masks`` (AI4Mars layout), same stem.

    With ``split.csv`` (columns ``id,split``) present, the ids of ``split`` in the file's order;
    without it (or with ``split=None``) every mask in name order. ``limit`` keeps the first N.
    An id whose image or mask is missing is skipped with a warning.
    """
    data = Path(data_dir)
    if limit is not None and limit < 1:
        raise MarsamError(f"--limit must be at least 1, not {limit}")
    if split is not None and has_layout(data) and not (data / SPLIT_FILE).is_file():
        log.warning("%s has no split.csv; evaluating every mask", data)
        split = None
    found, missing = mask_folder_pairs(data, split)
    samples = [EvalSample(p.id, p.image, p.mask) for p in found][:limit]
    if missing:
        log.warning("%d id(s) lack an image or a mask and are skipped, e.g. %s", len(missing), missing[0][0])
    if not samples:
        raise MarsamError(f"no image with a mask found in {data}; masks must be masks/<id>.png next to images/<id>.*")
    return samples


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A ground-truth mask file as a 2-D integer array of class ids."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise MarsamError(f"mask {path} is an {im.mode} image; masks must be single-channel class ids "
                                  "(PNG mode L), 255 = unlabelled")
            return np.asarray(im)
    except OSError:
        raise MarsamError(f"cannot read mask {path}: the file is corrupt or not an image") from None


def iou(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """IoU of two bool masks over ``valid`` pixels (all when None); 0 when both are empty."""
    if valid is not None:
        pred, gt = pred & valid, gt & valid
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt)) / union if union else 0.0


def best_match_ious(candidates: list[np.ndarray], regions: list[np.ndarray], valid: np.ndarray) -> np.ndarray:
    """For each region, the highest IoU (over ``valid`` pixels) of any candidate mask with it."""
    if not regions:
        return np.zeros(0)
    if not candidates:
        return np.zeros(len(regions))
    v = valid.ravel()
    a = np.stack([c.ravel()[v] for c in candidates]).astype(np.float32)    # M x P
    g = np.stack([r.ravel()[v] for r in regions]).astype(np.float32)       # R x P
    inter = g @ a.T                                                        # R x M
    union = g.sum(1)[:, None] + a.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).max(axis=1)


def box_mask(box, shape: tuple[int, int]) -> np.ndarray:
    """The box filled: the reference any box engine must beat to be worth running."""
    x0, y0, x1, y1 = box
    m = np.zeros(shape, bool)
    m[max(0, int(np.floor(y0))):int(np.ceil(y1)), max(0, int(np.floor(x0))):int(np.ceil(x1))] = True
    return m


def point_masks(model, embedding, points: list[tuple[float, float]], chunk: int = 64) -> list[np.ndarray]:
    """One mask per single positive point, SAM's best-of-three by predicted IoU, on a cached embedding.

    Each point is answered by the embedding tile that holds it (see ``ImageEmbedding.tile_for_box``)
    through segment-anything's own ``SamPredictor.predict_torch``.
    """
    import torch
    from segment_anything import SamPredictor
    h, w = embedding.image_size
    out = [np.zeros((h, w), bool) for _ in points]
    predictor = SamPredictor(model.sam)
    by_tile = defaultdict(list)
    for i, (x, y) in enumerate(points):
        by_tile[embedding.tile_for_box((x, y, x, y))].append(i)
    for t, idx in by_tile.items():
        tile = embedding.tiles[t]
        ox, oy = tile.offset
        th, tw = tile.original_size
        predictor.reset_image()
        predictor.features = tile.embedding.to(model.device)
        predictor.original_size, predictor.input_size = tuple(tile.original_size), tuple(tile.input_size)
        predictor.is_image_set = True
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            coords = torch.tensor([[[points[i][0] - ox, points[i][1] - oy]] for i in part], dtype=torch.float32)
            coords = predictor.transform.apply_coords_torch(coords, tile.original_size).to(model.device)
            labels = torch.ones((len(part), 1), dtype=torch.int, device=model.device)
            masks, scores, _ = predictor.predict_torch(coords, labels, multimask_output=True)
            best = masks[torch.arange(len(part)), scores.argmax(dim=1)].cpu().numpy()
            for i, m in zip(part, best):
                out[i][oy:oy + th, ox:ox + tw] = m
    return out


def weights_label(model) -> str:
    """What the SAM numbers stand for; random weights are said to be meaningless, in the JSON itself."""
    if model is None:
        return "none"
    if model.model_type == "tiny":
        return TINY_WEIGHTS
    return f"{model.model_type} checkpoint sha256 {model.checkpoint_id[:12]}"


def _image_seed(seed: int, name: str) -> int:
    """A per-image jitter seed independent of the evaluation order and of --limit."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


class _Mode:
    """Scores and times of one (engine, mode) pair."""

    def __init__(self, engine: str, mode: str, weights: str):
        self.engine, self.mode, self.weights = engine, mode, weights
        self.ious: list[float] = []
        self.classes: list[int] = []
        self.image_means: list[float] = []
        self.prompts = 0
        self.images = 0
        self.decode_s = 0.0
        self.embed_s = 0.0
        self.masks = 0

    def add_image(self, ious, classes, decode_s: float, embed_s: float = 0.0, prompts: int | None = None):
        ious = [float(v) for v in ious]
        self.ious += ious
        self.classes += list(classes)
        if ious:
            self.image_means.append(float(np.mean(ious)))
        self.images += 1
        self.prompts += len(ious) if prompts is None else prompts
        self.decode_s += decode_s
        self.embed_s += embed_s

    def summary(self, spec: LabelSpec) -> dict:
        per_class = {}
        for k, name in enumerate(spec.classes):
            vals = [v for v, c in zip(self.ious, self.classes) if c == k]
            per_class[name] = {"regions": len(vals), "miou": _r(np.mean(vals)) if vals else None}
        d = {"engine": self.engine, "mode": self.mode, "weights": self.weights,
             "regions": len(self.ious), "images": len(self.image_means),
             "miou_region": _r(np.mean(self.ious)) if self.ious else None,
             "miou_image": _r(np.mean(self.image_means)) if self.image_means else None,
             "per_class": per_class}
        if self.mode == "auto":
            d["ms_per_image"] = _r(1000 * self.decode_s / max(self.images, 1), 2)
            d["ms_per_grid_point"] = _r(1000 * self.decode_s / max(self.prompts, 1), 3)
            d["auto_masks_per_image"] = _r(self.masks / max(self.images, 1), 2)
        else:
            d["ms_per_prompt"] = _r(1000 * self.decode_s / max(self.prompts, 1), 3)
            d["embed_ms_per_image"] = _r(1000 * self.embed_s / max(self.images, 1), 2)
            d["ms_per_prompt_with_embedding"] = _r(1000 * (self.decode_s + self.embed_s) / max(self.prompts, 1), 3)
        return d


def _r(v, nd: int = 4):
    return None if v is None else round(float(v), nd)


def evaluate_prompts(samples: list[EvalSample], sam_model=None, modes=SAM_MODES, grabcut: bool = True,
                     jitter: float = 0.0, seed: int = 0, min_area: int = DEFAULT_MIN_AREA,
                     points_per_side: int = 32, label_spec: LabelSpec = AI4MARS, cache=None,
                     auto_kwargs: dict | None = None, progress: bool = False) -> dict:
    """Evaluate the prompt modes on ``samples``; returns the JSON-ready report.

    ``sam_model`` (a :class:`~annotate.sam_loading.SamModel`, or None for GrabCut alone) runs the
    ``modes`` among box, point, auto; ``grabcut`` adds the GrabCut box baseline. ``auto_kwargs``
    go to ``SamAutomaticMaskGenerator`` (SAM's defaults otherwise). A sample that cannot be read
    is reported under ``skipped`` and the rest go on.
    """
    from tqdm import tqdm
    from .engines import SamEngine
    from .grabcut import GrabCutEngine
    modes = tuple(modes)
    unknown = [m for m in modes if m not in SAM_MODES]
    if unknown:
        raise MarsamError(f"unknown prompt mode(s) {unknown}; use box, point and/or auto")
    if sam_model is None and modes and set(modes) != {"box"}:
        raise MarsamError("point and automatic modes need SAM; pass a SAM model (--engine sam) or evaluate --modes box")
    if sam_model is None and not grabcut:
        raise MarsamError("nothing to evaluate: no SAM model and the GrabCut baseline switched off")
    if points_per_side < 1:
        raise MarsamError(f"points per side must be at least 1, not {points_per_side}")
    weights = weights_label(sam_model)
    runs: dict[str, _Mode] = {}
    sam_engine = SamEngine(sam_model, cache=cache) if sam_model is not None else None
    auto_gen = None
    if sam_model is not None:
        for m in modes:
            runs[f"sam/{m}"] = _Mode("sam", m, weights)
        if "auto" in modes:
            from segment_anything import SamAutomaticMaskGenerator
            auto_gen = SamAutomaticMaskGenerator(sam_model.sam, points_per_side=points_per_side,
                                                 **(auto_kwargs or {}))
    gc_engine = GrabCutEngine() if grabcut and ("box" in modes or sam_model is None) else None
    if gc_engine is not None:
        runs["grabcut/box"] = _Mode("grabcut", "box", "none (GrabCut needs no weights)")
    if "box" in modes or gc_engine is not None:
        runs["fill/box"] = _Mode("fill", "box", FILL_WEIGHTS)

    per_image, regions_out, skipped, empty = [], [], [], []
    for s in tqdm(samples, desc="prompt-eval", unit="image", disable=not progress):
        try:
            image = load_image(s.image)
            gt = read_label_map(s.mask)
            if gt.shape != image.shape[:2]:
                raise MarsamError(f"mask is {gt.shape[1]}x{gt.shape[0]} but the image {image.shape[1]}x{image.shape[0]}")
            regions = region_prompts(gt, min_area=min_area, jitter=jitter, seed=_image_seed(seed, s.name),
                                     ignore_index=label_spec.ignore_index, num_classes=label_spec.num_classes)
        except MarsamError as e:
            log.warning("%s skipped: %s", s.name, e)
            skipped.append({"image": s.name, "reason": str(e)})
            continue
        if not regions:
            empty.append(s.name)
            continue
        valid = gt != label_spec.ignore_index
        try:
            ious, times, n_auto = _evaluate_image(image, regions, valid, runs, sam_engine, sam_model, gc_engine,
                                                  auto_gen)
        except MarsamError as e:
            log.warning("%s skipped: %s", s.name, e)
            skipped.append({"image": s.name, "reason": str(e)})
            continue
        classes = [r.class_id for r in regions]
        for key, run in runs.items():
            decode_s, embed_s = times[key]
            run.add_image(ious[key], classes, decode_s, embed_s,
                          prompts=points_per_side ** 2 if run.mode == "auto" else None)
        if "sam/auto" in runs:
            runs["sam/auto"].masks += n_auto
        per_image.append({"image": s.name, "regions": len(regions),
                          "miou": {k: _r(np.mean(v)) for k, v in ious.items()}})
        for j, r in enumerate(regions):
            regions_out.append({"image": s.name, "class": label_spec.classes[r.class_id], "area": r.area,
                                "box": [round(v, 2) for v in r.box], "point": list(r.point),
                                "iou": {k: _r(v[j]) for k, v in ious.items()}})
    if not per_image:
        raise MarsamError(f"no image could be evaluated ({len(skipped)} skipped, {len(empty)} without a region "
                          f"of at least {min_area} px); check the data or lower --min-area")
    return {
        "tool": "marsam prompt-eval",
        "settings": {"modes": list(modes), "jitter": jitter, "seed": seed, "min_area": min_area,
                     "points_per_side": points_per_side if auto_gen is not None else None,
                     "iou_over": "labelled pixels (ground-truth ignore pixels excluded)",
                     "label_spec": label_spec.name},
        "model": {"sam_model_type": getattr(sam_model, "model_type", None),
                  "checkpoint_id": getattr(sam_model, "checkpoint_id", None),
                  "device": str(getattr(sam_model, "device", "cpu")), "weights": weights},
        "machine": machine_info(),
        "images": {"evaluated": len(per_image), "skipped": skipped, "without_regions": empty},
        "modes": {k: m.summary(label_spec) for k, m in runs.items()},
        "per_image": per_image,
        "regions": regions_out,
    }


def _evaluate_image(image, regions: list[RegionPrompt], valid, runs, sam_engine, sam_model, gc_engine,
                    auto_gen) -> tuple[dict[str, list[float]], dict[str, tuple[float, float]], int]:
    """IoUs per run key, (decode s, embed s) per run key, and the number of automatic masks.

    Nothing is added to the running totals here, so an image that fails halfway counts nowhere.
    """
    gts = [r.mask for r in regions]
    boxes = [r.to_box_prompt() for r in regions]
    ious: dict[str, list[float]] = {}
    times: dict[str, tuple[float, float]] = {}
    n_auto = 0

    def timed(fn, *a):
        t0 = time.perf_counter()
        res = fn(*a)
        return res, time.perf_counter() - t0

    if sam_engine is not None and ({"sam/box", "sam/point"} & set(runs)):
        _, embed_s = timed(sam_engine.set_image, image)
        if "sam/box" in runs:
            masks, dt = timed(sam_engine.segment, boxes)
            ious["sam/box"], times["sam/box"] = [iou(m, g, valid) for m, g in zip(masks, gts)], (dt, embed_s)
        if "sam/point" in runs:
            masks, dt = timed(point_masks, sam_model, sam_engine.embedding, [r.point for r in regions])
            ious["sam/point"], times["sam/point"] = [iou(m, g, valid) for m, g in zip(masks, gts)], (dt, embed_s)
    if "sam/auto" in runs:
        anns, dt = timed(auto_gen.generate, to_rgb_uint8(image))
        ious["sam/auto"] = best_match_ious([a["segmentation"] for a in anns], gts, valid).tolist()
        times["sam/auto"], n_auto = (dt, 0.0), len(anns)
    if "fill/box" in runs:
        masks, dt = timed(lambda: [box_mask(r.box, valid.shape) for r in regions])
        ious["fill/box"], times["fill/box"] = [iou(m, g, valid) for m, g in zip(masks, gts)], (dt, 0.0)
    if gc_engine is not None:
        _, prep_s = timed(gc_engine.set_image, image)
        masks, dt = timed(gc_engine.segment, boxes)
        ious["grabcut/box"], times["grabcut/box"] = [iou(m, g, valid) for m, g in zip(masks, gts)], (dt, prep_s)
    return ious, times, n_auto


def format_table(report: dict) -> str:
    """The per-mode summary as a fixed-width text table (what the CLI prints)."""
    head = (f"{'mode':<13}{'regions':>8}{'images':>7}{'mIoU/region':>12}{'mIoU/image':>11}"
            f"{'ms/prompt':>11}{'embed ms/img':>13}  weights")
    lines = [head, "-" * len(head)]
    for key, m in report["modes"].items():
        if m["mode"] == "auto":
            ms, emb = f"{m['ms_per_grid_point']:.3f}", f"(in {m['ms_per_image']:.0f}/img)"
        else:
            ms, emb = f"{m['ms_per_prompt']:.3f}", f"{m['embed_ms_per_image']:.1f}"
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"{key:<13}{m['regions']:>8}{m['images']:>7}{fmt(m['miou_region']):>12}"
                     f"{fmt(m['miou_image']):>11}{ms:>11}{emb:>13}  {m['weights']}")
    im = report["images"]
    lines.append(f"{im['evaluated']} image(s) evaluated, {len(im['skipped'])} skipped, "
                 f"{len(im['without_regions'])} without a region of at least {report['settings']['min_area']} px")
    return "\n".join(lines)
