"""Label writers: a session's label maps as a PNG folder, COCO JSON with RLE masks, or a HF dataset.

Three consumers, three formats:

- PNG folder (``images/`` + ``masks/``, same stem, the AI4Mars convention): what ``distill``
  and most segmentation code read. Images are copied byte for byte (no re-encoding loss), masks
  are uint8 PNGs with 255 = unlabelled, and ``label_spec.json`` names the classes.
- COCO JSON: what annotation tools (CVAT, Label Studio, detectron2) import. Each (image, class)
  pair becomes one "stuff"-style annotation whose mask is a compressed COCO RLE string, the
  format pycocotools reads. pycocotools is not a dependency, so the RLE codec lives here: the
  uncompressed run lengths come from segment-anything's ``mask_to_rle_pytorch`` (column-major,
  starting with a background run), and :func:`rle_counts_to_string` /
  :func:`rle_string_to_counts` implement pycocotools' ``rleToString``/``rleFrString``.
- Hugging Face ``datasets``: ``image`` and ``label`` columns of ``datasets.Image`` features,
  written with ``save_to_disk`` (image bytes embedded, so the export survives moving it).
- Polygons (``geojson`` / ``gpkg``, the ``geo`` extra): one file per image, one polygon per
  connected region of a class with its class and area, for GIS tools. A georeferenced image
  (a GeoTIFF) gives map coordinates and areas in map units, others pixel coordinates
  (``segmodels.geo``, the same polygons ``marsam predict --vector`` writes).

Only images with a saved label map are exported; an image whose file went missing or whose label
map does not fit it is reported and skipped, never stopping the export.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from segmodels.atomic import atomic_write_bytes, atomic_write_json, atomic_write_png
from segmodels import mask_folder
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("png", "coco", "hf", "geojson", "gpkg")
COCO_FILE = "annotations.json"


# ---------------------------------------------------------------------------------------------
# COCO RLE


def mask_to_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE ``{"size": [h, w], "counts": [...]}`` of a 2-D mask (column-major)."""
    import torch
    from segment_anything.utils.amg import mask_to_rle_pytorch
    m = np.asarray(mask)
    if m.ndim != 2:
        raise MarsamError(f"an RLE mask must be 2-D (H x W); got shape {m.shape}")
    return mask_to_rle_pytorch(torch.from_numpy(np.ascontiguousarray(m.astype(bool)))[None])[0]


def rle_to_mask(rle: dict) -> np.ndarray:
    """Bool H x W mask of an uncompressed or compressed COCO RLE (the inverse of :func:`encode_rle`)."""
    from segment_anything.utils.amg import rle_to_mask as _decode
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise MarsamError(f"malformed COCO RLE {str(rle)[:80]}: it needs 'size' [h, w] and 'counts'") from None
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    if sum(counts) != h * w or any(c < 0 for c in counts):
        raise MarsamError(f"COCO RLE counts cover {sum(counts)} pixels but size {h}x{w} has {h * w}; "
                          "the annotation is corrupt")
    return _decode({"size": [h, w], "counts": list(counts)})


def rle_counts_to_string(counts: list[int]) -> str:
    """pycocotools' compressed counts: deltas against the count two back, 5-bit LEB128-like chars.

    From the fourth count on, each count is stored as its difference to the count two places
    earlier (runs of the same parity tend to be similar). Each number is written 5 bits at a time,
    least significant first, as ``chr(48 + chunk)``; bit 0x20 says another chunk follows and bit
    0x10 of the last chunk carries the sign.
    """
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            chunk = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers end at -1
            more = x != -1 if chunk & 0x10 else x != 0
            if more:
                chunk |= 0x20
            out.append(chr(chunk + 48))
    return "".join(out)


def rle_string_to_counts(s: str | bytes) -> list[int]:
    """Inverse of :func:`rle_counts_to_string` (pycocotools' ``rleFrString``)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise MarsamError("COCO RLE string ends in the middle of a number; the annotation is corrupt")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise MarsamError(f"COCO RLE string holds {s[p]!r}, which is not an RLE character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE ``{"size": [h, w], "counts": "<string>"}``, what pycocotools writes."""
    rle = mask_to_rle(mask)
    return {"size": rle["size"], "counts": rle_counts_to_string(rle["counts"])}


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return [0.0, 0.0, 0.0, 0.0]
    r0, r1 = np.flatnonzero(rows)[[0, -1]]
    c0, c1 = np.flatnonzero(cols)[[0, -1]]
    return [float(c0), float(r0), float(c1 - c0 + 1), float(r1 - r0 + 1)]


