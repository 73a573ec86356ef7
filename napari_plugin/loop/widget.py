"""The human-in-the-loop dock widget: train on the labelled images, suggest boxes, go where the
model is least sure.

1. "Train": the domain decoder learns from the session's labelled images (``distill``, in a
   worker with a progress bar and Cancel) on SAM embeddings the annotator already cached; or,
   with "fine-tune the shipped student" chosen, the shipped AI4Mars student is fine-tuned on them
   (no SAM needed; a new head when the session's classes differ).
2. "Suggest boxes": the model predicts the current image; its regions become a "suggested boxes"
   Shapes layer (one box per connected region, coloured and captioned by class) that the expert
   edits: move, resize, delete, or re-class the selected ones.
3. "Accept": the remaining suggestions become the annotator's boxes, so SAM turns them into
   labels and the session saves them, exactly as if the expert had drawn them.
4. "Next most uncertain": the unlabelled images are ranked by mean predicted entropy and the
   annotator opens the first, with its suggestions ready.

The annotator (part 1) owns images, boxes and the session; this widget finds it among the
viewer's docked widgets and shares its :class:`~napari_plugin.state.MarsamState`.
"""
# No `from __future__ import annotations` here: napari opens a dock widget from the Plugins menu by
# reading the *object* annotation `Viewer` of __init__ to inject the viewer (a string would not match).

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox
from napari.viewer import Viewer

from segmodels.predictors import load_predictor
from segmodels.errors import MarsamError

from ..annotator.layers import box_vertices, class_color
from ..notify import guarded, info, warn
from ..predict import layers as PL
from ..predict import models
from ..predict.panel import JobPanel
from ..state import MarsamState, unproxied
from . import suggest, training

SUGGESTIONS_NAME = "suggested boxes"
DECODER_CHOICE = "SAM domain decoder"
STUDENT_CHOICE = "fine-tune the shipped student"
PREFIX = "loop "


def find_annotator(viewer):
    """The annotator docked in ``viewer`` (None when it is not open)."""
    from ..annotator.widget import AnnotatorWidget
    for w in viewer.window.dock_widgets.values():
        if isinstance(w, AnnotatorWidget):
            return w
    return None


