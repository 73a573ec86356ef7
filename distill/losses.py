"""Losses: (focal) cross-entropy on labels, knowledge distillation and channel-wise distillation.

Ignored pixels (255) are masked out of every term, including the distillation terms: the
teacher's opinion on pixels nobody labelled (sky, rover body) is exactly what the student should
not copy blindly, and keeping them would make the label-only and distilled students see
different pixels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from segmodels.errors import MarsamError
from segmodels.labels import IGNORE_INDEX


def inverse_frequency_weights(counts: np.ndarray, max_ratio: float = 10.0) -> torch.Tensor:
    """Class weights proportional to 1 / frequency, normalised to mean 1 over present classes.

    Clipped to ``max_ratio`` times the smallest weight so a class with a handful of pixels
    cannot dominate the loss; absent classes get weight 0 (nothing to learn from).
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    if not present.any():
        return torch.ones(len(counts))
    w[present] = counts[present].sum() / counts[present]
    w[present] = np.minimum(w[present], w[present].min() * max_ratio)
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


WEIGHTINGS = ("none", "inverse", "sqrt", "median")
LOSSES = ("ce", "focal", "ce+dice")


def class_weights(counts: np.ndarray, scheme: str = "inverse", max_ratio: float = 10.0) -> torch.Tensor | None:
    """Class weights from labelled-pixel counts; ``None`` for ``scheme="none"``.

    ``inverse``: 1 / frequency (clipped, see :func:`inverse_frequency_weights`); ``sqrt``:
    1 / sqrt(frequency), the milder version; ``median``: median frequency balancing (Eigen and
    Fergus 2015), median(freq) / freq. All are normalised to mean 1 over present classes, and a
    class absent from the training labels gets weight 0.
    """
    if scheme == "none":
        return None
    if scheme == "inverse":
        return inverse_frequency_weights(counts, max_ratio)
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    if not present.any():
        return torch.ones(len(counts))
    freq = counts[present] / counts[present].sum()
    if scheme == "sqrt":
        w[present] = 1.0 / np.sqrt(freq)
    elif scheme == "median":
        w[present] = np.median(freq) / freq
    else:
        raise MarsamError(f"unknown class weighting {scheme!r}; choose one of {', '.join(WEIGHTINGS)}")
    w[present] = np.minimum(w[present], w[present].min() * max_ratio)
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
              eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice (Milletari et al. 2016) over labelled pixels, averaged over the classes
    present in the batch's labels or predicted there (a class neither labelled nor predicted
    has nothing to overlap and is left out)."""
    valid = (target != ignore_index)
    if not valid.any():
        return logits.sum() * 0.0
    k = logits.shape[1]
    p = F.softmax(logits.float(), dim=1) * valid[:, None]
    onehot = F.one_hot(target.clamp_max(k - 1) * valid, k).permute(0, 3, 1, 2).float() * valid[:, None]
    dims = (0, 2, 3)
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    keep = onehot.sum(dims) > 0
    return 1.0 - dice[keep].mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                      focal_gamma: float = 0.0, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean (weighted) CE, or focal loss (Lin et al. 2017) with ``focal_gamma > 0``, over labelled pixels."""
    logits = logits.float()
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    if weight is not None:
        weight = weight.to(logits.device)
    ce = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")
    if focal_gamma > 0:
        logp = F.log_softmax(logits, dim=1)
        pt = logp.gather(1, target.clamp_max(logits.shape[1] - 1).unsqueeze(1)).squeeze(1).exp()
        ce = ce * (1 - pt).pow(focal_gamma)
    if weight is not None:
        denom = weight[target[valid]].sum().clamp_min(1e-8)
        return ce[valid].sum() / denom
    return ce[valid].mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
            temperature: float = 2.0, ignore_index: int = IGNORE_INDEX,
            pixels: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(teacher || student) of temperature-softened distributions, mean over the pixels
    it is asked about: labelled pixels by default, or the boolean map ``pixels`` (e.g. every
    pixel that came from inside the image, labelled or not)."""
    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    valid = (target != ignore_index) if pixels is None else pixels
    if not valid.any():
        return student_logits.sum() * 0.0
    return kl[valid].mean() * t * t


def cwd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             temperature: float = 4.0, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Channel-wise distillation (Shu et al. 2021): per class channel, KL between the teacher's
    and the student's softmax over *spatial positions*; ignored pixels are removed from both
    spatial distributions. Averaged over channels and images, scaled by T^2."""
    t = float(temperature)
    n, k = student_logits.shape[:2]
    valid = (target != ignore_index).reshape(n, 1, -1)
    s = student_logits.float().reshape(n, k, -1) / t
    te = teacher_logits.float().reshape(n, k, -1) / t
    neg = torch.finfo(torch.float32).min / 4
    s = s.masked_fill(~valid, neg)
    te = te.masked_fill(~valid, neg)
    log_s = F.log_softmax(s, dim=2)
    log_t = F.log_softmax(te, dim=2)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~valid, 0.0).sum(dim=2)  # n x k
    has = valid.any(dim=2).expand(n, k)
    if not has.any():
        return student_logits.sum() * 0.0
    return kl[has].mean() * t * t


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                      alpha: float = 0.5, temperature: float = 2.0, weight: torch.Tensor | None = None,
                      focal_gamma: float = 0.0, cwd: float = 0.0,
                      ignore_index: int = IGNORE_INDEX, dice: float = 0.0,
                      kd_pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """alpha * (CE(labels) [+ dice * Dice]) + (1 - alpha) * T^2 * KL(teacher || student)
    [+ cwd * CWD]; also the parts. ``kd_pixels``: where the KL term applies (default: labelled)."""
    ce = segmentation_loss(student_logits, target, weight, focal_gamma, ignore_index)
    kd = kd_loss(student_logits, teacher_logits.detach(), target, temperature, ignore_index, kd_pixels)
    sup = ce
    parts = {"ce": float(ce.detach()), "kd": float(kd.detach())}
    if dice > 0:
        d = dice_loss(student_logits, target, ignore_index)
        sup = sup + dice * d
        parts["dice"] = float(d.detach())
    loss = alpha * sup + (1 - alpha) * kd
    if cwd > 0:
        c = cwd_loss(student_logits, teacher_logits.detach(), target, ignore_index=ignore_index)
        loss = loss + cwd * c
        parts["cwd"] = float(c.detach())
    return loss, parts
