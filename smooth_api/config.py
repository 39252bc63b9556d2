"""Alias of :mod:`smoothapi.config` (same objects)."""

from smoothapi.config import *  # noqa: F403
from smoothapi.config import __all__  # noqa: F401
