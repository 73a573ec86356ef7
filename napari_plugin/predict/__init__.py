"""The predict widget: a marsam model's labels and uncertainty over the current image.

:mod:`.models` (which model, its prediction: calls into segmodels/distill/annotate),
:mod:`.layers` (how outputs are drawn), :mod:`.jobs` and :mod:`.panel` (progress and Cancel for
long calls, shared with the explain and train widgets), :mod:`.widget` (the dock widget).
"""
