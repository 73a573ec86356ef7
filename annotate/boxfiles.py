"""Readers for box files an expert (or another tool) produced: CSV, COCO JSON and YOLO text.

All three give ``{image file name: [BoxPrompt, ...]}`` in image pixels with classes of one
:class:`LabelSpec`. Problems with single boxes or images never stop the read: a box partly
outside its image is clipped (warning), a zero-area or inverted box is rejected (message), a
box for an image that does not exist is reported and dropped. Those messages go to the log and
to the optional ``problems`` list so a CLI can summarise them. A class that is not in the label
spec is a mistake in the whole file, so it raises :class:`MarsamError` naming the valid classes.

Class mapping: ``class_map`` maps the file's class names (or YOLO ids as strings) to spec class
names or ids; the key ``"*"`` maps every class not listed. Without a ``class_map`` the names are
looked up in the spec directly, except for the ``hirise-pits`` spec, whose default is
``{"*": "pit"}``: the five pit types of the HiRISE YOLO boxes all become its one ``pit`` class.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Mapping

from segmodels.errors import MarsamError
from segmodels.images import IMAGE_SUFFIXES
from segmodels.images import image_size as header_size
from segmodels.labels import LabelSpec, get_label_spec

from .prompts import BoxPrompt, clip_box

log = logging.getLogger(__name__)

FORMATS = ("csv", "coco", "yolo")
CSV_COLUMNS = ("image", "x0", "y0", "x1", "y1", "class")


class _Classes:
    def __init__(self, spec: LabelSpec, class_map: Mapping | None):
        self.spec = spec
        if class_map is None and spec.name == "hirise-pits":
            class_map = {"*": "pit"}
        self.map = {str(k): v for k, v in (class_map or {}).items()}

    def __call__(self, name) -> int:
        key = str(name).strip()
        if key in self.map:
            return self.spec.class_id(self.map[key])
        if "*" in self.map:
            return self.spec.class_id(self.map["*"])
        try:
            return self.spec.class_id(key)
        except MarsamError:
            raise MarsamError(f"unknown class {key!r} in the box file; label spec {self.spec.name!r} has "
                              f"{', '.join(self.spec.classes)}; choose another --labels spec, or a label-spec "
                              "YAML whose box_classes maps the file's classes") from None


class _Reader:
    def __init__(self, images_dir, problems: list | None):
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.problems = problems if problems is not None else []
        self.out: dict[str, list[BoxPrompt]] = {}
        self.missing: set[str] = set()
        self.sizes: dict[str, tuple[int, int] | None] = {}

    def warn(self, msg: str) -> None:
        msg = " ".join(str(msg).splitlines())   # one line, whatever text the file put in it
        log.warning(msg)
        self.problems.append(msg)

    def image_size(self, name: str) -> tuple[int, int] | None:
        """(h, w) read from the image header, or None (reported once) when the image is missing,
        unreadable or beyond the pixel limit marsam reads."""
        if name in self.sizes:
            return self.sizes[name]
        path = self.images_dir / name
        size = None
        if not path.is_file():
            self.warn(f"box file names image {name}, which is not in {self.images_dir}; its boxes are skipped")
        else:
            try:
                size = header_size(path)
            except MarsamError as e:
                self.warn(f"{e}; its boxes are skipped")
        if size is None:
            self.missing.add(name)
        self.sizes[name] = size
        return size

    def add(self, name: str, box, class_id: int, size: tuple[int, int] | None, where: str) -> None:
        self.out.setdefault(name, [])
        try:
            if not all(math.isfinite(v) for v in box):
                raise MarsamError(f"coordinates {tuple(box)} are not finite numbers")
            if size is not None:
                clipped, changed = clip_box(box, size)
                if changed:
                    self.warn(f"{where}: box {tuple(round(v, 1) for v in box)} lies partly outside the "
                              f"{size[1]}x{size[0]} image {name}; clipped to {tuple(round(v, 1) for v in clipped)}")
                box = clipped
            else:
                x0, y0, x1, y1 = box
                if x1 - x0 < 1 or y1 - y0 < 1:
                    raise MarsamError(f"box {tuple(box)} is inverted or has zero area")
        except MarsamError as e:
            self.warn(f"{where}: rejected: {e}")
            return
        self.out[name].append(BoxPrompt(box=box, class_id=class_id))


def _text_lines(path: Path, r: _Reader) -> list[str]:
    """The file's lines; a line that is not UTF-8 is reported (file and line) and read as empty."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MarsamError(f"box file {path} cannot be read ({e.strerror or e}); check its permissions") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            r.warn(f"{path.name} line {n}: rejected: not UTF-8 text; save the file as UTF-8")
            lines.append("")
    return lines


