"""The human-in-the-loop step with a tiny random-weight SAM: train the domain decoder on three
labelled images, get suggested boxes (with classes) on the fourth, accept them into the annotator,
and open the most uncertain remaining image."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SIZE = 192
SAND, SOIL = 2, 0


def _scene(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark textured soil with one bright sand square; labels soil everywhere, sand in the square."""
    rng = np.random.default_rng(i)
    img = rng.integers(20, 60, (SIZE, SIZE)).astype(np.uint8)
    lab = np.full((SIZE, SIZE), SOIL, np.uint8)
    y, x = 30 + 25 * (i % 3), 40 + 20 * (i % 4)
    img[y:y + 80, x:x + 80] = rng.integers(200, 250, (80, 80))
    lab[y:y + 80, x:x + 80] = SAND
    return np.repeat(img[:, :, None], 3, axis=2), lab


@pytest.fixture
def loop_setup(make_napari_viewer, tmp_path, wait_idle):
    """Annotator (tiny SAM, a five-image folder, three images labelled) and the loop widget."""
    from annotate.embeddings import EmbeddingCache
    from annotate.engines import GrabCutEngine, SamEngine
    from annotate.sam_loading import build_tiny_sam
    from napari_plugin.annotator.widget import AnnotatorWidget
    from napari_plugin.loop.widget import LoopWidget
    from napari_plugin.workers import EngineRunner
    from segmodels.atomic import atomic_write_png

    folder = tmp_path / "images"
    truth = {}
    for i in range(5):
        img, lab = _scene(i)
        atomic_write_png(folder / f"scene{i}.png", img)
        truth[f"scene{i}"] = lab
    viewer = make_napari_viewer()
    ann = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(ann, area="right", name="marsam annotator")
    loop = LoopWidget(viewer)
    viewer.window.add_dock_widget(loop, area="right", name="marsam loop")
    ann.session_dir.value = tmp_path / "session"
    # The loop reads the SAM engine from the shared state (its decoder needs SAM embeddings); the
    # annotator turns accepted boxes into labels with GrabCut here, so no annotator embedding or
    # background prefetch runs beside the loop's workers (see _settle for why that matters).
    ann.state.set_engine(SamEngine(build_tiny_sam(), cache=EmbeddingCache()))
    ann.runner = EngineRunner(GrabCutEngine())
    ann.open_folder(folder)
    return viewer, ann, loop, truth, folder


@pytest.fixture
def labelled(loop_setup, qtbot):
    viewer, ann, loop, truth, folder = loop_setup
    _settle(qtbot, ann)
    session = ann.state.session
    for p in session.image_paths[:3]:                       # the expert's first three images
        session.set_result(p, [], truth[p.stem])
    return viewer, ann, loop, truth


def _wait(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: not widget.panel.busy, timeout=timeout)


def _settle(qtbot, ann, timeout=60000):
    """Until the annotator is idle AND its background prefetch of the next image is done.

    Why: opening an image while the prefetch worker still embeds the next one hung the test
    process (both threads in SAM's preprocessing/encoder, the Qt thread in napari's activity
    indicator); reported to the annotator's owner. Waiting for the prefetch avoids it here.
    """
    def done():
        return ann.idle and not getattr(ann, "prefetching", False)
    qtbot.waitUntil(done, timeout=timeout)


