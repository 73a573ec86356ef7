"""``marsam predict`` on real data: layout, table, triage sort, abstention, TTA, strips, resumption,
bad inputs, GeoTIFF in/out, ONNX and a domain decoder through the SAM embedding cache.

Bad inputs tried: an unreadable (corrupt) image in a folder, a checkpoint of another label spec
(--labels), --out inside --images, a raster without CRS asked for --vector-units map, an output
folder on a read-only path, MC dropout on a model without dropout, an .onnx without marsam
metadata.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.predict import PredictSettings, open_predictor, predict_images
from distill.predict.run import tta_probs
from segmodels.cli import main
from segmodels.images import load_image
from segmodels.uncertainty import predictive_entropy

N_IMAGES = 5


@pytest.fixture(scope="module")
def student():
    return open_predictor(pretrained="ai4mars-student", device="cpu")


@pytest.fixture
def navcam(ai4mars_dir, tmp_path) -> Path:
    """A folder of real AI4Mars NAVCAM images (the first N in val order)."""
    import csv
    with open(ai4mars_dir / "split.csv") as f:
        ids = [r["id"] for r in csv.DictReader(f) if r["split"] == "val"][:N_IMAGES]
    folder = tmp_path / "navcam"
    folder.mkdir()
    for i in ids:
        src = next((ai4mars_dir / "images").glob(f"{i}.*"))
        shutil.copy(src, folder / src.name)
    return folder


TILES = dict(tile=256, overlap=32, tile_batch=2)


def _run(student, images, out, **kw):
    return predict_images(student, [images], out, PredictSettings(progress=False, **{**TILES, **kw}))


def test_folder_layout_table_abstention_and_triage(student, navcam, tmp_path):
    out = tmp_path / "out"
    rep = _run(student, navcam, out, uncertainty=("entropy",), probs=True, min_confidence=0.6, sort="uncertainty")
    assert rep.predicted == N_IMAGES and not rep.failed
    rows = json.loads((out / "predictions.json").read_text())["images"]
    assert len(rows) == N_IMAGES
    ents = [r["mean_entropy"] for r in rows]
    assert ents == sorted(ents, reverse=True)                  # most uncertain first
    csv_lines = (out / "predictions.csv").read_text().splitlines()
    assert csv_lines[0].startswith("image,status,height,width") and len(csv_lines) == N_IMAGES + 1
    for r in rows:
        stem = Path(r["image"]).stem
        img = load_image(r["image"])
        lab = load_image(out / "labels" / f"{stem}.png")
        assert lab.shape == img.shape[:2] and lab.dtype == np.uint8
        probs = np.load(out / "uncertainty" / f"{stem}.probs.npy")
        ent = np.load(out / "uncertainty" / f"{stem}.entropy.npy")
        assert probs.shape == (4, *img.shape[:2]) and ent.dtype == np.float32
        np.testing.assert_allclose(ent, predictive_entropy(probs), atol=1e-5)
        conf = probs.max(0)
        # abstain exactly where the top probability is below the threshold
        assert ((lab == 255) == (conf < 0.6)).all()
        assert ((lab[lab != 255]) == probs.argmax(0)[lab != 255]).all()
        fr = sum(r[f"fraction_{c}"] for c in ("soil", "bedrock", "sand", "big_rock")) + r["abstained_fraction"]
        assert fr == pytest.approx(1.0, abs=1e-4)
        assert r["mean_entropy"] == pytest.approx(float(ent.mean()), abs=1e-4)
        ov = load_image(out / "overlays" / f"{stem}.png")
        assert ov.shape == (*img.shape[:2], 3)
    assert not list(out.rglob("*.tmp"))


def test_resume_skips_done_images_and_overwrite_redoes_them(student, navcam, tmp_path):
    out = tmp_path / "out"
    _run(student, navcam, out)
    label = next((out / "labels").iterdir())
    before = label.stat().st_mtime_ns
    rep = _run(student, navcam, out)
    assert rep.predicted == 0 and rep.resumed == N_IMAGES and len(rep.rows) == N_IMAGES
    assert label.stat().st_mtime_ns == before
    # asking for a new output makes the images not done
    rep = _run(student, navcam, out, uncertainty=("entropy",))
    assert rep.predicted == N_IMAGES
    rep = _run(student, navcam, out, uncertainty=("entropy",), overwrite=True)
    assert rep.predicted == N_IMAGES and label.stat().st_mtime_ns != before


def test_one_unreadable_image_is_reported_and_skipped(student, navcam, tmp_path, capsys):
    (navcam / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    out = tmp_path / "out"
    rc = main(["predict", "--pretrained", "ai4mars-student", "--images", str(navcam), "--out", str(out),
               "--quiet", "--tile", "256"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "skipped broken.png: cannot read image" in captured.err + captured.out
    rows = json.loads((out / "predictions.json").read_text())["images"]
    bad = [r for r in rows if r["stem"] == "broken"]
    assert len(bad) == 1 and bad[0]["status"].startswith("skipped: cannot read image")
    assert sum(r["status"] == "ok" for r in rows) == N_IMAGES
    assert not [p for p in out.rglob("broken*")]               # nothing half-written for it


def test_bad_inputs_are_one_line_errors(navcam, tmp_path, capsys):
    def err(argv):
        rc = main(argv)
        e = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, e
        return e[-1]
    base = ["predict", "--pretrained", "ai4mars-student", "--quiet"]
    # --out inside --images
    msg = err(base + ["--images", str(navcam), "--out", str(navcam / "preds")])
    assert "is inside --images" in msg and not (navcam / "preds" / "labels").exists()
    # a model of another label spec
    msg = err(base + ["--images", str(navcam), "--out", str(tmp_path / "o1"), "--labels", "hirise-pits"])
    assert "choose a model trained with that label spec" in msg
    # an output folder on a read-only path (as root, permissions do not bind: sysfs refuses files)
    if os.geteuid() == 0:
        ro = Path("/sys/marsam-predict-test-out")
    else:
        ro_parent = tmp_path / "ro"
        ro_parent.mkdir()
        ro_parent.chmod(0o500)
        ro = ro_parent / "out"
    msg = err(base + ["--images", str(navcam), "--out", str(ro)])
    assert msg.startswith("marsam: error: cannot write to output folder")
    # a raster without CRS asked for polygons in map units (one image given: nothing predicted -> exit 2)
    pytest.importorskip("rasterio", reason="--vector needs the geo extra")
    one = next(navcam.iterdir())
    msg = err(base + ["--images", str(one), "--out", str(tmp_path / "o2"), "--vector", "geojson",
                      "--vector-units", "map"])
    assert "has no CRS, so --vector-units map has no map units" in msg
    assert not list((tmp_path / "o2").rglob("*.png"))
    # MC dropout on a model without dropout layers
    msg = err(base + ["--images", str(one), "--out", str(tmp_path / "o3"), "--uncertainty", "mc-dropout"])
    assert "has no dropout layers" in msg


def test_tta_averages_flips_and_strips_match_the_whole_image(student, hirise_dir):
    img = load_image(sorted((hirise_dir / "test" / "images").iterdir())[0])[:600, :520]
    p0 = student.probabilities(img, tile=256, overlap=32)
    p_h = np.flip(student.probabilities(np.ascontiguousarray(img[:, ::-1]), tile=256, overlap=32), -1)
    np.testing.assert_allclose(tta_probs(student, img, PredictSettings(tta="h", **TILES)), (p0 + p_h) / 2,
                               atol=1e-5)
    # predicting in 3 strips with a 64-row halo changes the labels no more than another tile grid
    # of the whole image does (the strips' tile grids differ from the whole image's, so pixels near
    # a class boundary may flip; on this HiRISE crop, far from the student's AI4Mars training data,
    # two whole-image tilings disagree on ~8% of pixels)
    grid = student.probabilities(img, tile=256, overlap=64).argmax(0)
    tilings = (grid == p0.argmax(0)).mean()
    from distill.predict.layout import Layout
    from distill.predict.outputs import ImageOutputs
    from distill.predict.run import predict_into
    job = ImageOutputs(Layout("/nonexistent"), "x", img.shape[:2], student.label_spec,
                    PredictSettings(progress=False), None, need_confidence=False)
    predict_into(student, img, job, PredictSettings(block=256, block_pixels=200 * 520, halo=64, **TILES))
    assert (job.labels == p0.argmax(0)).mean() >= tilings - 0.02


def test_batched_small_images_equal_one_at_a_time(student, navcam, tmp_path):
    a = _run(student, navcam, tmp_path / "a", batch_size=4, probs=True)
    b = _run(student, navcam, tmp_path / "b", batch_size=1, probs=True)
    assert a.predicted == b.predicted == N_IMAGES
    for f in (tmp_path / "a" / "uncertainty").iterdir():
        np.testing.assert_allclose(np.load(f), np.load(tmp_path / "b" / "uncertainty" / f.name), atol=1e-5)


def test_geotiff_in_geotiff_and_polygons_out(student, hirise_dir, tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="the geo extra (rasterio) is not installed")
    pytest.importorskip("fiona", reason="GeoPackage output needs fiona (geo extra)")
    import fiona
    from segmodels.geo import write_geotiff
    sys_test = Path(__file__).resolve().parents[1] / "segmodels"
    import sys
    sys.path.insert(0, str(sys_test))
    from test_geo import TRANSFORM, mars_georef
    src = sorted((hirise_dir / "test" / "images").iterdir())[1]
    img = load_image(src)
    grey = img if img.ndim == 2 else img[..., 0]
    geotiff = tmp_path / "in" / "hirise.tif"
    write_geotiff(geotiff, grey, mars_georef())
    out = tmp_path / "out"
    rep = _run(student, geotiff, out, uncertainty=("entropy",), vector="gpkg", vector_units="map", min_confidence=0.4)
    assert rep.predicted == 1, rep.failed
    row = rep.rows[0]
    assert row["georeferenced"] is True
    with rasterio.open(out / "labels" / "hirise.tif") as ds:
        assert tuple(ds.transform)[:6] == TRANSFORM and ds.crs is not None and ds.nodata == 255
        tif_labels = ds.read(1)
    png_labels = load_image(out / "labels" / "hirise.png")
    assert np.array_equal(tif_labels, png_labels)
    with rasterio.open(out / "uncertainty" / "hirise.entropy.tif") as ds:
        assert ds.dtypes[0] == "float32" and tuple(ds.transform)[:6] == TRANSFORM
        np.testing.assert_allclose(ds.read(1), np.load(out / "uncertainty" / "hirise.entropy.npy"))
    with fiona.open(out / "vectors" / "hirise.gpkg") as vec:
        feats = list(vec)
        assert vec.crs_wkt
    area = sum(f["properties"]["area"] for f in feats)
    assert area == pytest.approx((png_labels != 255).sum() * 0.0625)    # m^2 at 0.25 m pixels
    assert all(0.0 < f["properties"]["mean_confidence"] <= 1.0 for f in feats)
    # the same image as a plain file gives the same labels, polygons in pixels
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(src, plain / "hirise.jpg")
    rep2 = _run(student, plain, tmp_path / "out2", vector="geojson", min_confidence=0.4)
    doc = json.loads((tmp_path / "out2" / "vectors" / "hirise.geojson").read_text())
    assert doc["units"] == "pixel" and rep2.rows[0]["georeferenced"] is False
    assert not (tmp_path / "out2" / "labels" / "hirise.tif").exists()


def test_onnx_export_agrees_with_pytorch_and_predicts(navcam, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    onnx_path = tmp_path / "student.onnx"
    assert main(["export-model", "--pretrained", "ai4mars-student", "--onnx", str(onnx_path)]) == 0
    said = capsys.readouterr().out
    diff = float(said.rsplit(":", 1)[1])
    assert diff < 1e-3, said                                    # max |logit difference| on 256 px
    import torch
    from distill.pretrained import load_pretrained
    from segmodels.onnx_models import OnnxModel
    ckpt = load_pretrained("ai4mars-student")
    x = torch.randn(2, 1, 200, 310)                             # not a multiple of 16, batch 2
    with torch.no_grad():
        ref = ckpt.model(x)
    assert float((OnnxModel(onnx_path)(x) - ref).abs().max()) < 1e-3
    ort = open_predictor(onnx_path)
    pt = open_predictor(pretrained="ai4mars-student", device="cpu")
    a = _run(ort, navcam, tmp_path / "a", probs=True)
    _run(pt, navcam, tmp_path / "b", probs=True)
    assert a.predicted == N_IMAGES and "onnx" in a.rows[0]["model"]
    for f in (tmp_path / "a" / "uncertainty").iterdir():
        np.testing.assert_allclose(np.load(f), np.load(tmp_path / "b" / "uncertainty" / f.name), atol=1e-4)
    # an .onnx file without marsam metadata is refused with a one-line reason
    import onnx
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    rc = main(["predict", "--checkpoint", str(tmp_path / "bare.onnx"), "--images", str(navcam),
               "--out", str(tmp_path / "c"), "--quiet"])
    assert rc == 2 and "has no marsam metadata" in capsys.readouterr().err


def test_domain_decoder_predicts_through_the_embedding_cache(navcam, tmp_path, tiny_sam, monkeypatch):
    from segmodels.checkpoints import save_checkpoint
    from segmodels.networks import build_model
    dec = build_model("sam_decoder", num_classes=4, width=16, out_size=64)
    path = save_checkpoint(tmp_path / "decoder.safetensors", dec, "ai4mars")
    calls = {"encoder": 0}
    original = tiny_sam.sam.image_encoder.forward

    def counting(x):
        calls["encoder"] += 1
        return original(x)
    monkeypatch.setattr(tiny_sam.sam.image_encoder, "forward", counting)
    pred = open_predictor(path, sam=tiny_sam)
    rep = _run(pred, navcam, tmp_path / "a")
    assert rep.predicted == N_IMAGES and rep.rows[0]["model"].startswith("sam_decoder")
    assert calls["encoder"] == N_IMAGES
    lab = load_image(tmp_path / "a" / "labels" / f"{Path(rep.rows[0]['image']).stem}.png")
    assert lab.shape == (256, 256) and lab.max() < 4
    # a second run over the same images reads SAM's embeddings from the cache
    _run(pred, navcam, tmp_path / "b")
    assert calls["encoder"] == N_IMAGES
