"""Alias of :mod:`smoothapi.errors` (same objects)."""

from smoothapi.errors import *  # noqa: F403
from smoothapi.errors import __all__  # noqa: F401
