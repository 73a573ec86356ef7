"""The shipped pretrained student loads by name, predicts AI4Mars classes and has its card."""
from __future__ import annotations

import pytest
import torch

from distill import list_pretrained, load_pretrained
from distill.pretrained import PRETRAINED_DIR, model_card
from segmodels import AI4MARS, MarsamError
from segmodels.images import load_image
from segmodels.stats import count_params


def test_pretrained_student_loads_by_name():
    assert "ai4mars-student" in list_pretrained()
    ckpt = load_pretrained("ai4mars-student")
    assert ckpt.model_name == "unet" and ckpt.label_spec.classes == AI4MARS.classes
    assert count_params(ckpt.model) <= 2_000_000
    assert ckpt.training["kind"] == "student"
    assert (PRETRAINED_DIR / "ai4mars-student.safetensors").stat().st_size < 8 * 2**20
    card = model_card("ai4mars-student")
    assert "val mIoU" in card and "## Exact commands" in card and "## The issue's targets" in card
    # the card's numbers are the checkpoint's own: its calibration is the one the card reports
    cal = ckpt.training.get("calibration")
    if cal:
        assert f"T = {cal['temperature'] if cal.get('applied', True) else cal['fitted_temperature']}" in card


def test_pretrained_student_segments_a_real_navcam_image(ai4mars_dir):
    ckpt = load_pretrained("ai4mars-student")
    path = sorted((ai4mars_dir / "images").iterdir())[0]
    size = ckpt.training["config"]["size"]
    x = ckpt.normalization.to_model_input(load_image(path))
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    with torch.no_grad():
        pred = ckpt.model(x).argmax(1)
    assert pred.shape == (1, size, size) and int(pred.max()) < 4


def test_unknown_pretrained_name():
    with pytest.raises(MarsamError, match="no pretrained model named 'mars-giant'"):
        load_pretrained("mars-giant")
