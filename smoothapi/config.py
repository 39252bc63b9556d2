"""Configuration: frozen dataclasses validated at construction.

Every bad value fails here, when the config is built, with a
:class:`~smoothapi.errors.ConfigError` (a ``ValueError``) or
:class:`~smoothapi.errors.ConfigTypeError` (a ``TypeError``) whose message
names the field and the value - never later, in the middle of an outage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ConfigTypeError

if TYPE_CHECKING:
    from .events import Event
    from .storage import BreakerStore

__all__ = [
    "DEFAULT_RETRY_ON",
    "IDEMPOTENT_METHODS",
    "MAX_DELAY_SECONDS",
    "BackoffConfig",
    "CircuitBreakerConfig",
    "Jitter",
    "ResilientConfig",
]

#: The longest single wait a config may ask for: one day.
MAX_DELAY_SECONDS = 86_400.0
DEFAULT_RETRY_ON: frozenset[int] = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class Jitter(str, Enum):
    """How the exponential delay is randomised (see :mod:`smoothapi.backoff`)."""

    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


def _number(owner: str, name: str, value: object, *, minimum: float = 0.0) -> float:
    where = f"{owner}.{name}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(
            f"{where} must be a number of seconds, got {value!r} ({type(value).__name__})"
        )
    if not _finite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum:g}, got {value!r}")
    if value > MAX_DELAY_SECONDS:
        # A longer wait is a unit mistake (ms for s?), and past ~292 years the OS
        # sleep itself overflows.
        raise ConfigError(
            f"{where} must be at most {MAX_DELAY_SECONDS:g} seconds (one day), got {value!r}"
        )
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _integer(owner: str, name: str, value: object, *, minimum: int) -> int:
    where = f"{owner}.{name}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{where} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {value!r}")
    return value


def _flag(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{owner}.{name} must be True or False, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    """Exponential backoff with jitter.

    ``max_retries`` counts retries *after* the first try, so a call makes at
    most ``max_retries + 1`` attempts.  The delay before retry ``n`` (from 0)
    is ``uniform(0, min(max_delay, base_delay * 2**n))`` with the default
    ``jitter="full"``; ``"equal"``, ``"decorrelated"`` and ``"none"`` are the
    other modes.
    """

    base_delay: float = 0.1
    max_delay: float = 30.0
    max_retries: int = 3
    jitter: Jitter | str = Jitter.FULL

    def __post_init__(self) -> None:
        base = _number("BackoffConfig", "base_delay", self.base_delay)
        cap = _number("BackoffConfig", "max_delay", self.max_delay)
        if base > cap:
            raise ConfigError(
                f"BackoffConfig.base_delay ({base!r}) must not exceed "
                f"BackoffConfig.max_delay ({cap!r})"
            )
        object.__setattr__(self, "base_delay", base)
        object.__setattr__(self, "max_delay", cap)
        _integer("BackoffConfig", "max_retries", self.max_retries, minimum=0)
        object.__setattr__(self, "jitter", _jitter(self.jitter))


def _jitter(value: object) -> Jitter:
    if isinstance(value, Jitter):
        return value
    if isinstance(value, str):
        try:
            return Jitter(value.lower())
        except ValueError:
            pass
        modes = ", ".join(repr(j.value) for j in Jitter)
        raise ConfigError(f"BackoffConfig.jitter must be one of {modes}, got {value!r}")
    raise ConfigTypeError(
        f"BackoffConfig.jitter must be a Jitter or a string, got {value!r} ({type(value).__name__})"
    )


# What a shared breaker calls on its store (see smoothapi.storage.BreakerStore).  Checked
# by name so that building a config never imports the storage package.
_STORE_METHODS = (
    "key",
    "acquire",
    "record",
    "reset",
    "force_open",
    "snapshot",
    "acquire_async",
    "record_async",
    "reset_async",
    "force_open_async",
    "snapshot_async",
)


def check_store(where: str, store: object) -> None:
    """Raise ConfigTypeError unless ``store`` is None or has every BreakerStore method."""
    if store is None:
        return
    missing = [m for m in _STORE_METHODS if not callable(getattr(store, m, None))]
    if missing:
        raise ConfigTypeError(
            f"{where} must be a breaker store such as smoothapi.RedisStore (or None for an "
            f"in-process breaker), got {store!r}, which lacks {', '.join(missing)}"
        )


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """When the breaker opens and how long it stays open.

    The breaker opens after ``failure_threshold`` consecutive failed attempts
    and rejects calls for ``cooldown_ms`` milliseconds (monotonic clock);
    then one probe is let through.

    ``store`` - ``None`` keeps each breaker's state in its process; a
    :class:`~smoothapi.storage.BreakerStore` such as
    :class:`~smoothapi.RedisStore` makes every breaker built from this config
    a :class:`~smoothapi.SharedCircuitBreaker` whose state the whole fleet
    shares.  It takes no part in comparing or hashing configs.
    """

    failure_threshold: int = 3
    cooldown_ms: float = 10_000
    store: BreakerStore | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        _integer("CircuitBreakerConfig", "failure_threshold", self.failure_threshold, minimum=1)
        cooldown = self.cooldown_ms
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)):
            raise ConfigTypeError(
                "CircuitBreakerConfig.cooldown_ms must be a number of milliseconds, "
                f"got {cooldown!r} ({type(cooldown).__name__})"
            )
        if not _finite(cooldown) or cooldown < 0:
            raise ConfigError(
                f"CircuitBreakerConfig.cooldown_ms must be a finite number >= 0, got {cooldown!r}"
            )
        check_store("CircuitBreakerConfig.store", self.store)

    @property
    def cooldown(self) -> float:
        """The cooldown in seconds."""
        return self.cooldown_ms / 1000.0


def _status_codes(value: object) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigTypeError(
            f"ResilientConfig.retry_on must be a collection of HTTP status codes, got {value!r}"
        )
    codes: set[int] = set()
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int):
            raise ConfigTypeError(
                f"ResilientConfig.retry_on must hold ints, got {code!r} ({type(code).__name__})"
            )
        if not 100 <= code <= 599:
            raise ConfigError(
                f"ResilientConfig.retry_on holds {code!r}, which is not an HTTP status code "
                "(100-599)"
            )
        codes.add(code)
    return frozenset(codes)


def _methods(value: object) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigTypeError(
            f"ResilientConfig.idempotent_methods must be a collection of method names, "
            f"got {value!r}"
        )
    methods: set[str] = set()
    for method in value:
        if not isinstance(method, str) or not method.isalpha():
            raise ConfigError(
                f"ResilientConfig.idempotent_methods holds {method!r}, which is not an HTTP method"
            )
        methods.add(method.upper())
    return frozenset(methods)


@dataclass(frozen=True, slots=True)
class ResilientConfig:
    """Everything one mount point needs: backoff, breaker, fallback, what to retry.

    * ``fallback`` - ``None`` means no fallback.  Any other value is returned
      when the breaker rejects a call (or opens while the call is retrying).
      A callable is called with the exception (the ``CircuitOpenError``, or
      the call's last error) and its result is returned; wrap a callable you
      want returned as-is in a lambda.
    * ``retry_on`` - status codes that count as failures and are retried.
    * ``retry_after_cap`` - the longest ``Retry-After`` the transports will
      sleep (default: ``backoff.max_delay``); a longer one returns the
      response at once.
    * ``idempotent_methods`` / ``retry_non_idempotent`` - which requests the
      transports may resend after they may have reached the server.
    * ``hooks`` - callables sent every :mod:`smoothapi.events` event.
    """

    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    fallback: Any = None
    retry_on: Iterable[int] = DEFAULT_RETRY_ON
    retry_after_cap: float | None = None
    idempotent_methods: Iterable[str] = IDEMPOTENT_METHODS
    retry_non_idempotent: bool = False
    hooks: tuple[Callable[[Event], object], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.backoff, BackoffConfig):
            raise ConfigTypeError(
                f"ResilientConfig.backoff must be a BackoffConfig, got {self.backoff!r}"
            )
        if not isinstance(self.circuit_breaker, CircuitBreakerConfig):
            raise ConfigTypeError(
                "ResilientConfig.circuit_breaker must be a CircuitBreakerConfig, "
                f"got {self.circuit_breaker!r}"
            )
        object.__setattr__(self, "retry_on", _status_codes(self.retry_on))
        if self.retry_after_cap is not None:
            cap = _number("ResilientConfig", "retry_after_cap", self.retry_after_cap)
            object.__setattr__(self, "retry_after_cap", cap)
        object.__setattr__(self, "idempotent_methods", _methods(self.idempotent_methods))
        _flag("ResilientConfig", "retry_non_idempotent", self.retry_non_idempotent)
        hooks: Any = self.hooks
        if callable(hooks):
            hooks = (hooks,)
        if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
            raise ConfigTypeError(
                f"ResilientConfig.hooks must be a tuple of callables, got {hooks!r} "
                f"({type(hooks).__name__})"
            )
        hooks = tuple(hooks)
        for hook in hooks:
            if not callable(hook):
                raise ConfigTypeError(f"ResilientConfig.hooks must hold callables, got {hook!r}")
        object.__setattr__(self, "hooks", hooks)

    @property
    def sleep_cap(self) -> float:
        """The longest single wait: ``retry_after_cap`` or ``backoff.max_delay``."""
        cap = self.retry_after_cap
        return self.backoff.max_delay if cap is None else cap
