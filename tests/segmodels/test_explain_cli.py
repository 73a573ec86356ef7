"""``marsam explain``: every method writes an overlay PNG and an image-sized .npy; neural PCA
writes its report; bad input exits 2 with one line; a bad image in a batch is skipped."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segmodels import AI4MARS, build_model, save_checkpoint
from segmodels.cli import main


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    student = save_checkpoint(d / "student", build_model("unet", base=4, dropout=0.2), AI4MARS)
    teacher = save_checkpoint(d / "teacher", build_model("attention_unet", base=4), AI4MARS)
    return student, teacher


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "rock.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 52)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("method,cls,suffix", [
    ("gradcam", "sand", "_sand"), ("ig", "1", "_bedrock"), ("lime", None, None),
    ("attention", None, ""), ("entropy", None, ""), ("mc-dropout", None, "")])
def test_every_method_writes_overlay_and_map(ckpts, image, tmp_path, method, cls, suffix):
    ck = ckpts[1] if method == "attention" else ckpts[0]
    argv = ["explain", "--checkpoint", str(ck), "--image", str(image), "--method", method,
            "--out", str(tmp_path), "--steps", "4", "--samples", "8", "--segments", "10"]
    if cls:
        argv += ["--class", cls]
    assert main(argv) == 0
    npys = sorted(tmp_path.glob(f"rock_{method}*.npy"))
    assert len(npys) == 1, sorted(p.name for p in tmp_path.iterdir())
    if suffix is not None:
        assert npys[0].name == f"rock_{method}{suffix}.npy"
    m = np.load(npys[0])
    assert m.shape == (40, 52) and m.dtype == np.float32 and np.isfinite(m).all()
    with Image.open(npys[0].with_suffix(".png")) as im:
        assert im.format == "PNG" and im.size[0] > 200
    if method == "attention":
        assert len(list(tmp_path.glob("rock_attention_gate*.png"))) == 4


def test_bad_input_exits_2_with_one_line(ckpts, image, tmp_path, capsys):
    base = ["explain", "--checkpoint", str(ckpts[0]), "--image", str(image), "--out", str(tmp_path)]
    cases = [(["--method", "gradcam", "--class", "lava"], "unknown class 'lava'"),
             (["--method", "gradcam", "--layer", "nope"], "no layer 'nope'"),
             (["--method", "attention"], "no attention gates")]
    for extra, msg in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("marsam: error:") and msg in err[0]


def test_bad_image_in_a_batch_is_skipped(ckpts, image, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    rc = main(["explain", "--checkpoint", str(ckpts[0]), "--image", str(broken), str(image),
               "--method", "entropy", "--out", str(tmp_path / "out")])
    assert rc == 1
    assert "skipped" in capsys.readouterr().err
    assert (tmp_path / "out" / "rock_entropy.npy").exists()


def test_pca_report(ckpts, tmp_path):
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(images / f"im{i}.png")
    (images / "bad.png").write_bytes(b"broken")
    out = tmp_path / "pca"
    rc = main(["explain", "pca", "--checkpoint", str(ckpts[0]), "--data", str(tmp_path / "data"),
               "--out", str(out), "--components", "2"])
    assert rc == 1  # one image was skipped, the report is still written
    report = json.loads((out / "neural_pca.json").read_text())
    assert [s["image"] for s in report["skipped"]] == ["bad"]
    assert [c["class"] for c in report["classes"]] == list(AI4MARS.classes)
    assert sum(c["images"] for c in report["classes"]) >= 5
    assert (out / "neural_pca.png").stat().st_size > 1000


def test_real_ai4mars_image(ckpts, ai4mars_dir, tmp_path):
    img = sorted((ai4mars_dir / "images").glob("*.jpg"))[0]
    assert main(["explain", "--checkpoint", str(ckpts[0]), "--image", str(img), "--method", "gradcam",
                 "--out", str(tmp_path)]) == 0
    m = np.load(next(tmp_path.glob(f"{img.stem}_gradcam_*.npy")))
    assert m.shape == (256, 256) and np.isfinite(m).all()
