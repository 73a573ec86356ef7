"""Hostile checkpoints: edited metadata, huge constructor arguments, NaN weights.

Bad inputs tried: metadata that is not JSON, a JSON list, a JSON string; no ``model`` key;
``model_args`` a list; ``base`` "abc", -1, 10**9 and 4096 (would allocate 16 GB / 4.8 GB if
built before checking); an unknown model; a label spec that is a number; normalisation with a
zero std; NaN and infinite weights. Each must be one MarsamError, never another exception,
and the huge ones must not allocate (peak RSS, see test_huge_base_allocates_nothing).
"""
from __future__ import annotations

import json
import resource

import pytest
import torch
from safetensors.torch import load_file, save_file

from segmodels.checkpoints import load_checkpoint, read_metadata, save_checkpoint
from segmodels.errors import MarsamError
from segmodels.networks import build_model


@pytest.fixture
def good(tmp_path):
    return save_checkpoint(tmp_path / "good.safetensors", build_model("unet", base=4), "ai4mars")


def _rewrite(src, dst, raw_meta: str | None = None, state_fn=None):
    state = load_file(str(src))
    if state_fn is not None:
        state = state_fn(state)
    raw = raw_meta if raw_meta is not None else json.dumps(read_metadata(src))
    save_file(state, str(dst), metadata={"marsam": raw})
    return dst


def _edit(good, tmp_path, fn):
    meta = read_metadata(good)
    out = fn(dict(meta))
    return _rewrite(good, tmp_path / "edited.safetensors", json.dumps(out) if not isinstance(out, str) else out)


BAD_META = {
    "not json": lambda m: "{not json",
    "json list": lambda m: "[1, 2]",
    "json string": lambda m: '"unet"',
    "no model key": lambda m: {k: v for k, v in m.items() if k != "model"},
    "model_args list": lambda m: {**m, "model_args": [1, 2]},
    "base abc": lambda m: {**m, "model_args": {**m["model_args"], "base": "abc"}},
    "base -1": lambda m: {**m, "model_args": {**m["model_args"], "base": -1}},
    "base 1e9": lambda m: {**m, "model_args": {**m["model_args"], "base": 10 ** 9}},
    "base 4096": lambda m: {**m, "model_args": {**m["model_args"], "base": 4096}},
    "arg name newline": lambda m: {**m, "model_args": {**m["model_args"], "\n": None}},
    "unknown model": lambda m: {**m, "model": "resnet"},
    "label spec number": lambda m: {**m, "label_spec": 7},
    "no label spec": lambda m: {k: v for k, v in m.items() if k != "label_spec"},
    "zero std": lambda m: {**m, "normalization": {"in_channels": 1, "mean": 0.5, "std": 0}},
    "training list": lambda m: {**m, "training": []},
}


@pytest.mark.parametrize("kind", sorted(BAD_META))
def test_malformed_metadata_is_one_line(good, tmp_path, kind):
    path = _edit(good, tmp_path, BAD_META[kind])
    with pytest.raises(MarsamError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_huge_base_allocates_nothing(good, tmp_path):
    """base=4096 would allocate ~4.8 GB when built; checking shapes on the meta device first costs nothing."""
    path = _edit(good, tmp_path, BAD_META["base 4096"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(MarsamError, match="do not fit|cannot be built"):
        load_checkpoint(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"peak RSS grew by {grown_mb:.0f} MB while refusing the checkpoint"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(good, tmp_path, value):
    def poison(state):
        k = next(k for k, v in state.items() if v.is_floating_point())
        state[k] = state[k].clone()
        state[k].view(-1)[0] = value
        return state
    path = _rewrite(good, tmp_path / "nan.safetensors", state_fn=poison)
    with pytest.raises(MarsamError, match="NaN or infinite weights"):
        load_checkpoint(path)


def test_good_checkpoint_still_loads(good):
    ck = load_checkpoint(good)
    assert ck.model_name == "unet" and ck.model_args["base"] == 4
    x = torch.zeros(1, 1, 32, 32)
    assert ck.model(x).shape == (1, 4, 32, 32)
