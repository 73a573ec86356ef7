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

    @property
    def background_id(self) -> int | None:
        """The id of the class named "background", if any. A spec with one labels *objects* (pits,
        rocks) on a background, so an image whose objects are all boxed is complete: every pixel
        outside the masks is background. A spec without one (AI4Mars terrain) leaves unboxed
        pixels unlabelled."""
        for i, c in enumerate(self.classes):
            if c.lower() == "background":
                return i
        return None

    def complete(self, label_map: np.ndarray) -> np.ndarray:
        """``label_map`` with every unlabelled pixel set to background (see :attr:`background_id`)."""
        if self.background_id is None:
            raise MarsamError(f"label spec {self.name!r} has no 'background' class, so an image cannot be "
                              "marked complete; its unboxed pixels stay unlabelled")
        out = np.array(label_map, dtype=np.uint8, copy=True)
        out[out == self.ignore_index] = self.background_id
        return out

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


def read_label_yaml(path) -> tuple[LabelSpec, dict | None]:
    """A label spec from a YAML file, and the box-file class mapping it may give.

    Two forms are read. A marsam spec::

        name: my-pits                       # optional, default: the file name
        classes: [background, skylight, pit]
        colors: [[40, 40, 40], [250, 200, 60], [230, 70, 60]]   # optional, one RGB per class
        box_classes: {"1": skylight, "*": pit}                 # optional: box-file class -> class

    or a YOLO ``data.yaml`` (``names: [...]`` or ``{0: ..., 1: ...}``), whose object classes are
    kept, with a ``background`` class put first: boxes mark objects, the rest of the image is
    background. Box-file classes are then read by name (YOLO id k is ``names[k]``).
    """
    import yaml
    from pathlib import Path
    path = Path(path).expanduser()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MarsamError(f"cannot read label spec file {path} ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise MarsamError(f"label spec file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not ({"classes", "names"} & set(doc)):
        raise MarsamError(f"label spec file {path} needs a 'classes: [background, ...]' list "
                          "(or a YOLO data.yaml 'names' list)")
    name = str(doc.get("name") or (f"{path.parent.name}-classes" if path.stem == "data" else path.stem))
    if "classes" in doc:
        classes = doc["classes"]
    else:
        names = doc["names"]
        try:
            names = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
        except TypeError:
            raise MarsamError(f"label spec file {path}: names must be a list or a mapping of ids to names") from None
        classes = ["background"] + [str(n) for n in (names or [])]
    if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
        raise MarsamError(f"label spec file {path}: 'classes' must be a list of class names")
    classes = [str(c) for c in classes]
    colors = doc.get("colors")
    spec = spec_from_names(classes, name)
    if colors is None and spec.background_id is not None:   # background dark, objects bright
        colors = [list(c) for c in spec.colors]
        colors[spec.background_id] = [40, 40, 40]
    if colors is not None:
        try:
            spec = LabelSpec(name=name, classes=tuple(classes), colors=tuple(tuple(int(v) for v in c) for c in colors))
        except (TypeError, ValueError):
            raise MarsamError(f"label spec file {path}: 'colors' must be one [r, g, b] list per class") from None
    box_classes = doc.get("box_classes")
    if box_classes is not None and not isinstance(box_classes, dict):
        raise MarsamError(f"label spec file {path}: 'box_classes' must map box-file classes to class names")
    return spec, ({str(k): v for k, v in box_classes.items()} if box_classes else None)


def get_label_spec(spec: str | dict | LabelSpec | None = None) -> LabelSpec:
    """A built-in spec by name, a YAML file (:func:`read_label_yaml`), a spec from a dict
    (checkpoint/session metadata), or the default."""
    if spec is None:
        return AI4MARS
    if isinstance(spec, LabelSpec):
        return spec
    if isinstance(spec, dict):
        return LabelSpec.from_dict(spec)
    key = str(spec).lower()
    if key in _BUILTIN:
        return _BUILTIN[key]
    if key.endswith((".yaml", ".yml")):
        return read_label_yaml(spec)[0]
    raise MarsamError(f"unknown label spec {spec!r}; built-in specs are {', '.join(builtin_specs())}, or give "
                      "a YAML file (classes: [background, ...]) or a YOLO data.yaml")


def spec_from_names(names: Sequence[str], name: str = "custom") -> LabelSpec:
    """A spec for arbitrary class names (e.g. a YOLO data.yaml), with distinct generated colours."""
    import colorsys
    colors = []
    for i in range(len(names)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.61803) % 1.0, 0.65, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return LabelSpec(name=name, classes=tuple(names), colors=tuple(colors))
