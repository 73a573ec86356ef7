"""Uncertainty: entropy in [0, log K], MC dropout (dropout sampling, BatchNorm in eval, mutual
information nonzero only with dropout), aleatoric variance, ECE and the reliability diagram."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segmodels import MarsamError, build_model
from segmodels.explain import entropy_map, mc_dropout_map
from segmodels.uncertainty import (CalibrationBins, aleatoric_variance, expected_calibration_error,
                                   max_prob_uncertainty, mc_dropout, mc_dropout_mode, predictive_entropy,
                                   reliability_diagram)


def test_entropy_bounds():
    k = 4
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=5, size=(k, 16, 16))
    probs = np.exp(logits) / np.exp(logits).sum(0)
    probs[:, 0, 0] = 1.0 / k                      # uniform: the maximum
    probs[:, 0, 1] = [1.0, 0.0, 0.0, 0.0]         # certain: zero
    ent = predictive_entropy(probs.astype(np.float32))
    assert ent.shape == (16, 16) and np.isfinite(ent).all()
    assert ent.min() >= 0 and ent.max() <= math.log(k) + 1e-6
    assert ent[0, 0] == pytest.approx(math.log(k), abs=1e-5) and ent[0, 1] == pytest.approx(0, abs=1e-6)
    mp = max_prob_uncertainty(probs)
    assert mp.min() >= 0 and mp.max() <= 1 - 1 / k + 1e-6 and mp[0, 1] == pytest.approx(0)


def test_entropy_map_of_a_model():
    torch.manual_seed(0)
    model = build_model("unet", base=4).eval()
    e = entropy_map(model, np.random.default_rng(0).random((37, 45)).astype(np.float32))
    assert e.map.shape == (37, 45) and e.map.dtype == np.float32
    assert e.map.min() >= 0 and e.map.max() <= math.log(4) + 1e-6
    assert e.extras["max_prob_uncertainty"].shape == (37, 45)


class _Recorder:
    """Records the training flag of every BatchNorm and Dropout module at each call."""

    def __init__(self, model):
        self.modes = {"bn": set(), "dropout": set()}
        for m in model.modules():
            key = "bn" if isinstance(m, nn.BatchNorm2d) else "dropout" if isinstance(m, nn.Dropout2d) else None
            if key:
                m.register_forward_pre_hook(lambda mod, inp, key=key: self.modes[key].add(mod.training))


def _sensitive(model):
    """An untrained net in eval mode has BatchNorm statistics (0, 1) that shrink deep activations
    to ~1e-4, so its dropout changes nothing; set the statistics from one batch, as training would."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one batch sets the statistics
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(8, model.in_channels, 32, 32))
        model.head.weight.mul_(10.0)
    return model


def test_mc_dropout_samples_dropout_only_and_restores_modes():
    torch.manual_seed(0)
    model = _sensitive(build_model("unet", base=4, dropout=0.3)).train()  # caller left it in train mode
    rec = _Recorder(model)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    res = mc_dropout(model, torch.randn(1, 1, 32, 32), samples=6, batch_size=4)
    assert rec.modes["bn"] == {False}, "BatchNorm must stay in eval mode during MC dropout"
    assert rec.modes["dropout"] == {True}
    assert torch.equal(bn.running_mean, stats)
    assert all(m.training for m in model.modules()), "the caller's modes are restored"
    assert res.mutual_information.shape == (32, 32) and res.mean_probs.shape == (4, 32, 32)
    assert res.mutual_information.min() >= 0 and res.mutual_information.mean() > 1e-3
    assert np.all(res.predictive_entropy + 1e-5 >= res.expected_entropy)
    np.testing.assert_allclose(res.mean_probs.sum(0), 1.0, atol=1e-5)


def test_mutual_information_is_zero_without_dropout():
    torch.manual_seed(0)
    model = _sensitive(build_model("unet", base=4, dropout=0.3)).eval()
    x = torch.randn(1, 1, 32, 32)
    with_dropout = mc_dropout(model, x, samples=4).mutual_information
    for m in model.modules():
        if isinstance(m, nn.Dropout2d):
            m.p = 0.0
    without = mc_dropout(model, x, samples=4).mutual_information
    assert with_dropout.mean() > 1e-3
    assert without.max() < 1e-5


