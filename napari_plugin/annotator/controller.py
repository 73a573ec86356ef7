"""The annotator's state machine, without Qt: boxes and points -> prompts -> masks -> label map.

Why a separate, Qt-free object: the rules (which boxes need segmenting again, how masks merge,
what undo restores, when the session is written) are the part worth testing and reusing, and
they must not depend on how napari emits events. The widget turns layer contents into
:class:`Box` records and calls :meth:`AnnotatorController.update`; the controller answers
with the prompts that still need masks; masks come back through :meth:`add_masks` (computed in
a worker thread by the widget, with annotate's engine); :meth:`render` merges them with
annotate's ``merge_masks``.

Masks are cached by the prompt's content (box, class, points), not by layer index, so deleting,
reordering or undoing never mixes up masks, and moving a box back where it was costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotate.engines import merge_masks
from annotate.prompts import BoxPrompt
from annotate.prompts import clip_box as _clip_box
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

MAX_UNDO = 100


@dataclass(frozen=True)
class Box:
    """One rectangle of the Shapes layer with its class and refining points (image pixels, x/y)."""
    box: tuple[float, float, float, float]
    class_id: int
    positive: tuple[tuple[float, float], ...] = field(default=())
    negative: tuple[tuple[float, float], ...] = field(default=())

    def prompt(self) -> BoxPrompt:
        return BoxPrompt(box=tuple(self.box), class_id=int(self.class_id),
                         positive_points=[tuple(p) for p in self.positive],
                         negative_points=[tuple(p) for p in self.negative])

    @property
    def key(self) -> tuple:
        """What the mask depends on; the class only changes the painted value, not the mask."""
        return (tuple(round(v, 2) for v in self.box), self.positive, self.negative)

    @classmethod
    def from_prompt(cls, p: BoxPrompt) -> "Box":
        return cls(box=tuple(float(v) for v in p.box), class_id=int(p.class_id),
                   positive=tuple(tuple(map(float, q)) for q in p.positive_points),
                   negative=tuple(tuple(map(float, q)) for q in p.negative_points))


def clip_box(box, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """The part of ``box`` (x0, y0, x1, y1, any corner order: napari lets users drag either way)
    inside an image of ``shape`` (H, W); annotate's rule (MarsamError when nothing is inside)."""
    x0, x1 = sorted((float(box[0]), float(box[2])))
    y0, y1 = sorted((float(box[1]), float(box[3])))
    return _clip_box((x0, y0, x1, y1), shape)[0]


class AnnotatorController:
    """Boxes of one image, their masks, the merged label map, undo history and autosave."""

    def __init__(self, label_spec: LabelSpec, shape: tuple[int, int]):
        self.label_spec = label_spec
        self.shape = tuple(int(s) for s in shape[:2])
        self.boxes: list[Box] = []
        self._masks: dict[tuple, np.ndarray] = {}
        self._history: list[list[Box]] = []
        self.label_map = np.full(self.shape, label_spec.ignore_index, np.uint8)

    # --- loading a saved image -------------------------------------------------------------
    def load(self, prompts: list[BoxPrompt], label_map: np.ndarray | None) -> None:
        """Start from a session's saved boxes and label map (shown as saved, not recomputed)."""
        self.boxes = [Box.from_prompt(p) for p in prompts]
        self._masks.clear()
        self._history.clear()
        if label_map is not None:
            self.label_map = self.label_spec.validate_label_map(label_map, "saved label map").copy()

    # --- changes -----------------------------------------------------------------------------
    def update(self, boxes: list[Box], record: bool = True) -> list[Box]:
        """Replace the boxes; return those whose mask is not known yet (to be segmented)."""
        boxes = list(boxes)
        if boxes == self.boxes:
            return self.missing()
        if record:
            self._history.append(list(self.boxes))
            del self._history[:-MAX_UNDO]
        self.boxes = boxes
        live = {b.key for b in boxes}
        for k in [k for k in self._masks if k not in live and len(self._masks) > 4 * len(live) + 16]:
            del self._masks[k]      # keep a few old masks (cheap undo), drop the rest
        return self.missing()

    def missing(self) -> list[Box]:
        seen, out = set(), []
        for b in self.boxes:
            if b.key not in self._masks and b.key not in seen:
                seen.add(b.key)
                out.append(b)
        return out

    def add_masks(self, boxes: list[Box], masks: list[np.ndarray]) -> None:
        if len(boxes) != len(masks):
            raise ValueError(f"{len(boxes)} boxes but {len(masks)} masks")
        for b, m in zip(boxes, masks):
            m = np.asarray(m, bool)
            if m.shape != self.shape:
                raise ValueError(f"mask of shape {m.shape} for an image of shape {self.shape}")
            self._masks[b.key] = m

    def render(self) -> np.ndarray | None:
        """The merged label map, or None while some box still waits for its mask."""
        if self.missing():
            return None
        if not self.boxes:
            self.label_map = np.full(self.shape, self.label_spec.ignore_index, np.uint8)
        else:
            self.label_map = merge_masks([self._masks[b.key] for b in self.boxes],
                                         [b.class_id for b in self.boxes], self.shape,
                                         ignore_index=self.label_spec.ignore_index)
        return self.label_map

    # --- undo --------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def undo(self) -> list[Box]:
        """Go back to the boxes before the last change; returns them (the widget redraws them)."""
        if not self._history:
            raise MarsamError("nothing to undo")
        self.boxes = self._history.pop()
        return list(self.boxes)

    def prompts(self) -> list[BoxPrompt]:
        return [b.prompt() for b in self.boxes]
