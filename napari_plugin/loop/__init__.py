"""The human-in-the-loop widget: train on labelled images, suggest boxes, next most uncertain image.

:mod:`.training` (distill's decoder training on a session), :mod:`.suggest` (region prompts and
the uncertainty ranking), :mod:`.widget` (the dock widget).
"""
