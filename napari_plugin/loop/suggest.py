"""From a prediction to what the expert reviews: suggested boxes, and which image to label next.

Suggested boxes come from annotate's region prompts (one box per 4-connected region of each
predicted class, largest first, slivers under ``min_area`` dropped): the very rule annotate uses
to simulate an expert boxing ground-truth regions, so a suggestion is the box an expert would
have drawn had the prediction been right. The expert accepts, moves or deletes them; only then
do they become prompts, and SAM (not the prediction) draws the labels.

"Next most uncertain" ranks the images not labelled yet by their mean predictive entropy
(``segmodels.uncertainty`` through the prediction), highest first: labelling where the model
is least sure teaches it the most per box. A bad image is reported and skipped, never stops
the ranking.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from annotate.prompts import BoxPrompt
from annotate.region_prompts import DEFAULT_MIN_AREA, region_prompts
from segmodels.errors import MarsamError
from segmodels.images import load_image
from segmodels.labels import LabelSpec

from ..predict.jobs import Job
from ..predict.models import PredictionResult

log = logging.getLogger(__name__)


def default_min_area(shape: tuple[int, int]) -> int:
    """Smallest region worth a box: 100 px, or 0.1 % of a large image (a 1024 px frame: 1048 px)."""
    return max(DEFAULT_MIN_AREA, int(shape[0]) * int(shape[1]) // 1000)


def suggested_boxes(labels: np.ndarray, spec: LabelSpec, min_area: int | None = None) -> list[BoxPrompt]:
    """One box prompt per connected predicted region with its class, largest regions first."""
    labels = np.asarray(labels)
    area = default_min_area(labels.shape[:2]) if min_area is None else int(min_area)
    regions = region_prompts(labels.astype(np.uint8), min_area=area, ignore_index=spec.ignore_index,
                             num_classes=spec.num_classes)
    return [r.to_box_prompt() for r in regions]


@dataclass
class Ranking:
    """Images by mean predictive entropy (nats), highest first, and those that could not be read."""
    order: list[tuple[Path, float]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    top: PredictionResult | None = None      # the prediction of order[0], kept to suggest its boxes

    def describe(self, n: int = 5) -> str:
        lines = [f"{i + 1}. {p.name}: {h:.3f}" for i, (p, h) in enumerate(self.order[:n])]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}: " + ", ".join(p.name for p, _ in self.skipped[:3]))
        return "\n".join(lines)


def rank_by_uncertainty(paths: list[Path], predict_fn: Callable[[np.ndarray], PredictionResult],
                        job: Job | None = None) -> Ranking:
    """Predict every image in ``paths`` and order them by mean entropy (highest first)."""
    if not paths:
        raise MarsamError("no unlabelled images are left in the session; add images or review labelled ones")
    job = job or Job("ranking")
    job.update(0, len(paths))
    ranking = Ranking()
    best = -1.0
    for i, path in enumerate(paths):
        job.check()
        try:
            result = predict_fn(load_image(path))
        except MarsamError as e:
            log.warning("skipping %s: %s", path, e)
            ranking.skipped.append((Path(path), str(e)))
        else:
            h = result.mean_entropy
            ranking.order.append((Path(path), h))
            if h > best:
                best, ranking.top = h, result
        job.update(i + 1, message=f"{i + 1}/{len(paths)} images")
    if not ranking.order:
        raise MarsamError(f"none of the {len(paths)} unlabelled images could be predicted "
                          f"(first error: {ranking.skipped[0][1]}); check the image files")
    ranking.order.sort(key=lambda t: -t[1])
    return ranking
