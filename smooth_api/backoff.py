"""Alias of :mod:`smoothapi.backoff` (same objects)."""

from smoothapi.backoff import *  # noqa: F403
from smoothapi.backoff import __all__  # noqa: F401
