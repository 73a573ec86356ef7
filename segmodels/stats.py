"""Model cost: parameter counts and GFLOPs measured by PyTorch's own FLOP counter."""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def gflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """GFLOPs of one forward pass (a multiply-add counts as 2 FLOPs, PyTorch's convention)."""
    from torch.utils.flop_counter import FlopCounterMode
    was_training = model.training
    model.eval()
    x = torch.zeros(input_shape)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 1e9
