"""Fixtures for annotate tests: images (the tiny random-weight SAM is in tests/conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def disk_image():
    """A 200 x 240 grey image: dark ground, one bright disk (r=30 at x=80, y=90), one bright square."""
    img = np.full((200, 240, 3), 40, np.uint8)
    yy, xx = np.mgrid[:200, :240]
    disk = (xx - 80) ** 2 + (yy - 90) ** 2 <= 30 ** 2
    img[disk] = 210
    img[130:170, 170:220] = 160
    rng = np.random.default_rng(0)
    img = np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    return img, disk


@pytest.fixture(scope="session")
def hirise_test_files(hirise_dir):
    """(image path, YOLO label path) of the HiRISE test split, sorted."""
    images = sorted((hirise_dir / "test" / "images").glob("*.jpg"))
    return [(p, hirise_dir / "test" / "labels" / f"{p.stem}.txt") for p in images]
