"""Annotator latency: box added -> label pixels painted, and the Qt loop during an embedding.

Drives the real widget in a napari viewer (as the GUI tests do): a 1024 x 1024 image, SAM of
the vit_b ARCHITECTURE with random weights (``build_sam_vit_b(None)``: same cost as the
official checkpoint, no download) wrapped as annotate's SamModel, on CPU.

1. A QTimer ticks every 10 ms while the widget embeds the image in its worker thread; the
   largest gap between ticks is the longest stall of the Qt event loop.
2. With the embedding cached, ~20 boxes are added one by one to the Shapes layer; each latency
   runs from ``add_rectangles`` to the Labels layer holding the new pixels (segmentation in the
   worker, merge, paint, autosave of the session). GrabCut is measured side by side on the same
   boxes. Median and 95th percentile are reported.

Run:  xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_napari_annotator.py
Writes benchmarks/results/napari_annotator.json.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import segment_anything  # noqa: F401  (before napari's OpenGL context: see project.preload_sam_modules)

OUT = Path(__file__).resolve().parent / "results" / "napari_annotator.json"


def _image(size: int) -> tuple[np.ndarray, str]:
    try:
        from distill.synthetic import make_terrain
        return make_terrain(size=size, seed=0)[0], f"distill.synthetic.make_terrain(size={size}, seed=0)"
    except ImportError:
        rng = np.random.default_rng(0)
        return rng.integers(0, 255, (size, size), dtype=np.uint8), "uniform noise"


def _boxes(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = rng.integers(40, 200, 2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        out.append(np.array([[y, x], [y + h, x + w]], float))
    return out


def _pump(app, until, timeout=600.0):
    end = time.perf_counter() + timeout
    while not until():
        if time.perf_counter() > end:
            raise TimeoutError("the annotator did not finish in time")
        app.processEvents()
        time.sleep(0.001)


def _box_latencies(viewer, widget, app, boxes) -> list[float]:
    lat = []
    for k, box in enumerate(boxes, 1):
        t0 = time.perf_counter()
        widget.shapes.add_rectangles(box)
        _pump(app, lambda: widget.idle and len(widget.controller.boxes) == k and not widget.controller.missing())
        lat.append(time.perf_counter() - t0)
    return lat


def _stats(xs) -> dict:
    a = np.asarray(xs) * 1000
    return {"n": len(a), "median_ms": round(float(np.median(a)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "max_ms": round(float(a.max()), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    import napari
    import torch
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    from segment_anything import build_sam_vit_b

    from annotate.embeddings import EmbeddingCache
    from annotate.engines import GrabCutEngine, SamEngine
    from annotate.sam_loading import SamModel
    from napari_plugin.annotator.widget import AnnotatorWidget

    tmp = Path(tempfile.mkdtemp(prefix="marsam-bench-"))
    os.environ.setdefault("MARSAM_CACHE_DIR", str(tmp / "cache"))
    image, image_desc = _image(args.size)
    boxes = _boxes(args.boxes, args.size)

    sam = build_sam_vit_b(None).eval()
    model = SamModel(sam=sam, model_type="vit_b", checkpoint_id="random-vit_b-bench", device=torch.device("cpu"))
    engine = SamEngine(model, cache=EmbeddingCache(tmp / "cache" / "embeddings"))

    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.session_dir.value = tmp / "session-sam"
    widget.use_layer(viewer.add_image(image, name="bench"))

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    t0 = time.perf_counter()
    widget.use_engine(engine)                       # embeds in the worker thread
    _pump(app, lambda: widget.idle)
    embed_s = time.perf_counter() - t0
    timer.stop()
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([embed_s])

    sam_lat = _box_latencies(viewer, widget, app, boxes)
    prompts = widget.controller.prompts()
    t0 = time.perf_counter()
    engine.segment(prompts[:1])
    one_decode = time.perf_counter() - t0
    viewer.close()

    viewer = napari.Viewer(show=False)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.session_dir.value = tmp / "session-grabcut"
    widget.use_layer(viewer.add_image(image, name="bench"))
    widget.use_engine(GrabCutEngine())
    _pump(app, lambda: widget.idle)
    gc_lat = _box_latencies(viewer, widget, app, boxes)
    viewer.close()

    from segmodels.device import machine_info
    result = {
        "benchmark": "napari annotator: box added -> label pixels painted; Qt loop stall while embedding",
        "command": "xvfb-run -a -s '-screen 0 1600x1000x24' .venv/bin/python benchmarks/bench_napari_annotator.py",
        "image": {"size": [args.size, args.size], "source": image_desc},
        "sam": {"architecture": "vit_b (segment_anything.build_sam_vit_b(None), random weights)",
                "device": "cpu", "embedding_s": round(embed_s, 2),
                "qt_loop_while_embedding": {"timer_interval_ms": 10, "ticks": len(ticks),
                                            "longest_stall_ms": round(float(gaps.max()) * 1000, 1),
                                            "median_gap_ms": round(float(np.median(gaps)) * 1000, 1)},
                "box_to_labels_cached_embedding": _stats(sam_lat),
                "one_box_decode_only_ms": round(one_decode * 1000, 1)},
        "grabcut": {"box_to_labels": _stats(gc_lat)},
        "sam_vs_grabcut_median_ratio": round(float(np.median(sam_lat) / np.median(gc_lat)), 2),
        "what_a_latency_includes": "worker-thread segmentation of the new box, merge of all masks, "
                                   "Labels layer update, atomic autosave of the session (PNG + JSON)",
        "machine": {**machine_info(), "napari": napari.__version__, "display": os.environ.get("DISPLAY", "")},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from segmodels.atomic import atomic_write_json
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
