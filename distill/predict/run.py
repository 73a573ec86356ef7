"""``marsam predict``: a model over folders and whole orbital products, in bounded memory.

Small images (up to ``block`` pixels a side) are predicted whole, several of the same size in
one batch when the model allows it. Larger images are cut into horizontal strips of about
``block_pixels`` pixels (full width), each predicted with a ``halo`` of context rows above and
below (and, inside the strip, segmodels' overlapping Hann-blended tiles), so memory holds one
strip's probabilities, never the image's: the float maps (entropy, probabilities, mutual
information) are written strip by strip into their ``.npy`` / GeoTIFF files. What stays in
memory for the whole image is the image itself, its uint8 label map and, with ``--vector``, a
float16 confidence map.

Every file is written atomically (a temporary name in the same folder, then a rename) and the
label PNG last, so a killed run leaves whole files and a rerun continues where it stopped. One
unreadable or unsuitable image is reported and skipped; its partial outputs are removed.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segmodels.errors import MarsamError
from segmodels.images import IMAGE_SUFFIXES, list_images, load_image, to_unit_float
from segmodels.labels import LabelSpec

from .layout import Layout, check_out_folder, read_row, sort_rows, stems_for, write_table
from .models import batch_probabilities, can_batch, describe, mc_dropout_mutual_info
from .outputs import ImageOutputs

UNCERTAINTY_KINDS = ("entropy", "mc-dropout")


@dataclass
class PredictSettings:
    tta: str = ""                    #: "" none, "h" horizontal flip, "hv" horizontal + vertical + both
    min_confidence: float = 0.0      #: pixels whose max probability is below this become 255 (abstain)
    uncertainty: tuple = ()          #: subset of UNCERTAINTY_KINDS
    probs: bool = False              #: also write K x H x W probabilities
    mc_samples: int = 20
    vector: str | None = None        #: "geojson" or "gpkg"
    vector_units: str = "auto"       #: "auto" (map when georeferenced), "map" (required), "pixel"
    min_region: int = 1              #: regions smaller than this many pixels are left out of the vectors
    batch_size: int = 8              #: same-sized small images per forward pass
    tile: int = 512                  #: tiles of segmodels' tiled inference inside a large image
    overlap: int = 64
    tile_batch: int = 2              #: tiles per forward pass (memory grows with it)
    device: str | None = None
    block: int = 2048                #: images with a side above this are predicted in strips
    block_pixels: int = 2_000_000    #: pixels per strip (sets its height: block_pixels // width)
    halo: int = 64                   #: context rows above and below each strip
    overwrite: bool = False
    sort: str = "name"               #: "name" or "uncertainty"
    progress: bool = True

    def check(self) -> "PredictSettings":
        if not 0.0 <= self.min_confidence <= 1.0:
            raise MarsamError(f"--min-confidence must be in [0, 1], got {self.min_confidence}")
        bad = [u for u in self.uncertainty if u not in UNCERTAINTY_KINDS]
        if bad:
            raise MarsamError(f"unknown --uncertainty {bad[0]!r}; use {' or '.join(UNCERTAINTY_KINDS)}")
        if self.tta not in ("", "h", "hv"):
            raise MarsamError(f"--tta must be h (horizontal flips) or hv (both axes), got {self.tta!r}")
        if self.vector not in (None, "geojson", "gpkg"):
            raise MarsamError(f"--vector must be geojson or gpkg, got {self.vector!r}")
        if self.vector_units not in ("auto", "map", "pixel"):
            raise MarsamError(f"--vector-units must be auto, map or pixel, got {self.vector_units!r}")
        if self.batch_size < 1 or self.block < 64 or self.halo < 0:
            raise MarsamError("batch size must be >= 1, block >= 64 pixels and halo >= 0")
        if self.sort not in ("name", "uncertainty"):
            raise MarsamError(f"--sort must be name or uncertainty, got {self.sort!r}")
        return self


@dataclass
class PredictReport:
    out: Path
    rows: list[dict] = field(default_factory=list)
    predicted: int = 0
    resumed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    table: tuple[Path, Path] | None = None

    def summary(self) -> str:
        s = f"predicted {self.predicted} image(s) into {self.out}"
        if self.resumed:
            s += f", {self.resumed} already done (kept; --overwrite redoes them)"
        if self.failed:
            s += f", {len(self.failed)} skipped"
        return s


def collect_images(sources: list[str | os.PathLike]) -> list[Path]:
    """Image files from folders (their images, sorted) and files given by name."""
    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            paths.extend(list_images(p))
        elif p.is_file():
            paths.append(p)
        else:
            raise MarsamError(f"--images {p} does not exist; give image files or folders of images")
    if not paths:
        raise MarsamError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, sources))}")
    return paths


def read_image(path: Path) -> np.ndarray:
    """Pixels of a file marsam reads; rasters OpenCV cannot read go through rasterio when installed."""
    try:
        return load_image(path)
    except MarsamError:
        from segmodels.geo import have_rasterio, read_raster
        if path.suffix.lower() in (".tif", ".tiff", ".jp2", ".img") and have_rasterio():
            from segmodels.images import check_image
            return check_image(read_raster(path), str(path))
        raise


# -- probabilities with test-time augmentation --------------------------------------------

def _flips(tta: str) -> list[tuple[int, ...]]:
    return [()] + ([(-1,)] if tta else []) + ([(-2,), (-2, -1)] if tta == "hv" else [])


def _image_axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Flip axes of a probability map (-1 width, -2 height) as axes of an H x W [x C] image."""
    return tuple({-1: 1, -2: 0}[a] for a in axes)


