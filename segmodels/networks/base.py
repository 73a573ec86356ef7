"""What every marsam segmentation network shares.

A network is split into ``features(x)`` (the penultimate feature map, at output resolution)
and a 1x1 convolution ``head`` giving K class logits (or 1 logit for binary sigmoid
segmentation). Keeping that split explicit is what makes neural PCA (``w_c * phi(x)``) and
Grad-CAM on the last decoder block possible for every model without special cases. The
optional aleatoric head predicts a per-pixel, per-class log-variance from the same features
(Kendall and Gal 2017); ``forward`` always returns logits only, so attribution libraries and
exporters see a plain function, and ``forward_aleatoric`` returns both.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import MarsamError
from ..normalization import IMAGE, Normalization


class SegmentationNet(nn.Module):
    """Constructor arguments are recorded once, here, as segmentation_models.pytorch's hub mixin
    does: ``config()`` returns the arguments of the subclass's ``__init__`` (defaults filled in),
    so a checkpoint can rebuild the network and no subclass writes its own dict."""

    #: name in the registry, set by ``register_model``
    model_name: str = ""
    #: spatial sizes must be divisible by this; others are padded and cropped back
    size_multiple: int = 1
    #: the sub-module Grad-CAM uses by default (the last decoder block)
    default_cam_layer: str = ""
    #: what the network reads: the image (``IMAGE``) or SAM image embeddings (``SAM_EMBEDDING``)
    input_kind: str = IMAGE

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError:   # copy / unpickling calls __new__ bare; __init__ reports real mistakes
            return self
        bound.apply_defaults()
        config = dict(list(bound.arguments.items())[1:])   # without self
        config.update(config.pop("kwargs", {}))
        object.__setattr__(self, "_config", config)
        return self

    def __init__(self, in_channels: int, num_classes: int, feature_channels: int,
                 aleatoric: bool = False):
        super().__init__()
        if num_classes < 1:
            raise MarsamError(f"num_classes must be at least 1, got {num_classes}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.aleatoric = bool(aleatoric)
        self.head = nn.Conv2d(feature_channels, num_classes, kernel_size=1)
        self.log_var_head = (nn.Conv2d(feature_channels, num_classes, kernel_size=1)
                             if aleatoric else None)

    # -- input checks -------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise MarsamError(f"{type(self).__name__} takes an N x C x H x W tensor; got "
                              f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.shape[1] != self.in_channels:
            raise MarsamError(
                f"{type(self).__name__} was built for {self.in_channels}-channel input but got "
                f"{x.shape[1]} channels; convert the image (segmodels.images.to_model_input with "
                f"in_channels={self.in_channels}) or build the model with in_channels={x.shape[1]}")
        if x.shape[-1] < 2 or x.shape[-2] < 2 or x.numel() == 0:
            raise MarsamError(f"input of {x.shape[-1]}x{x.shape[-2]} pixels is too small to segment; "
                              "give an image of at least 8x8 pixels")
        if not torch.isfinite(x).all():
            raise MarsamError("input contains NaN or infinite values; clean the image "
                              "(e.g. numpy.nan_to_num) before segmenting it")

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        m = self.size_multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x, h, w

    # -- the network ----------------------------------------------------------------------
    def decode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features at the input's size (padding removed)."""
        self.check_input(x)
        xp, h, w = self._pad(x)
        f = self.decode(xp)
        return f[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_aleatoric(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.log_var_head is None:
            raise MarsamError(f"{type(self).__name__} has no aleatoric head; build it with aleatoric=True")
        f = self.features(x)
        return self.head(f), self.log_var_head(f).clamp(-10.0, 10.0)

    def default_normalization(self) -> Normalization:
        """The input normalisation of this network when no checkpoint says otherwise."""
        if self.input_kind == IMAGE:
            return Normalization(in_channels=self.in_channels)
        return Normalization(in_channels=self.in_channels, mean=None, std=None, input=self.input_kind)

    def config(self) -> dict:
        """Constructor arguments that rebuild this network (stored in checkpoints)."""
        return dict(self.__dict__.get("_config", {}))
