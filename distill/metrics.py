"""Segmentation metrics accumulated over a whole split.

IoU averaged per image overweights small images and images where a class has three pixels; the
standard (and AI4Mars's) definition sums a confusion matrix over every labelled pixel of the
split and derives everything from it. Calibration (expected calibration error) is accumulated
alongside in fixed confidence bins, so the whole split never has to sit in memory. Both
accumulators can be summed across DDP ranks.
"""
from __future__ import annotations

import numpy as np
import torch

from segmodels.labels import IGNORE_INDEX


class SegmentationMetrics:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, ece_bins: int = 15):
        self.k = int(num_classes)
        self.ignore_index = ignore_index
        self.bins = int(ece_bins)
        self.confusion = torch.zeros(self.k, self.k, dtype=torch.int64)   # rows: truth, cols: prediction
        self.ece_count = torch.zeros(self.bins, dtype=torch.float64)
        self.ece_conf = torch.zeros(self.bins, dtype=torch.float64)
        self.ece_correct = torch.zeros(self.bins, dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """``logits`` N x K x H x W, ``target`` N x H x W (ignore value skipped)."""
        prob = torch.softmax(logits.detach().float(), dim=1)
        conf, pred = prob.max(dim=1)
        valid = target != self.ignore_index
        t, p, c = target[valid].cpu().long(), pred[valid].cpu().long(), conf[valid].cpu().double()
        if t.numel() and int(t.max()) >= self.k:
            from segmodels.errors import MarsamError
            raise MarsamError(f"targets hold class {int(t.max())} but the model has {self.k} classes; "
                              "use the label spec the model was trained with")
        self.confusion += torch.bincount(t * self.k + p, minlength=self.k * self.k).reshape(self.k, self.k)
        b = torch.clamp((c * self.bins).long(), max=self.bins - 1)
        self.ece_count += torch.bincount(b, minlength=self.bins).double()
        self.ece_conf += torch.bincount(b, weights=c, minlength=self.bins)
        self.ece_correct += torch.bincount(b, weights=(t == p).double(), minlength=self.bins)

    def all_reduce(self) -> None:
        """Sum the accumulators over DDP ranks (no-op when not distributed)."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return
        for name in ("confusion", "ece_count", "ece_conf", "ece_correct"):
            t = getattr(self, name)
            buf = t.double() if t.dtype == torch.int64 else t
            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            buf = buf.to(dev)
            dist.all_reduce(buf)
            setattr(self, name, buf.cpu().to(t.dtype))

    def compute(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict:
        cm = self.confusion.double()
        tp = cm.diag()
        truth = cm.sum(1)
        predicted = cm.sum(0)
        total = cm.sum()
        names = list(class_names) if class_names else [str(i) for i in range(self.k)]
        present = truth > 0                              # classes in this split's labels

        def div(a, b):
            return torch.where(b > 0, a / b.clamp_min(1e-12), torch.full_like(a, float("nan")))
        iou = div(tp, truth + predicted - tp)
        # a class present in the labels but never predicted has precision 0 (not undefined):
        # leaving it out of the macro mean would reward a model for ignoring a class
        precision = torch.where(present & (predicted == 0), torch.zeros_like(tp), div(tp, predicted))
        recall = div(tp, truth)
        f1 = torch.where(present & (precision + recall == 0), torch.zeros_like(tp),
                         div(2 * precision * recall, precision + recall))

        def nanmean(v):
            v = v[present & ~torch.isnan(v)]
            return float(v.mean()) if v.numel() else float("nan")
        micro = float(tp.sum() / total) if total > 0 else float("nan")   # micro P = R = F1 = accuracy
        n = self.ece_count.sum()
        ece = float(((self.ece_count / n) * (self.ece_conf / self.ece_count.clamp_min(1)
                                             - self.ece_correct / self.ece_count.clamp_min(1)).abs()).sum()) \
            if n > 0 else float("nan")

        def named(v):
            return {names[i]: (None if torch.isnan(v[i]) else round(float(v[i]), 6)) for i in range(self.k)}
        return {
            "miou": nanmean(iou),
            "pixel_accuracy": micro,
            "iou_per_class": named(iou),
            "precision_per_class": named(precision),
            "recall_per_class": named(recall),
            "f1_per_class": named(f1),
            "macro_precision": nanmean(precision),
            "macro_recall": nanmean(recall),
            "macro_f1": nanmean(f1),
            "micro_precision": micro,
            "micro_recall": micro,
            "micro_f1": micro,
            "ece": ece,
            "labelled_pixels": int(total),
            "confusion_matrix": self.confusion.tolist(),
        }


def confusion_to_markdown(confusion: list[list[int]], names: list[str]) -> str:
    lines = ["| truth \\ prediction | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for n, row in zip(names, confusion):
        lines.append(f"| {n} | " + " | ".join(f"{v:,}" for v in row) + " |")
    return "\n".join(lines)


def per_class_array(d: dict, names) -> np.ndarray:
    return np.array([np.nan if d[n] is None else d[n] for n in names], dtype=float)
