"""smoothapi: HTTP calls that survive a bad network and a failing upstream.

Retries with exponential backoff and full jitter, a circuit breaker
(CLOSED -> OPEN -> HALF_OPEN) and fallbacks, mounted three ways over one
engine: the ``@resilient_api`` decorator, ``ResilientAdapter`` for requests,
and ``ResilientTransport`` / ``AsyncResilientTransport`` for httpx.  A
breaker's state can live in Redis or Valkey (``RedisStore``) so that a whole
fleet shares one breaker.

The core imports only the standard library; the mount classes load their
client library on first use.
"""

from __future__ import annotations

from . import _runtime

# Every public name loads with the module that defines it, at its first use (PEP 562's
# module __getattr__, below): `import smoothapi` costs only this file and _runtime, and
# `from smoothapi import resilient_api` loads the core it needs and nothing else.  The
# imports below are for type checkers and IDEs (typing's own TYPE_CHECKING would import
# typing, ~10 ms with re).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .breaker import CircuitBreaker, CircuitState, WindowCounts, live_breakers, reset_all
    from .config import (
        BackoffConfig,
        BulkheadConfig,
        CircuitBreakerConfig,
        HedgingConfig,
        Jitter,
        RateLimitConfig,
        ResilientConfig,
        RetryBudgetConfig,
        ThrottleConfig,
        Upstreams,
    )
    from .config_sources import config_from_mapping, load_config, load_upstreams
    from .errors import (
        CircuitOpenError,
        ConfigError,
        ConfigTypeError,
        LoadShedError,
        SmoothAPIError,
    )
    from .events import (
        CallRejected,
        CallShed,
        Event,
        FallbackServed,
        HedgeSent,
        RetriesExhausted,
        RetryBudgetExhausted,
        RetryScheduled,
        StateChanged,
        StoreRecovered,
        StoreUnavailable,
        add_hook,
        remove_hook,
    )
    from .mounts._transport import attempts
    from .mounts.aiohttp_middleware import ResilientMiddleware
    from .mounts.decorator import ResilientFunction, resilient_api
    from .mounts.httpx_transport import AsyncResilientTransport, ResilientTransport
    from .mounts.requests_adapter import ResilientAdapter
    from .storage import BreakerStore, RedisStore, SharedCircuitBreaker


def _shared_breaker_class() -> type:
    # The breaker sits below the stores and never imports them: the package, above
    # every layer, tells it where the shared breaker lives (loaded when first needed).
    from .storage.shared import SharedCircuitBreaker  # noqa: PLC0415

    return SharedCircuitBreaker


_runtime.shared_breaker_class = _shared_breaker_class


def _shared_budget_class() -> type:
    # The same for a retry budget the fleet shares (RetryBudgetConfig(store=...)).
    from .storage._budget import SharedRetryBudget  # noqa: PLC0415

    return SharedRetryBudget


_runtime.shared_budget_class = _shared_budget_class


def _shared_bucket_class() -> type:
    # The same for a rate limit the fleet shares (RateLimitConfig(store=...)).
    from .storage._rate import SharedTokenBucket  # noqa: PLC0415

    return SharedTokenBucket


_runtime.shared_bucket_class = _shared_bucket_class


def _prometheus_at_first_event() -> None:
    # Prometheus metrics need no glue when prometheus_client is installed (as in stamina):
    # decided at the first event, so a process whose calls all succeed never imports it.
    # The events sit below every backend, so the package, above every layer, registers this
    # (in _runtime's list, which the events read: registering imports no events).
    import os  # noqa: PLC0415 - once, at the first event

    if os.environ.get("SMOOTHAPI_PROMETHEUS", "").strip().lower() in ("0", "false", "no", "off"):
        return
    from importlib.util import find_spec  # noqa: PLC0415

    if find_spec("prometheus_client") is None:
        return
    try:
        from .telemetry.prometheus import auto_instrument  # noqa: PLC0415

        auto_instrument()
    except Exception:
        from ._log import logger  # noqa: PLC0415

        logger().exception("could not register the Prometheus metrics; calls go on")


_runtime.first_event_setups.append(_prometheus_at_first_event)

__version__ = "2.0.0"  # pyproject.toml's version (tests/cli/test_packaging.py holds them equal)

