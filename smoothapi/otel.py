"""``import smoothapi.otel``: the documented path of :mod:`smoothapi.telemetry.otel`.

The backend lives with the other telemetry backends; this name stays so that
``smoothapi.otel.instrument()`` keeps working.  It *is* that module (one set of
globals, whichever name imported it first).
"""

from __future__ import annotations

import sys

from .telemetry import otel as _module
from .telemetry.otel import *  # noqa: F403 - the same public names
from .telemetry.otel import __all__ as __all__  # noqa: PLC0414 - re-exported for type checkers

sys.modules[__name__] = _module
