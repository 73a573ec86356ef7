"""Datasets: one interface for a Hugging Face dataset, an images/ + masks/ folder and a session.

Every source becomes a list of (id, image, label map) pairs, resized to ``size x size`` (area or
bilinear for images, nearest-neighbour for label maps so no class is invented on an edge), and
checked once when the dataset is opened: unreadable files, images without masks, masks of
another shape and masks holding values outside the label spec are skipped and listed in
``dataset.skipped`` rather than stopping the run or being learned silently. Images are kept in
memory as 8-bit arrays at the training size (a 4200-image split at 256 px is about 0.3 GB),
because decoding JPEGs in every epoch costs more CPU than the small student's training step.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segmodels import mask_folder
from segmodels.errors import MarsamError, SplitNotFound
from segmodels.mask_folder import SINGLE_SPLIT
from segmodels.images import load_image, to_unit_float
from segmodels.labels import LabelSpec, get_label_spec
from segmodels.normalization import DEFAULT_MEAN, DEFAULT_STD, Normalization

from .augment import Augment

log = logging.getLogger(__name__)

DEFAULT_HF_DATASET = "hassanjbara/AI4MARS"
#: the fraction of a session's labelled images held out as its "val" split (chosen by a hash of the
#: image names, so the same images are held out on every run and for every --limit)
SESSION_VAL_FRACTION = 0.2
_MASK_HINTS = ("label", "mask", "annotation", "seg", "target", "gt")
_ID_HINTS = ("id", "name", "file_name", "filename", "image_id", "path")


@dataclass
class Pair:
    """A loader for one image/label pair; ``load()`` returns raw arrays or raises."""
    id: str
    load: Callable[[], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class SegmentationDataset(Dataset):
    """Preprocessed pairs ready for a U-Net: items are dicts ``x`` (C x H x W), ``y`` (H x W), ``index``."""
    ids: list[str]
    images: list[np.ndarray]                 # uint8 H x W (x 3), resized
    masks: list[np.ndarray]                  # uint8 H x W, resized
    label_spec: LabelSpec
    size: int | None
    channels: int = 1
    augment: Augment | None = None
    source: str = ""
    split: str = SINGLE_SPLIT
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mean: float = DEFAULT_MEAN
    std: float = DEFAULT_STD
    seed: int = 0
    soft: list[np.ndarray] | None = None     # optional per-image teacher logits (K x H x W)

    def __post_init__(self):
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws each epoch, reproducible from (seed, epoch, index)."""
        self._epoch = int(epoch)

    @property
    def normalization(self) -> Normalization:
        return Normalization(in_channels=self.channels, mean=self.mean, std=self.std, size=self.size)

    def image_float(self, i: int) -> np.ndarray:
        img = self.images[i].astype(np.float32) / 255.0
        if self.channels == 1 and img.ndim == 3:
            img = img.mean(axis=2)
        elif self.channels == 3 and img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return img

    def __getitem__(self, i: int) -> dict:
        img, mask = self.image_float(i), self.masks[i]
        soft = self.soft[i] if self.soft is not None else None
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self._epoch, i])
            img, mask, soft = self.augment(img, mask, rng, soft)
        x = self.normalization.from_unit(img)
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        item = {"x": torch.from_numpy(np.ascontiguousarray(x, np.float32)),
                "y": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
                "index": i}
        if soft is not None:
            item["soft"] = torch.from_numpy(np.ascontiguousarray(soft, np.float32))
        return item

    def class_counts(self) -> np.ndarray:
        """Labelled pixels per class (ignore excluded), for inverse-frequency weights."""
        counts = np.zeros(self.label_spec.num_classes, np.int64)
        for m in self.masks:
            c = np.bincount(m.ravel(), minlength=256)
            counts += c[: self.label_spec.num_classes]
        return counts

    def subset(self, n: int) -> "SegmentationDataset":
        """The first ``n`` pairs (the order is a fixed hash order, so subsets are nested)."""
        n = min(int(n), len(self))
        return SegmentationDataset(self.ids[:n], self.images[:n], self.masks[:n], self.label_spec,
                                   self.size, self.channels, self.augment, self.source, self.split,
                                   list(self.skipped), self.mean, self.std, self.seed,
                                   self.soft[:n] if self.soft is not None else None)

    def describe(self) -> str:
        s = f"{len(self)} images from {self.source} (split {self.split!r}"
        s += f", {self.size}x{self.size} px" if self.size else ""
        s += f", {len(self.skipped)} skipped)" if self.skipped else ")"
        return s


