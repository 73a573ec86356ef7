"""Procedural Mars-like terrain with ground truth, so marsam can always show itself working.

The project ships no third-party images, yet the demo, the napari sample data and the tests need
terrain whose truth is known. Each tile is a grey rover-camera view built from the four AI4Mars
classes, each with a texture *and* a shape of its own so that a model can learn them:

- soil (0): the background; granular fractal noise with small pebbles;
- bedrock (1): polygonal plates (Voronoi cells) with sharp edges, dark fractures along the cell
  borders, fine layering and a brightness of their own per plate;
- sand (2): smooth blobs with dune ripples (a warped sinusoid) and almost no grain;
- big rock (3): shaded ellipsoids lit from one side, each casting a shadow on the ground.

Optionally a sky band above a noisy horizon is unlabelled (255), as in AI4Mars where sky and the
rover are not labelled. Everything is vectorised numpy/OpenCV: a 256 px tile takes a few ms.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, IGNORE_INDEX

SOIL, BEDROCK, SAND, BIG_ROCK = 0, 1, 2, 3


def _fractal_noise(rng: np.random.Generator, size: int, octaves: int = 5, base: int = 4,
                   persistence: float = 0.55) -> np.ndarray:
    """Sum of bicubically upsampled random grids (value noise), zero-mean, unit std."""
    import cv2
    out = np.zeros((size, size), np.float32)
    amp, cells = 1.0, base
    for _ in range(octaves):
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        amp *= persistence
        cells *= 2
        if cells > size:
            break
    out -= out.mean()
    return out / (out.std() + 1e-6)


def _voronoi(rng: np.random.Generator, size: int, n_cells: int):
    """Nearest-seed index and the gap to the second-nearest seed (small on cell borders).

    A running two-smallest update per seed: cheaper than sorting an n_cells x H x W stack.
    """
    seeds = rng.uniform(-0.1 * size, 1.1 * size, (n_cells, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d0 = np.full((size, size), np.inf, np.float32)
    d1 = np.full((size, size), np.inf, np.float32)
    nearest = np.zeros((size, size), np.intp)
    for k, (sx, sy) in enumerate(seeds):
        d = np.hypot(xx - sx, yy - sy)
        closer = d < d0
        d1 = np.where(closer, d0, np.minimum(d1, d))
        d0 = np.where(closer, d, d0)
        nearest[closer] = k
    return nearest, d1 - d0, seeds


def _soil(rng, size, yy):
    noise = _fractal_noise(rng, size, octaves=6, base=8, persistence=0.7)
    grain = rng.standard_normal((size, size)).astype(np.float32)
    img = 0.42 + 0.03 * noise + 0.035 * grain
    # pebbles: small dark/bright dots, sparser towards the horizon as they shrink with distance
    n = int(rng.integers(size // 2, size * 2))
    py, px = rng.integers(0, size, n), rng.integers(0, size, n)
    img[py, px] += rng.choice([-0.18, 0.15], n)
    return img


def _bedrock(rng, size, yy, xx, nearest, gap, n_cells):
    plate_level = rng.uniform(0.56, 0.7, n_cells).astype(np.float32)
    tilt = rng.normal(0, 0.0012, (n_cells, 2)).astype(np.float32)
    img = plate_level[nearest] + tilt[nearest, 0] * (xx - size / 2) + tilt[nearest, 1] * (yy - size / 2)
    # layering: thin parallel strata at an angle shared by the outcrop
    theta = rng.uniform(-0.4, 0.4)
    period = rng.uniform(5, 10)
    warp = 2.5 * _fractal_noise(rng, size, octaves=3, base=4)
    strata = np.sin(2 * np.pi * (yy * np.cos(theta) + xx * np.sin(theta) + warp) / period)
    img += 0.025 * strata + 0.03 * _fractal_noise(rng, size, octaves=4, base=16)
    # fractures: dark lines along the plate borders
    img -= 0.28 * np.exp(-(gap / 1.6) ** 2)
    return img


def _sand(rng, size, yy, xx):
    theta = rng.uniform(0, np.pi)
    wavelength = rng.uniform(7, 14)
    warp = 6.0 * _fractal_noise(rng, size, octaves=3, base=3)
    phase = (xx * np.cos(theta) + yy * np.sin(theta) + warp) / wavelength
    ripples = np.sin(2 * np.pi * phase) ** 3  # asymmetric crests, as wind ripples
    return 0.28 + 0.035 * ripples + 0.015 * _fractal_noise(rng, size, octaves=3, base=4)


def _rocks(rng, size, img, label, n_rocks):
    """Shaded ellipsoids with a shadow away from the light; they overwrite what lies under.

    Each rock is drawn inside its own bounding window only, which keeps many rocks cheap.
    """
    light = np.array([rng.uniform(-1, 1), -1.0, 0.9], np.float32)  # from above, one side
    light /= np.linalg.norm(light)
    for _ in range(n_rocks):
        cy = rng.uniform(0.25, 0.98) * size
        scale = size * rng.uniform(0.035, 0.11) * (0.5 + cy / size)  # nearer rocks look bigger
        a, b = scale * rng.uniform(0.9, 1.5), scale * rng.uniform(0.6, 1.0)
        cx = rng.uniform(0.05, 0.95) * size
        ang = rng.uniform(0, np.pi)
        c, s = np.cos(ang), np.sin(ang)
        sx, sy = -light[0] * a * 0.6, -light[1] * b * 0.5  # shadow offset, away from the light
        reach = 1.2 * a + abs(sx) + abs(sy) + 2
        y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 1)
        x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u = ((xx - cx) * c + (yy - cy) * s) / a
        v = (-(xx - cx) * s + (yy - cy) * c) / b
        # irregular outline: the radius wobbles with two random harmonics of the polar angle
        phi = np.arctan2(v, u)
        k = rng.uniform(-0.12, 0.12, 4)
        wobble = 1.0 + k[0] * np.sin(2 * phi + k[1] * 20) + k[2] * np.sin(3 * phi + k[3] * 20)
        r2 = (u ** 2 + v ** 2) / wobble ** 2
        us = ((xx - cx - sx) * c + (yy - cy - sy) * s) / (a * 1.1)
        vs = (-(xx - cx - sx) * s + (yy - cy - sy) * c) / (b * 1.05)
        win, lab = img[y0:y1, x0:x1], label[y0:y1, x0:x1]
        shadow = (us ** 2 + vs ** 2 < 1.0) & (r2 >= 1.0)
        win[shadow] *= 0.45
        inside = r2 < 1.0
        # ellipsoid normal in image axes: (u, v) rotated back, z = sqrt(1 - r2)
        nz = np.sqrt(np.clip(1.0 - r2, 0, 1))
        nx = u * c - v * s
        ny = u * s + v * c
        shade = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
        albedo = rng.uniform(0.55, 0.8)
        rock = 0.12 + albedo * shade + 0.04 * rng.standard_normal(shade.shape).astype(np.float32)
        win[inside] = rock[inside]
        lab[inside] = BIG_ROCK


def make_terrain(size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One grey terrain tile and its AI4Mars label map (0 soil, 1 bedrock, 2 sand, 3 big rock, 255 sky).

    The class mix varies with ``seed`` (some tiles mostly sand, others an outcrop of bedrock,
    some with many rocks), as real rover views do, so a model sees every class in many settings.
    """
    if int(size) < 32:
        raise MarsamError(f"synthetic terrain needs size >= 32 pixels, not {size}")
    size = int(size)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    label = np.full((size, size), SOIL, np.uint8)
    img = _soil(rng, size, yy)

    # bedrock: Voronoi plates picked by a smooth field, so outcrops come as groups of plates
    n_cells = int(rng.integers(10, 22))
    nearest, gap, seeds = _voronoi(rng, size, n_cells)
    field_b = _fractal_noise(rng, size, octaves=2, base=2)
    sy = np.clip(seeds[:, 1].astype(int), 0, size - 1)
    sx = np.clip(seeds[:, 0].astype(int), 0, size - 1)
    t_b = rng.uniform(-0.2, 1.3)
    chosen = field_b[sy, sx] > t_b
    bedrock = chosen[nearest]
    img[bedrock] = _bedrock(rng, size, yy, xx, nearest, gap, n_cells)[bedrock]
    label[bedrock] = BEDROCK

    # sand: smooth blobs in the low ground between plates (it does not cover bedrock)
    field_s = _fractal_noise(rng, size, octaves=3, base=2)
    sand = (field_s > rng.uniform(-0.3, 1.2)) & ~bedrock
    img[sand] = _sand(rng, size, yy, xx)[sand]
    label[sand] = SAND

    _rocks(rng, size, img, label, int(rng.integers(0, 6)))

    # unlabelled sky above a noisy horizon in some tiles, as AI4Mars leaves sky unlabelled
    if rng.random() < 0.3:
        horizon = size * rng.uniform(0.08, 0.2) + 3.0 * _fractal_noise(rng, size, 3, 4)[0]
        sky = yy < horizon[None, :]
        img[sky] = (0.62 + 0.15 * (yy / size))[sky]
        label[sky] = IGNORE_INDEX

    # camera falloff (vignetting) and a global exposure, then 8 bits
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2
    img *= (1.0 - 0.12 * r2) * rng.uniform(0.8, 1.1)
    image = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return image, label


