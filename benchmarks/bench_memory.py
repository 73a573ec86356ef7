"""Peak memory (RSS) of marsam's large-image paths on a 12000 x 12000 image, each in a fresh process.

Cases (each a child process, so one case's peak never hides in another's):
  grabcut        load the PNG, GrabCut 60 boxes, write the label map (annotate's per-image path)
  embed          ``embed_paths`` into a fresh cache: 256 SAM tiles streamed through the encoder
                 (the tiny random-weight SAM of the tests: the real 1024 px tiles and 256 x 64 x 64
                 embeddings, a 2-block encoder so 256 tiles finish on a CPU; vit_b's own encoder adds
                 its activations, about 1.6 GB per tile in flight, on top)
  predict        the shipped student, tiled (segmodels.inference.predict): probabilities, labels, label PNG
  marsam-predict ``marsam predict --pretrained ai4mars-student --uncertainty entropy``: strip-wise
  explain        ``explain --method entropy`` (tiled): map, overlay figure at display size, .npy
  gradcam-bound  ``explain --method gradcam`` on a 1024 x 1024 crop, the largest it accepts
  gradcam-12k    the same on the whole image: refused with one line (recorded)

Each case reports its peak RSS and its baseline (RSS after imports, before the work) and the
stated bound it is checked against. Machines here are shared: times are indicative only.

  python benchmarks/bench_memory.py [--side 12000] [--cases grabcut,embed,...] [--out benchmarks/results/memory.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = ("grabcut", "embed", "predict", "explain", "gradcam-bound", "gradcam-12k", "marsam-predict")
MB = 1 << 20
#: the bounds this benchmark checks, in MiB above the process's baseline, for a side x side uint8 grey
#: image of P = side^2 pixels (stated in the README's Reliability section)
BOUNDS = {
    "grabcut": lambda p: 4 * p / MB + 300,      # image, label map, PNG buffers: ~4 bytes/pixel + crops
    "embed": lambda p: 12 * p / MB + 1000,      # image + fp16 embeddings (~3.6 B/px) + writing them + one tile's encoder
    "predict": lambda p: 48 * p / MB + 1000,    # K=4 float32 probabilities (16 B/px), input, weights, labels + tiles
    "explain": lambda p: 56 * p / MB + 1000,    # predict + entropy and max-prob maps (float32)
    "gradcam-bound": lambda p: 2500,            # 1024 x 1024 through the student with gradients
    "gradcam-12k": lambda p: 200,               # refused from the header, before decoding
    "marsam-predict": lambda p: 6 * p / MB + 1500,  # image, labels, uint8 outputs + one strip's probabilities
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def make_image(path: Path, side: int, boxes_path: Path, n_boxes: int = 60) -> None:
    """A grey texture with ``n_boxes`` brighter blobs, and a CSV of boxes around them."""
    import cv2
    rng = np.random.default_rng(0)
    small = rng.integers(40, 90, (side // 16 + 1, side // 16 + 1), dtype=np.uint8)
    img = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    rows = ["image,x0,y0,x1,y1,class"]
    for k in range(n_boxes):
        s = int(rng.integers(60, 400))
        x, y = (int(v) for v in rng.integers(0, side - s - 20, 2))
        cv2.circle(img, (x + s // 2 + 10, y + s // 2 + 10), s // 2, 170, -1)
        rows.append(f"{path.name},{x},{y},{x + s + 20},{y + s + 20},{k % 4}")
    cv2.imwrite(str(path), img)
    boxes_path.write_text("\n".join(rows) + "\n")


def run_case(case: str, image: Path, boxes: Path, work: Path) -> dict:
    import argparse as ap
    from annotate.boxfiles import read_boxes
    from annotate.engines import GrabCutEngine, label_image
    from annotate.sam_loading import build_tiny_sam
    from annotate.embeddings import EmbeddingCache
    from annotate.batch import embed_paths
    from segmodels.atomic import atomic_write_png
    from segmodels.checkpoints import load_checkpoint
    from segmodels.errors import MarsamError
    from segmodels.explain.cli import explain_image, write_explanation
    from segmodels.images import load_image
    from segmodels.predictors import predict
    student = REPO / "distill" / "pretrained" / "ai4mars-student.safetensors"
    ck = load_checkpoint(student) if case in ("predict", "explain", "gradcam-bound", "gradcam-12k") else None
    sam = build_tiny_sam(seed=0) if case == "embed" else None
    import torch
    torch.set_num_threads(2)
    base_peak, base_now = _rss_mb(), _current_mb()
    t0 = time.perf_counter()
    extra = {}
    if case == "grabcut":
        prompts = read_boxes(boxes, "csv", images_dir=image.parent)[image.name]
        img = load_image(image)
        engine = GrabCutEngine()
        lab = label_image(engine, img, prompts)
        atomic_write_png(work / "label.png", lab)
        extra = {"boxes": len(prompts), "labelled_pixels": int((lab != 255).sum()),
                 "fallbacks": dict(engine.fallback_counts)}
    elif case == "embed":
        s = embed_paths(sam, [image], EmbeddingCache(work / "cache"), progress=False)
        from annotate.embeddings import tile_grid
        from segmodels.images import image_size
        extra = {"embedded": s.done, "failed": s.failed, "tiles": len(tile_grid(*image_size(image))),
                 "cache_bytes": sum(p.stat().st_size for p in (work / "cache").rglob("*.safetensors"))}
    elif case == "predict":
        img = load_image(image)
        pred = predict(ck, img)
        atomic_write_png(work / "pred.png", pred.labels)
        extra = {"classes_seen": int(len(np.unique(pred.labels)))}
    elif case == "marsam-predict":
        from segmodels.cli import main as marsam
        rc = marsam(["predict", "--pretrained", "ai4mars-student", "--images", str(image), "--out", str(work / "p"),
                     "--uncertainty", "entropy", "--quiet"])
        extra = {"exit": rc, "files": sorted(str(p.relative_to(work)) for p in (work / "p").rglob("*") if p.is_file())}
    elif case == "explain":
        img = load_image(image)
        e = explain_image(ck, img, "entropy", None, ap.Namespace(), "cpu")
        files = write_explanation(work, "big", img, e)
        extra = {"files": [p.name for p in files], "mean_entropy": e.extras["mean_entropy"]}
    elif case == "gradcam-bound":
        img = np.ascontiguousarray(load_image(image)[:1024, :1024])
        e = explain_image(ck, img, "gradcam", None, ap.Namespace(layer=None), "cpu")
        write_explanation(work, "crop", img, e)
        extra = {"shape": list(img.shape)}
    else:  # gradcam-12k: the CLI refuses from the image header, before decoding
        import contextlib
        import io
        from segmodels.cli import main as marsam
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = marsam(["explain", "--checkpoint", str(student), "--image", str(image), "--method", "gradcam",
                         "--out", str(work / "x")])
        extra = {"exit": rc, "refused": err.getvalue().strip().splitlines()[-1]}
    return {"case": case, "seconds": round(time.perf_counter() - t0, 1), "baseline_peak_rss_mb": round(base_peak),
            "baseline_rss_mb": round(base_now), "peak_rss_mb": round(_rss_mb()),
            "peak_above_baseline_mb": round(_rss_mb() - base_now), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory.json"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--boxes", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # the child
        print(json.dumps(run_case(args.case, Path(args.image), Path(args.boxes), Path(args.work))))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image, boxes = tmp / "big.png", tmp / "boxes.csv"
        t0 = time.perf_counter()
        make_image(image, args.side, boxes)
        print(f"image {args.side}x{args.side} written in {time.perf_counter() - t0:.0f} s", flush=True)
        pixels = args.side * args.side
        for case in args.cases.split(","):
            work = tmp / case
            work.mkdir()
            r = subprocess.run([sys.executable, __file__, "--case", case, "--image", str(image), "--boxes", str(boxes),
                                "--work", str(work)], capture_output=True, text=True)
            if r.returncode != 0:
                res = {"case": case, "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else str(r.returncode)}
            else:
                res = json.loads(r.stdout.strip().splitlines()[-1])
                res["bound_mb"] = round(BOUNDS[case](pixels))
                res["within_bound"] = res["peak_above_baseline_mb"] <= res["bound_mb"]
            print(json.dumps(res), flush=True)
            results.append(res)
    out = {"benchmark": "memory", "image": [args.side, args.side], "image_mpx": round(pixels / 1e6, 1),
           "results": results,
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                       "note": "2-core shared dev machine, under load; times indicative only"}}
    from segmodels.atomic import atomic_write_json
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
