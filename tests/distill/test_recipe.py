"""The recipe machinery: device batches and their augmentation, class weightings, Dice, EMA,
KD on unlabelled pixels, the teacher run once, budget-fitted epochs, temperature calibration,
the recipe study and the strided-stem student; bad settings refused before training."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from distill import open_dataset, train_student, train_teacher
from distill.batches import AUGMENT_POLICIES, DeviceBatches, apply_augment, augment_policy
from distill.calibrate import calibrate_checkpoint
from distill.config import load_config
from distill.losses import class_weights, dice_loss, kd_loss
from distill.recipe import choose_recipe, default_variants, run_study
from segmodels import MarsamError, build_model, load_checkpoint
from segmodels.uncertainty.temperature import fit_temperature, fold_temperature

from distill_testdata import tiny_config


def test_device_batches_cover_the_order_and_normalise(folder_data):
    ds = open_dataset(folder_data, "train", 32)
    order = [5, 1, 3, 0, 7, 2, 6, 4]
    got = list(DeviceBatches(ds, torch.device("cpu"), 3, order=order))
    assert [b["index"].tolist() for b in got] == [[5, 1, 3], [0, 7, 2], [6, 4]]
    x0 = (ds.image_float(5) - ds.mean) / ds.std
    assert torch.allclose(got[0]["x"][0, 0], torch.from_numpy(x0), atol=0.02)  # uint8 rounding of the grey mean
    assert torch.equal(got[0]["y"][0], torch.from_numpy(ds.masks[5].astype(np.int64)))


def test_augment_keeps_labels_aligned_and_marks_invented_pixels():
    # an image whose label is a function of the pixel value: any warp must keep them consistent
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(6, 1, 48, 48)
    img[:, :, :, 24:] = 1.0
    mask = (img[:, 0] > 0.5).long()
    aug = dataclasses.replace(AUGMENT_POLICIES["strong"], brightness=0, contrast=0, gamma=0, blur_p=0, noise=0)
    out, m, _, valid = apply_augment(aug, img, mask, g)
    lab = m != 255
    assert lab.any()
    # away from the edge (bilinear blends there), the label agrees with the warped image
    agree = ((out[:, 0] > 0.5).long() == m) | ~lab | ((out[:, 0] - 0.5).abs() < 0.45)
    assert agree.float().mean() > 0.99
    assert torch.equal(valid, lab)          # every invented pixel is ignored, nothing else
    assert out.min() >= 0 and out.max() <= 1


def test_augment_is_reproducible_per_seed_and_epoch(folder_data):
    ds = open_dataset(folder_data, "train", 32)
    pol = augment_policy("strong")

    def first(epoch):
        b = DeviceBatches(ds, torch.device("cpu"), 4, augment=pol, seed=3)
        b.set_epoch(epoch)
        return next(iter(b))["x"]
    assert torch.equal(first(0), first(0))
    assert not torch.equal(first(0), first(1))


def test_class_weightings():
    counts = np.array([400, 200, 100, 50, 0])
    inv, sq, med = (class_weights(counts, s) for s in ("inverse", "sqrt", "median"))
    assert class_weights(counts, "none") is None
    for w in (inv, sq, med):
        assert w[4] == 0 and torch.isclose(w[:4].mean(), torch.tensor(1.0))
        assert torch.all(w[:3] <= w[1:4])                    # rarer class, larger weight
    assert (sq[3] / sq[0]) < (inv[3] / inv[0])               # sqrt is the milder one
    with pytest.raises(MarsamError, match="unknown class weighting"):
        class_weights(counts, "log")


def test_dice_and_kd_pixels():
    y = torch.tensor([[[0, 1], [255, 1]]])
    perfect = torch.tensor([[[[9.0, -9], [0, -9]], [[-9.0, 9], [0, 9]]]])
    assert dice_loss(perfect, y) < 0.01
    assert dice_loss(-perfect, y) > 0.7   # all wrong; eps=1 smoothing on 3 labelled pixels leaves 0.75
    assert dice_loss(perfect, torch.full_like(y, 255)) == 0
    s, t = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)
    only_labelled = kd_loss(s, t, y)
    everywhere = kd_loss(s, t, y, pixels=torch.ones_like(y, dtype=torch.bool))
    assert not torch.isclose(only_labelled, everywhere)


def test_bad_training_settings_fail_before_training(folder_data):
    for key, value, msg in (("loss", "lovasz2", "unknown loss"), ("class_weighting", "log", "unknown class_weighting"),
                            ("augment_policy", "wild", "unknown augment_policy"), ("kd_pixels", "some", "kd_pixels"),
                            ("ema", "1.5", "ema must be"), ("student_stem_stride", "3", "student_stem_stride")):
        with pytest.raises(MarsamError, match=msg):
            load_config("cpu", {key: value})


def test_teacher_of_another_size_is_refused_before_training(folder_data, tmp_path):
    t = train_teacher(tiny_config(folder_data, epochs=1), tmp_path / "t")
    with pytest.raises(MarsamError, match="trained at 32 px"):
        train_student(tiny_config(folder_data, epochs=1, size=48), tmp_path / "s", teacher=t.best)


def test_recipe_training_end_to_end(folder_data, tmp_path):
    """EMA, Dice, sqrt weights, strong augmentation, KD on all pixels with the teacher run once,
    and the strided-stem student, in one short distillation."""
    t = train_teacher(tiny_config(folder_data, epochs=1), tmp_path / "t")
    cfg = tiny_config(folder_data, epochs=2, ema=0.99, loss="ce+dice", class_weighting="sqrt",
                      augment_policy="strong", kd_pixels="all", teacher_once=True, student_stem_stride=2)
    r = train_student(cfg, tmp_path / "s", teacher=t.best)
    ck = load_checkpoint(r.best)
    assert ck.model_args["stem_stride"] == 2
    assert ck.training["teacher_once"] and ck.training["kd_pixels"] == "all"
    assert ck.training["class_weighting"] == "sqrt"
    hist = r.history
    assert "train_dice" in hist[0] and "train_kd" in hist[0]
    assert r.summary["ema"] == 0.99


def test_epochs_within_budget():
    from distill.stopping import epochs_within_budget
    # 2 epochs done in 20 s, 10 s each, 100 s budget (97 usable): 7 more fit
    assert epochs_within_budget(60, 2, 10.0, 20.0, 100.0) == 9
    assert epochs_within_budget(5, 2, 10.0, 20.0, 100.0) == 5      # never more than asked
    assert epochs_within_budget(60, 2, 10.0, 150.0, 100.0) == 2    # already over: stop at what is done


def test_fit_epochs_to_budget_records_the_plan(folder_data, tmp_path):
    cfg = tiny_config(folder_data, epochs=2, max_minutes=30, fit_epochs_to_budget=True)
    r = train_teacher(cfg, tmp_path / "t")
    assert r.summary["epochs_planned"] == 2 and r.stopped == "completed"


def test_temperature_fit_and_fold(folder_data, tmp_path):
    torch.manual_seed(0)
    z = torch.randn(20000, 3) * 2.0                        # calibrated by construction:
    y = torch.multinomial(torch.softmax(z, 1), 1)[:, 0]    # labels drawn from softmax(z)
    t = fit_temperature(z * 4, y)                          # 4x over-confident logits
    assert 3.6 < t < 4.4
    m = build_model("unet", in_channels=1, num_classes=3, base=4).eval()
    x = torch.randn(1, 1, 32, 32)
    before = m(x)
    after = fold_temperature(m, 2.0)(x)
    assert torch.allclose(after, before / 2.0, atol=1e-5)
    with pytest.raises(MarsamError, match="no labelled pixel"):
        fit_temperature(z, torch.full_like(y, 255))


def test_calibrate_checkpoint_keeps_accuracy(folder_data, tmp_path):
    r = train_teacher(tiny_config(folder_data, epochs=2), tmp_path / "t")
    val = open_dataset(folder_data, "val", 32)
    try:
        rep = calibrate_checkpoint(r.best, val, tmp_path / "cal.safetensors")
    except MarsamError as e:          # a 2-epoch model may be too close to guessing to calibrate
        assert "outside [0.05, 20]" in str(e)
        return
    ck = load_checkpoint(tmp_path / "cal.safetensors")
    assert ck.training["calibration"]["temperature"] == rep["temperature"]
    assert rep["ece_after"] <= rep["ece_before"] + 1e-6          # never worse: an unhelpful T is not applied
    assert rep["applied"] == (rep["temperature"] != 1.0 or rep["fitted_temperature"] == 1.0)
    with pytest.raises(MarsamError, match="already calibrated"):
        calibrate_checkpoint(tmp_path / "cal.safetensors", val, tmp_path / "cal2.safetensors")


def test_recipe_study_writes_table_and_choice(folder_data, tmp_path):
    cfg = tiny_config(folder_data, epochs=1)
    vs = [v for v in default_variants(1, cfg.lr) if v.name in ("current", "weights-sqrt", "tta-flip",
                                                                "arch-stem2-b16")]
    study = run_study(cfg, tmp_path / "study", variants=vs)
    md = (tmp_path / "study" / "recipe-study.md").read_text()
    assert study["complete"] and len(study["rows"]) == 4
    for v in vs:
        assert f"| {v.name} |" in md
    assert "marsam train student --no-distill" in md
    assert study["recipe"]["overrides"]["student_stem_stride"] == 2
    assert json.loads((tmp_path / "study" / "recipe-study.json").read_text())["rows"][0]["val_miou"] is not None


def test_recipe_study_reuses_finished_runs_and_trains_only_what_is_asked(folder_data, tmp_path):
    cfg = tiny_config(folder_data, epochs=1)
    vs = [v for v in default_variants(1, cfg.lr) if v.name in ("current", "weights-median", "aug-flip")]
    first = run_study(cfg, tmp_path / "s", variants=vs, only=["current"])
    assert [r["name"] for r in first["rows"]] == ["current", "weights-median"] and not first["complete"]
    assert not (tmp_path / "s" / "aug-flip").exists()
    trained = (tmp_path / "s" / "current" / "best.safetensors").stat().st_mtime_ns
    second = run_study(cfg, tmp_path / "s", variants=vs)               # continues: trains aug-flip only
    assert second["complete"] and [r["name"] for r in second["rows"]] == ["current", "weights-median", "aug-flip"]
    med = second["rows"][1]                                            # the same training as current: copied
    assert med["identical_to"] == "current" and med["val_miou"] == second["rows"][0]["val_miou"]
    assert not (tmp_path / "s" / "weights-median").exists()
    counts = np.array([5e6, 9e6, 1.2e6, 2e5])
    assert torch.allclose(class_weights(counts, "median"), class_weights(counts, "inverse"))
    assert (tmp_path / "s" / "current" / "best.safetensors").stat().st_mtime_ns == trained
    assert second["rows"][0]["val_miou"] == first["rows"][0]["val_miou"]
    changed = run_study(dataclasses.replace(cfg, lr=cfg.lr * 2), tmp_path / "s", variants=vs, only=["current"])
    assert (tmp_path / "s" / "current" / "best.safetensors").stat().st_mtime_ns != trained   # other setting: retrained
    assert [r["name"] for r in changed["rows"]] == ["current", "weights-median"]
    with pytest.raises(MarsamError, match="unknown variant"):
        run_study(cfg, tmp_path / "s", variants=vs, only=["nope"])


def test_choose_recipe_rules():
    def r(name, group, miou, rock, o=None, tta=False):
        return {"name": name, "group": group, "val_miou": miou, "iou": {"big_rock": rock}, "overrides": o or {}, "tta": tta}
    rows = [r("plain", "baseline", 0.547, 0.001, {"class_weights": False, "augment_policy": "flip"}),
            r("current", "baseline", 0.31, 0.06),
            r("w-none", "weighting", 0.40, 0.0, {"class_weights": False}),     # won its group, but not overall
            r("aug-none", "augmentation", 0.5687, 0.13, {"augment_policy": "none"}),
            r("aug-flip", "augmentation", 0.5664, 0.16, {"augment_policy": "flip"}),
            r("long", "schedule", 0.36, 0.1, {"epochs": 12}),
            r("b16", "architecture", 0.313, 0.06, {"student_stem_stride": 2}),
            r("b20", "architecture", 0.322, 0.05, {"student_stem_stride": 2, "student_base": 20}),
            r("t", "tta", 0.3135, 0.06, tta=True)]
    c = choose_recipe(rows)
    # the best measured row (aug-none) ties with aug-flip within 0.005: better big rock wins; the
    # group winner w-none is NOT combined in (never measured with flips); b20 ties b16: smaller wins
    assert c["overrides"] == {"augment_policy": "flip", "student_stem_stride": 2} and c["test_time_flips"]
    assert choose_recipe(rows, tie=0.001)["overrides"]["augment_policy"] == "none"
    assert choose_recipe(rows, arch_tie=0.001)["overrides"]["student_base"] == 20
    with pytest.raises(MarsamError, match="no 'current'"):
        choose_recipe(rows[2:])


def test_strided_stem_student_shapes():
    m = build_model("unet", in_channels=1, num_classes=4, base=8, stem_stride=2)
    for hw in ((64, 64), (50, 70)):
        assert m(torch.randn(2, 1, *hw)).shape == (2, 4, *hw)
        assert m.features(torch.randn(1, 1, *hw)).shape[-2:] == hw
    with pytest.raises(MarsamError, match="stem_stride"):
        build_model("unet", stem_stride=4)


def test_evaluate_lists_and_draws_the_worst_images(folder_data, tmp_path):
    from distill.evaluate import evaluate, write_evaluation
    r = train_teacher(tiny_config(folder_data, epochs=1), tmp_path / "t")
    val = open_dataset(folder_data, "val", 32)
    res = evaluate(r.best, val, speed=False, worst=2)
    accs = [w["pixel_accuracy"] for w in res["worst"]]
    assert len(accs) == 2 and accs == sorted(accs)
    paths = write_evaluation(res, tmp_path / "e.json", val.label_spec)
    assert (tmp_path / "e-worst.png").is_file() and "worst" in paths
    assert json.loads((tmp_path / "e.json").read_text())["worst"][0]["id"] in val.ids


def test_calibrate_and_recipe_commands_refuse_bad_input_in_one_line(folder_data, tmp_path, capsys):
    from segmodels.cli import main
    r = train_teacher(tiny_config(folder_data, epochs=1), tmp_path / "t")
    # overwriting the uncalibrated checkpoint is refused, nothing is written
    before = r.best.read_bytes()
    assert main(["calibrate", "--checkpoint", str(r.best), "--data", str(folder_data), "--out", str(r.best)]) == 2
    err = capsys.readouterr().err
    assert "--out must differ from --checkpoint" in err and err.count("\n") == 1
    assert r.best.read_bytes() == before
    # a missing checkpoint
    assert main(["calibrate", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(folder_data)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # a study without a validation split
    with pytest.raises(MarsamError, match="needs a validation split"):
        run_study(tiny_config(folder_data, epochs=1, val_split=None), tmp_path / "study")
    # an unknown setting for the study
    assert main(["experiment", "recipe", "--data", str(folder_data), "--set", "loss=lovasz2",
                 "--out", str(tmp_path / "s2")]) == 2
    assert "unknown loss" in capsys.readouterr().err


def test_model_card_compares_distilled_and_labels_only_per_seed(tmp_path):
    from distill.model_card import build_card, seed_comparison
    classes = ["soil", "bedrock", "sand", "big_rock"]

    def ev(miou, rock):
        per = {c: 0.5 for c in classes} | {"big_rock": rock}
        return {"miou": miou, "pixel_accuracy": 0.8, "iou_per_class": per, "precision_per_class": per,
                "recall_per_class": per, "f1_per_class": per, "macro_f1": 0.5, "ece": 0.03, "params": 1000,
                "gflops": 0.1, "classes": classes, "confusion_matrix": [[1, 0, 0, 0]] * 4, "images": 10,
                "input_size": 256}
    (tmp_path / "eval" / "seeds").mkdir(parents=True)
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "config.yaml").write_text("distill: true\nkd_pixels: all\n")
    (tmp_path / "eval" / "student.json").write_text(json.dumps(ev(0.61, 0.2)))
    for name, m in {"distilled-s0": 0.61, "distilled-s1": 0.60, "labels-s0": 0.58, "labels-s1": 0.59}.items():
        (tmp_path / "eval" / "seeds" / f"{name}.json").write_text(json.dumps(ev(m, 0.1)))
    sc = seed_comparison(tmp_path)
    assert sc["seeds"] == ["0", "1"] and sc["diffs"] == pytest.approx([0.03, 0.01])
    card = build_card(tmp_path, "x")
    assert "| mean | 0.6050 | 0.5850 | +0.0200 |" in card
    assert "distilled beats labels-only by >= 0.02 (2 seeds, mean) | 0.6050 vs 0.5850 (+0.0200; per seed +0.0300, +0.0100) | yes |" in card
    (tmp_path / "eval" / "seeds" / "labels-s1.json").unlink()      # one seed only: not the target's two
    assert "(1 seeds, mean)" in build_card(tmp_path, "x") and "| no |" in build_card(tmp_path, "x")
