"""The recipe study: which training choices make a better small model, measured one at a time.

Every variant is the same label-only U-Net student trained in a fixed proxy setting (by default
128 px, a fixed 1000-image subset of the training split, the same epochs, seed and schedule)
with ONE change against the first release's recipe ("current": CE, inverse-frequency class
weights, the basic augmentation, no EMA, full-resolution U-Net). A plain labels-only baseline
(CE, no class weights, flips only) sits beside it. Each row is validated on the whole validation
split and records the command that reproduces it, val mIoU, big-rock IoU and wall time.

:func:`choose_recipe` adopts, per group, the variant with the best val mIoU when it beats
"current" (architectures only among those meeting the CPU speed target), and writes the result as a
YAML of overrides that ``marsam train --config`` reads on top of a profile.

Distillation choices (the teacher's opinion on unlabelled pixels, two seeds against labels alone)
need the final teacher and are measured at full size by the shipped-model pipeline
(``scripts/gpu/train_shipped_v3.sh``), not here.

``marsam experiment recipe --config gpu --data ../shared/data/ai4mars-msl --out runs/recipe``
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from segmodels.atomic import atomic_write_json, atomic_write_text
from segmodels.errors import MarsamError

from .config import TrainConfig


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    change: str
    overrides: dict = field(default_factory=dict)
    tta: bool = False          #: evaluate with test-time flips (no training change)
    same_as: str | None = None #: trains exactly like this other variant (not run twice; its row is copied)


CURRENT = {"class_weighting": "inverse", "loss": "ce", "augment_policy": "basic", "ema": 0.0,
           "student_stem_stride": 1, "student_base": 16, "class_weights": True}


def default_variants(epochs: int, lr: float) -> list[Variant]:
    return [
        Variant("plain-baseline", "baseline", "CE, no class weights, flips only",
                {"class_weights": False, "augment_policy": "flip"}),
        Variant("current", "baseline", "first release: CE + inverse weights + basic augmentation"),
        Variant("weights-none", "weighting", "no class weights", {"class_weights": False, "class_weighting": "none"}),
        Variant("weights-sqrt", "weighting", "1/sqrt(frequency) weights", {"class_weighting": "sqrt"}),
        Variant("weights-median", "weighting", "median-frequency weights (global counts)",
                {"class_weighting": "median"}, same_as="current"),
        Variant("loss-focal", "loss", "focal loss (gamma 2)", {"loss": "focal"}),
        Variant("loss-ce+dice", "loss", "CE + Dice", {"loss": "ce+dice"}),
        Variant("aug-none", "augmentation", "no augmentation", {"augment_policy": "none"}),
        Variant("aug-flip", "augmentation", "flips only (no affine warp, no brightness/contrast/noise)",
                {"augment_policy": "flip"}),
        Variant("aug-strong", "augmentation", "zoom-in crops to 1.6x, rotation 15, gamma, blur",
                {"augment_policy": "strong"}),
        Variant("ema", "ema", "EMA of weights (decay 0.995)", {"ema": 0.995}),
        Variant("epochs-x2", "schedule", f"{2 * epochs} epochs instead of {epochs}", {"epochs": 2 * epochs}),
        Variant("lr-x3", "schedule", f"peak learning rate x3 ({3 * lr:g})", {"lr": 3 * lr}),
        Variant("tta-flip", "tta", "current model, test-time horizontal flip averaging", {}, tta=True,
                same_as="current"),
        Variant("arch-stem2-b16", "architecture", "strided stem, U-Net at half resolution, base 16",
                {"student_stem_stride": 2}),
        Variant("arch-stem2-b20", "architecture", "strided stem, base 20 (1.7M params)",
                {"student_stem_stride": 2, "student_base": 20}),
    ]


def variant_config(base: TrainConfig, v: Variant) -> TrainConfig:
    o = dict(CURRENT)
    o.update(v.overrides)
    return dataclasses.replace(base, distill=False, **o).validate()


def variant_command(profile: str, base_overrides: dict, v: Variant, cfg: TrainConfig, out: Path) -> str:
    sets = dict(base_overrides)
    o = dict(CURRENT)
    o.update(v.overrides)
    sets.update(o)
    args = " ".join(f"--set {k}={json.dumps(val) if isinstance(val, str) else val}" for k, val in sets.items())
    cmd = f"marsam train student --no-distill --config {profile} --out {out / v.name} {args}"
    if v.tta:
        cmd += "  # then evaluated with test-time flips (distill.recipe.evaluate_run)"
    return cmd


def _run_one(args) -> dict:
    """Train one variant (in a worker process) and return its row."""
    cfg_dict, out, tta, threads = args
    import torch
    if threads:
        torch.set_num_threads(threads)
    from .config import TrainConfig as TC
    from .student import train_student
    cfg = TC(**cfg_dict)
    if Path(out).exists():      # a run of another setting (or an unfinished one): start clean, never resume it
        import shutil
        shutil.rmtree(out)
    t0 = time.time()
    res = train_student(cfg, out)
    seconds = time.time() - t0
    best = res.best_metrics
    row = {"val_miou": best.get("val_miou"), "seconds": round(seconds, 1),
           "iou": {k[len("val_iou_"):]: v for k, v in best.items() if k.startswith("val_iou_")},
           "best_epoch": res.summary.get("best_epoch"), "images_per_second": res.summary.get("images_per_second")}
    if tta:
        row.update(evaluate_run(Path(out) / "best.safetensors", cfg, tta=True))
    # kept beside the run, so that a rerun of the study reuses it instead of training again
    atomic_write_json(Path(out) / "row.json", {"config": cfg_dict, "tta": tta, "row": row})
    return row


def _setting(base: TrainConfig, profile: str, base_overrides: dict | None) -> dict:
    return {"profile": profile, "overrides": base_overrides or {}, "size": base.size, "train_images": base.limit,
            "val_images": base.val_limit or "all", "epochs": base.epochs, "batch_size": base.batch_size,
            "lr": base.lr, "seed": base.seed}


def _finished_rows(out_dir: Path, jobs: list, variants: list[Variant], setting: dict) -> dict[str, dict]:
    """Rows of variants already trained with the same configuration: from each run's ``row.json``,
    else from an earlier ``recipe-study.json`` in ``out_dir`` of the same setting."""
    done: dict[str, dict] = {}
    old = {}
    study = out_dir / "recipe-study.json"
    if study.is_file():
        try:
            prev = json.loads(study.read_text())
            same = {k: v for k, v in prev.get("setting", {}).items() if k != "parallel_runs"} == \
                json.loads(json.dumps(setting))
            old = {r["name"]: r for r in prev.get("rows", [])} if same else {}
        except (OSError, ValueError):
            old = {}
    keys = ("val_miou", "seconds", "iou", "best_epoch", "images_per_second")
    for (cfg_dict, out, tta, _), v in zip(jobs, variants):
        f = Path(out) / "row.json"
        try:
            saved = json.loads(f.read_text()) if f.is_file() else None
        except (OSError, ValueError):
            saved = None
        if saved and saved.get("config") == json.loads(json.dumps(cfg_dict)) and saved.get("tta") == tta:
            done[v.name] = saved["row"]
        elif v.name in old and (Path(out) / "best.safetensors").is_file() and old[v.name].get("overrides") == v.overrides:
            done[v.name] = {k: old[v.name][k] for k in keys if k in old[v.name]}
    return done


def evaluate_run(checkpoint: Path, cfg: TrainConfig, tta: bool) -> dict:
    """Val mIoU and per-class IoU of ``checkpoint`` on the config's validation split."""
    from segmodels.checkpoints import load_checkpoint
    from .calibrate import dataset_logits, logits_metrics
    from .data import open_dataset
    val = open_dataset(cfg.data, cfg.val_split, cfg.size, cfg.channels, label_spec=cfg.labels,
                       limit=cfg.val_limit, seed=cfg.seed)
    ck = load_checkpoint(checkpoint)
    logits, labels = dataset_logits(ck.model, val, cfg.device if cfg.device != "auto" else None,
                                    cfg.batch_size, tta=tta)
    m = logits_metrics(logits, labels, val.label_spec)
    return {"val_miou": m["miou"], "iou": m["iou_per_class"]}


