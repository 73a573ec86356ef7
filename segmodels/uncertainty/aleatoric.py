"""Aleatoric (data) uncertainty from a heteroscedastic head (Kendall and Gal 2017).

A model built with ``aleatoric=True`` predicts a per-pixel, per-class log-variance of its
logits alongside the logits; ``exp(log_var)`` is the noise the model believes is in the data
(blur, shadows, ambiguous terrain), which more training data would not remove.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import MarsamError


@dataclass
class AleatoricResult:
    """``variance`` K x H x W; ``predicted_variance`` H x W: the variance of each pixel's predicted class."""

    variance: np.ndarray
    predicted_variance: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def aleatoric_variance(model: nn.Module, x: torch.Tensor) -> AleatoricResult:
    if not getattr(model, "aleatoric", False) or not callable(getattr(model, "forward_aleatoric", None)):
        raise MarsamError(f"model {getattr(model, 'model_name', type(model).__name__)!r} has no aleatoric head; "
                          "train one built with aleatoric=True to get data uncertainty")
    was = model.training
    model.eval()
    try:
        logits, log_var = model.forward_aleatoric(x)
    finally:
        model.train(was)
    var = torch.exp(log_var[0].float())
    labels = logits[0].argmax(dim=0) if logits.shape[1] > 1 else (logits[0, 0] > 0).long()
    pred_var = var.gather(0, labels[None].clamp_max(var.shape[0] - 1))[0]
    return AleatoricResult(variance=var.cpu().numpy().astype(np.float32),
                           predicted_variance=pred_var.cpu().numpy().astype(np.float32),
                           labels=labels.cpu().numpy().astype(np.uint8))
