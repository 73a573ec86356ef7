"""The command-line options that name a SAM model: one spelling in every ``marsam`` command.

``--sam-model-type`` (vit_b, vit_l, vit_h, plus what a command adds: ``auto``, ``grabcut``,
``tiny``) and ``--sam-checkpoint`` (an official segment-anything ``.pth``). ``--checkpoint`` is
left to marsam's own ``.safetensors`` models (``marsam evaluate``, ``marsam explain``), so a SAM
file and a marsam file never share an option name. The old spellings (``--model``,
``--sam-model``, and ``--checkpoint`` for a SAM file) keep working for one release and print a
one-line deprecation notice.
"""
from __future__ import annotations

import argparse
import sys

from .sam_loading import SAM_MODEL_TYPES

MODEL_TYPE_OPTION = "--sam-model-type"
CHECKPOINT_OPTION = "--sam-checkpoint"


class _Deprecated(argparse.Action):
    """Store like the new option, after one line on stderr naming it."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"marsam: {option_string} is deprecated and will be removed; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_sam_options(p: argparse.ArgumentParser, default: str | None = "vit_b", extra_types: tuple[str, ...] = (),
                    old_model: tuple[str, ...] = ("--model",), old_checkpoint: bool = True,
                    type_help: str = "SAM model type", checkpoint_help: str | None = None) -> None:
    """Add ``--sam-model-type`` (dest ``sam_model_type``) and ``--sam-checkpoint`` (dest
    ``sam_checkpoint``) to ``p``, with the command's old spellings as hidden deprecated aliases."""
    choices = tuple(extra_types) + SAM_MODEL_TYPES if "auto" in extra_types else SAM_MODEL_TYPES + tuple(extra_types)
    p.add_argument(MODEL_TYPE_OPTION, dest="sam_model_type", default=default, choices=choices,
                   help=f"{type_help} [{default or 'the configuration'}]")
    p.add_argument(CHECKPOINT_OPTION, dest="sam_checkpoint", default=None,
                   help=checkpoint_help or "official SAM .pth (default: $MARSAM_SAM_CHECKPOINT, else the "
                                           "official file in marsam's cache, downloaded once)")
    for old in old_model:
        p.add_argument(old, dest="sam_model_type", choices=choices, action=_Deprecated, new=MODEL_TYPE_OPTION,
                       help=argparse.SUPPRESS)
    if old_checkpoint:
        p.add_argument("--checkpoint", dest="sam_checkpoint", action=_Deprecated, new=CHECKPOINT_OPTION,
                       help=argparse.SUPPRESS)
