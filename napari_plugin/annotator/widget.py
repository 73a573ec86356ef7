"""The annotator dock widget: magicgui controls and the wiring between napari layers and
annotate's engines. The rules live in :mod:`.controller` and :mod:`.project`; this module only
reads layers, starts workers and writes results back.

Draw a rectangle in the ``boxes`` layer: it takes the class chosen in the picker, is segmented at
once (in a worker thread) and painted into the ``labels`` layer in the label spec's colours.
Moving or resizing a box segments it again, deleting it removes its pixels, points in the
``points`` layer refine the box they lie in, and every change is saved into the session.
"""
# No `from __future__ import annotations` here: napari opens a dock widget from the Plugins menu by
# reading the *object* annotation `Viewer` of __init__ to inject the viewer (a string would not match).

import time
from pathlib import Path

import numpy as np
from napari.layers import Image
from napari.layers.base._base_constants import ActionType
from napari.viewer import Viewer

from segmodels.errors import MarsamError
from segmodels.images import list_images, load_image

from .. import workers
from ..keybindings import bind_shortcuts
from ..notify import guarded, info, user_errors, warn
from ..state import CurrentImage, EngineConfig, MarsamState, unproxied
from . import layers as L
from . import project
from .autosave import Autosaver
from .controller import AnnotatorController
from .controls import AnnotatorControls, short

_DONE = (ActionType.ADDED, ActionType.CHANGED, ActionType.REMOVED)


