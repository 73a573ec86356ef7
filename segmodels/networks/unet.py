"""The student: a small U-Net that runs on a laptop CPU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MarsamError
from .base import SegmentationNet
from .blocks import DoubleConv, Down, Up
from .registry import register_model


@register_model("unet")
class UNet(SegmentationNet):
    """U-Net with four poolings and bilinear upsampling (Ronneberger et al. 2015).

    ``base=16`` gives about 1.1M parameters, small enough for CPU inference at interactive
    speed; bilinear upsampling instead of transposed convolutions halves the decoder weights
    and avoids checkerboard artefacts in the distilled soft labels.

    ``stem_stride=2`` puts a strided 3x3 convolution in front, runs the U-Net at half the
    input resolution and upsamples its last features bilinearly to the input size before the
    head (so features, Grad-CAM and neural PCA still see the input's resolution): about a
    quarter of the convolution work of ``stem_stride=1`` for the same parameters (``marsam
    models`` reports GFLOPs). The shipped student uses it; its speed is measured side by side in
    ``benchmarks/bench_distill.py`` (see its model card).
    """

    size_multiple = 16
    default_cam_layer = "up4"
    #: the decoder block; the Attention U-Net swaps in one with an attention gate on the skip
    up_block: type[nn.Module] = Up

    def __init__(self, in_channels: int = 1, num_classes: int = 4, base: int = 16,
                 dropout: float = 0.0, aleatoric: bool = False, stem_stride: int = 1):
        b = int(base)
        if stem_stride not in (1, 2):
            raise MarsamError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        super().__init__(in_channels, num_classes, b, aleatoric)
        self.stem_stride = int(stem_stride)
        self.size_multiple = 16 * self.stem_stride
        self.stem = (nn.Sequential(nn.Conv2d(in_channels, b, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(b), nn.ReLU(inplace=True))
                     if self.stem_stride == 2 else None)
        self.inc = DoubleConv(b if self.stem is not None else in_channels, b)
        self.down1 = Down(b, 2 * b)
        self.down2 = Down(2 * b, 4 * b)
        self.down3 = Down(4 * b, 8 * b, dropout=dropout)
        self.down4 = Down(8 * b, 8 * b, dropout=dropout)  # bilinear: bottleneck keeps 8b
        self.up1 = self.up_block(8 * b, 8 * b, 4 * b, dropout=dropout)
        self.up2 = self.up_block(4 * b, 4 * b, 2 * b)
        self.up3 = self.up_block(2 * b, 2 * b, b)
        self.up4 = self.up_block(b, b, b)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        full = x.shape[-2:]
        if self.stem is not None:
            x = self.stem(x)
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        y = self.up1(x5, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        if self.stem is not None:
            y = F.interpolate(y, size=full, mode="bilinear", align_corners=False)
        return y
