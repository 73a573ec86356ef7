"""The simulated expert: box prompts drawn from the ground truth, labelled by a prompt engine.

The demo has no human at hand, so it plays one. For every connected region of every class in a
ground-truth map (annotate's :func:`~annotate.region_prompts.region_prompts`) the expert draws
the region's box, a little off as a hurried hand would (jitter), and clicks once inside the
region; the interior clicks of other classes' regions that fall inside the box become negative
clicks, the correction an expert makes when a box also covers a neighbour. The engine (SAM or
GrabCut) turns the prompts into masks and annotate's overlap rule merges them
(:func:`annotate.engines.label_image`, as in a real session). Pixels no mask
covers stay unlabelled (255) and are ignored in training, as in a real session.

The result is scored against the same ground truth: the annotation mIoU says how good labels
made this way are, before any model is trained on them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

log = logging.getLogger(__name__)

REFERENCE_AREA = 256 * 256        # annotate's min_area default (100 px) is meant for 256 px tiles
MAX_NEGATIVE_CLICKS = 4


def min_region_area(shape: tuple[int, int], base: int = 100) -> int:
    """Regions smaller than this are not boxed; scaled with the image so a tile size does not change the rule."""
    return max(12, int(round(base * shape[0] * shape[1] / REFERENCE_AREA)))


def expert_prompts(label_map: np.ndarray, label_spec: LabelSpec, jitter: float = 0.05, seed: int = 0,
                   clicks: bool = True) -> list:
    """Box prompts (plus clicks) an expert would give for ``label_map``, largest regions first."""
    from annotate.prompts import BoxPrompt
    from annotate.region_prompts import region_prompts
    regions = region_prompts(label_map, min_area=min_region_area(label_map.shape), jitter=jitter, seed=seed,
                             ignore_index=label_spec.ignore_index, num_classes=label_spec.num_classes)
    prompts = []
    for r in regions:
        x0, y0, x1, y1 = r.box
        negative = [o.point for o in regions if o is not r and o.class_id != r.class_id
                    and x0 <= o.point[0] < x1 and y0 <= o.point[1] < y1][:MAX_NEGATIVE_CLICKS]
        prompts.append(BoxPrompt(box=r.box, class_id=r.class_id,
                                 positive_points=[r.point] if clicks else [],
                                 negative_points=negative if clicks else []))
    return prompts


@dataclass
class AnnotationResult:
    label_maps: list[np.ndarray]
    miou: float
    iou_per_class: dict
    coverage: float                 # fraction of ground-truth-labelled pixels the annotation labels
    prompts: int
    images: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def score_annotation(label_maps, ground_truth, label_spec: LabelSpec) -> tuple[float, dict, float]:
    """mIoU of annotations against ground truth with distill's split-level metrics.

    Unlabelled annotation pixels count as misses: they become an extra "unlabelled" prediction
    channel, which has no ground-truth pixels and so never enters the mean itself.
    """
    from distill.metrics import SegmentationMetrics
    k = label_spec.num_classes
    metrics = SegmentationMetrics(k + 1, label_spec.ignore_index)
    covered = labelled = 0
    for ann, gt in zip(label_maps, ground_truth):
        pred = np.where(ann == label_spec.ignore_index, k, ann).astype(np.int64)
        onehot = torch.nn.functional.one_hot(torch.from_numpy(pred), k + 1).permute(2, 0, 1)[None].float()
        metrics.update(onehot * 10.0, torch.from_numpy(gt.astype(np.int64))[None])
        valid = gt != label_spec.ignore_index
        labelled += int(valid.sum())
        covered += int((valid & (ann != label_spec.ignore_index)).sum())
    result = metrics.compute([*label_spec.classes, "unlabelled"])
    per_class = {c: result["iou_per_class"][c] for c in label_spec.classes}
    return float(result["miou"]), per_class, covered / max(labelled, 1)


def annotate_images(engine, images, ground_truth, ids, label_spec: LabelSpec, jitter: float = 0.05,
                    seed: int = 0, clicks: bool = True, progress: bool = False) -> AnnotationResult:
    """Label every image with the simulated expert's prompts; a failing image is skipped, not fatal."""
    import time
    from annotate.engines import label_image
    t0 = time.perf_counter()
    out, skipped, n_prompts = [], [], 0
    it = range(len(images))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"annotating ({engine.name})", unit="img")
    for i in it:
        gt = ground_truth[i]
        try:
            prompts = expert_prompts(gt, label_spec, jitter, seed + i, clicks)
            lab = label_image(engine, images[i], prompts, label_spec.ignore_index)
            n_prompts += len(prompts)
        except MarsamError as e:
            log.warning("annotation of %s skipped: %s", ids[i], e)
            skipped.append((ids[i], str(e)))
            lab = np.full(gt.shape, label_spec.ignore_index, np.uint8)
        out.append(lab)
    miou, per_class, coverage = score_annotation(out, ground_truth, label_spec)
    return AnnotationResult(out, miou, per_class, coverage, n_prompts, len(images),
                            round(time.perf_counter() - t0, 2), skipped)
