"""Helpers of the distill tests: tiny synthetic segmentation data for the distill tests, in every source format.

The label of a pixel is a function of the image (intensity bands of a smooth pattern), so even
a tiny network learns it in a few steps; a strip of each mask is unlabelled (255).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from distill.config import TrainConfig


def make_pair(seed: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(0.5, 2.0, 2)
    field = 0.5 + 0.5 * np.sin(2 * np.pi * (a * xx + b * yy) + rng.uniform(0, 6))
    image = np.clip(field * 255 + rng.normal(0, 4, field.shape), 0, 255).astype(np.uint8)
    mask = np.digitize(field, [0.25, 0.5, 0.75]).astype(np.uint8)   # classes 0..3
    mask[:, : size // 8] = 255
    return image, mask


def write_folder(root: Path, n_train: int = 8, n_val: int = 4, size: int = 40, split_csv: bool = True) -> Path:
    from PIL import Image
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n_train + n_val):
        img, mask = make_pair(i, size)
        name = f"img{i:03d}"
        Image.fromarray(np.repeat(img[:, :, None], 3, axis=2)).save(root / "images" / f"{name}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        rows.append((name, "train" if i < n_train else "val"))
    if split_csv:
        with open(root / "split.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "split"])
            w.writerows(rows)
    return root


def tiny_config(data: Path, **kw) -> TrainConfig:
    values = dict(data=str(data), size=32, teacher_base=4, student_base=4, epochs=2, batch_size=4,
                  lr=0.01, warmup_epochs=0.5, threads=1, device="cpu", decoder_width=16,
                  decoder_out_size=64)
    values.update(kw)
    return TrainConfig(**values).validate()
