"""Resumable training state: model, EMA, optimiser state and the loop's bookkeeping in one
safetensors file with JSON metadata (no pickles), written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from segmodels.atomic import atomic_path
from segmodels.errors import MarsamError


def save_state(path: Path, model: nn.Module, optimizer, meta: dict, ema_model: nn.Module | None = None) -> None:
    from safetensors.torch import save_file
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema_model is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_model.state_dict().items()})
    opt = optimizer.state_dict()
    scalars = {}
    for pid, st in opt["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    meta = dict(meta, param_groups=opt["param_groups"], opt_scalars=scalars)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"marsam-resume": json.dumps(meta)})


def load_state(path: Path, model: nn.Module, optimizer, ema=None) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["marsam-resume"])
        tensors = load_file(str(path))
    except Exception as e:
        raise MarsamError(f"cannot resume from {path} ({e}); delete it to start over, or set resume=false") from None
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError:
        raise MarsamError(f"{path} holds a different model than these settings build; use another "
                          "output folder, or set resume=false to overwrite it") from None
    ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    if ema is not None and ema_state:
        ema.module.load_state_dict(ema_state, strict=True)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta.get("opt_scalars", {}).items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta
