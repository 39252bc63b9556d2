"""Alias of :mod:`smoothapi.events` (same objects)."""

from smoothapi.events import *  # noqa: F403
from smoothapi.events import __all__  # noqa: F401
