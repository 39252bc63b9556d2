"""``import smoothapi.prometheus``: the documented path of :mod:`smoothapi.telemetry.prometheus`.

The backend lives with the other telemetry backends; this name stays so that
``smoothapi.prometheus.instrument()`` keeps working.  It *is* that module (one set of
globals, whichever name imported it first).
"""

from __future__ import annotations

import sys

from .telemetry import prometheus as _module
from .telemetry.prometheus import *  # noqa: F403 - the same public names
from .telemetry.prometheus import __all__ as __all__  # noqa: PLC0414 - re-exported for type checkers

sys.modules[__name__] = _module
