"""Benchmark of SAM box annotation: batched decoding, the embedding cache, GPU embedding.

Everything is measured side by side in one run on one image (machines here are shared and
noisy, so only ratios within a run mean something). The model is the vit_b ARCHITECTURE with
random weights (``build_sam_vit_b(checkpoint=None)``): timing depends on the shapes, not the
weights.

  (a) per-box latency with a cached embedding: ``SamEngine.segment`` (all boxes in one batch)
      versus a plain loop of ``SamPredictor.predict`` over the same boxes on the same embedding;
      also one box alone, ours versus the predictor ("no slower").
  (b) embedding cache hit (read + checksum) versus recomputing the embedding.
  (c) on CUDA only: batched mixed-precision embedding throughput versus one-image-at-a-time fp32
      ``SamPredictor.set_image``.

Usage: python benchmarks/bench_annotate.py [--boxes 16] [--repeats 5] [--out benchmarks/results/annotate.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotate.embeddings import EmbeddingCache, embed_image, embed_images  # noqa: E402
from annotate.engines import SamEngine  # noqa: E402
from annotate.prompts import BoxPrompt  # noqa: E402
from annotate.sam_loading import SamModel  # noqa: E402
from segmodels.atomic import atomic_write_json  # noqa: E402
from segmodels.device import machine_info  # noqa: E402


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _image(size: int = 1024, seed: int = 0) -> np.ndarray:
    """Terrain-like test image: smooth random field plus a few bright and dark blobs."""
    import cv2
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(128, 40, (size, size)).astype(np.float32), (0, 0), 12)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(20):
        cx, cy, r = rng.integers(50, size - 50, 2).tolist() + [int(rng.integers(15, 60))]
        base[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] += rng.choice([-60, 60])
    grey = np.clip(base, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _boxes(n: int, size: int, seed: int = 1) -> list[BoxPrompt]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = rng.integers(40, 250, 2)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
        out.append(BoxPrompt((float(x0), float(y0), float(x0 + w), float(y0 + h)), i % 4))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "annotate.json"))
    args = ap.parse_args(argv)
    from segment_anything import SamPredictor, build_sam_vit_b
    from segmodels.device import pick_device

    device = pick_device(args.device)
    torch.manual_seed(0)
    sam = build_sam_vit_b(checkpoint=None).to(device).eval()
    model = SamModel(sam=sam, model_type="vit_b", checkpoint_id="random-weights-benchmark", device=device)
    image = _image()
    prompts = _boxes(args.boxes, image.shape[0])
    result = {"benchmark": "annotate", "model": "vit_b architecture, random weights", "device": str(device),
              "image": list(image.shape), "boxes": args.boxes, "repeats": args.repeats, "machine": machine_info()}

    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp)
        # (b) cache miss (compute + store) versus hit (read + verify)
        t = time.perf_counter()
        emb = embed_image(model, image, cache)
        _sync(device)
        miss = time.perf_counter() - t
        hits = _timed(lambda: embed_image(model, image, cache), max(args.repeats, 5))
        recompute = _timed(lambda: (embed_image(model, image, None), _sync(device)), 1)
        compute = min(miss, recompute[0])
        hit = statistics.median(hits)
        result["cache"] = {"compute_s": compute, "first_miss_with_store_s": miss, "hit_median_s": hit,
                           "speedup_hit_vs_recompute": compute / hit,
                           "entry_bytes": cache.path(emb.key).stat().st_size}

        # (a) per-box latency on the cached embedding
        engine = SamEngine(model, cache=cache, clip_to_box=False)
        engine.set_embedding(emb)
        tile = emb.tiles[0]
        predictor = SamPredictor(sam)
        predictor.features, predictor.is_image_set = tile.embedding.to(device), True
        predictor.original_size, predictor.input_size = tuple(image.shape[:2]), tile.input_size

        def ours_batched():
            engine.segment(prompts)
            _sync(device)

        def ours_with_cache_read():
            engine.set_image(image)  # a cache hit
            engine.segment(prompts)
            _sync(device)

        def predictor_loop():
            for p in prompts:
                masks, scores, _ = predictor.predict(box=np.asarray(p.box), multimask_output=True)
                masks[int(np.argmax(scores))]

        def ours_one():
            engine.segment(prompts[:1])
            _sync(device)

        def predictor_one():
            masks, scores, _ = predictor.predict(box=np.asarray(prompts[0].box), multimask_output=True)
            masks[int(np.argmax(scores))]

        ours_batched()  # warm-up both paths
        predictor_loop()
        runs = {name: [] for name in ("ours_batched", "ours_with_cache_read", "predictor_loop", "ours_one",
                                      "predictor_one")}
        fns = {"ours_batched": ours_batched, "ours_with_cache_read": ours_with_cache_read,
               "predictor_loop": predictor_loop, "ours_one": ours_one, "predictor_one": predictor_one}
        for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
            for name, fn in fns.items():
                runs[name] += _timed(fn, 1)
        for _ in range(2 * args.repeats):  # single boxes are cheap: more samples against the noise
            runs["ours_one"] += _timed(ours_one, 1)
            runs["predictor_one"] += _timed(predictor_one, 1)
        med = {k: statistics.median(v) for k, v in runs.items()}
        n = args.boxes
        result["per_box"] = {
            "ours_batched_ms": 1000 * med["ours_batched"] / n,
            "ours_batched_incl_cache_read_ms": 1000 * med["ours_with_cache_read"] / n,
            "predictor_loop_ms": 1000 * med["predictor_loop"] / n,
            "speedup_batched_vs_loop": med["predictor_loop"] / med["ours_batched"],
            "speedup_incl_cache_read_vs_loop": med["predictor_loop"] / med["ours_with_cache_read"],
            "single_box_ours_ms": 1000 * med["ours_one"],
            "single_box_predictor_ms": 1000 * med["predictor_one"],
            "single_box_ratio_predictor_over_ours": med["predictor_one"] / med["ours_one"],
        }

        # (c) GPU: batched mixed-precision embedding versus one-at-a-time fp32 predictor
        if device.type == "cuda":
            images = [_image(seed=s) for s in range(8)]
            embed_images(model, images[:2], None, batch_size=2)  # warm-up

            def ours_gpu():
                embed_images(model, images, None, batch_size=4, mixed_precision=True)
                _sync(device)

            def plain_fp32():
                for im in images:
                    predictor.set_image(im)
                _sync(device)

            g_ours, g_plain = [], []
            for _ in range(max(1, args.repeats // 2)):
                g_ours += _timed(ours_gpu, 1)
                g_plain += _timed(plain_fp32, 1)
            result["gpu_embedding"] = {
                "images": len(images), "batch_size": 4,
                "ours_batched_amp_img_per_s": len(images) / statistics.median(g_ours),
                "predictor_fp32_img_per_s": len(images) / statistics.median(g_plain),
                "speedup": statistics.median(g_plain) / statistics.median(g_ours)}
        else:
            result["gpu_embedding"] = "skipped: no GPU"

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
