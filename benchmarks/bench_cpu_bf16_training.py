"""Teacher and student training steps on a CPU: float32 against ``train_cpu_bf16``, side by side.

The same network, optimiser, batches (real AI4Mars train images, flips, the profile's loss with
class weights) and threads; rounds interleaved (float32, bf16, float32, ...), median per path.
The bf16 path is the training loop's own autocast (``distill.train_loop._train_autocast``), so the
benchmark measures what ``--set train_cpu_bf16=true`` does. On a CPU without native bf16 the two
paths are the same (the JSON says so).

    .venv/bin/python benchmarks/bench_cpu_bf16_training.py --threads 2 \
        --json benchmarks/results/cpu_bf16_training.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
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
from distill.train_loop import _train_autocast  # noqa: E402
from segmodels.device import cpu_bf16_supported, machine_info  # noqa: E402
from segmodels.networks import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def steps_per_second(model, opt, batches, config, n: int) -> float:
    """Images per second over ``n`` training steps of ``batches`` (an iterator of dicts)."""
    dev = torch.device("cpu")
    images = 0
    t0 = time.perf_counter()
    for _ in range(n):
        b = next(batches)
        with _train_autocast(dev, config):
            loss = segmentation_loss(model(b["x"]), b["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        images += b["x"].shape[0]
    return images / (time.perf_counter() - t0)


def forever(ds, batch_size: int, policy):
    epoch = 0
    while True:
        b = DeviceBatches(ds, torch.device("cpu"), batch_size, order=torch.randperm(len(ds)).tolist(),
                          augment=policy, drop_last=True)
        b.set_epoch(epoch)
        yield from b
        epoch += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ai4mars-msl"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=64, help="train images read (batches cycle over them)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="steps per path per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "cpu_bf16_training.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = load_config("cpu", {"size": a.size})
    ds = open_dataset(a.data, "train", a.size, 1, augment=False, limit=a.limit)
    models = {"teacher (attention_unet base 64, the paper's)": ("attention_unet", {"base": 64}),
              "student (unet base 16, strided stem: the cpu profile's)": ("unet", {"base": 16, "stem_stride": 2})}
    out = {"benchmark": "cpu_bf16_training", "size": a.size, "batch_size": a.batch_size, "threads": a.threads,
           "cpu_bf16_supported": cpu_bf16_supported(), "rounds": a.rounds, "steps_per_round": a.steps,
           "machine": machine_info("cpu"), "command": "python " + " ".join(sys.argv), "models": {}}
    for label, (name, kw) in models.items():
        torch.manual_seed(0)
        model = build_model(name, in_channels=1, num_classes=4, **kw)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        configs = {"float32": dataclasses.replace(base, train_cpu_bf16=False),
                   "bf16": dataclasses.replace(base, train_cpu_bf16=True)}
        batches = forever(ds, a.batch_size, augment_policy(base.augment_policy))
        for cfg in configs.values():                        # warm-up: oneDNN primitives per precision
            steps_per_second(model, opt, batches, cfg, 1)
        runs = {k: [] for k in configs}
        for _ in range(a.rounds):
            for k, cfg in configs.items():
                runs[k].append(steps_per_second(model, opt, batches, cfg, a.steps))
        med = {k: statistics.median(v) for k, v in runs.items()}
        out["models"][label] = {
            "params": sum(p.numel() for p in model.parameters()),
            **{f"{k}_images_per_second": round(v, 2) for k, v in med.items()},
            "rounds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            "bf16_speedup": round(med["bf16"] / med["float32"], 2)}
        print(label, out["models"][label], flush=True)
    out["machine"]["load_average_1_5_15_at_end"] = machine_info("cpu").get("load_average_1_5_15")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
