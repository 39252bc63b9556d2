"""Process-wide switches that :mod:`smoothapi.testing` flips.

Kept in their own module so the engine reads them with one attribute lookup
on the slow path, and never on the happy path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

# The clock every breaker without an injected clock reads.
clock: Callable[[], float] = time.monotonic
# When True, backoff sleeps return at once (and advance ``clock`` if it can be advanced).
instant_sleep: bool = False
# Called with the seconds a sleep would have taken while ``instant_sleep`` is on.
on_skipped_sleep: Callable[[float], object] | None = None

# The breaker a decorated function holds while its body runs - set only for a
# breaker passed with `breaker=` (shared).  A transport sharing that breaker,
# called from inside the body, then leaves the bookkeeping to the decorator:
# one attempt is counted once, and the decorator's probe is not rejected by
# its own transport.
held: ContextVar[object | None] = ContextVar("smoothapi_held_breaker", default=None)

# Set by smoothapi.otel.instrument(): wraps each transport attempt in a client span.
# None (the default) costs a transport one attribute read per call.
tracing: Any = None


def running_trio() -> bool:
    """Whether this code runs inside a trio event loop (trio is imported only if it is)."""
    if sys.modules.get("trio") is None:
        return False
    try:
        import sniffio  # noqa: PLC0415
    except ImportError:  # pragma: no cover - trio always ships sniffio
        return False
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False
