"""A plain dict of model builders, as segment-anything's ``sam_model_registry``."""
from __future__ import annotations

from typing import Callable

from ..errors import MarsamError

_MODELS: dict[str, Callable] = {}

# input each model's cost is reported at (``marsam models``)
DEFAULT_INPUT = {"unet": (1, 1, 256, 256), "attention_unet": (1, 1, 256, 256),
                 "sam_decoder": (1, 256, 64, 64)}


def register_model(name: str):
    def deco(cls):
        cls.model_name = name
        _MODELS[name] = cls
        return cls
    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, **kwargs):
    if name not in _MODELS:
        raise MarsamError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as e:
        raise MarsamError(f"bad arguments for model {name!r}: {e}") from None
