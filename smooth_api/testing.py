"""Alias of :mod:`smoothapi.testing` (same objects)."""

from smoothapi.testing import *  # noqa: F403
from smoothapi.testing import __all__  # noqa: F401