__all__ = [
    "AsyncResilientTransport",
    "BackoffConfig",
    "BreakerStore",
    "BulkheadConfig",
    "CallRejected",
    "CallShed",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitOpenError",
    "CircuitState",
    "ConfigError",
    "ConfigTypeError",
    "Event",
    "FallbackServed",
    "HedgeSent",
    "HedgingConfig",
    "Jitter",
    "LoadShedError",
    "RateLimitConfig",
    "RedisStore",
    "ResilientAdapter",
    "ResilientConfig",
    "ResilientFunction",
    "ResilientMiddleware",
    "ResilientTransport",
    "RetriesExhausted",
    "RetryBudgetConfig",
    "RetryBudgetExhausted",
    "RetryScheduled",
    "SharedCircuitBreaker",
    "SmoothAPIError",
    "StateChanged",
    "StoreRecovered",
    "StoreUnavailable",
    "ThrottleConfig",
    "Upstreams",
    "WindowCounts",
    "__version__",
    "add_hook",
    "attempts",
    "config_from_mapping",
    "live_breakers",
    "load_config",
    "load_upstreams",
    "remove_hook",
    "reset_all",
    "resilient_api",
]

# Where each public name lives (relative to this package).
_LAZY = {
    "CircuitBreaker": "breaker",
    "CircuitState": "breaker",
    "WindowCounts": "breaker",
    "live_breakers": "breaker",
    "reset_all": "breaker",
    "BackoffConfig": "config",
    "CircuitBreakerConfig": "config",
    "Jitter": "config",
    "ResilientConfig": "config",
    "RetryBudgetConfig": "config",
    "BulkheadConfig": "config",
    "RateLimitConfig": "config",
    "HedgingConfig": "config",
    "ThrottleConfig": "config",
    "Upstreams": "config",
    "config_from_mapping": "config_sources",
    "load_config": "config_sources",
    "load_upstreams": "config_sources",
    "CircuitOpenError": "errors",
    "LoadShedError": "errors",
    "ConfigError": "errors",
    "ConfigTypeError": "errors",
    "SmoothAPIError": "errors",
    "CallRejected": "events",
    "CallShed": "events",
    "HedgeSent": "events",
    "Event": "events",
    "FallbackServed": "events",
    "RetriesExhausted": "events",
    "RetryBudgetExhausted": "events",
    "RetryScheduled": "events",
    "StateChanged": "events",
    "StoreRecovered": "events",
    "StoreUnavailable": "events",
    "add_hook": "events",
    "remove_hook": "events",
    "ResilientFunction": "mounts.decorator",
    "resilient_api": "mounts.decorator",
    "attempts": "mounts._transport",  # with the transports: it loads their shared module
    "ResilientAdapter": "mounts.requests_adapter",  # imports requests
    "ResilientTransport": "mounts.httpx_transport",  # imports httpx
    "AsyncResilientTransport": "mounts.httpx_transport",
    "ResilientMiddleware": "mounts.aiohttp_middleware",  # imports aiohttp
    "RedisStore": "storage.redis",  # imports redis
    "SharedCircuitBreaker": "storage",
    "BreakerStore": "storage",
}


# The submodules an eager `import smoothapi` used to load, so that `smoothapi.events.X`
# after a plain `import smoothapi` keeps working (the import sets the attribute).
_SUBMODULES = {
    "backoff": "backoff",
    "breaker": "breaker",
    "budget": "budget",
    "classify": "classify",
    "config": "config",
    "engine": "engine",
    "errors": "errors",
    "events": "events",
    "flow": "flow",
    "hedge": "hedge",
    "load": "load",
    "machine": "machine",
    "mounts": "mounts.decorator",
    "retry_after": "retry_after",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        submodule = _SUBMODULES.get(name)
        if submodule is not None:
            __import__(f"{__name__}.{submodule}")
            return globals()[name]
        raise AttributeError(f"module 'smoothapi' has no attribute {name!r}")
    try:
        # __import__ rather than importlib.import_module: the same import, and one that
        # `python -X importtime` reports (import_module's top module goes unreported).
        loaded = __import__(f"{__name__}.{module}", None, None, [name], 0)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get(module)
        if extra is None or "' extra" in str(exc):  # our module's own message says what to do
            raise
        raise ModuleNotFoundError(
            f"smoothapi.{name} needs the {extra!r} extra ({exc}): pip install {extra}",
            name=exc.name,
        ) from exc
    value = getattr(loaded, name)
    globals()[name] = value
    return value


# What to install when a lazily loaded module's client library is missing.
_EXTRAS = {
    "mounts.requests_adapter": "requests",
    "mounts.httpx_transport": "httpx",
    "mounts.aiohttp_middleware": "aiohttp",
    "storage.redis": "redis",
}


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
