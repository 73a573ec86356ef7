"""The paper's label-efficiency experiment: how good is a model trained on N labelled images?

For each N in {5, 10, 15, 20, 25, 50} (Julka and Granitzer) a domain decoder (or a student)
is trained on the first N training images and evaluated on the validation split. Subsets are
nested (the dataset's fixed hash order), so N = 10 contains the images of N = 5 and the curve
measures more labels, not different labels. Every N has its own run folder, so an
interrupted experiment resumes where it stopped.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

from segmodels.atomic import atomic_path, atomic_write_json, atomic_write_text
from segmodels.errors import MarsamError

from .config import TrainConfig
from .data import open_dataset
from .evaluate import evaluate
from .train_loop import ProgressFn, StopFn

PAPER_NS = (5, 10, 15, 20, 25, 50)


def label_efficiency(config: TrainConfig, out_dir: str | os.PathLike, model: str = "decoder",
                     ns=None, sam_model=None, teacher=None, progress: ProgressFn | None = None,
                     should_stop: StopFn | None = None, show_progress: bool = False) -> dict:
    """Train and evaluate one ``model`` ("decoder" or "student") per N; returns rows and file paths.

    ``progress(i, len(ns), row)`` is called after each N; ``should_stop`` cancels between epochs.
    """
    if model not in ("decoder", "student"):
        raise MarsamError(f"label efficiency trains a 'decoder' or a 'student', not {model!r}")
    ns = sorted({int(n) for n in (ns or PAPER_NS)})
    if not ns or ns[0] < 1:
        raise MarsamError(f"N values must be positive integers, got {ns}")
    if not config.val_split:
        raise MarsamError("the label-efficiency experiment needs a validation split (val_split)")
    out_dir = Path(out_dir)
    is_decoder = model == "decoder"
    size = None if is_decoder else config.size
    channels = 3 if is_decoder else config.channels
    train_all = open_dataset(config.data, config.train_split, size, channels,
                             augment=config.augment and not is_decoder, label_spec=config.labels,
                             limit=ns[-1], seed=config.seed, progress=show_progress, mixed_sizes=is_decoder)
    val = open_dataset(config.data, config.val_split, size, channels, label_spec=train_all.label_spec,
                       limit=config.val_limit, seed=config.seed, progress=show_progress, mixed_sizes=is_decoder)
    if len(train_all) < ns[-1]:
        raise MarsamError(f"the training split has {len(train_all)} usable images, fewer than N = {ns[-1]}; "
                          "choose smaller N values (--ns)")
    rows = []
    for i, n in enumerate(ns):
        if should_stop and should_stop():
            break
        run = out_dir / f"n{n:03d}"
        cfg = dataclasses.replace(config, limit=n)
        subset = train_all.subset(n)
        if is_decoder:
            from .decoder import train_decoder
            result = train_decoder(cfg, run, sam_model, should_stop=should_stop, train_data=subset,
                                   val_data=val, show_progress=show_progress)
        else:
            from .student import train_student
            result = train_student(cfg, run, teacher=teacher, should_stop=should_stop, train_data=subset,
                                   val_data=val, show_progress=show_progress)
        ev = evaluate(result.best, val, sam_model=sam_model, speed=False, grid_samples=0)
        ev.pop("_samples", None)
        atomic_write_json(run / "eval-val.json", ev)
        row = {"n": n, "miou": ev["miou"], "macro_f1": ev["macro_f1"], "macro_precision": ev["macro_precision"],
               "macro_recall": ev["macro_recall"], "pixel_accuracy": ev["pixel_accuracy"],
               "epochs": result.epochs_run, "stopped": result.stopped,
               "train_seconds": result.summary.get("seconds"), "checkpoint": str(result.best)}
        rows.append(row)
        if progress:
            progress(i + 1, len(ns), dict(row))
    files = write_table(out_dir, rows, model, config, len(val))
    return {"rows": rows, "files": files}


def write_table(out_dir: Path, rows: list[dict], model: str, config: TrainConfig, n_val: int) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "label_efficiency.json", "csv": out_dir / "label_efficiency.csv",
             "markdown": out_dir / "label_efficiency.md", "plot": out_dir / "label_efficiency.png"}
    atomic_write_json(paths["json"], {"model": model, "data": config.data, "val_split": config.val_split,
                                      "val_images": n_val, "epochs": config.epochs, "rows": rows})
    if rows:
        with atomic_path(paths["csv"]) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    lines = [f"# Label efficiency of the {model} ({config.data}, val {n_val} images, {config.epochs} epochs)", "",
             "| N labelled | val mIoU | macro F1 | macro precision | macro recall | pixel accuracy | epochs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['miou']:.4f} | {r['macro_f1']:.4f} | {r['macro_precision']:.4f} | "
                     f"{r['macro_recall']:.4f} | {r['pixel_accuracy']:.4f} | {r['epochs']} |")
    atomic_write_text(paths["markdown"], "\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ns = [r["n"] for r in rows]
    ax.plot(ns, [r["miou"] for r in rows], "o-", label="val mIoU")
    ax.plot(ns, [r["macro_f1"] for r in rows], "s--", label="val macro F1")
    ax.set_xlabel("labelled training images (N)"), ax.set_ylim(0, 1), ax.legend()
    ax.set_title(f"label efficiency: {model}")
    fig.tight_layout()
    with atomic_path(paths["plot"]) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return {k: str(v) for k, v in paths.items()}
