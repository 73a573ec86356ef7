"""Fixtures of the distill tests (helpers live in distill_testdata.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill_testdata import write_folder


@pytest.fixture
def folder_data(tmp_path) -> Path:
    return write_folder(tmp_path / "data")
