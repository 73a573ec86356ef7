"""Masks that live in a window of the image: what keeps box labelling bounded on huge images.

A box prompt's mask is zero outside the box (GrabCut) or outside one SAM tile, so an engine
returns a :class:`CropMask` (the window's pixels and where the window sits) instead of a full
image-sized array per box: 60 boxes on a 12000 x 12000 image cost their windows, not 60 x 144 MB.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CropMask:
    """A boolean mask ``mask`` whose top-left pixel is (``x0``, ``y0``) of an image of ``image_shape``."""
    mask: np.ndarray
    x0: int
    y0: int
    image_shape: tuple[int, int]

    @property
    def window(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def full(self) -> np.ndarray:
        """The mask as a full image-sized boolean array."""
        out = np.zeros(tuple(self.image_shape[:2]), bool)
        out[self.window] = self.mask
        return out

    @classmethod
    def tight(cls, full: np.ndarray) -> "CropMask":
        """The smallest window holding every set pixel of a full mask (an empty mask keeps a 0 x 0 window)."""
        full = np.asarray(full, bool)
        rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
        if rows.size == 0:
            return cls(np.zeros((0, 0), bool), 0, 0, full.shape[:2])
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return cls(full[y0:y1, x0:x1].copy(), int(x0), int(y0), full.shape[:2])
