"""Evaluation: accuracy over a whole split, calibration, cost and speed, plus the reports.

``evaluate`` runs a model over a dataset and returns one dict (the JSON report): mIoU,
per-class IoU/precision/recall/F1, micro and macro P/R/F1, pixel accuracy, the confusion matrix,
expected calibration error, parameters, GFLOPs at the evaluated input size and images per second
on the current device. ``write_evaluation`` writes it as JSON, a markdown table and a PNG grid
(image / ground truth / prediction, coloured by the label spec).
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segmodels.atomic import atomic_path, atomic_write_json, atomic_write_text
from segmodels.device import machine_info, pick_device
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec
from segmodels.networks import DEFAULT_INPUT
from segmodels.predictors import check_label_spec, load_predictor
from segmodels.stats import count_params, gflops

from .data import SegmentationDataset
from .metrics import SegmentationMetrics, confusion_to_markdown


@torch.no_grad()
def measure_speed(model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                  min_seconds: float = 2.0, min_runs: int = 5, warmup: int = 2) -> float:
    """Images per second for batch-1 inference (what a user clicking one image waits for)."""
    model.eval()
    x = torch.zeros(input_shape, device=device)
    for _ in range(warmup):
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    runs, t0 = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - t0 < min_seconds:
        model(x)
        runs += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return runs * input_shape[0] / (time.perf_counter() - t0)


@torch.no_grad()
@torch.no_grad()
def _rate(model: nn.Module, x: torch.Tensor, seconds: float) -> float:
    model(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        model(x)
        n += 1
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def relative_speed(reference: nn.Module, model: nn.Module, input_shape: tuple[int, ...],
                   device: torch.device | str = "cpu", rounds: int = 5, seconds: float = 1.0) -> dict:
    """How many times faster ``model`` runs than ``reference`` (batch-1 inference), measured
    side by side: ``rounds`` rounds, each timing the reference and then the model for
    ``seconds``; the ratio is the median of the per-round ratios. On a shared machine a job that
    starts or stops halfway changes both sides of a round alike, where timing one model after the
    other would credit the change to one of them (a demo once reported 82x for a 3x model)."""
    dev = torch.device(device)
    x = torch.zeros(input_shape, device=dev)
    was = reference.training, model.training
    reference.eval()
    model.eval()
    ref_rates, rates = [], []
    try:
        for _ in range(max(1, int(rounds))):
            ref_rates.append(_rate(reference, x, seconds))
            rates.append(_rate(model, x, seconds))
    finally:
        reference.train(was[0])
        model.train(was[1])
    ratios = [m / r for m, r in zip(rates, ref_rates)]
    return {"ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3), "reference_images_per_second": round(statistics.median(ref_rates), 3),
            "images_per_second": round(statistics.median(rates), 3), "rounds": len(ratios),
            "seconds_per_model_per_round": seconds, "input_shape": list(input_shape),
            "method": "interleaved rounds, median of per-round ratios"}


def evaluate(checkpoint_or_model, dataset: SegmentationDataset, batch_size: int = 8,
             device: str | torch.device | None = None, speed: bool = True, sam_model=None,
             grid_samples: int = 6, progress: bool = False, worst: int = 0) -> dict:
    """Metrics of a model (anything ``segmodels.predictors.load_predictor`` takes: checkpoint path,
    pretrained name, Checkpoint, module, Predictor) on ``dataset``; see the module doc.
    ``sam_model`` feeds a predictor that reads SAM embeddings (the domain decoder). ``worst``: the
    images with the lowest accuracy over their labelled pixels are listed (``result["worst"]``) and
    drawn by :func:`write_evaluation` (what the model is bad at)."""
    dev = pick_device(device)
    predictor = load_predictor(checkpoint_or_model, sam=sam_model)
    check_label_spec(predictor, dataset.label_spec, where="the dataset is labelled with",
                     fix="evaluate on data with the model's label spec")
    name = predictor.model_name
    training = predictor.checkpoint.training if predictor.checkpoint is not None else {}
    spec = dataset.label_spec
    metrics = SegmentationMetrics(spec.num_classes, spec.ignore_index)
    samples = []
    worst_heap: list = []          # (accuracy, index, prediction) of the worst images so far
    model = predictor.module
    # a torch network on the image is evaluated in batches at the dataset's size; any other
    # predictor (the SAM decoder, which embeds each image at its own size) image by image
    batched = model is not None and predictor.normalization.reads_pixels
    t0 = time.perf_counter()
    if batched:
        model = model.to(dev).eval()
        in_ch = predictor.normalization.in_channels
        if in_ch != dataset.channels:
            raise MarsamError(f"the model takes {in_ch}-channel input but the dataset was opened with "
                              f"{dataset.channels}; open it with channels={in_ch}")
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        it = loader
        if progress:
            from tqdm import tqdm
            it = tqdm(loader, desc="evaluating", unit="batch", leave=False)
        for batch in it:
            x = predictor.normalization.renormalize(batch["x"], dataset.normalization).to(dev)
            logits = model(x).float().cpu()
            metrics.update(logits, batch["y"])
            pred = logits.argmax(1).numpy()
            y = batch["y"].numpy()
            for j, idx in enumerate(batch["index"].tolist()):
                if len(samples) < grid_samples:
                    samples.append((dataset.image_float(idx), dataset.masks[idx], pred[j]))
                if worst:
                    _keep_worst(worst_heap, worst, y[j], pred[j], idx, spec.ignore_index)
    else:
        if model is not None:
            model.to(dev)
        it = range(len(dataset))
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="evaluating", unit="img", leave=False)
        for i in it:
            probs = torch.from_numpy(predictor.probabilities(dataset.images[i], device=dev))[None]
            # log-probabilities are logits up to a per-pixel constant: the same softmax, argmax and ECE
            logits = torch.log(probs.clamp_min(torch.finfo(torch.float32).tiny))
            y = torch.from_numpy(dataset.masks[i].astype(np.int64))[None]
            metrics.update(logits, y)
            if len(samples) < grid_samples:
                samples.append((dataset.image_float(i), dataset.masks[i], probs[0].argmax(0).numpy()))
    seconds = time.perf_counter() - t0
    result = metrics.compute(spec.classes)
    size = dataset.size or dataset.masks[0].shape[0]
    shape = (1, dataset.channels, size, size) if batched else DEFAULT_INPUT.get(name, (1, dataset.channels, size, size))
    result.update({
        "model": name, "checkpoint": str(checkpoint_or_model) if isinstance(checkpoint_or_model, (str, os.PathLike))
        else None, "label_spec": spec.name, "classes": list(spec.classes),
        "data": dataset.source, "split": dataset.split, "images": len(dataset),
        "skipped": [list(s) for s in dataset.skipped], "input_size": size,
        "params": count_params(model) if model is not None else None,
        "gflops": round(gflops(model.cpu(), shape), 4) if model is not None else None,
        "evaluation_seconds": round(seconds, 2),
        "images_per_second_batch": round(len(dataset) / seconds, 3) if seconds > 0 else None,
        "machine": machine_info(dev), "training": training,
    })
    if speed and batched:
        model.to(dev)
        result["images_per_second"] = round(measure_speed(model, shape, dev), 3)
    elif not batched:
        result["images_per_second"] = result["images_per_second_batch"]   # includes SAM's encoder
    worst_sorted = sorted(worst_heap, key=lambda t: -t[0])      # lowest accuracy first
    result["worst"] = [{"id": dataset.ids[i], "pixel_accuracy": round(-k, 4)} for k, i, _ in worst_sorted]
    result["_samples"] = samples
    result["_worst_samples"] = [(dataset.image_float(i), dataset.masks[i], p) for _, i, p in worst_sorted]
    return result


def _keep_worst(heap: list, n: int, y: np.ndarray, pred: np.ndarray, idx: int, ignore: int) -> None:
    """Keep the ``n`` images of lowest labelled-pixel accuracy: a heap keyed by -accuracy, whose
    root is the best-scoring image kept (the one to evict)."""
    import heapq
    lab = y != ignore
    if not lab.any():
        return
    key = -float((pred[lab] == y[lab]).mean())
    if len(heap) < n:
        heapq.heappush(heap, (key, idx, pred.astype(np.uint8)))
    elif key > heap[0][0]:
        heapq.heapreplace(heap, (key, idx, pred.astype(np.uint8)))


def to_markdown(result: dict) -> str:
    names = result["classes"]
    lines = [f"# Evaluation of {result['model']} on {result['data']} ({result['split']}, {result['images']} images)", "",
             "| metric | value |", "|---|---|"]
    for k in ("miou", "pixel_accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "ece"):
        lines.append(f"| {k} | {result[k]:.4f} |")
    lines += [f"| params | {result['params']:,} |", f"| GFLOPs ({result['input_size']} px) | {result['gflops']:.3f} |",
              f"| images/s ({result['machine']['device']}, batch 1) | "
              + (f"{result['images_per_second']:.2f} |" if result.get("images_per_second") else "not measured |"),
              "", "| class | IoU | precision | recall | F1 |", "|---|---|---|---|---|"]

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"
    for n in names:
        lines.append(f"| {n} | {f(result['iou_per_class'][n])} | {f(result['precision_per_class'][n])} | "
                     f"{f(result['recall_per_class'][n])} | {f(result['f1_per_class'][n])} |")
    lines += ["", "Confusion matrix (pixels):", "", confusion_to_markdown(result["confusion_matrix"], names), ""]
    if result.get("worst"):
        lines.append("Lowest pixel accuracy (labelled pixels) of all images: " +
                     ", ".join(f"{w['id']} {w['pixel_accuracy']:.3f}" for w in result["worst"]))
        lines.append("")
    if result.get("skipped"):
        lines.append(f"{len(result['skipped'])} pairs skipped: " +
                     "; ".join(f"{i} ({w})" for i, w in result["skipped"][:10]))
    return "\n".join(lines) + "\n"


def save_grid(path: str | os.PathLike, samples, label_spec: LabelSpec) -> None:
    """PNG grid: one row per sample, columns image / ground truth / prediction."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    n = max(1, len(samples))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n + 0.6), squeeze=False)
    for r, (img, gt, pred) in enumerate(samples):
        for c, (arr, title) in enumerate(((img, "image"), (label_spec.colorize(gt), "ground truth"),
                                          (label_spec.colorize(pred.astype(np.uint8)), "prediction"))):
            ax = axes[r, c]
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1 if arr.ndim == 2 else None)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title)
    handles = [Patch(color=np.array(c) / 255, label=n) for n, c in zip(label_spec.classes, label_spec.colors)]
    handles.append(Patch(color="black", label="unlabelled"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def write_evaluation(result: dict, json_path: str | os.PathLike, label_spec: LabelSpec) -> dict:
    """JSON at ``json_path``, markdown and PNG grid next to it (same stem), and ``STEM-worst.png``
    with the worst images when there are any; returns the paths."""
    json_path = Path(json_path)
    samples = result.pop("_samples", [])
    worst = result.pop("_worst_samples", [])
    atomic_write_json(json_path, result)
    md, png = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    atomic_write_text(md, to_markdown(result))
    save_grid(png, samples, label_spec)
    paths = {"json": str(json_path), "markdown": str(md), "grid": str(png)}
    if worst:
        wpng = json_path.with_name(json_path.stem + "-worst.png")
        save_grid(wpng, worst, label_spec)
        paths["worst"] = str(wpng)
    return paths
