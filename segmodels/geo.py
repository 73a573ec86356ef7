"""Georeferenced rasters in and out, and label maps as polygons (the optional ``geo`` extra).

An orbital product (a GeoTIFF, or any raster GDAL reads with a CRS and an affine transform)
keeps its georeferencing through marsam: :func:`read_georef` reads the CRS and transform,
:func:`write_geotiff` writes a label or uncertainty raster on the same grid, and
:func:`label_polygons` turns a label map into one polygon per connected region of a class
(rasterio's ``features.shapes``, 4-connected) with its class, area (map units when the grid is
georeferenced, pixels otherwise) and mean confidence. :func:`write_vectors` writes them as
GeoJSON or GeoPackage (GeoPackage through fiona).

rasterio (and fiona) are imported only here and only when needed: without the extra, plain
images work as before and a georeferenced feature says how to install it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .errors import MarsamError
from .labels import LabelSpec

GEO_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")
VECTOR_FORMATS = ("geojson", "gpkg")
INSTALL_HINT = "install the geo extra: pip install 'marsam[geo]'"


def have_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def require_rasterio(what: str):
    """rasterio, or a one-line error saying ``what`` needs the geo extra."""
    try:
        import rasterio
        import rasterio.features  # noqa: F401
    except ImportError:
        raise MarsamError(f"{what} needs rasterio; {INSTALL_HINT}") from None
    return rasterio



@dataclass(frozen=True)
class GeoRef:
    """Where a raster lies: its CRS (WKT, or None) and its affine transform (GDAL order
    ``a, b, c, d, e, f``: x = a*col + b*row + c, y = d*col + e*row + f)."""

    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]

    @property
    def has_crs(self) -> bool:
        return bool(self.crs_wkt)

    @property
    def pixel_area(self) -> float:
        a, b, _, d, e, _ = self.transform
        return abs(a * e - b * d)

    def affine(self):
        from affine import Affine
        return Affine(*self.transform)

    def to_dict(self) -> dict:
        return {"crs": self.crs_wkt, "transform": list(self.transform)}


PIXEL_GRID = GeoRef(None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))


def read_georef(path: str | os.PathLike) -> GeoRef | None:
    """The CRS and transform of ``path``, or None when it has neither (a plain PNG, a TIFF without
    geotags) or rasterio is not installed (then nothing can be georeferenced)."""
    path = Path(path)
    if path.suffix.lower() not in GEO_SUFFIXES or not have_rasterio():
        return None
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                crs, t = src.crs, src.transform
    except Exception:
        return None     # unreadable by GDAL: the pixel reader reports the problem
    transform = (t.a, t.b, t.c, t.d, t.e, t.f)
    if crs is None and transform == PIXEL_GRID.transform:
        return None
    return GeoRef(crs.to_wkt() if crs is not None else None, transform)


def read_raster(path: str | os.PathLike) -> np.ndarray:
    """Pixels of a raster GDAL reads (H x W or H x W x C, RGB order), for files OpenCV cannot read."""
    rasterio = require_rasterio(f"reading {path}")
    try:
        with rasterio.open(path) as src:
            data = src.read()
    except Exception as e:
        raise MarsamError(f"cannot read raster {path} ({e}); re-export it as GeoTIFF or PNG") from None
    return data[0] if data.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(data[:4], 0, -1))


def write_geotiff(path: str | os.PathLike, array: np.ndarray, georef: GeoRef | None,
                  nodata: float | None = None) -> Path:
    """Atomically write a 2-D array (or C x H x W) as a compressed, tiled GeoTIFF on ``georef``'s grid."""
    rasterio = require_rasterio("writing GeoTIFF rasters")
    arr = np.asarray(array)
    bands = arr[None] if arr.ndim == 2 else arr
    georef = georef or PIXEL_GRID
    path = Path(path)
    profile = {"driver": "GTiff", "height": bands.shape[1], "width": bands.shape[2], "count": bands.shape[0],
               "dtype": bands.dtype.name, "crs": georef.crs_wkt, "transform": georef.affine(),
               "compress": "deflate", "nodata": nodata}
    if bands.shape[1] >= 256 and bands.shape[2] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    import warnings
    from rasterio.errors import NotGeoreferencedWarning
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)   # pixel grid: no geotransform, as meant
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(bands)
    return path


