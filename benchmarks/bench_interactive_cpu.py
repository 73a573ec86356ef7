"""The two CPU costs behind napari's loop, without napari or SAM: decoder training and prediction.

Runs anywhere torch runs (no display, no SAM weights, no data), so it can be repeated on an idle
machine pinned to two cores (``taskset -c 0,1``) next to the napari benchmark on the shared one.

1. Domain decoder, 100 epochs on 5 cached embeddings (random 256 x 64 x 64 embeddings and random
   4-class targets: the cost does not depend on their values), side by side in one run:
   today's in-memory loop (``distill.decoder_loop.fit_in_memory``, width 64, loss at 256 px of
   SAM's 1024 frame, channels-last) at each of ``--threads``; the loss at 128 and 512 px too (what
   the loss resolution costs) and NCHW memory (what channels-last saves); and the pre-issue-16 path (``distill.train_loop.fit``: DataLoader, per-epoch
   checkpoints, CSV, plot and resume state) at width 128 for ``--old-epochs`` epochs, projected.
2. Student prediction of a 1024 x 1024 image with labels, entropy and confidence: the old path
   (network as trained, three passes over the probabilities) against ``run_prediction``'s
   (``inference_network`` + ``single_pass_maps``), interleaved, median of ``--repeats``.

    python benchmarks/bench_interactive_cpu.py [--threads 1 2] [--out benchmarks/results/interactive_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}


def _data(n: int = 5, size: int = 256):
    """Random embeddings and LEARNABLE 4-class targets: the argmax of a second, randomly initialised
    decoder on the same embeddings (so the float32 and bf16 runs can be compared on how well they
    fit, not only on time; the cost does not depend on the values)."""
    from segmodels.networks import build_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 256, 64, 64, generator=g)
    torch.manual_seed(1)
    ref = build_model("sam_decoder", num_classes=4, width=64, out_size=size).eval()
    with torch.no_grad():
        y = ref(x).argmax(1)
    return x, y


def decoder_new(epochs: int, threads: int, out_size: int = 256, width: int = 64, channels_last: bool = True,
                bf16: bool = False) -> dict:
    from distill.config import TrainConfig
    from distill.decoder_loop import fit_in_memory
    from segmodels.labels import AI4MARS
    from segmodels.networks import build_model
    x, y = _data(size=out_size)
    cfg = TrainConfig(epochs=epochs, batch_size=4, threads=threads, val_split=None, device="cpu",
                      decoder_width=width, decoder_out_size=out_size, early_stopping=0, resume=False,
                      channels_last=channels_last, decoder_cpu_bf16=bf16, class_weights=False).validate()
    torch.manual_seed(0)
    model = build_model("sam_decoder", num_classes=4, width=width, out_size=out_size)
    t0 = time.perf_counter()
    r = fit_in_memory(model, (x, y), None, cfg, tempfile.mkdtemp(prefix="bench-dec-"), AI4MARS, {}, {})
    wall = time.perf_counter() - t0
    model = model.float().eval()
    with torch.no_grad():                                # the fit, judged in float32 for both
        pred = model(x.contiguous(memory_format=torch.channels_last) if channels_last else x).argmax(1)
    from segmodels.device import cpu_bf16_supported
    return {"loop": "in-memory", "width": width, "loss_px": out_size, "threads": threads,
            "memory": "channels_last" if channels_last else "nchw",
            "precision": "bf16 autocast" if bf16 and cpu_bf16_supported() else "float32", "epochs": r.epochs_run,
            "wall_s": round(wall, 2), "projected_100_epochs_s": round(wall / r.epochs_run * 100, 1),
            "final_train_loss": round(float(r.history[-1]["train_loss"]), 4),
            "train_pixel_accuracy": round(float((pred == y).float().mean()), 4), "_pred": pred}


def decoder_old(epochs: int, threads: int | None) -> dict:
    from distill.config import TrainConfig
    from distill.teacher import SupervisedTask
    from distill.train_loop import fit
    from segmodels.labels import AI4MARS
    from segmodels.networks import build_model
    x, y = _data()

    class DS(torch.utils.data.Dataset):
        label_spec = AI4MARS

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"x": x[i], "y": y[i], "index": i}

        def class_counts(self):
            return np.bincount(y.numpy().ravel(), minlength=4)[:4]
    cfg = TrainConfig(epochs=epochs, batch_size=4, threads=threads, val_split=None, device="cpu",
                      decoder_width=128, decoder_out_size=256, early_stopping=0, resume=False).validate()
    torch.manual_seed(0)
    model = build_model("sam_decoder", num_classes=4, width=128, out_size=256)
    src = type("Src", (), {"label_spec": AI4MARS, "normalization": None})()
    task = SupervisedTask(model, src, cfg, "decoder", {})
    task.normalization = {"in_channels": 256, "input": "sam_embedding", "mean": None, "std": None}
    t0 = time.perf_counter()
    r = fit(task, DS(), None, cfg, tempfile.mkdtemp(prefix="bench-old-"))
    wall = time.perf_counter() - t0
    return {"loop": "shared (pre-issue-16 napari path)", "width": 128, "loss_px": 256,
            "threads": torch.get_num_threads(), "epochs": r.epochs_run, "wall_s": round(wall, 2),
            "projected_100_epochs_s": round(wall / r.epochs_run * 100, 1)}


def prediction(repeats: int) -> dict:
    from segmodels.inference import class_probs, network_probabilities
    from segmodels.networks import build_model
    from segmodels.uncertainty import max_prob_uncertainty, predictive_entropy, single_pass_maps
    try:
        from distill.pretrained import load_pretrained
        net, source = load_pretrained("ai4mars-student").model, "shipped ai4mars-student"
    except Exception:  # noqa: BLE001 - same architecture, same cost
        net, source = build_model("unet", base=16), "random-weight unet base 16"
    net.eval()
    x = torch.rand(1, 1, 1024, 1024)

    def old():
        with torch.no_grad():
            probs = class_probs(net(x).float())[0].numpy()
        return (probs.argmax(0).astype(np.uint8), np.asarray(predictive_entropy(probs), np.float32),
                1 - np.asarray(max_prob_uncertainty(probs), np.float32))

    def new():
        return single_pass_maps(network_probabilities(net, x, tile=1024))
    t = {"old": [], "new": []}
    for i in range(repeats + 1):
        for name, fn in (("old", old), ("new", new)):
            t0 = time.perf_counter()
            fn()
            if i:
                t[name].append(time.perf_counter() - t0)
    o, n = statistics.median(t["old"]), statistics.median(t["new"])
    return {"model": source, "image": "1024 x 1024", "repeats": repeats, "threads": torch.get_num_threads(),
            "old_s_median": round(o, 3), "new_s_median": round(n, 3), "old_s_min": round(min(t["old"]), 3),
            "new_s_min": round(min(t["new"]), 3), "speedup": round(o / n, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--old-epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loss-sizes", type=int, nargs="*", default=[128, 512])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "interactive_cpu.json")
    args = ap.parse_args(argv)
    from segmodels.atomic import atomic_write_json
    report = {"benchmark": "interactive_cpu", "command": "python benchmarks/bench_interactive_cpu.py "
              + " ".join(sys.argv[1:]), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": _machine(), "decoder": [], "prediction": []}

    def write():
        report["machine"]["load_average_at_write"] = [round(v, 2) for v in os.getloadavg()]
        atomic_write_json(args.out, report)
    for th in args.threads:
        torch.set_num_threads(th)
        report["prediction"].append(prediction(args.repeats))
        print(json.dumps(report["prediction"][-1]), flush=True)
        write()
    for th in args.threads:
        pair = {}
        for bf16 in (False, True):         # float32 and bf16 side by side, same data, same seed
            row = decoder_new(args.epochs, th, bf16=bf16)
            pair[bf16] = row.pop("_pred")
            report["decoder"].append(row)
            print(json.dumps(row), flush=True)
            write()
        report["decoder"][-1]["argmax_agreement_with_float32"] = round(float((pair[True] == pair[False]).float().mean()), 4)
        report["decoder"][-1]["speedup_over_float32"] = round(
            report["decoder"][-2]["wall_s"] / report["decoder"][-1]["wall_s"], 2)
        write()
    for size in args.loss_sizes:
        report["decoder"].append(decoder_new(max(1, args.epochs // 5), args.threads[0], out_size=size))
        report["decoder"][-1].pop("_pred")
        print(json.dumps(report["decoder"][-1]), flush=True)
        write()
    report["decoder"].append(decoder_new(max(1, args.epochs // 5), args.threads[0], channels_last=False))
    report["decoder"][-1].pop("_pred")
    print(json.dumps(report["decoder"][-1]), flush=True)
    write()
    torch.set_num_threads(max(args.threads))
    if args.old_epochs:
        report["decoder"].append(decoder_old(args.old_epochs, None))
        print(json.dumps(report["decoder"][-1]), flush=True)
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
