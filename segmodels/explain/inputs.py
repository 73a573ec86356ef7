"""What every explanation method shares: resolving its inputs and the shape of its answer.

Each method accepts a model, a :class:`~segmodels.checkpoints.Checkpoint` or a
:class:`~segmodels.predictors.Predictor` (resolved by ``load_predictor``), and either
an already normalised ``1 x C x H x W`` tensor or the raw image plus its normalisation. The
checkpoint is preferred because it carries the label spec (class names) and the normalisation
the model was trained with; resolving all of that in one place keeps the methods short and
their error messages identical.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import MarsamError
from ..labels import LabelSpec
from ..normalization import Normalization
from ..predictors import load_predictor


@dataclass
class Explanation:
    """An image-sized float map and what the method measured alongside it.

    ``map`` is H x W float32 and finite. ``class_id`` / ``class_name`` are None for
    class-agnostic maps (attention, uncertainty). ``extras`` holds method-specific numbers
    (IG completeness delta, LIME surrogate R^2, attention gate maps, ...).
    """

    map: np.ndarray
    method: str
    class_id: int | None = None
    class_name: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Resolved:
    model: nn.Module
    x: torch.Tensor
    label_spec: LabelSpec
    normalization: Normalization


def resolve(model, x: torch.Tensor | np.ndarray, normalization: Normalization | dict | None = None,
            label_spec: LabelSpec | None = None, device: torch.device | str | None = None) -> Resolved:
    """Model in eval mode, input tensor on the model's device, label spec and normalisation.

    ``model`` is anything :func:`segmodels.predictors.load_predictor` takes. A numpy image is
    normalised with ``normalization`` (or the checkpoint's); a tensor is taken as already
    normalised. The network itself refuses a wrong channel count.
    """
    p = load_predictor(model, normalization=normalization, label_spec=label_spec)
    if p.module is None:
        raise MarsamError(f"{p.name} has no torch module to explain (explanations need gradients)")
    net = p.module
    if isinstance(x, np.ndarray):
        if not p.normalization.reads_pixels:
            raise MarsamError(f"the {p.model_name} checkpoint takes SAM image embeddings, not images; compute "
                              "the embedding with annotate's embedding cache and pass it as a 1 x 256 x 64 x 64 tensor")
        x = p.normalization.to_model_input(x)
    if not isinstance(x, torch.Tensor):
        raise MarsamError(f"expected an image (numpy array) or a 1 x C x H x W tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise MarsamError(f"explanations take one image (1 x C x H x W); got shape {tuple(x.shape)}")
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    net = net.to(dev).eval()
    x = x.detach().to(dev, torch.float32)
    if hasattr(net, "check_input"):
        net.check_input(x)
    return Resolved(model=net, x=x, label_spec=p.label_spec, normalization=p.normalization)


def class_index(spec: LabelSpec, model: nn.Module, target: str | int) -> int:
    """The class id of ``target`` (name or id), checked against the spec and the model's head."""
    c = spec.class_id(target)
    k = int(getattr(model, "num_classes", spec.num_classes))
    k = 2 if k == 1 else k  # a single sigmoid logit explains background and foreground
    if c >= k:
        raise MarsamError(f"class {target!r} is id {c} but the model predicts only {k} classes; "
                          f"use an id in 0..{k - 1}")
    return c


def finite_map(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """H x W float32 numpy map with NaN/inf replaced, the contract of every method."""
    arr = t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
    while arr.ndim > 2:
        arr = arr[0]
    return np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def class_label(spec: LabelSpec, class_id: int) -> str:
    return spec.classes[class_id] if class_id < spec.num_classes else f"class_{class_id}"
