"""The report package: every figure kind is drawn, and the three documents agree."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from marsam_demo import report as rp
from distill.synthetic import make_terrain
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS


@pytest.fixture(scope="module")
def tiles():
    return [make_terrain(64, seed=s) for s in range(2)]


def test_figures_and_documents(tmp_path, tiles):
    images = [t[0] for t in tiles]
    labels = [t[1] for t in tiles]
    fig = tmp_path / "figures"
    paths = [
        rp.training_curves({"teacher": {"loss": [1.0, 0.5], "val_miou": [0.2, 0.4]},
                            "student": {"loss": [1.2, 0.7]}}, fig / "curves.png"),
        rp.prediction_grid(images, labels, {"student": labels}, AI4MARS, fig / "pred.png"),
        rp.overlay_grid(images, {"Grad-CAM": [np.random.rand(64, 64)] * 2,
                                 "entropy": [np.zeros((64, 64))] * 2}, fig / "cam.png"),
        rp.reliability_diagram({"student": {"confidence": [0.3, 0.6, 0.9], "accuracy": [0.2, 0.7, 0.95],
                                            "ece": 0.05}}, fig / "rel.png"),
        rp.label_efficiency({"student": [(2, 0.3), (4, 0.5)]}, fig / "eff.png"),
    ]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 200
    sections = [rp.Section("Results", paragraphs=["Run with `marsam demo`, **bold** <tag>."],
                           tables=[rp.Table("Metrics", ["model", "mIoU", "params"],
                                            [["student", 0.51234, 123456], ["teacher", float("nan"), None]])],
                           figures=[rp.Figure(f"fig {i}", p, caption="c") for i, p in enumerate(paths)])]
    out = rp.write_report(tmp_path, "Demo", sections, {"student_miou": np.float32(0.5), "x": float("inf")},
                          intro=["intro"])
    md = out["md"].read_text()
    assert "| student | 0.512 | 123,456 |" in md and "](figures/curves.png)" in md
    html = out["html"].read_text()
    assert html.count("data:image/png;base64,") == 5 and "&lt;tag&gt;" in html and "<code>marsam demo</code>" in html
    doc = json.loads(out["json"].read_text())
    assert doc["student_miou"] == pytest.approx(0.5) and doc["x"] is None
    assert doc["figures"]["fig 0"] == "figures/curves.png"
    assert doc["tables"][0]["rows"][1][1] is None


def test_report_refuses_missing_figure_and_ragged_table(tmp_path):
    with pytest.raises(MarsamError, match="was not drawn"):
        rp.write_report(tmp_path, "t", [rp.Section("s", figures=[rp.Figure("f", tmp_path / "no.png")])], {})
    with pytest.raises(MarsamError, match="2 cells for 3 columns"):
        rp.Table("t", ["a", "b", "c"], [[1, 2]])
    with pytest.raises(MarsamError, match="as many ground truths"):
        rp.prediction_grid([np.zeros((8, 8))], [], {}, AI4MARS, tmp_path / "x.png")
