"""Reading images and normalising them for each consumer.

Images enter marsam as numpy arrays of many kinds (H x W, H x W x 1/3/4; uint8, uint16, float,
bool). Each consumer has exactly one function that turns any of them into what it needs:
:func:`to_rgb_uint8` for SAM and GrabCut, :func:`to_gray_float` / :func:`to_model_input` for
the U-Nets. Planetary products are often 10-12 bit data in 16-bit containers, so integer images
beyond 8 bits are stretched between robust percentiles instead of divided by 65535 (which would
leave them nearly black).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import MarsamError

#: the input normalisation every marsam U-Net is trained with, (x - 0.5) / 0.25 on intensities in [0, 1]
#: (segmodels.normalization.Normalization's defaults; written only here)
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MIN_SIDE = 8
#: The largest image marsam reads: 2**30 pixels (32768 x 32768, or a 20000 x 50000 HiRISE strip),
#: OpenCV's own decoder limit (CV_IO_MAX_IMAGE_PIXELS). Decoded, such an image takes 1 byte per
#: pixel and channel (3 GiB as RGB); larger products are refused with one line before decoding.
MAX_IMAGE_PIXELS = 1 << 30


def _pil():
    """PIL with its decompression-bomb guard raised to marsam's own limit (checked before decoding)."""
    from PIL import Image
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    return Image


def _too_big(path, w: int, h: int) -> MarsamError:
    return MarsamError(f"image {path} is {w}x{h} pixels ({w * h / 1e6:.0f} Mpx), beyond the "
                       f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx marsam reads; cut it into tiles first "
                       "(e.g. gdal_translate -srcwin, or vips dzsave)")


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header without decoding; None when PIL cannot read the header."""
    import warnings
    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below with one line
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise MarsamError(f"image {path} is beyond the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx marsam reads; "
                          "cut it into tiles first (e.g. gdal_translate -srcwin)") from None
    except Exception:
        return None
    if w * h > MAX_IMAGE_PIXELS:
        raise _too_big(path, w, h)
    return w, h


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels; refuses images beyond
    :data:`MAX_IMAGE_PIXELS` and unreadable files with a MarsamError."""
    path = Path(path)
    size = _header_size(path)
    if size is None:
        raise MarsamError(f"cannot read image {path}: the file is corrupt or not an image; "
                          "re-export it as PNG, JPEG or TIFF")
    return size[1], size[0]


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise MarsamError(f"image folder {folder} does not exist; check the path")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as stored (bit depth and channels kept; RGB order)."""
    import cv2
    path = Path(path)
    if not path.is_file():
        raise MarsamError(f"image {path} does not exist; check the path")
    _header_size(path)  # a header claiming 50000 x 50000 is refused before any decoding
    data = np.fromfile(str(path), dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:  # e.g. CV_IO_MAX_IMAGE_PIXELS for a format PIL cannot size
        raise MarsamError(f"cannot decode image {path} ({str(e).strip().splitlines()[-1][:120]}); "
                          f"marsam reads images up to {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx: cut it into tiles "
                          "or re-export it as PNG, JPEG or TIFF") from None
    if img is None:
        try:  # PIL reads a few formats OpenCV does not (e.g. some TIFF compressions)
            Image = _pil()
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                    raise _too_big(path, *im.size)
                img = np.asarray(im)
        except MarsamError:
            raise
        except Exception:
            raise MarsamError(f"cannot read image {path}: the file is corrupt or not an image; "
                              "re-export it as PNG, JPEG or TIFF") from None
        return check_image(img, str(path))
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, [2, 1, 0, 3]]
    return check_image(np.ascontiguousarray(img), str(path))


def check_image(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Refuse arrays that are not images, with a message that says what to pass instead."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise MarsamError(f"{what} has shape {arr.shape}; expected H x W (grey), H x W x 3 (RGB) "
                          "or H x W x 4 (RGBA)")
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise MarsamError(f"{what} is {arr.shape[1]}x{arr.shape[0]} pixels; marsam needs at least "
                          f"{MIN_SIDE}x{MIN_SIDE}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MarsamError(f"{what} has dtype {arr.dtype}; expected an integer or float image")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise MarsamError(f"{what} contains NaN or infinite pixels; fill them (e.g. np.nan_to_num) first")
    return arr


def _stretch(arr: np.ndarray) -> np.ndarray:
    """Float array scaled to [0, 1] between its 0.5 and 99.5 percentiles."""
    a = arr.astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def to_unit_float(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Any supported image to float32 in [0, 1], channels kept (alpha dropped)."""
    arr = check_image(img, what)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.integer):
        return _stretch(arr)
    if arr.min() >= 0.0 and arr.max() <= 1.0:
        return arr.astype(np.float32)
    return _stretch(arr)


def to_rgb_uint8(img: np.ndarray, what: str = "image") -> np.ndarray:
    """H x W x 3 uint8, what SAM's predictor and OpenCV's GrabCut expect."""
    arr = check_image(img, what)
    if arr.dtype == np.uint8:
        out = arr
    else:
        out = np.round(to_unit_float(arr, what) * 255.0).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def to_gray_float(img: np.ndarray, what: str = "image") -> np.ndarray:
    """H x W float32 in [0, 1]: the single-channel input of the U-Nets."""
    arr = to_unit_float(img, what)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_model_input(img: np.ndarray, in_channels: int = 1, mean: float = DEFAULT_MEAN, std: float = DEFAULT_STD,
                   what: str = "image"):
    """A 1 x C x H x W float tensor normalised the way marsam's U-Nets were trained (see
    :class:`segmodels.normalization.Normalization`, which calls this)."""
    import torch
    if in_channels == 1:
        arr = to_gray_float(img, what)[None]
    elif in_channels == 3:
        arr = to_unit_float(img, what)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        arr = arr.transpose(2, 0, 1)
    else:
        raise MarsamError(f"models take 1 or 3 input channels, not {in_channels}")
    arr = (arr - mean) / std
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
