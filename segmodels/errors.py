"""The one exception type for user mistakes.

Every user-facing function raises :class:`MarsamError` for input the user can fix (a wrong
path, a bad image, a checkpoint of another model). The CLI prints its message as one line and
exits 2; the napari plugin shows it as a notification. Programming errors stay ordinary
exceptions so that they keep their tracebacks.
"""


class MarsamError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""
