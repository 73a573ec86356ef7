"""Bad input gives one clear MarsamError: a class not in the label spec, a layer that does not
exist, an image of the wrong channel count, attention on a model without gates, a bad baseline."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segmodels import AI4MARS, MarsamError, build_model
from segmodels.checkpoints import Checkpoint
from segmodels.explain import attention_maps, gradcam, integrated_gradients, layer_names, lime


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_model("unet", base=4).eval()


@pytest.fixture
def img():
    return np.random.default_rng(0).random((32, 32)).astype(np.float32)


@pytest.mark.parametrize("fn", [gradcam, integrated_gradients, lime])
def test_unknown_class_names_the_valid_ones(unet, img, fn):
    with pytest.raises(MarsamError, match="unknown class 'lava'.*soil, bedrock, sand, big_rock"):
        fn(unet, img, "lava")
    with pytest.raises(MarsamError, match="unknown class 7"):
        fn(unet, img, 7)


def test_class_from_checkpoint_spec(unet, img):
    ck = Checkpoint(model=unet, model_name="unet", model_args=unet.config(), label_spec=AI4MARS)
    e = gradcam(ck, img, "Big Rock")
    assert e.class_id == 3 and e.class_name == "big_rock"


def test_unknown_layer_lists_valid_layers(unet, img):
    with pytest.raises(MarsamError, match="no layer 'up9'.*inc, down1, down2, down3, down4, up1, up2, up3, up4"):
        gradcam(unet, img, "soil", layer="up9")
    assert "up4.conv" in layer_names(unet)
    assert gradcam(unet, img, "soil", layer="up4.conv").map.shape == (32, 32)


def test_wrong_channel_count(unet):
    x3 = torch.randn(1, 3, 32, 32)
    for fn in (gradcam, integrated_gradients, lime):
        with pytest.raises(MarsamError, match="1-channel input but got 3 channels"):
            fn(unet, x3, "soil")
    rgb = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    with pytest.raises(MarsamError, match="1-channel input but got 3 channels"):
        gradcam(unet, rgb, "soil", normalization={"in_channels": 3, "mean": 0.5, "std": 0.25})


def test_batch_of_images_refused(unet):
    with pytest.raises(MarsamError, match="one image"):
        gradcam(unet, torch.randn(2, 1, 32, 32), "soil")


def test_attention_needs_gates(unet, img):
    with pytest.raises(MarsamError, match="no attention gates"):
        attention_maps(unet, img)


def test_attention_maps_of_the_teacher(img):
    torch.manual_seed(0)
    teacher = build_model("attention_unet", base=4).eval()
    e = attention_maps(teacher, img[:30, :27])  # odd size: the padded margin is cropped
    assert e.map.shape == (30, 27) and len(e.extras["gates"]) == 4
    for g in e.extras["gates"]:
        assert g.shape == (30, 27) and np.isfinite(g).all() and g.min() >= 0 and g.max() <= 1


def test_bad_options(unet, img):
    with pytest.raises(MarsamError, match="unknown baseline 'noise'"):
        integrated_gradients(unet, img, 0, baseline="noise")
    with pytest.raises(MarsamError, match="at least 2 steps"):
        integrated_gradients(unet, img, 0, steps=1)
    with pytest.raises(MarsamError, match="at least 4 samples"):
        lime(unet, img, 0, n_samples=2)


def test_sam_decoder_refuses_images():
    dec = build_model("sam_decoder", width=8, out_size=64).eval()
    with pytest.raises(MarsamError, match="SAM image embeddings.*annotate"):
        gradcam(dec, np.zeros((64, 64), np.float32), 0)
    # an embedding works, and the map has the decoder's output size
    e = gradcam(dec, torch.randn(1, 256, 64, 64), 0)
    assert e.map.shape == (64, 64) and np.isfinite(e.map).all()


def test_lime_that_explains_nothing_says_so_in_one_line():
    """A model whose score no superpixel changes (all weights zero): R^2 0 / no coefficient, an
    all-zero map; LIME must not hand that back silently."""
    from segmodels import build_model
    from segmodels.explain.cli import _summary
    flat = build_model("unet", num_classes=2, base=4).eval()
    with torch.no_grad():
        for p in flat.parameters():
            p.zero_()
    img = np.random.default_rng(0).integers(0, 255, (32, 32)).astype(np.uint8)
    e = lime(flat, img, 0, n_samples=16, n_segments=8)
    assert "LIME:" in e.extras["warning"] and "--samples" in e.extras["warning"]
    assert "\n" not in e.extras["warning"]
    line = _summary(e.extras)                       # printed as 'key value', not a raw dict
    assert "{" not in line and "n_samples 16" in line and "warning" not in line
