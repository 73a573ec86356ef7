"""One spelling for the SAM model options in every command; the old ones still work, with one line.

Bad inputs tried: an unknown model type under the new and the old name.
"""
from __future__ import annotations

import argparse

import pytest

from annotate.sam_options import add_sam_options
from segmodels.cli import build_parser


def _parser(**kw):
    p = argparse.ArgumentParser(prog="t")
    add_sam_options(p, **kw)
    return p


def test_new_and_old_spellings_set_the_same_values(capsys):
    p = _parser()
    a = p.parse_args(["--sam-model-type", "vit_l", "--sam-checkpoint", "s.pth"])
    assert (a.sam_model_type, a.sam_checkpoint) == ("vit_l", "s.pth")
    assert capsys.readouterr().err == ""
    a = p.parse_args(["--model", "vit_h", "--checkpoint", "h.pth"])
    assert (a.sam_model_type, a.sam_checkpoint) == ("vit_h", "h.pth")
    err = capsys.readouterr().err.splitlines()
    assert err == ["marsam: --model is deprecated and will be removed; use --sam-model-type",
                   "marsam: --checkpoint is deprecated and will be removed; use --sam-checkpoint"]
    assert p.parse_args([]).sam_model_type == "vit_b"
    for bad in (["--sam-model-type", "vit_x"], ["--model", "vit_x"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_every_command_that_takes_sam_uses_the_one_name():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("embed", "annotate", "prompt-eval", "gui", "evaluate", "train", "demo"):
        if name not in sub.choices:   # an optional part (the GUI extra) may be missing
            continue
        opts = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert {"--sam-model-type", "--sam-checkpoint"} <= opts, name
        shown = {o for a in sub.choices[name]._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
        assert not shown & {"--model", "--sam-model"}, name
        if "--checkpoint" in shown:   # then it names a marsam .safetensors (evaluate), never a SAM .pth
            assert "--sam-checkpoint" in shown
