"""The decoder's in-memory training loop: same training as distill's shared loop, files written
once at the end, cancellation, threads given back, and bad inputs refused with MarsamError."""
from __future__ import annotations

import pytest
import torch

from distill.config import TrainConfig
from distill.decoder_loop import default_threads, fit_in_memory, stack_samples, torch_threads  # re-exported from segmodels.device
from distill.teacher import SupervisedTask
from distill.train_loop import fit
from segmodels import MarsamError, load_checkpoint
from segmodels.labels import AI4MARS
from segmodels.networks import build_model

NORM = {"in_channels": 256, "input": "sam_embedding", "mean": None, "std": None}


def _data(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 256, 64, 64, generator=g)
    y = (x[:, :4].mean(1, keepdim=True) > 0).long()          # learnable: sign of the mean channel
    y = torch.nn.functional.interpolate(y.float(), size=(size, size))[:, 0].long()
    y[:, :, :4] = 255                                       # an unlabelled strip
    return x, y


def _config(**kw):
    values = dict(epochs=3, batch_size=2, lr=0.01, warmup_epochs=0.5, threads=1, device="cpu", val_split=None,
                  decoder_width=16, decoder_out_size=32, early_stopping=0, resume=False)
    values.update(kw)
    return TrainConfig(**values).validate()


def _model(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return build_model("sam_decoder", num_classes=4, width=16, out_size=32, dropout=dropout)


class _Listed(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = list(x), list(y)
        self.label_spec = AI4MARS

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "index": i}

    def class_counts(self):
        import numpy as np
        c = np.zeros(4, np.int64)
        for y in self.y:
            c += np.bincount(y.numpy().ravel(), minlength=256)[:4]
        return c


def test_in_memory_loop_trains_the_same_decoder_as_the_shared_loop(tmp_path):
    # one sample (no shuffling order can differ) and no dropout (the shared loop's DataLoader draws
    # from torch's global generator, which shifts the dropout masks; the arithmetic is the same)
    x, y = _data(n=1)
    # the shared loop uses channels-last on GPU only, and float32 on every CPU
    cfg = _config(batch_size=1, channels_last=False, decoder_cpu_bf16=False)
    fast = fit_in_memory(_model(dropout=0.0), (x, y), None, cfg, tmp_path / "fast", AI4MARS, NORM, {})
    ds = _Listed(x, y)
    src = type("Src", (), {"label_spec": AI4MARS, "normalization": NORM})()
    task = SupervisedTask(_model(dropout=0.0), src, cfg, "decoder", {})
    task.normalization = NORM
    shared = fit(task, ds, None, cfg, tmp_path / "shared")
    a, b = load_checkpoint(fast.best).model.state_dict(), load_checkpoint(shared.best).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert [r["train_loss"] for r in fast.history] == pytest.approx([r["train_loss"] for r in shared.history],
                                                                    rel=1e-4)


def test_cpu_bf16_autocast_only_where_the_cpu_has_bf16_and_trains_like_float32(tmp_path):
    from segmodels.device import autocast, cpu_bf16_supported
    conv = torch.nn.Conv2d(4, 4, 3)
    with autocast(torch.device("cpu"), True, cpu_bf16=True):
        out = conv(torch.randn(1, 4, 8, 8))
    assert out.dtype == (torch.bfloat16 if cpu_bf16_supported() else torch.float32)
    with autocast(torch.device("cpu"), True):             # asked for nothing: float32
        assert conv(torch.randn(1, 4, 8, 8)).dtype == torch.float32
    x, y = _data(n=4)
    runs = {bf: fit_in_memory(_model(dropout=0.0), (x, y), None, _config(epochs=6, decoder_cpu_bf16=bf),
                              tmp_path / str(bf), AI4MARS, NORM, {}) for bf in (False, True)}
    assert load_checkpoint(runs[True].best).training["cpu_bf16"] is cpu_bf16_supported()
    assert load_checkpoint(runs[False].best).training["cpu_bf16"] is False
    f32, b16 = ([r["train_loss"] for r in runs[k].history] for k in (False, True))
    assert b16[-1] < b16[0] and b16[-1] == pytest.approx(f32[-1], rel=0.1)   # the same fit, within bf16 noise
    for t in load_checkpoint(runs[True].best).model.state_dict().values():
        assert t.dtype != torch.bfloat16                 # master weights stay float32
    from distill.config import load_config
    with pytest.raises(MarsamError, match="decoder_cpu_bf16 must be bool"):
        load_config("cpu", {"decoder_cpu_bf16": "maybe"})


def test_files_are_written_once_at_the_end_and_progress_is_reported(tmp_path):
    x, y = _data()
    seen = []
    r = fit_in_memory(_model(), (x, y), None, _config(epochs=4), tmp_path, AI4MARS, NORM, {"extra": 1},
                      progress=lambda e, t, m: seen.append((e, t, sorted(m))))
    assert [s[:2] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert r.stopped == "completed" and r.epochs_run == 4
    for name in ("best.safetensors", "last.safetensors", "history.csv", "curves.png", "summary.json", "config.yaml"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "resume.safetensors").exists()
    quiet = fit_in_memory(_model(), (x, y), None, _config(epochs=2), tmp_path / "q", AI4MARS, NORM, {}, plot=False)
    assert (tmp_path / "q" / "history.csv").is_file() and not (tmp_path / "q" / "curves.png").exists()
    assert quiet.epochs_run == 2
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    ck = load_checkpoint(r.best)
    assert ck.model_name == "sam_decoder" and ck.training["extra"] == 1 and ck.training["epoch"] == 4


def test_validation_keeps_the_best_epoch_and_cancel_leaves_last(tmp_path):
    x, y = _data(n=4)
    r = fit_in_memory(_model(), (x[:3], y[:3]), (x[3:], y[3:]), _config(epochs=3), tmp_path / "v", AI4MARS,
                      NORM, {})
    assert all("val_miou" in row for row in r.history)
    assert load_checkpoint(r.best).training["epoch"] == r.summary["best_epoch"]
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2
    c = fit_in_memory(_model(), (x, y), None, _config(epochs=50), tmp_path / "c", AI4MARS, NORM, {}, should_stop=stop)
    assert c.stopped == "cancelled" and c.epochs_run < 50
    assert (tmp_path / "c" / "last.safetensors").is_file()


def test_threads_are_given_back():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    assert 1 <= default_threads() <= max(1, before)


def test_bad_inputs_are_refused(tmp_path):
    x, y = _data()
    with pytest.raises(MarsamError, match="empty"):
        stack_samples([], [])
    with pytest.raises(MarsamError, match="empty"):
        fit_in_memory(_model(), (x[:0], y[:0]), None, _config(), tmp_path, AI4MARS, NORM, {})
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")                           # a corrupt embedding
    with pytest.raises(MarsamError, match="NaN"):
        fit_in_memory(_model(), (bad, y), None, _config(), tmp_path / "nan", AI4MARS, NORM, {})
    with pytest.raises(MarsamError, match="learning rate|loss became"):
        fit_in_memory(_model(), (x, y), None, _config(lr=1e30), tmp_path / "lr", AI4MARS, NORM, {})


def test_gui_threads_can_be_set_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("MARSAM_GUI_THREADS", "2")
    assert default_threads() == 2
    for bad in ("two", "0"):
        monkeypatch.setenv("MARSAM_GUI_THREADS", bad)
        with pytest.raises(MarsamError, match="MARSAM_GUI_THREADS"):
            default_threads()
