"""Georeferenced rasters and polygons on a real HiRISE crop with a made-up equirectangular grid."""
from __future__ import annotations

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="the geo extra (rasterio) is not installed")

from segmodels.geo import GeoRef, label_polygons, read_georef, write_geotiff, write_vectors  # noqa: E402
from segmodels.images import load_image  # noqa: E402
from segmodels.labels import HIRISE_PITS  # noqa: E402

# Mars equirectangular (sphere of radius 3396.19 km), 0.25 m pixels, an arbitrary origin
MARS_EQC = ("+proj=eqc +lat_ts=0 +lat_0=0 +lon_0=0 +x_0=0 +y_0=0 +R=3396190 +units=m +no_defs")
TRANSFORM = (0.25, 0.0, 1_234_500.0, 0.0, -0.25, -567_800.0)


def mars_georef() -> GeoRef:
    from rasterio.crs import CRS
    return GeoRef(CRS.from_proj4(MARS_EQC).to_wkt(), TRANSFORM)


@pytest.fixture(scope="module")
def hirise_geotiff(hirise_dir, tmp_path_factory):
    """A real HiRISE crop written as a GeoTIFF with a made-up equirectangular transform."""
    src = sorted((hirise_dir / "test" / "images").iterdir())[0]
    img = load_image(src)
    grey = img if img.ndim == 2 else img[..., 0]
    path = tmp_path_factory.mktemp("geo") / "hirise.tif"
    write_geotiff(path, grey, mars_georef())
    return path, grey


def test_geotiff_round_trip_keeps_crs_and_transform(hirise_geotiff):
    path, grey = hirise_geotiff
    ref = read_georef(path)
    assert ref is not None and ref.has_crs
    assert ref.transform == TRANSFORM
    with rasterio.open(path) as ds:
        assert ds.crs.to_proj4().replace(" +type=crs", "").startswith("+proj=eqc")
        assert np.array_equal(ds.read(1), grey)
    assert ref.pixel_area == pytest.approx(0.0625)


def test_plain_png_has_no_georef(hirise_dir, tmp_path):
    src = sorted((hirise_dir / "test" / "images").iterdir())[0]
    assert read_georef(src) is None          # a JPEG crop: pixel coordinates
    # a TIFF without geotags is no georeferenced raster either
    write_geotiff(tmp_path / "plain.tif", np.zeros((32, 32), np.uint8), None)
    assert read_georef(tmp_path / "plain.tif") is None


def test_polygons_cover_each_region_once_with_map_areas(hirise_geotiff, tmp_path):
    path, grey = hirise_geotiff
    labels = (grey > np.percentile(grey, 70)).astype(np.uint8)     # bright terrain as "pit"
    labels[:20, :20] = 255                                           # abstained pixels: no region
    conf = np.linspace(0.5, 1.0, grey.size, dtype=np.float32).reshape(grey.shape)
    ref = read_georef(path)
    feats = label_polygons(labels, HIRISE_PITS, conf, ref)
    import cv2
    n_regions = sum(cv2.connectedComponents((labels == c).astype(np.uint8), connectivity=4)[0] - 1
                    for c in range(2))
    assert len(feats) == n_regions
    by_class = {c: sum(f["properties"]["pixels"] for f in feats if f["properties"]["class_id"] == c) for c in (0, 1)}
    assert by_class == {0: int((labels == 0).sum()), 1: int((labels == 1).sum())}
    total_area = sum(f["properties"]["area"] for f in feats)
    assert total_area == pytest.approx((labels != 255).sum() * 0.0625)
    # polygon coordinates lie in map units inside the raster's footprint
    xs = [x for f in feats for ring in f["geometry"]["coordinates"] for x, _ in ring]
    ys = [y for f in feats for ring in f["geometry"]["coordinates"] for _, y in ring]
    h, w = grey.shape
    assert min(xs) >= TRANSFORM[2] and max(xs) <= TRANSFORM[2] + w * 0.25
    assert max(ys) <= TRANSFORM[5] and min(ys) >= TRANSFORM[5] - h * 0.25
    # mean confidence of one region equals the mean of the confidence map under its pixels
    big = max(feats, key=lambda f: f["properties"]["pixels"])
    assert 0.5 <= big["properties"]["mean_confidence"] <= 1.0

    gj = write_vectors(tmp_path / "v.geojson", feats, ref)
    doc = json.loads(gj.read_text())
    assert doc["units"] == "map" and len(doc["features"]) == len(feats) and "crs" in doc
    fiona = pytest.importorskip("fiona", reason="GeoPackage output needs fiona (geo extra)")
    gp = write_vectors(tmp_path / "v.gpkg", feats, ref)
    with fiona.open(gp) as src:
        assert len(src) == len(feats)
        assert "eqc" in src.crs.to_proj4() if hasattr(src.crs, "to_proj4") else src.crs_wkt
        rec = next(iter(src))
        assert set(rec["properties"]) >= {"class", "area", "mean_confidence"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pixel_coordinates_without_georef():
    labels = np.zeros((40, 30), np.uint8)
    labels[10:20, 5:15] = 1
    feats = label_polygons(labels, HIRISE_PITS, None, None)
    pit = [f for f in feats if f["properties"]["class"] == "pit"]
    assert len(pit) == 1 and pit[0]["properties"]["area"] == 100.0
    xs = [x for x, _ in pit[0]["geometry"]["coordinates"][0]]
    assert min(xs) == 5 and max(xs) == 15
