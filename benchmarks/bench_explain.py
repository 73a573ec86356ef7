"""Cost of explanations for the student (UNet base 16) on one 256 x 256 image on CPU.

Measures Grad-CAM time, Integrated Gradients time with 32 steps and its peak memory with and
without an internal batch size, and MC dropout time with 20 samples. Writes
``benchmarks/results/explain.json``.

Memory method: every configuration runs in its own fresh Python process (so one run's
high-water mark cannot hide another's); the child records its resident set size (psutil)
right before the call and the process's peak RSS (``resource.getrusage(...).ru_maxrss``)
right after; the difference is the peak extra memory of the call. PyTorch's CPU tensors do not
go through Python's allocator, so tracemalloc would not see them; RSS does.

Timings are the median of ``--repeats`` calls after one warm-up call. MC dropout needs dropout
layers, so its student is built with ``dropout=0.1`` (the same architecture otherwise).

    python benchmarks/bench_explain.py [--checkpoint C] [--repeats 2] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "explain.json"
SHARED = Path(os.environ.get("MARSAM_SHARED_DATA", REPO.parent / "shared" / "data"))

CONFIGS = {
    "gradcam": {"method": "gradcam"},
    "ig_32_no_internal_batch": {"method": "ig", "internal_batch_size": None},
    "ig_32_internal_batch_4": {"method": "ig", "internal_batch_size": 4},
    "mc_dropout_20": {"method": "mc-dropout"},
}


def _image():
    import numpy as np
    from segmodels.images import list_images, load_image
    folder = SHARED / "ai4mars-msl" / "images"
    if folder.is_dir():
        path = list_images(folder)[0]
        return load_image(path), str(path.name)
    rng = np.random.default_rng(0)
    return (rng.random((256, 256)) * 255).astype(np.uint8), "synthetic 256x256 noise"


def child(name: str, checkpoint: str | None, repeats: int, threads: int) -> dict:
    import numpy as np
    import psutil
    import torch

    from segmodels import build_model, load_checkpoint
    from segmodels.explain import gradcam, integrated_gradients, mc_dropout_map

    torch.set_num_threads(threads)
    cfg = CONFIGS[name]
    if checkpoint:
        ck = load_checkpoint(checkpoint)
        model, norm = ck.model, ck.normalization
    else:
        torch.manual_seed(0)
        model = build_model("unet", base=16, dropout=0.1 if cfg["method"] == "mc-dropout" else 0.0).eval()
        norm = model.default_normalization()
    img, img_name = _image()
    x = norm.to_model_input(img)
    assert x.shape[-2:] == (256, 256), x.shape

    def call():
        if cfg["method"] == "gradcam":
            return gradcam(model, x, 0)
        if cfg["method"] == "ig":
            return integrated_gradients(model, x, 0, steps=32, internal_batch_size=cfg["internal_batch_size"])
        return mc_dropout_map(model, x, samples=20)

    rss_before = psutil.Process().memory_info().rss
    e = call()  # first call: the memory measurement, and the warm-up for the timings
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    out = {"config": name, **{k: v for k, v in cfg.items()}, "image": img_name,
           "seconds_median": statistics.median(times), "seconds_all": times,
           "peak_extra_mib": (peak - rss_before) / 2**20, "rss_before_mib": rss_before / 2**20,
           "map_shape": list(e.map.shape), "map_finite": bool(np.isfinite(e.map).all())}
    if cfg["method"] == "ig":
        out["relative_delta"] = e.extras["relative_delta"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a student checkpoint (default: UNet base 16, random weights)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads in each measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULT))
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint, args.repeats, args.threads)))
        return 0
    import torch
    rows = {}
    for name in CONFIGS:
        cmd = [sys.executable, __file__, "--child", name, "--repeats", str(args.repeats),
               "--threads", str(args.threads)] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[name] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{name:<28} {rows[name]['seconds_median']:8.3f} s  peak +{rows[name]['peak_extra_mib']:8.1f} MiB",
              flush=True)
    no_ibs, ibs = rows["ig_32_no_internal_batch"], rows["ig_32_internal_batch_4"]
    from segmodels.device import machine_info
    report = {
        "benchmark": "explain", "command": " ".join([Path(sys.executable).name, *sys.argv]), "model": args.checkpoint or "unet base 16 (random weights; dropout 0.1 for MC dropout)",
        "input": "1 x 1 x 256 x 256", "device": "cpu", "torch_threads": args.threads,
        "memory_method": "fresh process per config; peak RSS (ru_maxrss) after the call minus RSS before it",
        "results": rows,
        "ratios": {"ig_peak_memory_no_ibs_over_ibs4": no_ibs["peak_extra_mib"] / max(ibs["peak_extra_mib"], 1e-9),
                   "ig_time_no_ibs_over_ibs4": no_ibs["seconds_median"] / ibs["seconds_median"],
                   "ig32_over_gradcam_time": ibs["seconds_median"] / rows["gradcam"]["seconds_median"]},
        "machine": machine_info(),
    }
    from segmodels.atomic import atomic_write_json
    out = Path(args.out)
    atomic_write_json(out, report)
    print(json.dumps(report["ratios"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
