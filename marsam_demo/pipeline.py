"""``marsam demo``: the whole toolkit on data it can always reach, ending in a report.

Steps, each calling the package that owns it:

1. checks (output folder, data source, SAM checkpoint) before anything slow;
2. data: synthetic terrain made on the fly (:mod:`distill.synthetic`), a folder such as
   shared/data/ai4mars-msl, or a Hugging Face id, opened with :func:`distill.data.open_dataset`;
3. annotation: a simulated expert boxes ground-truth regions, SAM (when a checkpoint is given)
   or GrabCut turns the boxes into labels (:mod:`.annotation`), scored against the truth;
4. training on those labels: the Attention U-Net teacher, the SAM domain decoder (SAM only),
   the student distilled from them, and students on labels alone for the label-efficiency curve;
5. evaluation of every model on ground truth (:func:`distill.evaluate.evaluate`);
6. explanations (Grad-CAM) and uncertainty (entropy, calibration) for a few images;
7. report.md / report.html / report.json (:mod:`.sections`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np

from segmodels.errors import MarsamError, SplitNotFound

from .checks import DataSource, check_data, check_hub_reachable, check_output, check_sam_checkpoint, prepare_output
from . import steps
from .settings import DemoSettings

log = logging.getLogger(__name__)

VAL_SPLIT_NAMES = ("val", "validation", "test")


class _Clock:
    """Wall and CPU seconds per step, for the report and for sizing the profiles.

    CPU seconds (all threads of this process) are kept next to wall seconds because on a shared
    machine the wall time says as much about the neighbours as about the demo.
    """

    def __init__(self, say):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.steps: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.say = say
        self._name, self._start, self._cstart = None, None, None

    def step(self, name: str, message: str) -> None:
        self.stop()
        self._name, self._start, self._cstart = name, time.perf_counter(), time.process_time()
        self.say(f"[{time.perf_counter() - self.t0:6.1f}s] {message}")

    def stop(self) -> None:
        if self._name is not None:
            self.steps[self._name] = round(time.perf_counter() - self._start, 2)
            self.cpu[self._name] = round(time.process_time() - self._cstart, 2)
            self._name = None

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 2)

    @property
    def total_cpu(self) -> float:
        return round(time.process_time() - self.c0, 2)


def _open_data(src: DataSource, out: Path, s: DemoSettings, progress: bool):
    """Training and validation sets (ground truth) at the demo size; training set augmented."""
    from distill.data import open_dataset
    if src.kind == "synthetic":
        from distill.synthetic import make_terrain_dataset
        total = s.n_train + s.n_val
        root = make_terrain_dataset(out / "data", n=total, size=s.size, seed=s.seed, val_fraction=s.n_val / total)
        source = str(root)
    else:
        source = src.source
    train = open_dataset(source, "train", s.size, 1, augment=True, limit=s.n_train, seed=s.seed, progress=progress)
    val, errors = None, []
    for name in VAL_SPLIT_NAMES:
        try:
            val = open_dataset(source, name, s.size, 1, augment=False, label_spec=train.label_spec,
                               limit=s.n_val, seed=s.seed, progress=progress)
            break
        except SplitNotFound as e:
            errors.append(str(e))
    if val is None:   # one split only (no split.csv): hold out the last images of the hash order
        if len(train) < 3:
            raise MarsamError(f"{source} has no validation split and only {len(train)} images; give more images "
                              "or a split.csv with 'id,split' rows") from None
        n_val = max(1, min(s.n_val, len(train) // 3))
        keep = len(train) - n_val
        val = dataclasses.replace(train, ids=train.ids[keep:], images=train.images[keep:], masks=train.masks[keep:],
                                  augment=None, split="held-out")
        train = dataclasses.replace(train, ids=train.ids[:keep], images=train.images[:keep], masks=train.masks[:keep])
    return train, val, source


def _load_sam(checkpoint, model_type: str, sam_model, device: str):
    if sam_model is not None:
        return sam_model
    if checkpoint is None:
        return None
    from annotate.sam_loading import load_sam
    return load_sam(model_type, checkpoint, None if device == "auto" else device)


def _write_annotations(folder: Path, train, annotated: list[np.ndarray], val) -> Path:
    """The annotated training set as an images/ + masks/ + split.csv folder (val keeps ground truth).

    A scientist can retrain from it with ``marsam train teacher --data <out>/annotated``.
    """
    from segmodels import mask_folder
    rows = []
    for ds, masks, split in ((train, annotated, "train"), (val, val.masks, "val")):
        for pid, img, mask in zip(ds.ids, ds.images, masks):
            stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in pid)
            mask_folder.write_pair(folder, stem, img, mask)
            rows.append((stem, split))
    mask_folder.write_split_csv(folder, rows)
    return folder


def run_demo(out: str | os.PathLike, data: str | os.PathLike | None = None,
             sam_checkpoint: str | os.PathLike | None = None, profile: str = "cpu", overwrite: bool = False,
             settings: DemoSettings | None = None, sam_model=None, sam_model_type: str = "auto",
             progress: bool = True, threads: int | None = None) -> dict:
    """Run the demo into ``out`` and return the numbers of report.json (plus ``report`` paths).

    SAM annotates (and the domain decoder is trained) only when weights are named: by
    ``sam_checkpoint``, ``$MARSAM_SAM_CHECKPOINT`` or ``sam_model``; otherwise GrabCut annotates.
    The demo never downloads SAM by itself: 375 MB to 2.5 GB, and on a CPU the ViT encoder
    alone would take longer than the whole GrabCut run.

    ``settings`` overrides the profile's sizes (tests pass tiny ones); ``sam_model`` passes an
    already built :class:`annotate.sam_loading.SamModel` (tests use annotate's tiny random SAM)
    instead of a checkpoint path. ``threads``: torch CPU threads (default: the profile's).
    """
    say = print if progress else log.info
    s = settings.validate() if settings is not None else DemoSettings.for_profile(profile)
    if settings is not None and profile != s.profile:
        s = dataclasses.replace(s, profile=profile).validate()
    if threads is not None:
        if threads < 1:
            raise MarsamError(f"--threads must be at least 1, got {threads}")
        s = dataclasses.replace(s, threads=int(threads))
    # 1. checks: nothing slow has happened yet, nothing is written until all pass
    src = check_data(data)
    out = check_output(out, overwrite, src)
    if sam_checkpoint is None and sam_model is None and os.environ.get("MARSAM_SAM_CHECKPOINT"):
        sam_checkpoint = os.environ["MARSAM_SAM_CHECKPOINT"]   # the user's standing choice of SAM weights
    model_type = check_sam_checkpoint(sam_checkpoint, sam_model_type) if sam_model is None else None
    if src.kind == "hub":
        check_hub_reachable(src.source)
    clock = _Clock(say)
    clock.step("setup", f"marsam demo -> {out} ({s.profile} profile, {s.size} px, {s.n_train} training and "
                        f"{s.n_val} validation images, data: {src.describe()})")
    sam = _load_sam(sam_checkpoint, model_type, sam_model, s.device)
    if s.threads:
        import torch
        torch.set_num_threads(int(s.threads))
    if src.kind != "synthetic":   # a wrong folder or an unknown hub id fails here, before the output exists
        clock.step("data", f"reading {s.n_train} training and {s.n_val} validation images from {src.source}")
        train, val, source = _open_data(src, out, s, progress)
        prepare_output(out)
    else:
        prepare_output(out)
        clock.step("data", "generating synthetic terrain")
        train, val, source = _open_data(src, out, s, progress)
    results: dict = {"data": {"kind": src.kind, "source": src.source or source, "description": src.describe(),
                              "train_images": len(train), "val_images": len(val), "size": s.size,
                              "skipped": [list(x) for x in train.skipped + val.skipped]}}

    # 3. the simulated expert annotates the training images
    from annotate.embeddings import EmbeddingCache
    from annotate.engines import GrabCutEngine, SamEngine
    from .annotation import annotate_images
    cache = EmbeddingCache() if sam is not None else None   # embedded once, reused by the decoder
    engine = SamEngine(sam, cache=cache) if sam is not None else GrabCutEngine()
    clock.step("annotation", f"annotating {len(train)} images with {engine.name} from simulated expert boxes")
    ann = annotate_images(engine, train.images, train.masks, train.ids, train.label_spec, s.jitter, s.seed,
                          s.clicks, progress)
    results["annotation"] = {"engine": engine.name, "miou": ann.miou, "iou_per_class": ann.iou_per_class,
                             "coverage": ann.coverage, "prompts": ann.prompts, "images": ann.images,
                             "seconds": ann.seconds, "skipped": [list(x) for x in ann.skipped],
                             "jitter": s.jitter, "clicks": s.clicks,
                             "sam_model_type": getattr(sam, "model_type", None)}
    annotated = dataclasses.replace(train, masks=ann.label_maps)
    ann_dir = _write_annotations(out / "annotated", train, ann.label_maps, val)

    # 4. training on the annotations
    trained = steps.train_models(out, s, str(ann_dir), annotated, val, sam, cache, clock, progress)
    results["training"] = {k: {"epochs": r.epochs_run, "stopped": r.stopped, "best_epoch": r.summary.get("best_epoch"),
                               "best_val_miou": r.summary.get("best_val_miou"), "seconds": r.summary.get("seconds"),
                               "checkpoint": str(r.best.relative_to(out))} for k, r in trained.items()}
    results["label_efficiency"] = steps.label_efficiency(out, s, str(ann_dir), clock, progress)

    # 5. evaluation on ground truth; 6. explanations and uncertainty
    clock.step("evaluation", "evaluating every model on the ground-truth validation images")
    results["evaluation"] = steps.evaluate_models(trained, val, sam, s, progress)
    clock.step("speed", f"teacher and student side by side ({s.speed_rounds} interleaved rounds)")
    results["speed"] = steps.speed(trained, s)
    clock.step("explanations", "Grad-CAM, entropy and calibration")
    visuals = steps.explain(trained, train, ann.label_maps, val, sam, cache, s)

    # 7. the report
    clock.stop()
    say(f"[{clock.total:6.1f}s] writing the report")
    from .sections import build_report
    results["settings"] = s.to_dict()
    results["timings"] = dict(clock.steps)
    results["cpu_timings"] = dict(clock.cpu)
    paths, numbers = build_report(out, results, visuals, trained, clock)
    numbers["report"] = {k: str(v) for k, v in paths.items()}
    say(f"[{clock.total:6.1f}s] report: {paths['html']} (also report.md, report.json)")
    return numbers
