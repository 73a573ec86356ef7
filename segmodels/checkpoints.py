"""Safe checkpoints: safetensors weights with JSON metadata in the same file.

The metadata (model name and constructor arguments, label spec, input normalisation, training
summary) lives in the safetensors header, so weights and their description can never drift
apart, and ``load_checkpoint`` rebuilds a ready model from the file alone. Nothing is ever
unpickled: a pickled PyTorch file is refused before it is opened.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import MarsamError
from .labels import LabelSpec, get_label_spec

FORMAT = "marsam-checkpoint/1"
DEFAULT_NORMALIZATION = {"in_channels": 1, "mean": 0.5, "std": 0.25}


@dataclass
class Checkpoint:
    model: nn.Module
    model_name: str
    model_args: dict
    label_spec: LabelSpec
    normalization: dict = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    training: dict = field(default_factory=dict)
    path: Path | None = None


def save_checkpoint(path: str | os.PathLike, model: nn.Module, label_spec: LabelSpec | str | None = None,
                    normalization: dict | None = None, training: dict | None = None) -> Path:
    from safetensors.torch import save_file
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    model = getattr(model, "module", model)  # unwrap DDP
    name = getattr(model, "model_name", "")
    if not name:
        raise MarsamError(f"{type(model).__name__} is not a registered marsam model; cannot checkpoint it")
    meta = {"format": FORMAT, "model": name, "model_args": model.config(),
            "label_spec": get_label_spec(label_spec).to_dict(),
            "normalization": dict(normalization or DEFAULT_NORMALIZATION),
            "training": training or {}}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"marsam": json.dumps(meta)})
    return path


def _sniff(path: Path) -> None:
    """Refuse pickles and archives before any parser touches them."""
    if not path.is_file():
        raise MarsamError(f"checkpoint {path} does not exist; check the path")
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    # A safetensors file is an 8-byte little-endian header length followed by a JSON header. Test
    # that first: the length's low byte may be 0x80, which alone would look like a pickle.
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if n <= size - 8:
            return
        raise MarsamError(f"checkpoint {path} is truncated; re-download or re-train it")
    if head[:2] == b"PK" or head[:1] == b"\x80" or path.suffix in (".pt", ".pth", ".ckpt", ".pkl"):
        raise MarsamError(
            f"{path} is a pickled PyTorch file; marsam never unpickles checkpoints because that can "
            "run arbitrary code. Load it yourself with torch.load(..., weights_only=True) and re-save "
            "it with segmodels.checkpoints.save_checkpoint, or use the .safetensors file marsam wrote")
    raise MarsamError(f"checkpoint {path} is truncated or not a safetensors file "
                      f"({size} bytes); re-download or re-train it")


def read_metadata(path: str | os.PathLike) -> dict:
    from safetensors import safe_open
    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("marsam")
    except Exception as e:
        raise MarsamError(f"checkpoint {path} is corrupt ({e}); re-download or re-train it") from None
    if raw is None:
        raise MarsamError(f"{path} is a safetensors file without marsam metadata; save it with "
                          "segmodels.checkpoints.save_checkpoint so the model can be rebuilt")
    return json.loads(raw)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    from safetensors.torch import load_file
    from .networks import build_model
    path = Path(path)
    meta = read_metadata(path)
    try:
        state = load_file(str(path), device=str(device))
    except Exception as e:
        raise MarsamError(f"checkpoint {path} is truncated or corrupt ({e}); re-download or re-train it") from None
    model = build_model(meta["model"], **meta["model_args"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1:3]
        raise MarsamError(f"the weights in {path} do not fit model {meta['model']!r} with arguments "
                          f"{meta['model_args']}: {' '.join(s.strip() for s in first)}; the file was "
                          "edited or written by another program: re-train or re-download it") from None
    model.to(device).eval()
    return Checkpoint(model=model, model_name=meta["model"], model_args=meta["model_args"],
                      label_spec=get_label_spec(meta["label_spec"]),
                      normalization=meta.get("normalization", dict(DEFAULT_NORMALIZATION)),
                      training=meta.get("training", {}), path=path)
