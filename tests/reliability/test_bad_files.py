"""The hostile files of issue 15, one by one: each gives one line naming the file and the line or
entry, the bad part is skipped and the rest is read.

Bad inputs tried: a Latin-1 byte in a CSV and in a YOLO file; six malformed COCO entries (a short
bbox, a string bbox, a ``null`` annotation, annotations as a dict, an image without file_name,
width "abc"); a NaN coordinate in CSV and YOLO; a COCO image declaring 90000 x 90000 for a
120 x 100 file; PNG headers claiming 50000 x 50000 and 40000 x 40000 pixels (beyond the
decoder limits), in the box reader and in load_image; a 15000 x 15000 JPEG (read, it is within
the stated limit); data.yaml that is a list, or not UTF-8.
"""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from annotate.boxfiles import read_boxes
from segmodels.errors import MarsamError
from segmodels.images import MAX_IMAGE_PIXELS, image_size, load_image
from segmodels.labels import AI4MARS, HIRISE_PITS


def png_header(path, w, h):
    """A PNG whose header claims w x h pixels (an image no decoder should try to allocate)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((100, 120), np.uint8)).save(d / name)
    return d


def test_csv_latin1_and_nan_lines_are_named_and_skipped(images, tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_bytes(b"image,x0,y0,x1,y1,class\n"
                     b"a.png,10,10,50,50,soil\n"
                     b"a.png,10,10,50,50,so\xefl\n"        # Latin-1 byte: line 3
                     b"b.png,nan,10,50,50,sand\n"           # NaN: line 4
                     b"b.png,20,20,60,60,sand\n")
    problems = []
    boxes = read_boxes(path, "csv", images_dir=images, label_spec=AI4MARS, problems=problems)
    assert [len(boxes["a.png"]), len(boxes["b.png"])] == [1, 1]
    assert any("boxes.csv line 3" in p and "UTF-8" in p for p in problems)
    assert any("boxes.csv line 4" in p and "not finite" in p for p in problems)


def test_yolo_latin1_and_nan(images, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\n0 0.5 nan 0.2 0.2\n\xff\xfe 0.1\n0 0.3 0.3 0.1 0.1\n")
    problems = []
    boxes = read_boxes(labels, "yolo", images_dir=images, label_spec=HIRISE_PITS, problems=problems)
    assert len(boxes["a.png"]) == 2
    assert any("a.txt line 2" in p for p in problems) and any("a.txt line 3" in p for p in problems)


def test_six_malformed_coco_entries_are_skipped(images, tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 120, "height": 100},
                      {"id": 2, "width": 120, "height": 100},                              # no file_name
                      {"id": 3, "file_name": "b.png", "width": "abc", "height": 100}],     # width "abc"
           "categories": [{"id": 0, "name": "soil"}],
           "annotations": [{"id": 10, "image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 0},
                           {"id": 11, "image_id": 1, "bbox": [10, 10], "category_id": 0},      # short bbox
                           {"id": 12, "image_id": 1, "bbox": "10,10,5,5", "category_id": 0},   # string bbox
                           None]}                                                              # null annotation
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    problems = []
    boxes = read_boxes(path, "coco", images_dir=images, label_spec=AI4MARS, problems=problems)
    assert boxes == {"a.png": boxes["a.png"]} and len(boxes["a.png"]) == 1
    for where in ("image entry 1", "image entry 2", "annotation 11", "annotation 12", "annotation entry 3"):
        assert any(where in p for p in problems), (where, problems)
    doc["annotations"] = {"0": doc["annotations"][0]}                                          # annotations a dict
    path.write_text(json.dumps(doc))
    with pytest.raises(MarsamError, match="coco.json is not a COCO JSON file"):
        read_boxes(path, "coco", images_dir=images, label_spec=AI4MARS)


def test_coco_declared_size_must_match_the_image(images, tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 90000, "height": 90000}],
           "categories": [{"id": 0, "name": "soil"}],
           "annotations": [{"id": 1, "image_id": 1, "bbox": [100, 100, 50000, 50000], "category_id": 0}]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    problems = []
    assert read_boxes(path, "coco", images_dir=images, label_spec=AI4MARS, problems=problems) == {}
    assert "declares 90000x90000 pixels but a.png is 120x100" in problems[0]


@pytest.mark.parametrize("side", [50000, 40000])
def test_images_beyond_the_decoder_limit_are_one_line(tmp_path, images, side):
    big = png_header(images / "huge.png", side, side)
    with pytest.raises(MarsamError) as e:
        load_image(big)
    assert "\n" not in str(e.value) and "huge.png" in str(e.value) and "Mpx" in str(e.value)
    with pytest.raises(MarsamError):
        image_size(big)
    csv = tmp_path / "boxes.csv"
    csv.write_text("image,x0,y0,x1,y1,class\nhuge.png,1,1,9,9,soil\na.png,1,1,9,9,soil\n")
    problems = []
    boxes = read_boxes(csv, "csv", images_dir=images, label_spec=AI4MARS, problems=problems)
    assert list(boxes) == ["a.png"] and "huge.png" in problems[0]


def test_large_jpeg_within_the_limit_is_read(tmp_path):
    side = 15000   # 225 Mpx: beyond PIL's default bomb guard (179 Mpx), within marsam's stated limit
    assert side * side <= MAX_IMAGE_PIXELS
    path = tmp_path / "big.jpg"
    import cv2
    cv2.imwrite(str(path), np.full((side, side), 90, np.uint8))
    assert image_size(path) == (side, side)
    img = load_image(path)
    assert img.shape == (side, side) and img.dtype == np.uint8


@pytest.mark.parametrize("content", [b"- a\n- b\n", b"names: \xff\xfe\n", b"names: {a: 1, 2: b}\n"])
def test_bad_data_yaml(images, tmp_path, content):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "data.yaml").write_bytes(content)
    try:
        boxes = read_boxes(labels, "yolo", images_dir=images, label_spec=HIRISE_PITS)
    except MarsamError as e:
        assert "data.yaml" in str(e)
    else:
        assert len(boxes["a.png"]) == 1
