"""Fine-tuning from a trained model: matching layers kept, a new head for another label spec."""
from __future__ import annotations

import pytest
import torch

from distill.init_weights import init_from_checkpoint
from distill.pretrained import load_pretrained
from segmodels.checkpoints import save_checkpoint
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, HIRISE_PITS
from segmodels.networks import build_model


def _shipped_student():
    ckpt = load_pretrained("ai4mars-student")
    return ckpt, ckpt.model.config()


def test_same_spec_copies_every_tensor():
    ckpt, args = _shipped_student()
    model = build_model("unet", **args)
    info = init_from_checkpoint(model, "pretrained:ai4mars-student", AI4MARS)
    assert info["new_head"] is False and info["new_tensors"] == 0
    for (k, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_other_label_spec_gets_a_new_head_and_keeps_the_body():
    ckpt, args = _shipped_student()
    torch.manual_seed(1)
    model = build_model("unet", **{**args, "num_classes": HIRISE_PITS.num_classes})
    head_before = model.head.weight.detach().clone()
    info = init_from_checkpoint(model, ckpt, HIRISE_PITS)
    assert info["new_head"] is True and info["source_labels"] == "ai4mars"
    assert set(info["new"]) == {"head.weight", "head.bias"}
    assert torch.equal(model.head.weight, head_before)          # untouched fresh head
    assert torch.equal(model.inc[0].weight, ckpt.model.inc[0].weight)
    assert torch.equal(model.up4.conv[0].weight if hasattr(model.up4, "conv") else model.inc[3].weight,
                       ckpt.model.up4.conv[0].weight if hasattr(ckpt.model.up4, "conv") else ckpt.model.inc[3].weight)


def test_refuses_another_architecture_and_a_body_that_does_not_fit(tmp_path):
    teacher = build_model("attention_unet", in_channels=1, num_classes=4, base=8)
    with pytest.raises(MarsamError, match="unet checkpoint but this run trains a attention_unet"):
        init_from_checkpoint(teacher, "pretrained:ai4mars-student", AI4MARS)
    wide = build_model("unet", in_channels=1, num_classes=4, base=8)
    with pytest.raises(MarsamError, match="no layer .* fits"):
        init_from_checkpoint(wide, "pretrained:ai4mars-student", AI4MARS)
    with pytest.raises(MarsamError, match="no pretrained model named"):
        init_from_checkpoint(wide, "pretrained:nope", AI4MARS)
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MarsamError):
        init_from_checkpoint(wide, str(bad), AI4MARS)


def test_cli_fine_tune_on_real_images_records_the_source(ai4mars_dir, tmp_path, capsys):
    from segmodels.checkpoints import load_checkpoint
    from segmodels.cli import main
    out = tmp_path / "ft"
    rc = main(["train", "student", "--config", "cpu", "--data", str(ai4mars_dir), "--init",
               "pretrained:ai4mars-student", "--no-distill", "--limit", "8", "--val-limit", "8",
               "--epochs", "1", "--size", "64", "--out", str(out)])
    assert rc == 0
    said = capsys.readouterr().out
    assert "fine-tuning from pretrained:ai4mars-student (lr 0.0002)" in said   # a tenth of the cpu profile's
    meta = load_checkpoint(out / "best.safetensors").training
    assert meta["init"]["model"] == "unet" and meta["init"]["kept_tensors"] > 100
    # a decoder cannot be fine-tuned this way: one line, exit 2
    assert main(["train", "decoder", "--init", "pretrained:ai4mars-student", "--out", str(tmp_path / "d")]) == 2
    assert "--init fine-tunes a student or a teacher" in capsys.readouterr().err


def test_checkpoint_of_the_other_spec_can_start_a_run(tmp_path):
    """A HiRISE-pits checkpoint starts an AI4Mars model: only the head is new."""
    pits = build_model("unet", in_channels=1, num_classes=2, base=8)
    path = save_checkpoint(tmp_path / "pits.safetensors", pits, HIRISE_PITS)
    model = build_model("unet", in_channels=1, num_classes=4, base=8)
    info = init_from_checkpoint(model, str(path), AI4MARS)
    assert info["new_head"] and info["new_tensors"] == 2
