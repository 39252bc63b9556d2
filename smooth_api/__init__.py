"""``smooth_api``: the seed's import name, an alias of :mod:`smoothapi` (same objects)."""

from __future__ import annotations

import smoothapi
from smoothapi import __all__ as __all__
from smoothapi import __version__ as __version__

# Each name is smoothapi's own, loaded when first asked for (as in smoothapi): importing
# the alias costs no more than importing smoothapi.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from smoothapi import AsyncResilientTransport as AsyncResilientTransport
    from smoothapi import BackoffConfig as BackoffConfig
    from smoothapi import BreakerStore as BreakerStore
    from smoothapi import BulkheadConfig as BulkheadConfig
    from smoothapi import CallRejected as CallRejected
    from smoothapi import CallShed as CallShed
    from smoothapi import CircuitBreaker as CircuitBreaker
    from smoothapi import CircuitBreakerConfig as CircuitBreakerConfig
    from smoothapi import CircuitOpenError as CircuitOpenError
    from smoothapi import CircuitState as CircuitState
    from smoothapi import ConfigError as ConfigError
    from smoothapi import ConfigTypeError as ConfigTypeError
    from smoothapi import Event as Event
    from smoothapi import FallbackServed as FallbackServed
    from smoothapi import HedgeSent as HedgeSent
    from smoothapi import HedgingConfig as HedgingConfig
    from smoothapi import Jitter as Jitter
    from smoothapi import LoadShedError as LoadShedError
    from smoothapi import RateLimitConfig as RateLimitConfig
    from smoothapi import RedisStore as RedisStore
    from smoothapi import ResilientAdapter as ResilientAdapter
    from smoothapi import ResilientConfig as ResilientConfig
    from smoothapi import ResilientFunction as ResilientFunction
    from smoothapi import ResilientMiddleware as ResilientMiddleware
    from smoothapi import ResilientTransport as ResilientTransport
    from smoothapi import RetriesExhausted as RetriesExhausted
    from smoothapi import RetryBudgetConfig as RetryBudgetConfig
    from smoothapi import RetryBudgetExhausted as RetryBudgetExhausted
    from smoothapi import RetryScheduled as RetryScheduled
    from smoothapi import SharedCircuitBreaker as SharedCircuitBreaker
    from smoothapi import SmoothAPIError as SmoothAPIError
    from smoothapi import StateChanged as StateChanged
    from smoothapi import StoreRecovered as StoreRecovered
    from smoothapi import StoreUnavailable as StoreUnavailable
    from smoothapi import ThrottleConfig as ThrottleConfig
    from smoothapi import Upstreams as Upstreams
    from smoothapi import WindowCounts as WindowCounts
    from smoothapi import __all__ as __all__
    from smoothapi import add_hook as add_hook
    from smoothapi import attempts as attempts
    from smoothapi import config_from_mapping as config_from_mapping
    from smoothapi import live_breakers as live_breakers
    from smoothapi import load_config as load_config
    from smoothapi import load_upstreams as load_upstreams
    from smoothapi import remove_hook as remove_hook
    from smoothapi import reset_all as reset_all
    from smoothapi import resilient_api as resilient_api


def __getattr__(name: str) -> Any:
    value = getattr(smoothapi, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
