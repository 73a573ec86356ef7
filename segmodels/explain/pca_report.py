"""The neural PCA figure: per class, the spectrum and the top-activating images per component.

One row per class: a bar chart of each component's share of the variance and its mean
absolute contribution to the class logit, then, for the first three components, a 2 x 2
mosaic of the images that score highest on it (what the component "looks for").
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import MarsamError
from ..images import load_image, to_gray_float
from .neural_pca import NeuralPCAResult

THUMB = 96
MOSAIC_COMPONENTS = 3


def _thumb(path: Path | None) -> np.ndarray:
    import cv2
    if path is None:
        return np.zeros((THUMB, THUMB), np.float32)
    try:
        img = to_gray_float(load_image(path))
    except MarsamError:
        return np.zeros((THUMB, THUMB), np.float32)
    return cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def _mosaic(ids: list[str], paths: dict[str, Path]) -> np.ndarray:
    tiles = [_thumb(paths.get(i)) for i in ids[:4]]
    tiles += [np.zeros((THUMB, THUMB), np.float32)] * (4 - len(tiles))
    return np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:4])])


def save_pca_png(path: str | os.PathLike, res: NeuralPCAResult, paths: dict[str, Path]) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = max(len(res.classes), 1)
    fig = Figure(figsize=(3.2 * (1 + MOSAIC_COMPONENTS), 3.0 * rows), dpi=90)
    axes = np.atleast_2d(fig.subplots(rows, 1 + MOSAIC_COMPONENTS, squeeze=False))
    for r, c in enumerate(res.classes):
        ax = axes[r, 0]
        n = len(c.eigenvalues)
        if n:
            idx = np.arange(1, n + 1)
            ax.bar(idx - 0.2, c.explained_ratio, width=0.4, label="variance share")
            contrib = c.mean_abs_contribution / max(float(np.max(np.abs(c.mean_abs_contribution))), 1e-12)
            ax.bar(idx + 0.2, contrib, width=0.4, label="|logit contribution| (rel.)")
            ax.set_xticks(idx)
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "fewer than 2 images\npredict this class", ha="center", va="center")
        ax.set_title(f"{c.class_name}: {len(c.image_ids)} images", fontsize=9)
        ax.set_xlabel("component", fontsize=8)
        for j in range(MOSAIC_COMPONENTS):
            a = axes[r, 1 + j]
            a.set_axis_off()
            if j < len(c.top_images):
                a.imshow(_mosaic(c.top_images[j], paths), cmap="gray", vmin=0, vmax=1)
                a.set_title(f"PC{j + 1} top images ({100 * c.explained_ratio[j]:.0f}% var)", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
