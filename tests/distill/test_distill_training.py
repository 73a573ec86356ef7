"""Teacher, distilled and label-only students, resume, cancel and evaluation on tiny data."""
from __future__ import annotations

import csv
import json

import pytest
from distill import evaluate, open_dataset, train_student, train_teacher, write_evaluation
from segmodels import HIRISE_PITS, MarsamError, build_model, load_checkpoint, save_checkpoint

from distill_testdata import tiny_config


@pytest.fixture
def teacher_run(folder_data, tmp_path):
    calls = []
    cfg = tiny_config(folder_data)
    result = train_teacher(cfg, tmp_path / "teacher", progress=lambda e, t, m: calls.append((e, t, m)))
    return cfg, result, calls


def test_teacher_trains_and_writes_everything(teacher_run):
    cfg, result, calls = teacher_run
    out = result.out_dir
    for name in ("best.safetensors", "last.safetensors", "resume.safetensors", "history.csv",
                 "curves.png", "summary.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert [c[0] for c in calls] == [1, 2] and all(c[1] == 2 for c in calls)
    assert "val_miou" in calls[-1][2]
    ckpt = load_checkpoint(result.best)
    assert ckpt.model_name == "attention_unet" and ckpt.model_args["base"] == 4
    assert ckpt.training["kind"] == "teacher" and ckpt.training["data"]["train_images"] == 8
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 2 and float(rows[1]["train_loss"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "completed" and len(summary["class_weights"]) == 4


def test_resume_continues_from_the_last_epoch(teacher_run):
    cfg, result, _ = teacher_run
    more = tiny_config(cfg.data, epochs=3)
    again = train_teacher(more, result.out_dir)
    assert [r["epoch"] for r in again.history] == [1, 2, 3]
    assert again.summary["epochs_run"] == 3


def test_cancel_keeps_a_checkpoint(folder_data, tmp_path):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 1          # stop after the first batch
    result = train_teacher(tiny_config(folder_data, epochs=3), tmp_path / "t", should_stop=stop)
    assert result.stopped == "cancelled"
    assert result.last.is_file() and result.best.is_file()


def test_distilled_and_label_only_students(teacher_run, tmp_path):
    cfg, teacher, _ = teacher_run
    distilled = train_student(tiny_config(cfg.data, epochs=1), tmp_path / "s", teacher=teacher.best)
    assert distilled.summary["distilled"] is True and distilled.summary["teacher"] == str(teacher.best)
    assert "train_kd" in distilled.history[0] and "train_ce" in distilled.history[0]
    baseline = train_student(tiny_config(cfg.data, epochs=1, distill=False), tmp_path / "b")
    assert baseline.summary["distilled"] is False and "train_kd" not in baseline.history[0]
    ck = load_checkpoint(distilled.best)
    assert ck.model_name == "unet" and ck.model_args["base"] == 4
    # a teacher module (what napari passes) works too; the teacher gets no gradients
    t = load_checkpoint(teacher.best).model
    train_student(tiny_config(cfg.data, epochs=1), tmp_path / "s2", teacher=t)
    assert all(p.grad is None for p in t.parameters())


def test_student_refuses_a_teacher_of_another_label_spec(folder_data, tmp_path):
    other = build_model("attention_unet", num_classes=2, base=4)
    path = save_checkpoint(tmp_path / "pits.safetensors", other, HIRISE_PITS)
    with pytest.raises(MarsamError, match="same label spec"):
        train_student(tiny_config(folder_data, epochs=1), tmp_path / "s", teacher=path)
    with pytest.raises(MarsamError, match="needs a teacher"):
        train_student(tiny_config(folder_data, epochs=1), tmp_path / "s")


def test_evaluate_writes_json_markdown_and_grid(teacher_run, tmp_path):
    cfg, teacher, _ = teacher_run
    val = open_dataset(cfg.data, "val", size=32)
    result = evaluate(teacher.best, val, speed=True)
    for key in ("miou", "pixel_accuracy", "iou_per_class", "params", "images_per_second", "gflops",
                "ece", "macro_f1", "micro_f1", "confusion_matrix"):
        assert key in result, key
    assert set(result["iou_per_class"]) == {"soil", "bedrock", "sand", "big_rock"}
    assert result["params"] == sum(p.numel() for p in load_checkpoint(teacher.best).model.parameters())
    assert result["images_per_second"] > 0
    paths = write_evaluation(result, tmp_path / "ev" / "teacher.json", val.label_spec)
    data = json.loads(open(paths["json"]).read())
    assert data["miou"] == pytest.approx(result["miou"])
    assert "| soil |" in open(paths["markdown"]).read()
    from PIL import Image
    assert Image.open(paths["grid"]).size[0] > 100
    with pytest.raises(MarsamError, match="dataset is labelled with"):
        evaluate(teacher.best, _pits_dataset(tmp_path))


def _pits_dataset(tmp_path):
    import numpy as np
    from PIL import Image
    root = tmp_path / "pits"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "images" / "a.png")
    m = np.zeros((32, 32), np.uint8)
    m[10:20, 10:20] = 1
    Image.fromarray(m).save(root / "masks" / "a.png")
    return open_dataset(root, "all", size=32, label_spec=HIRISE_PITS)


def test_learning_reduces_the_loss(folder_data, tmp_path):
    """Not a smoke test: a tiny student must fit the synthetic rule better than at the start."""
    cfg = tiny_config(folder_data, epochs=8, batch_size=2, distill=False, augment=False, lr=0.02,
                      warmup_epochs=0, class_weights=False)
    r = train_student(cfg, tmp_path / "fit")
    assert r.history[-1]["train_loss"] < 0.7 * r.history[0]["train_loss"]
    assert r.history[-1]["val_miou"] > r.history[0]["val_miou"]


def test_time_budget_stops_early(folder_data, tmp_path):
    r = train_teacher(tiny_config(folder_data, epochs=50, max_minutes=1e-6), tmp_path / "tb")
    assert r.stopped == "time_budget" and r.epochs_run == 1 and r.best.is_file()


def test_cli_train_and_evaluate(folder_data, tmp_path, capsys):
    from segmodels.cli import main
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"data: {folder_data}\nsize: 32\nteacher_base: 4\nstudent_base: 4\nepochs: 1\n"
                   "batch_size: 4\nthreads: 1\ndevice: cpu\n")
    assert main(["train", "teacher", "--config", str(cfg), "--out", str(tmp_path / "t")]) == 0
    assert main(["train", "student", "--config", str(cfg), "--teacher", str(tmp_path / "t" / "best.safetensors"),
                 "--out", str(tmp_path / "s"), "--set", "alpha=0.7"]) == 0
    assert load_checkpoint(tmp_path / "s" / "best.safetensors").training["alpha"] == 0.7
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "s" / "best.safetensors"), "--data", str(folder_data),
                 "--split", "val", "--json", str(out), "--no-speed"]) == 0
    assert json.loads(out.read_text())["images"] == 4 and out.with_suffix(".png").is_file()
    capsys.readouterr()
    assert main(["train", "student", "--config", str(cfg), "--out", str(tmp_path / "x"),
                 "--teacher", str(tmp_path / "nope.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "teacher", "--config", str(cfg), "--set", "epochz=3"]) == 2


def test_cli_label_efficiency_for_the_student(folder_data, tmp_path):
    from segmodels.cli import main
    out = tmp_path / "le"
    assert main(["experiment", "label-efficiency", "--config", "cpu", "--data", str(folder_data),
                 "--model", "student", "--ns", "2,4", "--no-distill", "--epochs", "1", "--size", "32",
                 "--student-base", "4", "--val-limit", "2", "--out", str(out)]) == 0
    table = json.loads((out / "label_efficiency.json").read_text())
    assert [r["n"] for r in table["rows"]] == [2, 4]
    assert (out / "label_efficiency.png").is_file() and (out / "n004" / "best.safetensors").is_file()


def test_same_seed_same_initial_student(teacher_run, tmp_path):
    """The distilled and label-only students start from the same weights (fair comparison)."""
    from distill.train_loop import weight_digest
    cfg, teacher, _ = teacher_run
    a = train_student(tiny_config(cfg.data), tmp_path / "a", teacher=teacher.best, should_stop=lambda: True)
    b = train_student(tiny_config(cfg.data, distill=False), tmp_path / "b", should_stop=lambda: True)
    assert a.stopped == b.stopped == "cancelled"
    assert weight_digest(load_checkpoint(a.last).model) == weight_digest(load_checkpoint(b.last).model)


def test_teacher_trains_in_bf16_on_a_cpu_that_has_it_and_validates_in_float32(folder_data, tmp_path):
    """train_cpu_bf16: the training forward in bf16 autocast where the CPU has native bf16
    (float32 elsewhere), weights and validation in float32; off by default."""
    import torch
    from segmodels.device import cpu_bf16_supported

    assert tiny_config(folder_data).train_cpu_bf16 is False
    seen = []
    real_forward = torch.nn.Conv2d.forward

    def spy(self, x):
        out = real_forward(self, x)
        seen.append((torch.is_grad_enabled(), out.dtype))
        return out
    torch.nn.Conv2d.forward = spy
    try:
        result = train_teacher(tiny_config(folder_data, epochs=2, train_cpu_bf16=True), tmp_path / "bf16")
    finally:
        torch.nn.Conv2d.forward = real_forward
    expect = torch.bfloat16 if cpu_bf16_supported() else torch.float32
    assert {d for g, d in seen if g} == {expect}                     # training steps
    assert {d for g, d in seen if not g} == {torch.float32}          # validation
    assert result.summary["cpu_bf16"] is cpu_bf16_supported()
    assert all(r["train_loss"] > 0 for r in result.history) and result.history[-1]["val_miou"] >= 0
    for t in load_checkpoint(result.best).model.state_dict().values():
        assert t.dtype != torch.bfloat16
    from distill.config import load_config
    with pytest.raises(MarsamError, match="train_cpu_bf16 must be bool"):
        load_config("cpu", {"train_cpu_bf16": "sometimes"})
