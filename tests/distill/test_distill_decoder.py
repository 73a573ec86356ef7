"""The SAM domain decoder on cached embeddings (tiny random SAM, the real code path),
distillation from it, and the label-efficiency experiment."""
from __future__ import annotations

import json

import numpy as np
import pytest

from distill import evaluate, label_efficiency, open_dataset, train_decoder, train_student
from annotate.decoder_predictor import SamDecoderPredictor, decoder_image_logits
from distill.decoder import EmbeddingDataset, _sam_frame_target
from segmodels import MarsamError, load_checkpoint
from segmodels.inference import class_probs
from segmodels.predictors import load_predictor

from distill_testdata import tiny_config


def test_targets_follow_sams_resize_and_padding():
    mask = np.zeros((50, 100), np.uint8)
    mask[:, 50:] = 1
    t = _sam_frame_target(mask, (512, 1024), 256, 255)
    assert t.shape == (256, 256)
    assert (t[128:] == 255).all()                   # SAM's padding below the image is ignored
    assert (t[:128, :128] == 0).all() and (t[:128, 128:] == 1).all()


def test_decoder_trains_on_cached_embeddings(folder_data, tmp_path, tiny_sam, monkeypatch):
    cfg = tiny_config(folder_data, limit=2, val_limit=1, epochs=2, batch_size=2)
    calls = {"encoder": 0}
    original = tiny_sam.sam.image_encoder.forward

    def counting(x):
        calls["encoder"] += 1
        return original(x)
    monkeypatch.setattr(tiny_sam.sam.image_encoder, "forward", counting)
    result = train_decoder(cfg, tmp_path / "dec", tiny_sam)
    # 2 train + 1 val images embedded once each (batched), never again inside the epochs
    assert 1 <= calls["encoder"] <= 3
    ck = load_checkpoint(result.best)
    assert ck.model_name == "sam_decoder" and ck.model_args["out_size"] == 64
    assert ck.training["sam"]["model_type"] == "tiny"
    # a second run hits the on-disk embedding cache: the encoder does not run at all
    calls["encoder"] = 0
    train_decoder(tiny_config(folder_data, limit=2, val_limit=1, epochs=1, resume=False), tmp_path / "dec2", tiny_sam)
    assert calls["encoder"] == 0

    val = open_dataset(folder_data, "val", size=None, channels=3, mixed_sizes=True)
    logits = decoder_image_logits(ck.model, tiny_sam, val.images[0])
    assert logits.shape == (1, 4, 40, 40)
    # the one resolver picks the SAM-decoder kind from the checkpoint; without SAM it says what is missing
    p = load_predictor(ck.path, sam=tiny_sam)
    assert isinstance(p, SamDecoderPredictor) and not p.normalization.reads_pixels
    np.testing.assert_allclose(p.probabilities(val.images[0]), class_probs(logits)[0].numpy(), atol=1e-6)
    with pytest.raises(MarsamError, match="SAM image embeddings.*give it a SAM model"):
        load_predictor(ck).probabilities(val.images[0])
    ev = evaluate(ck, val, sam_model=tiny_sam)
    assert 0.0 <= ev["miou"] <= 1.0 and ev["model"] == "sam_decoder" and ev["images"] == 4


def test_embedding_dataset_targets_ignore_padding(folder_data, tiny_sam):
    src = open_dataset(folder_data, "train", size=None, channels=3, limit=2, mixed_sizes=True)
    ds = EmbeddingDataset(src, tiny_sam, out_size=64)
    item = ds[0]
    assert item["x"].shape == (256, 64, 64) and item["y"].shape == (64, 64)
    assert ds.class_counts().sum() > 0


def test_student_distilled_from_decoder_and_average(folder_data, tmp_path, tiny_sam):
    dec = train_decoder(tiny_config(folder_data, limit=3, val_limit=2, epochs=1), tmp_path / "dec", tiny_sam)
    from distill import train_teacher
    teacher = train_teacher(tiny_config(folder_data, epochs=1, limit=3, val_limit=2), tmp_path / "t")
    s = train_student(tiny_config(folder_data, epochs=1, limit=3, val_limit=2, distill_from="decoder"),
                      tmp_path / "s", decoder=dec.best, sam_model=tiny_sam)
    assert s.summary["distill_from"] == "decoder" and "train_kd" in s.history[0]
    a = train_student(tiny_config(folder_data, epochs=1, limit=3, val_limit=2, distill_from="average", cwd=0.5),
                      tmp_path / "a", teacher=teacher.best, decoder=dec.best, sam_model=tiny_sam)
    assert a.summary["teacher"] and a.summary["decoder"] and "train_cwd" in a.history[0]


def test_label_efficiency_experiment(folder_data, tmp_path, tiny_sam):
    cfg = tiny_config(folder_data, epochs=1, val_limit=2, batch_size=2)
    table = label_efficiency(cfg, tmp_path / "le", model="decoder", ns=[2, 4], sam_model=tiny_sam)
    assert [r["n"] for r in table["rows"]] == [2, 4]
    assert all(0 <= r["miou"] <= 1 for r in table["rows"])
    data = json.loads(open(table["files"]["json"]).read())
    assert data["rows"][1]["n"] == 4
    assert "| 4 |" in open(table["files"]["markdown"]).read()
    assert (tmp_path / "le" / "label_efficiency.png").is_file()
    # student variant without a teacher (labels only); N beyond the split is refused
    st = label_efficiency(tiny_config(folder_data, epochs=1, val_limit=2, distill=False), tmp_path / "les",
                          model="student", ns=[3])
    assert st["rows"][0]["n"] == 3
    from segmodels import MarsamError
    with pytest.raises(MarsamError, match="fewer than N"):
        label_efficiency(cfg, tmp_path / "x", model="student", ns=[50])
