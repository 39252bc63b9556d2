"""Alias of :mod:`smoothapi.decorator` (same objects)."""

from smoothapi.decorator import *  # noqa: F403
from smoothapi.decorator import __all__  # noqa: F401
