"""Monte Carlo dropout (Gal and Ghahramani 2016): epistemic uncertainty from N stochastic passes.

Only the dropout layers are switched to train mode. BatchNorm must stay in eval mode: in train
mode it would normalise with the statistics of the single test image, which changes every
prediction and is not the model's uncertainty. The predictive entropy of the mean softmax
splits into the expected entropy of the samples (aleatoric part) and the mutual information
between prediction and weights (epistemic part, >= 0), which is zero when the passes agree.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..errors import MarsamError
from ..inference import class_probs
from .measures import EPS


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Model in eval mode with only its dropout layers sampling; the previous modes are restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in dropout_layers(model):
        m.train()
    try:
        yield model
    finally:
        for m, was in modes.items():
            m.train(was)


@dataclass
class MCDropoutResult:
    """All arrays are float32; maps are H x W, ``mean_probs`` is K x H x W."""

    mean_probs: np.ndarray
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray
    samples: int


@torch.no_grad()
def mc_dropout(model: nn.Module, x: torch.Tensor, samples: int = 20, batch_size: int = 4,
               seed: int | None = 0) -> MCDropoutResult:
    """``samples`` stochastic passes over the normalised 1 x C x H x W input ``x``.

    Raises :class:`MarsamError` when the model has no dropout layer (every pass would be the
    same, and a zero map would look like certainty).
    """
    if samples < 2:
        raise MarsamError(f"MC dropout needs at least 2 samples, got {samples}")
    if not dropout_layers(model):
        raise MarsamError(f"model {getattr(model, 'model_name', type(model).__name__)!r} has no dropout layers, "
                          "so MC dropout has nothing to sample; use a model trained with dropout > 0 "
                          "(e.g. the attention_unet teacher) or use --method entropy")
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        mean = None
        exp_ent = None
        with mc_dropout_mode(model):
            done = 0
            while done < samples:
                n = min(batch_size, samples - done)
                p = class_probs(model(x.expand(n, *x.shape[1:]))).float()
                ent = -(p * torch.log(p.clamp_min(EPS))).sum(dim=1)
                mean = p.sum(0) if mean is None else mean + p.sum(0)
                exp_ent = ent.sum(0) if exp_ent is None else exp_ent + ent.sum(0)
                done += n
    finally:
        torch.random.set_rng_state(state)
    mean = mean / samples
    exp_ent = exp_ent / samples
    pred_ent = -(mean * torch.log(mean.clamp_min(EPS))).sum(dim=0)
    mi = (pred_ent - exp_ent).clamp_min(0.0)
    f = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    return MCDropoutResult(mean_probs=f(mean), predictive_entropy=f(pred_ent), expected_entropy=f(exp_ent),
                           mutual_information=f(mi), samples=int(samples))
