"""Calibration: expected calibration error (Guo et al. 2017) and a reliability diagram.

A model is calibrated when, among pixels predicted with confidence 0.8, 80% are right. ECE
bins pixels by confidence (max probability) and averages |accuracy - confidence| weighted by
bin size; the reliability diagram draws the same bins. Pixels labelled ``ignore_index`` are
left out, as in the losses and metrics. Counts accumulate over many images (``update``) so
an evaluation over a whole validation set never holds all probabilities at once.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import MarsamError
from ..labels import IGNORE_INDEX


@dataclass
class CalibrationBins:
    n_bins: int = 15
    ignore_index: int = IGNORE_INDEX
    count: np.ndarray = field(default=None)
    correct: np.ndarray = field(default=None)
    confidence: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.n_bins < 1:
            raise MarsamError(f"calibration needs at least 1 bin, got {self.n_bins}")
        z = lambda: np.zeros(self.n_bins, np.float64)  # noqa: E731
        self.count = z() if self.count is None else self.count
        self.correct = z() if self.correct is None else self.correct
        self.confidence = z() if self.confidence is None else self.confidence

    def update(self, probs: np.ndarray, labels: np.ndarray) -> "CalibrationBins":
        """Add one image: ``probs`` K x H x W, ``labels`` H x W (``ignore_index`` skipped)."""
        probs = np.asarray(probs, np.float64)
        labels = np.asarray(labels)
        if probs.ndim != 3 or labels.shape != probs.shape[1:]:
            raise MarsamError(f"calibration needs probs K x H x W and labels H x W; got {probs.shape} "
                              f"and {labels.shape}")
        keep = labels != self.ignore_index
        conf = probs.max(axis=0)[keep]
        right = (probs.argmax(axis=0)[keep] == labels[keep])
        idx = np.minimum((conf * self.n_bins).astype(np.int64), self.n_bins - 1)
        self.count += np.bincount(idx, minlength=self.n_bins)
        self.correct += np.bincount(idx, weights=right.astype(np.float64), minlength=self.n_bins)
        self.confidence += np.bincount(idx, weights=conf, minlength=self.n_bins)
        return self

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def accuracy(self) -> np.ndarray:
        return np.divide(self.correct, self.count, out=np.zeros_like(self.correct), where=self.count > 0)

    def mean_confidence(self) -> np.ndarray:
        return np.divide(self.confidence, self.count, out=np.zeros_like(self.confidence), where=self.count > 0)

    def ece(self) -> float:
        if self.total == 0:
            raise MarsamError("no labelled pixels to measure calibration on (all are ignore_index)")
        gap = np.abs(self.accuracy() - self.mean_confidence())
        return float((gap * self.count).sum() / self.total)

    def to_dict(self) -> dict:
        edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        return {"ece": self.ece(), "pixels": self.total, "bins": [
            {"low": float(edges[i]), "high": float(edges[i + 1]), "count": int(self.count[i]),
             "accuracy": float(self.accuracy()[i]), "confidence": float(self.mean_confidence()[i])}
            for i in range(self.n_bins)]}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15,
                               ignore_index: int = IGNORE_INDEX) -> tuple[float, CalibrationBins]:
    """ECE of one image (or a stack: probs N x K x H x W with labels N x H x W) and its bins."""
    bins = CalibrationBins(n_bins=n_bins, ignore_index=ignore_index)
    probs = np.asarray(probs)
    if probs.ndim == 4:
        for p, lab in zip(probs, np.asarray(labels)):
            bins.update(p, lab)
    else:
        bins.update(probs, labels)
    return bins.ece(), bins


def reliability_diagram(bins: CalibrationBins, path: str | os.PathLike, title: str = "Reliability") -> None:
    """PNG: per-bin accuracy against confidence, the diagonal, and bin sizes below."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    edges = np.linspace(0.0, 1.0, bins.n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    width = 1.0 / bins.n_bins
    fig = Figure(figsize=(4.5, 5.5), dpi=100)
    ax, ax2 = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    filled = bins.count > 0
    ax.bar(centers[filled], bins.accuracy()[filled], width=width, edgecolor="k", color="#4c72b0", label="accuracy")
    ax.bar(centers[filled], (bins.mean_confidence() - bins.accuracy())[filled], bottom=bins.accuracy()[filled],
           width=width, color="#dd8452", alpha=0.5, label="gap")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}  ECE = {bins.ece():.4f}")
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(centers, bins.count / max(bins.total, 1), width=width, color="#777777", edgecolor="k")
    ax2.set_xlabel("confidence (max probability)")
    ax2.set_ylabel("fraction")
    ax2.set_xlim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