def label_polygons(labels: np.ndarray, spec: LabelSpec, confidence: np.ndarray | None = None,
                   georef: GeoRef | None = None, min_pixels: int = 1) -> list[dict]:
    """One GeoJSON feature per 4-connected region of each class (255 / abstained pixels are no
    region). Properties: ``class``, ``class_id``, ``area`` (map units squared, or pixels when
    ``georef`` is None), ``pixels`` and ``mean_confidence`` (when ``confidence`` is given)."""
    require_rasterio("polygonising label maps")
    import cv2
    from rasterio.features import shapes
    labels = np.asarray(labels, np.uint8)
    grid = georef or PIXEL_GRID
    features: list[dict] = []
    for cid in range(spec.num_classes):
        mask = labels == cid
        if not mask.any():
            continue
        n, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        counts = np.bincount(regions.ravel(), minlength=n)
        conf = (np.bincount(regions.ravel(), weights=confidence.ravel().astype(np.float64), minlength=n)
                if confidence is not None else None)
        keep = mask & (counts[regions] >= min_pixels)
        if not keep.any():
            continue
        for geom, rid in shapes(regions, mask=keep, connectivity=4, transform=grid.affine()):
            rid = int(rid)
            props = {"class": spec.classes[cid], "class_id": cid, "pixels": int(counts[rid]),
                     "area": float(counts[rid]) * grid.pixel_area}
            if conf is not None:
                props["mean_confidence"] = round(float(conf[rid] / counts[rid]), 6)
            features.append({"type": "Feature", "geometry": geom, "properties": props})
    return features


def write_vectors(path: str | os.PathLike, features: list[dict], georef: GeoRef | None) -> Path:
    """GeoJSON (``.geojson``/``.json``) or GeoPackage (``.gpkg``, via fiona) of ``features``,
    written atomically, with the raster's CRS (none in pixel coordinates)."""
    path = Path(path)
    fmt = "gpkg" if path.suffix.lower() == ".gpkg" else "geojson"
    crs = georef.crs_wkt if georef is not None else None
    if fmt == "geojson":
        doc = {"type": "FeatureCollection", "features": features,
               "units": "map" if georef is not None else "pixel"}
        if crs:
            # RFC 7946 GeoJSON is WGS84 only; planetary CRSs ride in the (GDAL-read) legacy member
            doc["crs"] = {"type": "name", "properties": {"name": _crs_name(crs)}}
        atomic_write_text(path, json.dumps(doc))
        return path
    try:
        import fiona
    except ImportError:
        raise MarsamError(f"GeoPackage output needs fiona; {INSTALL_HINT}, or write .geojson") from None
    schema = {"geometry": "Polygon", "properties": {"class": "str", "class_id": "int", "pixels": "int",
                                                    "area": "float", "mean_confidence": "float"}}
    with atomic_path(path) as tmp:
        tmp.unlink()  # the GPKG driver refuses to open an existing (empty) file for writing
        with fiona.open(tmp, "w", driver="GPKG", schema=schema, crs_wkt=crs or "", layer=path.stem) as dst:
            dst.writerecords({"geometry": f["geometry"],
                              "properties": {k: f["properties"].get(k) for k in schema["properties"]}}
                             for f in features)
    return path


def _crs_name(wkt: str) -> str:
    try:
        from rasterio.crs import CRS
        auth = CRS.from_wkt(wkt).to_authority()
        if auth:
            return f"urn:ogc:def:crs:{auth[0]}::{auth[1]}"
    except Exception:
        pass
    return wkt