# -- preprocessing --------------------------------------------------------------------------

def _prepare(pid: str, image: np.ndarray, mask: np.ndarray | None, spec: LabelSpec,
             size: int | None) -> tuple[np.ndarray, np.ndarray]:
    if mask is None:
        raise MarsamError("has no label map")
    img = to_unit_float(np.asarray(image), f"image {pid}")
    m = np.asarray(mask)
    if m.ndim == 3:
        if m.shape[2] in (3, 4) and (m[..., :3] == m[..., :1]).all():
            m = m[..., 0]
        elif m.shape[2] == 1:
            m = m[..., 0]
        else:
            raise MarsamError("mask is a colour image; save class ids (0..K-1, 255 unlabelled) as a grey PNG")
    if m.shape != img.shape[:2]:
        raise MarsamError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {img.shape[1]}x{img.shape[0]}")
    if not np.issubdtype(m.dtype, np.integer):
        raise MarsamError(f"mask has dtype {m.dtype}; save integer class ids")
    m = spec.validate_label_map(m, "mask")
    if size:
        h, w = m.shape
        interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
    if not (m != spec.ignore_index).any():
        raise MarsamError("mask has no labelled pixel")
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), m


def _hash_order(ids: Iterable[str]) -> list[int]:
    ids = list(ids)
    return sorted(range(len(ids)), key=lambda i: hashlib.sha1(ids[i].encode()).hexdigest())


def build_dataset(pairs: list[Pair], label_spec: LabelSpec, size: int | None, channels: int = 1,
                  augment: bool | Augment = False, limit: int | None = None, source: str = "",
                  split: str = SINGLE_SPLIT, skipped: list | None = None, seed: int = 0,
                  progress: bool = False, mixed_sizes: bool = False) -> SegmentationDataset:
    """Decode, check and resize ``pairs``; bad pairs are skipped and listed, never fatal."""
    skipped = list(skipped or [])
    order = _hash_order(p.id for p in pairs)
    ids, images, masks = [], [], []
    it = order
    if progress:
        from tqdm import tqdm
        it = tqdm(order, desc=f"reading {split}", unit="img", leave=False)
    for k in it:
        if limit is not None and len(ids) >= limit:
            break
        p = pairs[k]
        try:
            img, m = p.load()
            img, m = _prepare(p.id, img, m, label_spec, size)
        except MarsamError as e:
            skipped.append((p.id, str(e)))
            continue
        except Exception as e:  # a corrupt file must not stop the batch
            skipped.append((p.id, f"unreadable ({type(e).__name__}: {e})"))
            continue
        ids.append(p.id)
        images.append(img)
        masks.append(m)
    for pid, why in skipped[:20]:
        log.warning("skipped %s: %s", pid, why)
    if len(skipped) > 20:
        log.warning("... and %d more skipped pairs (see dataset.skipped)", len(skipped) - 20)
    if not ids:
        reasons = "; ".join(f"{i}: {w}" for i, w in skipped[:3])
        raise MarsamError(f"no usable image/label pairs in {source} (split {split!r})"
                          + (f"; skipped {len(skipped)}, e.g. {reasons}" if skipped else "")
                          + "; check that images have label maps with values of the label spec")
    if size is None and not mixed_sizes and len({m.shape for m in masks}) > 1:
        raise MarsamError(f"images in {source} have different sizes; give a size to resize them to")
    aug = (augment if isinstance(augment, Augment) else (Augment() if augment else None))
    return SegmentationDataset(ids, images, masks, label_spec, size, channels, aug, source, split,
                               skipped, seed=seed)


# -- sources --------------------------------------------------------------------------------

