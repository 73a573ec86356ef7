"""Distributed-training helpers of the training loop (DDP under torchrun), seeding and a digest of
the weights (so agreement across ranks is checked, not assumed)."""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from segmodels.device import pick_device

from .config import TrainConfig


def init_distributed(config: TrainConfig) -> tuple[torch.device, int, int, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(config.device)
    if world <= 1:
        return device, 0, 1, False
    created = False
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return device, dist.get_rank(), dist.get_world_size(), created


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def sync_buffers(model: nn.Module) -> None:
    """Average floating buffers (BatchNorm running stats) over ranks so all ranks match."""
    if not is_dist():
        return
    world = dist.get_world_size()
    for b in model.buffers():
        if b.dtype.is_floating_point:
            dist.all_reduce(b.data)
            b.data /= world


def any_rank(flag: bool, device: torch.device) -> bool:
    if not is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def weight_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
