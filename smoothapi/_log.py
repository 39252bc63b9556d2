"""The ``smoothapi`` logger, created on first use.

At the bottom of the layers, beside ``_runtime``: the events and the
async-hook delivery below them both log through it.  ``logging`` costs
milliseconds to import, so it loads with the first line logged (in practice,
the first event), never with ``import smoothapi``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["logger"]

_LOGGER: Any = None


def logger() -> Any:
    """The ``smoothapi`` logger (standard ``logging``)."""
    global _LOGGER
    if _LOGGER is None:
        import logging  # noqa: PLC0415 - milliseconds to import: only when something logs

        found = logging.getLogger("smoothapi")
        # A library configures no output: without a handler of the application's,
        # logging's "last resort" would print our warnings to stderr.
        found.addHandler(logging.NullHandler())
        _LOGGER = found
    return _LOGGER
