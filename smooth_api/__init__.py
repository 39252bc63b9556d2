"""``smooth_api``: the seed's import name, an alias of :mod:`smoothapi` (same objects)."""

from __future__ import annotations

from typing import Any

import smoothapi
from smoothapi import (  # noqa: F401 - re-exported
    BackoffConfig,
    CallRejected,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    ConfigTypeError,
    Event,
    FallbackServed,
    Jitter,
    ResilientConfig,
    ResilientFunction,
    RetriesExhausted,
    RetryScheduled,
    SmoothAPIError,
    StateChanged,
    __all__,
    __version__,
    add_hook,
    remove_hook,
    resilient_api,
)


def __getattr__(name: str) -> Any:
    # ResilientAdapter and the transports load their client library lazily, as in smoothapi.
    return getattr(smoothapi, name)
