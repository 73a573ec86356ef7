"""The one exception type for user mistakes.

Every user-facing function raises :class:`MarsamError` for input the user can fix (a wrong
path, a bad image, a checkpoint of another model). The CLI prints its message as one line and
exits 2; the napari plugin shows it as a notification. Programming errors stay ordinary
exceptions so that they keep their tracebacks.
"""


class MarsamError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""


class SplitNotFound(MarsamError):
    """The data has no split of the asked name (callers may fall back, e.g. to a held-out split)."""


class WeightsUnavailable(MarsamError):
    """Model weights were not named and none could be found or downloaded (callers may fall back,
    e.g. from SAM to GrabCut); a file that was named but is wrong is a plain MarsamError."""


class DiskFullError(MarsamError):
    """A write failed because the disk (or the user's quota) is full; earlier files are intact.

    Batches stop on it instead of skipping image after image: every further write would fail too.
    """


def disk_full(error: OSError, path=None, nbytes: int | None = None) -> "DiskFullError | None":
    """A one-line DiskFullError for an OSError that is ENOSPC or EDQUOT, else None."""
    import errno
    import os
    import shutil
    if getattr(error, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
        return None
    target = path if path is not None else (error.filename or "the output folder")
    folder = os.path.dirname(os.path.abspath(target)) if path is not None or error.filename else str(target)
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    need = f"{nbytes / 1e6:.1f} MB needed for {os.path.basename(str(target))}, " if nbytes else ""
    return DiskFullError(f"no space left in {folder} ({need}{free}); free space there or write to another "
                         "folder; files written before are intact")
