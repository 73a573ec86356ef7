"""Sessions survive closing napari; SAM embeds in a worker while the Qt loop keeps running."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def folder(tmp_path, square):
    """Three small PNG images, as an expert's folder would hold them."""
    from segmodels.atomic import atomic_write_png
    d = tmp_path / "images"
    for i in range(3):
        img = square(size=160 + 16 * i)
        atomic_write_png(d / f"tile{i}.png", np.repeat(img[:, :, None], 3, axis=2))
    return d


def _dock(make_napari_viewer, session_dir):
    from napari_plugin.annotator.widget import AnnotatorWidget
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.session_dir.value = session_dir
    return viewer, widget


def test_save_close_reopen_gives_identical_labels(make_napari_viewer, folder, tmp_path, wait_idle):
    from annotate.engines import GrabCutEngine
    session_dir = tmp_path / "session"
    viewer, w = _dock(make_napari_viewer, session_dir)
    w.use_engine(GrabCutEngine())
    w.open_folder(folder)
    wait_idle(w)
    assert w.position.value.startswith("image 1/3")
    w.choose_class(1)
    w.shapes.add_rectangles(np.array([[30, 30], [110, 110]]))
    wait_idle(w)
    w.choose_class(3)
    w.shapes.add_rectangles(np.array([[120, 5], [150, 60]]))
    wait_idle(w)
    first = np.asarray(w.labels_layer.data).copy()
    assert set(np.unique(first)) >= {1, 255}
    w.next_image()
    wait_idle(w)
    w.shapes.add_rectangles(np.array([[30, 30], [110, 110]]))
    wait_idle(w)
    second = np.asarray(w.labels_layer.data).copy()
    w.save()
    viewer.close()

    viewer2, w2 = _dock(make_napari_viewer, session_dir)
    w2.open_session(session_dir)                    # shows the session's first image
    wait_idle(w2)
    np.testing.assert_array_equal(np.asarray(w2.labels_layer.data), first)
    assert w2.shapes.features["class_id"].tolist() == [1, 3]
    assert len(w2.shapes.data) == 2
    w2.next_image()
    wait_idle(w2)
    np.testing.assert_array_equal(np.asarray(w2.labels_layer.data), second)


def test_embedding_runs_in_a_worker_and_the_loop_stays_responsive(annotator, qtbot, wait_idle):
    """A QTimer every 10 ms never waits 200 ms while a (tiny) SAM embeds a 1024 px image."""
    from qtpy.QtCore import QTimer

    from annotate.embeddings import EmbeddingCache
    from annotate.engines import SamEngine
    from annotate.sam_loading import build_tiny_sam
    viewer, w = annotator
    rng = np.random.default_rng(0)
    layer = viewer.add_image(rng.integers(0, 255, (1024, 1024), dtype=np.uint8), name="noise")
    w.use_layer(layer)
    engine = SamEngine(build_tiny_sam(), cache=EmbeddingCache())

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    start = time.perf_counter()
    w.use_engine(engine)
    assert not w.idle                                  # embedding queued or running in a worker
    wait_idle(w, timeout=60000)
    elapsed = time.perf_counter() - start
    timer.stop()
    gaps = np.diff(ticks)
    assert engine.embedding is not None and engine.embedding.image_size == (1024, 1024)
    assert len(ticks) > 5, f"the loop ticked {len(ticks)} times in {elapsed:.2f} s"
    assert gaps.max() < 0.2, f"the Qt loop stalled {gaps.max() * 1000:.0f} ms while embedding"

    w.shapes.add_rectangles(np.array([[100, 200], [400, 600]]))   # rows 100..400, cols 200..600
    wait_idle(w, timeout=60000)
    labels = np.asarray(w.labels_layer.data)
    outside = labels.copy()
    outside[100:401, 200:601] = 255
    assert (outside == 255).all()                                   # SAM's mask stays in its box
    prompts = w.state.session.prompts(w.state.image.key)
    assert [tuple(round(v) for v in p.box) for p in prompts] == [(200, 100, 600, 400)]


def test_next_image_is_embedded_in_the_background(annotator, folder, wait_idle, qtbot):
    from annotate.embeddings import EmbeddingCache, image_key
    from annotate.engines import SamEngine
    from annotate.sam_loading import build_tiny_sam
    from segmodels.images import list_images, load_image
    viewer, w = annotator
    engine = SamEngine(build_tiny_sam(), cache=EmbeddingCache())
    w.use_engine(engine)
    w.open_folder(folder)
    wait_idle(w, timeout=60000)
    qtbot.waitUntil(lambda: w.prefetch_worker is not None and not w.prefetching, timeout=60000)
    second = load_image(list_images(folder)[1])
    assert image_key(second, engine.model.model_type, engine.model.checkpoint_id) in engine.cache
