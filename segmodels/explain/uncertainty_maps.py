"""Uncertainty maps in the :class:`Explanation` form, so the CLI and napari treat them like the rest.

Entropy goes through :func:`segmodels.predictors.predict` (tiled, so any image size works);
MC dropout runs its N passes on the whole normalised image.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..checkpoints import Checkpoint
from ..predictors import predict
from ..labels import LabelSpec
from ..normalization import Normalization
from ..uncertainty import max_prob_uncertainty, mc_dropout, predictive_entropy
from .inputs import Explanation, resolve


def entropy_map(model: nn.Module | Checkpoint, image: np.ndarray, normalization: Normalization | dict | None = None,
                device: torch.device | str | None = None, tile: int = 512) -> Explanation:
    """Predictive entropy (nats, in [0, log K]); extras: ``max_prob_uncertainty`` and the labels."""
    pred = predict(model, image, normalization, tile=tile, device=device)
    ent = predictive_entropy(pred.probs)
    return Explanation(map=np.nan_to_num(ent).astype(np.float32), method="entropy",
                       extras={"max_prob_uncertainty": max_prob_uncertainty(pred.probs).astype(np.float32),
                               "labels": pred.labels, "log_k": math.log(pred.probs.shape[0]),
                               "mean_entropy": float(ent.mean())})


def mc_dropout_map(model: nn.Module | Checkpoint, x: torch.Tensor | np.ndarray, samples: int = 20,
                   normalization: Normalization | dict | None = None, label_spec: LabelSpec | None = None,
                   device: torch.device | str | None = None, batch_size: int = 4) -> Explanation:
    """Mutual information (epistemic uncertainty, nats) over ``samples`` dropout passes."""
    r = resolve(model, x, normalization, label_spec, device)
    res = mc_dropout(r.model, r.x, samples=samples, batch_size=batch_size)
    return Explanation(map=res.mutual_information, method="mc-dropout",
                       extras={"predictive_entropy": res.predictive_entropy,
                               "expected_entropy": res.expected_entropy, "mean_probs": res.mean_probs,
                               "samples": res.samples, "mean_mutual_information": float(res.mutual_information.mean())})
