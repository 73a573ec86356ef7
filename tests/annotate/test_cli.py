"""`marsam annotate` / `marsam embed` and the batch functions behind them, on real HiRISE images."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from annotate import SamEngine, Session
from annotate.batch import annotate_session, embed_paths, shard
from annotate.boxfiles import images_with_boxes, read_boxes
from annotate.embeddings import EmbeddingCache
from segmodels.cli import main
from segmodels.labels import HIRISE_PITS


def _small_hirise(hirise_test_files, tmp_path, n=3):
    """The n test images with the smallest boxes (quick for GrabCut), copied with their labels."""
    def area(label):
        rows = [list(map(float, line.split()[1:])) for line in label.read_text().splitlines() if line.strip()]
        if min(min(w, h) for _, _, w, h in rows) < 0.01:  # a sub-pixel box: that image gets no label
            return 1e9
        return sum(w * h for _, _, w, h in rows)
    chosen = sorted(hirise_test_files, key=lambda f: area(f[1]))[:n]
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for img, lab in chosen:
        shutil.copy(img, tmp_path / "images" / img.name)
        shutil.copy(lab, tmp_path / "labels" / lab.name)
    return tmp_path / "images", tmp_path / "labels"


def test_annotate_cli_grabcut_resumes_and_skips_bad_images(hirise_test_files, tmp_path, capsys):
    images, labels = _small_hirise(hirise_test_files, tmp_path)
    (images / "junk.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # no header: the box reader reports it
    (labels / "junk.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    from PIL import Image
    full = images / "truncated.png"  # a valid header, cut-off pixels: fails when labelled
    Image.open(hirise_test_files[0][0]).save(full)
    full.write_bytes(full.read_bytes()[:5000])
    (labels / "truncated.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    out = tmp_path / "session"
    argv = ["annotate", "--images", str(images), "--boxes", str(labels), "--format", "yolo", "--out", str(out),
            "--engine", "grabcut", "--labels", "hirise-pits", "--quiet", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["done"] == 3 and [f["image"] for f in first["failed"]] == ["truncated.png"]
    assert any("junk.jpg" in p for p in first["box_file_problems"])
    s = Session.open(out)
    assert s.counts()["done"] == 3 and s.status("truncated.png") == "failed" and s.label_spec == HIRISE_PITS and s.engine == "grabcut"
    for path in s.labelled_images():
        # pit boxes mark every pit (a complete image): the rest is background, on disk only the pits
        assert s.is_complete(path)
        lm = s.label_map(path)
        assert lm.shape == (900, 900) and set(np.unique(lm)) == {0, 1}
        painted = s.label_map(path, painted=True)
        assert set(np.unique(painted)) <= {1, 255} and (painted == 1).any()
    assert main(argv) == 0  # resumed: nothing redone
    second = json.loads(capsys.readouterr().out)
    assert second["done"] == 0 and second["skipped"] == 3


def test_annotate_cli_sam_without_checkpoint_falls_back(hirise_test_files, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    monkeypatch.setenv("MARSAM_OFFLINE", "1")
    images, labels = _small_hirise(hirise_test_files, tmp_path, n=1)
    assert main(["annotate", "--images", str(images), "--boxes", str(labels), "--format", "yolo",
                 "--out", str(tmp_path / "s"), "--labels", "hirise-pits", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no SAM checkpoint found; annotating with GrabCut" in out and "1 images labelled" in out


def test_cli_user_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MARSAM_OFFLINE", "1")
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    (tmp_path / "imgs").mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "imgs" / "x.png")
    assert main(["embed", "--images", str(tmp_path / "imgs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marsam: error: no SAM vit_b checkpoint found") and err.count("\n") == 1
    assert main(["annotate", "--images", str(tmp_path / "imgs"), "--boxes", str(tmp_path / "no.csv"),
                 "--format", "csv", "--out", str(tmp_path / "s"), "--engine", "grabcut"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_annotate_session_with_tiny_sam(tiny_sam, hirise_dir, hirise_test_files, tmp_path):
    paths = [p for p, _ in hirise_test_files[:1]]
    boxes = images_with_boxes(read_boxes(hirise_dir / "test" / "labels", "yolo", label_spec=HIRISE_PITS), paths)
    session = Session.create(tmp_path / "s", paths, HIRISE_PITS, engine="sam", model="tiny")
    engine = SamEngine(tiny_sam, cache=EmbeddingCache(tmp_path / "cache"))
    s = annotate_session(session, engine, boxes, progress=False)
    assert s.done == 1 and not s.failed
    for p in paths:
        lm = session.label_map(p, painted=True)      # what the boxes painted (the rest: background)
        assert lm.shape == (900, 900) and lm.dtype == np.uint8
        assert session.info(p)["model"] == engine.model_name and len(session.prompts(p)) == len(boxes[p])
        # every labelled pixel lies inside one of the image's boxes
        inside = np.zeros((900, 900), bool)
        for b in boxes[p]:
            x0, y0, x1, y1 = (int(v) for v in b.box)
            inside[y0:y1 + 1, x0:x1 + 1] = True
        assert not ((lm != 255) & ~inside).any()
    # the embeddings are now cached: embed_paths finds them all
    e = embed_paths(tiny_sam, paths, EmbeddingCache(tmp_path / "cache"), progress=False)
    assert e.skipped == 1 and e.done == 0 and not e.failed


def test_embed_paths_reports_bad_images_and_shards(tiny_sam, tmp_path):
    from PIL import Image
    good = tmp_path / "g.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"junk")
    cache = EmbeddingCache(tmp_path / "c")
    s = embed_paths(tiny_sam, [bad, good], cache, batch_size=2, progress=False)
    assert s.done == 1 and [n for n, _ in s.failed] == ["b.png"]
    items = list(range(10))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7]
    with pytest.raises(Exception, match="outside world size"):
        shard(items, 3, 3)


def test_annotate_keeps_the_classes_of_the_datasets_data_yaml(hirise_dir, hirise_test_files, tmp_path, capsys):
    """No --labels: the YOLO data.yaml next to the box files names 5 pit types; they stay 5 classes."""
    import shutil
    ds = tmp_path / "pits"
    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    shutil.copy(hirise_dir / "data.yaml", ds / "data.yaml")
    chosen = [(img, lab) for img, lab in hirise_test_files if lab.is_file() and lab.read_text().strip()][:2]
    for img, lab in chosen:
        shutil.copy(img, ds / "images" / img.name)
        shutil.copy(lab, ds / "labels" / lab.name)
    base = ["annotate", "--images", str(ds / "images"), "--boxes", str(ds / "labels"), "--format", "yolo",
            "--engine", "grabcut", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "labels: pits-classes (background, 1, 2, 3, 4, 5)" in out and "unboxed pixels: background" in out
    s = Session.open(tmp_path / "s")
    assert s.label_spec.classes == ("background", "1", "2", "3", "4", "5")
    for (img, lab), path in zip(chosen, sorted(s.labelled_images())):
        yolo_classes = {int(line.split()[0]) for line in lab.read_text().splitlines() if line.strip()}
        painted = set(np.unique(s.label_map(path, painted=True))) - {255}
        assert painted <= {c + 1 for c in yolo_classes} and painted       # YOLO id k -> class k + 1
    # --no-complete: the unboxed pixels stay unlabelled
    assert main(base + ["--out", str(tmp_path / "s2"), "--no-complete"]) == 0
    s2 = Session.open(tmp_path / "s2")
    assert all(not s2.is_complete(p) and (s2.label_map(p) == 255).any() for p in s2.labelled_images())
    # bad input: --complete with a terrain spec (no background class) is refused, one line, exit 2
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "s3"), "--labels", "ai4mars", "--complete"]) == 2
    assert "no 'background' class" in capsys.readouterr().err
