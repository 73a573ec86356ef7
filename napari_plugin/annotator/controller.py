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
Each is kept as its bounding-box crop, and :meth:`render` merges incrementally: only the region
where boxes were added, removed or re-classed since the last render is merged again (with
annotate's overlap rule, smaller masks on top; a test checks it against ``merge_masks`` on
random edits), and :attr:`dirty` names that region so the widget repaints only it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotate.masks import CropMask
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


def _bounds(m: CropMask) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a mask's window."""
    h, w = m.mask.shape
    return m.y0, m.y0 + h, m.x0, m.x0 + w


def _union(a, b):
    if a is None:
        return b
    if b is None or b[0] == b[1]:
        return a
    if a[0] == a[1]:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


class AnnotatorController:
    """Boxes of one image, their masks, the merged label map, undo history and autosave."""

    def __init__(self, label_spec: LabelSpec, shape: tuple[int, int]):
        self.label_spec = label_spec
        self.shape = tuple(int(s) for s in shape[:2])
        self.boxes: list[Box] = []
        self._masks: dict[tuple, CropMask] = {}
        self._areas: dict[tuple, int] = {}
        self._notes: dict[tuple, str] = {}     # box key -> why the engine fell back (e.g. GrabCut)
        self._history: list[list[Box]] = []
        self.label_map = np.full(self.shape, label_spec.ignore_index, np.uint8)
        self._rendered: list[tuple] | None = None     # (mask key, class) merged into label_map, in order
        #: (y0, y1, x0, x1) of label_map changed by the last render(); None: nothing changed
        self.dirty: tuple[int, int, int, int] | None = None

    # --- loading a saved image -------------------------------------------------------------
    def load(self, prompts: list[BoxPrompt], label_map: np.ndarray | None) -> None:
        """Start from a session's saved boxes and label map (shown as saved, not recomputed)."""
        self.boxes = [Box.from_prompt(p) for p in prompts]
        self._masks.clear()
        self._history.clear()
        self._rendered = None          # shown as saved; the first render merges everything
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
            self._areas.pop(k, None)
        return self.missing()

    def missing(self) -> list[Box]:
        seen, out = set(), []
        for b in self.boxes:
            if b.key not in self._masks and b.key not in seen:
                seen.add(b.key)
                out.append(b)
        return out

    def add_masks(self, boxes: list[Box], masks: list, notes: list | None = None) -> None:
        """Masks of ``boxes``: full boolean arrays or annotate :class:`CropMask` windows;
        ``notes[i]``: why box i's mask is a fallback shape (None: it is not)."""
        if len(boxes) != len(masks):
            raise ValueError(f"{len(boxes)} boxes but {len(masks)} masks")
        for b, note in zip(boxes, notes or [None] * len(boxes)):
            if note:
                self._notes[b.key] = str(note)
            else:
                self._notes.pop(b.key, None)
        for b, m in zip(boxes, masks):
            if isinstance(m, CropMask):
                if tuple(m.image_shape[:2]) != self.shape:
                    raise ValueError(f"mask for an image of shape {m.image_shape}, this image is {self.shape}")
                m = CropMask(np.asarray(m.mask, bool), int(m.x0), int(m.y0), self.shape)
            else:
                m = np.asarray(m, bool)
                if m.shape != self.shape:
                    raise ValueError(f"mask of shape {m.shape} for an image of shape {self.shape}")
                m = CropMask.tight(m)
            self._masks[b.key] = m
            self._areas[b.key] = m.area

    def mask(self, box: Box) -> np.ndarray:
        """The full-size boolean mask of ``box`` (its mask must be known)."""
        return self._masks[box.key].full()

    def fallback_notes(self) -> list[str]:
        """Per current box: why its mask is a fallback shape ('' when the engine's own mask was used)."""
        return [self._notes.get(b.key, "") for b in self.boxes]

    def render(self) -> np.ndarray | None:
        """The merged label map, or None while some box still waits for its mask.

        Only the region touched by boxes added, removed or re-classed since the last render is
        merged again; :attr:`dirty` says which (None when nothing changed)."""
        if self.missing():
            return None
        region = self._changed_region()
        if region is not None and region[0] < region[1] and region[2] < region[3]:
            self._merge(region)
        self.dirty = region if region is not None and region[0] < region[1] and region[2] < region[3] else None
        self._rendered = [(b.key, b.class_id) for b in self.boxes]
        return self.label_map

    def _changed_region(self) -> tuple[int, int, int, int] | None:
        full = (0, self.shape[0], 0, self.shape[1])
        new = [(b.key, b.class_id) for b in self.boxes]
        old = self._rendered
        if old is None or len(set(new)) != len(new) or len(set(old)) != len(old):
            return full                 # first render after a load, or a box drawn twice
        old_s, new_s = set(old), set(new)
        if [k for k in old if k in new_s] != [k for k in new if k in old_s]:
            return full                 # kept boxes changed order: equal-area ties may flip
        region = None
        for key, _ in [k for k in old if k not in new_s] + [k for k in new if k not in old_s]:
            mc = self._masks.get(key)
            if mc is None:
                return full             # a removed mask was already dropped from the cache
            region = _union(region, _bounds(mc))
        return region

    def _merge(self, region: tuple[int, int, int, int]) -> None:
        """annotate's overlap rule (``merge_masks``: largest first, smaller on top, later wins
        ties) applied inside ``region`` only, from the cropped masks."""
        y0, y1, x0, x1 = region
        out = self.label_map[y0:y1, x0:x1]
        out[:] = self.label_spec.ignore_index
        order = sorted(range(len(self.boxes)), key=lambda i: (-self._areas[self.boxes[i].key], i))
        for i in order:
            b = self.boxes[i]
            mc = self._masks[b.key]
            my0, my1, mx0, mx1 = _bounds(mc)
            iy0, iy1, ix0, ix1 = max(y0, my0), min(y1, my1), max(x0, mx0), min(x1, mx1)
            if iy0 >= iy1 or ix0 >= ix1:
                continue
            part = mc.mask[iy0 - my0:iy1 - my0, ix0 - mx0:ix1 - mx0]
            out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0][part] = int(b.class_id)

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
