"""Training throughput (images/s) of the first release's data path against device batches.

Side by side in one run, interleaved rounds, median per path:
- ``v1``: the first release's path on the same model: a DataLoader over the dataset with
  per-image OpenCV augmentation in ``num_workers`` processes, batch 16, pinned memory,
- ``device``: images kept on the training device and augmented there a batch at a time
  (:mod:`distill.batches`), at ``--batch-size``.
Both use the same model, AdamW, mixed precision and channels-last on GPU. On a CPU-only machine
it still runs (``--device cpu``), to check the path, not to claim a GPU number.

    python benchmarks/bench_train_throughput.py --data ../shared/data/ai4mars-msl --model attention_unet \
        --size 256 --limit 1024 --batch-size 64 --json benchmarks/results/train_throughput.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.batches import DeviceBatches, augment_policy  # noqa: E402
from distill.config import load_config  # noqa: E402
from distill.data import open_dataset  # noqa: E402
from distill.losses import segmentation_loss  # noqa: E402
from segmodels.device import autocast, pick_device  # noqa: E402
from segmodels.networks import build_model  # noqa: E402


def run_steps(model, opt, it, steps, device, cl, amp):
    n = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        x = b["x"].to(device, non_blocking=True)
        y = b["y"].to(device, non_blocking=True)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = segmentation_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def forever(make):
    epoch = 0
    while True:
        for b in make(epoch):
            yield b
        epoch += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/ai4mars-msl")
    ap.add_argument("--model", default="attention_unet")
    ap.add_argument("--base", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--v1-batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20, help="steps per path per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device")
    ap.add_argument("--json", default="benchmarks/results/train_throughput.json")
    a = ap.parse_args()
    dev = pick_device(a.device)
    cfg = load_config("gpu" if dev.type == "cuda" else "cpu")
    ds = open_dataset(a.data, "train", a.size, 1, augment=True, limit=a.limit)
    cl, amp = dev.type == "cuda", dev.type == "cuda"
    torch.manual_seed(0)
    model = build_model(a.model, in_channels=1, num_classes=4, base=a.base).to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    from torch.utils.data import DataLoader

    def v1(epoch):
        ds.set_epoch(epoch)
        return DataLoader(ds, batch_size=a.v1_batch_size, shuffle=True, num_workers=a.workers,
                          pin_memory=dev.type == "cuda", drop_last=True)

    def device_batches(epoch):
        b = DeviceBatches(ds, dev, a.batch_size, order=torch.randperm(len(ds)).tolist(),
                          augment=augment_policy(cfg.augment_policy), channels_last=cl, drop_last=True)
        b.set_epoch(epoch)
        return b
    paths = {"v1": forever(v1), "device": forever(device_batches)}
    for it in paths.values():   # warm up: workers, cudnn autotuning, device tensors
        run_steps(model, opt, it, 3, dev, cl, amp)
    res = {k: [] for k in paths}
    for _ in range(a.rounds):
        for k, it in paths.items():
            res[k].append(run_steps(model, opt, it, a.steps, dev, cl, amp))
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {"benchmark": "train_throughput", "model": a.model, "base": a.base, "size": a.size,
           "train_images": len(ds), "v1": {"batch_size": a.v1_batch_size, "num_workers": a.workers,
                                            "images_per_second": round(med["v1"], 1),
                                            "rounds": [round(v, 1) for v in res["v1"]]},
           "device_batches": {"batch_size": a.batch_size, "images_per_second": round(med["device"], 1),
                              "rounds": [round(v, 1) for v in res["device"]]},
           "speedup": round(med["device"] / med["v1"], 2),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "device": str(dev), "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
                       "amp": amp, "channels_last": cl},
           "command": "python " + " ".join(sys.argv)}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
