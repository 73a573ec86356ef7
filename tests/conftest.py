"""Shared fixtures: the real data in ../shared/data, the tiny random-weight SAM and small helpers.

Tests that need the shared data skip with a reason when it is absent (in CI it is present).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MARSAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared data at {path} (absent on this machine)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def ai4mars_dir(shared_data) -> Path:
    return _need(shared_data / "ai4mars-msl")


@pytest.fixture(scope="session")
def hirise_dir(shared_data) -> Path:
    return _need(shared_data / "hirise-pits")


@pytest.fixture(scope="session")
def tiny_sam():
    """A random-weight SAM built from segment-anything's own modules (small ViT): every SAM test
    runs the real code path on it, never a mock."""
    from annotate.sam_loading import build_tiny_sam
    return build_tiny_sam(seed=0)


@pytest.fixture(autouse=True)
def _seed_and_cache(tmp_path_factory, monkeypatch):
    torch.manual_seed(0)
    np.random.seed(0)
    monkeypatch.setenv("MARSAM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "marsam-cache"))
