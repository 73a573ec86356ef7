"""Integrated Gradients (Sundararajan et al. 2017) of a class score, via captum.

IG integrates the gradient of the class score (logit summed over the class's predicted mask,
:mod:`.reduction`) along the straight path from a baseline to the image. Its completeness
property, sum(attributions) == f(x) - f(baseline), is what makes the map checkable; captum's
convergence delta is the violation of it and is returned with every map. The path is evaluated
``internal_batch_size`` images at a time, which bounds memory: all ``steps`` images of a
1024 px input at once would not fit on a laptop.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import Checkpoint
from ..errors import MarsamError
from ..labels import LabelSpec
from ..normalization import Normalization
from .inputs import Explanation, class_index, class_label, finite_map, resolve
from .reduction import class_score

BASELINES = ("black", "mean", "blur")


def make_baseline(x: torch.Tensor, baseline: str | float | torch.Tensor,
                  normalization: Normalization | dict | None = None) -> torch.Tensor:
    """The IG reference input in normalised space.

    ``"black"``: a zero-intensity image; ``"mean"``: the training mean intensity (0 after
    normalisation); ``"blur"``: a heavily blurred copy of the image (keeps brightness, removes
    texture); a number: that raw intensity in [0, 1]; a tensor: used as is.
    """
    norm = Normalization.coerce(normalization)
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != x.shape:
            raise MarsamError(f"baseline shape {tuple(baseline.shape)} differs from the input {tuple(x.shape)}")
        return baseline.to(x.device, x.dtype)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, norm.from_unit(float(baseline)))
    if baseline == "black":
        return torch.full_like(x, norm.from_unit(0.0))
    if baseline == "mean":
        return torch.zeros_like(x)
    if baseline == "blur":
        k = max(3, (min(x.shape[-2:]) // 8) | 1)
        return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    raise MarsamError(f"unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}, a number in [0, 1] "
                      "or a tensor of the input's shape")


def integrated_gradients(model: nn.Module | Checkpoint, x: torch.Tensor | np.ndarray, target: str | int,
                         steps: int = 32, baseline: str | float | torch.Tensor = "black",
                         internal_batch_size: int | None = 8, normalization: Normalization | dict | None = None,
                         label_spec: LabelSpec | None = None, method: str = "gausslegendre",
                         device: torch.device | str | None = None) -> Explanation:
    """IG map (H x W, signed: channels summed) of class ``target``; extras hold the delta.

    ``extras``: ``delta`` (captum's convergence delta, sum(attr) - (f(x) - f(baseline))),
    ``score``, ``baseline_score``, ``attribution_sum`` and ``relative_delta`` = |delta| /
    |f(x) - f(baseline)|.
    """
    from captum.attr import IntegratedGradients

    if steps < 2:
        raise MarsamError(f"Integrated Gradients needs at least 2 steps, got {steps}")
    if internal_batch_size is not None and internal_batch_size < 1:
        raise MarsamError(f"internal batch size must be at least 1, got {internal_batch_size}")
    r = resolve(model, x, normalization, label_spec, device)
    c = class_index(r.label_spec, r.model, target)
    score, info = class_score(r.model, r.x, c, score="logit", aggregate="sum")
    base = make_baseline(r.x, baseline, r.normalization)
    ig = IntegratedGradients(score)
    with torch.enable_grad():
        attr, delta = ig.attribute(r.x, baselines=base, target=None, n_steps=int(steps), method=method,
                                   internal_batch_size=internal_batch_size, return_convergence_delta=True)
    with torch.no_grad():
        fx, fb = float(score(r.x)), float(score(base))
    total = float(attr.sum())
    diff = fx - fb
    extras = dict(info, steps=int(steps), method=method, internal_batch_size=internal_batch_size,
                  baseline=baseline if isinstance(baseline, (str, int, float)) else "tensor",
                  delta=float(delta.reshape(-1)[0]), score=fx, baseline_score=fb, attribution_sum=total,
                  relative_delta=abs(total - diff) / max(abs(diff), 1e-12))
    return Explanation(map=finite_map(attr.sum(dim=1)), method="ig", class_id=c,
                       class_name=class_label(r.label_spec, c), extras=extras)
