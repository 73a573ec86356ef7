"""Human-in-the-loop costs in napari, on CPU: what the expert waits for.

1. Student prediction plus entropy layer for a 1024 x 1024 image: ``napari_plugin.predict.models
   .run_prediction`` (segmodels' tiled inference, entropy and confidence from segmodels.uncertainty)
   and the layer update (``show_prediction``: Labels in the label spec's colours + entropy Image),
   timed separately, median over ``--repeats`` after one warm-up; the whole image in one pass
   (tile 1024, the widget's default) and in 512 px tiles, side by side. The model is the shipped AI4Mars
   student when it is installed, else a random-weight U-Net of the same architecture (base 16:
   identical cost); the JSON says which. The image is a real AI4Mars navcam frame resized to 1024 px
   (the dataset's copies are 256 px downscales of 1024 px frames).
2. Domain-decoder training, the paper's setting: 100 epochs on 5 labelled images whose SAM
   embeddings are cached (the annotator computed them while the expert labelled), run through the
   loop widget (``LoopWidget.train``: distill's ``train_decoder`` in a napari worker). Embeddings come
   from a tiny random-weight SAM: the decoder's cost does not depend on the encoder that produced
   its 256 x 64 x 64 input. Labels are the images' real AI4Mars masks.
3. The longest Qt stall during that training: a QTimer ticks every 10 ms on the Qt thread; the
   largest gap between ticks (minus the 10 ms period) is the longest time the GUI could not respond.

The JSON is rewritten after every phase (and with the epochs done so far), so an interrupted run
still leaves what it measured. Run:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_napari_loop.py
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import segment_anything  # noqa: F401  (before napari's OpenGL context: see annotator.project.preload_sam_modules)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "napari_loop.json"
DATA = Path(os.environ.get("MARSAM_SHARED_DATA", REPO.parent / "shared" / "data")) / "ai4mars-msl"


def _machine() -> dict:
    from segmodels.device import machine_info
    return machine_info("cpu")


def _write(report: dict, path: Path) -> None:
    from segmodels.atomic import atomic_write_json
    report["machine"]["load_average_1_5_15_at_write"] = list(os.getloadavg())
    atomic_write_json(path, report)


def _pump(app, until, timeout: float) -> None:
    end = time.perf_counter() + timeout
    while not until():
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.002)


class StallMeter:
    """QTimer at ``period_ms`` on the Qt thread; gaps between ticks beyond the period are stalls."""

    def __init__(self, period_ms: int = 10):
        from qtpy.QtCore import QTimer
        self.period = period_ms / 1000
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self):
        self.ticks.clear()
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        gaps = np.diff(self.ticks) if len(self.ticks) > 1 else np.zeros(1)
        return {"timer_period_ms": self.period * 1000, "ticks": len(self.ticks),
                "longest_gap_ms": round(float(gaps.max()) * 1000, 1),
                "longest_stall_ms": round(max(0.0, float(gaps.max()) - self.period) * 1000, 1),
                "p99_gap_ms": round(float(np.percentile(gaps, 99)) * 1000, 1),
                "gaps_over_100ms": int((gaps > 0.1).sum())}


def bench_predict(viewer, repeats: int) -> dict:
    import cv2
    from napari_plugin.predict import layers as PL
    from napari_plugin.predict import models
    from segmodels.checkpoints import Checkpoint
    from segmodels.images import load_image
    from segmodels.labels import AI4MARS
    from segmodels.networks import build_model

    path = sorted((DATA / "images").glob("*.jpg"))[0]
    image = cv2.resize(load_image(path), (1024, 1024), interpolation=cv2.INTER_LINEAR)
    if models.pretrained_available():
        ckpt, source = models.load_model(None), f"shipped {models.PRETRAINED_STUDENT}"
    else:
        model = build_model("unet", in_channels=1, num_classes=4, base=16).eval()
        ckpt = Checkpoint(model=model, model_name="unet", model_args=model.config(), label_spec=AI4MARS)
        source = "random-weight unet base 16 (the shipped student was not installed; same cost)"
    layer = viewer.add_image(image, name=path.stem)
    out = {"image": f"{path.name} resized to 1024x1024", "model": source, "repeats": repeats}
    for tile in (1024, 512):                    # one pass vs the 512 px tiles (overlap 64), side by side
        pred_s, layer_s = [], []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            result = models.run_prediction(ckpt, image, tile=tile)
            t1 = time.perf_counter()
            PL.show_prediction(viewer, result, layer, entropy=True)
            t2 = time.perf_counter()
            if i:                               # the first run warms up allocators and caches
                pred_s.append(t1 - t0)
                layer_s.append(t2 - t1)
        total = np.add(pred_s, layer_s)
        out[f"tile_{tile}"] = {"predict_entropy_s_median": round(float(np.median(pred_s)), 4),
                               "layers_s_median": round(float(np.median(layer_s)), 4),
                               "total_s_median": round(float(np.median(total)), 4),
                               "total_s_min": round(float(total.min()), 4),
                               "total_s_max": round(float(total.max()), 4)}
    out["tile_512_over_1024"] = round(out["tile_512"]["total_s_median"] / out["tile_1024"]["total_s_median"], 3)
    return out


def bench_training(app, viewer, epochs: int, n_images: int, report: dict, out: Path) -> dict:
    from annotate.embeddings import EmbeddingCache, embed_images
    from annotate.engines import SamEngine
    from annotate.sam_loading import build_tiny_sam
    from annotate.session import Session
    from napari_plugin.loop.widget import LoopWidget
    from napari_plugin.state import MarsamState
    from segmodels.images import load_image
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ.setdefault("MARSAM_CACHE_DIR", str(tmp / "cache"))
    paths = sorted((DATA / "images").glob("*.jpg"))[:n_images]
    session = Session.create(tmp / "session", paths)
    for p in paths:
        with Image.open(DATA / "masks" / f"{p.stem}.png") as im:
            session.set_result(p, [], np.asarray(im, np.uint8))
    sam = build_tiny_sam()
    cache = EmbeddingCache(tmp / "cache" / "embeddings")
    t0 = time.perf_counter()
    embed_images(sam, [load_image(p) for p in paths], cache)
    embed_s = time.perf_counter() - t0
    state = MarsamState.for_viewer(viewer)
    state.set_session(session)
    state.set_engine(SamEngine(sam, cache=cache))
    loop = LoopWidget(viewer, state)
    viewer.window.add_dock_widget(loop, area="right", name="marsam loop")
    meter = StallMeter(10)
    part = {"images": n_images, "epochs": epochs, "embeddings": "tiny random-weight SAM, cached before timing",
            "embedding_s_tiny_sam": round(embed_s, 2), "decoder": "sam_decoder width 128, out_size 256 "
            "(distill defaults), batch 4, AdamW lr 1e-3"}
    report["decoder_training"] = part

    t0 = time.perf_counter()
    meter.start()
    job = loop.train(epochs=epochs)
    last = [0]

    def until():
        if job.done != last[0]:                 # an epoch ended: save what we have so far
            last[0] = job.done
            part.update(epochs_done=job.done, wall_s_so_far=round(time.perf_counter() - t0, 1))
            _write(report, out)
        return not loop.panel.busy

    _pump(app, until, timeout=6 * 3600)
    wall = time.perf_counter() - t0
    part["qt_during_training"] = meter.stop()
    res = loop.last_training
    secs = [r.get("seconds", 0) for r in res.history] if res else []
    part.update(epochs_done=res.epochs_run if res else 0, stopped=res.stopped if res else "failed",
                wall_s=round(wall, 1), train_s=res.summary.get("seconds") if res else None,
                epoch_s_median=round(float(np.median(secs)), 3) if secs else None,
                samples=res.summary.get("train_images") if res else None)
    part.pop("wall_s_so_far", None)
    return part


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100, help="decoder epochs (the paper: 100)")
    ap.add_argument("--images", type=int, default=5, help="labelled images (the paper: 5)")
    ap.add_argument("--repeats", type=int, default=5, help="timed prediction runs")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not (DATA / "images").is_dir():
        raise SystemExit(f"needs the AI4Mars data at {DATA}")
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    report = {"benchmark": "napari_loop", "command": "xvfb-run -a python benchmarks/bench_napari_loop.py "
              f"--epochs {args.epochs} --images {args.images} --repeats {args.repeats}",
              "machine": _machine()}
    report["student_prediction_1024"] = bench_predict(viewer, args.repeats)
    _write(report, args.out)
    bench_training(app, viewer, args.epochs, args.images, report, args.out)
    _write(report, args.out)
    viewer.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
