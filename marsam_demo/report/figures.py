"""Report figures as PNG files, drawn with Matplotlib's object API.

The figures use ``matplotlib.figure.Figure`` directly instead of ``pyplot``: no global backend
is switched and no GUI window can open, so the same code runs in the CLI, in tests and inside
napari (which owns its own Qt event loop). Every PNG is written atomically.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from segmodels.atomic import atomic_write_bytes
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

DPI = 100


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _as_display(image: np.ndarray) -> np.ndarray:
    from segmodels.images import to_unit_float
    return to_unit_float(image)


def training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], path) -> Path:
    """One panel per metric (loss, val mIoU, ...), one line per model, against the epoch."""
    metrics: list[str] = []
    for hist in histories.values():
        for key, values in hist.items():
            if key not in metrics and len(values) > 0:
                metrics.append(key)
    if not metrics:
        raise MarsamError("no training history to plot: every model's history is empty")
    fig = _figure(4.2 * len(metrics), 3.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for name, hist in histories.items():
            values = [float(v) for v in hist.get(metric, [])]
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def prediction_grid(images: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray],
                    predictions: Mapping[str, Sequence[np.ndarray]], label_spec: LabelSpec, path,
                    titles: Sequence[str] | None = None) -> Path:
    """Rows = images; columns = image, ground truth, then each model's prediction, in class colours."""
    from matplotlib.patches import Patch
    n = len(images)
    if n == 0 or len(ground_truth) != n or any(len(p) != n for p in predictions.values()):
        raise MarsamError("prediction grid needs as many ground truths and predictions as images")
    cols = ["image", "ground truth", *predictions]
    fig = _figure(2.2 * len(cols), 2.2 * n + 0.5)
    axes = fig.subplots(n, len(cols), squeeze=False)
    for i in range(n):
        panels = [None, ground_truth[i], *(p[i] for p in predictions.values())]
        for j, (ax, lab) in enumerate(zip(axes[i], panels)):
            if lab is None:
                ax.imshow(_as_display(images[i]), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(label_spec.colorize(lab))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
            if j == 0 and titles is not None:
                ax.set_ylabel(titles[i], fontsize=7)
    handles = [Patch(color=np.asarray(c) / 255, label=name) for name, c in zip(label_spec.classes, label_spec.colors)]
    handles.append(Patch(color="black", label="unlabelled"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    return _save(fig, path)


def overlay_grid(images: Sequence[np.ndarray], maps: Mapping[str, Sequence[np.ndarray]], path,
                 cmap: str = "jet", alpha: float = 0.5, titles: Sequence[str] | None = None,
                 vmax: float | None = None, per_map: bool = False, bar_label: str = "") -> Path:
    """Rows = images; columns = the image, then each map (Grad-CAM, entropy, ...) laid over it.

    By default maps share a colour scale per column (0 to ``vmax``, or to the column's maximum)
    so images can be compared: entropy in nats means the same everywhere. ``per_map`` scales
    each map to its own maximum instead, the usual display of Grad-CAM, whose raw magnitude
    differs between models and classes and says little on its own.
    """
    n = len(images)
    if n == 0 or any(len(m) != n for m in maps.values()):
        raise MarsamError("overlay grid needs one map per image for every column")
    cols = ["image", *maps]
    fig = _figure(2.4 * len(cols), 2.2 * n + 0.3)
    axes = fig.subplots(n, len(cols), squeeze=False)
    for j, (name, column) in enumerate(maps.items(), start=1):
        arrays = [np.asarray(m, np.float32) for m in column]
        top = vmax if vmax is not None else max(float(np.nanmax(a)) for a in arrays) or 1.0
        for i, arr in enumerate(arrays):
            ax = axes[i, j]
            ax.imshow(_as_display(images[i]), cmap="gray", vmin=0, vmax=1)
            if per_map:
                peak = float(np.nanmax(arr)) if arr.size else 0.0
                arr = arr / peak if peak > 0 else arr
            im = ax.imshow(arr, cmap=cmap, alpha=alpha, vmin=0, vmax=1.0 if per_map else top)
            if i == 0:
                ax.set_title(name, fontsize=9)
        bar = fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.8, fraction=0.06, pad=0.02)
        bar.ax.tick_params(labelsize=7)
        if per_map or bar_label:
            bar.set_label(bar_label or "fraction of the map's maximum", fontsize=7)
    for i in range(n):
        axes[i, 0].imshow(_as_display(images[i]), cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=7)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def reliability_diagram(curves: Mapping[str, Mapping[str, Sequence[float]]], path) -> Path:
    """Accuracy against confidence per bin, one line per model, with the diagonal of perfect calibration.

    Each curve gives ``confidence`` and ``accuracy`` per bin (empty bins left out) and optionally
    ``ece`` for the legend. Points under the diagonal mean an over-confident model.
    """
    fig = _figure(4.4, 4.2)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, c in curves.items():
        conf = np.asarray(c["confidence"], float)
        acc = np.asarray(c["accuracy"], float)
        keep = np.isfinite(conf) & np.isfinite(acc)
        label = f"{name} (ECE {c['ece']:.3f})" if c.get("ece") is not None else name  # the table's ECE
        ax.plot(conf[keep], acc[keep], marker="o", markersize=4, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("pixel accuracy")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def label_efficiency(curves: Mapping[str, Sequence[tuple[float, float]]], path,
                     metric: str = "val mIoU", note: str = "") -> Path:
    """The metric against the number of labelled training images N, one line per model, on the
    metric's whole 0..1 axis (a zoomed axis makes noise look like a trend); ``note`` is printed
    under the plot (e.g. that differences are within the noise)."""
    fig = _figure(4.8, 3.6 if note else 3.4)
    ax = fig.subplots()
    for name, points in curves.items():
        pts = sorted((float(n), float(v)) for n, v in points)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("labelled training images N")
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, style="italic", wrap=True)
        fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    return _save(fig, path)
