"""Large images in explain: bounded methods refuse with one line, tiled ones work, figures are drawn
at display size, and an image beyond the decoder limit is skipped while the batch goes on.

Tried: gradcam on a 1100 x 1100 image (over the 1024 x 1024 bound of whole-image methods); a
PNG header claiming 50000 x 50000 in a two-image ``marsam explain`` batch; an entropy figure of a
3000 x 2000 image (drawn at most 1024 px a side, colours from the full map).
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from segmodels.checkpoints import load_checkpoint, save_checkpoint
from segmodels.cli import main
from segmodels.errors import MarsamError
from segmodels.explain.cli import MAX_WHOLE_IMAGE_PIXELS, explain_image
from segmodels.explain.overlays import DISPLAY_SIDE, display_size, overlay_rgb, save_overlay_png
from segmodels.networks import build_model
from test_bad_files import png_header


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "u.safetensors", build_model("unet", base=2))


def test_whole_image_methods_refuse_beyond_their_bound(ckpt):
    ck = load_checkpoint(ckpt)
    side = int(np.sqrt(MAX_WHOLE_IMAGE_PIXELS)) + 76
    img = np.zeros((side, side), np.uint8)
    for method in ("gradcam", "ig", "lime", "attention", "mc-dropout"):
        with pytest.raises(MarsamError) as e:
            explain_image(ck, img, method, 0, argparse.Namespace(layer=None), "cpu")
        assert "\n" not in str(e.value) and "--method entropy" in str(e.value)


def test_explain_batch_skips_an_image_beyond_the_decoder_limit(ckpt, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(good)
    huge = png_header(tmp_path / "huge.png", 50000, 50000)
    rc = main(["explain", "--checkpoint", str(ckpt), "--image", str(huge), str(good), "--method", "entropy",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "huge.png" in err and "Traceback" not in err
    assert (tmp_path / "out" / "good_entropy.png").is_file()


def test_figures_are_drawn_at_display_size(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (2000, 3000), dtype=np.uint8)
    m = rng.random((2000, 3000)).astype(np.float32)
    small_img, small_m = display_size(img, m)
    assert max(small_m.shape) == DISPLAY_SIDE and small_img.shape == small_m.shape and small_m.dtype == np.float32
    out = overlay_rgb(img[:300, :400], m[:300, :400])
    assert out.shape == (300, 400, 3) and out.dtype == np.uint8
    save_overlay_png(tmp_path / "fig.png", img, m, title="t")
    with Image.open(tmp_path / "fig.png") as im:
        assert max(im.size) <= 1100


def test_explain_does_not_overwrite_maps_of_a_same_named_image(ckpt, tmp_path, capsys):
    paths = []
    for d, v in (("a", 50), ("b", 200)):
        (tmp_path / d).mkdir()
        paths.append(tmp_path / d / "x.png")
        Image.fromarray(np.full((64, 64), v, np.uint8)).save(paths[-1])
    rc = main(["explain", "--checkpoint", str(ckpt), "--image", *map(str, paths), "--method", "entropy",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "same name" in err and str(paths[1]) in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_entropy.npy", "x_entropy.png"]
