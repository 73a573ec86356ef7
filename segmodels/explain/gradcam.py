"""Grad-CAM per class on a chosen layer, upsampled to the image (captum ``LayerGradCam``).

The explained scalar is the class logit summed over the pixels predicted as that class
(:mod:`.reduction`), so the map answers "which regions of this layer's activations raise the
score of the region the model calls sand". The default layer is the network's last decoder
block (``model.default_cam_layer``): it is at full resolution in the U-Nets, so the map keeps
the detail a coarse bottleneck CAM would lose.
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


def layer_names(model: nn.Module) -> list[str]:
    """The names Grad-CAM accepts: every named sub-module (dotted for nested ones)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    name = name or getattr(model, "default_cam_layer", "")
    modules = dict(model.named_modules())
    if not name or name not in modules or name == "":
        top = [n for n, _ in model.named_children()]
        raise MarsamError(f"model {type(model).__name__} has no layer {name!r}; valid layers are "
                          f"{', '.join(top)} (or a nested one such as {top[-1] + '.0' if top else 'x.0'})")
    return name, modules[name]


def gradcam(model: nn.Module | Checkpoint, x: torch.Tensor | np.ndarray, target: str | int,
            layer: str | None = None, normalization: Normalization | dict | None = None,
            label_spec: LabelSpec | None = None, relu: bool = True,
            device: torch.device | str | None = None) -> Explanation:
    """Grad-CAM map (H x W, >= 0 when ``relu``) of class ``target`` at ``layer``.

    ``x`` is a normalised 1 x C x H x W tensor or a raw image (then ``normalization`` or the
    checkpoint's is applied). The layer map is bilinearly upsampled to the input size.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    r = resolve(model, x, normalization, label_spec, device)
    c = class_index(r.label_spec, r.model, target)
    lname, module = get_layer(r.model, layer)
    score, info = class_score(r.model, r.x, c, score="logit", aggregate="sum")
    cam = LayerGradCam(score, module)
    with torch.enable_grad():
        attr = cam.attribute(r.x, target=None, relu_attributions=relu)
    if isinstance(attr, tuple):
        attr = attr[0]
    layer_shape = list(attr.shape[-2:])
    h, w = r.x.shape[-2:]
    if attr.shape[-2:] != (h, w):
        attr = LayerAttribution.interpolate(attr, (h, w), interpolate_mode="bilinear")
    if attr.ndim == 4 and attr.shape[1] > 1:  # a layer with several maps: mean over channels
        attr = attr.mean(dim=1, keepdim=True)
    if relu:
        attr = F.relu(attr)
    extras = dict(info, layer=lname, layer_shape=layer_shape)
    return Explanation(map=finite_map(attr), method="gradcam", class_id=c,
                       class_name=class_label(r.label_spec, c),
                       extras=extras)
