"""Reading boxes and points out of napari layers, and drawing them back.

Conventions: napari layer data are (row, col); annotate's prompts are (x, y) image pixels. A
shape of any type counts by its bounding box (a rotated rectangle or an ellipse is still a box
prompt). A point refines the box it lies in (the smallest one when boxes overlap); a point in
no box refines nothing and is reported so the user can move it. The class of a box lives in the
Shapes layer's ``class_id`` feature, the polarity of a point in the Points layer's ``positive``.
"""
from __future__ import annotations

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

from .controller import Box, clip_box

SHAPES_NAME = "boxes"
POINTS_NAME = "points"
LABELS_NAME = "labels"
POSITIVE_COLOR = "#40ff40"
NEGATIVE_COLOR = "#ff40ff"


def labels_colormap(spec: LabelSpec) -> DirectLabelColormap:
    """The label spec's colours as a napari colormap; the ignore value is transparent."""
    colors = {None: (0.0, 0.0, 0.0, 0.0)}
    colors.update(spec.colormap())
    return DirectLabelColormap(color_dict=colors, background_value=spec.ignore_index)


def class_color(spec: LabelSpec, class_id: int) -> tuple[float, float, float, float]:
    r, g, b = spec.colors[class_id]
    return (r / 255, g / 255, b / 255, 1.0)


def shape_bbox(vertices: np.ndarray) -> tuple[float, float, float, float]:
    v = np.asarray(vertices, float)[:, -2:]
    return (float(v[:, 1].min()), float(v[:, 0].min()), float(v[:, 1].max()), float(v[:, 0].max()))


def read_boxes(shapes, points, image_shape: tuple[int, int], num_classes: int
               ) -> tuple[list[Box], list[int], list[int]]:
    """Boxes of ``shapes`` with their points; also the indices of shapes lying outside the image
    and of points lying in no box (both are user mistakes the widget reports)."""
    classes = _class_ids(shapes)
    boxes, outside, rects = [], [], []
    for i, vertices in enumerate(shapes.data):
        try:
            rect = clip_box(shape_bbox(vertices), image_shape)
        except MarsamError:
            outside.append(i)
            continue
        cid = int(classes[i]) if i < len(classes) else 0
        rects.append((rect, min(max(cid, 0), num_classes - 1)))
    pos = [[] for _ in rects]
    neg = [[] for _ in rects]
    stray = []
    if points is not None and len(points.data):
        flags = (points.features["positive"].to_numpy(bool) if "positive" in points.features
                 else np.ones(len(points.data), bool))
        for j, (row, col) in enumerate(np.asarray(points.data, float)[:, -2:]):
            owner = _smallest_box_containing([r for r, _ in rects], col, row)
            if owner is None:
                stray.append(j)
                continue
            (pos if flags[j] else neg)[owner].append((float(col), float(row)))
    for k, (rect, cid) in enumerate(rects):
        boxes.append(Box(rect, cid, tuple(pos[k]), tuple(neg[k])))
    return boxes, outside, stray


def _class_ids(shapes) -> np.ndarray:
    if "class_id" in shapes.features:
        return shapes.features["class_id"].to_numpy()
    return np.zeros(len(shapes.data), int)


def _smallest_box_containing(rects, x, y) -> int | None:
    best, best_area = None, np.inf
    for k, (x0, y0, x1, y1) in enumerate(rects):
        if x0 <= x <= x1 and y0 <= y <= y1:
            area = (x1 - x0) * (y1 - y0)
            if area < best_area:
                best, best_area = k, area
    return best


def box_vertices(box: tuple[float, float, float, float]) -> np.ndarray:
    """A rectangle in napari's (row, col) vertex order."""
    x0, y0, x1, y1 = box
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)


def fallback_text(reason: str) -> str:
    """What a box whose mask is the engine's fallback shape says on the canvas."""
    return f"filled box (GrabCut: {reason})" if reason else ""


def show_notes(shapes, notes: list[str]) -> None:
    """Write each box's fallback note (shown as the box's text) when the boxes are unchanged."""
    if len(notes) != len(shapes.data):
        return
    feats = shapes.features.copy()
    feats["note"] = np.array([fallback_text(n) for n in notes], object)
    shapes.features = feats
    shapes.refresh_text()


def draw_boxes(shapes, points, boxes: list[Box], spec: LabelSpec) -> None:
    """Replace the layers' contents with ``boxes`` (used by undo and when an image is opened)."""
    import pandas as pd
    defaults = {k: v.iloc[0] for k, v in shapes.feature_defaults.items()} if len(shapes.feature_defaults) else {}
    shapes.selected_data = set()
    shapes.data = []
    if boxes:
        shapes.add_rectangles([box_vertices(b.box) for b in boxes],
                              edge_color=[class_color(spec, b.class_id) for b in boxes])
    shapes.features = pd.DataFrame({"class_id": np.array([b.class_id for b in boxes], int),
                                    "note": np.array([""] * len(boxes), object)})
    if defaults:   # new features reset the defaults; keep the class the user picked for new boxes
        shapes.feature_defaults = {"class_id": int(defaults.get("class_id", 0)), "note": ""}
    pts, flags = [], []
    for b in boxes:
        pts += [(y, x) for x, y in b.positive] + [(y, x) for x, y in b.negative]
        flags += [True] * len(b.positive) + [False] * len(b.negative)
    points.selected_data = set()
    points.data = np.array(pts, float).reshape(-1, 2)
    points.features = pd.DataFrame({"positive": np.array(flags, bool)})
    if flags:
        points.face_color = [POSITIVE_COLOR if f else NEGATIVE_COLOR for f in flags]


def update_labels(layer, label_map: np.ndarray, region: tuple[int, int, int, int] | None) -> int:
    """Show ``label_map`` in the Labels ``layer`` by rewriting only ``region`` (y0, y1, x0, x1):
    napari then recolours and uploads that part alone instead of the whole image. Returns the
    number of pixels that changed (the whole image when the layer held another shape)."""
    if layer.data.shape != label_map.shape or not isinstance(layer.data, np.ndarray):
        layer.data = label_map.copy()
        return int(label_map.size)
    if region is None:
        return 0
    y0, y1, x0, x1 = region
    new = label_map[y0:y1, x0:x1]
    changed = layer.data[y0:y1, x0:x1] != new
    if not changed.any():
        return 0
    yy, xx = np.nonzero(changed)
    layer.data_setitem((yy + y0, xx + x0), new[changed])
    return int(yy.size)