def run_study(base: TrainConfig, out_dir: str | os.PathLike, profile: str = "cpu",
              base_overrides: dict | None = None, variants: list[Variant] | None = None,
              parallel: int = 1, threads_per_run: int | None = None, only: list[str] | None = None) -> dict:
    """Train every variant (``parallel`` at a time, each in its own process) and write the table.

    A variant already trained in ``out_dir`` with the same configuration is reused, not trained
    again (a rerun continues an interrupted study). ``only``: train just these variants now (the
    table holds them and whatever finished rows ``out_dir`` already has)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not base.val_split:
        raise MarsamError("the recipe study needs a validation split (val_split)")
    variants = variants or default_variants(base.epochs, base.lr)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise MarsamError("variant names must be unique")
    cfgs = [variant_config(base, v) for v in variants]
    jobs = [(dataclasses.asdict(c), str(out_dir / v.name), v.tta, threads_per_run) for v, c in zip(variants, cfgs)]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise MarsamError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    t0 = time.time()
    done: dict[str, dict] = _finished_rows(out_dir, jobs, variants, _setting(base, profile, base_overrides))
    todo = [(j, v) for j, v in zip(jobs, variants)
            if v.name not in done and not v.same_as and (not only or v.name in only)]

    def write() -> dict:
        # rewritten after every finished variant, so an interrupted study keeps what it measured
        rows = []
        for v in variants:          # median-frequency weights normalised to mean 1 ARE the inverse weights
            if v.same_as and not v.tta and v.same_as in done:
                done[v.name] = dict(done[v.same_as], identical_to=v.same_as)
        for v, c in zip(variants, cfgs):
            if v.name in done:
                rows.append({"name": v.name, "group": v.group, "change": v.change, "overrides": v.overrides,
                             "tta": v.tta, "command": variant_command(profile, base_overrides or {}, v, c, out_dir),
                             **done[v.name]})
        complete = all(v.name in done for v in variants)
        study = {"setting": dict(_setting(base, profile, base_overrides), parallel_runs=parallel),
                 "rows": rows, "complete": complete,
                 "wall_seconds": round(time.time() - t0, 1), "machine": _machine()}
        try:
            study["recipe"] = choose_recipe(rows)
        except MarsamError as e:
            study["recipe"] = {"overrides": {}, "why": [str(e)], "test_time_flips": False}
        atomic_write_json(out_dir / "recipe-study.json", study)
        atomic_write_text(out_dir / "recipe-study.md", to_markdown(study))
        atomic_write_text(out_dir / "recipe.yaml", yaml.safe_dump(study["recipe"]["overrides"], sort_keys=True))
        return study
    if parallel > 1:
        import multiprocessing as mp
        from concurrent.futures import as_completed
        with ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_one, j): v.name for j, v in todo}
            for f in as_completed(futs):
                done[futs[f]] = f.result()
                write()
    else:
        for j, v in todo:
            done[v.name] = _run_one(j)
            write()
    # test-time flips change no training: the model of the variant named by same_as, evaluated with flips
    for v, c in zip(variants, cfgs):
        if v.tta and v.same_as and v.same_as in done and v.name not in done and (not only or v.name in only):
            t1 = time.time()
            row = evaluate_run(out_dir / v.same_as / "best.safetensors", c, tta=True)
            done[v.name] = dict(row, seconds=round(time.time() - t1, 1), evaluated=v.same_as)
    return write()


def _machine() -> dict:
    import platform
    import torch
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


#: val mIoU differences below these are ties (one seed; the proxy's epoch-to-epoch swings are larger)
TIE = 0.005
ARCH_TIE = 0.01


def choose_recipe(rows: list[dict], tie: float = TIE, arch_tie: float = ARCH_TIE) -> dict:
    """The recipe a study's rows support, and why.

    Training changes: the single best MEASURED row, not a combination of per-group winners (each
    group was measured against "current" alone, so two winners together are an untested recipe,
    and their effects interact: in the 2026-12 study, no class weights won under the first
    release's augmentation but lost under flips only). Rows within ``tie`` of the best val mIoU
    are tied; among them the best big-rock IoU wins (the rare class the models miss). Baselines
    compete too. Architecture: the best of the strided-stem students (all meet the CPU speed
    target, the full-resolution "current" does not); within ``arch_tie`` the smaller one.
    Test-time flips: adopted when they beat the model they were evaluated on."""
    by = {r["name"]: r for r in rows}
    cur = by.get("current")
    if cur is None or cur.get("val_miou") is None:
        raise MarsamError("the study has no 'current' row to compare against")
    measured = [r for r in rows if r.get("val_miou") is not None]
    train = [r for r in measured if r["group"] not in ("tta", "architecture") and not r.get("identical_to")]
    top = max(r["val_miou"] for r in train)
    tied = [r for r in train if top - r["val_miou"] <= tie]
    best = max(tied, key=lambda r: (_rock(r) or 0.0, r["val_miou"]))
    overrides = {k: v for k, v in best["overrides"].items() if k != "epochs"}
    why = [f"training: {best['name']} (val mIoU {best['val_miou']:.4f}, big rock {(_rock(best) or 0):.4f}; "
           + (f"tied within {tie} with " + ", ".join(f"{r['name']} {r['val_miou']:.4f}/{(_rock(r) or 0):.4f}"
                                                      for r in tied if r is not best) + ": best big rock wins; "
              if len(tied) > 1 else "")
           + f"current {cur['val_miou']:.4f})"]
    if "epochs" in best["overrides"]:
        why.append("a longer proxy schedule says 'train longer', not 'train the proxy's epochs'")
    arch = [r for r in measured if r["group"] == "architecture"]
    if arch:
        a_top = max(r["val_miou"] for r in arch)
        a_best = min((r for r in arch if a_top - r["val_miou"] <= arch_tie),
                     key=lambda r: (r["overrides"].get("student_base", 16), -r["val_miou"]))
        overrides.update(a_best["overrides"])
        why.append(f"architecture: {a_best['name']} ({a_best['val_miou']:.4f}; best {a_top:.4f}, ties within "
                   f"{arch_tie} go to the smaller network)")
    tta = next((r for r in rows if r["tta"]), None)
    use_tta = bool(tta and tta.get("val_miou") is not None and tta["val_miou"] > cur["val_miou"])
    if tta and tta.get("val_miou") is not None:
        why.append(f"test-time flips: {tta['val_miou']:.4f} vs {cur['val_miou']:.4f} for the same model")
    return {"overrides": overrides, "why": why, "test_time_flips": use_tta}


def _rock(row: dict):
    iou = row.get("iou", {})
    return iou.get("big_rock", iou.get("big rock"))


def to_markdown(study: dict) -> str:
    s = study["setting"]
    partial = "" if study.get("complete", True) else " (INCOMPLETE: interrupted)"
    lines = [f"# Recipe study{partial} ({s['size']} px, {s['train_images']} training images, {s['epochs']} epochs, "
             f"val = {s['val_images']} images)", "",
             f"Machine: {study['machine']}. Sum of the rows' times: "
             f"{sum(r.get('seconds') or 0 for r in study['rows'] if not r.get('identical_to')):.0f} s; this "
             f"invocation's wall time {study['wall_seconds']} s ({s['parallel_runs']} runs at a time; rows "
             "finished by an earlier invocation are reused with their own times).", "",
             "| variant | group | change | val mIoU | big-rock IoU | time (s) |", "|---|---|---|---|---|---|"]
    for r in study["rows"]:
        rock = _rock(r)
        same = (f" (not trained: identical to `{r['identical_to']}` by construction)" if r.get("identical_to") else
                f" (`{r['evaluated']}`'s model; time = the evaluation)" if r.get("evaluated") else "")
        lines.append(f"| {r['name']} | {r['group']} | {r['change']}{same} | "
                     f"{r['val_miou']:.4f} | {'n/a' if rock is None else f'{rock:.4f}'} | {r['seconds']} |")
    lines += ["", "Chosen (`distill.recipe.choose_recipe`: the best measured row, ties within "
              f"{TIE} broken by big-rock IoU; the smallest architecture within {ARCH_TIE}):", ""]
    lines += [f"- {w}" for w in study["recipe"]["why"]]
    lines += [f"- test-time flips: {'yes' if study['recipe']['test_time_flips'] else 'no'}", "",
              "Commands (one per row):", "", "```bash"]
    lines += [r["command"] for r in study["rows"]]
    lines += ["```", ""]
    return "\n".join(lines)
