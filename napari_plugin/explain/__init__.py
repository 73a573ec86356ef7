"""The explain widget: explanation and uncertainty maps (segmodels.explain) over the image.

:mod:`.methods` (the methods, their cost and their fixed display ranges), :mod:`.widget`.
"""
