"""The ``images/ + masks/ + split.csv`` folder (the AI4Mars layout): its one owner.

::

    root/images/<id>.<png|jpg|tif|...>   the images
    root/masks/<id>.png                  label maps: class ids, 255 = unlabelled (same stem as the image)
    root/split.csv                       optional; header ``id,split``, one row per image

Without ``split.csv`` every image with a mask forms the one split ``"all"`` (``"train"`` is
accepted as its name too). Readers (distill's datasets, the prompt evaluation, ``marsam explain
pca``) and writers (the demo, the synthetic terrain, annotate's PNG export) all go through here.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import MarsamError, SplitNotFound
from .images import IMAGE_SUFFIXES

IMAGES = "images"
MASKS = "masks"
SPLIT_FILE = "split.csv"
SINGLE_SPLIT = "all"


@dataclass(frozen=True)
class MaskPair:
    id: str
    image: Path
    mask: Path


def has_layout(root: str | os.PathLike) -> bool:
    """True when ``root`` has both ``images/`` and ``masks/``."""
    root = Path(root)
    return (root / IMAGES).is_dir() and (root / MASKS).is_dir()


def image_folder(root: str | os.PathLike) -> Path:
    """``root/images`` when it exists, else ``root`` itself (a plain folder of images)."""
    root = Path(root)
    if (root / IMAGES).is_dir():
        return root / IMAGES
    if not root.is_dir():
        raise MarsamError(f"{root} is not a folder; give a folder of images or one with an images/ subfolder")
    return root


def read_split_csv(path: str | os.PathLike) -> dict[str, str]:
    """``{id: split}`` in file order; a file that is not UTF-8 CSV with an ``id,split`` header is refused."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise MarsamError(f"{path} line {line} is not UTF-8 text; save split.csv as UTF-8") from None
    except csv.Error as e:
        raise MarsamError(f"{path} is not CSV ({e}); write a header 'id,split' and one row per image") from None
    if not rows:
        raise MarsamError(f"{path} is empty; write a header 'id,split' and one row per image")
    head = [c.strip().lower() for c in rows[0]]
    if "id" not in head or "split" not in head:
        raise MarsamError(f"{path} must have the header 'id,split'; found {','.join(rows[0])}")
    i, s = head.index("id"), head.index("split")
    return {r[i].strip(): r[s].strip() for r in rows[1:] if len(r) > max(i, s) and r[i].strip()}


def split_ids(root: str | os.PathLike, split: str | None) -> list[str] | None:
    """The ids ``split.csv`` lists for ``split`` (file order); None when every image is meant
    (``split`` None, or no ``split.csv`` and ``split`` is the single split)."""
    root = Path(root)
    split_file = root / SPLIT_FILE
    if split is None:
        return None
    if split_file.is_file():
        table = read_split_csv(split_file)
        names = sorted(set(table.values()))
        if split not in names:
            raise SplitNotFound(f"split {split!r} is not in {split_file}; use one of {', '.join(names)}")
        return [i for i, s in table.items() if s == split]
    if split not in (SINGLE_SPLIT, "train"):
        raise SplitNotFound(f"{root} has no split.csv, so all its images form the one split {SINGLE_SPLIT!r}; "
                            f"there is no split {split!r} (set val_split to null or add a split.csv with "
                            "'id,split' rows)")
    return None


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(p.stem, p)
    return found


def pairs(root: str | os.PathLike, split: str | None = None) -> tuple[list[MaskPair], list[tuple[str, str]]]:
    """The (image, mask) pairs of ``split`` (None: all of them, ``split.csv`` ignored) and the ids
    skipped with the reason: named in ``split.csv`` without an image file, or an image without a mask."""
    root = Path(root)
    img_dir, mask_dir = root / IMAGES, root / MASKS
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise MarsamError(f"{root} needs images/ and masks/ folders (the AI4Mars layout: images/<id>.jpg, "
                          "masks/<id>.png with class ids, the same file stem)")
    images, masks = _by_stem(img_dir), _by_stem(mask_dir)
    if not images:
        raise MarsamError(f"{img_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}); check the folder")
    wanted = split_ids(root, split)
    skipped: list[tuple[str, str]] = []
    if wanted is None:
        wanted = sorted(images)
    else:
        skipped += [(i, "named in split.csv but no image file") for i in wanted if i not in images]
        wanted = [i for i in wanted if i in images]
    skipped += [(i, f"image without a mask (expected masks/{i}.png)") for i in wanted if i not in masks]
    return [MaskPair(i, images[i], masks[i]) for i in wanted if i in masks], skipped


def write_pair(root: str | os.PathLike, stem: str, image, mask) -> tuple[Path, Path]:
    """Write ``images/<stem>.png`` and ``masks/<stem>.png`` atomically (arrays)."""
    from .atomic import atomic_write_png
    root = Path(root)
    paths = root / IMAGES / f"{stem}.png", root / MASKS / f"{stem}.png"
    atomic_write_png(paths[0], image)
    atomic_write_png(paths[1], mask)
    return paths


def write_split_csv(root: str | os.PathLike, rows: Iterable[tuple[str, str]]) -> Path:
    """``split.csv`` with the header ``id,split`` and one ``(id, split)`` row each, atomically."""
    from .atomic import atomic_write_text
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "split"])
    w.writerows(rows)
    path = Path(root) / SPLIT_FILE
    atomic_write_text(path, buf.getvalue())
    return path
