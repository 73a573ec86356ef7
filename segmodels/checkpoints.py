"""Safe checkpoints: safetensors weights with JSON metadata in the same file.

The metadata (model name and constructor arguments, label spec, input normalisation, training
summary) lives in the safetensors header, so weights and their description can never drift
apart, and ``load_checkpoint`` rebuilds a ready model from the file alone. Nothing is ever
unpickled: a pickled PyTorch file is refused before it is opened.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import MarsamError
from .labels import LabelSpec, get_label_spec
from .normalization import DEFAULT_NORMALIZATION, Normalization

FORMAT = "marsam-checkpoint/1"
#: the largest number a model argument (channels, classes, ...) may hold in checkpoint metadata
MAX_MODEL_ARG = 1 << 16


@dataclass
class Checkpoint:
    model: nn.Module
    model_name: str
    model_args: dict
    label_spec: LabelSpec
    normalization: Normalization = DEFAULT_NORMALIZATION
    training: dict = field(default_factory=dict)
    path: Path | None = None


def _default_normalization(model: nn.Module) -> Normalization:
    fn = getattr(model, "default_normalization", None)
    return fn() if fn is not None else DEFAULT_NORMALIZATION


def save_checkpoint(path: str | os.PathLike, model: nn.Module, label_spec: LabelSpec | str | None = None,
                    normalization: Normalization | dict | None = None, training: dict | None = None) -> Path:
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
            "normalization": Normalization.coerce(normalization, _default_normalization(model)).to_dict(),
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
    """The checkpoint's marsam metadata, checked for shape (a dict with the keys load needs)."""
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
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise MarsamError(f"the metadata of checkpoint {path} is not JSON ({e}); re-download or re-train it") from None
    return _check_metadata(meta, path)


def _check_metadata(meta, path: Path) -> dict:
    """Refuse metadata that is not what save_checkpoint writes, before anything is built from it."""
    def bad(what: str) -> MarsamError:
        return MarsamError(f"the metadata of checkpoint {path} is malformed ({what}); the file was edited "
                           "or written by another program: re-download or re-train it")
    if not isinstance(meta, dict):
        raise bad(f"a JSON {type(meta).__name__}, not an object")
    if not isinstance(meta.get("model"), str):
        raise bad("no model name")
    args = meta.get("model_args", {})
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise bad("model_args is not an object")
    odd = next((k for k in args if not k.isidentifier()), None)
    if odd is not None:
        raise bad(f"model argument name {odd!r} is not a Python name")
    for k, v in args.items():
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or v > MAX_MODEL_ARG:
            raise bad(f"model argument {k!r}={v!r} is not a number in 0..{MAX_MODEL_ARG}")
    if "label_spec" not in meta:
        raise bad("no label_spec")
    try:
        spec = get_label_spec(meta["label_spec"])
    except MarsamError as e:
        raise bad(str(e)) from None
    norm = meta.get("normalization")
    try:
        Normalization.coerce(norm)
    except MarsamError as e:
        raise bad(f"normalization {norm!r}: {e}") from None
    training = meta.get("training", {})
    if not isinstance(training, dict):
        raise bad("training is not an object")
    return {**meta, "model_args": args, "label_spec": spec.to_dict(), "normalization": norm,
            "training": training}


def _check_shapes(path: Path, meta: dict) -> None:
    """Build the model on the meta device (no memory) and compare its tensors with the file's.

    Only a model whose every tensor matches the file in name and shape is then built for real, so
    metadata such as ``base=10**9`` can never make marsam allocate more than the file holds.
    """
    from safetensors import safe_open
    from .networks import build_model
    try:
        with torch.device("meta"):
            model = build_model(meta["model"], **meta["model_args"])
    except MarsamError as e:
        raise MarsamError(f"checkpoint {path}: {e}; the file was edited or written by another program") from None
    except Exception as e:  # e.g. negative or huge channel counts
        raise MarsamError(f"checkpoint {path}: model {meta['model']!r} cannot be built with arguments "
                          f"{meta['model_args']} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          "re-download or re-train it") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise MarsamError(f"checkpoint {path} is corrupt ({e}); re-download or re-train it") from None
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or wrong:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                f"{wrong[0]} is {list(have[wrong[0]])} in the file but {list(want[wrong[0]])} in the model")
        raise MarsamError(f"the weights in {path} do not fit model {meta['model']!r} with arguments "
                          f"{meta['model_args']} ({what}); the file was edited or written by another "
                          "program: re-train or re-download it")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    from safetensors.torch import load_file
    from .networks import build_model
    path = Path(path)
    meta = read_metadata(path)
    _check_shapes(path, meta)
    try:
        state = load_file(str(path), device=str(device))
    except Exception as e:
        raise MarsamError(f"checkpoint {path} is truncated or corrupt ({e}); re-download or re-train it") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise MarsamError(f"checkpoint {path} holds NaN or infinite weights ({len(bad)} tensors, e.g. {bad[0]}); "
                          "training diverged: re-train with a lower learning rate or use an earlier checkpoint")
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
                      normalization=Normalization.coerce(meta.get("normalization"), _default_normalization(model)),
                      training=meta.get("training", {}), path=path)
