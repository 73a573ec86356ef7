"""Prompts derived from ground-truth label maps, to evaluate prompt modes as an expert would use them.

The paper's prompt-mode comparison asks: if an expert boxed (or clicked) every terrain region,
how close would the masks come to the ground truth? We simulate that expert from the ground
truth itself:

- one region per 4-connected component of each class (``skimage.measure.label``), because an
  expert boxes a patch of sand, not "all sand in the image";
- its tight box, optionally jittered (seeded) to model a hurried expert whose box edges miss by
  a fraction of the box side, as in SAM's own box-jitter evaluation;
- one interior point at the maximum of the distance transform: the pixel deepest inside the
  region. The centroid is not used because it falls outside concave or ring-shaped regions,
  which would make point prompts look worse than they are.

Regions smaller than ``min_area`` pixels are skipped: the AI4Mars masks were bilinear-downscaled,
which leaves slivers of a few pixels along class borders that no expert would ever box.

Coordinates follow SAM's continuous pixel frame: pixel (row r, column c) covers
[c, c+1) x [r, r+1), so a point at the centre of that pixel is (c + 0.5, r + 0.5) and a tight box
is (min_c, min_r, max_c + 1, max_r + 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmodels.errors import MarsamError
from segmodels.labels import IGNORE_INDEX

DEFAULT_MIN_AREA = 100


@dataclass
class RegionPrompt:
    """One ground-truth region and the prompts an expert would give for it."""
    class_id: int
    mask: np.ndarray                            # bool H x W, the ground-truth region
    area: int
    box: tuple[float, float, float, float]      # x0, y0, x1, y1 (possibly jittered)
    tight_box: tuple[float, float, float, float]
    point: tuple[float, float]                  # x, y: the deepest interior pixel's centre

    def to_box_prompt(self):
        """The region as a box prompt of annotate's engines (box mode)."""
        from .prompts import BoxPrompt
        return BoxPrompt(box=tuple(float(v) for v in self.box), class_id=int(self.class_id))


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel farthest from the region's edge, the image border counting as edge.

    The mask is padded with background before the distance transform so that a region touching
    the image border is not treated as extending beyond it. Ties go to the first pixel in
    row-major order, which keeps the result deterministic.
    """
    from scipy import ndimage
    m = np.asarray(mask, bool)
    if m.ndim != 2 or not m.any():
        raise MarsamError("interior_point needs a non-empty 2-D mask; the region has no pixels")
    dist = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(c) + 0.5, float(r) + 0.5


def jitter_box(box, amount: float, rng: np.random.Generator, shape: tuple[int, int]):
    """Move each box edge by Gaussian noise of std ``amount`` times the box side, kept in the image.

    The box never collapses: each side keeps at least one pixel, so a jittered box is always a
    valid prompt (an inverted or empty box would be rejected by the engines, which is not what
    a hurried expert produces).
    """
    if amount < 0:
        raise MarsamError(f"box jitter must be >= 0 (a fraction of the box side, e.g. 0.1); got {amount}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if amount == 0:
        return x0, y0, x1, y1
    h, w = shape
    bw, bh = x1 - x0, y1 - y0
    dx0, dx1 = rng.normal(0.0, amount * bw, 2)
    dy0, dy1 = rng.normal(0.0, amount * bh, 2)
    nx0 = float(np.clip(x0 + dx0, 0, w - 1))
    ny0 = float(np.clip(y0 + dy0, 0, h - 1))
    nx1 = float(np.clip(x1 + dx1, nx0 + 1, w))
    ny1 = float(np.clip(y1 + dy1, ny0 + 1, h))
    return nx0, ny0, nx1, ny1


def region_prompts(label_map: np.ndarray, min_area: int = DEFAULT_MIN_AREA, jitter: float = 0.0,
                   seed: int = 0, ignore_index: int = IGNORE_INDEX,
                   num_classes: int | None = None) -> list[RegionPrompt]:
    """One :class:`RegionPrompt` per connected region of each class, largest regions first.

    ``jitter`` is a fraction of the box side (0.1 = edges off by 10 % of the side on average);
    ``seed`` makes the jitter reproducible per image. Pixels equal to ``ignore_index`` belong to
    no region. With ``num_classes`` given, values outside 0..num_classes-1 raise an error
    instead of silently becoming classes.
    """
    from skimage.measure import label, regionprops
    lm = np.asarray(label_map)
    if lm.ndim != 2:
        raise MarsamError(f"a ground-truth label map must be 2-D (H x W); got shape {lm.shape}")
    if not np.issubdtype(lm.dtype, np.integer):
        raise MarsamError(f"a ground-truth label map must hold integer class ids; got dtype {lm.dtype}")
    if min_area < 1:
        raise MarsamError(f"min_area must be at least 1 pixel; got {min_area}")
    if num_classes is not None:
        bad = sorted(int(v) for v in np.unique(lm) if v != ignore_index and not 0 <= v < num_classes)
        if bad:
            raise MarsamError(f"label map holds values {bad[:8]} that are not classes 0..{num_classes - 1} "
                              f"or {ignore_index} (ignore); check the mask folder or the label spec")
    rng = np.random.default_rng(seed)
    # label() separates equal-valued components; ignore pixels are its background.
    shifted = lm.astype(np.int64) + 1
    shifted[lm == ignore_index] = 0
    components = label(shifted, background=0, connectivity=1)
    out = []
    for reg in sorted(regionprops(components), key=lambda r: (-r.area, r.label)):
        if reg.area < min_area:
            continue
        r0, c0, r1, c1 = reg.bbox
        mask = np.zeros(lm.shape, bool)
        mask[r0:r1, c0:c1] = reg.image
        cls = int(lm[reg.coords[0][0], reg.coords[0][1]])
        px, py = interior_point(reg.image)
        tight = (float(c0), float(r0), float(c1), float(r1))
        out.append(RegionPrompt(class_id=cls, mask=mask, area=int(reg.area),
                                box=jitter_box(tight, jitter, rng, lm.shape), tight_box=tight,
                                point=(px + c0, py + r0)))
    return out
