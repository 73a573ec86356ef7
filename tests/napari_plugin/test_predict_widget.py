"""The predict widget on a real AI4Mars navcam image: a prediction Labels layer in the label
spec's colours, an entropy layer with a fixed range, tiling, and bad inputs as notifications."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def student_ckpt(tmp_path):
    """A small random-weight U-Net saved as a marsam checkpoint (the shipped student's format)."""
    import torch
    from segmodels.checkpoints import save_checkpoint
    from segmodels.labels import AI4MARS
    from segmodels.networks import build_model
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, num_classes=4, base=4)
    return save_checkpoint(tmp_path / "tiny-student.safetensors", model, AI4MARS,
                           {"in_channels": 1, "mean": 0.5, "std": 0.25})


@pytest.fixture
def predict_widget(make_napari_viewer):
    from napari_plugin.predict.widget import PredictWidget
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="marsam predict")
    return viewer, widget


def _wait(qtbot, widget, timeout=30000):
    qtbot.waitUntil(lambda: not widget.panel.busy, timeout=timeout)


def test_prediction_of_a_real_image_is_a_label_spec_labels_layer(predict_widget, qtbot, ai4mars_dir,
                                                                  student_ckpt):
    from napari.layers import Image, Labels
    from segmodels.images import load_image
    from segmodels.labels import AI4MARS

    viewer, w = predict_widget
    path = sorted((ai4mars_dir / "images").glob("*.jpg"))[0]
    img = load_image(path)
    layer = viewer.add_image(img, name=path.stem)
    w.chooser.use_checkpoint(student_ckpt)
    w.predict(layer)
    _wait(qtbot, w)

    pred = viewer.layers["prediction"]
    assert isinstance(pred, Labels) and pred.data.shape == img.shape[:2]
    assert set(np.unique(pred.data)) <= set(range(AI4MARS.num_classes))
    for cid, (r, g, b) in enumerate(AI4MARS.colors):          # coloured by the label spec
        np.testing.assert_allclose(pred.colormap.map(cid)[:3], (r / 255, g / 255, b / 255), atol=1e-6)
    ent = viewer.layers["entropy"]
    assert isinstance(ent, Image) and ent.data.shape == img.shape[:2] and np.isfinite(ent.data).all()
    assert ent.contrast_limits == pytest.approx([0.0, math.log(4)])   # fixed, not auto-scaled
    assert ent.blending == "additive"
    assert w.result.mean_entropy == pytest.approx(float(ent.data.mean()), rel=1e-5)
    assert "confidence" not in viewer.layers


def test_large_image_is_tiled_and_same_model_runs_again(predict_widget, qtbot, student_ckpt):
    viewer, w = predict_widget
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (700, 650), dtype=np.uint8)
    layer = viewer.add_image(img, name="big")
    w.chooser.use_checkpoint(student_ckpt)
    w.tile.value = 256
    w.show_confidence.value = True
    w.predict(layer)
    _wait(qtbot, w)
    first = np.asarray(viewer.layers["prediction"].data).copy()
    assert first.shape == (700, 650)
    conf = np.asarray(viewer.layers["confidence"].data)
    assert conf.min() >= 0.25 - 1e-6 and conf.max() <= 1 + 1e-6
    w.predict(layer)                                       # second run: cached model, same layers updated
    _wait(qtbot, w)
    np.testing.assert_array_equal(np.asarray(viewer.layers["prediction"].data), first)
    assert [lay.name for lay in viewer.layers].count("prediction") == 1


def test_bad_inputs_become_notifications(predict_widget, qtbot, notes, tmp_path):
    viewer, w = predict_widget
    viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    w.chooser.use_checkpoint(tmp_path / "missing.safetensors")
    w.run_btn.changed.emit(True)                           # the button, as a user presses it
    assert any("does not exist" in m for lvl, m in notes if lvl == "show_error")
    pickle = tmp_path / "model.safetensors"
    pickle.write_bytes(b"\x80\x04not a safetensors file")
    w.chooser.use_checkpoint(pickle)
    w.predict()
    _wait(qtbot, w)
    assert any("checkpoint" in m.lower() for lvl, m in notes if lvl == "show_error")
    assert "prediction" not in viewer.layers


