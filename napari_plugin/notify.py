"""User mistakes become napari notifications, never crash dialogs.

A :class:`MarsamError` carries a message written for the user (what is wrong, how to fix it),
so it is shown as it is. Anything else is a bug: it is logged with its traceback and shown as a
one-line error, so the expert keeps working and the log says what to report.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from segmodels.errors import MarsamError

log = logging.getLogger("napari_plugin")


def report(exc: BaseException, doing: str = "") -> None:
    """Show ``exc`` in napari's notification area."""
    from napari.utils.notifications import show_error
    if isinstance(exc, MarsamError):
        show_error(str(exc))
    else:
        log.error("unexpected error while %s", doing or "working", exc_info=exc)
        show_error(f"marsam: unexpected {type(exc).__name__} while {doing or 'working'}: {exc} "
                   "(details in the log; please report it)")


def warn(message: str) -> None:
    from napari.utils.notifications import show_warning
    show_warning(message)


def info(message: str) -> None:
    from napari.utils.notifications import show_info
    show_info(message)


@contextlib.contextmanager
def user_errors(doing: str = "") -> Iterator[None]:
    """Run a GUI action; errors become notifications instead of propagating into Qt."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the GUI must survive every error of an action
        report(e, doing)


def guarded(doing: str):
    """Decorator form of :func:`user_errors` for button callbacks and key bindings."""
    def deco(fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with user_errors(doing):
                return fn(*args, **kwargs)
        return wrapper
    return deco
