"""Pretrained models shipped inside the package, loaded by name.

Each model is ``distill/pretrained/<name>.safetensors`` (a marsam checkpoint: weights plus the
metadata to rebuild it) with a model card ``<name>.md`` next to it saying how it was trained
and what it measured. ``segmodels.predictors.load_predictor`` accepts these names too.
"""
from __future__ import annotations

from pathlib import Path

from segmodels.checkpoints import Checkpoint, load_checkpoint
from segmodels.errors import MarsamError
from segmodels.predictors import register_pretrained

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def list_pretrained() -> list[str]:
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


def _shipped() -> dict[str, Path]:
    return {p.stem: p for p in PRETRAINED_DIR.glob("*.safetensors")}


# ``segmodels.predictors.load_predictor("ai4mars-student")`` finds the shipped models through this
register_pretrained(_shipped)


def pretrained_path(name: str) -> Path:
    path = PRETRAINED_DIR / f"{name}.safetensors"
    if not path.is_file():
        have = ", ".join(list_pretrained()) or "none"
        raise MarsamError(f"no pretrained model named {name!r}; available: {have}")
    return path


def model_card(name: str) -> str:
    card = PRETRAINED_DIR / f"{name}.md"
    return card.read_text(encoding="utf-8") if card.is_file() else ""


def load_pretrained(name: str = "ai4mars-student", device: str = "cpu") -> Checkpoint:
    """The shipped checkpoint ``name`` as a ready :class:`Checkpoint` (model in eval mode)."""
    return load_checkpoint(pretrained_path(name), device=device)
