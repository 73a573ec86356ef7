"""Keyboard shortcuts of the annotator, in one table that is both bound and shown in the widget.

Alt is the modifier because napari's layers already use the bare digits and letters for their
modes (1-7, R, S, P, ...) and Ctrl+S / Ctrl+Z for its own menus.
"""
from __future__ import annotations

MAX_CLASS_KEYS = 9

# key -> (description, name of the widget method it calls)
SHORTCUTS: dict[str, tuple[str, str]] = {
    "Alt-Right": ("next image", "next_image"),
    "Alt-Left": ("previous image", "previous_image"),
    "Alt-S": ("save now (autosave is on)", "save"),
    "Alt-Z": ("undo the last box change", "undo"),
    "Alt-P": ("positive / negative points", "toggle_polarity"),
}


def class_keys(num_classes: int) -> list[str]:
    return [f"Alt-{i + 1}" for i in range(min(num_classes, MAX_CLASS_KEYS))]


def shortcuts_text(class_names) -> str:
    """The help shown in the widget (plain text, one shortcut per line; the class keys are
    also shown next to each class in the legend)."""
    keys = class_keys(len(class_names))
    lines = [f"{keys[0]} .. {keys[-1]}: pick a class" if len(keys) > 1 else f"{keys[0]}: pick the class"]
    lines += [f"{k}: {desc}" for k, (desc, _) in SHORTCUTS.items()]
    return "\n".join(lines)


def bind_shortcuts(viewer, widget) -> None:
    """Bind the table on ``viewer`` (overwriting earlier bindings of this plugin's keys)."""
    for key, (_, method) in SHORTCUTS.items():
        viewer.bind_key(key, _caller(widget, method), overwrite=True)
    for i, key in enumerate(class_keys(MAX_CLASS_KEYS)):
        viewer.bind_key(key, _class_caller(widget, i), overwrite=True)


def _caller(widget, method):
    def call(viewer):
        getattr(widget, method)()
    call.__doc__ = f"marsam: {method.replace('_', ' ')}"
    return call


def _class_caller(widget, class_id):
    def call(viewer):
        widget.choose_class(class_id)
    call.__doc__ = f"marsam: choose class {class_id + 1}"
    return call
