"""Write a model card from a finished teacher / student / label-only run.

The numbers in a card are read from the run's own files (``summary.json``, ``config.yaml``,
``eval/<model>.json``, the side-by-side speed benchmark), never typed by hand, so the card
cannot drift from what was measured::

    python -m distill.model_card RUN_DIR OUT.md --name ai4mars-student [--note "..."]

RUN_DIR holds ``teacher/``, ``student/``, ``student-labels-only/``, ``eval/`` and optionally
``bench_distill.json`` and ``pipeline.sh`` (the exact commands).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from segmodels.atomic import atomic_write_text

MODELS = (("teacher", "teacher (Attention U-Net)"), ("student", "distilled student (U-Net)"),
          ("student-labels-only", "student on labels alone (U-Net)"))


def _load(path: Path):
    if not path.is_file():
        return None
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def _f(v, digits=4):
    return "n/a" if v is None else f"{v:.{digits}f}"


def build_card(run: Path, name: str, note: str = "") -> str:
    ev = {m: _load(run / "eval" / f"{m}.json") for m, _ in MODELS}
    summ = {m: _load(run / m / "summary.json") for m, _ in MODELS}
    cfg = _load(run / "student" / "config.yaml") or {}
    tcfg = _load(run / "teacher" / "config.yaml") or {}
    bench = _load(run / "bench_distill.json")
    s_eval = ev.get("student") or {}
    classes = s_eval.get("classes", ["soil", "bedrock", "sand", "big_rock"])
    machine = s_eval.get("machine", {})
    lines = [f"# Model card: `{name}`", "",
             "A lightweight U-Net student for AI4Mars rover terrain segmentation (soil, bedrock, sand, big rock; "
             "255 = unlabelled), distilled from an Attention U-Net teacher with marsam's own commands.", ""]
    if note:
        lines += [note, ""]
    lines += ["## Use", "", "```python", "from distill import load_pretrained",
              f'ckpt = load_pretrained("{name}")          # segmodels Checkpoint; ckpt.model is in eval mode',
              "from segmodels.images import load_image, to_model_input",
              "x = to_model_input(load_image('navcam.jpg'), **{k: ckpt.normalization[k] for k in ('in_channels', 'mean', 'std')})",
              "labels = ckpt.model(x).argmax(1)[0]   # class ids in ckpt.label_spec", "```", "",
              f"Input: {cfg.get('channels', 1)}-channel (grey) image, resized to {cfg.get('size')} x {cfg.get('size')} px for the "
              "numbers below, normalised (x - 0.5) / 0.25. The network is fully convolutional and accepts other sizes, "
              "but it was trained and measured at this size.", "",
              "## Training data and settings", "",
              f"- Data: `{cfg.get('data')}` (AI4Mars MSL NAVCAM subset, 256 px JPEGs), split `{cfg.get('train_split')}` "
              f"for training, `{cfg.get('val_split')}` for validation and the numbers below. Nothing else was used for "
              "model selection.",
              f"- Training images: the first {cfg.get('limit')} of the train split in marsam's fixed hash order "
              f"({(summ.get('student') or {}).get('train_images')} usable after skipping unlabelled masks); per-epoch "
              f"validation (best-checkpoint choice) on the first {cfg.get('val_limit')} val images; final evaluation on "
              f"the whole val split ({s_eval.get('images')} images).",
              f"- Profile `cpu` (no GPU was available for this run): {cfg.get('size')} px input, teacher Attention U-Net "
              f"base {tcfg.get('teacher_base')} (the paper's is base 64 at 256 px), student U-Net base {cfg.get('student_base')}, "
              f"{cfg.get('epochs')} epochs, batch {cfg.get('batch_size')}, AdamW lr {cfg.get('lr')} (weight decay "
              f"{cfg.get('weight_decay')}), warmup {cfg.get('warmup_epochs')} epoch + cosine, inverse-frequency class "
              f"weights, augmentations (horizontal flips, rotation +-10 deg, scale +-10 %, shift, brightness, contrast, "
              f"noise), seed {cfg.get('seed')}, torch threads {cfg.get('threads')}.",
              f"- Distillation: alpha {cfg.get('alpha')} * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student), "
              f"T = {cfg.get('temperature')}, unlabelled pixels masked out of both terms. The label-only student uses the "
              "same seed, data, augmentations and schedule with alpha = 1 in effect (CE only).",
              "- Stage wall times and how each stage ended:"]
    for m, label in MODELS:
        s = summ.get(m) or {}
        lines.append(f"  - {label}: {s.get('epochs_run')} epochs, {s.get('stopped')}, "
                     f"{_f((s.get('seconds') or 0) / 60, 1)} min of training, best epoch {s.get('best_epoch')}")
    lines += ["", "## Measured on val", "",
              f"Machine: {machine.get('platform')}, {machine.get('processor')}, {machine.get('cpu_count')} CPU cores "
              f"shared with other jobs, torch {machine.get('torch')}, device `{machine.get('device')}`, "
              f"{machine.get('torch_threads')} torch thread(s).", "",
              "| model | params | GFLOPs | val mIoU | pixel acc. | " + " | ".join(f"IoU {c}" for c in classes)
              + " | macro F1 | ECE | images/s (batch 1) |",
              "|---" * (8 + len(classes)) + "|"]
    for m, label in MODELS:
        e = ev.get(m)
        if not e:
            lines.append(f"| {label} | (no evaluation) |")
            continue
        lines.append(f"| {label} | {e['params']:,} | {_f(e['gflops'], 3)} | {_f(e['miou'])} | {_f(e['pixel_accuracy'])} | "
                     + " | ".join(_f(e["iou_per_class"].get(c)) for c in classes)
                     + f" | {_f(e['macro_f1'])} | {_f(e['ece'])} | {_f(e.get('images_per_second'), 1)} |")
    lines += ["", "The images/s column comes from each `marsam evaluate` run separately (timed one after the other "
              "on a shared machine); the side-by-side ratio below is the one to quote."]
    if bench:
        lines += ["", "### Student vs teacher speed, side by side (`benchmarks/bench_distill.py`)", "",
                  "| threads | px | teacher img/s | student img/s | speed-up (median of rounds) | range |", "|---|---|---|---|---|---|"]
        for r in bench.get("inference", []):
            lines.append(f"| {r['threads']} | {r['size']} | {_f(r['teacher_images_per_second'], 2)} | "
                         f"{_f(r['student_images_per_second'], 2)} | x{_f(r['speedup_median_of_rounds'], 2)} | "
                         f"x{_f(r['speedup_min'], 2)} to x{_f(r['speedup_max'], 2)} |")
    t, s, b = ev.get("teacher") or {}, ev.get("student") or {}, ev.get("student-labels-only") or {}
    speed = None
    if bench and bench.get("inference"):
        speed = max(r["speedup_median_of_rounds"] for r in bench["inference"] if r["size"] == cfg.get("size")) \
            if any(r["size"] == cfg.get("size") for r in bench["inference"]) else None
    if t and s and b:
        lines += ["", "## Targets of the issue against what this run reached", "",
                  "| target | reached | met? |", "|---|---|---|",
                  f"| teacher val mIoU >= 0.80 | {_f(t['miou'])} | {'yes' if t['miou'] >= 0.80 else 'no'} |",
                  f"| student <= 2M parameters | {s['params']:,} | {'yes' if s['params'] <= 2_000_000 else 'no'} |",
                  f"| student within 0.03 mIoU of the teacher | student - teacher = {s['miou'] - t['miou']:+.4f} | "
                  f"{'yes' if s['miou'] >= t['miou'] - 0.03 else 'no'}"
                  f"{' (the student is above a weak teacher)' if s['miou'] > t['miou'] else ''} |",
                  f"| student >= 10x teacher images/s on CPU | x{_f(speed, 2)} (side by side, {cfg.get('size')} px) | "
                  f"{'yes' if speed and speed >= 10 else 'no'} |",
                  f"| distilled student > label-only student (same seed and schedule) | {_f(s['miou'])} vs {_f(b['miou'])} | "
                  f"{'yes' if s['miou'] > b['miou'] else 'no'} (one run each; see the seeded re-run below) |"]
    seeded = run / "seeded"
    se = {m: _load(seeded / f"eval-{m}.json") for m in ("student", "student-labels-only")}
    if all(se.values()):
        ss = {m: _load(seeded / m / "summary.json") or {} for m in se}
        lines += ["", "## Seeded re-run of the two students", "",
                  "The same two trainings repeated with the current code, which seeds the initial weights, so "
                  "both students start from identical weights (same teacher checkpoint and settings; commands in "
                  "`runs/ai4mars-cpu/seeded/rerun.sh`). The shipped weights are those of the first run above.", "",
                  "| model | val mIoU | pixel acc. | " + " | ".join(f"IoU {c}" for c in classes) + " | macro F1 | epochs |",
                  "|---" * (5 + len(classes)) + "|"]
        for m, label in (("student", "distilled student"), ("student-labels-only", "student on labels alone")):
            e = se[m]
            lines.append(f"| {label} | {_f(e['miou'])} | {_f(e['pixel_accuracy'])} | "
                         + " | ".join(_f(e["iou_per_class"].get(c)) for c in classes)
                         + f" | {_f(e['macro_f1'])} | {ss[m].get('epochs_run')} ({ss[m].get('stopped')}) |")
        d, b2 = se["student"]["miou"], se["student-labels-only"]["miou"]
        lines += ["", f"Distilled minus label-only with identical initial weights: {d - b2:+.4f} val mIoU."]
        rerun = seeded / "rerun.sh"
        if rerun.is_file():
            lines += ["", "```bash", rerun.read_text().strip(), "```"]
    commands = (run / "pipeline.sh").read_text() if (run / "pipeline.sh").is_file() else ""
    if commands:
        lines += ["", "## Exact commands", "", "Run from the repository root (`runs/ai4mars-cpu/pipeline.sh`):", "",
                  "```bash", commands.strip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="write a model card from a finished run")
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--name", default="ai4mars-student")
    p.add_argument("--note", default="", help="extra paragraph (e.g. limitations), markdown")
    p.add_argument("--note-file", type=Path, help="extra markdown appended at the end")
    args = p.parse_args(argv)
    text = build_card(args.run, args.name, args.note)
    if args.note_file:
        text += "\n" + args.note_file.read_text()
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
