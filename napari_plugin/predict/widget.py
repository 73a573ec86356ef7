"""The predict dock widget: a model (the shipped student by default, or any marsam checkpoint,
domain decoders included) run on an image layer, shown as a prediction Labels layer in the label
spec's colours plus entropy / confidence Image layers. Loading and predicting run in a worker
(:class:`~.panel.JobPanel`); this module only wires controls to :mod:`.models` and :mod:`.layers`.
"""
# No `from __future__ import annotations` here: napari opens a dock widget from the Plugins menu by
# reading the *object* annotation `Viewer` of __init__ to inject the viewer (a string would not match).

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.layers import Image
from napari.viewer import Viewer

from segmodels.errors import MarsamError

from ..notify import guarded, info
from ..state import MarsamState, unproxied
from . import layers as PL
from . import models
from .panel import JobPanel

PRETRAINED = "pretrained AI4Mars student"
CHECKPOINT = "checkpoint file"


def image_layer_choices(viewer) -> list[Image]:
    """Image layers a model can read: the user's images, not the maps marsam drew over them."""
    return [lay for lay in viewer.layers if isinstance(lay, Image) and lay.data.ndim in (2, 3)
            and not lay.metadata.get("marsam_map")]


def checked_image_layer(layer) -> Image:
    if layer is None:
        raise MarsamError("no image layer; open an image (or a folder in the annotator) first")
    data = np.asarray(layer.data)
    if data.ndim != (3 if layer.rgb else 2):
        raise MarsamError(f"layer {layer.name!r} has shape {data.shape}; models read 2-D grey or RGB images")
    return layer


def follow_image(viewer, combo, image) -> None:
    """Point ``combo`` at the layer of the image the annotator shows."""
    if image is not None and image.name in viewer.layers:
        lay = viewer.layers[image.name]
        if isinstance(lay, Image):
            combo.reset_choices()
            combo.value = lay


class ModelChooser(Container):
    """Source of the model (pretrained student or a checkpoint file), loaded once and kept.

    Shared by the predict and explain widgets so both offer the same choice the same way.
    """

    def __init__(self, allow_pretrained: bool = True):
        super().__init__(labels=True)
        sources = [PRETRAINED, CHECKPOINT] if allow_pretrained else [CHECKPOINT]
        default = PRETRAINED if allow_pretrained and models.pretrained_available() else CHECKPOINT
        self.source = ComboBox(label="model", choices=sources, value=default,
                               tooltip="the student shipped with marsam, or a .safetensors checkpoint "
                                       "(student, teacher or SAM domain decoder)")
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.safetensors")
        self.extend([self.source, self.checkpoint])
        self._cache: tuple[tuple, object] | None = None
        self.source.changed.connect(lambda v: setattr(self.checkpoint, "visible", v == CHECKPOINT))
        self.checkpoint.visible = self.source.value == CHECKPOINT

    def use_checkpoint(self, path: str | Path) -> None:
        """Select a checkpoint file (what a user does with the file picker)."""
        self.source.value = CHECKPOINT
        self.checkpoint.value = Path(path)

    def spec(self) -> tuple:
        """What identifies the chosen model (the file and its modification time)."""
        if self.source.value == PRETRAINED:
            return (models.PRETRAINED_STUDENT,)
        value = self.checkpoint.value
        if value is None or str(value) in ("", "."):
            raise MarsamError("choose a checkpoint file (.safetensors written by marsam) or the pretrained student")
        path = Path(value)
        if not path.is_file():
            raise MarsamError(f"checkpoint {path} does not exist; choose a .safetensors file written by marsam")
        return (str(path.resolve()), path.stat().st_mtime_ns)

    def load(self, spec: tuple):
        """The Predictor for ``spec`` (runs in the worker; cached for the next call)."""
        if self._cache is not None and self._cache[0] == spec:
            return self._cache[1]
        ckpt = models.load_model(spec[0])
        self._cache = (spec, ckpt)
        return ckpt


class PredictWidget(Container):
    """Predict the labels of an image layer with a marsam model."""

    def __init__(self, viewer: Viewer, state: MarsamState | None = None):
        viewer = unproxied(viewer)
        super().__init__(scrollable=False)
        self.viewer = viewer
        self.state = state or MarsamState.for_viewer(viewer)
        self.result: models.PredictionResult | None = None
        self.chooser = ModelChooser()
        self.layer = ComboBox(label="image layer", choices=self._image_layers)
        self.tile = SpinBox(label="tile (px)", value=1024, min=64, max=4096, step=64,
                            tooltip="images larger than this are predicted in overlapping tiles (bounded memory)")
        self.show_entropy = CheckBox(text="entropy layer (uncertainty 0..log K; below, hidden)", value=True)
        self.show_confidence = CheckBox(text="confidence layer (max probability)", value=False)
        self.run_btn = PushButton(text="Predict")
        self.panel = JobPanel()
        self.status = Label(value="choose a model and an image layer")
        self.status.native.setWordWrap(True)
        self.legend = Label(value="", tooltip="the classes of the last prediction and their colours")
        self.extend([self.chooser, self.layer, self.tile, self.show_entropy, self.show_confidence,
                     self.run_btn, self.panel, self.status, self.legend])
        self.run_btn.changed.connect(guarded("predicting")(lambda: self.predict()))
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self.state.image_changed.connect(self._follow_image)
        PL.prepare_layer_imports()

    # --- layer choice ------------------------------------------------------------------------
    def _image_layers(self, *_):
        return image_layer_choices(self.viewer) if hasattr(self, "viewer") else []

    def _refresh(self, event=None) -> None:
        self.layer.reset_choices()

    def _follow_image(self, image) -> None:
        follow_image(self.viewer, self.layer, image)

    # --- predicting ----------------------------------------------------------------------------
    def predict(self, layer: Image | None = None):
        """Predict ``layer`` (default: the chosen one) in a worker; returns the Job."""
        if layer is not None:
            self.layer.reset_choices()
            self.layer.value = layer
        layer = checked_image_layer(self.layer.value)
        spec = self.chooser.spec()
        image = np.asarray(layer.data)
        tile, engine = int(self.tile.value), self.state.engine
        label_spec = self.state.label_spec if self.state.session is not None else None
        chooser = self.chooser

        def work(job):
            job.update(0, 0, "loading the model")
            ckpt = chooser.load(spec)
            job.check()
            job.message = "predicting"
            with job.watch(ckpt.module):
                return models.run_prediction(ckpt, image, engine, tile, label_spec)

        def shown(result):
            self.result = result
            self.legend.value = PL.legend_html(result.label_spec)
            self.status.value = (f"{result.model_name} on {layer.name}: {result.labels.shape[1]}x"
                                 f"{result.labels.shape[0]} px in {result.seconds:.2f} s, mean entropy "
                                 f"{result.mean_entropy:.3f} nats")
            info(f"marsam: predicted {layer.name}")

        def done(result):         # one layer per Qt turn (the panel runs the steps)
            return PL.prediction_steps(self.viewer, result, layer, entropy=self.show_entropy.value,
                                       confidence=self.show_confidence.value) + [lambda: shown(result)]

        self.status.value = f"predicting {layer.name} ..."
        return self.panel.run(work, desc="predicting", on_done=done)
