"""``marsam train teacher|decoder|student``, ``marsam evaluate``, ``marsam experiment`` and ``marsam model-card``.

Settings come from a profile (``--config cpu`` / ``gpu``) or a YAML file, then the named flags,
then ``--set key=value`` overrides (any field of :class:`distill.config.TrainConfig`). The
chosen settings are printed first, so every log states the profile it ran with.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from segmodels.errors import MarsamError

_FLAG_KEYS = ("data", "labels", "epochs", "size", "limit", "val_limit", "batch_size", "device", "seed", "lr",
              "teacher_base", "student_base", "channels", "threads", "sam_model_type", "sam_checkpoint")


def _config(args):
    from .config import load_config
    overrides = {}
    for k in _FLAG_KEYS:
        v = getattr(args, k, None)
        if v is not None:
            overrides[k] = v
    for k in ("teacher", "decoder"):
        if getattr(args, k, None):
            overrides[f"{k}_checkpoint"] = getattr(args, k)
    if getattr(args, "no_distill", False):
        overrides["distill"] = False
    if getattr(args, "no_augment", False):
        overrides["augment"] = False
    from .config import parse_overrides
    overrides.update(parse_overrides(args.set))
    cfg = load_config(args.config, overrides)
    if getattr(args, "init", None) and "lr" not in overrides:
        # fine-tuning moves the weights less than training from scratch: a lower default lr
        import dataclasses
        from .init_weights import FINE_TUNE_LR_FACTOR
        cfg = dataclasses.replace(cfg, lr=cfg.lr * FINE_TUNE_LR_FACTOR)
    return cfg


def _say_config(kind: str, cfg, out: Path) -> None:
    import torch
    print(f"marsam train {kind}: data {cfg.data} (train {cfg.train_split!r}"
          f"{f', first {cfg.limit} by hash order' if cfg.limit else ''}; val {cfg.val_split!r}"
          f"{f', {cfg.val_limit} images' if cfg.val_limit else ''}), {cfg.size} px, {cfg.channels} channel(s), "
          f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, seed {cfg.seed}, "
          f"teacher base {cfg.teacher_base}, student base {cfg.student_base}, torch threads "
          f"{cfg.threads or torch.get_num_threads()} -> {out}", flush=True)


def _sam(cfg):
    from annotate.sam_loading import load_sam
    return load_sam(cfg.sam_model_type, cfg.sam_checkpoint, None if cfg.device == "auto" else cfg.device)


def _train(args) -> int:
    from .train_loop import describe_result
    cfg = _config(args)
    out = Path(args.out or f"runs/{args.kind}")
    _say_config(args.kind, cfg, out)
    from segmodels.atomic import remove_stale_temporaries
    remove_stale_temporaries(out, min_age_s=0)   # what a killed run into this folder left half-written

    def report(epoch, total, m):
        val = f", val mIoU {m['val_miou']:.4f}" if m.get("val_miou") is not None else ""
        print(f"epoch {epoch}/{total}: train loss {m.get('train_loss', float('nan')):.4f}{val} "
              f"({m.get('seconds', 0):.0f} s)", flush=True)
    init = getattr(args, "init", None)
    if init and args.kind == "decoder":
        raise MarsamError("--init fine-tunes a student or a teacher; the domain decoder trains from scratch "
                          "in minutes on cached embeddings")
    if init:
        print(f"fine-tuning from {init} (lr {cfg.lr})", flush=True)
    if args.kind == "teacher":
        from .teacher import train_teacher
        result = train_teacher(cfg, out, progress=report, show_progress=True, init=init)
    elif args.kind == "student":
        from .student import train_student
        sam = _sam(cfg) if cfg.distill and cfg.distill_from in ("decoder", "average") else None
        result = train_student(cfg, out, sam_model=sam, progress=report, show_progress=True, init=init)
    else:
        from .decoder import train_decoder
        result = train_decoder(cfg, out, _sam(cfg), progress=report, show_progress=True)
    print(describe_result(result))
    return 0


def _evaluate(args) -> int:
    from segmodels.predictors import load_predictor
    from .data import open_dataset
    from .evaluate import evaluate, write_evaluation
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from annotate.sam_loading import load_sam
    # SAM is loaded only if the model reads SAM embeddings (the domain decoder)
    predictor = load_predictor(args.checkpoint, sam=lambda: load_sam(args.sam_model_type, args.sam_checkpoint,
                                                                       args.device))
    ckpt = predictor.checkpoint
    trained = ckpt.training.get("config", {}) if ckpt is not None else {}
    data = args.data or trained.get("data")
    if not data:
        raise MarsamError("give the data to evaluate on with --data")
    on_pixels = predictor.normalization.reads_pixels
    # an image-reading network is evaluated at its training size; a SAM-embedding reader takes
    # RGB images at their own size (SAM resizes every image itself)
    size = args.size or (trained.get("size") or 256 if on_pixels else None)
    channels = predictor.normalization.in_channels if on_pixels else 3
    from .data import SINGLE_SPLIT, is_session
    split = args.split or (SINGLE_SPLIT if is_session(Path(data).expanduser()) else "val")
    ds = open_dataset(data, split, size, channels, label_spec=predictor.label_spec, limit=args.limit,
                      progress=True, mixed_sizes=not on_pixels)
    result = evaluate(predictor, ds, batch_size=args.batch_size, device=args.device, speed=not args.no_speed,
                      progress=True, worst=args.worst)
    result["checkpoint"] = str(args.checkpoint)
    out = Path(args.json or Path(args.checkpoint).with_name(f"eval-{split}.json"))
    paths = write_evaluation(result, out, ds.label_spec)
    ious = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in result["iou_per_class"].items())
    print(f"{predictor.model_name} on {data} ({split}, {result['images']} images, {size or 'original'} px): mIoU "
          f"{result['miou']:.4f} ({ious}), pixel accuracy {result['pixel_accuracy']:.4f}"
          + (f", {result['images_per_second']:.1f} images/s on {result['machine']['device']}"
             if result.get("images_per_second") else ""))
    print(json.dumps(paths))
    return 0


def _label_efficiency(args) -> int:
    from .experiments import label_efficiency
    cfg = _config(args)
    ns = [int(v) for v in args.ns.split(",")] if args.ns else None
    sam = _sam(cfg) if args.model == "decoder" else None
    out = Path(args.out or f"runs/label-efficiency-{args.model}")
    table = label_efficiency(cfg, out, model=args.model, ns=ns, sam_model=sam, show_progress=True)
    for row in table["rows"]:
        print(f"N={row['n']:>3}: val mIoU {row['miou']:.4f}, macro F1 {row['macro_f1']:.4f}")
    print(json.dumps(table["files"]))
    return 0


def _model_card(args) -> int:
    if args.show:
        from .pretrained import model_card, pretrained_path
        pretrained_path(args.show)          # an unknown name is one line naming the shipped ones
        print(model_card(args.show) or f"no model card ships with {args.show}")
        return 0
    if not (args.run and args.out):
        raise MarsamError("marsam model-card needs RUN_DIR and OUT.md (or --show NAME for a shipped card)")
    from .model_card import main
    argv = [str(args.run), str(args.out), "--name", args.name, "--note", args.note]
    argv += ["--figure", args.figure] if args.figure else []
    return main(argv + (["--note-file", str(args.note_file)] if args.note_file else []))


def _recipe(args) -> int:
    from .recipe import run_study
    cfg = _config(args)
    out = Path(args.out or "runs/recipe-study")
    from .config import load_config
    prof = load_config(args.config).to_dict()
    changed = {k: v for k, v in cfg.to_dict().items() if prof.get(k) != v}
    study = run_study(cfg, out, profile=args.config, base_overrides=changed,
                      parallel=args.parallel, threads_per_run=args.threads, only=args.variants)
    for r in study["rows"]:
        rock = r["iou"].get("big_rock", r["iou"].get("big rock"))
        print(f"{r['name']:<16} val mIoU {r['val_miou']:.4f}  big rock {rock if rock is None else round(rock, 4)}"
              f"  {r['seconds']} s")
    print("chosen:", json.dumps(study["recipe"]))
    print(json.dumps({"json": str(out / "recipe-study.json"), "markdown": str(out / "recipe-study.md"),
                      "recipe": str(out / "recipe.yaml")}))
    return 0


def _calibrate(args) -> int:
    from segmodels.checkpoints import load_checkpoint
    from .calibrate import calibrate_checkpoint
    from .data import open_dataset
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    ck = load_checkpoint(args.checkpoint)
    cfg = (ck.training.get("config") or {}) if isinstance(ck.training, dict) else {}
    data = args.data or cfg.get("data")
    if not data:
        raise MarsamError("the checkpoint does not name its dataset; give --data")
    size = args.size or cfg.get("size") or 256
    ds = open_dataset(data, args.split, size, ck.normalization.in_channels,
                      label_spec=ck.label_spec, limit=args.limit, progress=True)
    out = Path(args.out or Path(args.checkpoint).with_name(Path(args.checkpoint).stem + "-calibrated.safetensors"))
    if out.resolve() == Path(args.checkpoint).resolve():
        raise MarsamError("--out must differ from --checkpoint; the uncalibrated checkpoint is kept")
    r = calibrate_checkpoint(args.checkpoint, ds, out, args.device)
    if r["applied"]:
        print(f"temperature {r['temperature']:.4f}: ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f} on "
              f"{r['fitted_on']}; wrote {out}")
    else:
        print(f"the fitted temperature {r['fitted_temperature']:.4f} would raise the ECE from {r['ece_before']:.4f} to "
              f"{r['ece_with_fitted_temperature']:.4f} on {r['fitted_on']}; kept T = 1; wrote {out}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="cpu", help="profile (cpu, gpu) or YAML file [cpu]")
    p.add_argument("--data", help="HF hub id, saved HF dataset, images/+masks/ folder or session folder "
                   "(a session uses its own label spec and holds out a fixed 20 %% of its images as 'val')")
    p.add_argument("--labels", help="label spec of folder/HF data: ai4mars, hirise-pits or a YAML file "
                   "(classes: [...]); a session carries its own")
    p.add_argument("--out", help="output folder [runs/<kind>]")
    p.add_argument("--epochs", type=int)
    p.add_argument("--size", type=int, help="input size in pixels (multiple of 16)")
    p.add_argument("--limit", type=int, help="use the first N training images (fixed hash order)")
    p.add_argument("--val-limit", dest="val_limit", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps [auto]")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--teacher-base", dest="teacher_base", type=int)
    p.add_argument("--student-base", dest="student_base", type=int)
    p.add_argument("--no-augment", action="store_true")
    from annotate.sam_options import add_sam_options
    add_sam_options(p, default=None, old_model=(), old_checkpoint=False,
                    type_help="SAM model type for the domain decoder (same as --set sam_model_type=...)",
                    checkpoint_help="official SAM .pth for the domain decoder (same as --set sam_checkpoint=...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set alpha=0.7 (repeatable)")


def register(sub) -> None:
    from annotate.sam_options import add_sam_options
    from .predict.cli import register as register_predict
    register_predict(sub)
    p = sub.add_parser("train", help="train the teacher, the SAM domain decoder or the distilled student")
    p.add_argument("kind", choices=("teacher", "decoder", "student"))
    _common(p)
    p.add_argument("--teacher", help="teacher checkpoint for distillation (.safetensors)")
    p.add_argument("--decoder", help="domain decoder checkpoint (distill_from decoder/average)")
    p.add_argument("--no-distill", action="store_true", help="student on labels alone (the baseline)")
    p.add_argument("--init", metavar="CHECKPOINT|pretrained:NAME",
                   help="fine-tune: start from these weights (a new head when the label spec differs; "
                        "lr defaults to a tenth of the profile's)")
    p.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="mIoU, per-class IoU, P/R/F1, ECE, params and speed of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    e.add_argument("--split", help="split to evaluate on [val; a session: all of it, or train/val]")
    e.add_argument("--json", help="output JSON; .md and .png are written next to it")
    e.add_argument("--size", type=int, help="input size (default: the training size)")
    e.add_argument("--limit", type=int)
    e.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    e.add_argument("--device")
    e.add_argument("--no-speed", action="store_true", help="skip the images/s measurement")
    e.add_argument("--worst", type=int, default=6, help="draw the N images of lowest pixel accuracy "
                   "(JSON-worst.png; 0: none) [6]")
    e.add_argument("--threads", type=int, help="torch CPU threads (on shared cores 1 is often fastest)")
    add_sam_options(e, old_model=(), old_checkpoint=False,
                    type_help="SAM model type, when the checkpoint is a domain decoder")
    e.set_defaults(func=_evaluate)

    mc = sub.add_parser("model-card", help="write a model card from a finished run, or show a shipped one",
                        description="Numbers are read from the run's files (summary.json, config.yaml, eval/*.json), "
                                    "never typed by hand; see distill.model_card.")
    mc.add_argument("run", nargs="?", help="run folder with student/ and eval/student.json (optionally teacher/, "
                    "student-labels-only/, bench_distill.json, pipeline.sh)")
    mc.add_argument("out", nargs="?", help="the card to write (.md)")
    mc.add_argument("--name", default="ai4mars-student", help="model name in the card [ai4mars-student]")
    mc.add_argument("--note", default="", help="extra paragraph (e.g. limitations), markdown")
    mc.add_argument("--note-file", help="extra markdown appended at the end")
    mc.add_argument("--show", metavar="NAME", help="print the card of a shipped pretrained model instead")
    mc.add_argument("--figure", help="link to the PNG of the worst val images, as the card should show it")
    mc.set_defaults(func=_model_card)

    x = sub.add_parser("experiment", help="experiments of the paper")
    xs = x.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    le = xs.add_parser("label-efficiency", help="train for N in {5,10,15,20,25,50} labelled images; table + plot")
    _common(le)
    le.add_argument("--model", choices=("decoder", "student"), default="decoder")
    le.add_argument("--ns", help="comma-separated N values [5,10,15,20,25,50]")
    le.add_argument("--teacher", help="teacher checkpoint when --model student distils")
    le.add_argument("--decoder", help=argparse.SUPPRESS)
    le.add_argument("--no-distill", action="store_true")
    le.set_defaults(func=_label_efficiency)
    rs = xs.add_parser("recipe", help="the recipe study: one training change at a time in a proxy setting; "
                       "table in recipe-study.md, chosen overrides in recipe.yaml")
    _common(rs)
    rs.add_argument("--parallel", type=int, default=1, help="runs at a time (each its own process) [1]")
    rs.add_argument("--variants", nargs="+", metavar="NAME",
                    help="train only these variants now; finished runs in --out are reused either way")
    rs.set_defaults(func=_recipe)

    c = sub.add_parser("calibrate", help="fit a temperature on a labelled split and fold it into a copy of "
                       "the checkpoint (probabilities, entropy and ECE then mean what they say)")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    c.add_argument("--split", default="val")
    c.add_argument("--size", type=int, help="input size (default: the training size)")
    c.add_argument("--limit", type=int)
    c.add_argument("--out", help="calibrated checkpoint [CHECKPOINT-calibrated.safetensors]")
    c.add_argument("--device")
    c.add_argument("--threads", type=int)
    c.set_defaults(func=_calibrate)
