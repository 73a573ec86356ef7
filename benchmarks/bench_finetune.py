"""Does fine-tuning from the shipped student pay off? Fine-tuned vs from scratch on N labelled images.

For each N, the same U-Net student (base 16, labels only, same seed, same images, same epochs)
is trained twice: from the shipped ``ai4mars-student`` (``--init pretrained:ai4mars-student``,
with the command line's fine-tuning learning rate: a tenth of the profile's) and from random
weights (the profile's learning rate). This is what ``marsam train student --no-distill --init
pretrained:ai4mars-student --limit N`` does, except for where the N images come from: the shipped
student was trained on the whole train split, so the N images are taken from the val split,
AFTER the selection and report subsets (val images ``select + report`` onwards in hash order):
images the shipped model never saw and that no run selects or reports on. The checkpoint kept is
the best epoch on the selection subset (the first ``--select`` val images in hash order); the
reported mIoU is on the next ``--report`` val images.

    python benchmarks/bench_finetune.py [--ns 10 25 50] [--epochs 15] [--size 128]
        [--select 100] [--report 500] [--out benchmarks/results/finetune.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import load_config  # noqa: E402
from distill.data import open_dataset  # noqa: E402
from distill.evaluate import evaluate  # noqa: E402
from segmodels.device import machine_info  # noqa: E402
from distill.init_weights import FINE_TUNE_LR_FACTOR  # noqa: E402
from distill.pretrained import load_pretrained  # noqa: E402
from distill.student import train_student  # noqa: E402
from segmodels.atomic import atomic_write_json  # noqa: E402

SHIPPED = "ai4mars-student"


def _slice(ds, start: int, stop: int):
    return dataclasses.replace(ds, ids=ds.ids[start:stop], images=ds.images[start:stop],
                               masks=ds.masks[start:stop])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ai4mars-msl"))
    ap.add_argument("--ns", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--select", type=int, default=100)
    ap.add_argument("--report", type=int, default=500)
    ap.add_argument("--work", default="/tmp/marsam-bench-finetune")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune.json"))
    args = ap.parse_args(argv)

    base = load_config("cpu", {"data": args.data, "size": args.size, "epochs": args.epochs,
                               "batch_size": args.batch_size, "distill": False, "resume": False,
                               "max_minutes": None, "warmup_epochs": 1.0})
    n_max = max(args.ns)
    held = args.select + args.report
    val_all = open_dataset(args.data, "val", args.size, 1, limit=held, seed=base.seed, progress=True)
    select, report = _slice(val_all, 0, args.select), _slice(val_all, args.select, held)
    pool = open_dataset(args.data, "val", args.size, 1, augment=True, limit=held + n_max, seed=base.seed, progress=True)
    fresh = _slice(pool, held, held + n_max)

    shipped = evaluate(load_pretrained(SHIPPED), report, speed=False)
    rows = [{"n": 0, "init": "shipped student, not fine-tuned", "miou": shipped["miou"],
             "pixel_accuracy": shipped["pixel_accuracy"], "iou_per_class": shipped["iou_per_class"]}]
    print(f"shipped student as is: mIoU {shipped['miou']:.4f}", flush=True)
    for n in args.ns:
        data = fresh.subset(n)
        for init in (f"pretrained:{SHIPPED}", None):
            cfg = dataclasses.replace(base, lr=base.lr * (FINE_TUNE_LR_FACTOR if init else 1.0), limit=n)
            run = Path(args.work) / f"n{n:03d}-{'finetune' if init else 'scratch'}"
            t0 = time.perf_counter()
            result = train_student(cfg, run, train_data=data, val_data=select, init=init)
            seconds = time.perf_counter() - t0
            ev = evaluate(result.best, report, speed=False)
            rows.append({"n": n, "init": init or "random (from scratch)", "lr": cfg.lr, "epochs": args.epochs,
                         "best_epoch_on_select": result.best_metrics.get("epoch"), "train_seconds": round(seconds, 1),
                         "miou": ev["miou"], "pixel_accuracy": ev["pixel_accuracy"],
                         "iou_per_class": ev["iou_per_class"]})
            print(f"N={n:>3} {'fine-tuned' if init else 'scratch   '}: mIoU {ev['miou']:.4f} "
                  f"(pixel acc {ev['pixel_accuracy']:.4f}, {seconds:.0f} s)", flush=True)
    out = {"what": "student (U-Net base 16, labels only) fine-tuned from the shipped ai4mars-student vs trained "
                   "from scratch on the same N AI4Mars images unseen by the shipped model (val images after the "
                   "selection and report subsets, in hash order); best epoch chosen on the selection subset of "
                   "val, mIoU on the report subset",
           "command": "python benchmarks/bench_finetune.py " + " ".join(argv or sys.argv[1:]),
           "size": args.size, "epochs": args.epochs, "batch_size": args.batch_size,
           "val_select_images": len(select), "val_report_images": len(report),
           "profile_lr": base.lr, "fine_tune_lr": base.lr * FINE_TUNE_LR_FACTOR,
           "rows": rows, "machine": machine_info()}
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
