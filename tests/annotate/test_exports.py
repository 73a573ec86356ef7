"""Label exports: the COCO RLE codec against pycocotools' own output, and PNG / COCO / HF exports of a session."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from annotate.exports import (COCO_FILE, encode_rle, export_session, label_maps_from_coco, mask_to_rle,
                              rle_counts_to_string, rle_string_to_counts, rle_to_mask)
from annotate.prompts import BoxPrompt
from annotate.session import Session
from segmodels.cli import main
from segmodels.errors import MarsamError


def _mask(shape, *slices):
    m = np.zeros(shape, bool)
    for s in slices:
        m[s] = True
    return m


# Expected strings were produced once by pycocotools 2.0.11 (mask.encode on the Fortran-ordered
# uint8 mask); pycocotools is not a dependency, so they are pinned here as known answers.
KNOWN = [
    (_mask((5, 7), np.s_[1:4, 2:6]), ";32000004"),
    (_mask((4, 4), np.s_[0, 0], np.s_[3, 3]), "01>0"),
    (np.ones((3, 3), bool), "09"),
    (np.zeros((3, 3), bool), "9"),
    (_mask((6, 9), np.s_[0:5, 1:3], np.s_[2:6, 5:9], np.s_[5, 0]), "561O>OC00000"),
]


@pytest.mark.parametrize("mask, expected", KNOWN)
def test_rle_matches_pycocotools(mask, expected):
    rle = encode_rle(mask)
    assert rle == {"size": list(mask.shape), "counts": expected}
    assert (rle_to_mask(rle) == mask).all()
    assert (rle_to_mask({"size": list(mask.shape), "counts": expected.encode()}) == mask).all()


def test_rle_is_column_major_and_starts_with_background():
    m = _mask((2, 3), np.s_[0, 1])              # column-major order: (0,0) (1,0) (0,1) ...
    assert mask_to_rle(m)["counts"] == [2, 1, 3]
    assert mask_to_rle(np.ones((2, 2), bool))["counts"] == [0, 4]


def test_rle_round_trips_random_masks_with_large_and_negative_deltas():
    rng = np.random.default_rng(0)
    for i in range(40):
        h, w = rng.integers(1, 90, 2)
        m = rng.random((h, w)) < rng.random() if i % 2 else \
            (np.add.outer(np.arange(h), np.arange(w)) % int(rng.integers(1, 40))) < int(rng.integers(0, 20))
        rle = encode_rle(m)
        assert (rle_to_mask(rle) == m).all()
        assert rle_string_to_counts(rle["counts"]) == mask_to_rle(m)["counts"]
    counts = [5, 100000, 3, 99990, 2_000_000, 1]
    assert rle_string_to_counts(rle_counts_to_string(counts)) == counts


@pytest.mark.parametrize("rle, match", [
    ({"size": [3, 3], "counts": "9a"}, "ends in the middle"),     # 'a' (49) sets the continue bit
    ({"size": [3, 3], "counts": "9 "}, "not an RLE character"),
    ({"size": [3, 3], "counts": "08"}, "cover"),                    # 8 px for a 9 px mask
    ({"counts": "9"}, "size"),
])
def test_corrupt_rle_is_refused(rle, match):
    with pytest.raises(MarsamError, match=match):
        rle_to_mask(rle)


# --- exports of a session ---------------------------------------------------------------------

@pytest.fixture
def session(tmp_path):
    """A session with three 24x32 images: two labelled, one still to do."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / "imgs" / f"img{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    s = Session.create(tmp_path / "sess", paths)
    for i in range(2):
        lm = np.full((24, 32), 255, np.uint8)
        lm[2:20, 3:15] = i
        lm[5:9, 20:30] = 3
        s.set_result(paths[i], [BoxPrompt((3, 2, 15, 20), i)], lm)
    return s


def test_png_export_writes_ai4mars_layout(session, tmp_path):
    report = export_session(session, tmp_path / "out", "png")
    out = tmp_path / "out"
    assert sorted(report.exported) == ["img0.png", "img1.png"] and not report.skipped
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["img0.png", "img1.png"]
    for name in report.exported:
        assert (out / "images" / name).read_bytes() == (tmp_path / "imgs" / name).read_bytes()
        with Image.open(out / "masks" / name) as im:
            assert im.mode == "L"
            assert (np.asarray(im) == session.label_map(tmp_path / "imgs" / name)).all()
    assert json.loads((out / "label_spec.json").read_text())["classes"][3] == "big_rock"


def test_coco_export_round_trips_label_maps(session, tmp_path):
    export_session(session, tmp_path / "coco", "coco")
    coco = json.loads((tmp_path / "coco" / COCO_FILE).read_text())
    assert [c["name"] for c in coco["categories"]] == ["soil", "bedrock", "sand", "big_rock"]
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 4     # 2 classes per image
    ann = coco["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str) and ann["area"] == 12 * 18
    assert ann["bbox"] == [3.0, 2.0, 12.0, 18.0]
    maps = label_maps_from_coco(coco)
    for name, lm in maps.items():
        assert (lm == session.label_map(tmp_path / "imgs" / name)).all()
    assert (tmp_path / "coco" / "images" / "img1.png").is_file()


def test_hf_export_loads_back_with_image_and_label_columns(session, tmp_path):
    import datasets
    out = tmp_path / "hf"
    report = export_session(session, out, "hf")
    (tmp_path / "imgs" / "img0.png").unlink()          # the dataset embeds the image bytes
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["image", "label"] and len(ds) == 2
    assert isinstance(ds.features["label"], datasets.Image)
    for row, name in zip(ds, report.exported):
        assert row["image"].size == (32, 24)
        assert (np.asarray(row["label"]) == session.label_map(name)).all()
    assert "big_rock" in ds.info.description
    # exporting again replaces the earlier dataset (img0 is gone now, so it is skipped)
    again = export_session(session, out, "hf")
    assert again.exported == ["img1.png"] and again.skipped == [("img0.png", "image file missing")]
    assert len(datasets.load_from_disk(str(out))) == 1


def test_missing_image_is_skipped_and_reported(session, tmp_path):
    (tmp_path / "imgs" / "img1.png").unlink()
    report = export_session(session, tmp_path / "out", "png")
    assert report.exported == ["img0.png"]
    assert report.skipped == [("img1.png", "image file missing")]
    assert "skipped 1: img1.png (image file missing)" in report.summary()


def test_bad_destinations_and_formats(session, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(MarsamError, match="is a file"):
        export_session(session, afile, "png")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(MarsamError, match="not an earlier HF export"):
        export_session(session, busy, "hf")
    assert (busy / "notes.txt").read_text() == "keep me"
    with pytest.raises(MarsamError, match="unknown export format"):
        export_session(session, tmp_path / "x", "tiff")


def test_session_without_labels_cannot_be_exported(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(p)
    empty = Session.create(tmp_path / "s", [p])
    with pytest.raises(MarsamError, match="no labelled images"):
        export_session(empty, tmp_path / "out", "coco")


def test_cli_export(session, tmp_path, capsys):
    assert main(["export", "--session", str(session.folder), "--format", "coco", "--out", str(tmp_path / "c")]) == 0
    assert "exported 2 labelled image(s) as coco" in capsys.readouterr().out
    assert main(["export", "--session", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    assert "not a marsam session" in capsys.readouterr().err


def test_nothing_exportable_is_an_error_not_an_empty_export(session, tmp_path):
    for i in range(3):
        (tmp_path / "imgs" / f"img{i}.png").unlink()
    for fmt in ("png", "coco", "hf"):
        with pytest.raises(MarsamError, match="none of the session's labelled images"):
            export_session(session, tmp_path / fmt, fmt)
        assert not (tmp_path / fmt / COCO_FILE).exists()


def test_polygon_export_of_a_session_in_pixels_and_on_a_geotiff(session, tmp_path):
    pytest.importorskip("rasterio", reason="polygon export needs the geo extra (rasterio)")
    report = export_session(session, tmp_path / "vec", "geojson")
    assert sorted(report.exported) == ["img0.png", "img1.png"]
    doc = json.loads((tmp_path / "vec" / "img0.geojson").read_text())
    assert doc["units"] == "pixel"
    by_class = {f["properties"]["class"]: f["properties"]["area"] for f in doc["features"]}
    assert by_class == {"soil": 12 * 18, "big_rock": 10 * 4}      # pixels, from the fixture's label map
    # a georeferenced image in a session: map coordinates, areas in map units (2 m pixels)
    from segmodels.geo import GeoRef, write_geotiff
    from rasterio.crs import CRS
    tif = tmp_path / "imgs" / "geo.tif"
    ref = GeoRef(CRS.from_proj4("+proj=eqc +R=3396190 +units=m +no_defs").to_wkt(), (2.0, 0, 1000.0, 0, -2.0, 500.0))
    write_geotiff(tif, np.zeros((24, 32), np.uint8), ref)
    s2 = Session.create(tmp_path / "sess2", [tif])
    lm = np.full((24, 32), 255, np.uint8)
    lm[0:10, 0:5] = 2
    s2.set_result(tif, [BoxPrompt((0, 0, 5, 10), 2)], lm)
    pytest.importorskip("fiona", reason="GeoPackage export needs fiona (geo extra)")
    import fiona
    assert main(["export", "--session", str(tmp_path / "sess2"), "--format", "gpkg", "--out", str(tmp_path / "g")]) == 0
    with fiona.open(tmp_path / "g" / "geo.gpkg") as src:
        feats = list(src)
        assert src.crs_wkt and len(feats) == 1
    assert feats[0]["properties"]["class"] == "sand" and feats[0]["properties"]["area"] == 50 * 4.0
    xs = [x for x, _ in feats[0]["geometry"]["coordinates"][0]]
    assert min(xs) == 1000.0 and max(xs) == 1010.0
