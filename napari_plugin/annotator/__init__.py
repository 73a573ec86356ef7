"""The box-prompt annotator: controller (rules, no Qt), layers (napari <-> prompts), project
(annotate glue), controls and widget (Qt)."""
