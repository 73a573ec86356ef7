"""The teacher: an Attention U-Net (Oktay et al. 2018)."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import DoubleConv, upsample_to
from .registry import register_model
from .unet import UNet


class AttentionGate(nn.Module):
    """Additive attention: psi = sigmoid(BN(conv(relu(W_g g + W_x x)))); the skip is x * psi.

    The last coefficient map is kept in ``last_psi`` when ``keep`` is set, so explanations can
    show where each gate let the skip connection through.
    """

    def __init__(self, g_channels: int, x_channels: int, inter_channels: int):
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(g_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels))
        self.w_x = nn.Sequential(nn.Conv2d(x_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels))
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)
        self.keep = False
        self.last_psi: torch.Tensor | None = None

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        psi = self.psi(self.relu(self.w_g(g) + self.w_x(x)))
        if self.keep:
            self.last_psi = psi.detach()
        return x * psi


class AttentionUp(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.gate = AttentionGate(cin, cskip, max(cskip // 2, 1))
        self.conv = DoubleConv(cin + cskip, cout, dropout=dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = upsample_to(x, skip)
        return self.conv(torch.cat([self.gate(x, skip), x], dim=1))


@register_model("attention_unet")
class AttentionUNet(UNet):
    """U-Net with an additive attention gate on every skip connection (the U-Net's topology,
    :class:`AttentionUp` as its decoder block).

    ``base=64`` (about 13.7M parameters) follows the notebook's teacher. Dropout on the deep
    blocks regularises it and is what MC-dropout uncertainty samples.
    """

    up_block = AttentionUp

    def __init__(self, in_channels: int = 1, num_classes: int = 4, base: int = 64,
                 dropout: float = 0.1, aleatoric: bool = False):
        super().__init__(in_channels, num_classes, base, dropout, aleatoric)

    @property
    def gates(self) -> list[AttentionGate]:
        return [self.up1.gate, self.up2.gate, self.up3.gate, self.up4.gate]

    def attention_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the four gate maps (N x 1 x h_i x w_i, deepest first, before upsampling)."""
        for g in self.gates:
            g.keep = True
        try:
            logits = self.forward(x)
            maps = [g.last_psi for g in self.gates]
        finally:
            for g in self.gates:
                g.keep = False
                g.last_psi = None
        return logits, maps
