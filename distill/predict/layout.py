"""The fixed output layout of ``marsam predict`` and the per-image table.

::

    OUT/labels/<stem>.png                    uint8 class ids, 255 = abstained; same H x W as the input
    OUT/labels/<stem>.tif                    the same as a GeoTIFF on the input's grid (georeferenced inputs)
    OUT/overlays/<stem>.png                  RGB: the image with the class colours blended in
    OUT/uncertainty/<stem>.entropy.npy       float32 H x W predictive entropy (nats)     --uncertainty entropy
    OUT/uncertainty/<stem>.entropy.tif       the same as a GeoTIFF (georeferenced inputs)
    OUT/uncertainty/<stem>.mutual_info.npy   float32 H x W MC-dropout mutual information  --uncertainty mc-dropout
    OUT/uncertainty/<stem>.probs.npy         float32 K x H x W class probabilities       --probs
    OUT/vectors/<stem>.geojson | .gpkg       one polygon per region: class, area, mean confidence  --vector
    OUT/rows/<stem>.json                     the image's table row (resumption rebuilds the table from these)
    OUT/predictions.csv, OUT/predictions.json   one row per image

The label PNG is written last, so an image counts as done when its label PNG, its row and every
other file the current options ask for exist; a rerun skips done images unless ``--overwrite``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from segmodels.atomic import atomic_write_json, atomic_write_text
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec


class Layout:
    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)

    def labels(self, stem: str) -> Path:
        return self.out / "labels" / f"{stem}.png"

    def labels_tif(self, stem: str) -> Path:
        return self.out / "labels" / f"{stem}.tif"

    def overlay(self, stem: str) -> Path:
        return self.out / "overlays" / f"{stem}.png"

    def uncertainty(self, stem: str, kind: str, ext: str = "npy") -> Path:
        return self.out / "uncertainty" / f"{stem}.{kind}.{ext}"

    def vector(self, stem: str, fmt: str) -> Path:
        return self.out / "vectors" / f"{stem}.{fmt}"

    def row(self, stem: str) -> Path:
        return self.out / "rows" / f"{stem}.json"

    @property
    def csv(self) -> Path:
        return self.out / "predictions.csv"

    @property
    def json(self) -> Path:
        return self.out / "predictions.json"


def check_out_folder(out: Path, inputs: list[Path]) -> None:
    """Refuse an output folder inside (or equal to) an input folder, and one that cannot be written,
    before anything is predicted."""
    out_r = out.resolve()
    for src in inputs:
        folder = (src if src.is_dir() else src.parent).resolve()
        if src.is_dir() and (out_r == folder or folder in out_r.parents):
            raise MarsamError(f"--out {out} is inside --images {src}; a later run would read the predictions as "
                              "images: choose an output folder outside the image folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".marsam-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MarsamError(f"cannot write to output folder {out} ({e.strerror or e}); choose a writable --out") from None


def stems_for(paths: list[Path]) -> list[str]:
    """Output stem per input: the file stem, or stem_ext where two inputs share a stem."""
    seen: dict[str, int] = {}
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
    return [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if seen[p.stem] > 1 else p.stem for p in paths]


def table_columns(spec: LabelSpec) -> list[str]:
    return (["image", "status", "height", "width", "model", "seconds", "mean_entropy", "mean_confidence",
             "abstained_fraction"] + [f"fraction_{c}" for c in spec.classes] + ["georeferenced", "labels"])


def sort_rows(rows: list[dict], by: str) -> list[dict]:
    """``name``: input order; ``uncertainty``: most uncertain (highest mean entropy) first, failures last."""
    if by == "name":
        return list(rows)
    if by == "uncertainty":
        return sorted(rows, key=lambda r: (r.get("status") != "ok", -(r.get("mean_entropy") or 0.0)))
    raise MarsamError(f"unknown sort {by!r}; use name or uncertainty")


def write_table(layout: Layout, rows: list[dict], spec: LabelSpec, meta: dict) -> tuple[Path, Path]:
    cols = table_columns(spec)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_text(layout.csv, buf.getvalue())
    atomic_write_json(layout.json, {**meta, "columns": cols, "images": rows})
    return layout.csv, layout.json


def read_row(layout: Layout, stem: str) -> dict | None:
    try:
        return json.loads(layout.row(stem).read_text())
    except (OSError, ValueError):
        return None
