"""Reports a scientist can read: Markdown, self-contained HTML and JSON, with Matplotlib figures.

``figures`` draws the PNGs (training curves, image / ground truth / prediction grids, Grad-CAM
and uncertainty overlays, reliability diagram, label-efficiency curve); ``document`` assembles
sections of paragraphs, tables and figures into report.md, report.html and report.json.
"""
from .document import Figure, Section, Table, format_cell, write_report
from .figures import (label_efficiency, overlay_grid, prediction_grid, reliability_diagram,
                      training_curves)

__all__ = ["Figure", "Section", "Table", "format_cell", "write_report", "label_efficiency",
           "overlay_grid", "prediction_grid", "reliability_diagram", "training_curves"]