def tta_probs(predictor, image: np.ndarray, settings: PredictSettings) -> np.ndarray:
    """K x H x W probabilities averaged over the flips of ``settings.tta`` (each flipped back)."""
    total = None
    flips = _flips(settings.tta)
    for axes in flips:
        img = np.ascontiguousarray(np.flip(image, _image_axes(axes, image.ndim))) if axes else image
        p = predictor.probabilities(img, tile=settings.tile, overlap=settings.overlap,
                                    batch_size=settings.tile_batch, device=settings.device)
        p = np.flip(p, axes) if axes else p
        total = p.astype(np.float32, copy=True) if total is None else total + p
    return total / len(flips)


def tta_probs_batch(predictor, images: list[np.ndarray], settings: PredictSettings) -> np.ndarray:
    total = None
    flips = _flips(settings.tta)
    for axes in flips:
        imgs = [np.ascontiguousarray(np.flip(im, _image_axes(axes, im.ndim))) for im in images] if axes else images
        p = batch_probabilities(predictor, imgs, settings.device)
        p = np.flip(p, axes) if axes else p
        total = p.astype(np.float32, copy=True) if total is None else total + p
    return total / len(flips)


def _strips(h: int, w: int, settings: PredictSettings) -> list[tuple[int, int]]:
    if max(h, w) <= settings.block:
        return [(0, h)]
    rows = max(256, settings.block_pixels // max(w, 1))
    return [(y, min(h, y + rows)) for y in range(0, h, rows)]


def _expected(layout: Layout, stem: str, settings: PredictSettings, georef) -> list[Path]:
    paths = [layout.labels(stem), layout.overlay(stem), layout.row(stem)]
    if "entropy" in settings.uncertainty:
        paths.append(layout.uncertainty(stem, "entropy"))
    if "mc-dropout" in settings.uncertainty:
        paths.append(layout.uncertainty(stem, "mutual_info"))
    if settings.probs:
        paths.append(layout.uncertainty(stem, "probs"))
    if settings.vector:
        paths.append(layout.vector(stem, settings.vector))
    if georef is not None:
        paths.append(layout.labels_tif(stem))
    return paths


def _model_input(image: np.ndarray) -> np.ndarray:
    """uint8 images as they are; other depths stretched once for the whole image (a strip-wise
    stretch would change the contrast from strip to strip)."""
    return image if image.dtype == np.uint8 else to_unit_float(image)


def predict_into(predictor, image: np.ndarray, job: ImageOutputs, settings: PredictSettings, bar=None) -> None:
    """Predict ``image`` strip by strip (with ``settings.halo`` rows of context) into ``job``."""
    x = _model_input(image)
    h, w = image.shape[:2]
    strips = _strips(h, w, settings)
    mc = "mc-dropout" in settings.uncertainty
    for y0, y1 in strips:
        a, b = max(0, y0 - settings.halo), min(h, y1 + settings.halo)
        part = x[a:b]
        p = tta_probs(predictor, part, settings)[:, y0 - a:y1 - a]
        mi = (mc_dropout_mutual_info(predictor, part, settings.mc_samples, settings.tile, settings.overlap,
                                     settings.tile_batch, settings.device)[y0 - a:y1 - a] if mc else None)
        job.add(y0, p, mi)
        if bar is not None and len(strips) > 1:
            bar.set_postfix_str(f"rows {y1}/{h}")


def predict_images(predictor, sources: list[str | os.PathLike], out: str | os.PathLike,
                   settings: PredictSettings | None = None, label_spec: LabelSpec | None = None) -> PredictReport:
    """Run ``predictor`` over the images of ``sources`` (folders or files) into the layout at ``out``."""
    from segmodels.geo import read_georef
    settings = (settings or PredictSettings()).check()
    spec = predictor.label_spec
    if label_spec is not None and list(label_spec.classes) != list(spec.classes):
        raise MarsamError(f"the model predicts {spec.name!r} classes {list(spec.classes)} but --labels asks for "
                          f"{label_spec.name!r} {list(label_spec.classes)}; choose a model trained with that label spec")
    paths = collect_images(sources)
    out = Path(out)
    check_out_folder(out, [Path(s) for s in sources])
    if settings.vector:
        from segmodels.geo import require_rasterio
        require_rasterio("--vector")
    layout = Layout(out)
    report = PredictReport(out=out)
    stems = stems_for(paths)
    rows: dict[str, dict] = {}
    from tqdm import tqdm
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not settings.progress)
    pending: list[tuple[Path, str, np.ndarray, object, float]] = []

    def fail(path: Path, stem: str, err: Exception) -> None:
        msg = str(err) if isinstance(err, MarsamError) else f"{type(err).__name__}: {err}"
        report.failed.append((str(path), msg))
        rows[stem] = {"image": str(path), "stem": stem, "status": f"skipped: {msg}"}
        bar.write(f"marsam: skipped {path.name}: {msg}")

    def run_one(path, stem, image, georef, t0, probs=None):
        job = ImageOutputs(layout, stem, image.shape[:2], spec, settings, georef, need_confidence=bool(settings.vector))
        try:
            if probs is not None:
                job.add(0, probs)
            else:
                predict_into(predictor, image, job, settings, bar)
            rows[stem] = job.finish(_model_input(image), describe(predictor), time.perf_counter() - t0, path)
            report.predicted += 1
        except BaseException as e:
            job.abort()
            if not isinstance(e, Exception):
                raise
            fail(path, stem, e)
        bar.update(1)

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        try:
            probs = tta_probs_batch(predictor, [_model_input(p[2]) for p in pending], settings)
        except Exception:   # fall back to one at a time, so one bad image does not take the batch down
            probs = [None] * len(pending)
        share = (time.perf_counter() - t0) / len(pending)
        for (path, stem, image, georef, _), p in zip(pending, probs):
            # an image's time: its share of the batch's forward pass plus writing its outputs
            run_one(path, stem, image, georef, time.perf_counter() - (share if p is not None else 0.0), p)
        pending.clear()

    batchable = can_batch(predictor) and "mc-dropout" not in settings.uncertainty
    try:
        for path, stem in zip(paths, stems):
            georef = read_georef(path)
            if not settings.overwrite and all(p.is_file() for p in _expected(layout, stem, settings, georef)):
                row = read_row(layout, stem)
                if row is not None:
                    rows[stem] = row
                    report.resumed += 1
                    bar.update(1)
                    continue
            t0 = time.perf_counter()
            try:
                if settings.vector and settings.vector_units == "map" and (georef is None or not georef.has_crs):
                    raise MarsamError(f"{path.name} has no CRS, so --vector-units map has no map units to give; "
                                      "use a georeferenced raster (GeoTIFF) or --vector-units pixel")
                image = read_image(path)
            except Exception as e:
                fail(path, stem, e)
                bar.update(1)
                continue
            small = max(image.shape[:2]) <= settings.block
            if batchable and small and settings.batch_size > 1:
                if pending and pending[0][2].shape != image.shape:
                    flush()
                pending.append((path, stem, image, georef, t0))
                if len(pending) >= settings.batch_size:
                    flush()
                continue
            flush()
            run_one(path, stem, image, georef, t0)
        flush()
    finally:
        bar.close()
        ordered = sort_rows([rows[s] for s in stems if s in rows], settings.sort)
        report.rows = ordered
        if ordered:
            meta = {"model": describe(predictor), "label_spec": spec.to_dict(),
                    "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
                    "sorted_by": settings.sort}
            report.table = write_table(layout, ordered, spec, meta)
    return report
