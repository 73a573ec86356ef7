"""The manifest, the sample data and `marsam gui`: how a new user reaches the annotator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

MANIFEST = Path(__file__).resolve().parents[2] / "napari_plugin" / "napari.yaml"


def test_manifest_is_valid_and_every_command_imports():
    from npe2 import PluginManifest
    pm = PluginManifest.from_file(MANIFEST)
    assert pm.name == "marsam"
    for cmd in pm.contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr)), cmd.python_name
    assert "Annotator" in {w.display_name for w in pm.contributions.widgets}
    assert {s.key for s in pm.contributions.sample_data} >= {"moon", "mars_terrain"}


def test_sample_data_moon_and_mars_terrain():
    from napari_plugin.sample_data import mars_terrain, moon
    [(img, meta, kind)] = moon()
    assert kind == "image" and img.shape == (512, 512) and img.dtype == np.uint8
    pytest.importorskip("distill.synthetic")
    (image, _, k1), (label, lmeta, k2) = mars_terrain()
    assert (k1, k2) == ("image", "labels") and image.shape[:2] == label.shape == (512, 512)
    assert set(np.unique(label)) <= {0, 1, 2, 3, 255}
    assert lmeta["colormap"].background_value == 255


def test_the_widget_labels_a_sample_opened_from_the_menu(make_napari_viewer, tmp_path, wait_idle):
    """Open the Moon sample through napari's sample menu, then label its layer."""
    from annotate.engines import GrabCutEngine
    from napari_plugin.annotator.widget import AnnotatorWidget
    viewer = make_napari_viewer()
    viewer.open_sample("marsam", "moon")
    w = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(w, area="right")
    w.session_dir.value = tmp_path / "session"
    w.use_engine(GrabCutEngine())
    w.use_layer(viewer.layers["moon"])
    w.shapes.add_rectangles(np.array([[200, 200], [320, 330]]))
    wait_idle(w)
    labels = np.asarray(w.labels_layer.data)
    assert labels.shape == (512, 512) and (labels[200:321, 200:331] == 0).any()
    # an array layer has no file: the session keeps a copy so that it can be reopened
    assert (tmp_path / "session" / "layer-images" / "moon.png").is_file()


def test_marsam_gui_command_line(tmp_path, capsys):
    from segmodels.cli import main
    with pytest.raises(SystemExit) as e:
        main(["gui", "--help"])
    assert e.value.code == 0 and "session" in capsys.readouterr().out
    assert main(["gui", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert main(["gui", str(tmp_path / "notes.txt")]) == 2


def test_launch_opens_a_folder_with_the_annotator_docked(tmp_path, qtbot, wait_idle):
    from segmodels.atomic import atomic_write_png

    from napari_plugin.cli import launch, resolve_images
    for i in range(2):
        atomic_write_png(tmp_path / "imgs" / f"im{i}.png", np.full((64, 64), 30 * i, np.uint8))
    viewer, w = launch(resolve_images([str(tmp_path / "imgs")]), session=str(tmp_path / "s"),
                       labels="hirise-pits", show=False)
    try:
        wait_idle(w)
        assert w.state.label_spec.name == "hirise-pits"
        assert w.class_picker.choices == (0, 1)
        assert (tmp_path / "s" / "session.json").is_file() and w.runner.name == "grabcut"
        assert "Alt-1 .. Alt-2: pick a class" in w.shortcuts.value
        assert "background" in w.legend.value and "Alt-2" in w.legend.value
    finally:
        viewer.close()


def _manifest_widgets() -> list[str]:
    from npe2 import PluginManifest
    return [w.display_name for w in PluginManifest.from_file(MANIFEST).contributions.widgets]


@pytest.mark.parametrize("name", _manifest_widgets())
def test_every_manifest_widget_opens_from_the_plugins_menu(make_napari_viewer, name):
    """What Plugins > marsam > NAME does: napari builds the widget itself and injects the viewer."""
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("marsam", name)
    assert dock is not None and widget.viewer is viewer


def test_widgets_opened_from_the_menu_share_one_state_and_label(make_napari_viewer, tmp_path, wait_idle):
    """All four from the Plugins menu in one viewer: one shared state, and a box still paints labels."""
    from annotate.engines import GrabCutEngine
    from napari_plugin.loop.widget import find_annotator
    viewer = make_napari_viewer()
    widgets = {name: viewer.window.add_plugin_dock_widget("marsam", name)[1] for name in _manifest_widgets()}
    assert len({id(w.state) for w in widgets.values()}) == 1
    ann = widgets["Annotator"]
    assert find_annotator(viewer) is ann
    viewer.open_sample("marsam", "moon")
    ann.session_dir.value = tmp_path / "session"
    ann.use_engine(GrabCutEngine())
    ann.use_layer(viewer.layers["moon"])
    ann.shapes.add_rectangles(np.array([[200, 200], [320, 330]]))
    wait_idle(ann)
    assert (np.asarray(ann.labels_layer.data)[200:321, 200:331] != 255).any()


def test_napari_w_marsam_opens_the_annotator(tmp_path):
    """The README's `napari -w marsam`, as a process of its own (a display is needed: Xvfb in CI)."""
    import os
    import subprocess
    import sys
    if not os.environ.get("DISPLAY"):
        pytest.skip("no display (run under xvfb-run)")
    # napari's own `napari -w marsam` code path (napari.__main__.main), with napari.run replaced by a
    # function that lists the docked widgets and closes the viewer instead of entering the event loop
    script = ("import sys, napari\n"
              "def listed(**kw):\n"
              "    v = napari.current_viewer()\n"
              "    print('DOCKS', list(v.window.dock_widgets), flush=True)\n"
              "    v.close()\n"
              "napari.run = listed\n"
              "sys.argv = ['napari', '-w', 'marsam']\n"
              "from napari.__main__ import main\n"
              "main()\n")
    env = dict(os.environ, MARSAM_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "Error" not in out, out[-3000:]
    assert "DOCKS" in out and "Annotator" in out.split("DOCKS", 1)[1], out[-3000:]
