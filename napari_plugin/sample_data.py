"""Sample data in napari's File > Open Sample > marsam menu.

The Moon image is real planetary imagery that ships with scikit-image (so no download); the
Mars-like tile comes from :func:`distill.synthetic.make_terrain` with its AI4Mars label map, so
a new user can compare SAM boxes with known truth. Both return napari layer-data tuples.
"""
from __future__ import annotations

from segmodels.labels import AI4MARS


def moon():
    """The Moon surface image of scikit-image (512 x 512, grey)."""
    from skimage import data
    return [(data.moon(), {"name": "moon"}, "image")]


def mars_terrain():
    """A procedurally generated Mars-like terrain tile (512 px) and its AI4Mars labels."""
    from distill.synthetic import make_terrain

    from .annotator.layers import labels_colormap
    image, label = make_terrain(size=512, seed=0)
    return [(image, {"name": "mars terrain"}, "image"),
            (label, {"name": "mars terrain truth", "colormap": labels_colormap(AI4MARS),
                     "opacity": 0.5, "visible": False}, "labels")]