def read_boxes(path, format: str, images_dir=None, label_spec: LabelSpec | str | None = None, *,
               class_map: Mapping | None = None, problems: list | None = None) -> dict[str, list[BoxPrompt]]:
    """Boxes per image file name. ``images_dir`` is where the images are (for sizes and existence)."""
    path = Path(path)
    if format not in FORMATS:
        raise MarsamError(f"unknown box format {format!r}; use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise MarsamError(f"box file {path} does not exist; check --boxes")
    spec = get_label_spec(label_spec)
    classes = _Classes(spec, class_map)
    if images_dir is not None and not Path(images_dir).is_dir():
        raise MarsamError(f"image folder {images_dir} does not exist; check --images")
    if format == "csv":
        return _read_csv(path, classes, images_dir, problems)
    if format == "coco":
        return _read_coco(path, classes, images_dir, problems)
    return _read_yolo(path, classes, images_dir, problems)


def _read_csv(path: Path, classes: _Classes, images_dir, problems) -> dict[str, list[BoxPrompt]]:
    r = _Reader(images_dir, problems)
    lines = _text_lines(path, r)
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames or []
    except csv.Error as e:
        raise MarsamError(f"CSV box file {path} line 1 is not CSV ({e})") from None
    fields = {c.strip().lower(): c for c in header if c is not None}
    lacking = [c for c in CSV_COLUMNS if c not in fields]
    if lacking:
        raise MarsamError(f"CSV box file {path} lacks column(s) {', '.join(lacking)}; the header must be "
                          f"{','.join(CSV_COLUMNS)}")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            r.warn(f"{path.name} line {reader.line_num}: rejected: not CSV ({e})")
            continue
        where = f"{path.name} line {reader.line_num}"
        values = [row.get(fields[c]) for c in CSV_COLUMNS]
        if any(v is None for v in values):
            r.warn(f"{where}: rejected: expected {len(CSV_COLUMNS)} values ({','.join(CSV_COLUMNS)})")
            continue
        name = Path(values[0].strip()).name
        if not name:
            r.warn(f"{where}: rejected: no image name")
            continue
        try:
            box = tuple(float(v) for v in values[1:5])
        except (TypeError, ValueError):
            r.warn(f"{where}: rejected: coordinates are not numbers")
            continue
        cid = classes(values[5])
        size = r.image_size(name) if r.images_dir is not None else None
        if r.images_dir is not None and size is None:
            continue
        r.add(name, box, cid, size, where)
    return r.out


def _coco_int(v) -> int | None:
    """A COCO integer field (id, width, height), or None when it is not one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def _read_coco(path: Path, classes: _Classes, images_dir, problems) -> dict[str, list[BoxPrompt]]:
    r = _Reader(images_dir, problems)
    try:
        data = json.loads("\n".join(_text_lines(path, r)))
    except ValueError as e:
        raise MarsamError(f"{path} is not a COCO JSON file ({e}); it needs images, categories and annotations") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations", []), list) or not isinstance(data.get("categories", []), list):
        raise MarsamError(f"{path} is not a COCO JSON file; it needs an object with lists images, "
                          "categories and annotations")
    images: dict = {}
    for k, im in enumerate(data["images"]):
        where = f"{path.name} image entry {k}"
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or not im["file_name"].strip() \
                or _coco_int(im.get("id")) is None:
            r.warn(f"{where}: rejected: an image needs an integer id and a file_name")
            continue
        declared = None
        if "width" in im or "height" in im:
            w, h = _coco_int(im.get("width")), _coco_int(im.get("height"))
            if w is None or h is None or w < 1 or h < 1:
                r.warn(f"{where} ({im['file_name']}): rejected: width and height must be positive integers")
                continue
            declared = (h, w)
        name = Path(im["file_name"]).name
        size = declared
        if r.images_dir is not None:
            size = r.image_size(name)
            if size is None:
                continue
            if declared is not None and declared != size:
                r.warn(f"{where}: rejected: declares {declared[1]}x{declared[0]} pixels but {name} is "
                       f"{size[1]}x{size[0]}; its boxes are skipped (fix width/height in the COCO file)")
                r.missing.add(name)
                continue
        images[_coco_int(im["id"])] = (name, size)
        r.out.setdefault(name, [])
    cats = {}
    for c in data.get("categories", []):
        if isinstance(c, dict) and _coco_int(c.get("id")) is not None and isinstance(c.get("name"), str):
            cats[_coco_int(c["id"])] = c["name"]
        else:
            r.warn(f"{path.name}: category {repr(c)[:60]} rejected: it needs an integer id and a name")
    for k, a in enumerate(data.get("annotations", [])):
        if not isinstance(a, dict):
            r.warn(f"{path.name} annotation entry {k}: rejected: not an object")
            continue
        where = f"{path.name} annotation {a.get('id', k)!s:.40}"
        bbox = a.get("bbox")
        image_id = _coco_int(a.get("image_id"))
        if image_id is None or image_id not in images:
            r.warn(f"{where}: rejected: no image {str(a.get('image_id'))[:40]}")
            continue
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            r.warn(f"{where}: rejected: bbox must be [x, y, width, height] numbers")
            continue
        name, size = images[image_id]
        cat = a.get("category_id")
        cid = classes(cats.get(_coco_int(cat), cat) if not isinstance(cat, (list, dict)) else str(cat))
        x, y, w, h = (float(v) for v in bbox)
        r.add(name, (x, y, x + w, y + h), cid, size, where)
    return r.out


def find_data_yaml(start) -> Path | None:
    """The nearest YOLO ``data.yaml`` to a labels folder or box file (it, its parent, grandparent)."""
    start = Path(start)
    start = start if start.is_dir() else start.parent
    for d in (start, *start.parents[:2]):
        if (d / "data.yaml").is_file():
            return d / "data.yaml"
    return None


def _yolo_names(start: Path) -> list[str] | None:
    """Class names from the nearest data.yaml (YOLO's dataset file), if any."""
    import yaml
    f = find_data_yaml(start)
    if f is None:
        return None
    try:
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise MarsamError(f"{f} is not valid YAML ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise MarsamError(f"{f} cannot be read ({e.strerror or e})") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        try:
            return [str(names[k]) for k in sorted(names)]
        except TypeError:
            raise MarsamError(f"{f}: names must be a list or a mapping of class ids to names") from None
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


def _find_image(images_dir: Path, stem: str) -> str | None:
    for suffix in IMAGE_SUFFIXES:
        for s in (suffix, suffix.upper()):
            if (images_dir / f"{stem}{s}").is_file():
                return f"{stem}{s}"
    return None


def _read_yolo(path: Path, classes: _Classes, images_dir, problems) -> dict[str, list[BoxPrompt]]:
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    files = [f for f in files if f.name != "classes.txt"]
    label_dir = path if path.is_dir() else path.parent
    if images_dir is None:
        images_dir = label_dir.parent / "images" if label_dir.name == "labels" else label_dir
    r = _Reader(images_dir, problems)
    names = _yolo_names(label_dir)
    if not files:
        raise MarsamError(f"no YOLO .txt files in {path}; point --boxes at the labels folder")
    for f in files:
        name = _find_image(r.images_dir, f.stem)
        if name is None:
            r.warn(f"{f.name} has no image {f.stem}.* in {r.images_dir}; its boxes are skipped")
            continue
        size = r.image_size(name)
        if size is None:
            continue
        h, w = size
        r.out.setdefault(name, [])
        for n, line in enumerate(_text_lines(f, r), start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{f.name} line {n}"
            if len(parts) != 5:
                r.warn(f"{where}: rejected: expected 'class cx cy w h', got {len(parts)} values")
                continue
            try:
                cls = int(parts[0])
                cx, cy, bw, bh = (float(v) for v in parts[1:])
            except ValueError:
                r.warn(f"{where}: rejected: not numbers")
                continue
            if names is not None and not 0 <= cls < len(names):
                raise MarsamError(f"{where}: YOLO class {cls} is not in data.yaml ({len(names)} names)")
            cid = classes(names[cls] if names is not None else cls)
            box = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            r.add(name, box, cid, size, where)
    return r.out


def images_with_boxes(boxes: dict[str, list[BoxPrompt]], images: list[os.PathLike]) -> dict[Path, list[BoxPrompt]]:
    """Match a box file's image names against image paths (by file name)."""
    by_name = {Path(p).name: Path(p) for p in images}
    return {by_name[n]: b for n, b in boxes.items() if n in by_name}