def test_mc_dropout_refuses_a_model_without_dropout():
    model = build_model("unet", base=4, dropout=0.0).eval()
    with pytest.raises(MarsamError, match="no dropout layers"):
        mc_dropout(model, torch.randn(1, 1, 32, 32))
    with pytest.raises(MarsamError, match="at least 2 samples"):
        mc_dropout_map(build_model("unet", base=4, dropout=0.2), torch.randn(1, 1, 32, 32), samples=1)


def test_mc_dropout_mode_context_restores_on_error():
    model = build_model("unet", base=4, dropout=0.3).eval()
    with pytest.raises(RuntimeError):
        with mc_dropout_mode(model):
            raise RuntimeError("boom")
    assert not any(m.training for m in model.modules())


def test_aleatoric_variance():
    torch.manual_seed(0)
    model = build_model("unet", base=4, aleatoric=True).eval()
    res = aleatoric_variance(model, torch.randn(1, 1, 24, 40))
    assert res.variance.shape == (4, 24, 40) and (res.variance > 0).all()
    assert res.predicted_variance.shape == (24, 40)
    picked = np.take_along_axis(res.variance, res.labels[None].astype(np.int64), 0)[0]
    np.testing.assert_allclose(res.predicted_variance, picked)
    with pytest.raises(MarsamError, match="no aleatoric head"):
        aleatoric_variance(build_model("unet", base=4), torch.randn(1, 1, 24, 40))


def test_ece_known_values(tmp_path):
    # 4 pixels at confidence 0.9 (3 right), 2 at 0.6 (both right), 1 ignored
    probs = np.zeros((2, 1, 7), np.float32)
    probs[0, 0, :4], probs[1, 0, :4] = 0.9, 0.1
    probs[0, 0, 4:6], probs[1, 0, 4:6] = 0.4, 0.6
    probs[:, 0, 6] = 0.5
    labels = np.array([[0, 0, 0, 1, 1, 1, 255]], np.uint8)
    ece, bins = expected_calibration_error(probs, labels, n_bins=10)
    expected = (4 * abs(0.75 - 0.9) + 2 * abs(1.0 - 0.6)) / 6
    assert ece == pytest.approx(expected, abs=1e-6)
    assert bins.total == 6
    reliability_diagram(bins, tmp_path / "rel.png")
    with Image.open(tmp_path / "rel.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_ece_of_a_calibrated_model_is_small():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, size=(1, 200, 200))
    probs = np.concatenate([conf, 1 - conf]).astype(np.float32)
    labels = np.where(rng.random((200, 200)) < conf[0], 0, 1).astype(np.uint8)
    bins = CalibrationBins(n_bins=10)
    for i in range(0, 200, 50):  # accumulated over several "images"
        bins.update(probs[:, i:i + 50], labels[i:i + 50])
    assert bins.ece() < 0.01
    overconfident = np.concatenate([np.full((1, 200, 200), 0.99), np.full((1, 200, 200), 0.01)]).astype(np.float32)
    assert expected_calibration_error(overconfident, labels)[0] > 0.1


def test_ece_bad_input():
    with pytest.raises(MarsamError, match="K x H x W"):
        expected_calibration_error(np.zeros((2, 4, 4)), np.zeros((5, 5)))
    with pytest.raises(MarsamError, match="no labelled pixels"):
        expected_calibration_error(np.full((2, 4, 4), 0.5), np.full((4, 4), 255))


def test_single_pass_maps_agree_with_the_separate_measures():
    import torch
    from segmodels.uncertainty import max_prob_uncertainty, predictive_entropy, single_pass_maps
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 530, 17)).astype(np.float32) * 3       # more than two blocks of rows
    probs = torch.softmax(torch.from_numpy(logits), 0).numpy()
    probs[:, 0, 0] = [1, 0, 0, 0]                                  # a certain pixel: entropy exactly 0
    labels, ent, conf = single_pass_maps(probs)
    assert labels.dtype == np.uint8 and ent.dtype == np.float32 and conf.dtype == np.float32
    np.testing.assert_array_equal(labels, probs.argmax(0))
    np.testing.assert_allclose(ent, predictive_entropy(probs), atol=1e-5)
    np.testing.assert_allclose(conf, 1 - max_prob_uncertainty(probs), atol=1e-6)
    assert ent[0, 0] == 0 and ent.max() <= np.log(4) + 1e-5
