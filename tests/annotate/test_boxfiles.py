"""Box-file readers on the real HiRISE YOLO boxes and on small CSV / COCO files with mistakes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from annotate import BoxPrompt, read_boxes
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, HIRISE_PITS, spec_from_names


def test_yolo_hirise_boxes(hirise_dir, hirise_test_files):
    problems = []
    boxes = read_boxes(hirise_dir / "test" / "labels", "yolo", label_spec=HIRISE_PITS, problems=problems)
    assert len(boxes) == 19 and set(boxes) == {p.name for p, _ in hirise_test_files}
    assert sum(len(b) for b in boxes.values()) > 19
    image, label = hirise_test_files[0]
    lines = [line.split() for line in label.read_text().splitlines() if line.strip()]
    with Image.open(image) as im:
        w, h = im.size
    cls, cx, cy, bw, bh = lines[0][0], *map(float, lines[0][1:])
    first = boxes[image.name][0]
    np.testing.assert_allclose(first.box, ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
    # all five pit types map to the binary spec's "pit"
    assert {p.class_id for b in boxes.values() for p in b} == {HIRISE_PITS.class_id("pit")}
    # with data.yaml's own names the five types stay apart
    names = spec_from_names(["1", "2", "3", "4", "5"], "pit-types")
    typed = read_boxes(hirise_dir / "test" / "labels", "yolo", label_spec=names)
    assert typed[image.name][0].class_id == int(cls)
    # names '1'..'5' are not AI4Mars classes: a clear error naming the valid ones
    with pytest.raises(MarsamError, match="soil, bedrock, sand, big_rock"):
        read_boxes(hirise_dir / "test" / "labels", "yolo", label_spec=AI4MARS)


def test_yolo_single_file_and_missing_image(hirise_dir, hirise_test_files, tmp_path):
    image, label = hirise_test_files[1]
    one = read_boxes(label, "yolo", images_dir=image.parent, label_spec=HIRISE_PITS)
    assert list(one) == [image.name]
    orphan = tmp_path / "labels" / "ghost.txt"
    orphan.parent.mkdir()
    orphan.write_text("0 0.5 0.5 0.1 0.1\n")
    problems = []
    assert read_boxes(orphan.parent, "yolo", images_dir=image.parent, label_spec=HIRISE_PITS,
                      problems=problems) == {}
    assert "ghost" in problems[0]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((100, 120), np.uint8)).save(folder / name)
    return folder


def test_csv_reader_clips_rejects_and_reports(images, tmp_path):
    f = tmp_path / "boxes.csv"
    f.write_text("image,x0,y0,x1,y1,class\n"
                 "a.png,10,10,50,60,soil\n"
                 "a.png,100,80,150,130,Big Rock\n"     # partly outside: clipped
                 "a.png,30,30,30,60,sand\n"            # zero area: rejected
                 "b.png,60,10,20,50,bedrock\n"         # inverted: rejected
                 "b.png,1,2,3,4,2\n"                   # class by id
                 "c.png,1,1,5,5,soil\n"                # image missing: reported
                 "b.png,x,1,5,5,soil\n")               # not numbers: rejected
    problems = []
    boxes = read_boxes(f, "csv", images_dir=images, label_spec=AI4MARS, problems=problems)
    assert boxes["a.png"] == [BoxPrompt((10, 10, 50, 60), 0), BoxPrompt((100, 80, 120, 100), 3)]
    assert boxes["b.png"] == [BoxPrompt((1, 2, 3, 4), 2)]
    assert "c.png" not in boxes
    text = "\n".join(problems)
    assert "clipped" in text and "zero area" in text and "inverted" in text and "c.png" in text
    assert "not numbers" in text and len(problems) == 5
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x0,y0,x1,y1,class\na.png,1,1,5,5,lava\n")
    with pytest.raises(MarsamError, match="unknown class 'lava'.*soil, bedrock, sand, big_rock"):
        read_boxes(bad, "csv", images_dir=images)
    cols = tmp_path / "cols.csv"
    cols.write_text("file,x0,y0,x1,y1\n")
    with pytest.raises(MarsamError, match="lacks column"):
        read_boxes(cols, "csv")


def test_coco_reader(images, tmp_path):
    coco = {"images": [{"id": 1, "file_name": "sub/a.png", "width": 120, "height": 100},
                       {"id": 2, "file_name": "zzz.png", "width": 10, "height": 10}],
            "categories": [{"id": 7, "name": "sand"}, {"id": 9, "name": "big_rock"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 30, 40]},
                            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [110, 90, 30, 30]},
                            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [5, 5, 0, 10]},
                            {"id": 4, "image_id": 2, "category_id": 9, "bbox": [1, 1, 2, 2]}]}
    f = tmp_path / "coco.json"
    f.write_text(json.dumps(coco))
    problems = []
    boxes = read_boxes(f, "coco", images_dir=images, label_spec=AI4MARS, problems=problems)
    assert boxes == {"a.png": [BoxPrompt((10, 20, 40, 60), 2), BoxPrompt((110, 90, 120, 100), 3)]}
    assert any("zzz.png" in p for p in problems) and any("zero area" in p for p in problems)
    f.write_text("[1, 2]")
    with pytest.raises(MarsamError, match="not a COCO JSON"):
        read_boxes(f, "coco")


def test_reader_argument_errors(tmp_path):
    with pytest.raises(MarsamError, match="unknown box format"):
        read_boxes(tmp_path, "voc")
    with pytest.raises(MarsamError, match="does not exist"):
        read_boxes(tmp_path / "none.csv", "csv")
    with pytest.raises(MarsamError, match="no YOLO"):
        read_boxes(tmp_path, "yolo")
