"""Device choice shared by every package: cuda, then mps, then cpu, unless the user says."""
from __future__ import annotations

import torch

from .errors import MarsamError


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    if preferred not in (None, "", "auto"):
        dev = torch.device(preferred)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise MarsamError(f"device {preferred!r} asked for, but no CUDA GPU is visible; "
                              "use --device cpu (or leave it out to pick automatically)")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise MarsamError(f"device {preferred!r} asked for, but MPS is not available; use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on GPU (bf16 where supported, else fp16); a no-op context on CPU."""
    import contextlib
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
