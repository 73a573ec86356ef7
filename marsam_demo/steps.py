"""The demo's model steps: training, the label-efficiency curve, evaluation, explanations.

Each step calls the function that owns the work (distill's trainers and evaluation, segmodels'
inference, Grad-CAM and uncertainty); this module only chooses what to run and collects what
the report shows.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .settings import DemoSettings

log = logging.getLogger(__name__)

MODEL_TITLES = {"teacher": "teacher (Attention U-Net)", "decoder": "SAM domain decoder",
                "student": "student (U-Net, distilled)", "student_labels_only": "student (U-Net, labels only)"}


def train_models(out: Path, s: DemoSettings, data: str, annotated, val, sam, cache, clock, progress: bool) -> dict:
    """Teacher, decoder (with SAM), distilled student and the same student on labels alone."""
    from distill.student import train_student
    from distill.teacher import train_teacher
    trained = {}
    clock.step("teacher", f"training the teacher ({s.teacher_epochs} epochs, base {s.teacher_base})")
    trained["teacher"] = train_teacher(s.train_config(data, epochs=s.teacher_epochs), out / "models" / "teacher",
                                       train_data=annotated, val_data=val, show_progress=progress)
    distill_from = "teacher"
    if sam is not None:
        from distill.decoder import train_decoder
        clock.step("decoder", f"training the SAM domain decoder ({s.decoder_epochs} epochs)")
        trained["decoder"] = train_decoder(s.train_config(data, epochs=s.decoder_epochs), out / "models" / "decoder",
                                           sam_model=sam, train_data=annotated, val_data=val, cache=cache,
                                           show_progress=progress)
        distill_from = "average"
    clock.step("student", f"distilling the student from the {distill_from if distill_from != 'average' else 'teacher and decoder'}"
                          f" ({s.student_epochs} epochs)")
    cfg = s.train_config(data, epochs=s.student_epochs, distill=True, distill_from=distill_from)
    trained["student"] = train_student(cfg, out / "models" / "student", teacher=trained["teacher"].best,
                                       decoder=trained["decoder"].best if "decoder" in trained else None,
                                       sam_model=sam, train_data=annotated, val_data=val, show_progress=progress)
    clock.step("baseline", f"training the student on labels alone ({s.student_epochs} epochs)")
    cfg = s.train_config(data, epochs=s.student_epochs, distill=False)
    trained["student_labels_only"] = train_student(cfg, out / "models" / "student-labels-only", train_data=annotated,
                                                   val_data=val, show_progress=progress)
    return trained


def label_efficiency(out: Path, s: DemoSettings, data: str, clock, progress: bool) -> list[dict]:
    """Student val mIoU against the number N of annotated training images (labels alone).

    distill's experiment reads the annotated folder the demo wrote, so the N sets are nested
    (its fixed hash order): each point adds images to the previous one, as an expert labelling
    more would.
    """
    from distill.experiments import label_efficiency as run_experiment
    ns = list(s.label_efficiency_ns)
    if not ns:
        return []
    clock.step("label_efficiency", f"label-efficiency curve: student on N = {', '.join(map(str, ns))} images "
                                   f"({s.label_efficiency_epochs} epochs each)")
    cfg = s.train_config(data, epochs=s.label_efficiency_epochs, distill=False, train_split="train",
                        val_split="val")
    table = run_experiment(cfg, out / "models" / "label-efficiency", model="student", ns=ns,
                           show_progress=progress)
    return [{k: r.get(k) for k in ("n", "miou", "pixel_accuracy", "macro_f1", "epochs")} for r in table["rows"]]


def evaluate_models(trained: dict, val, sam, s: DemoSettings, progress: bool) -> dict:
    """distill's evaluation of every model's best checkpoint on the ground-truth validation set."""
    from distill.evaluate import evaluate
    results = {}
    for name, r in trained.items():
        res = evaluate(r.best, val, batch_size=s.batch_size, device=None if s.device == "auto" else s.device,
                       speed=True, sam_model=sam, grid_samples=0, progress=progress)
        res.pop("_samples", None)
        results[name] = res
    return results


def speed(trained: dict, s: DemoSettings, channels: int = 1) -> dict | None:
    """The student's speed relative to the teacher's, measured side by side (interleaved rounds,
    median of the per-round ratios: :func:`distill.evaluate.relative_speed`)."""
    from distill.evaluate import relative_speed
    from segmodels.checkpoints import load_checkpoint
    if "teacher" not in trained or "student" not in trained:
        return None
    teacher, student = (load_checkpoint(trained[k].best).model for k in ("teacher", "student"))
    dev = "cpu" if s.device in ("auto", "cpu") else s.device
    return relative_speed(teacher, student, (1, channels, s.size, s.size), dev, rounds=s.speed_rounds,
                          seconds=s.speed_seconds)


def _target_class(gt: np.ndarray, spec) -> int:
    """The class Grad-CAM explains in one image: the largest region that is not the background soil."""
    counts = np.bincount(gt[gt != spec.ignore_index].ravel(), minlength=spec.num_classes)[: spec.num_classes]
    if counts.sum() == 0:
        return 0
    others = counts.copy()
    others[0] = 0
    return int(np.argmax(others)) if others.max() > 0 else int(np.argmax(counts))


def explain(trained: dict, train, annotations, val, sam, cache, s: DemoSettings) -> dict:
    """Predictions, Grad-CAM, entropy and calibration bins for the report's figures."""
    from segmodels.explain import gradcam
    from segmodels.predictors import load_predictor
    from segmodels.uncertainty import CalibrationBins, predictive_entropy
    spec = val.label_spec
    dev = None if s.device == "auto" else s.device
    ckpts = {name: load_predictor(r.best, sam=sam, cache=cache) for name, r in trained.items()}
    probs: dict[str, list[np.ndarray]] = {name: [] for name in ckpts}
    calibration = {}
    for name, ck in ckpts.items():
        bins = CalibrationBins(n_bins=15, ignore_index=spec.ignore_index)   # the bins of the table's ECE
        for img, gt in zip(val.images, val.masks):
            p = ck.probabilities(img, device=dev)
            probs[name].append(p)
            bins.update(p, gt)
        calibration[name] = bins
    n_grid = min(s.grid_images, len(val))
    n_cam = min(s.explain_images, len(val))
    targets = [_target_class(val.masks[i], spec) for i in range(n_cam)]
    cams = {}
    for name in ("teacher", "student"):
        cams[name] = [gradcam(ckpts[name], val.images[i], targets[i], device=dev).map for i in range(n_cam)]
    entropy = {name: [predictive_entropy(probs[name][i]) for i in range(n_cam)] for name in ("teacher", "student")}
    n_ann = min(s.grid_images, len(train))
    return {
        "label_spec": spec, "val_ids": list(val.ids), "grid_images": [val.images[i] for i in range(n_grid)],
        "grid_truth": [val.masks[i] for i in range(n_grid)],
        "grid_predictions": {name: [probs[name][i].argmax(0).astype(np.uint8) for i in range(n_grid)]
                             for name in ckpts},
        "annotation_images": [train.images[i] for i in range(n_ann)],
        "annotation_truth": [train.masks[i] for i in range(n_ann)],
        "annotations": [annotations[i] for i in range(n_ann)],
        "explain_images": [val.images[i] for i in range(n_cam)],
        "explain_titles": [f"{val.ids[i][:18]}\nclass: {spec.classes[t]}" for i, t in enumerate(targets)],
        "explain_ids": [val.ids[i][:18] for i in range(n_cam)],      # entropy rows: no class
        "explain_targets": [spec.classes[t] for t in targets],
        "gradcam": cams, "entropy": entropy, "calibration": calibration,
        "mean_entropy": {name: float(np.mean([predictive_entropy(p).mean() for p in probs[name]])) for name in probs},
    }
