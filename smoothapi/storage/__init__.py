"""Breaker state that a whole fleet shares.

* :class:`BreakerStore` - the protocol a store implements (atomic
  acquire/record/reset/force_open/snapshot, sync and async).
* :class:`RedisStore` - the Redis/Valkey store (loads redis-py on first use).
* :class:`SharedCircuitBreaker` - the breaker that keeps its state in a store;
  ``CircuitBreaker(config, store=...)`` and ``CircuitBreakerConfig(store=...)``
  build one.

With no store, breakers keep their state in their process (the default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import (
    Admission,
    Batch,
    BreakerStatus,
    BreakerStore,
    MalformedBreaker,
    Opening,
    Report,
    Snapshot,
    Survey,
    Trip,
    TripRules,
)
from .shared import CLEAN, SharedCircuitBreaker

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = [
    "CLEAN",
    "Admission",
    "Batch",
    "BreakerStatus",
    "BreakerStore",
    "MalformedBreaker",
    "Opening",
    "RedisStore",
    "Report",
    "SharedCircuitBreaker",
    "Snapshot",
    "Survey",
    "Trip",
    "TripRules",
]


def __getattr__(name: str) -> Any:
    # RedisStore imports redis-py; load it only when asked for.
    if name != "RedisStore":
        raise AttributeError(f"module 'smoothapi.storage' has no attribute {name!r}")
    try:
        from .redis import RedisStore  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if "' extra: pip install" in str(exc) or "' extra: redis-py" in str(exc):
            raise  # already says what to install
        raise ModuleNotFoundError(
            f"smoothapi.storage.RedisStore needs the 'redis' extra ({exc}): pip install redis",
            name=exc.name,
        ) from exc

    globals()[name] = RedisStore
    return RedisStore


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
