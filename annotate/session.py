"""Annotation sessions: a folder that never loses an expert's work.

Layout::

    SESSION/session.json        images (paths relative to SESSION), per-image boxes with classes,
                                points, status, engine and model used; the label spec
    SESSION/labels/<stem>.png   uint8 label maps in the AI4Mars convention (255 = unlabelled)

An image may be *complete* (``"complete": true`` in its record): the expert boxed every object
on it, so every pixel outside the masks is background. The label PNG keeps only what the boxes
painted (so the state can be toggled without loss); :meth:`Session.label_map` fills the rest with
the spec's background class for training, evaluation and exports. Complete needs a spec with a
``background`` class (objects such as pits); terrain specs without one stay as painted.

Every write goes through :mod:`segmodels.atomic` (temporary file + ``os.replace``): a kill at
any moment leaves each file either as it was or as it became, never half-written. A result is
saved label map first, ``session.json`` second, so a session.json that says "done" always has
its label map on disk; a kill between the two leaves the image "todo" (redone on resume).
Image paths are stored relative to the session folder so a project folder can be moved whole.

One writer at a time: every writer (``create``, ``open_or_create``, ``open(lock=True)``, the
first save) holds the folder's lock (:mod:`annotate.session_lock`), so a second ``marsam
annotate`` or a napari annotator on the same folder is refused with one line naming the holder's
PID instead of silently dropping the first one's records. A killed writer's lock is gone with it.
``session.json`` is checked field by field when opened; an edited or damaged file is one line
naming the entry, never a traceback.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from segmodels.atomic import atomic_write_json, atomic_write_png, remove_stale_temporaries
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, LabelSpec, get_label_spec

from . import session_lock
from .prompts import BoxPrompt

SESSION_FILE = "session.json"
LABELS_DIR = "labels"
STATUSES = ("todo", "draft", "done", "failed")
_FORMAT = "marsam-session"
_VERSION = 1

log = logging.getLogger(__name__)



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_data(path: Path, data) -> dict:
    """session.json's content, checked field by field (missing optional fields filled in)."""
    def bad(what: str) -> MarsamError:
        return MarsamError(f"{path} is damaged: {what}; fix that entry or restore session.json from a backup")
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise MarsamError(f"{path} is not a marsam session file")
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad(f"version {version!r} is not an integer")
    if version > _VERSION:
        raise MarsamError(f"{path} was written by a newer marsam (version {version}); upgrade marsam")
    if "label_spec" not in data:
        raise bad("it has no label_spec")
    try:
        spec = get_label_spec(data["label_spec"])
    except MarsamError as e:
        raise bad(str(e)) from None
    images = data.get("images")
    if not isinstance(images, list):
        raise bad(f"images is {type(images).__name__}, not a list")
    for key in ("engine", "model"):
        if data.get(key) is not None and not isinstance(data.get(key), str):
            raise bad(f"{key} {data.get(key)!r} is not text")
    stems: dict[str, int] = {}
    for k, e in enumerate(images):
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) or not e["path"].strip():
            raise bad(f"image entry {k} has no path")
        if not isinstance(e.get("stem"), str) or not e["stem"]:
            e["stem"] = Path(e["path"]).stem
        if e.get("status", "todo") not in STATUSES:
            raise bad(f"image entry {k} ({e['stem']}) has status {e.get('status')!r}, not one of {', '.join(STATUSES)}")
        e.setdefault("status", "todo")
        prompts = e.get("prompts", [])
        if not isinstance(prompts, list):
            raise bad(f"image entry {k} ({e['stem']}) has prompts that are not a list")
        for d in prompts:
            try:
                p = BoxPrompt.from_dict(d)
            except MarsamError as err:
                raise bad(f"image entry {k} ({e['stem']}): {err}") from None
            if not 0 <= p.class_id < spec.num_classes:
                raise bad(f"image entry {k} ({e['stem']}) has a box of class {p.class_id}, outside label spec "
                          f"{spec.name!r}")
        e["prompts"] = prompts
        for key in ("engine", "model", "error", "updated"):
            e.setdefault(key, None)
        if e["stem"] in stems:
            raise bad(f"image entries {stems[e['stem']]} and {k} share the name {e['stem']!r} (label maps are "
                      "named by it)")
        stems[e["stem"]] = k
    return data


