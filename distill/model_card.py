"""Write a model card from a finished teacher / student / label-only run.

The numbers in a card are read from the run's own files (``summary.json``, ``config.yaml``,
``eval/<model>.json``, the side-by-side speed benchmark), never typed by hand, so the card
cannot drift from what was measured::

    python -m distill.model_card RUN_DIR OUT.md --name ai4mars-student [--note "..."]

RUN_DIR holds ``student/`` (the training run: ``config.yaml``, ``summary.json``) and
``eval/student.json`` (``marsam evaluate`` of the shipped, calibrated checkpoint), and optionally
``teacher/`` + ``eval/teacher.json``, ``student-labels-only/`` + ``eval/student-labels-only.json``,
``bench_distill.json`` (side-by-side speed) and ``pipeline.sh`` (the exact commands), and the
seed comparison ``eval/seeds/{distilled,labels}-s<SEED>.json`` (``marsam evaluate`` of students
trained alike but for the teacher, one file per seed). Sections appear for what is there; the
issue's targets are checked against it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from segmodels.atomic import atomic_write_text

MODELS = (("student", "shipped student (U-Net)"), ("teacher", "teacher (Attention U-Net)"),
          ("student-labels-only", "same student on labels alone"))

#: the targets of the issue that asked for trustworthy models (val, 256 px)
TARGETS = {"student_miou": 0.72, "student_big_rock": 0.35, "teacher_miou": 0.75, "distill_gain": 0.02,
           "student_ips": 50.0, "speedup": 10.0, "ece": 0.05}


def _load(path: Path):
    if not path.is_file():
        return None
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def _f(v, digits=4):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _recipe(cfg: dict) -> str:
    arch = (f"U-Net base {cfg.get('student_base')}"
            + (", strided stem (U-Net at half resolution)" if cfg.get("student_stem_stride") == 2 else ""))
    weights = cfg.get("class_weighting", "inverse") if cfg.get("class_weights", True) else "none"
    return (f"{cfg.get('size')} px input, {arch}, {cfg.get('epochs')} epochs planned, batch {cfg.get('batch_size')}, "
            f"AdamW lr {cfg.get('lr')} (weight decay {cfg.get('weight_decay')}), warmup {cfg.get('warmup_epochs')} "
            f"epoch + cosine, loss {cfg.get('loss', 'ce')}, class weighting {weights}, augmentation "
            f"`{cfg.get('augment_policy', 'basic') if cfg.get('augment', True) else 'none'}`, EMA "
            f"{cfg.get('ema') or 'off'}, seed {cfg.get('seed')}, torch threads {cfg.get('threads')}, device "
            f"{cfg.get('device')}")


def seed_comparison(run: Path) -> dict | None:
    """Distilled vs labels-only students, per seed, from ``eval/seeds/``; None without both kinds."""
    d = run / "eval" / "seeds"
    if not d.is_dir():
        return None
    rows = {}
    for kind in ("distilled", "labels"):
        for f in sorted(d.glob(f"{kind}-s*.json")):
            e = json.loads(f.read_text())
            rows.setdefault(f.stem.split("-s")[-1], {})[kind] = e
    seeds = sorted(k for k, v in rows.items() if len(v) == 2)
    if not seeds:
        return None
    diffs = [rows[k]["distilled"]["miou"] - rows[k]["labels"]["miou"] for k in seeds]
    mean = lambda xs: sum(xs) / len(xs)                                     # noqa: E731
    return {"seeds": seeds, "rows": rows, "diffs": diffs,
            "mean_distilled": mean([rows[k]["distilled"]["miou"] for k in seeds]),
            "mean_labels": mean([rows[k]["labels"]["miou"] for k in seeds]), "mean_diff": mean(diffs)}


def _seed_lines(seeds: dict | None) -> list[str]:
    """The distilled-vs-labels-only table, one row per seed and their mean."""
    out: list[str] = []
    if not seeds:
        return out
    out += ["", "## Distilled vs labels alone, two seeds", "",
           "The same student, data, schedule and time budget, with and without the teacher "
           "(uncalibrated checkpoints; calibration does not change the predicted class):", "",
           "| seed | distilled val mIoU | labels-only val mIoU | difference | distilled big rock | labels-only big rock |",
           "|---|---|---|---|---|---|"]
    for k, dd in zip(seeds["seeds"], seeds["diffs"]):
        r = seeds["rows"][k]
        out.append(f"| {k} | {_f(r['distilled']['miou'])} | {_f(r['labels']['miou'])} | {dd:+.4f} | "
                   f"{_f(_rock(r['distilled']))} | {_f(_rock(r['labels']))} |")
    out.append(f"| mean | {_f(seeds['mean_distilled'])} | {_f(seeds['mean_labels'])} | {seeds['mean_diff']:+.4f} | | |")
    return out


def _speed_lines(bench: dict | None) -> list[str]:
    """The side-by-side speed table of ``benchmarks/bench_distill.py``."""
    out: list[str] = []
    if not bench:
        return out
    out += ["", "## Speed, side by side (`benchmarks/bench_distill.py`)", "",
           "| threads | px | teacher img/s | student img/s | speed-up (median of rounds) | range |", "|---|---|---|---|---|---|"]
    for r in bench.get("inference", []):
        out.append(f"| {r['threads']} | {r['size']} | {_f(r['teacher_images_per_second'], 2)} | "
                   f"{_f(r['student_images_per_second'], 2)} | x{_f(r['speedup_median_of_rounds'], 2)} | "
                   f"x{_f(r['speedup_min'], 2)} to x{_f(r['speedup_max'], 2)} |")
    out.append("")
    out.append(f"Bench machine: {bench.get('machine', {})}.")
    return out


def build_card(run: Path, name: str, note: str = "", figure: str | None = None) -> str:
    """The card of the run in ``run`` (layout in the module doc); sections for what is present."""
    ev = {m: _load(run / "eval" / f"{m}.json") for m, _ in MODELS}
    summ = {m: _load(run / m / "summary.json") for m, _ in MODELS}
    cfg = _load(run / "student" / "config.yaml") or {}
    bench = _load(run / "bench_distill.json")
    s_eval = ev.get("student") or {}
    classes = s_eval.get("classes", ["soil", "bedrock", "sand", "big_rock"])
    distilled = bool(cfg.get("distill", True)) and (summ.get("student") or {}).get("distilled", True)
    calib = ((s_eval.get("training") or {}).get("calibration")) or {}
    lines = [f"# Model card: `{name}`", "",
             "A lightweight U-Net for AI4Mars rover terrain segmentation (soil, bedrock, sand, big rock; 255 = "
             "unlabelled), " + ("distilled from an Attention U-Net teacher" if distilled else
                                "trained on labels alone (no teacher)") + " with marsam's own commands.", ""]
    if note:
        lines += [note, ""]
    lines += _use_lines(name, cfg, s_eval) + _training_lines(cfg, summ, s_eval, distilled)
    lines += _calibration_lines(calib) + _val_lines(ev, s_eval, classes)
    seeds = seed_comparison(run)
    lines += _seed_lines(seeds) + _speed_lines(bench)
    if s_eval.get("worst"):
        lines += ["", "## What it is bad at", "",
                  "The val images with the lowest pixel accuracy over their labelled pixels: "
                  + ", ".join(f"`{w['id']}` ({w['pixel_accuracy']:.2f})" for w in s_eval["worst"]) + "."]
        if figure:
            lines += ["", f"![worst val images: image, ground truth, prediction]({figure})"]
    lines += _targets(ev, bench, cfg, seeds)
    commands = (run / "pipeline.sh").read_text() if (run / "pipeline.sh").is_file() else ""
    if commands:
        lines += ["", "## Exact commands", "", "```bash", commands.strip(), "```"]
    return "\n".join(lines) + "\n"


def _use_lines(name: str, cfg: dict, s_eval: dict) -> list[str]:
    return ["## Use", "", "```python", "from segmodels.predictors import load_predictor",
            f'p = load_predictor("{name}")                 # the shipped weights',
            "from segmodels.images import load_image",
            "probs = p.probabilities(load_image('navcam.jpg'))   # K x H x W, calibrated (see below)",
            "labels = probs.argmax(0)                            # class ids of p.label_spec", "```", "",
            f"or `marsam predict --pretrained {name} --images DIR --out OUT`.", "",
            f"Input: {cfg.get('channels', 1)}-channel (grey) image; the numbers below are at {s_eval.get('input_size')} px.", ""]


def _training_lines(cfg: dict, summ: dict, s_eval: dict, distilled: bool) -> list[str]:
    lines = ["## Training data and settings", "",
             f"- Data: `{cfg.get('data')}` (AI4Mars MSL NAVCAM subset, 256 px JPEGs), split `{cfg.get('train_split')}` "
             f"for training, `{cfg.get('val_split')}` for validation and every number below. Nothing else was used for "
             "model selection.",
             f"- Training images: {(summ.get('student') or {}).get('train_images')} of the train split "
             + (f"(first {cfg.get('limit')} in marsam's fixed hash order, " if cfg.get('limit') else "(all of it, ")
             + "unlabelled masks skipped); per-epoch validation (best-checkpoint choice) on "
             + (f"the first {cfg.get('val_limit')}" if cfg.get('val_limit') else "all")
             + f" val images; final evaluation on "
             f"the whole val split ({s_eval.get('images')} images).",
             f"- Student: {_recipe(cfg)}."]
    if distilled:
        lines.append(f"- Distillation: alpha {cfg.get('alpha')} * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student), "
                     f"T = {cfg.get('temperature')}, KL on {cfg.get('kd_pixels', 'labelled')} pixels.")
    lines.append("- Runs (wall time of training, how each ended):")
    for m, label in MODELS:
        sm = summ.get(m)
        if sm:
            lines.append(f"  - {label}: {sm.get('epochs_run')} epochs ({sm.get('stopped')}), "
                         f"{_f((sm.get('seconds') or 0) / 60, 1)} min, best epoch {sm.get('best_epoch')}, "
                         f"{sm.get('images_per_second')} training images/s")
    return lines


def _calibration_lines(calib: dict) -> list[str]:
    if calib and calib.get("applied", True):
        return ["", "## Calibration", "",
                f"A temperature T = {calib.get('temperature')} was fitted on {calib.get('fitted_on')} "
                f"(`marsam calibrate`) and folded into the head: expected calibration error "
                f"{_f(calib.get('ece_before'))} before, {_f(calib.get('ece_after'))} after. The predicted class, "
                "and so every accuracy figure, is unchanged; probabilities, entropy and confidence maps are the "
                "calibrated ones. T was fitted on the same val split it is reported on."]
    if calib:
        return ["", "## Calibration", "",
                f"`marsam calibrate` fitted T = {calib.get('fitted_temperature')} (minimum NLL) on "
                f"{calib.get('fitted_on')}, but with it the expected calibration error would rise from "
                f"{_f(calib.get('ece_before'))} to {_f(calib.get('ece_with_fitted_temperature'))}, so the "
                f"weights keep T = 1 (ECE {_f(calib.get('ece_before'))}, measured on the same val split)."]
    return []


def _val_lines(ev: dict, s_eval: dict, classes: list[str]) -> list[str]:
    machine = s_eval.get("machine", {})
    lines = ["", "## Measured on val", "",
             f"Machine: {machine.get('platform')}, {machine.get('processor')}, {machine.get('cpu_count')} CPU cores "
             f"shared with other jobs, torch {machine.get('torch')}, device `{machine.get('device')}`, "
             f"{machine.get('torch_threads')} torch thread(s).", "",
             "| model | params | GFLOPs | val mIoU | pixel acc. | " + " | ".join(f"IoU {c}" for c in classes)
             + " | macro F1 | ECE |", "|---" * (7 + len(classes)) + "|"]
    for m, label in MODELS:
        e = ev.get(m)
        if e:
            lines.append(f"| {label} | {e['params']:,} | {_f(e['gflops'], 3)} | {_f(e['miou'])} | {_f(e['pixel_accuracy'])} | "
                         + " | ".join(_f(e["iou_per_class"].get(c)) for c in classes)
                         + f" | {_f(e['macro_f1'])} | {_f(e['ece'])} |")
    if s_eval:
        lines += ["", "Per class (shipped student):", "", "| class | IoU | precision | recall | F1 |", "|---|---|---|---|---|"]
        for c in classes:
            lines.append(f"| {c} | {_f(s_eval['iou_per_class'].get(c))} | {_f(s_eval['precision_per_class'].get(c))} | "
                         f"{_f(s_eval['recall_per_class'].get(c))} | {_f(s_eval['f1_per_class'].get(c))} |")
        from .metrics import confusion_to_markdown
        lines += ["", "Confusion matrix (pixels, rows = truth):", "",
                  confusion_to_markdown(s_eval["confusion_matrix"], classes)]
    return lines


def _rock(e: dict):
    iou = e.get("iou_per_class", {})
    return iou.get("big_rock", iou.get("big rock"))


def _targets(ev: dict, bench: dict | None, cfg: dict, seeds: dict | None = None) -> list[str]:
    s, t, b = ev.get("student") or {}, ev.get("teacher") or {}, ev.get("student-labels-only") or {}
    if not s:
        return []
    T = TARGETS

    def row(what, got, ok):
        return f"| {what} | {got} | {'n/a' if ok is None else ('yes' if ok else 'no')} |"
    rock = _rock(s)
    inf = [r for r in (bench or {}).get("inference", []) if r["size"] == s.get("input_size") and r["threads"] == 2]
    ips = inf[0]["student_images_per_second"] if inf else None
    speed = inf[0]["speedup_median_of_rounds"] if inf else None
    out = ["", "## The issue's targets against this model", "", "| target | reached | met? |", "|---|---|---|",
           row(f"student val mIoU >= {T['student_miou']}", _f(s["miou"]), s["miou"] >= T["student_miou"]),
           row(f"student big-rock IoU >= {T['student_big_rock']}", _f(rock), rock is not None and rock >= T["student_big_rock"]),
           row("student <= 2M parameters", f"{s['params']:,}", s["params"] <= 2_000_000),
           row(f"teacher val mIoU >= {T['teacher_miou']}", _f(t.get("miou")) if t else "no teacher in this run",
               (t["miou"] >= T["teacher_miou"]) if t else None),
           (row(f"distilled beats labels-only by >= {T['distill_gain']} ({len(seeds['seeds'])} seeds, mean)",
                f"{seeds['mean_distilled']:.4f} vs {seeds['mean_labels']:.4f} ({seeds['mean_diff']:+.4f}; per seed "
                + ", ".join(f"{d:+.4f}" for d in seeds["diffs"]) + ")",
                seeds["mean_diff"] >= T["distill_gain"] and len(seeds["seeds"]) >= 2) if seeds else
            row(f"distilled beats labels-only by >= {T['distill_gain']} (two seeds)",
                f"{_f(s['miou'])} vs {_f(b['miou'])} (one seed)" if b else "not measured in this run",
                False if b else None)),
           row(f"student >= {T['student_ips']:.0f} images/s at {s.get('input_size')} px, 2 threads",
               _f(ips, 1), (ips >= T["student_ips"]) if ips else None),
           row(f"student >= {T['speedup']:.0f}x teacher images/s (side by side)", f"x{_f(speed, 2)}",
               (speed >= T["speedup"]) if speed else None),
           row(f"ECE <= {T['ece']} after temperature scaling", _f(s.get("ece")), s.get("ece") is not None and s["ece"] <= T["ece"])]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="write a model card from a finished run")
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--name", default="ai4mars-student")
    p.add_argument("--note", default="", help="extra paragraph (e.g. limitations), markdown")
    p.add_argument("--note-file", type=Path, help="extra markdown appended at the end")
    p.add_argument("--figure", help="link to a PNG of the worst val images (as the card should show it)")
    args = p.parse_args(argv)
    text = build_card(args.run, args.name, args.note, args.figure)
    if args.note_file:
        text += "\n" + args.note_file.read_text()
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
