"""Box-initialised GrabCut (OpenCV): a prompt engine that needs no weights.

It is what runs when no SAM checkpoint is present, and a baseline in the prompt evaluation.
Each box is cut from a crop around it (the box plus a margin of half its longer side, at least
16 px): GrabCut treats everything outside the box as background anyway, and a local crop both
keeps the background colour model local and makes the cost independent of the image size.
Positive / negative points become definite foreground / background marks (GC_FGD / GC_BGD).
GrabCut's cost grows with the pixel count (tens of seconds for a 900 px crop on a busy CPU), so
a crop longer than ``max_side`` is cut at that size and the mask scaled back (nearest
neighbour): box-sized terrain features keep their shape and a 900 px crop costs ~1/5.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from segmodels.errors import MarsamError
from segmodels.images import to_rgb_uint8

from .prompts import BoxPrompt, clip_box

log = logging.getLogger(__name__)


class GrabCutEngine:
    name = "grabcut"

    def __init__(self, iterations: int = 5, margin: float = 0.5, point_radius: int = 3, max_side: int = 400):
        if iterations < 1:
            raise MarsamError(f"GrabCut needs at least 1 iteration, not {iterations}")
        self.iterations = int(iterations)
        self.margin = float(margin)
        self.point_radius = int(point_radius)
        self.max_side = max(32, int(max_side))
        self.model_name = None
        self._rgb: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        self._rgb = to_rgb_uint8(image)

    def segment(self, prompts: list[BoxPrompt]) -> list[np.ndarray]:
        if self._rgb is None:
            raise MarsamError("no image set; call set_image(image) before segment(prompts)")
        return [self._one(p) for p in prompts]

    def _one(self, p: BoxPrompt) -> np.ndarray:
        import cv2
        h, w = self._rgb.shape[:2]
        out = np.zeros((h, w), bool)
        try:
            (bx0, by0, bx1, by1), _ = clip_box(p.box, (h, w))
        except MarsamError as e:
            log.warning("box rejected: %s", e)
            return out
        x0, y0 = int(math.floor(bx0)), int(math.floor(by0))
        x1, y1 = int(math.ceil(bx1)), int(math.ceil(by1))
        m = int(max(16, self.margin * max(x1 - x0, y1 - y0)))
        cx0, cy0, cx1, cy1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
        crop = np.ascontiguousarray(self._rgb[cy0:cy1, cx0:cx1])
        ch, cw = crop.shape[:2]
        scale = min(1.0, self.max_side / max(ch, cw))
        if scale < 1.0:
            crop = cv2.resize(crop, (max(1, round(cw * scale)), max(1, round(ch * scale))), interpolation=cv2.INTER_AREA)
        sx, sy = crop.shape[1] / cw, crop.shape[0] / ch
        rx0, ry0 = int((x0 - cx0) * sx), int((y0 - cy0) * sy)
        rect = (rx0, ry0, max(1, int(round((x1 - cx0) * sx)) - rx0), max(1, int(round((y1 - cy0) * sy)) - ry0))
        mask = np.zeros(crop.shape[:2], np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            if p.num_points:
                mask[:] = cv2.GC_BGD
                mask[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] = cv2.GC_PR_FGD
                for pts, val in ((p.positive_points, cv2.GC_FGD), (p.negative_points, cv2.GC_BGD)):
                    for x, y in pts:
                        cv2.circle(mask, (int(round((x - cx0) * sx)), int(round((y - cy0) * sy))),
                                   self.point_radius, int(val), -1)
                cv2.grabCut(crop, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            else:
                cv2.grabCut(crop, mask, rect, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error as e:
            # Too few background pixels (a box covering the whole image) or a flat image: no
            # colour model can be fitted, so the box itself is the best available mask.
            log.warning("GrabCut could not separate box %s (%s); using the whole box",
                        p.box, str(e).strip().splitlines()[-1][:80])
            out[y0:y1, x0:x1] = True
            return out
        fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
        if fg.shape != (ch, cw):
            fg = cv2.resize(fg, (cw, ch), interpolation=cv2.INTER_NEAREST)
        out[cy0:cy1, cx0:cx1] = fg.astype(bool)
        return out
