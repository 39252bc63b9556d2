"""Alias of :mod:`smoothapi.breaker` (same objects)."""

from smoothapi.breaker import *  # noqa: F403
from smoothapi.breaker import __all__  # noqa: F401
