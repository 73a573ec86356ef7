"""How an image becomes a network's input: the one home of marsam's input normalisation.

A U-Net reads ``(x - mean) / std`` of the image's intensities in [0, 1] on ``in_channels``
channels (1: grey, 3: RGB); the defaults below are what every marsam U-Net is trained with.
The SAM domain decoder reads SAM image embeddings instead (``input == "sam_embedding"``, no
mean or std: SAM normalises the image itself). A checkpoint stores this type as a JSON dict
(:meth:`Normalization.to_dict`), and :meth:`Normalization.coerce` reads that dict back, so old
checkpoints keep loading.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

import numpy as np

from .errors import MarsamError
from .images import DEFAULT_MEAN, DEFAULT_STD, to_model_input

IMAGE = "image"
SAM_EMBEDDING = "sam_embedding"


@dataclass(frozen=True)
class Normalization:
    in_channels: int = 1
    mean: float | None = DEFAULT_MEAN
    std: float | None = DEFAULT_STD
    input: str = IMAGE          # IMAGE or SAM_EMBEDDING
    size: int | None = None     # training input size: recorded, never used to resize

    def __post_init__(self):
        if self.input not in (IMAGE, SAM_EMBEDDING):
            raise MarsamError(f"unknown model input {self.input!r}; use {IMAGE!r} or {SAM_EMBEDDING!r}")
        if self.reads_pixels and self.in_channels not in (1, 3):
            raise MarsamError(f"models take 1 or 3 input channels, not {self.in_channels}")
        if self.std is not None and not (math.isfinite(self.std) and self.std > 0):
            raise MarsamError(f"normalisation std must be positive, got {self.std}")
        if self.mean is not None and not math.isfinite(self.mean):
            raise MarsamError(f"normalisation mean must be a finite number, got {self.mean}")
        if self.reads_pixels and (self.mean is None or self.std is None):
            raise MarsamError("an image-reading model needs a normalisation mean and std")

    @property
    def reads_pixels(self) -> bool:
        """True for networks fed with the image itself (U-Nets), False for embedding readers."""
        return self.input == IMAGE

    @classmethod
    def coerce(cls, value: "Normalization | Mapping | None", base: "Normalization | None" = None) -> "Normalization":
        """``value`` as a Normalization: a dict (a checkpoint's, or partial overrides of ``base``),
        a Normalization, or None (``base``, default: the marsam U-Net defaults)."""
        base = base if base is not None else DEFAULT_NORMALIZATION
        if value is None:
            return base
        if isinstance(value, Normalization):
            return value
        if not isinstance(value, Mapping):
            raise MarsamError(f"normalisation must be a dict or a Normalization, not {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        # a checkpoint written before this type existed may hold other keys: they are ignored
        given = {k: value[k] for k in value if k in known}
        try:
            if "in_channels" in given:
                given["in_channels"] = int(given["in_channels"])
            for k in ("mean", "std"):
                if given.get(k) is not None:
                    given[k] = float(given[k])
        except (TypeError, ValueError) as e:
            raise MarsamError(f"normalisation {dict(value)!r} holds a value that is not a number ({e})") from None
        return replace(base, **given)

    def to_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key: str):
        """``norm["mean"]``: read access for code written when this was a dict (the model cards)."""
        if key not in self.to_dict():
            raise KeyError(key)
        return getattr(self, key)

    def to_model_input(self, image: np.ndarray, what: str = "image"):
        """The 1 x C x H x W float tensor of ``image`` (any dtype marsam reads)."""
        if not self.reads_pixels:
            raise MarsamError(f"this model reads {self.input.replace('_', ' ')}s, not images")
        return to_model_input(image, self.in_channels, self.mean, self.std, what=what)

    def to_unit(self, x):
        """Normalised input back to intensities (in [0, 1] for a real image)."""
        if self.mean is None:
            return x
        return x * self.std + self.mean

    def from_unit(self, x):
        """Intensities (in [0, 1]) to normalised input."""
        if self.mean is None:
            return x
        return (x - self.mean) / self.std

    def renormalize(self, x, source: "Normalization"):
        """``x``, normalised with ``source``, normalised with this instead (unchanged when both
        agree or when this one reads embeddings)."""
        if self.mean is None or source.mean is None or (self.mean, self.std) == (source.mean, source.std):
            return x
        return self.from_unit(source.to_unit(x))


DEFAULT_NORMALIZATION = Normalization()
