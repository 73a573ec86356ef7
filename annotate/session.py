"""Annotation sessions: a folder that never loses an expert's work.

Layout::

    SESSION/session.json        images (paths relative to SESSION), per-image boxes with classes,
                                points, status, engine and model used; the label spec
    SESSION/labels/<stem>.png   uint8 label maps in the AI4Mars convention (255 = unlabelled)

Every write goes through :mod:`segmodels.atomic` (temporary file + ``os.replace``): a kill at
any moment leaves each file either as it was or as it became, never half-written. A result is
saved label map first, ``session.json`` second, so a session.json that says "done" always has
its label map on disk; a kill between the two leaves the image "todo" (redone on resume).
Image paths are stored relative to the session folder so a project folder can be moved whole.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from segmodels.atomic import atomic_write_json, atomic_write_png
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, LabelSpec, get_label_spec

from .prompts import BoxPrompt

SESSION_FILE = "session.json"
LABELS_DIR = "labels"
STATUSES = ("todo", "draft", "done", "failed")
_FORMAT = "marsam-session"
_VERSION = 1



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _remove_stale_temporaries(folder: Path, min_age_s: float = 600.0) -> None:
    """Delete temporary files a killed writer left behind (``.<name>.*.tmp``, see segmodels.atomic).

    Only files older than ``min_age_s`` go, so a write in progress in another process (the
    napari plugin autosaving while a CLI run reads) is never touched.
    """
    import time
    now = time.time()
    for d in (folder, folder / LABELS_DIR):
        for tmp in d.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > min_age_s:
                    tmp.unlink()
            except OSError:
                pass


class Session:
    """One annotation session; thread-safe (napari workers and the GUI may share one)."""

    def __init__(self, folder: Path, data: dict):
        self.folder = Path(folder)
        self._data = data
        self._lock = threading.RLock()
        self.label_spec: LabelSpec = get_label_spec(data["label_spec"])
        self._index: dict[str, int] = {}
        self._reindex()

    # --- creation -----------------------------------------------------------------------
    @classmethod
    def create(cls, folder, images: Iterable, label_spec: LabelSpec | str = AI4MARS, engine: str = "grabcut",
               model: str | None = None) -> "Session":
        folder = Path(folder)
        if (folder / SESSION_FILE).exists():
            raise MarsamError(f"{folder} already holds a session; open it (Session.open) or choose another --out")
        spec = get_label_spec(label_spec)
        data = {"format": _FORMAT, "version": _VERSION, "label_spec": spec.to_dict(), "engine": engine,
                "model": model, "created": _now(), "updated": _now(), "images": []}
        session = cls(folder, data)
        session.add_images(images, _save=False)
        (folder / LABELS_DIR).mkdir(parents=True, exist_ok=True)
        session._save()
        return session

    @classmethod
    def open(cls, folder) -> "Session":
        folder = Path(folder)
        path = folder / SESSION_FILE
        if not path.is_file():
            raise MarsamError(f"{folder} is not a marsam session (no {SESSION_FILE}); create one with "
                              "`marsam annotate --out` or Session.create")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise MarsamError(f"{path} cannot be read ({e}); restore it from a backup") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or "images" not in data:
            raise MarsamError(f"{path} is not a marsam session file")
        if int(data.get("version", 0)) > _VERSION:
            raise MarsamError(f"{path} was written by a newer marsam (version {data['version']}); upgrade marsam")
        _remove_stale_temporaries(folder)
        return cls(folder, data)

    @classmethod
    def open_or_create(cls, folder, images: Iterable, label_spec: LabelSpec | str = AI4MARS,
                       engine: str = "grabcut", model: str | None = None) -> "Session":
        """Reopen an existing session (adding new images) or start one; what resumable commands use."""
        if (Path(folder) / SESSION_FILE).exists():
            session = cls.open(folder)
            spec = get_label_spec(label_spec)
            if session.label_spec.classes != spec.classes:
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
                    raise MarsamError(f"two images share the name {stem!r} ({path} and "
                                      f"{self.image_paths[self._index[stem]]}); label maps are named by stem, "
                                      "so rename one of them")
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

    def label_map(self, image) -> np.ndarray | None:
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
                   engine: str | None = None, model: str | None = None) -> None:
        with self._lock:
            e = self._entry(image)
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
        self._data["updated"] = _now()
        atomic_write_json(self.folder / SESSION_FILE, self._data)

    def __repr__(self) -> str:
        c = self.counts()
        return f"Session({str(self.folder)!r}, {len(self._data['images'])} images, {c['done']} done)"