def coco_from_label_maps(items: Iterable[tuple[str, np.ndarray]], spec: LabelSpec) -> dict:
    """A COCO dict with one RLE annotation per (image, class present); category id = class id + 1.

    COCO reserves category id 0, so class ``k`` of the label spec is category ``k + 1``; the
    names are those of the spec. Unlabelled pixels (the spec's ignore value) get no annotation.
    """
    images, annotations = [], []
    categories = [{"id": k + 1, "name": name, "supercategory": spec.name} for k, name in enumerate(spec.classes)]
    for image_id, (file_name, lm) in enumerate(items, start=1):
        h, w = lm.shape
        images.append({"id": image_id, "file_name": file_name, "height": int(h), "width": int(w)})
        for k in range(spec.num_classes):
            m = lm == k
            area = int(m.sum())
            if not area:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": k + 1,
                                "segmentation": encode_rle(m), "area": area, "bbox": _bbox_xywh(m),
                                "iscrowd": 0})
    return {"info": {"description": f"marsam labels ({spec.name})", "label_spec": spec.to_dict()},
            "images": images, "annotations": annotations, "categories": categories}


def label_maps_from_coco(coco: dict, ignore_index: int = 255) -> dict[str, np.ndarray]:
    """file_name -> uint8 label map (class id = category id - 1; uncovered pixels = ignore).

    The inverse of :func:`coco_from_label_maps`, used to check exports round-trip; where two
    annotations overlap, the later one wins.
    """
    try:
        maps = {im["id"]: (im["file_name"], np.full((im["height"], im["width"]), ignore_index, np.uint8))
                for im in coco["images"]}
        for ann in coco["annotations"]:
            name, lm = maps[ann["image_id"]]
            lm[rle_to_mask(ann["segmentation"])] = int(ann["category_id"]) - 1
    except (KeyError, TypeError) as e:
        raise MarsamError(f"not a COCO annotation file with RLE masks (missing {e})") from None
    return dict(maps.values())


# ---------------------------------------------------------------------------------------------
# exports from a session


@dataclass
class ExportReport:
    """What an export wrote and what it skipped (with the reason), for the CLI summary."""
    format: str
    out: Path
    exported: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"exported {len(self.exported)} labelled image(s) as {self.format} to {self.out}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(f"{n} ({why})" for n, why in self.skipped[:5])
            if len(self.skipped) > 5:
                text += f"; ... {len(self.skipped) - 5} more"
        return text


def _labelled_items(session, report: ExportReport, progress: bool = False):
    """Yield (image path, label map) for every labelled image that still reads and fits its label map."""
    from PIL import Image
    from tqdm import tqdm
    paths = list(session.labelled_images())
    if not paths:
        raise MarsamError("the session has no labelled images yet; label some with `marsam annotate` "
                          "or the napari plugin before exporting")
    for path in tqdm(paths, desc=f"export {report.format}", unit="image", disable=not progress):
        path = Path(path)
        if not path.is_file():
            report.skipped.append((path.name, "image file missing"))
            continue
        try:
            lm = session.label_map(path)
            if lm is None:
                report.skipped.append((path.name, "no label map saved"))
                continue
            lm = session.label_spec.validate_label_map(lm, f"label map of {path.name}")
            with Image.open(path) as im:
                w, h = im.size
        except MarsamError as e:
            report.skipped.append((path.name, str(e)))
            continue
        except OSError:
            report.skipped.append((path.name, "image file unreadable"))
            continue
        if lm.shape != (h, w):
            report.skipped.append((path.name, f"label map is {lm.shape[1]}x{lm.shape[0]}, image {w}x{h}"))
            continue
        yield path, lm


def _check_some(report: ExportReport) -> None:
    if not report.exported:
        raise MarsamError(f"none of the session's labelled images could be exported ({report.summary()}); "
                          "fix or relabel them")


def _out_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MarsamError(f"export destination {out} is a file; give a folder (it is created if missing)")
    return out


