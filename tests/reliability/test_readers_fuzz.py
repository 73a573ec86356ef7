"""Property tests for every reader of user files: any bytes or JSON either parse or raise MarsamError.

Readers covered: CSV, COCO and YOLO box files (and YOLO's data.yaml), ``split.csv``, label specs
in dict/JSON form, checkpoint metadata, ``session.json`` (test_session_faults.py). Each property
runs on raw random bytes and on structured near-misses (right keys, wrong values), which reach
far deeper into the parsers than random bytes do. What a successful parse returns is checked
too: every box finite, inside its image, with a class of the spec.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from annotate.boxfiles import read_boxes
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, HIRISE_PITS, get_label_spec

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
SIZE = {"a.png": (100, 120), "b.png": (60, 80)}   # name -> (h, w)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 12, 10 ** 12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)
tokens = st.sampled_from(["a.png", "b.png", "ghost.png", "../a.png", "", " ", "0", "5", "50", "99", "-3", "1e309",
                          "nan", "inf", "-inf", "soil", "sand", "pit", "lava", "x", "\x00", "é", '"', ",", "1.5"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for name, (h, w) in SIZE.items():
        Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "images" / name)
    return root


def _check(out, spec=AI4MARS):
    assert isinstance(out, dict)
    for name, boxes in out.items():
        h, w = SIZE[name]
        for b in boxes:
            assert all(math.isfinite(v) for v in b.box)
            x0, y0, x1, y1 = b.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert 0 <= b.class_id < spec.num_classes


def _read(path, fmt, folder, spec=AI4MARS):
    problems = []
    try:
        out = read_boxes(path, fmt, images_dir=folder / "images", label_spec=spec, problems=problems)
    except MarsamError as e:
        assert "\n" not in str(e)
        return
    _check(out, spec)
    assert all(isinstance(p, str) and "\n" not in p for p in problems)


@FUZZ
@given(data=st.binary(max_size=400))
def test_csv_any_bytes(folder, data):
    path = folder / "boxes.csv"
    path.write_bytes(data)
    _read(path, "csv", folder)


@FUZZ
@given(rows=st.lists(st.lists(tokens, min_size=0, max_size=7), max_size=8),
       enc=st.sampled_from(["utf-8", "latin-1"]))
def test_csv_near_misses(folder, rows, enc):
    text = "image,x0,y0,x1,y1,class\n" + "\n".join(",".join(r) for r in rows)
    path = folder / "boxes.csv"
    path.write_bytes(text.encode(enc, errors="replace"))
    _read(path, "csv", folder)


@FUZZ
@given(data=st.binary(max_size=400))
def test_coco_any_bytes(folder, data):
    path = folder / "coco.json"
    path.write_bytes(data)
    _read(path, "coco", folder)


@FUZZ
@given(doc=json_values)
def test_coco_any_json(folder, doc):
    path = folder / "coco.json"
    path.write_text(json.dumps(doc))
    _read(path, "coco", folder)


coco_image = st.fixed_dictionaries({"id": st.integers(0, 3) | json_values,
                                    "file_name": st.sampled_from(list(SIZE) + ["ghost.png"]) | json_values},
                                   optional={"width": st.sampled_from([120, 80, 90000]) | json_values,
                                             "height": st.sampled_from([100, 60, 90000]) | json_values})
coco_ann = st.fixed_dictionaries({"image_id": st.integers(0, 3) | json_values,
                                  "bbox": st.lists(st.floats(-50, 200) | st.sampled_from([float("nan"), float("inf")]),
                                                   min_size=0, max_size=5) | json_values,
                                  "category_id": st.integers(0, 5) | json_values}) | json_values


@FUZZ
@given(images=st.lists(coco_image, max_size=4), anns=st.lists(coco_ann, max_size=6),
       cats=st.lists(st.fixed_dictionaries({"id": st.integers(0, 5), "name": st.sampled_from(AI4MARS.classes)})
                     | json_values, max_size=5))
def test_coco_near_misses(folder, images, anns, cats):
    path = folder / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    _read(path, "coco", folder)


@FUZZ
@given(data=st.binary(max_size=300), yaml_data=st.binary(max_size=120) | st.none())
def test_yolo_any_bytes(folder, data, yaml_data):
    (folder / "labels" / "a.txt").write_bytes(data)
    dy = folder / "labels" / "data.yaml"
    if yaml_data is None:
        dy.unlink(missing_ok=True)
    else:
        dy.write_bytes(yaml_data)
    try:
        _read(folder / "labels", "yolo", folder, HIRISE_PITS)
    finally:
        dy.unlink(missing_ok=True)


@FUZZ
@given(lines=st.lists(st.lists(tokens, max_size=6), max_size=8))
def test_yolo_near_misses(folder, lines):
    (folder / "labels" / "a.txt").write_text("\n".join(" ".join(t.replace(" ", "") for t in ln) for ln in lines))
    _read(folder / "labels", "yolo", folder, HIRISE_PITS)


@FUZZ
@given(data=st.binary(max_size=300))
def test_split_csv_any_bytes(folder, data):
    from segmodels.mask_folder import read_split_csv
    path = folder / "split.csv"
    path.write_bytes(data)
    try:
        table = read_split_csv(path)
    except MarsamError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in table.items())


@FUZZ
@given(spec=json_values | st.fixed_dictionaries({"name": json_values, "classes": json_values,
                                                  "colors": json_values}))
def test_label_spec_any_json(spec):
    try:
        s = get_label_spec(spec)
    except MarsamError:
        return
    assert 1 <= s.num_classes < 255 and len(s.colors) == s.num_classes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from segmodels.checkpoints import save_checkpoint
    from segmodels.networks import build_model
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors", build_model("unet", base=2))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=st.dictionaries(st.sampled_from(["model", "model_args", "label_spec", "normalization", "training",
                                             "format"]), json_values, max_size=3)
       | st.fixed_dictionaries({"model_args": st.dictionaries(st.sampled_from(["base", "num_classes",
                                                                               "in_channels", "dropout", "x"]),
                                                              json_values | st.integers(-5, 10 ** 10))}),
       raw=st.none() | st.text(max_size=40))
def test_checkpoint_any_metadata(checkpoint, tmp_path_factory, edit, raw):
    from safetensors.torch import load_file, save_file
    from segmodels.checkpoints import load_checkpoint, read_metadata
    meta = {**read_metadata(checkpoint), **edit}
    path = tmp_path_factory.getbasetemp() / "fuzzed.safetensors"
    save_file(load_file(str(checkpoint)), str(path), metadata={"marsam": raw if raw is not None else json.dumps(meta)})
    try:
        ck = load_checkpoint(path)
    except MarsamError as e:
        assert "\n" not in str(e)
        return
    assert ck.model_name == "unet"
