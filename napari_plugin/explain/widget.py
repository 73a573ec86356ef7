"""The explain dock widget: why the model chose its labels, as Image layers over the image.

Method (Grad-CAM, Integrated Gradients, LIME, attention gates, entropy, MC dropout), class and
the method's options; the result is drawn with the method's fixed range (:mod:`.methods`) and
colormap (diverging for signed attributions, heat for positive maps), additive blending and
opacity 0.6, named after the method, class and model so two models' maps can be compared by
toggling layers. Attention gates come as one stacked layer (a slider walks the gates). Every
method runs in a worker with a progress bar and a Cancel button.
"""
# No `from __future__ import annotations` here: napari opens a dock widget from the Plugins menu by
# reading the *object* annotation `Viewer` of __init__ to inject the viewer (a string would not match).

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, SpinBox
from napari.viewer import Viewer

from segmodels.errors import MarsamError
from segmodels.predictors import check_label_spec

from ..notify import guarded, info, warn
from ..predict import layers as PL
from ..predict.panel import JobPanel
from ..predict.widget import ModelChooser, checked_image_layer, follow_image, image_layer_choices
from ..state import MarsamState, unproxied
from . import methods as M

COLORMAPS = {M.SIGNED: "diverging", M.POSITIVE: PL.HEAT, M.UNIT: PL.HEAT, M.NATS: PL.UNCERTAINTY}


def colormap_for(display: str):
    cmap = COLORMAPS[display]
    return PL.diverging_colormap() if cmap == "diverging" else cmap


class ExplainWidget(Container):
    """Explanation and uncertainty maps of a marsam model on an image layer."""

    def __init__(self, viewer: Viewer, state: MarsamState | None = None):
        viewer = unproxied(viewer)
        super().__init__(scrollable=False)
        self.viewer = viewer
        self.state = state or MarsamState.for_viewer(viewer)
        self.layers_added: list = []
        self.chooser = ModelChooser()
        self.layer = ComboBox(label="image layer", choices=self._image_layers)
        self.method = ComboBox(label="method", choices=[(m.title, m.key) for m in M.METHODS.values()],
                               value="gradcam")
        self.target = ComboBox(label="class", choices=self._class_choices)
        self.cam_layer = LineEdit(label="Grad-CAM layer", value="",
                                  tooltip="a module name of the network; empty = its last decoder block")
        self.steps = SpinBox(label="IG steps", value=32, min=2, max=512)
        self.baseline = ComboBox(label="IG baseline", choices=["black", "mean", "blur"], value="black")
        self.samples = SpinBox(label="LIME samples", value=200, min=4, max=5000)
        self.segments = SpinBox(label="superpixels", value=50, min=2, max=2000)
        self.mc_samples = SpinBox(label="dropout passes", value=20, min=2, max=500)
        self.run_btn = PushButton(text="Explain")
        self.panel = JobPanel()
        self.status = Label(value="choose a model, a method and a class")
        self.status.native.setWordWrap(True)
        self._options = {"gradcam": [self.cam_layer], "ig": [self.steps, self.baseline],
                         "lime": [self.samples, self.segments], "mc-dropout": [self.mc_samples]}
        self.extend([self.chooser, self.layer, self.method, self.target, self.cam_layer, self.steps,
                     self.baseline, self.samples, self.segments, self.mc_samples, self.run_btn, self.panel,
                     self.status])
        self.method.changed.connect(lambda v: self._show_options())
        self._show_options()
        self.run_btn.changed.connect(guarded("explaining")(lambda: self.explain()))
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self.state.image_changed.connect(lambda image: follow_image(self.viewer, self.layer, image))
        self.state.spec_changed.connect(lambda spec: self.target.reset_choices())

    def _image_layers(self, *_):
        return image_layer_choices(self.viewer) if hasattr(self, "viewer") else []

    def _class_choices(self, *_):
        state = getattr(self, "state", None)
        return [(name, i) for i, name in enumerate(state.label_spec.classes)] if state else []

    def _refresh(self, event=None) -> None:
        self.layer.reset_choices()

    def _show_options(self) -> None:
        key = self.method.value
        for k, widgets in self._options.items():
            for w in widgets:
                w.visible = k == key
        self.target.enabled = M.METHODS[key].per_class

    def options(self) -> dict:
        key = self.method.value
        if key == "gradcam":
            return {"layer": self.cam_layer.value.strip() or None}
        if key == "ig":
            return {"steps": self.steps.value, "baseline": self.baseline.value}
        if key == "lime":
            return {"n_samples": self.samples.value, "n_segments": self.segments.value}
        if key == "mc-dropout":
            return {"samples": self.mc_samples.value}
        return {}

    def explain(self, method: str | None = None, target: int | str | None = None, layer=None,
                options: dict | None = None):
        """Run a method in a worker (arguments default to the controls); returns the Job."""
        if method is not None:
            self.method.value = method
        if target is not None:
            self.target.value = self.state.label_spec.class_id(target)
        if layer is not None:
            self.layer.reset_choices()
            self.layer.value = layer
        layer = checked_image_layer(self.layer.value)
        key = self.method.value
        m = M.method_of(key)
        cls = self.target.value if m.per_class else None
        if m.per_class and cls is None:
            raise MarsamError("choose the class to explain")
        opts = dict(self.options(), **(options or {}))
        spec, image, chooser = self.chooser.spec(), np.asarray(layer.data), self.chooser
        session_spec = self.state.label_spec

        def work(job):
            job.message = "loading the model"
            ckpt = chooser.load(spec)
            if m.per_class:
                check_label_spec(ckpt, session_spec, where=f"label spec {session_spec.name!r} has",
                                 fix=f"choose a model trained on {session_spec.name!r}")
            job.message = m.title
            return M.explain(key, ckpt, image, cls, opts, job)

        added = []

        def map_step(ml):
            def step():
                with PL.keep_active(self.viewer):
                    added.append(PL.show_map(self.viewer, ml.data, ml.name, colormap_for(ml.display), ml.limits,
                                             layer, metadata=ml.metadata))
            return step

        def done(maps):           # one map layer per Qt turn (the panel runs the steps)
            return [map_step(ml) for ml in maps] + [lambda: shown(maps)]

        def shown(maps):
            self.layers_added = added
            extra = ""
            first = maps[0].metadata
            if "relative_delta" in first:
                extra = f", IG completeness error {first['relative_delta']:.1%}"
            elif "r2" in first:
                extra = f", surrogate R^2 {first['r2']:.2f}"
            self.status.value = f"{maps[0].name} on {layer.name}{extra}"
            if first.get("warning"):
                self.status.value += f"\n{first['warning']}"
                warn(first["warning"])
            else:
                info(f"marsam: {maps[0].name} ready")

        self.status.value = f"{m.title} on {layer.name} ..."
        return self.panel.run(work, desc=m.title, on_done=done)
