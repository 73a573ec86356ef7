"""The files of one predicted image, filled strip by strip and written atomically.

:class:`ImageOutputs` takes the probabilities of consecutive row strips of an image and keeps
what the table needs (class counts, entropy and confidence sums), the uint8 label map (255 where
the model abstains) and, for ``--vector``, a float16 confidence map; float maps go straight into
their ``.npy`` (and, for georeferenced inputs, GeoTIFF) files through :class:`NpyRows` and
:class:`GeoTiffRows`. ``finish`` writes the rest: polygons, the overlay, the table row and the
label PNG, last, so its presence means the image is done (see :mod:`distill.predict.layout`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segmodels.atomic import atomic_path, atomic_write_json, atomic_write_png
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

from .layout import Layout

OVERLAY_ALPHA = 0.45


class NpyRows:
    """A float32 .npy of ``shape`` (H x W or K x H x W) filled by row strips, written atomically."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = path, shape
        self._ctx = atomic_path(path)
        self.tmp = self._ctx.__enter__()
        self.f = open(self.tmp, "wb")
        np.lib.format.write_array_header_1_0(self.f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        self.header = self.f.tell()
        self.f.truncate(self.header + int(np.prod(shape)) * 4)

    def write_rows(self, y0: int, arr: np.ndarray) -> None:
        arr = np.asarray(arr, "<f4")
        w = self.shape[-1]
        if len(self.shape) == 2:
            self.f.seek(self.header + y0 * w * 4)
            self.f.write(arr.tobytes())
        else:
            h = self.shape[1]
            for k in range(self.shape[0]):
                self.f.seek(self.header + (k * h + y0) * w * 4)
                self.f.write(arr[k].tobytes())

    def close(self, ok: bool) -> None:
        self.f.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class GeoTiffRows:
    """A single-band GeoTIFF on the input's grid, filled by row strips, written atomically."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: str, georef, nodata=None):
        import warnings
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning
        self.path = path
        self._ctx = atomic_path(path)
        tmp = self._ctx.__enter__()
        h, w = shape
        profile = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": dtype,
                   "crs": georef.crs_wkt, "transform": georef.affine(), "compress": "deflate", "nodata": nodata}
        if h >= 256 and w >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.dst = rasterio.open(tmp, "w", **profile)

    def write_rows(self, y0: int, arr: np.ndarray) -> None:
        from rasterio.windows import Window
        self.dst.write(arr[None], window=Window(0, y0, arr.shape[1], arr.shape[0]))

    def close(self, ok: bool) -> None:
        self.dst.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class ImageOutputs:
    """Accumulates one image's strips into its outputs; ``finish`` writes what remains, labels last."""

    def __init__(self, layout: Layout, stem: str, shape: tuple[int, int], spec: LabelSpec, settings,
                 georef, need_confidence: bool):
        self.layout, self.stem, self.spec, self.settings, self.georef = layout, stem, spec, settings, georef
        h, w = shape
        self.labels = np.full((h, w), spec.ignore_index, np.uint8)
        self.confidence = np.zeros((h, w), np.float16) if need_confidence else None
        self.counts = np.zeros(spec.num_classes, np.int64)
        self.abstained = 0
        self.entropy_sum = 0.0
        self.confidence_sum = 0.0
        self.writers: dict[str, object] = {}
        self.written: list[Path] = []
        s = settings
        if "entropy" in s.uncertainty:
            self.writers["entropy"] = NpyRows(layout.uncertainty(stem, "entropy"), (h, w))
            if georef is not None:
                self.writers["entropy_tif"] = GeoTiffRows(layout.uncertainty(stem, "entropy", "tif"), (h, w),
                                                         "float32", georef)
        if "mc-dropout" in s.uncertainty:
            self.writers["mutual_info"] = NpyRows(layout.uncertainty(stem, "mutual_info"), (h, w))
        if s.probs:
            self.writers["probs"] = NpyRows(layout.uncertainty(stem, "probs"), (spec.num_classes, h, w))
        if georef is not None:
            self.writers["labels_tif"] = GeoTiffRows(layout.labels_tif(stem), (h, w), "uint8", georef,
                                                    nodata=spec.ignore_index)

    def add(self, y0: int, probs: np.ndarray, mutual_info: np.ndarray | None = None) -> None:
        from segmodels.uncertainty import predictive_entropy
        probs = np.asarray(probs, np.float32)
        if probs.shape[0] != self.spec.num_classes:
            raise MarsamError(f"the model gives {probs.shape[0]} classes but its label spec {self.spec.name!r} has "
                              f"{self.spec.num_classes}; the checkpoint is inconsistent: re-export or re-train it")
        conf = probs.max(axis=0)
        lab = probs.argmax(axis=0).astype(np.uint8)
        if self.settings.min_confidence > 0:
            lab[conf < self.settings.min_confidence] = self.spec.ignore_index
        ent = np.asarray(predictive_entropy(probs), np.float32)
        y1 = y0 + lab.shape[0]
        self.labels[y0:y1] = lab
        if self.confidence is not None:
            self.confidence[y0:y1] = conf
        bc = np.bincount(lab.ravel(), minlength=256)
        self.counts += bc[: self.spec.num_classes]
        self.abstained += int(bc[self.spec.ignore_index])
        self.entropy_sum += float(ent.sum(dtype=np.float64))
        self.confidence_sum += float(conf.sum(dtype=np.float64))
        for key, arr in (("entropy", ent), ("entropy_tif", ent), ("probs", probs), ("labels_tif", lab),
                         ("mutual_info", mutual_info)):
            if key in self.writers and arr is not None:
                self.writers[key].write_rows(y0, arr)

    def abort(self) -> None:
        for w in self.writers.values():
            try:
                w.close(ok=False)
            except Exception:
                pass
        for p in self.written:
            p.unlink(missing_ok=True)

    def finish(self, image: np.ndarray, model_name: str, seconds: float, source: Path) -> dict:
        """``image``: uint8, or float in [0, 1] (other depths stretched once by the caller)."""
        for key in list(self.writers):
            w = self.writers.pop(key)
            w.close(ok=True)
            self.written.append(w.path)
        layout, stem, s = self.layout, self.stem, self.settings
        h, w = self.labels.shape
        if s.vector:
            from segmodels.geo import label_polygons, write_vectors
            geo = self.georef if s.vector_units != "pixel" else None
            feats = label_polygons(self.labels, self.spec, self.confidence, geo, s.min_region)
            self.written.append(write_vectors(layout.vector(stem, s.vector), feats, geo))
        atomic_write_png(layout.overlay(stem), overlay(image, self.labels, self.spec))
        self.written.append(layout.overlay(stem))
        n = float(h * w)
        row = {"image": str(source), "stem": stem, "status": "ok", "height": h, "width": w, "model": model_name,
               "seconds": round(seconds, 3), "mean_entropy": round(self.entropy_sum / n, 6),
               "mean_confidence": round(self.confidence_sum / n, 6),
               "abstained_fraction": round(self.abstained / n, 6),
               **{f"fraction_{c}": round(int(k) / n, 6) for c, k in zip(self.spec.classes, self.counts)},
               "georeferenced": self.georef is not None and self.georef.has_crs,
               "labels": str(layout.labels(stem).relative_to(layout.out))}
        atomic_write_json(layout.row(stem), row)
        self.written.append(layout.row(stem))
        atomic_write_png(layout.labels(stem), self.labels)      # last: its presence means "done"
        return row


def overlay(image: np.ndarray, labels: np.ndarray, spec: LabelSpec, rows: int = 512) -> np.ndarray:
    """The image (grey or RGB) with class colours blended in; abstained pixels show the image alone.
    Built in row chunks so a large product needs only its uint8 RGB result in memory."""
    from segmodels.images import to_rgb_uint8
    h, w = labels.shape
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, rows):
        # uint8 as is; other depths arrive stretched to [0, 1] once for the whole image (_model_input)
        rgb = to_rgb_uint8(image[y:y + rows]).astype(np.float32)
        lab = labels[y:y + rows]
        colours = spec.colorize(lab).astype(np.float32)
        has = (lab != spec.ignore_index)[..., None]
        blend = np.where(has, (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colours, rgb)
        out[y:y + rows] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    return out