class AnnotatorWidget(AnnotatorControls):
    """Box-prompt annotator docked in ``viewer``; ``state`` is shared with marsam's other widgets."""

    def __init__(self, viewer: Viewer, state: MarsamState | None = None):
        viewer = unproxied(viewer)
        self.viewer = viewer
        self.state = state or MarsamState.for_viewer(viewer)
        self.controller: AnnotatorController | None = None
        self.runner: workers.EngineRunner | None = None
        self.shapes = self.points = self.labels_layer = self.image_layer = None
        self._token = None            # identifies the image the engine must hold
        self._updating = False        # True while the widget itself edits the layers
        self._segmenting = False
        self._loading_engine = False
        self.embedding_worker = None  # the last embedding / prefetch workers
        self.prefetch_worker = None
        self._embeddings = 0          # embedding jobs started and not finished (queued or running)
        self._prefetches = 0
        self.autosaver = Autosaver(project.save_snapshot)   # session writes off the Qt thread
        self.paints = 0               # label maps shown so far (benchmarks wait on it)
        self.last_paint_s = 0.0       # merge + layer update of the last one, on the Qt thread
        super().__init__()           # builds the controls (needs the attributes above)
        self._connect()
        bind_shortcuts(viewer, self)
        viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        viewer.layers.events.removed.connect(self._refresh_layer_choices)

    @property
    def idle(self) -> bool:
        """True when no model load, embedding, segmentation or background save is running, so the
        labels shown are final and on disk (what tests and scripts wait for)."""
        return not (self._segmenting or self._loading_engine or self._embeddings or self.autosaver.pending)

    @property
    def prefetching(self) -> bool:
        """True while the next image of the folder is being embedded in the background."""
        return self._prefetches > 0

    # --- label spec and class picker ----------------------------------------------------------
    def _on_spec_changed(self, spec) -> None:
        super()._on_spec_changed(spec)
        if self.labels_layer is not None:
            self.labels_layer.colormap = L.labels_colormap(spec)
        if self.image_layer is not None and self.controller is not None:
            self._reset_image()

    def _on_class_choice(self, class_id) -> None:
        if class_id is None or self.shapes is None:
            return
        color = L.class_color(self.state.label_spec, class_id)
        self.shapes.feature_defaults = {"class_id": int(class_id), "note": ""}
        self.shapes.current_edge_color = color
        selected = sorted(self.shapes.selected_data)
        if selected:
            feats = self.shapes.features
            feats.loc[selected, "class_id"] = int(class_id)
            colors = np.array(self.shapes.edge_color)
            colors[selected] = color
            self.shapes.edge_color = colors
            self._sync()

    def _apply_polarity(self) -> None:
        if self.points is not None:
            positive = self.polarity.value == "positive"
            self.points.feature_defaults = {"positive": positive}
            self.points.current_face_color = L.POSITIVE_COLOR if positive else L.NEGATIVE_COLOR

    def _connect(self) -> None:
        """Buttons and pickers -> the actions below (errors become notifications)."""
        self.load_model_btn.changed.connect(guarded("loading the model")(lambda: self.load_engine()))
        self.use_layer_btn.changed.connect(guarded("opening the image layer")(lambda: self.use_layer()))
        self.open_folder_btn.changed.connect(guarded("opening the folder")(lambda: self.open_folder()))
        self.prev_btn.changed.connect(lambda: self.previous_image())
        self.next_btn.changed.connect(lambda: self.next_image())
        self.open_session_btn.changed.connect(guarded("opening the session")(lambda: self.open_session()))
        self.spec.changed.connect(guarded("changing the label spec")(self._on_spec_choice))
        self.class_picker.changed.connect(guarded("choosing the class")(self._on_class_choice))
        self.polarity.changed.connect(lambda v: self._apply_polarity())
        self.undo_btn.changed.connect(lambda: self.undo())
        self.save_btn.changed.connect(lambda: self.save())
        self.complete.changed.connect(guarded("marking the image complete")(self.set_complete))

    # --- engine ---------------------------------------------------------------------------------
    def load_engine(self, config: EngineConfig | None = None) -> None:
        """Load the chosen model in a worker thread (a SAM checkpoint is large)."""
        if config is None:
            ckpt = str(self.checkpoint.value) if self.checkpoint.value and str(self.checkpoint.value) not in ("", ".") else None
            config = EngineConfig(self.model.value, ckpt, None if self.device.value == "auto" else self.device.value)
        if self._loading_engine:
            raise MarsamError("a model is already loading; wait for it to finish")
        if config.is_sam:
            project.preload_sam_modules()
        self._loading_engine = True
        self.status.value = f"loading {config.choice} ..."

        def done(engine):
            self.use_engine(engine, config)
            info(f"marsam: {config.choice} ready")

        def always():
            self._loading_engine = False

        workers.start(project.load_engine, config, on_done=done, doing=f"loading {config.choice}",
                      progress=f"loading {config.choice}", on_finally=always)

    def use_engine(self, engine, config: EngineConfig | None = None) -> None:
        """Use an already built prompt engine (annotate's SamEngine or GrabCutEngine)."""
        if getattr(engine, "name", "") == "sam":
            project.preload_sam_modules()
        self.runner = workers.EngineRunner(engine)
        self.state.set_engine(engine, config)
        if self.state.image is not None:
            self._start_embedding()
            if self.controller is not None and self.controller.missing():
                self._request_segmentation()

    # --- images ---------------------------------------------------------------------------------
    def open_folder(self, folder: str | Path | None = None) -> None:
        folder = Path(folder if folder is not None else self.folder.value)
        paths = list_images(folder)
        if not paths:
            raise MarsamError(f"no images (png, jpg, tif) in {folder}; choose a folder of images")
        self.folder.value = folder
        self.state.set_folder(paths)
        if self.state.session is None:
            self.open_session(project.default_session_dir(self.session_dir.value, folder), paths)
        else:
            project.add_images(self.state.session, paths)
        self.go_to(0)

    def go_to(self, index: int) -> None:
        path = self.state.image_paths[index]
        data = load_image(path)
        self._show(CurrentImage(data=data, path=path, name=path.stem), index, layer=None)

    def next_image(self) -> None:
        self._step(+1)

    def previous_image(self) -> None:
        self._step(-1)

    @guarded("changing the image")
    def _step(self, step: int) -> None:
        if not self.state.image_paths:
            raise MarsamError("no folder is open; open a folder of images to go through it")
        i = self.state.neighbour(step)
        if i is None:
            warn("this is the " + ("last" if step > 0 else "first") + " image of the folder")
            return
        self.go_to(i)

    def use_layer(self, layer: Image | None = None) -> None:
        """Label the image of an Image layer (2-D grey or RGB)."""
        layer = layer if layer is not None else self.layer.value
        if layer is None:
            raise MarsamError("no image layer; open an image or a folder first")
        if layer is self.image_layer and self.state.image is not None:
            return                      # already the image being labelled (e.g. from the folder)
        data = np.asarray(layer.data)
        if data.ndim != (3 if layer.rgb else 2):
            raise MarsamError(f"layer {layer.name!r} has shape {data.shape}; the annotator labels 2-D "
                              "images (grey or RGB); split stacks into single images")
        src = getattr(getattr(layer, "source", None), "path", None)
        path = Path(src) if src and Path(src).is_file() else None
        if self.state.session is None:
            self.open_session(project.default_session_dir(self.session_dir.value, None), [])
        image = CurrentImage(data=data, path=path, name=layer.name)
        self._show(image, -1, layer=layer)

    def _show(self, image: CurrentImage, index: int, layer: Image | None) -> None:
        """Make ``image`` the one being labelled: layers, saved boxes, embedding."""
        self.flush_saves()
        shape = image.data.shape[:2]
        if layer is None:
            old = self.image_layer
            reusable = (old is not None and old in self.viewer.layers and old.metadata.get("marsam_folder_image")
                        and old.data.ndim == image.data.ndim)       # grey and RGB layers differ
            if reusable:
                old.data = image.data
                old.name = image.name
                old.reset_contrast_limits()
            else:
                if old is not None and old in self.viewer.layers and old.metadata.get("marsam_folder_image"):
                    self.viewer.layers.remove(old)
                self.image_layer = self.viewer.add_image(image.data, name=image.name,
                                                         metadata={"marsam_folder_image": True})
                self.viewer.layers.move(self.viewer.layers.index(self.image_layer), 0)   # under the labels
        else:
            self.image_layer = layer
        image.key = project.register_image(self.state.session, image)
        with self.complete.changed.blocked():
            self.complete.value = project.is_complete(self.state.session, image.key)
        self.state.set_image(image, index)
        self._token = object()
        self._ensure_layers()
        self._reset_image()
        self.viewer.reset_view()
        n = len(self.state.image_paths)
        self.position.value = f"image {index + 1}/{n}: {short(image.name)}" if index >= 0 else f"layer: {short(image.name)}"
        self.layer.value = self.image_layer
        self._start_embedding()
        self.status.value = f"{short(image.name)}: {shape[1]}x{shape[0]}"

    def _ensure_layers(self) -> None:
        """Create (once) the boxes, points and labels layers, aligned with the image layer."""
        kw = {"scale": self.image_layer.scale[-2:], "translate": self.image_layer.translate[-2:]}
        if self.labels_layer is None or self.labels_layer not in self.viewer.layers:
            self.labels_layer = self.viewer.add_labels(np.zeros((1, 1), np.uint8), name=L.LABELS_NAME, opacity=0.5,
                                                 colormap=L.labels_colormap(self.state.label_spec), **kw)
        if self.shapes is None or self.shapes not in self.viewer.layers:
            self.shapes = self.viewer.add_shapes(name=L.SHAPES_NAME, face_color="transparent", edge_width=3,
                                                 features={"class_id": np.zeros(0, int), "note": np.zeros(0, object)},
                                                 text={"string": "{note}", "size": 9, "color": "yellow",
                                                       "anchor": "upper_left"}, **kw)
            self.shapes.events.data.connect(self._on_layer_data)
            self._on_class_choice(self.class_picker.value)
        if self.points is None or self.points not in self.viewer.layers:
            self.points = self.viewer.add_points(name=L.POINTS_NAME, size=12, border_color="white",
                                                 features={"positive": np.zeros(0, bool)}, **kw)
            self.points.events.data.connect(self._on_layer_data)
            self._apply_polarity()
        for lay in (self.labels_layer, self.shapes, self.points):
            lay.scale, lay.translate = kw["scale"], kw["translate"]
        self.viewer.layers.selection.active = self.shapes
        self.shapes.mode = "add_rectangle"

    def _reset_image(self) -> None:
        """Fresh controller for the current image, filled from the session."""
        image = self.state.image
        self.controller = AnnotatorController(self.state.label_spec, image.data.shape[:2])
        prompts, label_map = project.saved(self.state.session, image.key)
        self.controller.load(prompts, label_map)
        self._updating = True
        try:
            L.draw_boxes(self.shapes, self.points, self.controller.boxes, self.state.label_spec)
            self.labels_layer.data = self.controller.label_map.copy()
        finally:
            self._updating = False

    # --- embedding --------------------------------------------------------------------------------
    def _start_embedding(self) -> None:
        if self.runner is None or self.state.image is None:
            return
        # the raw pixels, as annotate's CLI passes them: same embedding-cache key in both
        token, rgb = self._token, self.state.image.data
        slow = self.runner.name == "sam"

        def done(_):
            if token is self._token:
                self.status.value = f"{short(self.state.image.name)}: ready, draw boxes"
                self._prefetch_next()

        def finished():
            self._embeddings -= 1

        self.status.value = f"{short(self.state.image.name)}: embedding ..." if slow else self.status.value
        self._embeddings += 1
        self.embedding_worker = workers.start(self.runner.set_image, token, rgb, on_done=done,
                                              doing="embedding the image", on_finally=finished,
                                              progress="SAM: embedding image" if slow else None)

    def _prefetch_next(self) -> None:
        """Embed the next image of the folder into annotate's cache while the expert works."""
        i = self.state.neighbour(+1)
        if i is None or self.runner is None or self.runner.name != "sam":
            return

        def finished():
            self._prefetches -= 1

        self._prefetches += 1
        self.prefetch_worker = workers.start(self.runner.locked, project.prefetch, self.runner.engine,
                                             self.state.image_paths[i],
                                             on_finally=finished,
                                             doing="embedding the next image")

    # --- boxes -> masks -> labels ---------------------------------------------------------------------
    def _on_layer_data(self, event) -> None:
        if self._updating or getattr(event, "action", None) not in _DONE:
            return
        with user_errors("updating the labels"):
            self._sync()

    def _sync(self) -> None:
        """Read the layers, tell the controller, segment what changed, paint and save."""
        if self._updating:
            return
        if self.controller is None or self.state.image is None:
            raise MarsamError("no image is being labelled; open a folder or click 'Label this layer' first")
        boxes, outside, stray = L.read_boxes(self.shapes, self.points, self.controller.shape,
                                             self.state.label_spec.num_classes)
        if outside or stray:
            self._updating = True
            try:
                if outside:
                    self.shapes.selected_data = set()
                    self.shapes.remove(outside)
                if stray:
                    self.points.selected_data = set()
                    self.points.remove(stray)
            finally:
                self._updating = False
            if outside:
                warn("a box outside the image was removed; draw boxes on the image")
            if stray:
                warn("a point was removed: a point refines the box it lies in, so put it inside a box")
        missing = self.controller.update(boxes)
        self._after_change(missing)

    def _after_change(self, missing) -> None:
        if missing:
            self._request_segmentation()
        else:
            self._paint()

    def _request_segmentation(self) -> None:
        if self._segmenting:
            return                      # the running job asks again when it finishes
        if self.runner is None:
            if not self._loading_engine:
                self.load_engine()
            return                      # use_engine() segments once the model is there
        missing = self.controller.missing()
        if not missing:
            return
        token, controller = self._token, self.controller
        rgb = self.state.image.data
        self._segmenting = True
        self.status.value = f"segmenting {len(missing)} box(es) ..."

        outcome = {"ok": False}

        def done(result):
            masks, notes = result
            outcome["ok"] = True
            if token is self._token and controller is self.controller:
                controller.add_masks(missing, masks, notes)
                self._paint()

        def again():
            # boxes drawn meanwhile still need masks; after a failure wait for the next change
            self._segmenting = False
            if outcome["ok"] and self.controller is not None and self.controller.missing():
                self._request_segmentation()

        workers.start(self.runner.segment_with_notes, token, rgb, [b.prompt() for b in missing], on_done=done,
                      doing="segmenting the boxes", on_finally=again)

    def _paint(self) -> None:
        """Merge what changed and repaint only that region of the Labels layer; save in the background."""
        t0 = time.perf_counter()
        label_map = self.controller.render()
        if label_map is None:
            return
        L.update_labels(self.labels_layer, label_map, self.controller.dirty)
        self.paints += 1
        self.last_paint_s = time.perf_counter() - t0
        notes = self.controller.fallback_notes()
        self._updating = True
        try:
            L.show_notes(self.shapes, notes)
        finally:
            self._updating = False
        fell = [n for n in notes if n]
        self.status.value = (f"{short(self.state.image.name)}: {len(self.controller.boxes)} box(es), saved"
                             + (f"; {len(fell)} of them GrabCut could not segment ({', '.join(sorted(set(fell)))}): "
                                "their whole shape was filled; move the box or add points" if fell else ""))
        self._autosave()

    def _autosave(self) -> None:
        """Hand a snapshot to the background writer (coalesced per image, atomic writes)."""
        with user_errors("saving the session"):
            if self.state.session is None:
                raise MarsamError("no session is open; open or create a session folder to save into")
            key = self.state.image.key
            self.autosaver.request(key, self.state.session, key, self.controller.prompts(),
                                   self.controller.label_map.copy())

    def flush_saves(self) -> None:
        """Write pending autosaves now (before anything else reads or changes the session)."""
        with user_errors("saving the session"):
            self.autosaver.flush()

    def set_complete(self, complete: bool) -> None:
        """Mark the image complete (every object boxed: the rest is background) or not."""
        if self.state.image is None or self.state.session is None:
            with self.complete.changed.blocked():
                self.complete.value = False
            raise MarsamError("open an image in a session first; then mark it complete")
        try:
            project.set_complete(self.state.session, self.state.image.key, bool(complete))
        except MarsamError:
            with self.complete.changed.blocked():
                self.complete.value = not complete
            raise
        with self.complete.changed.blocked():
            self.complete.value = bool(complete)
        self.status.value = (f"{short(self.state.image.name)}: complete, unboxed pixels are background"
                             if complete else f"{short(self.state.image.name)}: unboxed pixels unlabelled")

    # --- undo and save ---------------------------------------------------------------------------------
    @guarded("undoing")
    def undo(self) -> None:
        if self.controller is None:
            raise MarsamError("nothing to undo: no image is being labelled")
        boxes = self.controller.undo()
        self._updating = True
        try:
            L.draw_boxes(self.shapes, self.points, boxes, self.state.label_spec)
        finally:
            self._updating = False
        self._after_change(self.controller.missing())

    @guarded("saving the session")
    def save(self) -> None:
        if self.controller is None or self.state.session is None:
            raise MarsamError("nothing to save yet: open a folder or an image layer and draw boxes")
        if self.controller.render() is None:
            raise MarsamError("some boxes are still being segmented; save again in a moment")
        self.autosaver.flush()
        project.save(self.state.session, self.state.image.key, self.controller)
        info(f"marsam: session saved in {project.session_folder(self.state.session)}")

    # --- sessions ---------------------------------------------------------------------------------------
    def open_session(self, folder: str | Path | None = None, images: list[Path] | None = None) -> None:
        """Open the session in ``folder`` (or create it there) and show its first image."""
        folder = Path(folder if folder is not None else self.session_dir.value)
        self.flush_saves()
        if str(folder) in ("", "."):
            raise MarsamError("choose a session folder first (an empty folder creates a new session)")
        session = project.open_or_create_session(folder, images if images is not None else self.state.image_paths,
                                                 self.state.label_spec,
                                                 self.state.engine_config.choice)
        self.session_dir.value = folder
        self.state.set_session(session)
        if images is None:           # opened from the button: show its images
            paths = project.session_images(session)
            if paths:
                self.state.set_folder(paths)
                self.go_to(0)
        self.status.value = f"session: {folder}"