def folder_pairs(root: Path, split: str) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Lazy pairs of an images/ + masks/ folder (``segmodels.mask_folder`` reads the layout)."""
    found, skipped = mask_folder.pairs(root, split)

    def loader(p):
        return lambda: (load_image(p.image), load_image(p.mask))
    return [Pair(p.id, loader(p)) for p in found], skipped


def _hf_columns(features) -> tuple[str, str, str | None]:
    from datasets import Image as HFImage
    img_cols = [k for k, v in features.items() if isinstance(v, HFImage)]
    mask_cols = [k for k in img_cols if any(h in k.lower() for h in _MASK_HINTS)]
    # AI4MARS: image, label_mask, rover_mask, range_mask -> prefer "label" over other masks
    mask_cols.sort(key=lambda k: (0 if "label" in k.lower() else 1, k))
    image_cols = [k for k in img_cols if k not in mask_cols]
    if "image" in features and "image" in img_cols:
        image_cols = ["image"]
    if not image_cols or not mask_cols:
        raise MarsamError(f"cannot find an image and a label-mask column among {list(features)}; "
                          "the dataset needs two Image columns, e.g. 'image' and 'label_mask'")
    id_col = next((k for k in features if k.lower() in _ID_HINTS and k not in img_cols), None)
    return image_cols[0], mask_cols[0], id_col


def hf_pairs(ds, split: str) -> list[Pair]:
    """Pairs from a ``datasets.Dataset``; rows are decoded lazily, one at a time."""
    img_col, mask_col, id_col = _hf_columns(ds.features)
    ids = [str(v) for v in ds[id_col]] if id_col else [f"{split}-{i:06d}" for i in range(len(ds))]
    if "has_labels" in ds.features:   # AI4MARS marks rows without labels; skip them unread
        keep = [i for i, h in enumerate(ds["has_labels"]) if h]
    else:
        keep = list(range(len(ds)))

    def loader(i):
        def load():
            row = ds[i]
            mask = row[mask_col]
            return np.asarray(row[img_col]), (None if mask is None else np.asarray(mask))
        return load
    return [Pair(ids[i], loader(i)) for i in keep]


def _open_hf(source: str, split: str):
    import datasets
    path = Path(source)
    try:
        if path.exists():
            obj = datasets.load_from_disk(str(path))
        else:
            return datasets.load_dataset(source, split=split)
    except FileNotFoundError as e:
        raise MarsamError(f"dataset {source!r} not found ({e}); give a Hugging Face id, a folder "
                          "saved with save_to_disk, an images/+masks/ folder or a session folder") from None
    except Exception as e:
        raise MarsamError(f"cannot load dataset {source!r}: {type(e).__name__}: {e}; without network "
                          "access, download it elsewhere and save_to_disk, or use an images/+masks/ "
                          "folder") from None
    if isinstance(obj, datasets.DatasetDict):
        if split not in obj:
            raise SplitNotFound(f"dataset {source} has no split {split!r}; it has {', '.join(obj)}")
        return obj[split]
    if split not in (SINGLE_SPLIT, "train"):
        raise SplitNotFound(f"dataset {source} is a single split; there is no split {split!r}")
    return obj


def session_pairs(folder: Path) -> tuple[list[Pair], LabelSpec]:
    """Every labelled ("done") image of a session with its label map (complete images: the
    unboxed pixels are background, see :meth:`annotate.session.Session.label_map`)."""
    try:
        from annotate.session import Session
    except ImportError as e:  # pragma: no cover - annotate ships with marsam
        raise MarsamError(f"reading a session needs marsam's annotate package ({e})") from None
    session = Session.open(folder)
    labelled = list(session.labelled_images())

    def loader(p):
        return lambda: (load_image(p), session.label_map(p))
    return [Pair(Path(p).stem, loader(p)) for p in labelled], session.label_spec


def held_out(ids: list[str], fraction: float = SESSION_VAL_FRACTION) -> set[str]:
    """The ids of a one-split source that form its "val" split: ``round(fraction * n)`` of them (at
    least 1 when there are 2 or more, never all), the first by a hash of the id."""
    n = len(ids)
    k = 0 if n < 2 else min(n - 1, max(1, round(fraction * n)))
    ranked = sorted(ids, key=lambda i: hashlib.sha1(f"val:{i}".encode()).hexdigest())
    return set(ranked[:k])


def session_split(path: Path, pairs: list[Pair], split: str, progress: bool = False) -> list[Pair]:
    """A session is one set of labelled images: ``all`` is all of them, ``val`` the held-out
    fraction (:func:`held_out`), ``train`` the rest. Which and how many is logged (printed too
    when ``progress``)."""
    if split == SINGLE_SPLIT:
        return pairs
    if split not in ("train", "val"):
        raise SplitNotFound(f"session {path} has the splits 'all', 'train' and 'val' (the held-out "
                          f"{SESSION_VAL_FRACTION:.0%}); there is no split {split!r}")
    val = held_out([p.id for p in pairs])
    if not val:
        raise MarsamError(f"session {path} has {len(pairs)} labelled image(s); label at least 2 so that one "
                          "can be held out for validation (or train without validation: --set val_split=null)")
    note = (f"session {path}: {len(val)} of {len(pairs)} labelled images ({SESSION_VAL_FRACTION:.0%}, chosen by "
            f"a hash of their names) are held out as 'val', {len(pairs) - len(val)} form 'train'")
    log.info(note)
    if progress and split == "train":
        print(note, flush=True)
    return [p for p in pairs if (p.id in val) == (split == "val")]


def is_session(path: Path) -> bool:
    return (path / "session.json").is_file()


def is_saved_hf(path: Path) -> bool:
    return any((path / n).is_file() for n in ("dataset_dict.json", "dataset_info.json", "state.json"))


def open_dataset(source: str | os.PathLike = DEFAULT_HF_DATASET, split: str = "train",
                 size: int | None = 256, channels: int = 1, augment: bool | Augment = False,
                 label_spec: LabelSpec | str | None = None, limit: int | None = None,
                 seed: int = 0, progress: bool = False, mixed_sizes: bool = False) -> SegmentationDataset:
    """Open any supported source as a :class:`SegmentationDataset`.

    ``source``: a Hugging Face hub id (``hassanjbara/AI4MARS``), a folder written by
    ``Dataset.save_to_disk``, a folder with ``images/`` and ``masks/`` (optional ``split.csv``
    with ``id,split``), or an annotate session folder (its own label spec is used whatever
    ``label_spec`` says; its splits are ``all``, ``train`` and the held-out ``val``, see
    :func:`session_split`). ``limit`` keeps a
    fixed pseudo-random subset (hash order of the ids), nested for growing limits. ``size=None``
    keeps the original sizes (``mixed_sizes=True`` allows them to differ: the SAM decoder path).
    """
    if channels not in (1, 3):
        raise MarsamError(f"channels must be 1 or 3, got {channels}")
    if limit is not None and limit < 1:
        raise MarsamError(f"limit must be at least 1, got {limit}")
    spec = get_label_spec(label_spec)
    src = str(source)
    path = Path(src).expanduser()
    skipped: list[tuple[str, str]] = []
    if path.is_dir() and is_session(path):
        pairs, session_spec = session_pairs(path)
        if label_spec is not None and spec.classes != session_spec.classes:
            # the label maps hold the session's class ids; another spec cannot read them
            log.info("session %s carries its own label spec %r; %r is not used for it", path,
                     session_spec.name, spec.name)
        spec = session_spec
        if not pairs:
            raise MarsamError(f"session {path} has no labelled images yet; label some images first")
        pairs = session_split(path, pairs, split, progress)
    elif path.is_dir() and (path / mask_folder.IMAGES).is_dir():
        pairs, skipped = folder_pairs(path, split)
    elif path.is_dir() and is_saved_hf(path):
        ds = _open_hf(str(path), split)
        pairs = hf_pairs(ds, split)
    elif path.exists():
        raise MarsamError(f"{path} is not a dataset: expected images/ and masks/ folders, a session "
                          "(session.json) or a Hugging Face dataset saved with save_to_disk")
    elif src.count("/") == 1 and not src.startswith((".", "/", "~")):
        ds = _open_hf(src, split)
        pairs = hf_pairs(ds, split)
    else:
        raise MarsamError(f"dataset {src!r} does not exist; give a folder or a Hugging Face id like "
                          f"{DEFAULT_HF_DATASET}")
    return build_dataset(pairs, spec, size, channels, augment, limit, source=src, split=split,
                         skipped=skipped, seed=seed, progress=progress, mixed_sizes=mixed_sizes)
