"""The images/ + masks/ + split.csv layout: one reader and writer for every package.

Bad inputs tried: a folder without masks/, a split that split.csv does not name, a split asked of
a folder without split.csv, an id in split.csv without an image, an image without a mask.
"""
from __future__ import annotations

import numpy as np
import pytest

from segmodels import mask_folder as mf
from segmodels.errors import MarsamError, SplitNotFound


def _folder(root, n=4, split=True):
    rows = []
    for i in range(n):
        mf.write_pair(root, f"t{i}", np.full((8, 8), 40 * i, np.uint8), np.full((8, 8), i % 2, np.uint8))
        rows.append((f"t{i}", "val" if i >= n - 1 else "train"))
    if split:
        mf.write_split_csv(root, rows + [("ghost", "train")])
    return root


def test_round_trip_and_skips(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "masks" / "t0.png").unlink()
    assert mf.has_layout(root) and mf.image_folder(root) == root / "images"
    assert mf.read_split_csv(root / "split.csv")["t3"] == "val"
    train, skipped = mf.pairs(root, "train")
    assert [p.id for p in train] == ["t1", "t2"]
    assert dict(skipped) == {"ghost": "named in split.csv but no image file",
                             "t0": "image without a mask (expected masks/t0.png)"}
    assert [p.id for p in mf.pairs(root, None)[0]] == ["t1", "t2", "t3"]   # None: split.csv ignored
    with pytest.raises(SplitNotFound, match="split 'test' is not in .*use one of train, val"):
        mf.pairs(root, "test")


def test_folder_without_split_csv_is_one_split(tmp_path):
    root = _folder(tmp_path / "d", split=False)
    assert len(mf.pairs(root, mf.SINGLE_SPLIT)[0]) == 4 and len(mf.pairs(root, "train")[0]) == 4
    with pytest.raises(SplitNotFound, match="no split.csv"):
        mf.pairs(root, "val")
    (tmp_path / "plain").mkdir()
    assert mf.image_folder(tmp_path / "plain") == tmp_path / "plain"
    with pytest.raises(MarsamError, match="images/ and masks/"):
        mf.pairs(tmp_path / "plain", None)
    with pytest.raises(MarsamError, match="not a folder"):
        mf.image_folder(tmp_path / "missing")
