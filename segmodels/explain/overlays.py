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
from ..images import to_gray_float, to_rgb_uint8

SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "inferno"


#: figures are drawn at most this many pixels on a side (a 990 px wide figure shows no more)
DISPLAY_SIDE = 1024
_SAMPLE = 1 << 22   # colour limits from at most ~4 M pixels (an even stride; exact for smaller maps)


def _limits(m: np.ndarray, signed: bool) -> tuple[float, float]:
    if m.size > _SAMPLE:
        m = m.reshape(-1)[:: int(np.ceil(m.size / _SAMPLE))]
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


def display_size(image: np.ndarray, m: np.ndarray, max_side: int = DISPLAY_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Image and map shrunk (area averaging) so the longer side is at most ``max_side``; the map in float32."""
    import cv2
    m = np.asarray(m, np.float32)
    h, w = m.shape
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image, m
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = np.asarray(image)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.shape[:2] == (h, w):
        img = cv2.resize(np.ascontiguousarray(img[:, :, :3] if img.ndim == 3 else img), size, interpolation=cv2.INTER_AREA)
    return img, cv2.resize(np.nan_to_num(m), size, interpolation=cv2.INTER_AREA)


def overlay_rgb(image: np.ndarray, m: np.ndarray, alpha: float = 0.5, cmap: str | None = None,
                signed: bool | None = None, limits: tuple[float, float] | None = None) -> np.ndarray:
    """H x W x 3 uint8: the image in grey blended with the coloured map.

    Built in row blocks of uint8 colours and float32 blends, so a full-resolution overlay of a
    12000 x 12000 map costs its 432 MB of output, not gigabytes of float64 RGBA.
    """
    import matplotlib
    m = np.asarray(m, np.float32)
    signed = is_signed(m) if signed is None else signed
    lo, hi = limits or _limits(m, signed)
    cm = matplotlib.colormaps[cmap or (SIGNED_CMAP if signed else POSITIVE_CMAP)]
    base = to_rgb_uint8(image) if np.shape(image)[:2] == m.shape else None
    if base is None:
        base = np.repeat(np.round(to_gray_float(image) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    out = np.empty(m.shape + (3,), np.uint8)
    for r in range(0, m.shape[0], 512):
        rows = np.clip((np.nan_to_num(m[r:r + 512]) - lo) / (hi - lo), 0.0, 1.0)
        rgb = cm(rows, bytes=True)[..., :3].astype(np.float32)
        blend = (1 - alpha) * base[r:r + 512].astype(np.float32) + alpha * rgb
        out[r:r + 512] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return out


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
    lo, hi = _limits(m, signed)            # from the full map, so colours mean the same at any size
    cm = cmap or (SIGNED_CMAP if signed else POSITIVE_CMAP)
    image, m = display_size(image, m)      # drawn at display size: the figure shows no more pixels
    h, w = m.shape
    import textwrap
    # the title (image name, method, class, numbers) spans the figure above both panels: over the
    # right panel alone a long one ran into the left panel's title
    lines = textwrap.wrap(title, 90) if title else []
    fig = Figure(figsize=(9.0, 4.6 * h / max(w, 1) + 0.6 + 0.18 * len(lines)), dpi=110, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(to_gray_float(image), cmap="gray", vmin=0, vmax=1)
    ax1.set_title("image", fontsize=9)
    ax2.imshow(overlay_rgb(image, m, alpha, cm, signed, limits=(lo, hi)))
    ax2.set_title(label or "map", fontsize=9)
    if lines:
        fig.suptitle("\n".join(lines), fontsize=9)
    for ax in (ax1, ax2):
        ax.set_axis_off()
    fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap=cm), ax=ax2, fraction=0.046, pad=0.02, label=label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
