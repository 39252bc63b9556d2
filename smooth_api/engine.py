"""Alias of :mod:`smoothapi.engine` (same objects)."""

from smoothapi.engine import *  # noqa: F403
from smoothapi.engine import __all__  # noqa: F401
