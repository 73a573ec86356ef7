"""The explain widget: every method yields an image-sized, finite Image layer with its fixed range
over a real AI4Mars image; attention gates come as one stack; Cancel stops a long method."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

CROP = 96      # a crop of a real navcam frame keeps LIME and IG at a few seconds on a CPU


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A small random-weight Attention U-Net (dropout and attention gates: every method applies)."""
    import torch
    from segmodels.checkpoints import save_checkpoint
    from segmodels.labels import AI4MARS
    from segmodels.networks import build_model
    torch.manual_seed(0)
    model = build_model("attention_unet", in_channels=1, num_classes=4, base=4, dropout=0.2)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-teacher.safetensors", model, AI4MARS)


@pytest.fixture
def explain_widget(make_napari_viewer, ai4mars_dir, teacher_ckpt):
    from napari_plugin.explain.widget import ExplainWidget
    from segmodels.images import load_image
    viewer = make_napari_viewer()
    widget = ExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="marsam explain")
    path = sorted((ai4mars_dir / "images").glob("*.jpg"))[1]
    layer = viewer.add_image(load_image(path)[:CROP, :CROP], name=path.stem)
    widget.chooser.use_checkpoint(teacher_ckpt)
    return viewer, widget, layer


def _wait(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: not widget.panel.busy, timeout=timeout)


FAST = {"ig": {"steps": 4}, "lime": {"n_samples": 16, "n_segments": 12}, "mc-dropout": {"samples": 4}}
LIMITS = {"gradcam": (0, 1), "ig": (-1, 1), "lime": (-1, 1), "attention": (0, 1),
          "entropy": (0, math.log(4)), "mc-dropout": (0, math.log(4))}


def test_every_method_gives_an_image_sized_finite_layer(explain_widget, qtbot):
    from napari.layers import Image
    from napari_plugin.explain.methods import METHODS

    viewer, w, layer = explain_widget
    for key in METHODS:
        w.explain(key, target="sand", layer=layer, options=FAST.get(key))
        _wait(qtbot, w)
        assert w.layers_added, f"{key} added no layer (status: {w.status.value})"
        out = w.layers_added[0]
        assert isinstance(out, Image) and out.data.shape == (CROP, CROP), key
        assert np.isfinite(out.data).all(), key
        if key != "lime":       # LIME's sparse surrogate may keep no superpixel of a random net
            assert np.abs(out.data).max() > 0, key
        assert tuple(out.contrast_limits) == pytest.approx(LIMITS[key]), key
        assert out.blending == "additive" and out.opacity == pytest.approx(0.6)
        assert out.metadata["method"] == key
    gates = viewer.layers["attention gates [tiny-teacher]"]
    assert gates.data.ndim == 3 and gates.data.shape[1:] == (CROP, CROP) and gates.data.shape[0] == 4
    assert "ig: sand [tiny-teacher]" in viewer.layers          # named by method, class and model
    assert viewer.layers["ig: sand [tiny-teacher]"].data.min() < 0  # signed map kept its sign


def test_cancel_stops_a_long_method(explain_widget, qtbot):
    viewer, w, layer = explain_widget
    job = w.explain("lime", target=0, layer=layer, options={"n_samples": 4000, "n_segments": 30})
    qtbot.waitUntil(lambda: job.done >= 2, timeout=30000)     # it is running (forward passes counted)
    w.panel.cancel_btn.changed.emit(True)
    _wait(qtbot, w, 20000)
    assert job.cancelled and job.done < job.total
    assert w.panel.message.value.endswith("cancelled")
    assert not any(lay.name.startswith("lime") for lay in viewer.layers)


def test_mistakes_are_notifications(explain_widget, qtbot, notes, tmp_path):
    from segmodels.checkpoints import save_checkpoint
    from segmodels.networks import build_model

    viewer, w, layer = explain_widget
    w.explain("mc-dropout", layer=layer)                    # ok: tiny teacher has dropout
    _wait(qtbot, w)
    student = save_checkpoint(tmp_path / "s.safetensors", build_model("unet", base=4), "ai4mars")
    w.chooser.use_checkpoint(student)
    w.explain("attention", layer=layer)                      # a U-Net has no attention gates
    _wait(qtbot, w)
    w.explain("mc-dropout", layer=layer)                     # ... and no dropout
    _wait(qtbot, w)
    errors = [m for lvl, m in notes if lvl == "show_error"]
    assert any("no attention" in m for m in errors) and any("no dropout" in m for m in errors)


def test_screenshot(explain_widget, qtbot, tmp_path, ai4mars_dir):
    from napari_plugin.predict import models
    from segmodels.atomic import atomic_write_png
    from segmodels.images import load_image

    viewer, w, _ = explain_widget
    viewer.window._qt_window.resize(1400, 900)
    path = sorted((ai4mars_dir / "images").glob("*.jpg"))[3]
    full = viewer.add_image(load_image(path), name=path.stem)
    if models.pretrained_available():
        w.chooser.source.value = "pretrained AI4Mars student"
    w.explain("gradcam", target="bedrock", layer=full)
    _wait(qtbot, w)
    for lay in viewer.layers:
        lay.visible = lay is full or lay in w.layers_added
    viewer.reset_view()
    out = Path(os.environ.get("MARSAM_SCREENSHOT_DIR", tmp_path))
    shot = viewer.screenshot(canvas_only=False, flash=False)
    atomic_write_png(out / "explain.png", np.asarray(shot)[:, :, :3])
    assert shot[..., :3].std() > 10
