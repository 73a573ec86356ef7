"""Losses (CE/focal, KD, CWD) and split-level metrics, checked against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.config import load_config
from distill.losses import (cwd_loss, distillation_loss, inverse_frequency_weights, kd_loss,
                            segmentation_loss)
from distill.metrics import SegmentationMetrics
from segmodels import MarsamError


def _batch(seed=0, k=4):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, k, 8, 8, generator=g)
    t = torch.randn(2, k, 8, 8, generator=g)
    y = torch.randint(0, k, (2, 8, 8), generator=g)
    y[:, :2] = 255
    return s, t, y


def test_kd_is_zero_for_identical_logits_and_ignores_unlabelled_pixels():
    s, t, y = _batch()
    assert kd_loss(s, s, y).item() == pytest.approx(0.0, abs=1e-6)
    base = kd_loss(s, t, y)
    t2 = t.clone()
    t2[:, :, :2] = 100.0 * torch.randn_like(t2[:, :, :2])     # change only ignored pixels
    assert kd_loss(s, t2, y).item() == pytest.approx(base.item(), rel=1e-6)
    # T^2 * KL by hand on the labelled pixels
    T = 2.0
    p_t = F.softmax(t / T, 1)
    kl = (p_t * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1)
    assert base.item() == pytest.approx((kl[y != 255].mean() * T * T).item(), rel=1e-5)


def test_distillation_mix_and_alpha_one_is_cross_entropy():
    s, t, y = _batch(1)
    loss, parts = distillation_loss(s, t, y, alpha=1.0)
    assert loss.item() == pytest.approx(F.cross_entropy(s, y, ignore_index=255).item(), rel=1e-5)
    loss, parts = distillation_loss(s, t, y, alpha=0.3, temperature=3.0)
    assert loss.item() == pytest.approx(0.3 * parts["ce"] + 0.7 * parts["kd"], rel=1e-5)
    plain, _ = distillation_loss(s, t, y, alpha=0.5)
    loss_cwd, parts = distillation_loss(s, t, y, alpha=0.5, cwd=2.0)
    assert parts["cwd"] > 0
    assert loss_cwd.item() == pytest.approx(plain.item() + 2.0 * parts["cwd"], rel=1e-5)


def test_cwd_zero_when_equal_and_masks_ignored_positions():
    s, t, y = _batch(2)
    assert cwd_loss(s, s, y).item() == pytest.approx(0.0, abs=1e-6)
    base = cwd_loss(s, t, y)
    assert base.item() > 0
    t2 = t.clone()
    t2[:, :, :2] = 50.0
    assert cwd_loss(s, t2, y).item() == pytest.approx(base.item(), rel=1e-5)


def test_focal_and_weighted_ce():
    s, _, y = _batch(3)
    ce = segmentation_loss(s, y)
    assert ce.item() == pytest.approx(F.cross_entropy(s, y, ignore_index=255).item(), rel=1e-6)
    assert segmentation_loss(s, y, focal_gamma=2.0).item() < ce.item()
    w = torch.tensor([1.0, 2.0, 0.5, 1.0])
    assert segmentation_loss(s, y, w).item() == pytest.approx(
        F.cross_entropy(s, y, weight=w, ignore_index=255).item(), rel=1e-5)
    assert segmentation_loss(s, torch.full_like(y, 255)).item() == 0.0


def test_inverse_frequency_weights():
    w = inverse_frequency_weights(np.array([900, 300, 10, 0]))
    assert w[3] == 0 and w[0] < w[1] < w[2]
    assert w[:3].mean().item() == pytest.approx(1.0)
    assert (w[2] / w[0]).item() == pytest.approx(10.0)      # clipped at max_ratio


def test_metrics_from_the_whole_split_confusion_matrix():
    m = SegmentationMetrics(3)
    # truth 0 0 1 1 2 255, prediction 0 1 1 1 0 (2) -> ignore the last pixel
    target = torch.tensor([[[0, 0, 1, 1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0, 2]]])
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 10
    m.update(logits, target)
    r = m.compute(["a", "b", "c"])
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["iou_per_class"] == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3), "c": 0.0}
    assert r["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert r["pixel_accuracy"] == pytest.approx(3 / 5)
    assert r["precision_per_class"]["c"] == 0.0             # never predicted but present: 0, not undefined
    assert r["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert r["labelled_pixels"] == 5
    # confident (p ~ 1) and right 3/5 of the time: ECE ~ 0.4
    assert r["ece"] == pytest.approx(0.4, abs=1e-3)


def test_metrics_refuse_targets_beyond_the_model_classes():
    m = SegmentationMetrics(2)
    with pytest.raises(MarsamError, match="model has 2 classes"):
        m.update(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 3))


def test_config_profiles_overrides_and_errors(tmp_path):
    cpu, gpu = load_config("cpu"), load_config("gpu")
    assert (gpu.size, gpu.teacher_base, gpu.student_base, gpu.epochs) == (256, 64, 16, 40)
    assert cpu.size < gpu.size
    c = load_config("cpu", ["epochs=7", "lr=3e-4", "limit=null", "data=123", "augment=false"])
    assert (c.epochs, c.lr, c.limit, c.data, c.augment) == (7, 3e-4, None, "123", False)
    y = tmp_path / "c.yaml"
    y.write_text("size: 64\nalpha: 0.7\n")
    assert (load_config(y).size, load_config(y).alpha) == (64, 0.7)
    with pytest.raises(MarsamError, match="unknown setting"):
        load_config("cpu", ["epoch=3"])
    with pytest.raises(MarsamError, match="not key=value"):
        load_config("cpu", ["epochs"])
    with pytest.raises(MarsamError, match="neither a profile"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(MarsamError, match="multiple of 16"):
        load_config("cpu", {"size": 100})
    assert math.isfinite(c.temperature)


def test_config_types_are_enforced():
    assert load_config("cpu", {"lr": "3e-4"}).lr == 3e-4            # YAML 1.1 reads 3e-4 as a string
    assert load_config("cpu", {"epochs": "4"}).epochs == 4
    with pytest.raises(MarsamError, match="epochs must be int"):
        load_config("cpu", ["epochs=many"])
    with pytest.raises(MarsamError, match="augment must be bool"):
        load_config("cpu", ["augment=3"])
