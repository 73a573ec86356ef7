"""The demo report: its figures, tables and the numbers of report.json.

Everything shown is measured in this run; the text around the numbers says what was run, on
which data and machine, so a reader can tell a demo-sized result from a paper-sized one.
"""
from __future__ import annotations

import math
from pathlib import Path

from .report import (Figure, Section, Table, label_efficiency, overlay_grid, prediction_grid,
                            reliability_diagram, training_curves, write_report)

from .steps import MODEL_TITLES


LABEL_EFFICIENCY_CAVEAT = ("one training run per N (one seed): without repeated runs the differences between "
                           "points cannot be told from run-to-run noise; read them as noise, not a trend")


def _r(v, nd=4):
    return None if v is None or v != v else round(float(v), nd)


def _numbers(results: dict) -> dict:
    ev = results["evaluation"]
    ann = results["annotation"]
    t_ips, s_ips = ev["teacher"].get("images_per_second"), ev["student"].get("images_per_second")
    sp = results.get("speed")
    if sp:   # measured side by side: interleaved rounds, median of the per-round ratios
        t_ips, s_ips = sp["reference_images_per_second"], sp["images_per_second"]
    out = {
        "engine": ann["engine"],
        "annotation_iou": _r(ann["miou"]),
        "annotation_iou_per_class": {k: _r(v) for k, v in ann["iou_per_class"].items()},
        "annotation_coverage": _r(ann["coverage"]),
        "teacher_miou": _r(ev["teacher"]["miou"]),
        "student_miou": _r(ev["student"]["miou"]),
        "student_labels_only_miou": _r(ev["student_labels_only"]["miou"]),
        "decoder_miou": _r(ev["decoder"]["miou"]) if "decoder" in ev else None,
        "teacher_params": ev["teacher"]["params"],
        "student_params": ev["student"]["params"],
        "teacher_images_per_second": t_ips,
        "student_images_per_second": s_ips,
        "student_speedup_vs_teacher": (sp["ratio_median"] if sp else
                                       _r(s_ips / t_ips, 3) if t_ips and s_ips else None),
        "student_speedup_range": [sp["ratio_min"], sp["ratio_max"]] if sp else None,
        "speed_rounds": sp["rounds"] if sp else None,
        "speed_method": sp["method"] if sp else "one after the other",
        "label_efficiency": results["label_efficiency"],
        "data": results["data"],
        "training": results["training"],
        "models": {name: {k: r.get(k) for k in ("miou", "pixel_accuracy", "macro_f1", "ece", "iou_per_class",
                                                "params", "gflops", "images_per_second", "input_size", "images")}
                   for name, r in ev.items()},
        "annotation": ann,
        "settings": results["settings"],
        "timings_seconds": results["timings"],
        "cpu_seconds": results["cpu_timings"],
        "machine": ev["student"].get("machine"),
    }
    return out


def _figures(out: Path, results: dict, visuals: dict, trained: dict) -> dict[str, Path]:
    fig = out / "figures"
    spec = visuals["label_spec"]
    paths = {}
    histories = {}
    for name, r in trained.items():
        h = r.history
        histories[MODEL_TITLES[name]] = {"train loss": [row["train_loss"] for row in h],
                                         "val mIoU": [row.get("val_miou", float("nan")) for row in h]}
    paths["curves"] = training_curves(histories, fig / "training_curves.png")
    engine = results["annotation"]["engine"]
    paths["annotation"] = prediction_grid(visuals["annotation_images"], visuals["annotation_truth"],
                                          {f"annotation ({engine})": visuals["annotations"]}, spec,
                                          fig / "annotation.png")
    paths["predictions"] = prediction_grid(visuals["grid_images"], visuals["grid_truth"],
                                           {MODEL_TITLES[k].split(" (")[0] + ("" if k != "student_labels_only" else " (labels only)"): v
                                            for k, v in visuals["grid_predictions"].items()},
                                           spec, fig / "predictions.png",
                                           titles=[i[:18] for i in visuals["val_ids"]])
    paths["gradcam"] = overlay_grid(visuals["explain_images"],
                                    {f"Grad-CAM {name}": visuals["gradcam"][name] for name in ("teacher", "student")},
                                    fig / "gradcam.png", titles=visuals["explain_titles"], per_map=True)
    paths["uncertainty"] = overlay_grid(visuals["explain_images"],
                                        {f"entropy {name}": visuals["entropy"][name] for name in ("teacher", "student")},
                                        fig / "uncertainty.png", cmap="magma", alpha=0.6,
                                        titles=visuals["explain_ids"], vmax=math.log(spec.num_classes),
                                        bar_label=f"predictive entropy (nats, 0 to log {spec.num_classes})")
    curves = {}
    for name, bins in visuals["calibration"].items():
        filled = bins.count > 0
        # the legend shows the evaluation's ECE, the number in the metrics table (same bins)
        ev_ece = results["evaluation"].get(name, {}).get("ece")
        curves[MODEL_TITLES[name]] = {"confidence": bins.mean_confidence()[filled],
                                      "accuracy": bins.accuracy()[filled],
                                      "ece": ev_ece if ev_ece is not None else bins.ece()}
    paths["reliability"] = reliability_diagram(curves, fig / "reliability.png")
    le = results["label_efficiency"]
    if le:
        paths["label_efficiency"] = label_efficiency(
            {"student (labels only)": [(r["n"], r["miou"]) for r in le if r["miou"] is not None]},
            fig / "label_efficiency.png", metric="val mIoU (ground truth)", note=LABEL_EFFICIENCY_CAVEAT)
    return paths


