"""Label specs, image normalisation, atomic writes and the CLI's error handling."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from segmodels import AI4MARS, HIRISE_PITS, MarsamError, get_label_spec
from segmodels.atomic import atomic_path, atomic_write_json
from segmodels.images import check_image, load_image, to_gray_float, to_model_input, to_rgb_uint8


def test_label_spec_lookup_and_validation():
    assert AI4MARS.classes == ("soil", "bedrock", "sand", "big_rock")
    assert AI4MARS.class_id("Big Rock") == 3 and AI4MARS.class_id(1) == 1
    assert HIRISE_PITS.num_classes == 2
    with pytest.raises(MarsamError, match="unknown class 'lava'"):
        AI4MARS.class_id("lava")
    with pytest.raises(MarsamError, match="outside label spec"):
        AI4MARS.validate_label_map(np.array([[0, 7], [255, 1]], np.uint8))
    assert get_label_spec(AI4MARS.to_dict()) == AI4MARS
    with pytest.raises(MarsamError, match="unknown label spec"):
        get_label_spec("moon")
    rgb = AI4MARS.colorize(np.array([[0, 255]], np.uint8))
    assert tuple(rgb[0, 0]) == AI4MARS.colors[0] and tuple(rgb[0, 1]) == (0, 0, 0)


@pytest.mark.parametrize("img", [
    np.random.randint(0, 256, (20, 30), np.uint8),
    np.random.randint(0, 4096, (20, 30), np.uint16),         # 12-bit data in 16-bit container
    np.random.rand(20, 30, 3).astype(np.float32),
    np.random.rand(20, 30, 1) * 1000.0,                       # float beyond [0, 1]
    np.random.randint(0, 256, (20, 30, 4), np.uint8),         # RGBA
    np.random.rand(20, 30) > 0.5,                             # bool
])
def test_every_image_kind_normalises(img):
    rgb = to_rgb_uint8(img)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    gray = to_gray_float(img)
    assert gray.shape == (20, 30) and gray.dtype == np.float32 and 0 <= gray.min() <= gray.max() <= 1
    assert to_model_input(img).shape == (1, 1, 20, 30)
    assert to_model_input(img, in_channels=3).shape == (1, 3, 20, 30)


def test_sixteen_bit_is_stretched_not_darkened():
    img = np.full((16, 16), 1000, np.uint16)
    img[:8] = 3000
    rgb = to_rgb_uint8(img)
    assert rgb[:8].min() == 255 and rgb[8:].max() == 0


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 5), np.uint8), "pixels"),
    (np.zeros((1, 1), np.uint8), "pixels"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.full((10, 10), np.nan, np.float32), "NaN"),
    (np.array([["a"] * 10] * 10), "dtype"),
])
def test_bad_images_are_refused(bad, match):
    with pytest.raises(MarsamError, match=match):
        check_image(bad)


def test_load_image_corrupt_and_missing(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(MarsamError, match="corrupt"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(MarsamError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_load_real_image(ai4mars_dir):
    path = sorted((ai4mars_dir / "images").iterdir())[0]
    img = load_image(path)
    assert img.shape[:2] == (256, 256) and img.dtype == np.uint8


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "session.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["session.json"]


def test_cli_prints_one_line_and_exits_2_on_user_error(tmp_path):
    code = ("from segmodels.cli import main; from segmodels.errors import MarsamError\n"
            "import argparse\n"
            "def bad(a): raise MarsamError('the thing is wrong; fix it like so')\n"
            "import segmodels.cli as c\n"
            "orig = c.build_parser\n"
            "def bp():\n"
            "    p = orig(); s = [a for a in p._actions if a.dest == 'command'][0]\n"
            "    s.add_parser('boom').set_defaults(func=bad); return p\n"
            "c.build_parser = bp\n"
            "raise SystemExit(main(['boom']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "marsam: error: the thing is wrong; fix it like so"
    assert "Traceback" not in r.stderr


def test_atomic_write_gives_normal_permissions(tmp_path, monkeypatch):
    import segmodels.atomic
    monkeypatch.setattr(segmodels.atomic, "_UMASK", 0o022)
    atomic_write_json(tmp_path / "new.json", {})
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    (tmp_path / "kept.json").write_text("{}")
    os.chmod(tmp_path / "kept.json", 0o640)
    atomic_write_json(tmp_path / "kept.json", {"a": 1})
    assert (tmp_path / "kept.json").stat().st_mode & 0o777 == 0o640


def test_label_spec_from_a_user_yaml_or_a_yolo_data_yaml(tmp_path):
    from segmodels.labels import read_label_yaml
    f = tmp_path / "my-classes.yaml"
    f.write_text("classes: [background, skylight, pit]\nbox_classes: {'1': skylight, '*': pit}\n")
    spec, class_map = read_label_yaml(f)
    assert spec.name == "my-classes" and spec.classes == ("background", "skylight", "pit")
    assert spec.background_id == 0 and class_map == {"1": "skylight", "*": "pit"}
    assert get_label_spec(str(f)) == spec                  # --labels my-classes.yaml
    yolo = tmp_path / "pits" / "data.yaml"
    yolo.parent.mkdir()
    yolo.write_text("nc: 3\nnames: ['a', 'b', 'c']\n")     # a YOLO dataset file: background put first
    assert get_label_spec(str(yolo)).classes == ("background", "a", "b", "c")
    assert get_label_spec(str(yolo)).name == "pits-classes"
    # complete: unlabelled -> background; a terrain spec without background cannot be complete
    assert HIRISE_PITS.complete(np.array([[255, 1]], np.uint8)).tolist() == [[0, 1]]
    assert AI4MARS.background_id is None
    with pytest.raises(MarsamError, match="no 'background' class"):
        AI4MARS.complete(np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("text, match", [
    (None, "cannot read label spec file"),                           # missing file
    ("classes: [a, b\n", "not valid YAML"),                          # broken YAML
    ("colours: []\n", "needs a 'classes"),                           # no classes
    ("classes: [a, b]\ncolors: [[1, 2, 3]]\n", "2 classes but 1 colours"),
    ("classes: [a, a]\n", "repeats a class name"),
    ("classes: [a]\ncolors: [[1, x, 3]]\n", "one \\[r, g, b\\] list per class"),
    ("classes: [a, b]\nbox_classes: [a]\n", "box_classes"),
])
def test_bad_label_yaml_is_one_line_that_says_what_to_fix(tmp_path, text, match):
    f = tmp_path / "spec.yaml"
    if text is not None:
        f.write_text(text)
    with pytest.raises(MarsamError, match=match):
        get_label_spec(str(f))
