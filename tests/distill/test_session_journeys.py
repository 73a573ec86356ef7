"""The journey a scientist takes on real data, through the command line only:

``marsam annotate`` the HiRISE ``valid`` images from the experts' YOLO box files -> ``marsam train
teacher|student --data SESSION`` (no ``--set``: the session's own label spec, a held-out val)
-> ``marsam evaluate`` on the HiRISE ``test`` session. The labels must hold background and pit
pixels (a complete pit image: everything outside the masks is background), and the trained model
must predict more pit inside the experts' boxes than outside them. Once with the built-in
``hirise-pits`` spec, once with a label-spec YAML the user wrote.

Sizes are small (128 px, narrow networks, 20 epochs; GrabCut, no SAM weights), so this checks
that the journey works and learns something, not how well it can do. Measured on the 2-core
development machine under load: teacher pit fraction 0.70 inside the boxes against 0.05 outside.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segmodels.cli import main

TRAIN = ["--size", "128", "--epochs", "20", "--batch-size", "8"]


def _annotate(hirise_dir: Path, split: str, out: Path, labels: str, capsys) -> str:
    rc = main(["annotate", "--images", str(hirise_dir / split / "images"), "--boxes",
               str(hirise_dir / split / "labels"), "--format", "yolo", "--labels", labels,
               "--engine", "grabcut", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    return text


def _pit_inside_outside(checkpoint: Path, session_dir: Path, size: int = 128) -> tuple[float, float]:
    """Fraction of pixels predicted as any non-background class inside the union of the session's
    boxes and outside it, on the session's images at the training size."""
    from PIL import Image

    from annotate.session import Session
    from distill.data import open_dataset
    from segmodels.checkpoints import load_checkpoint
    ckpt = load_checkpoint(checkpoint)
    ds = open_dataset(session_dir, "all", size, 1)
    session = Session.open(session_dir)
    paths = {p.stem: p for p in session.labelled_images()}
    bg = ds.label_spec.background_id
    pit_in = n_in = pit_out = n_out = 0
    net = ckpt.model.eval()
    for i, pid in enumerate(ds.ids):
        with Image.open(paths[pid]) as im:
            w, h = im.size
        inside = np.zeros((size, size), bool)
        for b in session.prompts(paths[pid]):
            x0, y0, x1, y1 = b.box
            inside[int(y0 * size / h):int(np.ceil(y1 * size / h)), int(x0 * size / w):int(np.ceil(x1 * size / w))] = True
        with torch.no_grad():
            pit = net(ds[i]["x"][None])[0].argmax(0).numpy() != bg
        pit_in += pit[inside].sum()
        n_in += inside.sum()
        pit_out += pit[~inside].sum()
        n_out += (~inside).sum()
    return pit_in / n_in, pit_out / n_out


def _check_labels(session_dir: Path, pit_classes: int) -> None:
    from annotate.session import Session
    session = Session.open(session_dir)
    done = session.labelled_images()
    assert len(done) >= 15
    counts = np.zeros(256, np.int64)
    for p in done:
        assert session.is_complete(p)
        counts += np.bincount(session.label_map(p).ravel(), minlength=256)
    spec = session.label_spec
    assert spec.background_id == 0 and counts[0] > 0, "no background pixels"
    assert counts[1:1 + pit_classes].sum() > 0, "no pit pixels"
    assert counts[255] == 0, "a complete pit image has no unlabelled pixel"
    # what the boxes painted is kept apart from the filled background (the state can be undone)
    assert (session.label_map(done[0], painted=True) == 255).any()


