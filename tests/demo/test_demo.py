"""``marsam demo`` end to end at tiny settings, and every refusal of bad input before long work."""
from __future__ import annotations

import json

import pytest
import torch

from marsam_demo import DemoSettings, run_demo
from marsam_demo.checks import MARKER, check_data, check_output, check_sam_checkpoint, prepare_output
from segmodels.cli import main
from segmodels.errors import MarsamError

REQUIRED = ("annotation_iou", "teacher_miou", "student_miou", "student_params", "student_speedup_vs_teacher", "engine")


def tiny(**kw) -> DemoSettings:
    base = dict(size=32, n_train=4, n_val=2, teacher_base=4, student_base=4, teacher_epochs=1, student_epochs=1,
                decoder_epochs=1, label_efficiency_ns=(2, 4), label_efficiency_epochs=1, batch_size=4,
                explain_images=1, grid_images=2, threads=None, speed_rounds=3, speed_seconds=0.02)
    base.update(kw)
    return DemoSettings(**base)


def _check_report(out, numbers):
    doc = json.loads((out / "report.json").read_text())
    for key in REQUIRED:
        assert key in doc, key
    assert doc == {**doc, **{k: numbers[k] for k in REQUIRED}}
    assert 0.0 <= doc["annotation_iou"] <= 1.0 and 0.0 <= doc["student_miou"] <= 1.0
    assert doc["student_params"] > 0 and doc["student_speedup_vs_teacher"] > 0
    # the ratio is measured side by side: interleaved rounds, the median of the per-round ratios
    lo, hi = doc["student_speedup_range"]
    assert doc["speed_rounds"] == 3 and lo <= doc["student_speedup_vs_teacher"] <= hi
    assert "interleaved rounds" in (out / "report.md").read_text()
    assert "noise, not a trend" in (out / "report.md").read_text()          # the label-efficiency caveat
    ece_table = {k: round(v["ece"], 3) for k, v in doc["models"].items()}   # what the diagram's legend shows
    assert all(v is not None for v in ece_table.values())
    assert [r["n"] for r in doc["label_efficiency"]] == [2, 4]
    assert len(doc["figures"]) >= 7
    for rel in doc["figures"].values():
        assert (out / rel).is_file() and (out / rel).stat().st_size > 1000, rel
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(doc["figures"])
    md = (out / "report.md").read_text()
    assert all(f"]({rel})" in md for rel in doc["figures"].values())
    return doc


@pytest.mark.slow
def test_demo_end_to_end_grabcut(tmp_path, monkeypatch):
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    out = tmp_path / "demo"
    numbers = run_demo(out, settings=tiny(), progress=False)
    doc = _check_report(out, numbers)
    assert doc["engine"] == "grabcut" and doc["decoder_miou"] is None
    assert "GrabCut" in (out / "report.md").read_text()
    assert (out / "annotated" / "split.csv").is_file() and (out / MARKER).is_file()
    # a second run into the same folder is refused before it starts
    with pytest.raises(MarsamError, match="--overwrite"):
        run_demo(out, settings=tiny(), progress=False)
    assert json.loads((out / "report.json").read_text()) == doc


def test_overwrite_replaces_a_previous_demo_whole(tmp_path):
    out = tmp_path / "demo"
    prepare_output(out)
    (out / "report.json").write_text("{}")
    (out / "models").mkdir()
    assert check_output(out, overwrite=True) == out
    prepare_output(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


@pytest.mark.slow
def test_demo_with_tiny_sam_trains_the_decoder(tmp_path, tiny_sam):
    out = tmp_path / "demo-sam"
    numbers = run_demo(out, settings=tiny(n_train=2, n_val=1, label_efficiency_ns=(), grid_images=1),
                       sam_model=tiny_sam, progress=False)
    assert numbers["engine"] == "sam" and numbers["decoder_miou"] is not None
    assert "decoder" in numbers["models"]
    assert (out / "models" / "decoder" / "best.safetensors").is_file()


# -- bad input, refused before anything is written ---------------------------------------------

def test_refuses_missing_or_unusable_data(tmp_path):
    with pytest.raises(MarsamError, match="does not exist"):
        run_demo(tmp_path / "out", data=tmp_path / "no-such-folder", progress=False)
    (tmp_path / "flat").mkdir()
    with pytest.raises(MarsamError, match="no images/ and masks/"):
        run_demo(tmp_path / "out", data=tmp_path / "flat", progress=False)
    assert not (tmp_path / "out").exists()
    assert check_data("hassanjbara/AI4MARS").kind == "hub"
    assert check_data(None).kind == "synthetic"


def test_refuses_unreachable_hub_id(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    # no network here: the hub cannot be reached; with network the id does not exist
    with pytest.raises(MarsamError, match="Hugging Face hub"):
        run_demo(tmp_path / "out", data="marsam-test-nobody/no-such-dataset-0", progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_existing_output_folders(tmp_path):
    other = tmp_path / "papers"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(MarsamError, match="already exists"):
        check_output(other, overwrite=False)
    with pytest.raises(MarsamError, match="no marsam demo wrote"):
        check_output(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", overwrite=False) == tmp_path / "empty"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MarsamError, match="is a file"):
        check_output(tmp_path / "file", overwrite=True)
    data = tmp_path / "run" / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    with pytest.raises(MarsamError, match="contains the --data folder"):
        check_output(tmp_path / "run", overwrite=True, data=check_data(data))


def test_refuses_sam_checkpoints_of_the_wrong_type(tmp_path):
    from annotate.sam_loading import PATCH_KEY
    from segmodels.checkpoints import save_checkpoint
    from segmodels.networks import build_model
    with pytest.raises(MarsamError, match="does not exist"):
        check_sam_checkpoint(tmp_path / "sam_vit_b.pth")
    marsam = save_checkpoint(tmp_path / "student.safetensors", build_model("unet", base=4))
    with pytest.raises(MarsamError, match="not a Segment Anything"):
        check_sam_checkpoint(marsam)
    torch.save(build_model("unet", base=4).state_dict(), tmp_path / "unet.pth")
    with pytest.raises(MarsamError, match="not a Segment Anything checkpoint"):
        check_sam_checkpoint(tmp_path / "unet.pth")
    (tmp_path / "broken.pth").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(MarsamError, match="damaged or not a PyTorch file"):
        check_sam_checkpoint(tmp_path / "broken.pth")
    torch.save({PATCH_KEY: torch.zeros(64, 3, 16, 16)}, tmp_path / "tiny.pth")
    with pytest.raises(MarsamError, match="width 64"):
        check_sam_checkpoint(tmp_path / "tiny.pth")
    torch.save({PATCH_KEY: torch.zeros(768, 3, 16, 16)}, tmp_path / "b.pth")
    assert check_sam_checkpoint(tmp_path / "b.pth") == "vit_b"
    with pytest.raises(MarsamError, match="is a vit_b checkpoint, not vit_l"):
        check_sam_checkpoint(tmp_path / "b.pth", "vit_l")


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("marsam: error: output folder") and "\n" not in err
    assert main(["demo", "--out", str(tmp_path / "new"), "--sam-checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "SAM checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main(["demo", "--out", str(tmp_path / "new"), "--threads", "0"]) == 2      # bad --threads
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
