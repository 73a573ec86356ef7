"""Box-initialised GrabCut (OpenCV): a prompt engine that needs no weights.

It is what runs when no SAM checkpoint is present, and a baseline in the prompt evaluation.
Each box is cut from a crop around it (the box plus a margin of half its longer side, at least
16 px): GrabCut treats everything outside the box as background anyway, and a local crop both
keeps the background colour model local and makes the cost independent of the image size.
GrabCut's cost grows with the pixel count, so a crop longer than ``max_side`` is cut at that
size and the mask scaled back (nearest neighbour).

Three things make it work on planetary images, where plain ``GC_INIT_WITH_RECT`` on the RGB
pixels mostly returned empty masks:

- **Feature image for grey inputs.** NAVCAM / HiRISE frames are grey; three identical channels
  leave GrabCut's 3-D colour GMMs one dimension of information. Grey crops are replaced by three
  channels that separate terrain by more than brightness: CLAHE intensity (local contrast),
  local standard deviation (texture: sand is smooth, bedrock and rock fields are rough) and a
  blurred intensity (the region's mean brightness, free of texture noise). Colour crops keep RGB.
- **Mask initialisation with a core.** Outside the box is definite background, the box probable
  foreground, and a small ellipse at the box centre (``core`` times the half sides) definite
  foreground: an expert's box is drawn around the object, so its centre is on it, and the fixed
  core keeps the foreground model from collapsing into "everything is background" (the old
  rect initialisation returned an empty mask for 39 of 49 AI4Mars regions).
- **A guard.** One box prompts one object, so the largest connected component of GrabCut's
  result is kept. If that component covers less than ``min_fraction`` of the box (default 0.3:
  empty, a few specks, or a centre core that barely grew), GrabCut found no object and falls back
  to a shape prior. So it does when the component spans less than ``min_extent`` (default 0.8)
  of the box width or height: a box drawn tight around an object (SAM's convention, and what
  ``marsam`` users draw) touches it on all four sides, so a mask that stops far short of a side
  is a fragment of the object, not the object (0 switches this check off, for loose boxes).
  The shape prior is ``fallback``: "box" (the whole box; the best guess for terrain regions, which
  fill their box; the default, since filling the box scores 0.87 mean IoU on AI4Mars regions)
  or "ellipse" (the ellipse inscribed in the box; better for compact objects such as rocks).
  When GrabCut cannot fit its models at all (no background pixels around a box covering the
  image, a crop OpenCV refuses) the whole box is used. Every fallback is recorded in
  ``last_fallbacks`` (per prompt of the last :meth:`segment` call: None when GrabCut's own mask
  was kept, else the reason "empty" (nothing beyond the core), "tiny" (under ``min_fraction``),
  "short" (under ``min_extent``), "no-background" or "grabcut-error") and counted in ``fallback_counts`` (a Counter over the
  engine's life), so evaluations and the demo can report how often GrabCut gave up.

Positive / negative points become definite foreground / background discs (GC_FGD / GC_BGD) and
are honoured by the fallback masks too.
"""
from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np

from segmodels.errors import MarsamError
from segmodels.images import check_image, to_rgb_uint8

from .masks import CropMask
from .prompts import BoxPrompt, clip_box

log = logging.getLogger(__name__)

FALLBACKS = ("box", "ellipse")

#: Fewer background pixels than this around a box leave GrabCut's background model unfit.
MIN_BACKGROUND_PIXELS = 64
#: OpenCV's RNG is set to this before every GrabCut call (reproducible labels).
GRABCUT_SEED = 0x6D61


