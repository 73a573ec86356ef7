"""``marsam predict`` speed and memory: 256 px AI4Mars images per second (CPU, batched), PyTorch
against its ONNX export side by side, and peak RSS and time on a 6000 x 6000 image.

1. Model throughput: the shipped student's forward pass on batches of real 256 px AI4Mars val
   images, PyTorch and onnxruntime interleaved round by round (a job starting halfway on a
   shared machine would otherwise bias one side); the ratio is the median of per-round ratios.
2. End to end: ``predict_images`` (read, predict, write labels, overlays, rows, table) over the
   same images with each model, interleaved the same way.
3. A large product: a 6000 x 6000 mosaic of real HiRISE crops (the crops are 900 px; the mosaic
   is built here, in a temporary folder) through ``marsam predict`` in a child process that
   reports its own peak RSS; the same for a 2600 x 2600 crop of it, to show that memory does
   not grow with the image's area beyond its uint8 arrays. For scale: importing torch alone takes
   about 0.5 GB of RSS on this machine (``baseline_rss_mb``: the same child, predicting nothing).

    python benchmarks/bench_predict.py [--images 64] [--batch 8] [--rounds 3] [--threads 2]
        [--big 6000 2600] [--out benchmarks/results/predict.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmodels.device import machine_info  # noqa: E402
from segmodels.atomic import atomic_write_json  # noqa: E402

DATA = ROOT.parent / "shared" / "data"

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from segmodels.cli import main
t0 = time.perf_counter()
rc = main({argv!r})
# VmHWM: the peak RSS of this process image (ru_maxrss would include the parent's RSS at fork,
# which Linux carries across execve)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("RESULT " + json.dumps({{"rc": rc, "seconds": time.perf_counter() - t0, "peak_rss_mb": int(hwm) / 1024}}))
"""


def _val_images(n: int, folder: Path) -> Path:
    ai = DATA / "ai4mars-msl"
    with open(ai / "split.csv") as f:
        ids = [r["id"] for r in csv.DictReader(f) if r["split"] == "val"][:n]
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        src = next((ai / "images").glob(f"{i}.*"))
        shutil.copy(src, folder / src.name)
    return folder


def _mosaic(side: int, path: Path) -> Path:
    import cv2
    from segmodels.images import load_image
    crops = [load_image(p) for p in sorted((DATA / "hirise-pits" / "valid" / "images").iterdir())]
    crops = [c if c.ndim == 2 else c[..., 0] for c in crops]
    n = -(-side // crops[0].shape[0])
    rows = [np.concatenate([crops[(i * n + j) % len(crops)] for j in range(n)], axis=1) for i in range(n)]
    big = np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), big)
    return path


def _model_rates(pt, ox, images: list[np.ndarray], batch: int, rounds: int, seconds: float) -> dict:
    from distill.predict.models import batch_probabilities
    batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]

    def rate(fn) -> float:
        fn(batches[0])
        n, t0 = 0, time.perf_counter()
        while n < len(batches) or time.perf_counter() - t0 < seconds:
            fn(batches[n % len(batches)])
            n += 1
        return n * batch / (time.perf_counter() - t0)
    per = []
    for _ in range(rounds):
        a = rate(lambda b: batch_probabilities(pt, b, "cpu"))
        o = rate(lambda b: batch_probabilities(ox, b))
        per.append({"pytorch": a, "onnx": o, "onnx_over_pytorch": o / a})
    return {"rounds": per, "pytorch_images_per_s": statistics.median(r["pytorch"] for r in per),
            "onnx_images_per_s": statistics.median(r["onnx"] for r in per),
            "onnx_over_pytorch_median": statistics.median(r["onnx_over_pytorch"] for r in per)}


def _end_to_end(pt, ox, folder: Path, work: Path, batch: int, rounds: int) -> dict:
    from distill.predict import PredictSettings, predict_images
    n = len(list(folder.iterdir()))
    per = []
    for r in range(rounds):
        row = {}
        for name, pred in (("pytorch", pt), ("onnx", ox)):
            out = work / f"e2e-{name}-{r}"
            t0 = time.perf_counter()
            rep = predict_images(pred, [folder], out, PredictSettings(batch_size=batch, progress=False, device="cpu"))
            row[name] = rep.predicted / (time.perf_counter() - t0)
            assert rep.predicted == n, rep.failed
        row["onnx_over_pytorch"] = row["onnx"] / row["pytorch"]
        per.append(row)
    return {"rounds": per, "images": n, "pytorch_images_per_s": statistics.median(r["pytorch"] for r in per),
            "onnx_images_per_s": statistics.median(r["onnx"] for r in per),
            "onnx_over_pytorch_median": statistics.median(r["onnx_over_pytorch"] for r in per)}


def _large(side: int, work: Path, threads: int) -> dict:
    img = _mosaic(side, work / f"big{side}" / f"mosaic{side}.png")
    argv = ["predict", "--pretrained", "ai4mars-student", "--images", str(img.parent), "--out",
            str(work / f"out{side}"), "--uncertainty", "entropy", "--quiet", "--overwrite", "--device", "cpu",
            "--threads", str(threads)]
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), argv=argv)], capture_output=True,
                          text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise SystemExit(f"predict on {side} px failed: {proc.stderr[-2000:]}")
    res = json.loads(line[-1][len("RESULT "):])
    res.update(side=side, pixels=side * side, image_mb=round(side * side / 1e6, 1),
               command="marsam " + " ".join(argv), megapixels_per_s=side * side / 1e6 / res["seconds"])
    return res


def _baseline() -> float:
    """Peak RSS of a child that imports marsam and loads the student, and predicts nothing."""
    code = ("import sys; sys.path.insert(0, %r)\n" % str(ROOT) +
            "from segmodels.cli import build_parser; build_parser()\n"
            "from distill.predict import open_predictor; open_predictor(pretrained='ai4mars-student', device='cpu')\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per model-throughput measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--big", type=int, nargs="*", default=[6000, 2600])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict.json"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from distill.predict import open_predictor
    from segmodels.images import load_image
    from segmodels.onnx_models import export_onnx
    from distill.pretrained import load_pretrained

    result = {"command": "python benchmarks/bench_predict.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(), "threads": args.threads, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="marsam-bench-predict-") as tmp:
        work = Path(tmp)
        folder = _val_images(args.images, work / "navcam")
        onnx_path = export_onnx(load_pretrained("ai4mars-student"), work / "student.onnx")
        pt = open_predictor(pretrained="ai4mars-student", device="cpu")
        ox = open_predictor(onnx_path, threads=args.threads)
        images = [load_image(p) for p in sorted(folder.iterdir())]
        result["model_throughput_256px"] = _model_rates(pt, ox, images, args.batch, args.rounds, args.seconds)
        print("model:", json.dumps({k: v for k, v in result["model_throughput_256px"].items() if k != "rounds"}),
              flush=True)
        result["predict_end_to_end_256px"] = _end_to_end(pt, ox, folder, work, args.batch, args.rounds)
        print("end to end:", json.dumps({k: v for k, v in result["predict_end_to_end_256px"].items()
                                         if k != "rounds"}), flush=True)
        result["baseline_rss_mb"] = _baseline()
        result["large_images"] = []
        for side in args.big:
            r = _large(side, work, args.threads)
            result["large_images"].append(r)
            print(f"{side} x {side}: {r['seconds']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
