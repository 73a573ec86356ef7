"""Student vs teacher inference speed, measured side by side, and domain-decoder training speed.

Speed ratios on a shared machine are only meaningful when both models are timed in the same
run, interleaved round by round (another job starting halfway would otherwise bias one side);
each round times the teacher and then the student for a fixed wall time at batch 1, and the
reported ratio is the median of the per-round ratios. The second part times training epochs of
the SAM domain decoder on 5 cached embeddings, the paper's "100 epochs on 5 images" setting.

    python benchmarks/bench_distill.py [--teacher T.safetensors] [--student S.safetensors]
        [--size 128 256] [--threads 1 2] [--rounds 5] [--out benchmarks/results/bench_distill.json]

Without checkpoints the paper architectures (teacher base 64, student base 16) are timed with
random weights: speed does not depend on the weights.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmodels.device import machine_info  # noqa: E402
from segmodels.atomic import atomic_write_json  # noqa: E402
from segmodels.checkpoints import load_checkpoint  # noqa: E402
from segmodels.networks import build_model  # noqa: E402
from segmodels.stats import count_params, gflops  # noqa: E402


def side_by_side(teacher, student, size: int, channels: int, rounds: int, seconds: float) -> dict:
    from distill.evaluate import relative_speed     # the one home of the method (the demo uses it too)
    shape = (1, channels, size, size)
    r = relative_speed(teacher, student, shape, "cpu", rounds=rounds, seconds=seconds)
    return {"size": size, "teacher_images_per_second": r["reference_images_per_second"],
            "student_images_per_second": r["images_per_second"],
            "speedup_median_of_rounds": r["ratio_median"],
            "speedup_min": r["ratio_min"], "speedup_max": r["ratio_max"],
            "teacher_gflops": round(gflops(teacher, shape), 3),
            "student_gflops": round(gflops(student, shape), 3), "rounds": rounds}


def decoder_epochs(width: int, out_size: int, epochs: int, images: int = 5) -> dict:
    """Seconds per epoch of decoder training on cached (here random) embeddings."""
    torch.manual_seed(0)
    model = build_model("sam_decoder", width=width, out_size=out_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(images, 256, 64, 64)
    y = torch.randint(0, 4, (images, out_size, out_size))
    t0 = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, images, 2):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 2]), y[i:i + 2])
            opt.zero_grad()
            loss.backward()
            opt.step()
    per_epoch = (time.perf_counter() - t0) / epochs
    return {"width": width, "out_size": out_size, "images": images, "epochs_timed": epochs,
            "seconds_per_epoch": round(per_epoch, 3), "projected_100_epochs_s": round(100 * per_epoch, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher")
    p.add_argument("--student")
    p.add_argument("--size", type=int, nargs="+", default=[128, 256])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.5, help="timing window per model per round")
    p.add_argument("--decoder-epochs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_distill.json"))
    args = p.parse_args(argv)

    teacher = load_checkpoint(args.teacher).model if args.teacher else build_model("attention_unet", base=64)
    student = load_checkpoint(args.student).model if args.student else build_model("unet", base=16)
    teacher.eval(), student.eval()
    channels = student.in_channels
    result = {"teacher": {"source": args.teacher or "attention_unet base 64 (random weights)",
                          "params": count_params(teacher), "config": teacher.config()},
              "student": {"source": args.student or "unet base 16 (random weights)",
                          "params": count_params(student), "config": student.config()},
              "machine": machine_info(torch.device("cpu")), "inference": []}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.size:
            row = side_by_side(teacher, student, size, channels, args.rounds, args.seconds)
            row["threads"] = threads
            result["inference"].append(row)
            print(f"threads {threads}, {size} px: teacher {row['teacher_images_per_second']:.2f} img/s, "
                  f"student {row['student_images_per_second']:.2f} img/s, speedup x{row['speedup_median_of_rounds']:.2f}",
                  flush=True)
    torch.set_num_threads(args.threads[0])
    if args.decoder_epochs > 0:
        result["decoder_training"] = [decoder_epochs(128, 256, args.decoder_epochs),
                                      decoder_epochs(64, 256, args.decoder_epochs)]
        for r in result["decoder_training"]:
            print(f"decoder width {r['width']}: {r['seconds_per_epoch']:.2f} s/epoch on 5 cached embeddings "
                  f"(100 epochs ~ {r['projected_100_epochs_s']:.0f} s, {torch.get_num_threads()} thread(s))")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
