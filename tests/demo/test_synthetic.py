"""The synthetic terrain: deterministic, every class present across tiles, and class textures distinct."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from distill.synthetic import make_terrain, make_terrain_dataset
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS


def test_terrain_is_deterministic_and_valid():
    img, lab = make_terrain(96, seed=5)
    img2, lab2 = make_terrain(96, seed=5)
    assert img.shape == lab.shape == (96, 96)
    assert img.dtype == lab.dtype == np.uint8
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    AI4MARS.validate_label_map(lab)
    assert not np.array_equal(make_terrain(96, seed=6)[0], img)


def test_every_class_appears_and_textures_differ():
    counts = np.zeros(256, np.int64)
    rough = {c: [] for c in range(4)}
    for s in range(12):
        img, lab = make_terrain(128, seed=s)
        counts += np.bincount(lab.ravel(), minlength=256)
        # local roughness: mean absolute difference of horizontal neighbours inside a class
        diff = np.abs(np.diff(img.astype(np.float32), axis=1))
        same = lab[:, 1:] == lab[:, :-1]
        for c in range(4):
            m = same & (lab[:, 1:] == c)
            if m.sum() > 200:
                rough[c].append(diff[m].mean())
    assert all(counts[c] > 0 for c in range(4)), counts[:4]
    # sand is smooth (ripples, no grain), soil is granular: a model can tell them apart
    assert np.mean(rough[2]) < 0.5 * np.mean(rough[0])


def test_dataset_layout_matches_ai4mars(tmp_path):
    root = make_terrain_dataset(tmp_path / "synth", n=5, size=64, seed=1, val_fraction=0.4)
    rows = list(csv.DictReader(open(root / "split.csv")))
    assert [r["split"] for r in rows].count("val") == 2
    for r in rows:
        img = np.asarray(Image.open(root / "images" / f"{r['id']}.png"))
        mask = np.asarray(Image.open(root / "masks" / f"{r['id']}.png"))
        assert img.shape == mask.shape == (64, 64)
        AI4MARS.validate_label_map(mask)
    with pytest.raises(MarsamError, match="already holds a dataset"):
        make_terrain_dataset(root, n=5, size=64)
    make_terrain_dataset(root, n=3, size=64, overwrite=True)
    assert len(list((root / "images").iterdir())) == len(list((root / "masks").iterdir())) == 3


@pytest.mark.parametrize("kwargs,match", [({"n": 1}, "n >= 2"), ({"val_fraction": 1.0}, "val_fraction"),
                                          ({"size": 16}, "size >= 32")])
def test_bad_dataset_arguments(tmp_path, kwargs, match):
    with pytest.raises(MarsamError, match=match):
        make_terrain_dataset(tmp_path / "x", **{"n": 4, "size": 64, **kwargs})