class Session:
    """One annotation session; thread-safe (napari workers and the GUI may share one)."""

    def __init__(self, folder: Path, data: dict):
        self.folder = Path(folder)
        self._data = data
        self._lock = threading.RLock()
        self._writer = False
        self.label_spec: LabelSpec = get_label_spec(data["label_spec"])
        self._index: dict[str, int] = {}
        self.problems: list[str] = []       # images not added (e.g. a second image with a known name)
        self._reindex()

    # --- the writer lock ----------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Become the folder's one writer (idempotent); MarsamError naming the holder if another is."""
        with self._lock:
            if not self._writer:
                session_lock.acquire(self.folder)
                self._writer = True
                remove_stale_temporaries([self.folder, self.folder / LABELS_DIR], min_age_s=0)

    def close(self) -> None:
        """Stop writing: release the folder's lock (it also goes when the process ends)."""
        with self._lock:
            if self._writer:
                session_lock.release(self.folder)
                self._writer = False

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- creation -----------------------------------------------------------------------
    @classmethod
    def create(cls, folder, images: Iterable, label_spec: LabelSpec | str = AI4MARS, engine: str = "grabcut",
               model: str | None = None) -> "Session":
        folder = Path(folder)
        spec = get_label_spec(label_spec)
        session_lock.acquire(folder)
        try:
            if (folder / SESSION_FILE).exists():
                raise MarsamError(f"{folder} already holds a session; open it (Session.open) or choose another --out")
        except MarsamError:
            session_lock.release(folder)
            raise
        data = {"format": _FORMAT, "version": _VERSION, "label_spec": spec.to_dict(), "engine": engine,
                "model": model, "created": _now(), "updated": _now(), "images": []}
        session = cls(folder, data)
        session._writer = True
        session.add_images(images, _save=False)
        (folder / LABELS_DIR).mkdir(parents=True, exist_ok=True)
        session._save()
        return session

    @classmethod
    def open(cls, folder, lock: bool = False) -> "Session":
        """Open a session; ``lock`` makes this process its one writer at once (the GUI, the CLI).
        Without it the lock is taken at the first save, so readers never hold it."""
        folder = Path(folder)
        path = folder / SESSION_FILE
        if not path.is_file():
            raise MarsamError(f"{folder} is not a marsam session (no {SESSION_FILE}); create one with "
                              "`marsam annotate --out` or Session.create")
        if lock:
            session_lock.acquire(folder)
        try:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as e:
                raise MarsamError(f"{path} cannot be read ({str(e).splitlines()[0][:120]}); restore it from a backup") from None
            data = _check_data(path, data)
            if lock:  # the one writer now: any temporary file here is a killed writer's
                remove_stale_temporaries([folder, folder / LABELS_DIR], min_age_s=0)
            session = cls(folder, data)
        except BaseException:
            if lock:
                session_lock.release(folder)
            raise
        session._writer = lock
        return session

    @classmethod
    def open_or_create(cls, folder, images: Iterable, label_spec: LabelSpec | str = AI4MARS,
                       engine: str = "grabcut", model: str | None = None) -> "Session":
        """Reopen an existing session (adding new images) or start one; what resumable commands use."""
        if (Path(folder) / SESSION_FILE).exists():
            session = cls.open(folder, lock=True)
            spec = get_label_spec(label_spec)
            if session.label_spec.classes != spec.classes:
                session.close()
                raise MarsamError(f"session {folder} uses labels {session.label_spec.name!r} "
                                  f"({', '.join(session.label_spec.classes)}), not {spec.name!r}; "
                                  "pass the same --labels or another --out")
            session.add_images(images)
            return session
        return cls.create(folder, images, label_spec, engine, model)

    def add_images(self, images: Iterable, _save: bool = True) -> int:
        """Add images not yet in the session; returns how many were added."""
        added = 0
        with self._lock:
            known = {p.resolve() for p in self.image_paths}
            for img in images:
                path = Path(img).expanduser().resolve()
                if path in known:
                    continue
                stem = path.stem
                if stem in self._index:
                    msg = (f"skipped {path}: an image named {stem!r} is already in the session "
                           f"({self.image_paths[self._index[stem]]}); label maps are named by stem, so rename one")
                    log.warning(msg)
                    self.problems.append(msg)
                    continue
                try:
                    rel = os.path.relpath(path, self.folder.resolve())
                except ValueError:  # another drive on Windows
                    rel = str(path)
                self._data["images"].append({"path": Path(rel).as_posix(), "stem": stem, "status": "todo",
                                             "prompts": [], "engine": None, "model": None, "error": None,
                                             "updated": None})
                self._index[stem] = len(self._data["images"]) - 1
                known.add(path)
                added += 1
            if added and _save:
                self._save()
        return added

    # --- queries ------------------------------------------------------------------------
    @property
    def engine(self) -> str:
        return self._data.get("engine")

    @property
    def model(self) -> str | None:
        return self._data.get("model")

    @property
    def image_paths(self) -> list[Path]:
        return [self._resolve(e["path"]) for e in self._data["images"]]

    def prompts(self, image) -> list[BoxPrompt]:
        return [BoxPrompt.from_dict(d) for d in self._entry(image)["prompts"]]

    def status(self, image) -> str:
        return self._entry(image)["status"]

    def info(self, image) -> dict:
        """A copy of the image's record (status, engine, model, error, updated)."""
        return json.loads(json.dumps(self._entry(image)))

    def label_path(self, image) -> Path:
        return self.folder / LABELS_DIR / f"{self._entry(image)['stem']}.png"

    def is_complete(self, image) -> bool:
        """Whether every pixel outside the image's masks is background (see the module docstring)."""
        return bool(self._entry(image).get("complete", False))

    def set_complete(self, image, complete: bool = True) -> None:
        if complete and self.label_spec.background_id is None:
            self.label_spec.complete(np.zeros((1, 1), np.uint8))   # raises: no background class
        with self._lock:
            e = self._entry(image)
            e["complete"] = bool(complete)
            e["updated"] = _now()
            self._save()

    def label_map(self, image, painted: bool = False) -> np.ndarray | None:
        """The image's label map; unlabelled pixels of a complete image are background unless
        ``painted`` (what the boxes painted, what an editor shows)."""
        lm = self._painted(image)
        if lm is not None and not painted and self.is_complete(image):
            lm = self.label_spec.complete(lm)
        return lm

    def _painted(self, image) -> np.ndarray | None:
        path = self.label_path(image)
        if not path.is_file():
            return None
        from PIL import Image
        try:
            with Image.open(path) as im:
                return np.asarray(im, dtype=np.uint8)
        except OSError as e:
            raise MarsamError(f"label map {path} is unreadable ({e}); relabel the image") from None

    def labelled_images(self) -> list[Path]:
        return [self._resolve(e["path"]) for e in self._data["images"] if e["status"] == "done"]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for e in self._data["images"]:
            out[e["status"]] = out.get(e["status"], 0) + 1
        return out

    # --- updates (each one atomic) -----------------------------------------------------------
    def set_prompts(self, image, prompts: list[BoxPrompt], status: str | None = None) -> None:
        """Save boxes without a result (e.g. while the expert is still drawing)."""
        with self._lock:
            e = self._entry(image)
            e["prompts"] = [p.to_dict() for p in prompts]
            if status is not None:
                e["status"] = self._check_status(status)
            e["updated"] = _now()
            self._save()

    def set_result(self, image, prompts: list[BoxPrompt], label_map: np.ndarray, status: str = "done",
                   engine: str | None = None, model: str | None = None, complete: bool | None = None) -> None:
        """Save a painted label map; ``complete`` (None: unchanged) sets :meth:`is_complete`."""
        if complete and self.label_spec.background_id is None:
            self.label_spec.complete(np.zeros((1, 1), np.uint8))   # raises: no background class
        with self._lock:
            e = self._entry(image)
            if complete is not None:
                e["complete"] = bool(complete)
            lm = self.label_spec.validate_label_map(label_map, f"label map for {e['stem']}")
            self._check_prompts(prompts)
            atomic_write_png(self.label_path(image), lm)
            e.update(prompts=[p.to_dict() for p in prompts], status=self._check_status(status),
                     engine=engine or self.engine, model=model if model is not None else self.model,
                     error=None, updated=_now())
            self._save()

    def mark_failed(self, image, error: str) -> None:
        with self._lock:
            e = self._entry(image)
            e.update(status="failed", error=str(error), updated=_now())
            self._save()

    # --- internals ----------------------------------------------------------------------
    def _check_status(self, status: str) -> str:
        if status not in STATUSES:
            raise MarsamError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        return status

    def _check_prompts(self, prompts: list[BoxPrompt]) -> None:
        for p in prompts:
            if not 0 <= p.class_id < self.label_spec.num_classes:
                raise MarsamError(f"box {p.box} has class {p.class_id}, outside label spec "
                                  f"{self.label_spec.name!r} ({', '.join(self.label_spec.classes)})")

    def _resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else (self.folder / p).resolve()

    def _reindex(self) -> None:
        self._index = {e["stem"]: i for i, e in enumerate(self._data["images"])}

    def _entry(self, image) -> dict:
        images = self._data["images"]
        if isinstance(image, (int, np.integer)):
            if 0 <= int(image) < len(images):
                return images[int(image)]
        else:
            p = Path(image)
            i = self._index.get(p.stem)
            if i is not None and (len(p.parts) == 1 or self._resolve(images[i]["path"]) == p.expanduser().resolve()):
                return images[i]
        raise MarsamError(f"image {image} is not in session {self.folder}; add it first (Session.add_images)")

    def _save(self) -> None:
        self.acquire_lock()
        self._data["updated"] = _now()
        atomic_write_json(self.folder / SESSION_FILE, self._data)

    def __repr__(self) -> str:
        c = self.counts()
        return f"Session({str(self.folder)!r}, {len(self._data['images'])} images, {c['done']} done)"