def test_train_then_suggested_boxes_on_the_fourth_image(labelled, qtbot, wait_idle, tmp_path):
    from napari_plugin.loop.widget import SUGGESTIONS_NAME

    viewer, ann, loop, truth = labelled
    ann.go_to(3)
    _settle(qtbot, ann)
    loop.train(epochs=20, width=32, batch_size=3, lr=3e-3)
    _wait(qtbot, loop, 400000)
    assert loop.checkpoint is not None and loop.checkpoint.model_name == "sam_decoder"
    assert loop.last_training.epochs_run == 20
    assert Path(loop.last_training.best).is_file()
    assert Path(ann.state.session.folder) in Path(loop.last_training.best).parents   # saved with the session
    _wait(qtbot, loop)                                       # training suggests on the open, unlabelled image

    layer = viewer.layers[SUGGESTIONS_NAME]
    classes = layer.features["class_id"].to_numpy(int)
    assert len(layer.data) >= 1 and set(classes) <= set(range(4))
    lab = truth["scene3"]
    ys, xs = np.nonzero(lab == SAND)
    sand = [np.asarray(v) for v, c in zip(layer.data, classes) if c == SAND]
    assert sand, f"no sand box among {classes.tolist()}"
    r0, c0 = np.min(sand[0], axis=0)
    r1, c1 = np.max(sand[0], axis=0)                         # the sand box overlaps the sand square
    assert max(r0, ys.min()) < min(r1, ys.max()) and max(c0, xs.min()) < min(c1, xs.max())
    loop.viewer.layers.selection.active = layer
    out = Path(os.environ.get("MARSAM_SCREENSHOT_DIR", tmp_path))
    from segmodels.atomic import atomic_write_png
    shot = viewer.screenshot(canvas_only=False, flash=False)
    atomic_write_png(out / "loop.png", np.asarray(shot)[:, :, :3])

    layer.selected_data = {0}                                # the expert re-classes one suggestion
    loop.reclass.value = 3
    assert layer.features["class_id"].iloc[0] == 3
    n = loop.accept()                                        # ... and accepts them all
    assert SUGGESTIONS_NAME not in viewer.layers
    _settle(qtbot, ann)
    assert len(ann.shapes.data) == n
    assert sorted(ann.shapes.features["class_id"].tolist()) == sorted([3] + classes[1:].tolist())
    saved = ann.state.session.prompts(ann.state.image.key)   # SAM labelled them; the session has them
    assert len(saved) == n


def test_next_most_uncertain_opens_an_unlabelled_image(labelled, qtbot, wait_idle):
    from napari_plugin.loop.widget import SUGGESTIONS_NAME

    viewer, ann, loop, truth = labelled
    loop.train(epochs=3, width=16, batch_size=3)
    _wait(qtbot, loop, 300000)
    assert loop.state.image.name == "scene0"                 # labelled: nothing suggested on it
    assert SUGGESTIONS_NAME not in viewer.layers
    loop.next_most_uncertain()
    _wait(qtbot, loop, 120000)
    ranking = loop.ranking
    names = [p.stem for p, _ in ranking.order]
    assert sorted(names) == ["scene3", "scene4"]             # only the unlabelled images
    ents = [h for _, h in ranking.order]
    assert ents == sorted(ents, reverse=True) and all(np.isfinite(ents))
    assert loop.state.image.name == names[0]                 # the annotator opened the first
    assert SUGGESTIONS_NAME in viewer.layers
    _settle(qtbot, ann)


def test_mistakes_are_notifications(make_napari_viewer, notes, qtbot):
    from napari_plugin.loop.widget import LoopWidget
    viewer = make_napari_viewer()
    loop = LoopWidget(viewer)
    viewer.window.add_dock_widget(loop, area="right")
    loop.train_btn.changed.emit(True)
    loop.suggest_btn.changed.emit(True)
    loop.accept_btn.changed.emit(True)
    errors = [m for lvl, m in notes if lvl == "show_error"]
    assert any("no session is open" in m for m in errors)
    assert any("no model yet" in m for m in errors)
    assert any("Annotator" in m for m in errors)


def test_fine_tune_the_shipped_student_on_the_session(labelled, qtbot, wait_idle):
    """The Train widget's other option: the shipped AI4Mars student, fine-tuned on the labelled images."""
    from napari_plugin.loop.widget import STUDENT_CHOICE, SUGGESTIONS_NAME

    viewer, ann, loop, truth = labelled
    loop.kind.value = STUDENT_CHOICE
    assert loop.train_btn.text == "Fine-tune the shipped student"
    loop.train(epochs=1, batch_size=3, size=64)
    _wait(qtbot, loop, 400000)
    ck = loop.checkpoint
    assert ck is not None and ck.model_name == "unet"
    init = ck.checkpoint.training["init"]
    assert init["model"] == "unet" and init["kept_tensors"] > 100 and init["new_head"] is False
    assert Path(ann.state.session.folder) in Path(loop.last_training.best).parents
    ann.go_to(3)
    _settle(qtbot, ann)
    loop.suggest()                                           # the fine-tuned student suggests boxes
    _wait(qtbot, loop)
    assert SUGGESTIONS_NAME in viewer.layers