def build_report(out: Path, results: dict, visuals: dict, trained: dict, clock) -> tuple[dict, dict]:
    numbers = _numbers(results)
    figs = _figures(out, results, visuals, trained)
    ev = results["evaluation"]
    ann = results["annotation"]
    data = results["data"]
    s = results["settings"]
    machine = numbers["machine"] or {}
    classes = list(visuals["label_spec"].classes)
    engine_text = ("SAM (" + str(ann.get("sam_model_type")) + ")" if ann["engine"] == "sam"
                   else "GrabCut (no SAM checkpoint was given; pass --sam-checkpoint or set MARSAM_SAM_CHECKPOINT to annotate with SAM and train the domain decoder)")
    intro = [
        f"Data: {data['description']}; {data['train_images']} training and {data['val_images']} validation "
        f"images at {data['size']} px. Annotation engine: **{engine_text}**. Profile `{s['profile']}`; "
        f"machine: {machine.get('processor', '?')}, {machine.get('cpu_count', '?')} CPUs, torch "
        f"{machine.get('torch', '?')} threads {machine.get('torch_threads', '?')}, device {machine.get('device', '?')}.",
        f"Every number below was measured in this run ({sum(results['timings'].values()):.0f} s of work). "
        "The models are demo-sized (few images, few epochs), so their scores show the pipeline working, "
        "not the accuracy the paper reports.",
    ]
    sections = []
    ann_rows = [[ann["engine"], ann["images"], ann["prompts"], ann["miou"], ann["coverage"],
                 *[ann["iou_per_class"].get(c) for c in classes]]]
    sections.append(Section(
        "1. Annotation by a simulated expert",
        paragraphs=[f"For every ground-truth region of at least a few dozen pixels the simulated expert draws its box "
                    f"(edges jittered by {ann['jitter']:.0%} of the box side)"
                    + (", clicks once inside it and adds negative clicks on other classes' regions inside the box"
                       if ann["clicks"] else "")
                    + f". {engine_text.split(' (')[0]} turns the prompts into masks; pixels no mask covers stay "
                    "unlabelled and are ignored in training. The IoU is against the ground truth of the same images."],
        tables=[Table("Annotation quality", ["engine", "images", "prompts", "mIoU", "coverage",
                                             *[f"IoU {c}" for c in classes]], ann_rows,
                      note="coverage: share of ground-truth-labelled pixels that received an annotation")],
        figures=[Figure("Ground truth and annotation", figs["annotation"],
                        "training images, their ground truth and the labels the prompt engine made from the boxes")]))
    sections.append(Section(
        "2. Training", paragraphs=["All models train on the annotations above and are validated on ground truth. "
                                   "The student is distilled (alpha CE + (1 - alpha) T^2 KL) from the teacher"
                                   + (" and the SAM domain decoder" if "decoder" in ev else "")
                                   + "; the labels-only student is the same network without the teacher."],
        figures=[Figure("Training curves", figs["curves"], "training loss and validation mIoU per epoch")]))
    metric_rows, cost_rows = [], []
    sp = results.get("speed")
    t_ips = ev["teacher"].get("images_per_second")
    for name, r in ev.items():
        metric_rows.append([MODEL_TITLES[name], r["miou"], r["pixel_accuracy"], r["macro_f1"], r["ece"],
                            *[r["iou_per_class"].get(c) for c in classes]])
        ips = r.get("images_per_second")
        ratio = (ips / t_ips) if ips and t_ips and name != "decoder" else None
        if sp and name == "teacher":
            ips, ratio = sp["reference_images_per_second"], 1.0
        elif sp and name == "student":
            ips, ratio = sp["images_per_second"], sp["ratio_median"]
        cost_rows.append([MODEL_TITLES[name], r["params"], r["gflops"], ips, ratio])
    speed_note = (f"teacher and student timed side by side on {machine.get('device', '?')}: {sp['rounds']} "
                  f"interleaved rounds of {sp['seconds_per_model_per_round']} s each, the median of the per-round "
                  f"ratios (range {sp['ratio_min']:.2f} to {sp['ratio_max']:.2f}); other rows timed one after the other"
                  if sp else f"images/s measured one after the other in this run on {machine.get('device', '?')}")
    sections.append(Section(
        "3. Evaluation on ground truth",
        tables=[Table("Metrics (validation split)", ["model", "mIoU", "pixel acc.", "macro F1", "ECE",
                                                     *[f"IoU {c}" for c in classes]], metric_rows),
                Table("Size and speed", ["model", "params", f"GFLOPs ({data['size']} px)", "images/s (batch 1)",
                                         "speed-up vs teacher"], cost_rows,
                      note=speed_note
                           + ("; the decoder's figure includes SAM's image encoder" if "decoder" in ev else ""))],
        figures=[Figure("Predictions", figs["predictions"], "validation images, ground truth and each model's prediction")]))
    le = results["label_efficiency"]
    if le:
        sections.append(Section(
            "4. Label efficiency",
            paragraphs=["The student trained on labels alone from the first N annotated images (nested sets). "
                        f"Each point is {LABEL_EFFICIENCY_CAVEAT}."],
            tables=[Table("Validation mIoU against N", ["N", "mIoU", "macro F1", "pixel acc.", "epochs"],
                          [[r["n"], r["miou"], r["macro_f1"], r["pixel_accuracy"], r["epochs"]] for r in le])],
            figures=[Figure("Label-efficiency curve", figs["label_efficiency"], "")]))
    sections.append(Section(
        "5. Explanations and uncertainty",
        paragraphs=["Grad-CAM (captum, on the last decoder block) explains the summed logit of one class over the "
                    "pixels predicted as that class; the class per image is named on the left. Predictive entropy "
                    f"(nats, at most ln {len(classes)} = {math.log(len(classes)):.2f}) marks where a model "
                    "is unsure. The reliability diagram compares confidence with accuracy over all validation pixels.",
                    "Mean entropy over the validation images: " + ", ".join(
                        f"{MODEL_TITLES[k]} {v:.3f}" for k, v in visuals["mean_entropy"].items()) + "."],
        figures=[Figure("Grad-CAM", figs["gradcam"], ""),
                 Figure("Uncertainty (predictive entropy)", figs["uncertainty"], ""),
                 Figure("Reliability diagram", figs["reliability"], "")]))
    timing_rows = [[k, v, results["cpu_timings"].get(k)] for k, v in results["timings"].items()]
    sections.append(Section("6. Run", tables=[Table("Seconds per step", ["step", "wall seconds", "CPU seconds"],
                                                    timing_rows, note="CPU seconds: all threads of the process; "
                                                    "on a shared machine wall time also measures the neighbours")],
                            paragraphs=[f"Settings: `{s}`", "Checkpoints (safetensors with JSON metadata) are in "
                                        "`models/`, the annotated training set in `annotated/` (retrain with "
                                        "`marsam train teacher --data annotated`)."]))
    numbers["timings_seconds"]["total"] = clock.total
    numbers["cpu_seconds"]["total"] = clock.total_cpu
    paths = write_report(out, "marsam demo report", sections, numbers, intro=intro)
    return paths, numbers
