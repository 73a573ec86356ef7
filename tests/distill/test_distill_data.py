"""Datasets from a folder, a saved Hugging Face dataset and a session; bad pairs skipped and listed."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from distill.augment import Augment
from distill.data import open_dataset
from segmodels import MarsamError
from segmodels.labels import AI4MARS, HIRISE_PITS

from distill_testdata import make_pair, write_folder


def test_folder_with_split_csv(folder_data):
    train = open_dataset(folder_data, "train", size=32)
    val = open_dataset(folder_data, "val", size=32)
    assert (len(train), len(val)) == (8, 4)
    item = train[0]
    assert item["x"].shape == (1, 32, 32) and item["y"].shape == (32, 32)
    # nearest-neighbour resizing never invents a class between two labels
    assert set(np.unique(np.concatenate([m.ravel() for m in train.masks]))) <= {0, 1, 2, 3, 255}
    rgb = open_dataset(folder_data, "train", size=32, channels=3)
    assert rgb[0]["x"].shape == (3, 32, 32)
    with pytest.raises(MarsamError, match="split 'test' is not in"):
        open_dataset(folder_data, "test")


def test_limit_gives_nested_subsets(folder_data):
    a = open_dataset(folder_data, "train", size=32, limit=3).ids
    b = open_dataset(folder_data, "train", size=32, limit=5).ids
    assert len(a) == 3 and b[:3] == a


def test_bad_pairs_are_skipped_and_listed(tmp_path):
    root = write_folder(tmp_path / "d", n_train=6, n_val=0)
    (root / "masks" / "img000.png").unlink()                                  # image without mask
    (root / "images" / "img001.jpg").write_bytes(b"not a jpeg at all")         # corrupt image
    bad = np.full((40, 40), 7, np.uint8)                                       # value outside the spec
    Image.fromarray(bad).save(root / "masks" / "img002.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "img003.png")   # wrong size
    with open(root / "split.csv", "a") as f:
        f.write("ghost,train\n")                                               # split names a missing id
    ds = open_dataset(root, "train", size=32)
    reasons = dict(ds.skipped)
    assert len(ds) == 2
    assert "without a mask" in reasons["img000"]
    assert "unreadable" in reasons["img001"] or "corrupt" in reasons["img001"]
    assert "outside label spec" in reasons["img002"]
    assert "20x20" in reasons["img003"]
    assert "no image file" in reasons["ghost"]


def test_folder_without_split_csv_is_one_split(tmp_path):
    root = write_folder(tmp_path / "d", n_train=3, n_val=0, split_csv=False)
    assert len(open_dataset(root, "all", size=32)) == 3
    assert open_dataset(root, "train", size=32).split == "train"
    with pytest.raises(MarsamError, match="no split.csv"):
        open_dataset(root, "val", size=32)


def test_empty_and_missing_sources(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(MarsamError, match="holds no images"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    with pytest.raises(MarsamError, match="is not a dataset"):
        open_dataset(tmp_path / "other")
    with pytest.raises(MarsamError, match="does not exist"):
        open_dataset(tmp_path / "nowhere" / "at" / "all")
    only = write_folder(tmp_path / "nomask", n_train=2, n_val=0)
    for p in (only / "masks").iterdir():
        p.unlink()
    with pytest.raises(MarsamError, match="no usable image/label pairs"):
        open_dataset(only, "train")


def test_saved_hugging_face_dataset(tmp_path):
    """The hub path and save_to_disk share hf_pairs: same columns as hassanjbara/AI4MARS."""
    import datasets
    feats = datasets.Features({"image": datasets.Image(), "label_mask": datasets.Image(),
                               "rover_mask": datasets.Image(), "has_labels": datasets.Value("bool")})

    def split(seeds):
        rows = {"image": [], "label_mask": [], "rover_mask": [], "has_labels": []}
        for s in seeds:
            img, mask = make_pair(s)
            rows["image"].append(Image.fromarray(img))
            rows["label_mask"].append(Image.fromarray(mask) if s != 2 else None)
            rows["rover_mask"].append(Image.fromarray(np.zeros_like(mask)))
            rows["has_labels"].append(s != 2)
        return datasets.Dataset.from_dict(rows, features=feats)
    datasets.DatasetDict({"train": split([0, 1, 2, 3]), "test": split([4, 5])}).save_to_disk(tmp_path / "hf")
    ds = open_dataset(tmp_path / "hf", "train", size=32)
    assert len(ds) == 3                       # the unlabelled row is skipped unread
    ref = open_dataset(tmp_path / "hf", "test", size=32)
    assert len(ref) == 2 and set(ref[0]["y"].unique().tolist()) <= {0, 1, 2, 3, 255}
    with pytest.raises(MarsamError, match="no split 'val'"):
        open_dataset(tmp_path / "hf", "val")


def test_session_source(tmp_path):
    from annotate.session import Session
    paths = []
    for i in range(3):
        img, _ = make_pair(i)
        p = tmp_path / f"s{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    session = Session.create(tmp_path / "session", paths, label_spec=HIRISE_PITS)
    for p in paths[:2]:
        lm = np.full((40, 40), 255, np.uint8)
        lm[5:20, 5:20] = 1
        lm[25:35, 25:35] = 0
        session.set_result(p, [], lm)
    ds = open_dataset(tmp_path / "session", "all", size=32)
    assert len(ds) == 2 and ds.label_spec.classes == HIRISE_PITS.classes
    # the session's own spec wins over a default or another one given (its maps hold its ids)
    assert open_dataset(tmp_path / "session", "all", size=32, label_spec=AI4MARS).label_spec == HIRISE_PITS
    # one split: 'val' is a fixed held-out share, 'train' the rest, never overlapping
    train, val = (open_dataset(tmp_path / "session", s, size=32) for s in ("train", "val"))
    assert len(train) == len(val) == 1 and set(train.ids).isdisjoint(val.ids)
    assert set(train.ids) | set(val.ids) == set(ds.ids)
    with pytest.raises(MarsamError, match="no split 'test'"):
        open_dataset(tmp_path / "session", "test", size=32)
    # a complete image: unboxed pixels are background for training, the PNG keeps what was painted
    assert (ds.masks[ds.ids.index("s0")] == 255).any()
    session.set_complete(paths[0])
    ds = open_dataset(tmp_path / "session", "all", size=32)
    assert not (ds.masks[ds.ids.index("s0")] == 255).any() and (ds.masks[ds.ids.index("s1")] == 255).any()


def test_session_holdout_is_fixed_and_needs_two_images(tmp_path):
    from distill.data import SESSION_VAL_FRACTION, held_out
    ids = [f"img{i:03d}" for i in range(38)]
    val = held_out(ids)
    assert len(val) == round(SESSION_VAL_FRACTION * 38) == 8 and val == held_out(list(reversed(ids)))
    assert held_out(ids[:1]) == set() and len(held_out(ids[:2])) == 1
    from annotate.session import Session
    img, _ = make_pair(0)
    Image.fromarray(img).save(tmp_path / "only.png")
    session = Session.create(tmp_path / "one", [tmp_path / "only.png"], label_spec=HIRISE_PITS)
    lm = np.full((40, 40), 1, np.uint8)
    session.set_result(tmp_path / "only.png", [], lm)
    with pytest.raises(MarsamError, match="label at least 2"):
        open_dataset(tmp_path / "one", "val", size=32)


def test_augment_keeps_alignment_and_fills_ignore():
    img, mask = make_pair(3, 64)
    aug = Augment(hflip=1.0, rotate=20, scale=0.1, affine_p=1.0, brightness=0, contrast=0, noise=0)
    out_img, out_mask, _ = aug(img.astype(np.float32) / 255, mask, np.random.default_rng(0))
    assert out_img.shape == (64, 64) and out_mask.dtype == np.uint8
    assert (out_mask == 255).sum() > (mask == 255).sum() * 0.5   # corners rotated in are ignored
    assert set(np.unique(out_mask)) <= {0, 1, 2, 3, 255}
    # the label still follows the image after the shared warp (up to a few edge pixels)
    labelled = out_mask != 255
    expected = np.digitize(out_img, [0.25, 0.5, 0.75])
    assert (expected[labelled] == out_mask[labelled]).mean() > 0.9


def test_hub_id_goes_through_load_dataset(monkeypatch):
    """No network here: check the hub path calls datasets.load_dataset(id, split=...) and then
    shares the code of saved datasets; a failure becomes one MarsamError."""
    import datasets
    calls = []
    img, mask = make_pair(0)
    local = datasets.Dataset.from_dict({"image": [Image.fromarray(img)], "label_mask": [Image.fromarray(mask)]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label_mask": datasets.Image()}))

    def fake(name, split=None, **kw):
        calls.append((name, split))
        if name == "nobody/nothing":
            raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub")
        return local
    monkeypatch.setattr(datasets, "load_dataset", fake)
    ds = open_dataset("hassanjbara/AI4MARS", "train", size=32)
    assert calls == [("hassanjbara/AI4MARS", "train")] and len(ds) == 1
    with pytest.raises(MarsamError, match="cannot load dataset 'nobody/nothing'"):
        open_dataset("nobody/nothing", "train")


def test_shared_ai4mars_split(ai4mars_dir):
    ds = open_dataset(ai4mars_dir, "val", size=64, limit=4)
    assert len(ds) == 4 and ds.label_spec.name == "ai4mars"
    assert set(np.unique(np.stack(ds.masks))) <= {0, 1, 2, 3, 255}
    assert ds[0]["x"].shape == (1, 64, 64)
