"""Rendering explanation maps over their image (matplotlib colormaps, written atomically).

:func:`overlay_rgb` gives the H x W x 3 uint8 blend napari or a report can show as is;
:func:`save_overlay_png` writes a figure with the image, the overlay and a colour bar, the form
a person reads a map in. Signed maps (IG, LIME) use a diverging colormap centred on zero, so
red always means "raises the class score" and blue "lowers it"; non-negative maps (Grad-CAM,
attention, uncertainty) use a sequential one. Colours are scaled to the 1st..99th percentile
of |map| so one extreme pixel does not wash the rest out.
"""
from __future__ import annotations

import io
import os

import numpy as np

from ..atomic import atomic_write_bytes
from ..images import to_gray_float, to_unit_float

SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "inferno"


def _limits(m: np.ndarray, signed: bool) -> tuple[float, float]:
    finite = m[np.isfinite(m)]
    if finite.size == 0:
        return (-1.0, 1.0) if signed else (0.0, 1.0)
    if signed:
        v = float(np.percentile(np.abs(finite), 99)) or float(np.abs(finite).max()) or 1.0
        return -v, v
    lo, hi = float(np.percentile(finite, 1)), float(np.percentile(finite, 99))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def is_signed(m: np.ndarray) -> bool:
    return bool(np.nanmin(m) < 0)


def colorize_map(m: np.ndarray, cmap: str | None = None, signed: bool | None = None,
                 limits: tuple[float, float] | None = None) -> np.ndarray:
    """H x W x 4 float RGBA of a map through a matplotlib colormap."""
    import matplotlib

    m = np.asarray(m, np.float32)
    signed = is_signed(m) if signed is None else signed
    lo, hi = limits or _limits(m, signed)
    cm = matplotlib.colormaps[cmap or (SIGNED_CMAP if signed else POSITIVE_CMAP)]
    return cm(np.clip((np.nan_to_num(m) - lo) / (hi - lo), 0.0, 1.0))


def overlay_rgb(image: np.ndarray, m: np.ndarray, alpha: float = 0.5, cmap: str | None = None,
                signed: bool | None = None) -> np.ndarray:
    """H x W x 3 uint8: the image in grey blended with the coloured map."""
    base = to_unit_float(image)
    base = np.repeat(base[:, :, None], 3, axis=2) if base.ndim == 2 else base[:, :, :3]
    if base.shape[:2] != np.shape(m):
        base = np.repeat(to_gray_float(image)[:, :, None], 3, axis=2)
    rgba = colorize_map(m, cmap, signed)
    out = (1 - alpha) * base + alpha * rgba[:, :, :3]
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def save_overlay_png(path: str | os.PathLike, image: np.ndarray, m: np.ndarray, title: str = "",
                     alpha: float = 0.5, cmap: str | None = None, signed: bool | None = None,
                     label: str = "") -> None:
    """PNG figure: image | overlay with colour bar; written atomically."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.colors import Normalize
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    m = np.asarray(m, np.float32)
    signed = is_signed(m) if signed is None else signed
    lo, hi = _limits(m, signed)
    cm = cmap or (SIGNED_CMAP if signed else POSITIVE_CMAP)
    h, w = m.shape
    fig = Figure(figsize=(9.0, 4.6 * h / max(w, 1) + 0.6), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(to_gray_float(image), cmap="gray", vmin=0, vmax=1)
    ax1.set_title("image", fontsize=9)
    ax2.imshow(overlay_rgb(image, m, alpha, cm, signed))
    ax2.set_title(title, fontsize=9)
    for ax in (ax1, ax2):
        ax.set_axis_off()
    fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap=cm), ax=ax2, fraction=0.046, pad=0.02, label=label)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