def test_screenshot(predict_widget, qtbot, ai4mars_dir, student_ckpt, tmp_path):
    """The docked widget on a real navcam frame (the shipped student when it is installed)."""
    from napari_plugin.predict import models
    from segmodels.atomic import atomic_write_png
    from segmodels.images import load_image

    viewer, w = predict_widget
    viewer.window._qt_window.resize(1400, 900)
    path = sorted((ai4mars_dir / "images").glob("*.jpg"))[3]
    layer = viewer.add_image(load_image(path), name=path.stem)
    if not models.pretrained_available():
        w.chooser.use_checkpoint(student_ckpt)
    w.predict(layer)
    _wait(qtbot, w, 60000)
    viewer.layers["entropy"].visible = False
    viewer.reset_view()
    out = Path(os.environ.get("MARSAM_SCREENSHOT_DIR", tmp_path))
    shot = viewer.screenshot(canvas_only=False, flash=False)
    atomic_write_png(out / "predict.png", np.asarray(shot)[:, :, :3])
    assert shot[..., :3].std() > 10


def test_uncertainty_layers_lie_below_the_prediction_hidden_and_a_legend_names_the_classes(make_napari_viewer, qtbot):
    from napari_plugin.predict.widget import PredictWidget
    viewer = make_napari_viewer()
    w = PredictWidget(viewer)
    viewer.window.add_dock_widget(w)
    layer = viewer.add_image(np.random.default_rng(0).integers(0, 255, (96, 96)).astype(np.uint8), name="navcam")
    w.show_confidence.value = True
    job = w.predict(layer)
    qtbot.waitUntil(lambda: w.result is not None, timeout=60000)
    names = [lay.name for lay in viewer.layers]
    pred = names.index("prediction")
    assert names.index("entropy") < pred and names.index("confidence") < pred
    assert viewer.layers["prediction"].visible
    assert not viewer.layers["entropy"].visible and not viewer.layers["confidence"].visible
    for name in w.result.label_spec.classes:
        assert name in w.legend.value
    assert job is not None


def test_layer_steps_run_one_per_qt_turn_and_a_failing_step_ends_the_chain(qtbot, notes):
    """in_turns: Qt handles its timers (and the user's input) between two layer builds; a step
    that fails becomes a notification, the rest is skipped and the closing call still runs."""
    import time

    from qtpy.QtCore import QTimer

    from napari_plugin.workers import in_turns

    ticks, seen, closed = [], [], []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.wait(30)

    def busy(name):
        def step():
            seen.append((name, len(ticks)))
            time.sleep(0.03)                                 # a layer build's worth of Qt-thread work
        return step

    in_turns([busy("a"), busy("b"), busy("c")], then=lambda: closed.append(True))
    assert [n for n, _ in seen] == ["a"]                     # the first step runs at once, the rest later
    qtbot.waitUntil(lambda: bool(closed), timeout=5000)
    counts = [c for _, c in seen]
    assert counts[0] < counts[1] < counts[2]                 # the 5 ms timer fired between every two steps

    def broken():
        raise ValueError("bad layer")
    seen.clear()
    in_turns([busy("a"), broken, busy("c")], then=lambda: closed.append("again"), doing="showing layers")
    qtbot.waitUntil(lambda: "again" in closed, timeout=5000)
    timer.stop()
    assert [n for n, _ in seen] == ["a"]
    assert any("bad layer" in m for lvl, m in notes if lvl == "show_error")


def test_predict_widget_stays_busy_until_its_layers_are_shown(predict_widget, qtbot, student_ckpt):
    viewer, w = predict_widget
    layer = viewer.add_image(np.zeros((64, 64), np.uint8), name="flat")
    w.chooser.use_checkpoint(student_ckpt)
    w.predict(layer)
    _wait(qtbot, w)
    assert "prediction" in viewer.layers and "entropy" in viewer.layers and w.result is not None