def export_png(session, out: str | os.PathLike, progress: bool = False) -> ExportReport:
    """``out/images/<name>`` (copied as is) + ``out/masks/<stem>.png`` + ``out/label_spec.json``.

    Names cannot collide: a session refuses two images with the same stem.
    """
    out = _out_dir(out)
    report = ExportReport("png", out)
    for path, lm in _labelled_items(session, report, progress):
        atomic_write_bytes(out / mask_folder.IMAGES / path.name, path.read_bytes())
        atomic_write_png(out / mask_folder.MASKS / f"{path.stem}.png", lm)
        report.exported.append(path.name)
    _check_some(report)
    atomic_write_json(out / "label_spec.json", session.label_spec.to_dict())
    return report


def export_coco(session, out: str | os.PathLike, progress: bool = False) -> ExportReport:
    """``out/images/<name>`` + ``out/annotations.json`` (COCO, compressed RLE masks).

    Label maps are encoded one at a time as they are read, so memory holds RLE strings only.
    """
    out = _out_dir(out)
    report = ExportReport("coco", out)

    def items():
        for path, lm in _labelled_items(session, report, progress):
            atomic_write_bytes(out / "images" / path.name, path.read_bytes())
            report.exported.append(path.name)
            yield path.name, lm

    coco = coco_from_label_maps(items(), session.label_spec)
    _check_some(report)
    atomic_write_bytes(out / COCO_FILE, json.dumps(coco).encode("utf-8"))
    return report


def _png_bytes(label_map: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(label_map).save(buf, format="PNG")
    return buf.getvalue()


def export_hf(session, out: str | os.PathLike, progress: bool = False) -> ExportReport:
    """A ``datasets.Dataset`` with ``image`` and ``label`` (``datasets.Image``) saved with ``save_to_disk``.

    The dataset is written to a temporary folder beside ``out`` and moved into place only when
    complete, so an interrupted export never leaves a dataset that loads half. ``out`` may be a
    former HF export (it is replaced) or an empty/new folder; any other folder is refused so
    that nothing of the user's is deleted. The label spec is kept in the dataset description.
    """
    import datasets
    out = _out_dir(out)
    report = ExportReport("hf", out)
    if out.exists() and any(out.iterdir()) and not (out / "dataset_info.json").is_file():
        raise MarsamError(f"{out} exists and is not an earlier HF export; choose a new or empty folder")
    images, labels = [], []
    for path, lm in _labelled_items(session, report, progress):
        images.append({"path": str(path.resolve()), "bytes": None})
        labels.append({"path": f"{path.stem}.png", "bytes": _png_bytes(lm)})
        report.exported.append(path.name)
    _check_some(report)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    info = datasets.DatasetInfo(description=json.dumps({"marsam_label_spec": session.label_spec.to_dict()}),
                                features=features)
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features, info=info)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        ds.save_to_disk(str(tmp))
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return report


def _replace_dir(new: Path, dest: Path) -> None:
    """Put folder ``new`` at ``dest``; the old ``dest`` is removed only after the swap succeeded."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except OSError:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _vector_exporter(fmt: str):
    def export_vectors(session, out: str | os.PathLike, progress: bool = False) -> ExportReport:
        """``out/<stem>.geojson|gpkg``: the regions of each labelled image as polygons (class, area)
        + ``out/label_spec.json``; map coordinates for georeferenced images."""
        from segmodels.geo import label_polygons, read_georef, require_rasterio, write_vectors
        require_rasterio("exporting polygons")
        out = _out_dir(out)
        report = ExportReport(fmt, out)
        for path, lm in _labelled_items(session, report, progress):
            georef = read_georef(path)
            feats = label_polygons(lm, session.label_spec, None, georef)
            write_vectors(out / f"{path.stem}.{fmt}", feats, georef)
            report.exported.append(path.name)
        _check_some(report)
        atomic_write_json(out / "label_spec.json", session.label_spec.to_dict())
        return report
    return export_vectors


_EXPORTERS = {"png": export_png, "coco": export_coco, "hf": export_hf,
              "geojson": _vector_exporter("geojson"), "gpkg": _vector_exporter("gpkg")}


def export_session(session, out: str | os.PathLike, format: str = "png", progress: bool = False) -> ExportReport:
    """Write a session's labels in ``format`` (png | coco | hf | geojson | gpkg) to folder ``out``."""
    if format not in _EXPORTERS:
        raise MarsamError(f"unknown export format {format!r}; use one of {', '.join(EXPORT_FORMATS)}")
    return _EXPORTERS[format](session, out, progress=progress)
