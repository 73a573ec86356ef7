"""``marsam demo``: the whole toolkit end to end on data it can always reach, ending in a report.

See :mod:`.pipeline` for the steps; :func:`run_demo` is what the CLI calls.
"""
from .pipeline import run_demo
from .settings import DemoSettings

__all__ = ["run_demo", "DemoSettings"]
