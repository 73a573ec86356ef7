"""Qt-free glue between the annotator and annotate: engines, sessions, autosave, prefetch.

Every function here is a plain call into annotate (no algorithm of its own), kept out of the
widget so that it can be tested without a display and reused by marsam's other widgets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from annotate.embeddings import EmbeddingCache, embed_image
from annotate.engines import GrabCutEngine, SamEngine
from annotate.prompts import BoxPrompt
from annotate.sam_loading import load_sam
from annotate.session import Session
from segmodels.atomic import atomic_write_png
from segmodels.errors import MarsamError
from segmodels.images import load_image, to_rgb_uint8
from segmodels.labels import LabelSpec

from ..state import CurrentImage, EngineConfig

DEFAULT_SESSION_NAME = "marsam-session"
LAYER_IMAGES = "layer-images"


def load_engine(config: EngineConfig):
    """The engine the user chose. Unlike ``make_engine`` there is no silent GrabCut fallback:
    in the GUI the user picked SAM and must hear (as a notification) where the checkpoint goes."""
    if not config.is_sam:
        return GrabCutEngine()
    return SamEngine(load_sam(config.choice, config.checkpoint, config.device), cache=EmbeddingCache())


def preload_sam_modules() -> None:
    """segment-anything imported safely on the main thread (see :mod:`napari_plugin.safe_imports`)."""
    from ..safe_imports import import_torchvision_safely
    import_torchvision_safely()
    import segment_anything  # noqa: F401
    import segment_anything.utils.transforms  # noqa: F401


def prefetch(engine, path: Path) -> None:
    """Embed ``path`` into the engine's cache so that opening it next is instant."""
    if isinstance(engine, SamEngine) and engine.cache is not None:
        embed_image(engine.model, load_image(path), engine.cache)


def default_session_dir(chosen, image_folder: Path | None) -> Path:
    """The session folder the user chose, else ``./marsam-session`` (the image folder may be
    read-only shared data, so sessions never go next to the images unasked)."""
    if chosen is not None and str(chosen) not in ("", "."):
        return Path(chosen)
    name = DEFAULT_SESSION_NAME if image_folder is None else f"{DEFAULT_SESSION_NAME}-{Path(image_folder).name}"
    return Path.cwd() / name


def open_or_create_session(folder: Path, images: list[Path], label_spec: LabelSpec, engine: str) -> Session:
    """annotate's Session in ``folder``: reopened (new images added; its label spec wins, the
    widget switches to it) or created with ``label_spec``."""
    if (Path(folder) / "session.json").is_file():
        session = Session.open(folder, lock=True)   # one writer: a CLI run on this folder is refused
        add_images(session, images)
        return session
    sam = engine != "grabcut"
    return Session.open_or_create(Path(folder), list(images), label_spec=label_spec,
                                  engine="sam" if sam else "grabcut", model=engine if sam else None)


def add_images(session: Session, images: list[Path]) -> None:
    session.add_images([Path(p) for p in images])


def session_images(session: Session) -> list[Path]:
    return [Path(p) for p in session.image_paths]


def session_folder(session: Session) -> Path:
    return Path(session.folder)


def register_image(session: Session, image: CurrentImage):
    """The key under which ``session`` stores ``image``; an image from a layer with no file is
    written into the session folder first (a session must be able to reopen it)."""
    if session is None:
        raise MarsamError("no session is open; open or create a session folder first")
    path = image.path
    if path is None:
        path = session_folder(session) / LAYER_IMAGES / f"{_safe(image.name)}.png"
        if not path.is_file():
            atomic_write_png(path, to_rgb_uint8(image.data, image.name) if np.asarray(image.data).ndim == 3
                             else _grey_uint8(image.data, image.name))
    add_images(session, [path])
    return Path(path)


def _grey_uint8(data, name) -> np.ndarray:
    return to_rgb_uint8(data, name)[:, :, 0]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"


def saved(session: Session, key) -> tuple[list[BoxPrompt], np.ndarray | None]:
    """The boxes and label map saved for ``key`` (none yet: empty)."""
    if session is None:
        return [], None
    return list(session.prompts(key)), session.label_map(key, painted=True)


def is_complete(session: Session | None, key) -> bool:
    return bool(session is not None and key is not None and session.is_complete(key))


def set_complete(session: Session | None, key, complete: bool) -> None:
    if session is None:
        raise MarsamError("no session is open; open or create a session folder first")
    session.set_complete(key, complete)


def save(session: Session, key, controller) -> None:
    """Write the current boxes and label map (annotate's Session writes atomically)."""
    save_snapshot(session, key, controller.prompts(), controller.label_map)


def save_snapshot(session: Session, key, prompts: list[BoxPrompt], label_map: np.ndarray) -> None:
    """Write boxes and a label map taken earlier (what the background autosave writes)."""
    if session is None:
        raise MarsamError("no session is open; open or create a session folder to save into")
    session.set_result(key, prompts, label_map, status="done" if prompts else "draft")