class GrabCutEngine:
    """GrabCut on a crop around each box, with a shape-prior fallback; see the module docstring.

    ``features``: "auto" (feature image for grey images, RGB for colour), "rgb" or "texture"
    (the feature image always, from the grey intensity). ``core``: the definite-foreground centre
    ellipse as a fraction of the half sides (0 = none). ``min_fraction``: the smallest share of
    the box GrabCut's largest component must cover to be believed; ``min_extent``: the smallest
    share of the box width and height it must span (0 = any). ``fallback``: "box" or "ellipse".
    """
    name = "grabcut"

    def __init__(self, iterations: int = 5, margin: float = 0.5, point_radius: int = 3, max_side: int = 400,
                 features: str = "auto", core: float = 0.2, min_fraction: float = 0.3, min_extent: float = 0.8,
                 fallback: str = "box"):
        if iterations < 1:
            raise MarsamError(f"GrabCut needs at least 1 iteration, not {iterations}")
        if features not in ("auto", "rgb", "texture"):
            raise MarsamError(f"GrabCut features must be 'auto', 'rgb' or 'texture', not {features!r}")
        if not 0.0 <= core < 1.0:
            raise MarsamError(f"the GrabCut core must be a fraction of the half box sides in [0, 1), not {core}")
        if not 0.0 <= min_fraction < 1.0:
            raise MarsamError(f"min_fraction must be in [0, 1) (a share of the box area), not {min_fraction}")
        if not 0.0 <= min_extent <= 1.0:
            raise MarsamError(f"min_extent must be in [0, 1] (a share of the box width and height), not {min_extent}")
        if fallback not in FALLBACKS:
            raise MarsamError(f"GrabCut fallback must be one of {', '.join(FALLBACKS)}, not {fallback!r}")
        self.iterations = int(iterations)
        self.margin = float(margin)
        self.point_radius = int(point_radius)
        self.max_side = max(32, int(max_side))
        self.features = features
        self.core = float(core)
        self.min_fraction = float(min_fraction)
        self.min_extent = float(min_extent)
        self.fallback = fallback
        self.model_name = None
        self.last_fallbacks: list[str | None] = []
        self.fallback_counts: Counter = Counter()
        self._rgb: np.ndarray | None = None
        self._grey = False

    def set_image(self, image: np.ndarray) -> None:
        """Keep the image; 8-bit images are kept as they are (crops are converted one box at a time),
        others are converted to RGB once (their stretch depends on the whole image)."""
        arr = check_image(image)
        if arr.dtype == np.uint8:
            self._rgb = arr if arr.ndim == 2 else arr[:, :, :3]
        else:
            self._rgb = to_rgb_uint8(arr)
        self._grey = self._rgb.ndim == 2 or is_grey(self._rgb)

    def _crop(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """RGB uint8 pixels of a window (grey images repeated into three channels per crop)."""
        c = self._rgb[y0:y1, x0:x1]
        if c.ndim == 2:
            c = np.repeat(c[:, :, None], 3, axis=2)
        return np.ascontiguousarray(c)

    def segment(self, prompts: list[BoxPrompt]) -> list[np.ndarray]:
        return [c.full() for c in self.segment_crops(prompts)]

    def segment_crops(self, prompts: list[BoxPrompt]) -> list[CropMask]:
        """One mask per prompt, each in the window of its box (memory: the crops, not the image)."""
        if self._rgb is None:
            raise MarsamError("no image set; call set_image(image) before segment(prompts)")
        masks, reasons = [], []
        for p in prompts:
            m, why = self._one(p)
            masks.append(m)
            reasons.append(why)
            if why is not None:
                self.fallback_counts[why] += 1
        self.last_fallbacks = reasons
        return masks

    def _one(self, p: BoxPrompt) -> tuple[CropMask, str | None]:
        import cv2
        h, w = self._rgb.shape[:2]
        try:
            (bx0, by0, bx1, by1), _ = clip_box(p.box, (h, w))
        except MarsamError as e:
            log.warning("box rejected: %s", e)
            return CropMask(np.zeros((0, 0), bool), 0, 0, (h, w)), None
        x0, y0 = int(math.floor(bx0)), int(math.floor(by0))
        x1, y1 = int(math.ceil(bx1)), int(math.ceil(by1))
        m = int(max(16, self.margin * max(x1 - x0, y1 - y0)))
        cx0, cy0, cx1, cy1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
        crop = self._crop(cy0, cy1, cx0, cx1)
        ch, cw = crop.shape[:2]
        scale = min(1.0, self.max_side / max(ch, cw))
        if scale < 1.0:
            crop = cv2.resize(crop, (max(1, round(cw * scale)), max(1, round(ch * scale))), interpolation=cv2.INTER_AREA)
        sx, sy = crop.shape[1] / cw, crop.shape[0] / ch
        rx0, ry0 = int((x0 - cx0) * sx), int((y0 - cy0) * sy)
        rx1 = max(rx0 + 1, int(round((x1 - cx0) * sx)))
        ry1 = max(ry0 + 1, int(round((y1 - cy0) * sy)))
        use_features = self.features == "texture" or (self.features == "auto" and self._grey)
        img = feature_image(crop) if use_features else crop
        mask = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
        mask[ry0:ry1, rx0:rx1] = cv2.GC_PR_FGD
        core = self._core_mask(mask.shape, (rx0, ry0, rx1, ry1))
        if core is not None:
            mask[core] = cv2.GC_FGD
        pos, neg = self._point_discs(mask.shape, p, (cx0, cy0), (sx, sy))
        mask[pos] = cv2.GC_FGD
        mask[neg] = cv2.GC_BGD
        reason = None
        if np.count_nonzero(mask == cv2.GC_BGD) < MIN_BACKGROUND_PIXELS:
            reason = "no-background"
        else:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            # GrabCut seeds its colour models with k-means on OpenCV's thread RNG: reseed it per box
            # so a label depends only on the image and its prompts, not on what ran before.
            cv2.setRNGSeed(GRABCUT_SEED)
            try:
                cv2.grabCut(img, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            except cv2.error as e:
                # A flat crop or too few distinct pixels: no colour model can be fitted.
                log.info("GrabCut could not model box %s (%s)", p.box, str(e).strip().splitlines()[-1][:80])
                reason = "grabcut-error"
        if reason is None:
            fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
            fg = _largest_component(fg, keep=pos)
            box_area = (ry1 - ry0) * (rx1 - rx0)
            core_area = int(np.count_nonzero(core)) if core is not None else 0
            grown = int(np.count_nonzero(fg)) - core_area
            if grown <= 0:
                reason = "empty"
            elif np.count_nonzero(fg) < self.min_fraction * box_area:
                reason = "tiny"
            elif self.min_extent > 0:
                ys, xs = np.nonzero(fg)
                if min((xs.max() - xs.min() + 1) / (rx1 - rx0), (ys.max() - ys.min() + 1) / (ry1 - ry0)) < self.min_extent:
                    reason = "short"
        if reason is not None:
            # "no-background" / "grabcut-error": GrabCut saw nothing to separate -> the whole box;
            # "empty" / "tiny" / "short": nothing object-like was separated -> the configured shape prior.
            shape = "box" if reason in ("no-background", "grabcut-error") else self.fallback
            fg = np.zeros(crop.shape[:2], np.uint8)
            if shape == "box":
                fg[ry0:ry1, rx0:rx1] = 1
            else:
                cv2.ellipse(fg, (((rx0 + rx1 - 1) / 2, (ry0 + ry1 - 1) / 2), (rx1 - rx0, ry1 - ry0), 0), 1, -1)
            fg[pos] = 1
            fg[neg] = 0
            log.debug("GrabCut fell back to the %s for box %s (%s)", shape, p.box, reason)
        if fg.shape != (ch, cw):
            fg = cv2.resize(fg, (cw, ch), interpolation=cv2.INTER_NEAREST)
        # The prompt box bounds the object: nothing outside it (the crop margin is only context).
        inside = fg[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0].astype(bool)
        return CropMask(inside, x0, y0, (h, w)), reason

    def _core_mask(self, shape, rect) -> np.ndarray | None:
        """The definite-foreground ellipse at the box centre, or None when ``core`` is 0 or it is < 1 px."""
        import cv2
        if self.core <= 0:
            return None
        rx0, ry0, rx1, ry1 = rect
        ax, ay = self.core * (rx1 - rx0) / 2, self.core * (ry1 - ry0) / 2
        if ax < 1 or ay < 1:
            return None
        core = np.zeros(shape, np.uint8)
        cv2.ellipse(core, (((rx0 + rx1 - 1) / 2, (ry0 + ry1 - 1) / 2), (2 * ax, 2 * ay), 0), 1, -1)
        return core.astype(bool)

    def _point_discs(self, shape, p: BoxPrompt, origin, scale) -> tuple[np.ndarray, np.ndarray]:
        """Discs of ``point_radius`` around the positive and the negative points, in crop pixels."""
        import cv2
        discs = []
        for pts in (p.positive_points, p.negative_points):
            d = np.zeros(shape, np.uint8)
            for x, y in pts:
                cv2.circle(d, (int(round((x - origin[0]) * scale[0])), int(round((y - origin[1]) * scale[1]))),
                           self.point_radius, 1, -1)
            discs.append(d.astype(bool))
        return discs[0], discs[1]


def is_grey(rgb: np.ndarray, tolerance: float = 2.0) -> bool:
    """Whether an RGB uint8 image is grey: its channels differ by at most ``tolerance`` levels on average.

    A small tolerance, not equality, because grey frames saved through a colour pipeline (JPEG
    chroma, a debayered NAVCAM) carry a level or two of channel noise and no colour information.
    """
    total, n = 0, 0
    for r in range(0, rgb.shape[0], 512):  # in row blocks: a 12000 x 12000 image needs no int16 copy
        a = rgb[r:r + 512].astype(np.int16)
        total += int(np.abs(a[..., 0] - a[..., 1]).sum()) + int(np.abs(a[..., 1] - a[..., 2]).sum())
        n += a.shape[0] * a.shape[1]
    return total / n / 2 <= tolerance


def feature_image(crop: np.ndarray) -> np.ndarray:
    """Three uint8 channels that tell terrain apart on a grey crop, for GrabCut's 3-D GMMs.

    0: CLAHE intensity (local contrast equalised, so a dim rock in shadow still differs from its
    surroundings); 1: local standard deviation in a 7 px window (texture: smooth sand versus rough
    bedrock); 2: Gaussian-blurred intensity (sigma 3 px: the regional brightness without the
    texture noise). Each channel is stretched to 0..255 between its 1st and 99th percentile in the
    crop, so no channel dominates GrabCut's colour distances by its scale alone.
    """
    import cv2
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(grey)
    g = grey.astype(np.float32)
    mean = cv2.blur(g, (7, 7))
    std = np.sqrt(np.maximum(cv2.blur(g * g, (7, 7)) - mean * mean, 0.0))
    smooth = cv2.GaussianBlur(g, (0, 0), 3.0)
    return np.ascontiguousarray(np.dstack([_stretch(c) for c in (clahe.astype(np.float32), std, smooth)]))


def _stretch(c: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(c, (1, 99))
    if hi - lo < 1e-6:
        return np.zeros(c.shape, np.uint8)
    return np.clip((c - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _largest_component(fg: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """The largest 8-connected component of a 0/1 mask (uint8), plus any component under ``keep``.

    One box prompts one object, so stray specks GrabCut leaves elsewhere in the box are noise;
    a component the user marked with a positive point is kept whatever its size.
    """
    import cv2
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 2:
        return fg
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    out = labels == k
    if keep is not None and keep.any():
        marked = np.unique(labels[keep & (fg > 0)])
        out |= np.isin(labels, marked[marked > 0])
    return out.astype(np.uint8)
