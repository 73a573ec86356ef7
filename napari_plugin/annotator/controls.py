"""The annotator's controls: magicgui widgets, their layout and the class picker.

Why apart from :mod:`.widget`: building and laying out some twenty controls is Qt detail; the
widget module then holds only the wiring between layers, workers and annotate.
"""
from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, RadioButtons
from napari.layers import Image

from segmodels.errors import MarsamError
from segmodels.labels import builtin_specs, get_label_spec

from ..keybindings import class_keys, shortcuts_text
from ..predict.layers import legend_html
from ..notify import user_errors
from ..state import ENGINE_CHOICES

DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_WIDTH = 400
NAME_CHARS = 36


def short(name: str) -> str:
    """A file name cut to fit the dock (the middle goes: HiRISE names differ at both ends)."""
    return name if len(name) <= NAME_CHARS else f"{name[:NAME_CHARS // 2 - 1]}...{name[-(NAME_CHARS // 2 - 2):]}"


def first_object_class(spec) -> int:
    """The class a new box gets by default: the first one that is not background (a box marks an
    object; painting background with the first box is never what the expert meant)."""
    return next((i for i in range(spec.num_classes) if i != spec.background_id), 0)


class AnnotatorControls(Container):
    """The controls; subclasses set ``self.viewer`` and ``self.state`` before calling __init__."""

    def __init__(self):
        super().__init__(scrollable=False)
        self._build()
        self.state.spec_changed.connect(self._on_spec_changed)
        self._on_spec_changed(self.state.label_spec)

    # --- building the controls ---------------------------------------------------------------
    def _build(self) -> None:
        self.model = ComboBox(label="model", choices=ENGINE_CHOICES, value=self.state.engine_config.choice,
                              tooltip="SAM size (needs its checkpoint) or GrabCut (no weights)")
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pth",
                                   tooltip="SAM .pth file; empty = $MARSAM_SAM_CHECKPOINT or the cached download")
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.load_model_btn = PushButton(text="Load model")
        self.layer = ComboBox(label="image layer", choices=self._image_layers)
        self.use_layer_btn = PushButton(text="Label this layer")
        self.folder = FileEdit(label="image folder", mode="d")
        self.open_folder_btn = PushButton(text="Open folder")
        self.prev_btn = PushButton(text="< Previous")
        self.next_btn = PushButton(text="Next >")
        self.position = Label(value="no folder open")
        self.session_dir = FileEdit(label="session folder", mode="d",
                                    tooltip="where boxes and label maps are saved (created if new)")
        self.open_session_btn = PushButton(text="Open / create session")
        self.spec = ComboBox(label="label spec", choices=self._spec_choices, value=self.state.label_spec.name)
        self.class_picker = ComboBox(label="class", choices=self._class_choices)
        self.legend = Label(value="")
        self.complete = CheckBox(text="complete: all objects boxed, the rest is background", value=False,
                                 tooltip="for specs with a 'background' class (pits): training reads every "
                                         "pixel outside the boxes' masks as background")
        self.polarity = RadioButtons(label="points", choices=("positive", "negative"), value="positive",
                                     orientation="horizontal")
        self.undo_btn = PushButton(text="Undo")
        self.save_btn = PushButton(text="Save")
        self.shortcuts = Label(value="")
        self.status = Label(value="open a folder or choose an image layer")
        nav = Container(widgets=[self.prev_btn, self.next_btn], layout="horizontal", labels=False)
        edit = Container(widgets=[self.undo_btn, self.save_btn], layout="horizontal", labels=False)
        self.extend([self.model, self.checkpoint, self.device, self.load_model_btn, self.layer,
                     self.use_layer_btn, self.folder, self.open_folder_btn, nav, self.position,
                     self.session_dir, self.open_session_btn, self.spec, self.class_picker, self.legend,
                     self.complete, self.polarity, edit, self.shortcuts, self.status])
        self._qt_layout()

    def _qt_layout(self) -> None:
        """Keep the dock narrow whatever the file names: long HiRISE names would otherwise
        widen it until the canvas is a strip."""
        from qtpy.QtWidgets import QComboBox
        self.native.setMaximumWidth(MAX_WIDTH)
        for combo in (self.layer, self.class_picker, self.model, self.device, self.spec):
            combo.native.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(12)
        for label in (self.position, self.status):
            label.native.setWordWrap(True)

    def _image_layers(self, *_):
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)] if hasattr(self, "viewer") else []

    def _spec_choices(self, *_):
        """Built-in specs, plus the current one when a session brought its own classes."""
        state = getattr(self, "state", None)
        names = builtin_specs()
        return names + [state.label_spec.name] if state and state.label_spec.name not in names else names

    def _class_choices(self, *_):
        state = getattr(self, "state", None)
        return [(name, i) for i, name in enumerate(state.label_spec.classes)] if state else []

    def _refresh_layer_choices(self, event=None) -> None:
        self.layer.reset_choices()

    def _on_spec_choice(self, name: str) -> None:
        if name == self.state.label_spec.name:
            return
        spec = get_label_spec(name)
        session = self.state.session
        if session is not None and spec.classes != session.label_spec.classes:
            with self.spec.changed.blocked():
                self.spec.value = self.state.label_spec.name
            raise MarsamError(f"the open session uses label spec {session.label_spec.name!r}; "
                              "open another session folder to label with other classes")
        self.state.set_label_spec(spec)

    def _on_spec_changed(self, spec) -> None:
        from qtpy.QtGui import QColor, QIcon, QPixmap
        with self.spec.changed.blocked():
            self.spec.reset_choices()
            self.spec.value = spec.name
        self.class_picker.reset_choices()
        self.class_picker.value = first_object_class(spec)
        self.complete.enabled = spec.background_id is not None
        combo = self.class_picker.native
        for i, (r, g, b) in enumerate(spec.colors):
            pix = QPixmap(14, 14)
            pix.fill(QColor(r, g, b))
            combo.setItemIcon(i, QIcon(pix))
        self.legend.value = legend_html(spec, class_keys(spec.num_classes))
        self.shortcuts.value = "Shortcuts:\n" + shortcuts_text(spec.classes)

    def choose_class(self, class_id: int) -> None:
        """Pick the class of new boxes (and of the selected boxes)."""
        with user_errors("choosing the class"):
            if class_id >= self.state.label_spec.num_classes:
                raise MarsamError(f"label spec {self.state.label_spec.name!r} has only "
                                  f"{self.state.label_spec.num_classes} classes")
            self.class_picker.value = class_id

    def toggle_polarity(self) -> None:
        self.polarity.value = "negative" if self.polarity.value == "positive" else "positive"

