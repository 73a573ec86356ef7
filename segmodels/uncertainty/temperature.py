"""Temperature scaling (Guo et al. 2017): one scalar T fitted on held-out logits so that
softmax(logits / T) is calibrated, then folded into the network's 1x1 head.

Dividing the head's weights and bias by T gives exactly ``logits / T``: the predicted class
(argmax) and so every accuracy figure stay the same, and every consumer of the network (the
Predictor, tiled inference, entropy and max-probability maps, ONNX export, explanations) sees the
calibrated probabilities without a code path of its own. The value is recorded in the
checkpoint's training metadata under ``calibration``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MarsamError


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                    max_pixels: int = 4_000_000, seed: int = 0) -> float:
    """T minimising the NLL of ``softmax(logits / T)`` on the labelled pixels.

    ``logits`` N x K x H x W (or P x K), ``labels`` N x H x W (or P). At most ``max_pixels``
    labelled pixels, drawn at random with ``seed``, enter the fit (the optimum of one scalar is
    stable long before that)."""
    if logits.ndim == 4:
        k = logits.shape[1]
        logits = logits.permute(0, 2, 3, 1).reshape(-1, k)
        labels = labels.reshape(-1)
    keep = labels != ignore_index
    if not bool(keep.any()):
        raise MarsamError("no labelled pixel to fit a temperature on; use a split with labels")
    z, y = logits[keep].float(), labels[keep].long()
    if len(y) > max_pixels:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(y), generator=g)[:max_pixels]
        z, y = z[idx], y[idx]
    if z.shape[1] == 1:   # binary head: sigmoid(z / T)
        def nll(t):
            return F.binary_cross_entropy_with_logits(z[:, 0] / t, y.float())
    else:
        def nll(t):
            return F.cross_entropy(z / t, y)
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(log_t.exp())
        loss.backward()
        return loss
    opt.step(closure)
    t = float(log_t.detach().exp())
    if not (0.05 <= t <= 20.0):
        raise MarsamError(f"the fitted temperature {t:.3g} is outside [0.05, 20]: the model is close to "
                          "guessing on this split (or the labels do not match it); train it longer before "
                          "calibrating")
    return t


@torch.no_grad()
def fold_temperature(model: nn.Module, temperature: float) -> nn.Module:
    """Divide the model's 1x1 ``head`` by ``temperature`` in place (logits become logits / T)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Conv2d):
        raise MarsamError(f"{type(model).__name__} has no 1x1 'head' convolution to fold a temperature into")
    if temperature <= 0:
        raise MarsamError(f"temperature must be positive, got {temperature}")
    head.weight.div_(temperature)
    if head.bias is not None:
        head.bias.div_(temperature)
    return model
