"""segmodels: networks, label specs, safe checkpoints, explanations and uncertainty.

The base of marsam: it imports nothing of the other marsam packages.
"""
from .errors import MarsamError
from .labels import AI4MARS, HIRISE_PITS, LabelSpec, get_label_spec
from .networks import build_model, list_models
from .checkpoints import Checkpoint, load_checkpoint, save_checkpoint

__all__ = ["MarsamError", "AI4MARS", "HIRISE_PITS", "LabelSpec", "get_label_spec", "build_model",
           "list_models", "Checkpoint", "load_checkpoint", "save_checkpoint"]