def _journey(tmp_path: Path, hirise_dir: Path, labels: str, capsys, student: bool) -> dict:
    valid, test = tmp_path / "valid-session", tmp_path / "test-session"
    _annotate(hirise_dir, "valid", valid, labels, capsys)
    _annotate(hirise_dir, "test", test, labels, capsys)
    rc = main(["train", "teacher", "--data", str(valid), "--out", str(tmp_path / "teacher"),
               "--teacher-base", "8", *TRAIN])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "held out as 'val'" in out and "30 form 'train'" in out     # 8 of 38 (20 %), stated
    models = {"teacher": tmp_path / "teacher" / "best.safetensors"}
    if student:
        rc = main(["train", "student", "--data", str(valid), "--teacher", str(models["teacher"]),
                   "--out", str(tmp_path / "student"), "--student-base", "8", *TRAIN])
        assert rc == 0, capsys.readouterr().out
        models["student"] = tmp_path / "student" / "best.safetensors"
    result = {}
    for kind, ckpt in models.items():
        rc = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(test), "--no-speed",
                   "--json", str(tmp_path / f"eval-{kind}.json")])
        assert rc == 0, capsys.readouterr().out
        ev = json.loads((tmp_path / f"eval-{kind}.json").read_text())
        assert ev["images"] >= 15          # the whole test session ('all'), not a held-out part
        inside, outside = _pit_inside_outside(ckpt, test)
        result[kind] = {"miou": ev["miou"], "pit_inside": inside, "pit_outside": outside}
        print(f"{kind}: pit predicted on {inside:.3f} of the box pixels, {outside:.3f} outside")
        assert inside > 2 * outside, result
    return result


@pytest.mark.slow
def test_hirise_journey_annotate_train_evaluate(tmp_path, hirise_dir, capsys):
    _journey(tmp_path, hirise_dir, "hirise-pits", capsys, student=True)
    _check_labels(tmp_path / "valid-session", 1)


@pytest.mark.slow
def test_hirise_journey_with_a_user_label_yaml(tmp_path, hirise_dir, capsys):
    spec = tmp_path / "my-classes.yaml"
    spec.write_text("name: my-pits\n"
                    "classes: [background, collapse-pit]\n"
                    "colors: [[30, 30, 30], [250, 120, 40]]\n"
                    "box_classes: {'*': collapse-pit}   # all five YOLO pit types\n")
    _journey(tmp_path, hirise_dir, str(spec), capsys, student=False)
    _check_labels(tmp_path / "valid-session", 1)
    from annotate.session import Session
    assert Session.open(tmp_path / "valid-session").label_spec.classes == ("background", "collapse-pit")


def test_label_efficiency_on_a_session_needs_no_set(tmp_path, capsys):
    """`marsam experiment label-efficiency --data SESSION`: the session's spec and its held-out val."""
    from PIL import Image

    from annotate.session import Session
    from segmodels.labels import HIRISE_PITS
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        img = rng.integers(0, 80, (48, 48)).astype(np.uint8)
        img[10:30, 12:34] = 200
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(img).save(paths[-1])
    session = Session.create(tmp_path / "s", paths, HIRISE_PITS)
    for p in paths:
        lm = np.full((48, 48), 255, np.uint8)
        lm[10:30, 12:34] = 1
        session.set_result(p, [], lm, complete=True)
    rc = main(["experiment", "label-efficiency", "--model", "student", "--no-distill", "--data", str(tmp_path / "s"),
               "--ns", "2,4", "--epochs", "1", "--size", "32", "--student-base", "4", "--out", str(tmp_path / "le")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "1 of 6 labelled images" in out and "N=  4" in out
    table = json.loads((tmp_path / "le" / "label_efficiency.json").read_text())
    assert [r["n"] for r in table["rows"]] == [2, 4]


@pytest.mark.parametrize("argv", [["train", "decoder"], ["experiment", "label-efficiency"]])
def test_missing_sam_weights_advice_names_an_option_the_command_has(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MARSAM_OFFLINE", "1")
    monkeypatch.setenv("MARSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    assert main(argv + ["--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pass --sam-checkpoint PATH" in err and "\n" not in err
    # ... and that option exists on the command (an absent file is named, not an unknown option)
    assert main(argv + ["--data", str(tmp_path), "--out", str(tmp_path / "o"),
                        "--sam-checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "none.pth does not exist" in capsys.readouterr().err
