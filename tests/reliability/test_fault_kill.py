"""SIGKILL during ``marsam annotate`` at random moments, resume, compare with an uninterrupted run.

3 kills on 6 HiRISE valid images here (the stress script benchmarks/stress_kill_annotate.py
runs 20 kills on all 38): after every kill session.json opens and every image it calls done
has its label map; after the resume every label map equals the uninterrupted run's, pixel for
pixel (GrabCut is reseeded per box, so a label depends only on the image and its prompts).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from stress_kill_annotate import kill_and_resume, subset  # noqa: E402


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(hirise_dir, tmp_path):
    images, labels = subset(tmp_path, limit=6)
    result = kill_and_resume(images, labels, tmp_path, kills=3, seed=15)
    assert result["labelled_compared"] >= 5
    assert result["kills_mid_batch"] >= 1, result     # at least one kill left the batch half done
    assert result["differing_label_maps"] == []
