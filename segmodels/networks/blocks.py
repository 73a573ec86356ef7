"""Convolution blocks shared by the U-Nets."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> BN -> ReLU) x 2, optionally followed by dropout."""

    def __init__(self, cin: int, cout: int, mid: int | None = None, dropout: float = 0.0):
        mid = mid or cout
        layers = [nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                  nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Down(nn.Sequential):
    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__(nn.MaxPool2d(2), DoubleConv(cin, cout, dropout=dropout))


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class Up(nn.Module):
    """Bilinear upsampling, concatenation with the skip, DoubleConv."""

    def __init__(self, cin: int, cskip: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.conv = DoubleConv(cin + cskip, cout, mid=(cin + cskip) // 2, dropout=dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, upsample_to(x, skip)], dim=1))
