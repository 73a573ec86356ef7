"""marsam's napari plugin: widgets that wire annotate/distill/segmodels functions to napari layers.

No algorithm lives here. Importing this package imports neither napari nor Qt, so that the
``marsam`` CLI (which loads :mod:`napari_plugin.cli`) works without the ``gui`` extra; the
widgets are imported by napari through the manifest (``napari.yaml``) when they are opened.
"""
