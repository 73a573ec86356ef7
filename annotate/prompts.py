"""Box prompts: the one record of what an expert drew, shared by engines, sessions and box files."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from segmodels.errors import MarsamError


@dataclass
class BoxPrompt:
    """A box (x0, y0, x1, y1 in image pixels, x right, y down) of class ``class_id``.

    Positive and negative points (x, y) refine that one box's mask.
    """
    box: tuple[float, float, float, float]
    class_id: int
    positive_points: list[tuple[float, float]] = field(default_factory=list)
    negative_points: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self):
        self.box = tuple(float(v) for v in self.box)
        if len(self.box) != 4 or not all(math.isfinite(v) for v in self.box):
            raise MarsamError(f"a box needs 4 finite numbers x0, y0, x1, y1; got {self.box}")
        self.class_id = int(self.class_id)
        self.positive_points = [(float(x), float(y)) for x, y in self.positive_points]
        self.negative_points = [(float(x), float(y)) for x, y in self.negative_points]

    @property
    def num_points(self) -> int:
        return len(self.positive_points) + len(self.negative_points)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "class_id": self.class_id,
                "positive_points": [list(p) for p in self.positive_points],
                "negative_points": [list(p) for p in self.negative_points]}

    @classmethod
    def from_dict(cls, d: dict) -> "BoxPrompt":
        try:
            return cls(box=tuple(d["box"]), class_id=d["class_id"],
                       positive_points=[tuple(p) for p in d.get("positive_points", [])],
                       negative_points=[tuple(p) for p in d.get("negative_points", [])])
        except (KeyError, TypeError, ValueError) as e:
            raise MarsamError(f"malformed box prompt {d!r} ({e}); expected box [x0, y0, x1, y1] and class_id") from None


def clip_box(box: Sequence[float], shape: tuple[int, int]) -> tuple[tuple[float, float, float, float], bool]:
    """``box`` clipped to an image of ``shape`` (h, w), and whether clipping changed it.

    Raises MarsamError for an inverted box (x1 < x0 or y1 < y0) or one with no area inside the
    image, since no mask can be drawn from it; the caller rejects that box and goes on.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise MarsamError(f"box {tuple(box)} is inverted (x1 < x0 or y1 < y0); give x0, y0, x1, y1 with x0 < x1, y0 < y1")
    h, w = shape[:2]
    c = (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))
    if c[2] - c[0] < 1 or c[3] - c[1] < 1:
        what = "has zero area" if (x1 - x0 < 1 or y1 - y0 < 1) else f"lies outside the {w}x{h} image"
        raise MarsamError(f"box {tuple(box)} {what}; draw a box at least 1 px wide and high inside the image")
    return c, c != (x0, y0, x1, y1)
