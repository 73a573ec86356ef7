"""Label specifications: the one home of class names, colours and the ignore value.

A label map is a 2-D uint8 array of class ids 0..K-1 with 255 meaning unlabelled; losses and
metrics skip 255. Every package reads class names and colours from a :class:`LabelSpec` so that
no list of classes is written twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import MarsamError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelSpec:
    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX
    description: str = field(default="", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c) for c in self.colors))
        if len(self.classes) != len(self.colors):
            raise MarsamError(
                f"label spec {self.name!r} has {len(self.classes)} classes but "
                f"{len(self.colors)} colours; give one RGB colour per class")
        if not 1 <= len(self.classes) < self.ignore_index:
            raise MarsamError(f"label spec {self.name!r} needs 1..{self.ignore_index - 1} classes")
        if len(set(self.classes)) != len(self.classes):
            raise MarsamError(f"label spec {self.name!r} repeats a class name: {self.classes}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_id(self, name_or_id: str | int) -> int:
        """Resolve a class given by name (case-insensitive) or by id."""
        if isinstance(name_or_id, (int, np.integer)):
            if 0 <= int(name_or_id) < self.num_classes:
                return int(name_or_id)
        else:
            key = str(name_or_id).strip().lower().replace(" ", "_")
            for i, c in enumerate(self.classes):
                if c.lower() == key:
                    return i
            if key.isdigit() and int(key) < self.num_classes:
                return int(key)
        raise MarsamError(
            f"unknown class {name_or_id!r} for label spec {self.name!r}; "
            f"use one of {', '.join(self.classes)} (or ids 0..{self.num_classes - 1})")

    def colormap(self) -> dict[int, tuple[float, float, float, float]]:
        """Class id -> RGBA in 0..1, the form napari's Labels layers take."""
        cmap = {i: (r / 255, g / 255, b / 255, 1.0) for i, (r, g, b) in enumerate(self.colors)}
        cmap[self.ignore_index] = (0.0, 0.0, 0.0, 0.0)
        return cmap

    def colorize(self, label_map: np.ndarray) -> np.ndarray:
        """RGB uint8 rendering of a label map; ignored pixels are black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors, np.uint8)
        return lut[np.asarray(label_map, np.uint8)]

    def validate_label_map(self, label_map: np.ndarray, what: str = "label map") -> np.ndarray:
        arr = np.asarray(label_map)
        if arr.ndim != 2:
            raise MarsamError(f"{what} must be 2-D (H x W); got shape {arr.shape}")
        values = np.unique(arr)
        bad = [int(v) for v in values if not (0 <= v < self.num_classes or v == self.ignore_index)]
        if bad:
            raise MarsamError(
                f"{what} holds values {bad[:8]} outside label spec {self.name!r} "
                f"(0..{self.num_classes - 1}, {self.ignore_index} = unlabelled); "
                f"remap them or choose another --labels spec")
        return arr.astype(np.uint8, copy=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes),
                "colors": [list(c) for c in self.colors], "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpec":
        """A spec from its dict form (session, checkpoint metadata); anything malformed is a MarsamError."""
        short = repr(d)[:120]
        if not isinstance(d, dict):
            raise MarsamError(f"malformed label spec {short}: expected an object with name, classes, colors")
        try:
            name, classes, colors = d["name"], d["classes"], d["colors"]
        except KeyError as e:
            raise MarsamError(f"malformed label spec {short}: missing {e}") from None
        if not isinstance(name, str) or not isinstance(classes, list) or not isinstance(colors, list) \
                or not all(isinstance(c, str) and c for c in classes):
            raise MarsamError(f"malformed label spec {short}: name must be text, classes a list of names, "
                              "colors a list of RGB triples")
        ok = all(isinstance(c, (list, tuple)) and len(c) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c) for c in colors)
        ignore = d.get("ignore_index", IGNORE_INDEX)
        if not ok or not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 255:
            raise MarsamError(f"malformed label spec {short}: colors must be RGB triples of 0..255 and "
                              "ignore_index 0..255")
        return cls(name=name, classes=tuple(classes), colors=tuple(tuple(c) for c in colors),
                   ignore_index=ignore)


AI4MARS = LabelSpec(
    name="ai4mars",
    classes=("soil", "bedrock", "sand", "big_rock"),
    colors=((214, 152, 84), (120, 94, 80), (240, 214, 120), (70, 130, 200)),
    description="AI4Mars rover terrain: 0 soil, 1 bedrock, 2 sand, 3 big rock; 255 no label",
)

HIRISE_PITS = LabelSpec(
    name="hirise-pits",
    classes=("background", "pit"),
    colors=((40, 40, 40), (230, 70, 60)),
    description="HiRISE pits and skylights as one binary class",
)

_BUILTIN = {s.name: s for s in (AI4MARS, HIRISE_PITS)}


def builtin_specs() -> list[str]:
    return sorted(_BUILTIN)


def get_label_spec(spec: str | dict | LabelSpec | None = None) -> LabelSpec:
    """A built-in spec by name, a spec from a dict (checkpoint/session metadata), or the default."""
    if spec is None:
        return AI4MARS
    if isinstance(spec, LabelSpec):
        return spec
    if isinstance(spec, dict):
        return LabelSpec.from_dict(spec)
    key = str(spec).lower()
    if key in _BUILTIN:
        return _BUILTIN[key]
    raise MarsamError(f"unknown label spec {spec!r}; built-in specs are {', '.join(builtin_specs())}")


def spec_from_names(names: Sequence[str], name: str = "custom") -> LabelSpec:
    """A spec for arbitrary class names (e.g. a YOLO data.yaml), with distinct generated colours."""
    import colorsys
    colors = []
    for i in range(len(names)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.61803) % 1.0, 0.65, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return LabelSpec(name=name, classes=tuple(names), colors=tuple(colors))