def make_terrain_dataset(folder: str | os.PathLike, n: int = 64, size: int = 256, seed: int = 0,
                         val_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """Write ``n`` tiles in the layout of ``shared/data/ai4mars-msl``: images/, masks/, split.csv.

    Images are grey PNGs (lossless, so the textures stay exact), masks are mode-L PNGs with the
    same stem, and split.csv lists ``id,split`` with ``train``/``val``. Every file goes through
    an atomic write; an existing dataset is refused unless ``overwrite`` so that two sets are
    never silently mixed in one folder.
    """
    from segmodels import mask_folder
    from segmodels.atomic import atomic_write_text
    folder = Path(folder)
    if n < 2:
        raise MarsamError(f"a synthetic dataset needs n >= 2 images (one train, one val), not {n}")
    if not 0.0 < val_fraction < 1.0:
        raise MarsamError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    split_file = folder / mask_folder.SPLIT_FILE
    if split_file.exists() and not overwrite:
        raise MarsamError(f"{folder} already holds a dataset (split.csv); choose another folder "
                          "or pass overwrite=True")
    old_ids = set()
    if split_file.exists():  # overwrite: remember the old set to remove what it leaves
        old_ids = set(mask_folder.read_split_csv(split_file))
    n_val = max(1, int(round(n * val_fraction)))
    rows = []
    for i in range(n):
        stem = f"synth_{seed:04d}_{i:05d}"
        image, label = make_terrain(size, seed=seed * 1_000_003 + i)
        mask_folder.write_pair(folder, stem, image, label)
        rows.append((stem, "val" if i >= n - n_val else "train"))
    mask_folder.write_split_csv(folder, rows)
    for stale in old_ids - {r[0] for r in rows}:  # never leave tiles of the old set mixed in
        for sub in (mask_folder.IMAGES, mask_folder.MASKS):
            (folder / sub / f"{stale}.png").unlink(missing_ok=True)
    atomic_write_text(folder / "README.md", (
        "# Synthetic Mars-like terrain (marsam)\n\n"
        f"{n} procedurally generated {size}x{size} grey tiles (seed {seed}) made by "
        "`distill.synthetic.make_terrain_dataset`; labels use the AI4Mars ids "
        f"({', '.join(f'{i} {c}' for i, c in enumerate(AI4MARS.classes))}, 255 unlabelled sky). "
        f"split.csv: {n - n_val} train, {n_val} val.\n"))
    return folder
