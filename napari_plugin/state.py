"""The state every marsam widget of one viewer shares: label spec, session, current image, engine.

Why one object: the annotator, and later the predict/explain/train widgets, must agree on which
image is open, which classes exist and where the work is saved. Each viewer gets its own
:class:`MarsamState` (looked up with :meth:`MarsamState.for_viewer`), never a process-wide
singleton, so two viewers (or two tests) do not see each other's images. Changes are announced
through psygnal signals (pure Python, no Qt), so this module can be used and tested without a
display.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psygnal import Signal

from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, LabelSpec

ENGINE_CHOICES = ("vit_b", "vit_l", "vit_h", "grabcut")


@dataclass(frozen=True)
class EngineConfig:
    """What the user picked: a SAM size (or GrabCut), a checkpoint (None = cached download), a device."""
    choice: str = "grabcut"
    checkpoint: str | None = None
    device: str | None = None

    def __post_init__(self):
        if self.choice not in ENGINE_CHOICES:
            raise MarsamError(f"unknown model {self.choice!r}; choose one of {', '.join(ENGINE_CHOICES)}")

    @property
    def is_sam(self) -> bool:
        return self.choice != "grabcut"


@dataclass
class CurrentImage:
    """The image being labelled: its pixels, the file it came from and the key the session uses."""
    data: np.ndarray
    path: Path | None
    name: str
    key: object = None      # how the session names it (set once the session knows the image)


def unproxied(viewer):
    """The viewer itself when napari hands a widget a ``PublicOnlyProxy`` of it (Plugins menu).

    The proxy wraps every layer it returns in a fresh proxy, so a layer a widget keeps would no
    longer be ``is``-identical to the one in ``viewer.layers``, and each widget would get its own
    :class:`MarsamState`. marsam reads no private napari attribute, which is what the proxy guards.
    """
    return getattr(viewer, "__wrapped__", viewer)


_STATES: "weakref.WeakKeyDictionary[object, MarsamState]" = weakref.WeakKeyDictionary()


class MarsamState:
    """Shared per-viewer state. Attributes are set through the ``set_*`` methods so that
    listeners are told; read them directly."""

    image_changed = Signal(object)     # CurrentImage | None
    engine_changed = Signal(object)    # the PromptEngine | None
    session_changed = Signal(object)   # annotate.session.Session | None
    spec_changed = Signal(object)      # LabelSpec
    folder_changed = Signal(object)    # list[Path]

    def __init__(self, label_spec: LabelSpec = AI4MARS):
        self.label_spec: LabelSpec = label_spec
        self.session = None
        self.engine = None
        self.engine_config = EngineConfig()
        self.image: CurrentImage | None = None
        self.image_paths: list[Path] = []
        self.index: int = -1

    @classmethod
    def for_viewer(cls, viewer) -> "MarsamState":
        """The state of ``viewer``, created on first use; widgets of one viewer share it."""
        viewer = unproxied(viewer)
        state = _STATES.get(viewer)
        if state is None:
            state = _STATES[viewer] = cls()
        return state

    # --- setters that announce the change -------------------------------------------------
    def set_label_spec(self, spec: LabelSpec) -> None:
        if spec != self.label_spec:
            self.label_spec = spec
            self.spec_changed.emit(spec)

    def set_session(self, session) -> None:
        old = self.session
        if old is not None and old is not session and hasattr(old, "close"):
            old.close()   # release the old folder's writer lock
        self.session = session
        if session is not None:
            self.set_label_spec(session.label_spec)
        self.session_changed.emit(session)

    def set_engine(self, engine, config: EngineConfig | None = None) -> None:
        self.engine = engine
        if config is not None:
            self.engine_config = config
        self.engine_changed.emit(engine)

    def set_folder(self, paths: list[Path]) -> None:
        self.image_paths = [Path(p) for p in paths]
        self.index = -1
        self.folder_changed.emit(self.image_paths)

    def set_image(self, image: CurrentImage | None, index: int = -1) -> None:
        self.image = image
        self.index = index
        self.image_changed.emit(image)

    def neighbour(self, step: int) -> int | None:
        """Index of the image ``step`` away in the folder, or None past either end."""
        i = self.index + step
        return i if 0 <= i < len(self.image_paths) else None
