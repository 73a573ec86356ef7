"""Training augmentations that keep images and label maps aligned.

Geometric changes (flips, a small rotation, scale and shift) are applied with one affine
matrix to the image, the label map and any soft-label maps; pixels that come from outside the
image are filled with the ignore value in the label map, so the losses never learn a class for
invented pixels. Photometric changes (brightness, contrast, Gaussian noise) touch the image only.
Vertical flips are off by default: rover views have a sky and a ground, orbital crops do not.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segmodels.labels import IGNORE_INDEX


@dataclass
class Augment:
    hflip: float = 0.5
    vflip: float = 0.0
    rotate: float = 10.0          #: max degrees either way
    scale: float = 0.1            #: scale in [1 - scale, 1 + scale]
    translate: float = 0.05       #: fraction of the side
    affine_p: float = 0.5         #: probability of the affine step
    brightness: float = 0.15      #: additive, in units of the [0, 1] range
    contrast: float = 0.15        #: multiplicative around the mean
    noise: float = 0.02           #: std of Gaussian noise
    ignore_index: int = IGNORE_INDEX

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 soft: np.ndarray | None = None):
        """``image`` float32 H x W [x C] in [0, 1], ``mask`` uint8 H x W, ``soft`` K x H x W or None."""
        if rng.random() < self.hflip:
            image, mask = image[:, ::-1], mask[:, ::-1]
            soft = soft[:, :, ::-1] if soft is not None else None
        if rng.random() < self.vflip:
            image, mask = image[::-1], mask[::-1]
            soft = soft[:, ::-1] if soft is not None else None
        if rng.random() < self.affine_p:
            h, w = mask.shape
            angle = rng.uniform(-self.rotate, self.rotate)
            s = rng.uniform(1 - self.scale, 1 + self.scale)
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, s)
            m[:, 2] += rng.uniform(-self.translate, self.translate, 2) * (w, h)
            image = cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
            mask = cv2.warpAffine(np.ascontiguousarray(mask), m, (w, h), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=self.ignore_index)
            if soft is not None:
                soft = np.stack([cv2.warpAffine(np.ascontiguousarray(c), m, (w, h), flags=cv2.INTER_LINEAR,
                                                borderMode=cv2.BORDER_REFLECT_101) for c in soft])
        image = np.asarray(image, np.float32)
        if self.contrast:
            c = rng.uniform(1 - self.contrast, 1 + self.contrast)
            image = (image - image.mean()) * c + image.mean()
        if self.brightness:
            image = image + rng.uniform(-self.brightness, self.brightness)
        if self.noise:
            image = image + rng.normal(0.0, self.noise, image.shape).astype(np.float32)
        image = np.clip(image, 0.0, 1.0)
        out_soft = np.ascontiguousarray(soft, np.float32) if soft is not None else None
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(mask), out_soft
