"""Segmentation output -> one score per class: the common ground of every attribution method.

Attribution methods (Grad-CAM, Integrated Gradients, LIME) explain a scalar. A segmentation
network outputs K x H x W logits, so we reduce them to one number per class: the class logit
(or probability) summed, or averaged, over a FIXED mask, the pixels the model predicts as that
class on the unperturbed image. The mask is fixed once, before any perturbation or path
interpolation, so the explained function stays the same function of the input (a mask
recomputed per sample would make IG's completeness and LIME's surrogate meaningless). When the
class is predicted nowhere the mask falls back to all pixels, and the caller reports it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import MarsamError
from ..inference import class_probs

SCORES = ("logit", "prob")
AGGREGATES = ("sum", "mean")


@torch.no_grad()
def predicted_mask(model: nn.Module, x: torch.Tensor, class_id: int) -> tuple[torch.Tensor, bool]:
    """(H x W bool mask of pixels predicted as ``class_id``, whether it fell back to all pixels)."""
    labels = class_probs(model(x)).argmax(dim=1)[0]
    mask = labels == class_id
    if not bool(mask.any()):
        return torch.ones_like(mask), True
    return mask, False


@torch.no_grad()
def pixel_counts(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """N x K number of pixels predicted as each class: the non-differentiable reduction."""
    probs = class_probs(model(x))
    labels = probs.argmax(dim=1)
    return torch.stack([(labels == k).sum(dim=(1, 2)) for k in range(probs.shape[1])], dim=1)


class ClassScore(nn.Module):
    """``x -> one score per sample``: class ``c``'s logit or probability over a fixed mask.

    For a single-logit binary head, class 1 is the logit itself and class 0 its negation, so
    both classes have a score whose gradient points toward "more of this class".
    """

    def __init__(self, model: nn.Module, class_id: int, mask: torch.Tensor,
                 score: str = "logit", aggregate: str = "sum"):
        super().__init__()
        if score not in SCORES:
            raise MarsamError(f"unknown score {score!r}; use one of {', '.join(SCORES)}")
        if aggregate not in AGGREGATES:
            raise MarsamError(f"unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATES)}")
        self.model = model
        self.class_id = int(class_id)
        self.register_buffer("mask", mask.float())
        self.score = score
        self.aggregate = aggregate

    def class_map(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.score == "prob":
            return class_probs(logits)[:, self.class_id]
        if logits.shape[1] == 1:
            return logits[:, 0] if self.class_id == 1 else -logits[:, 0]
        return logits[:, self.class_id]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.device)
        total = (self.class_map(x) * m).sum(dim=(1, 2))
        if self.aggregate == "mean":
            total = total / m.sum().clamp_min(1.0)
        return total


def class_score(model: nn.Module, x: torch.Tensor, class_id: int, score: str = "logit",
                aggregate: str = "sum") -> tuple[ClassScore, dict]:
    """A :class:`ClassScore` with its mask fixed from ``x``'s prediction, and facts about the mask."""
    mask, fell_back = predicted_mask(model, x, class_id)
    info = {"score_kind": score, "aggregate": aggregate, "mask_pixels": int(mask.sum()),
            "mask": "all pixels (class not predicted)" if fell_back else "predicted pixels"}
    return ClassScore(model, class_id, mask, score, aggregate), info