class LoopWidget(Container):
    """Train -> suggest -> accept -> next most uncertain, on the annotator's session."""

    def __init__(self, viewer: Viewer, state: MarsamState | None = None):
        viewer = unproxied(viewer)
        super().__init__(scrollable=False)
        self.viewer = viewer
        self.state = state or MarsamState.for_viewer(viewer)
        self.checkpoint = None             # the model the loop predicts with (a segmodels Predictor)
        self.last_training = None          # distill's TrainResult of the last run
        self.ranking: suggest.Ranking | None = None
        self.kind = ComboBox(label="model", choices=[DECODER_CHOICE, STUDENT_CHOICE], value=DECODER_CHOICE,
                             tooltip="what 'Train' trains on the session's labelled images")
        self.epochs = SpinBox(label="epochs", value=training.DECODER_EPOCHS, min=1, max=10000,
                              tooltip="100 epochs on 5 images is the setting of Julka and Granitzer")
        self.train_btn = PushButton(text="Train decoder on labelled images")
        self.min_area = SpinBox(label="smallest region (px)", value=0, min=0, max=10_000_000,
                                tooltip="0 = automatic (100 px or 0.1 % of the image)")
        self.suggest_btn = PushButton(text="Suggest boxes on this image")
        self.reclass = ComboBox(label="class of selected", choices=self._class_choices)
        self.accept_btn = PushButton(text="Accept suggested boxes")
        self.next_btn = PushButton(text="Next most uncertain image")
        self.panel = JobPanel()
        self.model_info = Label(value="no model trained yet")
        self.status = Label(value="label a few images in the annotator, then train")
        for lab in (self.model_info, self.status):
            lab.native.setWordWrap(True)
        self.extend([self.kind, self.epochs, self.train_btn, self.model_info, self.min_area, self.suggest_btn,
                     self.reclass, self.accept_btn, self.next_btn, self.panel, self.status])
        self.train_btn.changed.connect(guarded("training")(lambda: self.train()))
        self.kind.changed.connect(self._kind_changed)
        self.suggest_btn.changed.connect(guarded("suggesting boxes")(lambda: self.suggest()))
        self.reclass.changed.connect(guarded("changing the class")(self._reclass_selected))
        self.accept_btn.changed.connect(guarded("accepting the boxes")(lambda: self.accept()))
        self.next_btn.changed.connect(guarded("ranking the images")(lambda: self.next_most_uncertain()))
        self.state.spec_changed.connect(lambda spec: self.reclass.reset_choices())
        PL.prepare_layer_imports()

    def _class_choices(self, *_):
        state = getattr(self, "state", None)
        return [(name, i) for i, name in enumerate(state.label_spec.classes)] if state else []

    # --- what the loop needs from the annotator ---------------------------------------------
    def _annotator(self):
        ann = find_annotator(self.viewer)
        if ann is None or ann.state is not self.state:
            raise MarsamError("open the marsam Annotator in this viewer first (Plugins > marsam > Annotator): "
                              "it holds the session, the images and the SAM model")
        return ann

    def _sam(self):
        sam, cache = models.sam_of(self.state.engine)
        if sam is None:
            raise MarsamError("the loop's domain decoder reads SAM embeddings: choose vit_b, vit_l or vit_h in "
                              "the annotator and load it (GrabCut has no embeddings)")
        return sam, cache

    def _current(self):
        image = self.state.image
        if image is None:
            raise MarsamError("no image is open; open a folder or a session in the annotator")
        return image

    def _model(self):
        if self.checkpoint is None:
            raise MarsamError("no model yet; press 'Train decoder on labelled images' first")
        return self.checkpoint

    # --- 1. train -----------------------------------------------------------------------------
    def _kind_changed(self, value) -> None:
        student = value == STUDENT_CHOICE
        self.epochs.value = training.STUDENT_EPOCHS if student else training.DECODER_EPOCHS
        self.train_btn.text = "Fine-tune the shipped student" if student else "Train decoder on labelled images"

    def train(self, epochs: int | None = None, **settings):
        """Train the chosen model on the session's labelled images in a worker; returns the Job."""
        if self.kind.value == STUDENT_CHOICE:
            return self._train_student(epochs, **settings)
        if epochs is not None:
            self.epochs.value = int(epochs)
        ann = find_annotator(self.viewer)
        if ann is not None:
            ann.flush_saves()           # train on what is on screen: the annotator saves in the background
        session = self.state.session
        if session is None:
            raise MarsamError("no session is open; label some images in the annotator first")
        n = len(session.labelled_images())
        if n == 0:
            raise MarsamError("the session has no labelled images yet; label a few (five are enough to start)")
        sam, cache = self._sam()
        epochs = int(self.epochs.value)

        def work(job):
            result = training.train_session_decoder(session, sam, cache, epochs, job, **settings)
            ckpt = load_predictor(result.best) if result.stopped != "cancelled" else None
            return result, ckpt

        def done(out):
            result, ckpt = out
            self.last_training = result
            loss = result.history[-1].get("train_loss") if result.history else None
            if ckpt is None:
                warn(f"marsam: training cancelled after {result.epochs_run} epoch(s); the previous model is kept "
                     f"(the partial weights are in {result.out_dir})")
                return
            self.checkpoint = ckpt
            self.model_info.value = (f"decoder trained on {n} image(s), {result.epochs_run} epochs, "
                                     f"{result.summary.get('seconds', 0):.0f} s"
                                     + (f", final loss {loss:.3f}" if loss is not None else "")
                                     + f"\n{result.best}")
            info(f"marsam: decoder trained on {n} labelled image(s)")
            image = self.state.image
            if image is not None and image.key is not None and session.status(image.key) != "done":
                self.suggest()      # the open image is not labelled yet: offer its boxes at once

        return self.panel.run(work, desc="training the decoder", on_done=done)

    def _train_student(self, epochs: int | None = None, **settings):
        if not models.pretrained_available():
            raise MarsamError("the shipped student is not installed with this marsam; train the SAM domain decoder")
        if epochs is not None:
            self.epochs.value = int(epochs)
        ann = find_annotator(self.viewer)
        if ann is not None:
            ann.flush_saves()
        session = self.state.session
        if session is None:
            raise MarsamError("no session is open; label some images in the annotator first")
        n = len(session.labelled_images())
        if n == 0:
            raise MarsamError("the session has no labelled images yet; label a few first")
        epochs = int(self.epochs.value)

        def work(job):
            result = training.train_session_student(session, epochs, job, **settings)
            return result, (load_predictor(result.best) if result.stopped != "cancelled" else None)

        def done(out):
            result, ckpt = out
            self.last_training = result
            if ckpt is None:
                warn(f"marsam: fine-tuning cancelled after {result.epochs_run} epoch(s); the previous model is kept")
                return
            self.checkpoint = ckpt
            init = ckpt.checkpoint.training.get("init", {})
            self.model_info.value = (f"shipped student fine-tuned on {n} image(s), {result.epochs_run} epochs"
                                     + (", new head for this session's classes" if init.get("new_head") else "")
                                     + f"\n{result.best}")
            info(f"marsam: shipped student fine-tuned on {n} labelled image(s)")

        return self.panel.run(work, desc="fine-tuning the student", on_done=done)

    # --- 2. suggest ----------------------------------------------------------------------------
    def suggest(self):
        """Predict the current image with the loop's model and offer its regions as boxes."""
        ckpt, image = self._model(), self._current()
        engine, spec = self.state.engine, self.state.label_spec
        key = image.key

        def work(job):
            job.message = "predicting"
            with job.watch(ckpt.module):
                return models.run_prediction(ckpt, image.data, engine, label_spec=spec)

        def done(result):
            return self.suggestion_steps(result, key)

        return self.panel.run(work, desc="suggesting boxes", on_done=done)

    def suggestion_steps(self, result: models.PredictionResult, key=None) -> list:
        """The prediction, its entropy (both hidden) and its suggested boxes over the annotator's
        image, as steps of one layer each (the panel runs one per Qt turn); nothing when the
        expert moved on to another image meanwhile."""
        image = self._current()
        if key is not None and image.key != key:
            return []
        ann = find_annotator(self.viewer)
        ref = getattr(ann, "image_layer", None) if ann is not None else None
        shown: dict = {}

        def hidden(step, name):
            def run():
                if image.key != getattr(self.state.image, "key", None):
                    return                          # another image opened between two turns
                step()
                shown[name].visible = False
            return run

        pred_steps = PL.prediction_steps(self.viewer, result, ref, entropy=True, prefix=PREFIX, shown=shown)
        steps = [hidden(st, name) for st, name in zip(pred_steps, ("prediction", "entropy"))]
        return steps + [lambda: self._show_boxes(result, image, ref)]

    def _show_boxes(self, result: models.PredictionResult, image, ref) -> None:
        if image.key != getattr(self.state.image, "key", None):
            return
        area = int(self.min_area.value) or None
        prompts = suggest.suggested_boxes(result.labels, self.state.label_spec, area)
        spec = self.state.label_spec
        with PL.keep_active(self.viewer):
            if SUGGESTIONS_NAME in self.viewer.layers:
                self.viewer.layers.remove(SUGGESTIONS_NAME)
            kw = {}
            if ref is not None:
                kw = {"scale": tuple(ref.scale[-2:]), "translate": tuple(ref.translate[-2:])}
            ids = np.array([p.class_id for p in prompts], int)
            layer = self.viewer.add_shapes(
                [box_vertices(p.box) for p in prompts], shape_type="rectangle", name=SUGGESTIONS_NAME,
                edge_color=[class_color(spec, c) for c in ids] or "white", face_color="transparent",
                edge_width=2, features={"class_id": ids, "class_name": [spec.classes[c] for c in ids]},
                text={"string": "{class_name}", "size": 9, "color": "white", "anchor": "upper_left"},
                metadata={"marsam_image_key": str(image.key), "marsam_model": result.model_name}, **kw)
        self.suggestions = layer
        self.status.value = (f"{len(prompts)} suggested box(es) on {image.name} (mean entropy "
                             f"{result.mean_entropy:.3f}); edit or delete them, then accept")

    def _suggestions_layer(self):
        if SUGGESTIONS_NAME not in self.viewer.layers:
            raise MarsamError("no suggested boxes; press 'Suggest boxes on this image' first")
        return self.viewer.layers[SUGGESTIONS_NAME]

    def _reclass_selected(self, class_id) -> None:
        if class_id is None or SUGGESTIONS_NAME not in self.viewer.layers:
            return
        layer = self.viewer.layers[SUGGESTIONS_NAME]
        selected = sorted(layer.selected_data)
        if not selected:
            return
        spec = self.state.label_spec
        feats = layer.features
        feats.loc[selected, "class_id"] = int(class_id)
        feats.loc[selected, "class_name"] = spec.classes[int(class_id)]
        layer.features = feats
        colors = np.array(layer.edge_color)
        colors[selected] = class_color(spec, int(class_id))
        layer.edge_color = colors
        layer.refresh_text()

    # --- 3. accept -----------------------------------------------------------------------------
    def accept(self) -> int:
        """Hand the remaining suggestions to the annotator as boxes; returns how many."""
        ann = self._annotator()
        layer = self._suggestions_layer()
        image = self._current()
        if layer.metadata.get("marsam_image_key") != str(image.key):
            raise MarsamError("these suggestions belong to another image; press 'Suggest boxes' again")
        if ann.shapes is None:
            raise MarsamError("the annotator has no boxes layer yet; open the image in the annotator first")
        ids = layer.features["class_id"].to_numpy(int) if len(layer.data) else np.zeros(0, int)
        boxes = [np.asarray(v, float)[:, -2:] for v in layer.data]
        shapes, spec = ann.shapes, self.state.label_spec
        before = shapes.feature_defaults.to_dict("records")[0] if len(shapes.feature_defaults.columns) else {}
        try:
            for c in sorted(set(ids.tolist())):
                verts = [_rect(b) for b, i in zip(boxes, ids) if i == c]
                shapes.feature_defaults = {**before, "class_id": int(c)}
                shapes.add_rectangles(verts, edge_color=class_color(spec, int(c)))
        finally:
            if before:
                shapes.feature_defaults = before
        self.viewer.layers.remove(layer)
        self.viewer.layers.selection.active = shapes
        self.status.value = f"{len(boxes)} box(es) accepted on {image.name}; SAM is labelling them"
        return len(boxes)

    # --- 4. next most uncertain --------------------------------------------------------------
    def remaining_images(self) -> list[Path]:
        session = self.state.session
        if session is None:
            raise MarsamError("no session is open; open one in the annotator")
        current = self.state.image.key if self.state.image is not None else None
        return [Path(p) for p in session.image_paths
                if session.status(p) != "done" and (current is None or Path(p) != Path(current))]

    def next_most_uncertain(self):
        """Rank the unlabelled images by mean entropy; the annotator opens the most uncertain."""
        ckpt, ann = self._model(), self._annotator()
        paths = self.remaining_images()
        engine, spec = self.state.engine, self.state.label_spec

        def predict_one(img):
            return models.run_prediction(ckpt, img, engine, label_spec=spec)

        def work(job):
            with job.watch(ckpt.module):
                return suggest.rank_by_uncertainty(paths, predict_one, job)

        def done(ranking):
            self.ranking = ranking
            top = ranking.order[0][0]
            index = _index_of(self.state.image_paths, top)
            if index is None:
                raise MarsamError(f"{top.name} is in the session but not in the annotator's image list; "
                                  "open the session folder in the annotator")
            ann.go_to(index)

            def describe():
                self.status.value = (f"most uncertain first (mean entropy, nats):\n{ranking.describe()}\n"
                                     + self.status.value)
            return self.suggestion_steps(ranking.top) + [describe]

        return self.panel.run(work, desc="ranking by uncertainty", on_done=done)


def _rect(vertices: np.ndarray) -> np.ndarray:
    """A shape's bounding rectangle in napari's vertex order (the expert may have dragged it)."""
    r0, c0 = vertices.min(axis=0)
    r1, c1 = vertices.max(axis=0)
    return box_vertices((c0, r0, c1, r1))


def _index_of(paths: list[Path], target: Path) -> int | None:
    t = Path(target).resolve()
    for i, p in enumerate(paths):
        if Path(p).resolve() == t:
            return i
    return None
