"""Model outputs as napari layers: one rule for how predictions and maps are drawn.

- the prediction is a Labels layer in the label spec's colours (the annotator's
  ``labels_colormap``, so "sand" is the same colour in the labels and the prediction);
- maps (entropy, confidence, explanations) are Image layers over the image with additive
  blending, so a zero value adds nothing and the terrain shows through, at opacity 0.6;
- contrast limits are FIXED per kind of map, never napari's automatic per-layer range: entropy
  always spans [0, log K], confidence [1/K, 1]; the same colour then means the same value in
  every image and for every model, which is what makes two models comparable side by side.

Layers are reused by name (running the model again updates them in place) and placed on the
image layer's grid (its scale and translate).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from ..annotator.layers import labels_colormap
from .models import PredictionResult

PREDICTION_NAME = "prediction"
ENTROPY_NAME = "entropy"
CONFIDENCE_NAME = "confidence"
MAP_OPACITY = 0.6
HEAT = "inferno"            # positive maps: black (nothing) to bright (much)
UNCERTAINTY = "magma"
_DIVERGING = None


def diverging_colormap():
    """Blue (negative) - black (zero) - red (positive): zero must be black under additive blending."""
    global _DIVERGING
    if _DIVERGING is None:
        from napari.utils.colormaps import Colormap
        _DIVERGING = Colormap([[0.25, 0.45, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.25, 0.15, 1.0]],
                              name="marsam diverging", display_name="marsam diverging")
    return _DIVERGING


@contextlib.contextmanager
def keep_active(viewer):
    """Adding a layer makes it the active one; keep the user's (e.g. the annotator's boxes, so
    drawing continues after a prediction appears). The selection's events are held back while
    layers are added: otherwise napari lays out and shows each new layer's controls for the
    moment it is selected, the longest Qt stall of a first prediction (1.4 s under load,
    benchmarks/bench_napari_loop.py); one event at the end brings the view back in step."""
    selection = viewer.layers.selection
    active = selection.active
    try:
        with selection.events.blocker_all():
            yield
    finally:
        if active is not None and active in viewer.layers:
            if selection.active is active:
                selection.active = None          # make the restore below an actual change
            selection.active = active
        elif selection.active is not None:
            current = selection.active
            selection.active = None
            selection.active = current


def _placement(ref_layer) -> dict:
    if ref_layer is None:
        return {}
    return {"scale": tuple(ref_layer.scale[-2:]), "translate": tuple(ref_layer.translate[-2:])}


def show_map(viewer, data: np.ndarray, name: str, colormap, limits: tuple[float, float], ref_layer=None,
             metadata: dict | None = None, opacity: float = MAP_OPACITY, visible: bool = True):
    """Add or update the Image layer ``name`` holding ``data`` with fixed ``limits``."""
    from napari.layers import Image

    data = np.asarray(data, np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data)
    place = _placement(ref_layer)
    if data.ndim == 3 and place:          # a stack (attention gates): one leading axis, unit scale
        place = {"scale": (1.0,) + place["scale"], "translate": (0.0,) + place["translate"]}
    lo, hi = float(limits[0]), float(limits[1])
    if hi <= lo:
        hi = lo + 1e-6
    layer = viewer.layers[name] if name in viewer.layers else None
    if isinstance(layer, Image) and layer.data.shape == data.shape:
        # every property set triggers a refresh: set only what differs, the data last (one redraw)
        if _colormap_name(colormap) != layer.colormap.name:
            layer.colormap = colormap
        if tuple(layer.contrast_limits_range) != (lo, hi):
            layer.contrast_limits_range = (lo, hi)
        if tuple(layer.contrast_limits) != (lo, hi):
            layer.contrast_limits = (lo, hi)
        _place(layer, place)
        layer.metadata.update(metadata or {})
        if layer.visible != visible:
            layer.visible = visible
        layer.data = data
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    layer = viewer.add_image(data, name=name, colormap=colormap, blending="additive", opacity=opacity,
                             contrast_limits=(lo, hi), metadata=dict(metadata or {}), visible=visible, **place)
    if tuple(layer.contrast_limits_range) != (lo, hi):
        layer.contrast_limits_range = (lo, hi)
        layer.contrast_limits = (lo, hi)
    return layer


def _colormap_name(colormap) -> str:
    return colormap if isinstance(colormap, str) else getattr(colormap, "name", "")


def _place(layer, place: dict) -> None:
    for k, v in place.items():
        if not np.allclose(getattr(layer, k), v):
            setattr(layer, k, v)


def show_labels(viewer, labels: np.ndarray, name: str, spec, ref_layer=None, opacity: float = 0.5,
                metadata: dict | None = None):
    """Add or update the Labels layer ``name`` coloured by ``spec``."""
    from napari.layers import Labels

    place = _placement(ref_layer)
    layer = viewer.layers[name] if name in viewer.layers else None
    spec_key = [spec.name, [list(map(int, c)) for c in spec.colors]]
    if isinstance(layer, Labels):
        if layer.metadata.get("marsam_label_colors") != spec_key:     # recolour only for another spec
            layer.colormap = labels_colormap(spec)
        _place(layer, place)
        layer.metadata.update(metadata or {}, marsam_label_colors=spec_key)
        layer.data = np.asarray(labels, np.uint8)                     # last: one redraw
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    return viewer.add_labels(np.asarray(labels, np.uint8), name=name, opacity=opacity,
                             colormap=labels_colormap(spec),
                             metadata=dict(metadata or {}, marsam_label_colors=spec_key), **place)


def legend_html(spec, keys: list[str] | None = None) -> str:
    """The classes of ``spec`` as coloured squares with their names (and shortcut keys), for a Label."""
    keys = list(keys or []) + [""] * spec.num_classes
    return "<br>".join(
        f'<span style="color:rgb({r},{g},{b}); font-size:16px">&#9632;</span> {name}'
        + (f" &nbsp;<i>{k}</i>" if k else "")
        for (name, (r, g, b)), k in zip(zip(spec.classes, spec.colors), keys))


def entropy_limits(num_classes: int) -> tuple[float, float]:
    return 0.0, math.log(max(num_classes, 2))


def confidence_limits(num_classes: int) -> tuple[float, float]:
    return 1.0 / max(num_classes, 2), 1.0


def prediction_steps(viewer, result: PredictionResult, ref_layer=None, entropy: bool = True,
                     confidence: bool = False, prefix: str = "", shown: dict | None = None) -> list:
    """The prediction Labels layer plus the chosen uncertainty Image layers, as steps that each add
    or update ONE layer (for :func:`napari_plugin.workers.in_turns`); ``shown`` collects the
    layers by key ("prediction", "entropy", "confidence").

    The uncertainty maps go *below* the prediction and start hidden: drawn over it (additive,
    opaque where uncertain) they would hide the very labels the user asked for. Tick them on in
    the layer list to see where the model is unsure."""
    shown = {} if shown is None else shown
    meta = {"marsam_model": result.model_name, "mean_entropy": result.mean_entropy, "marsam_map": True}
    k = result.num_classes

    def labels_step():
        with keep_active(viewer):
            shown["prediction"] = show_labels(viewer, result.labels, prefix + PREDICTION_NAME,
                                              result.label_spec, ref_layer, metadata=meta)

    def map_step(key, data, name, colormap, limits):
        def step():
            with keep_active(viewer):
                layer = shown[key] = show_map(viewer, data, prefix + name, colormap, limits, ref_layer,
                                              metadata=meta, visible=False)
                pred = shown.get("prediction")
                if pred is not None and pred in viewer.layers:
                    src, dst = viewer.layers.index(layer), viewer.layers.index(pred)
                    if src > dst:
                        viewer.layers.move(src, dst)      # just below the prediction
        return step

    steps = [labels_step]
    if entropy:
        steps.append(map_step("entropy", result.entropy, ENTROPY_NAME, UNCERTAINTY, entropy_limits(k)))
    if confidence:
        steps.append(map_step("confidence", result.confidence, CONFIDENCE_NAME, "viridis", confidence_limits(k)))
    return steps


def show_prediction(viewer, result: PredictionResult, ref_layer=None, entropy: bool = True,
                    confidence: bool = False, prefix: str = "") -> dict:
    """:func:`prediction_steps` all at once (scripts, benchmarks); returns the layers by key. The
    widgets run the steps one per Qt turn instead."""
    shown: dict = {}
    for step in prediction_steps(viewer, result, ref_layer, entropy, confidence, prefix, shown):
        step()
    return shown


def prepare_layer_imports() -> None:
    """Import now what napari imports lazily when it builds the first Labels layer of a session:
    pandas (its features table, 200 ms), scikit-image's colour module (its label colours, 60 ms)
    and vispy's dash patterns (cached after the first line visual, 60 ms). Called when a marsam
    widget is built, so that the first prediction does not freeze the GUI for them."""
    import pandas  # noqa: F401
    from skimage.color import lab2rgb  # noqa: F401  (lazy_loader: the name imports the module)
    try:
        from vispy.visuals.line.dash_atlas import DashAtlas
        DashAtlas()                           # fills vispy's lru_cache of dash patterns
    except ImportError:                       # another vispy layout: only a slower first layer
        pass
