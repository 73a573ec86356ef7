"""Attention-gate maps of the Attention U-Net, one per gate, upsampled to the image.

Each additive gate (Oktay et al. 2018) multiplies a skip connection by psi in [0, 1]; psi is
the network's own statement of which encoder detail it lets through at that scale. Unlike
Grad-CAM and IG this is not a post-hoc attribution: it is read straight off the forward pass,
so it costs one inference. The main map is the mean of the upsampled gates; each gate is also
returned, deepest (coarsest) first.
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
from .inputs import Explanation, finite_map, resolve


def attention_maps(model: nn.Module | Checkpoint, x: torch.Tensor | np.ndarray,
                   normalization: Normalization | dict | None = None, label_spec: LabelSpec | None = None,
                   device: torch.device | str | None = None) -> Explanation:
    """Mean gate map (H x W in [0, 1]); ``extras["gates"]`` lists the H x W map of every gate."""
    r = resolve(model, x, normalization, label_spec, device)
    if not callable(getattr(r.model, "attention_maps", None)):
        raise MarsamError(f"model {getattr(r.model, 'model_name', type(r.model).__name__)!r} has no attention "
                          "gates; attention maps exist only for attention_unet (the teacher); use gradcam or ig")
    h, w = r.x.shape[-2:]
    with torch.no_grad():
        _, maps = r.model.attention_maps(r.x)
    mult = int(getattr(r.model, "size_multiple", 1)) or 1
    hp, wp = -(-h // mult) * mult, -(-w // mult) * mult  # the network pads to a multiple
    gates = []
    for m in maps:
        # crop the padded margin first so the gate map lines up with the image
        mh, mw = max(1, round(h * m.shape[-2] / hp)), max(1, round(w * m.shape[-1] / wp))
        m = m[..., :mh, :mw].float()
        up = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) if m.shape[-2:] != (h, w) else m
        gates.append(finite_map(up.clamp(0.0, 1.0)))
    names = [f"gate{i + 1}" for i in range(len(gates))]
    return Explanation(map=np.mean(gates, axis=0).astype(np.float32), method="attention",
                       extras={"gates": gates, "gate_names": names,
                               "gate_shapes": [list(m.shape[-2:]) for m in maps]})
