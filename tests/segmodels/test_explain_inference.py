"""segmodels.predictors.predict (tiling in segmodels.inference): native resolution, tiles blended with a smooth window,
checkpoint normalisation, and the sam_decoder refusal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segmodels import AI4MARS, MarsamError, build_model, load_checkpoint, save_checkpoint
from segmodels.images import to_model_input
from segmodels.predictors import predict


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_model("unet", base=4).eval()


def test_small_image_single_pass(unet):
    img = (np.random.default_rng(0).random((40, 56)) * 255).astype(np.uint8)
    p = predict(unet, img)
    assert p.probs.shape == (4, 40, 56) and p.probs.dtype == np.float32
    assert p.labels.shape == (40, 56) and p.labels.dtype == np.uint8
    np.testing.assert_allclose(p.probs.sum(0), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(unet(to_model_input(img)), 1)[0].numpy()
    np.testing.assert_allclose(p.probs, ref, atol=1e-5)


def test_tiles_agree_with_whole_image(unet):
    img = np.random.default_rng(1).random((200, 170)).astype(np.float32)
    whole = predict(unet, img, tile=256)
    tiled = predict(unet, img, tile=96, overlap=32, batch_size=3)
    assert tiled.probs.shape == whole.probs.shape
    np.testing.assert_allclose(tiled.probs.sum(0), 1.0, atol=1e-4)
    assert (tiled.labels == whole.labels).mean() > 0.9
    assert np.abs(tiled.probs - whole.probs).mean() < 0.05


def test_large_image_in_tiles(unet):
    img = np.random.default_rng(2).integers(0, 4096, (1024, 1024), dtype=np.uint16)
    p = predict(unet, img, tile=512, overlap=64, batch_size=2)
    assert p.probs.shape == (4, 1024, 1024) and np.isfinite(p.probs).all()


def test_checkpoint_normalisation_is_used(unet, tmp_path):
    norm = {"in_channels": 1, "mean": 0.3, "std": 0.1, "size": 256}
    ck = load_checkpoint(save_checkpoint(tmp_path / "m", unet, AI4MARS, normalization=norm))
    img = np.random.default_rng(3).random((48, 48)).astype(np.float32)
    a = predict(ck, img).probs
    b = predict(unet, img, normalization=norm).probs
    c = predict(unet, img).probs
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - c).max() > 1e-3


def test_bad_arguments(unet):
    img = np.zeros((32, 32), np.float32)
    with pytest.raises(MarsamError, match="overlap"):
        predict(unet, img, tile=64, overlap=40)
    with pytest.raises(MarsamError, match="1-channel input but got 3"):
        predict(unet, np.zeros((32, 32, 3), np.uint8), normalization={"in_channels": 3})
    dec = build_model("sam_decoder", width=8, out_size=64)
    with pytest.raises(MarsamError, match="sam_decoder.*annotate's embeddings"):
        predict(dec, img)
