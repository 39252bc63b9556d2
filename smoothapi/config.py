"""Configuration: frozen dataclasses validated at construction.

Every bad value fails here, when the config is built, with a
:class:`~smoothapi.errors.ConfigError` (a ``ValueError``) or
:class:`~smoothapi.errors.ConfigTypeError` (a ``TypeError``) whose message
names the field and the value - never later, in the middle of an outage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._validate import MAX_DELAY_SECONDS
from ._validate import finite as _finite
from ._validate import flag as _flag
from ._validate import integer as _integer
from ._validate import integral as _integral
from ._validate import number as _number
from ._validate import real as _real
from .backoff import Jitter, capped_exponential
from .errors import ConfigError, ConfigTypeError

TYPE_CHECKING = False  # typing's own flag costs an import of typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .events import Event
    from .storage import BreakerStore

__all__ = [
    "DEFAULT_RETRY_ON",
    "IDEMPOTENT_METHODS",
    "MAX_DELAY_SECONDS",
    "MAX_HALF_OPEN_CALLS",
    "BackoffConfig",
    "BulkheadConfig",
    "CircuitBreakerConfig",
    "HedgingConfig",
    "Jitter",
    "RateLimitConfig",
    "ResilientConfig",
    "RetryBudgetConfig",
    "ThrottleConfig",
    "Upstreams",
]

#: The most probes ``half_open_calls`` may admit at once.
MAX_HALF_OPEN_CALLS = 1000

DEFAULT_RETRY_ON: frozenset[int] = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    """Exponential backoff with jitter.

    ``max_retries`` counts retries *after* the first try, so a call makes at
    most ``max_retries + 1`` attempts.  The delay before retry ``n`` (from 0)
    is ``uniform(0, min(max_delay, base_delay * 2**n))`` with the default
    ``jitter="full"``; ``"equal"``, ``"decorrelated"`` and ``"none"`` are the
    other modes.

    As in the seed, ``max_delay`` caps every delay: ``base_delay`` may exceed
    it (every delay is then capped).  The only bound on the two is on what
    the schedule can actually ask for: no single wait over one day.
    """

    base_delay: float = 0.1
    max_delay: float = 30.0
    max_retries: int = 3
    jitter: Jitter | str = Jitter.FULL

    def __post_init__(self) -> None:
        # Neither delay is bounded on its own: the seed's formula caps every wait at
        # max_delay, so max_delay=sys.maxsize ("no cap") or base_delay above max_delay
        # are well defined.  What is bounded is the longest wait the schedule asks for.
        base = _number("BackoffConfig", "base_delay", self.base_delay, one_day=False)
        cap = _number("BackoffConfig", "max_delay", self.max_delay, one_day=False)
        object.__setattr__(self, "base_delay", base)
        object.__setattr__(self, "max_delay", cap)
        retries = _integer("BackoffConfig", "max_retries", self.max_retries, minimum=0)
        object.__setattr__(self, "max_retries", retries)
        jitter = _jitter(self.jitter)
        object.__setattr__(self, "jitter", jitter)
        longest = _longest_wait(base, cap, retries, jitter)
        if longest > MAX_DELAY_SECONDS:
            # A wait over a day is a unit mistake (ms for s?); past ~292 years the OS
            # sleep itself overflows.
            raise ConfigError(
                f"BackoffConfig(base_delay={self.base_delay!r}, max_delay={self.max_delay!r}, "
                f"max_retries={retries}, jitter={jitter.value!r}) would wait up to "
                f"{longest:g} seconds before one retry; a single wait may be at most "
                f"{MAX_DELAY_SECONDS:g} seconds (one day). Lower BackoffConfig.max_delay "
                "(it caps every wait) or BackoffConfig.base_delay - seconds, not milliseconds"
            )


def _longest_wait(base: float, cap: float, retries: int, jitter: Jitter) -> float:
    """The longest single backoff wait ``retries`` retries can ask for (0 if none)."""
    if retries == 0:
        return 0.0
    if jitter is Jitter.DECORRELATED:
        # Each delay is at most 3x the previous one, starting from base_delay * 3; a
        # float power past 3**600 would overflow, and by then any finite cap is reached.
        return min(cap, base * 3.0 ** min(retries, 600))
    return capped_exponential(retries - 1, base, cap)


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
    if isinstance(store, (str, bytes, bytearray, memoryview)):
        # A URL: never shown, it may carry a password.
        raise ConfigTypeError(
            f"{where} must be a breaker store, not a {type(store).__name__} (a URL?): build "
            "one from the URL with store=smoothapi.RedisStore.from_url(url), or from a "
            "client with store=smoothapi.RedisStore(redis.Redis(...))"
        )
    missing = [m for m in _STORE_METHODS if not callable(getattr(store, m, None))]
    if not missing:
        return
    kind = type(store)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__module__.split(".")[0] in ("redis", "valkey"):
        if "Pool" in kind.__qualname__:  # a connection pool: a client is built on it
            raise ConfigTypeError(
                f"{where} must be a breaker store, not a Redis connection pool ({name}): "
                "build a client on it and wrap that, "
                "store=smoothapi.RedisStore(redis.Redis(connection_pool=pool)), or use "
                "smoothapi.RedisStore.from_url(url)"
            )
        raise ConfigTypeError(
            f"{where} must be a breaker store, not a Redis client ({name}): wrap the client "
            "as store=smoothapi.RedisStore(client), or use smoothapi.RedisStore.from_url(url)"
        )
    if len(missing) == len(_STORE_METHODS):
        # Not an attempt at a store at all: listing eleven method names would not help.
        raise ConfigTypeError(
            f"{where} must be a breaker store such as smoothapi.RedisStore (or None for an "
            f"in-process breaker), got a {name} object. For Redis or Valkey use "
            "store=smoothapi.RedisStore.from_url(url)"
        )
    raise ConfigTypeError(
        f"{where} must be a breaker store such as smoothapi.RedisStore (or None for an "
        f"in-process breaker), got a {name} object, which lacks {', '.join(missing)} "
        "(see smoothapi.storage.BreakerStore)"
    )


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """When the breaker opens and how long it stays open.

    The breaker opens after ``failure_threshold`` consecutive failed attempts
    and rejects calls for ``cooldown_ms`` milliseconds (monotonic clock);
    then one probe is let through.

    Adaptive open time (off by default: ``cooldown_multiplier=1.0``):

    * ``cooldown_multiplier`` - each failed probe multiplies the next open
      time's upper bound: after ``k`` consecutive failed probes the breaker
      stays open ``cooldown + rand() * (grown - cooldown)`` seconds, where
      ``grown = min(max_cooldown, cooldown * cooldown_multiplier**k)`` (full
      jitter on the growth, never less than ``cooldown_ms``).  A zero
      cooldown never grows.
    * ``max_cooldown_ms`` - the cap on that growth, and on how long a
      failure's ``Retry-After`` may hold the breaker open.  ``None``:
      ``cooldown_ms * 16`` (at most one day, at least ``cooldown_ms``) when
      the multiplier is above 1, else ``cooldown_ms`` (so a ``Retry-After``
      hold never outlasts the plain cooldown unless asked for).
    * ``cooldown_reset_ms`` - a breaker that trips after staying CLOSED at
      least this long since it last closed starts again from
      ``cooldown_ms``; one that trips sooner keeps the open time it had
      reached.  ``None``: the effective ``max_cooldown_ms``.

    Trip rules (the seed's consecutive rule by default):

    * ``failure_rate`` - ``None``, or a share ``0 < r <= 1``: the breaker
      opens on a failed attempt after which, among the attempts that ended
      in the last ``window_ms``, at least ``minimum_calls`` were seen and the
      failed share reaches ``r`` (a success never opens it).  It replaces
      the consecutive rule (``failure_threshold`` is then unused).  The
      window is ten buckets of ``window_ms / 10``: an attempt leaves it
      between 90 % and 100 % of ``window_ms`` after it ended.  It restarts
      empty whenever the breaker closes.
    * ``window_ms`` (10 s), ``minimum_calls`` (20) - the rate rule's window
      and the fewest attempts it gives a verdict on.
    * ``slow_call_ms`` - ``None``, or a duration (more than 0): an attempt that
      succeeds but took longer counts as a failure for the breaker, in either rule
      (its result is still returned, and it is not retried).  Measured on
      the breaker's clock.
    * ``half_open_calls`` (1) - how many probes HALF_OPEN admits at once
      after the cooldown; that many successes close the breaker, any failed
      probe re-opens it, and a cancelled probe gives its permit back.

    ``store`` - ``None`` keeps each breaker's state in its process; a
    :class:`~smoothapi.storage.BreakerStore` such as
    :class:`~smoothapi.RedisStore` makes every breaker built from this config
    a :class:`~smoothapi.SharedCircuitBreaker` whose state the whole fleet
    shares.  It takes no part in comparing or hashing configs.
    """

    failure_threshold: int = 3
    cooldown_ms: float = 10_000
    store: BreakerStore | None = field(default=None, compare=False, hash=False)
    cooldown_multiplier: float = 1.0
    max_cooldown_ms: float | None = None
    cooldown_reset_ms: float | None = None
    failure_rate: float | None = None
    window_ms: float = 10_000
    minimum_calls: int = 20
    slow_call_ms: float | None = None
    half_open_calls: int = 1

    def __post_init__(self) -> None:
        self._check_rules()
        threshold = _integer(
            "CircuitBreakerConfig", "failure_threshold", self.failure_threshold, minimum=1
        )
        object.__setattr__(self, "failure_threshold", threshold)
        cooldown: object = self.cooldown_ms
        if not _real(cooldown):
            raise ConfigTypeError(
                "CircuitBreakerConfig.cooldown_ms must be a number of milliseconds, "
                f"got {cooldown!r} ({type(cooldown).__name__})"
            )
        if not _finite(cooldown) or cooldown < 0:
            raise ConfigError(
                f"CircuitBreakerConfig.cooldown_ms must be a finite number >= 0, got {cooldown!r}"
            )
        if type(cooldown) is not int:  # ints stay as given; numpy's, Fraction: a plain float
            cooldown = float(cooldown)
            object.__setattr__(self, "cooldown_ms", cooldown)
        check_store("CircuitBreakerConfig.store", self.store)
        multiplier = self.cooldown_multiplier
        if not _real(multiplier):
            raise ConfigTypeError(
                "CircuitBreakerConfig.cooldown_multiplier must be a number, "
                f"got {multiplier!r} ({type(multiplier).__name__})"
            )
        if not _finite(multiplier) or multiplier < 1:
            raise ConfigError(
                "CircuitBreakerConfig.cooldown_multiplier must be a finite number >= 1, "
                f"got {multiplier!r}"
            )
        object.__setattr__(self, "cooldown_multiplier", float(multiplier))
        if self.max_cooldown_ms is not None:
            cap = _millis("max_cooldown_ms", self.max_cooldown_ms)
            if cap < cooldown:
                raise ConfigError(
                    f"CircuitBreakerConfig.max_cooldown_ms ({self.max_cooldown_ms!r}) must not be "
                    f"less than CircuitBreakerConfig.cooldown_ms ({cooldown!r})"
                )
            object.__setattr__(self, "max_cooldown_ms", cap)
        if self.cooldown_reset_ms is not None:
            object.__setattr__(
                self, "cooldown_reset_ms", _millis("cooldown_reset_ms", self.cooldown_reset_ms)
            )

    def _check_rules(self) -> None:
        owner = "CircuitBreakerConfig"
        rate = self.failure_rate
        if rate is not None:
            if not _real(rate):
                raise ConfigTypeError(
                    f"{owner}.failure_rate must be a number between 0 and 1 (or None for the "
                    f"consecutive rule), got {rate!r} ({type(rate).__name__})"
                )
            if not _finite(rate) or not 0 < rate <= 1:
                raise ConfigError(
                    f"{owner}.failure_rate must be > 0 and <= 1 (a share, not a percentage: "
                    f"0.5 for 50 %), got {rate!r}"
                )
            object.__setattr__(self, "failure_rate", float(rate))
        window = _millis("window_ms", self.window_ms, low="10", optional=False)
        if window < 10:
            raise ConfigError(
                f"{owner}.window_ms must be at least 10 ms (ten buckets of 1 ms), "
                f"got {self.window_ms!r}"
            )
        if type(self.window_ms) is not int:  # ints stay as given, as cooldown_ms does
            object.__setattr__(self, "window_ms", window)
        object.__setattr__(
            self, "minimum_calls", _integer(owner, "minimum_calls", self.minimum_calls, minimum=1)
        )
        if self.slow_call_ms is not None:
            slow = _millis("slow_call_ms", self.slow_call_ms, low="more than 0")
            if slow <= 0:
                raise ConfigError(
                    f"{owner}.slow_call_ms must be more than 0 ms (every answer takes some "
                    f"time; None turns the slow-call rule off), got {self.slow_call_ms!r}"
                )
            object.__setattr__(self, "slow_call_ms", slow)
        probes = _integer(owner, "half_open_calls", self.half_open_calls, minimum=1)
        if probes > MAX_HALF_OPEN_CALLS:
            raise ConfigError(
                f"{owner}.half_open_calls must be at most {MAX_HALF_OPEN_CALLS}, got {probes!r}"
            )
        object.__setattr__(self, "half_open_calls", probes)

    @property
    def window(self) -> float:
        """The failure-rate rule's window in seconds."""
        return self.window_ms / 1000.0

    @property
    def slow_call(self) -> float | None:
        """The slow-call threshold in seconds, or None."""
        ms = self.slow_call_ms
        return None if ms is None else ms / 1000.0

    @property
    def cooldown(self) -> float:
        """The cooldown in seconds."""
        return self.cooldown_ms / 1000.0

    @property
    def max_cooldown(self) -> float:
        """The longest open time in seconds (growth and ``Retry-After`` holds stop here)."""
        if self.max_cooldown_ms is not None:
            return self.max_cooldown_ms / 1000.0
        cooldown = self.cooldown
        if self.cooldown_multiplier > 1.0:
            return max(cooldown, min(cooldown * 16, MAX_DELAY_SECONDS))
        return cooldown

    @property
    def cooldown_reset(self) -> float:
        """Seconds CLOSED after which a trip starts again from the plain cooldown."""
        if self.cooldown_reset_ms is not None:
            return self.cooldown_reset_ms / 1000.0
        return self.max_cooldown


def _millis(name: str, value: object, *, low: str = "0", optional: bool = True) -> float:
    """A CircuitBreakerConfig duration in milliseconds: a finite number, 0 to one day.

    ``low`` words the least value the field takes (its own check refuses below it);
    ``optional``: the field also takes None (the messages say so only then).
    """
    where = f"CircuitBreakerConfig.{name}"
    if not _real(value):
        alternative = " or None" if optional else ""
        raise ConfigTypeError(
            f"{where} must be a number of milliseconds{alternative}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if not _finite(value) or not 0 <= value <= MAX_DELAY_SECONDS * 1000:
        raise ConfigError(
            f"{where} must be a finite number of milliseconds, {low} to "
            f"{MAX_DELAY_SECONDS * 1000:,.0f} (one day), got {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """A token bucket that caps retries relative to successes (gRPC's retry throttling).

    Each successful call adds ``token_ratio`` tokens (up to ``max_tokens``);
    each retry spends one; retries stop - the failure is returned or raised
    at once - while the bucket holds ``max_tokens / 2`` tokens or fewer.  In a
    total outage a mount point therefore sends at most about
    ``max_tokens / 2`` retries before it stops retrying, and in steady state
    at most ``token_ratio`` retries per success.  The bucket starts full.

    ``store`` - ``None`` (default) keeps one bucket per mount point (or per
    shared breaker) in each process; a store such as
    :class:`~smoothapi.RedisStore` gives each breaker name one bucket that
    the whole fleet shares, so an outage's retries are bounded fleet-wide.
    A process then leases ``batch`` tokens at a time (one round trip per
    ``batch`` retries) and reports its earnings ``batch`` tokens at a time
    (at most one round trip per ``batch / token_ratio`` successes, from a
    background thread: no call waits for it), so it may overspend the
    fleet's bucket by less than ``2 * batch`` tokens: the tokens it leased
    and has not spent, and earnings it has not reported.  While the store
    is down each process falls back to a bucket of its own.
    The store takes no part in comparing or hashing configs.
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1
    store: BreakerStore | None = field(default=None, compare=False, hash=False)
    batch: int = 2

    def __post_init__(self) -> None:
        tokens = self.max_tokens
        if not _real(tokens):
            raise ConfigTypeError(f"RetryBudgetConfig.max_tokens must be a number, got {tokens!r}")
        if not _finite(tokens) or not 1 <= tokens <= 1_000_000:
            raise ConfigError(
                f"RetryBudgetConfig.max_tokens must be between 1 and 1,000,000, got {tokens!r}"
            )
        ratio = self.token_ratio
        if not _real(ratio):
            raise ConfigTypeError(f"RetryBudgetConfig.token_ratio must be a number, got {ratio!r}")
        if not _finite(ratio) or not 0 < ratio <= 1:
            raise ConfigError(f"RetryBudgetConfig.token_ratio must be > 0 and <= 1, got {ratio!r}")
        object.__setattr__(self, "max_tokens", float(tokens))
        object.__setattr__(self, "token_ratio", float(ratio))
        check_store("RetryBudgetConfig.store", self.store)
        batch = _integer("RetryBudgetConfig", "batch", self.batch, minimum=1)
        if batch > 1000:
            raise ConfigError(f"RetryBudgetConfig.batch must be at most 1,000, got {batch!r}")
        object.__setattr__(self, "batch", batch)


# -- load control (issue 15): optional stages, off unless given ------------------------------

#: The most permits, queued calls or tokens a load-control stage may be given.
MAX_LOAD = 1_000_000


def _count(owner: str, name: str, value: object, minimum: int) -> int:
    whole = _integer(owner, name, value, minimum=minimum)
    if whole > MAX_LOAD:
        raise ConfigError(f"{owner}.{name} must be at most {MAX_LOAD:,}, got {value!r}")
    return whole


@dataclass(frozen=True, slots=True)
class BulkheadConfig:
    """At most ``max_concurrent`` attempts in flight, the rest wait in a FIFO queue.

    Per breaker for the decorator, per origin for the transports.  An attempt
    holds its permit while it runs (not while its call sleeps between
    retries).  A call that finds every permit taken waits in a queue of at
    most ``max_queue`` calls for at most ``max_wait`` seconds (never past its
    deadline); a full queue or a wait that runs out sheds the call at once,
    without I/O: :class:`~smoothapi.LoadShedError` (stage ``"bulkhead"``), or
    the fallback.  Waiters are served first come, first served, threads and
    coroutines alike; a cancelled waiter leaves the queue.
    """

    max_concurrent: int = 25
    max_queue: int = 100
    max_wait: float = 1.0

    def __post_init__(self) -> None:
        owner = "BulkheadConfig"
        object.__setattr__(
            self, "max_concurrent", _count(owner, "max_concurrent", self.max_concurrent, 1)
        )
        object.__setattr__(self, "max_queue", _count(owner, "max_queue", self.max_queue, 0))
        object.__setattr__(self, "max_wait", _number("BulkheadConfig", "max_wait", self.max_wait))


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """A token bucket: ``rate`` requests a second on average, bursts of up to ``burst``.

    Per breaker for the decorator, per origin for the transports; every
    attempt (retries and hedges too) takes a token.  A call waits for its
    token up to ``max_wait`` seconds (never past its deadline), else is shed
    without I/O: :class:`~smoothapi.LoadShedError` (stage ``"rate_limit"``),
    or the fallback.  ``burst`` defaults to ``max(1, rate)`` (a second's worth).

    ``follow_server`` (default True): the bucket also obeys what the server
    says - ``Retry-After`` on a 429 or 503, the IETF ``RateLimit`` fields and
    the common ``X-RateLimit-Remaining``/``-Reset`` headers: once the server
    says that ``n`` requests remain until its reset, at most ``n`` more are
    sent before it (none when ``n`` is 0), and the bucket pauses until then,
    up to the config's ``sleep_cap`` (``retry_after_cap``).  Hostile values
    (negative, huge, garbage) are ignored.

    ``store`` - ``None`` (default) keeps one bucket per breaker (decorator)
    or origin (transports) in each process; a :class:`~smoothapi.RedisStore`
    gives the whole fleet one bucket per ``key`` (default: the breaker's
    name, or the origin), for an API key the fleet shares: each attempt
    reserves its token with one script round trip on the store's sync client,
    on the server's clock; a server's "0 remaining" or ``Retry-After`` pauses
    the fleet's bucket.  While the store is down each process falls back to a
    bucket of its own.  The store and key take no part in comparing configs.
    """

    rate: float = 10.0
    burst: float | None = None
    max_wait: float = 1.0
    follow_server: bool = True
    store: BreakerStore | None = field(default=None, compare=False, hash=False)
    key: str | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        rate = self.rate
        if not _real(rate):
            raise ConfigTypeError(f"RateLimitConfig.rate must be a number, got {rate!r}")
        if not _finite(rate) or not 0.001 <= rate <= MAX_LOAD:
            raise ConfigError(
                f"RateLimitConfig.rate must be between 0.001 and {MAX_LOAD:,} requests a "
                f"second, got {rate!r}"
            )
        object.__setattr__(self, "rate", float(rate))
        burst = self.burst
        if burst is None:
            burst = max(1.0, float(rate))
        elif not _real(burst):
            raise ConfigTypeError(f"RateLimitConfig.burst must be a number, got {burst!r}")
        elif not _finite(burst) or not 1 <= burst <= MAX_LOAD:
            raise ConfigError(
                f"RateLimitConfig.burst must be between 1 and {MAX_LOAD:,} requests, got {burst!r}"
            )
        object.__setattr__(self, "burst", float(burst))
        object.__setattr__(self, "max_wait", _number("RateLimitConfig", "max_wait", self.max_wait))
        _flag("RateLimitConfig", "follow_server", self.follow_server)
        check_store("RateLimitConfig.store", self.store)
        key = self.key
        if key is not None and (not isinstance(key, str) or not key or len(key) > 1000):
            raise ConfigError(
                f"RateLimitConfig.key must be a non-empty string of at most 1,000 characters "
                f"or None, got {key!r}"
            )


@dataclass(frozen=True, slots=True)
class HedgingConfig:
    """Hedged requests: if no answer came within ``delay``, send one more attempt beside it.

    For async mount points only (the async transport and ``async def``
    functions), and for the transports only for requests that may be sent
    twice (idempotent methods, or an ``Idempotency-Key``, with a replayable
    body).  The first acceptable answer wins; the others are cancelled and
    their connections released.  Up to ``max_hedges`` extra attempts, each
    ``delay`` after the last; each spends a token of the retry budget (if
    configured), passes the rate limit and bulkhead without waiting, and is
    sent only while the breaker is on its happy path (``clean_ticket``: CLOSED,
    and for the consecutive rule with no failure counted).

    ``percentile`` (e.g. ``95.0``): hedge after that percentile of the
    mount point's recent successful attempts (the last 128, once 20 are
    known) instead of the fixed ``delay``, which is used until then; never
    less than ``min_delay``.
    """

    delay: float = 0.1
    max_hedges: int = 1
    percentile: float | None = None
    min_delay: float = 0.001

    def __post_init__(self) -> None:
        delay = _number("HedgingConfig", "delay", self.delay)
        object.__setattr__(self, "delay", delay)
        hedges = _integer("HedgingConfig", "max_hedges", self.max_hedges, minimum=1)
        if hedges > 10:
            raise ConfigError(f"HedgingConfig.max_hedges must be at most 10, got {hedges!r}")
        object.__setattr__(self, "max_hedges", hedges)
        share = self.percentile
        if share is not None:
            if not _real(share):
                raise ConfigTypeError(f"HedgingConfig.percentile must be a number, got {share!r}")
            if not _finite(share) or not 1 <= share < 100:
                raise ConfigError(
                    f"HedgingConfig.percentile must be >= 1 and < 100 (e.g. 95.0), got {share!r}"
                )
            object.__setattr__(self, "percentile", float(share))
        object.__setattr__(self, "min_delay", _number("HedgingConfig", "min_delay", self.min_delay))


@dataclass(frozen=True, slots=True)
class ThrottleConfig:
    """Adaptive throttling (Google SRE, "Handling Overload"): shed locally what would fail.

    Over a sliding window of ``window_ms`` (ten buckets), each call is shed
    without I/O with probability ``max(0, (requests - k * accepts) /
    (requests + 1))`` - :class:`~smoothapi.LoadShedError` (stage
    ``"throttle"``), or the fallback - where ``requests`` counts the attempts
    made and the calls shed, and ``accepts`` the attempts the upstream
    accepted (every outcome but a failure).  ``k=2`` lets about twice the
    accepted load through; lower is more aggressive.  Unlike the breaker it
    never stops traffic entirely: it follows an upstream that sheds part of
    its load.
    """

    k: float = 2.0
    window_ms: float = 120_000

    def __post_init__(self) -> None:
        k = self.k
        if not _real(k):
            raise ConfigTypeError(f"ThrottleConfig.k must be a number, got {k!r}")
        if not _finite(k) or not 1 <= k <= 100:
            raise ConfigError(f"ThrottleConfig.k must be between 1 and 100, got {k!r}")
        object.__setattr__(self, "k", float(k))
        window = self.window_ms
        if not _real(window):
            raise ConfigTypeError(
                f"ThrottleConfig.window_ms must be a number of milliseconds, got {window!r}"
            )
        if not _finite(window) or not 100 <= window <= MAX_DELAY_SECONDS * 1000:
            raise ConfigError(
                "ThrottleConfig.window_ms must be a number of milliseconds, 100 to "
                f"{MAX_DELAY_SECONDS * 1000:,.0f} (one day), got {window!r}"
            )
        object.__setattr__(self, "window_ms", float(window))


def _min_schedule(backoff: BackoffConfig) -> float:
    """The least time ``max_retries`` backoff sleeps can take (full jitter may sleep 0)."""
    total = 0.0
    for n in range(min(backoff.max_retries, 64)):
        cap = capped_exponential(n, backoff.base_delay, backoff.max_delay)
        if backoff.jitter is Jitter.NONE:
            total += cap
        elif backoff.jitter is Jitter.EQUAL:
            total += cap / 2
        elif backoff.jitter is Jitter.DECORRELATED:
            # Never below base_delay, but capped: base_delay may exceed max_delay.
            total += min(backoff.base_delay, backoff.max_delay)
    return total


def _status_codes(value: object) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigTypeError(
            f"ResilientConfig.retry_on must be a collection of HTTP status codes, got {value!r}"
        )
    codes: set[int] = set()
    for code in value:
        if not _integral(code):
            raise ConfigTypeError(
                f"ResilientConfig.retry_on must hold ints, got {code!r} ({type(code).__name__})"
            )
        if not 100 <= code <= 599:
            raise ConfigError(
                f"ResilientConfig.retry_on holds {code!r}, which is not an HTTP status code "
                "(100-599)"
            )
        codes.add(int(code))
    return frozenset(codes)


def _methods(value: object) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigTypeError(
            f"ResilientConfig.idempotent_methods must be a collection of method names, "
            f"got {value!r}"
        )
    methods: set[str] = set()
    for method in value:
        if not isinstance(method, str) or not method or not _TCHARS.issuperset(method):
            raise ConfigError(
                f"ResilientConfig.idempotent_methods holds {method!r}, which is not an HTTP "
                "method (RFC 9110: a token of letters, digits and !#$%&'*+-.^_`|~)"
            )
        # requests and httpx upper-case the method they send; compare the same way.
        methods.add(method.upper())
    return frozenset(methods)


# RFC 9110, 5.6.2: method = token; tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
# "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA (ASCII only).
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


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
      sleep (default: ``backoff.max_delay``, at most one day); a longer one
      returns the response at once.
    * ``idempotent_methods`` / ``retry_non_idempotent`` - which requests the
      transports may resend after they may have reached the server.
    * ``hooks`` - callables sent every :mod:`smoothapi.events` event.
    * ``retry_budget`` - a :class:`RetryBudgetConfig` to cap retries across
      calls (per breaker for the decorator, per origin for the transports);
      ``None`` (default) means no budget.
    * ``deadline`` - seconds one call may take in all, attempts and sleeps
      included; ``None`` (default) means no deadline.
    * ``bulkhead``, ``rate_limit``, ``hedging``, ``throttle`` - the load
      control stages (:class:`BulkheadConfig`, :class:`RateLimitConfig`,
      :class:`HedgingConfig`, :class:`ThrottleConfig`); each ``None``
      (default) is off and costs nothing.
    """

    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    fallback: Any = None
    retry_on: Iterable[int] = DEFAULT_RETRY_ON
    retry_after_cap: float | None = None
    idempotent_methods: Iterable[str] = IDEMPOTENT_METHODS
    retry_non_idempotent: bool = False
    hooks: tuple[Callable[[Event], object], ...] = ()
    retry_budget: RetryBudgetConfig | None = None
    deadline: float | None = None
    bulkhead: BulkheadConfig | None = None
    rate_limit: RateLimitConfig | None = None
    hedging: HedgingConfig | None = None
    throttle: ThrottleConfig | None = None

    def __post_init__(self) -> None:
        for name, kind in _STAGES:
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ConfigTypeError(
                    f"ResilientConfig.{name} must be a {kind.__name__} or None, got {value!r}"
                )
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
        if self.retry_budget is not None and not isinstance(self.retry_budget, RetryBudgetConfig):
            raise ConfigTypeError(
                "ResilientConfig.retry_budget must be a RetryBudgetConfig or None, "
                f"got {self.retry_budget!r}"
            )
        if self.deadline is not None:
            deadline = _number("ResilientConfig", "deadline", self.deadline)
            if deadline <= 0:
                raise ConfigError(f"ResilientConfig.deadline must be > 0 seconds, got {deadline!r}")
            least = _min_schedule(self.backoff)
            if self.backoff.max_retries and least >= deadline:
                raise ConfigError(
                    f"ResilientConfig.deadline={deadline!r}s cannot fit the retry schedule: "
                    f"{self.backoff.max_retries} retries with jitter={self.backoff.jitter} "
                    f"sleep at least {least:g}s. Lower max_retries or base_delay, use "
                    "jitter='full', or raise the deadline"
                )
            object.__setattr__(self, "deadline", deadline)

    @property
    def load_control(self) -> bool:
        """True when a load-control stage is configured: every call goes through the engine."""
        return not (
            self.bulkhead is None
            and self.rate_limit is None
            and self.hedging is None
            and self.throttle is None
        )

    @property
    def sleep_cap(self) -> float:
        """The longest single wait: ``retry_after_cap``, else ``backoff.max_delay`` up to a day."""
        cap = self.retry_after_cap
        if cap is None:
            # max_delay may be huge ("no cap": the schedule never reaches it); what a
            # server's Retry-After can make us sleep stays within a day all the same.
            return min(self.backoff.max_delay, MAX_DELAY_SECONDS)
        return cap


_STAGES: tuple[tuple[str, type], ...] = (
    ("bulkhead", BulkheadConfig),
    ("rate_limit", RateLimitConfig),
    ("hedging", HedgingConfig),
    ("throttle", ThrottleConfig),
)


# -- per-upstream configs (issue 16) ----------------------------------------------------------

#: The ports a URL without one goes to, as the transports spell an origin.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# A key's specificity: its host (an exact host beats any wildcard, a longer wildcard suffix
# beats a shorter one), then a port, then a scheme.  The four shapes of one host, most
# specific first; for_origin tries them in this order.
_SHAPES = ((True, True), (False, True), (True, False), (False, False))  # (scheme?, port?)

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.")


def _upstream_key(key: object) -> tuple[str | None, str, int | None]:
    """``(scheme or None, host, port or None)`` of an :class:`Upstreams` key, or ConfigError.

    The host is lower-cased, an IPv6 address put in brackets; a wildcard host keeps its
    ``*.`` prefix.
    """
    if not isinstance(key, str):
        raise ConfigTypeError(
            f"Upstreams key {key!r} must be a string such as 'api.example.com' "
            f"({type(key).__name__})"
        )

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"Upstreams key {key!r} {why}; a key is host, host:port, scheme://host, "
            "scheme://host:port or *.suffix (e.g. 'api.example.com', "
            "'https://api.example.com:8443', '*.example.com')"
        )

    if not key or key != key.strip() or any(c.isspace() for c in key):
        raise bad("is empty or holds whitespace")
    scheme: str | None = None
    rest = key
    if "://" in key:
        scheme, _, rest = key.partition("://")
        scheme = scheme.lower()
        if not scheme or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
            raise bad("has no valid scheme before '://'")
    for char, what in (("/", "a path"), ("?", "a query"), ("#", "a fragment"), ("@", "userinfo")):
        if char in rest:
            raise bad(f"holds {what} ({char!r}): a key names an origin only")
    port_text: str | None = None
    if rest.startswith("["):  # [IPv6] or [IPv6]:port
        close = rest.find("]")
        if close < 0:
            raise bad("has an unclosed '[' (an IPv6 address is written [::1])")
        host, after = rest[: close + 1], rest[close + 1 :]
        if after:
            if not after.startswith(":"):
                raise bad("has text after the IPv6 address")
            port_text = after[1:]
        if len(host) == 2:
            raise bad("has an empty IPv6 address")
    elif rest.count(":") > 1:  # a bare IPv6 address: no port can follow it
        host = f"[{rest}]"
    else:
        host, colon, port_text_ = rest.partition(":")
        port_text = port_text_ if colon else None
    host = host.lower()
    if not host:
        raise bad("has no host")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or not 0 < int(port_text) < 65536:
            raise bad("has a port that is not a number from 1 to 65535")
        port = int(port_text)
    if "*" in host:
        suffix = host[2:]
        if not host.startswith("*.") or not suffix or "*" in suffix or suffix.startswith("."):
            raise bad("has a '*' other than a leading '*.' before a domain")
    elif host.startswith(".") or host.endswith("..") or ".." in host:
        raise bad("has an empty label in its host")
    return scheme, host, port


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a ``scheme://host:port`` origin, or None if it is not one."""
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return None
    scheme = scheme.lower()
    if rest.startswith("["):
        close = rest.find("]")
        host, after = rest[: close + 1], rest[close + 1 :]
        if close < 0 or (after and not after.startswith(":")):
            return None
        port_text = after[1:]
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if port_text:
        if not port_text.isdigit():
            return None
        port = int(port_text)
    else:
        port = _DEFAULT_PORTS.get(scheme, 0)
    return scheme, host.lower(), port


class Upstreams:
    """One config per upstream, and a default for the rest: what a transport picks per origin.

    ``configs`` maps keys to :class:`ResilientConfig`; a key names an upstream by
    ``host``, ``host:port``, ``scheme://host``, ``scheme://host:port``, or a host
    wildcard ``*.example.com`` (any depth below ``example.com``, not the domain
    itself) with the same optional scheme and port.  A part left out matches any
    value: ``https://api.example.com`` is every port over https.  Hosts compare
    without case; an IPv6 address is written in brackets (``[::1]:8080``).

    :meth:`for_origin` returns the config of the most specific key that matches,
    else ``default``.  Most specific first: an exact host beats every wildcard, and
    a longer wildcard suffix a shorter one (``*.eu.example.com`` before
    ``*.example.com``); for the same host, ``scheme://host:port``, then
    ``host:port``, then ``scheme://host``, then ``host``.

    Immutable, validated at construction: a key with a path, a query, userinfo or
    no host, two keys for the same upstream (``API.example.com`` and
    ``api.example.com``), or a value that is not a :class:`ResilientConfig` raise
    :class:`~smoothapi.errors.ConfigError` naming the key.  ``configs`` keeps the
    keys as given.
    """

    __slots__ = ("_configs", "_default", "_exact", "_wild")

    _default: ResilientConfig
    _configs: Mapping[str, ResilientConfig]
    _exact: dict[tuple[str | None, str, int | None], ResilientConfig]
    _wild: dict[tuple[str | None, str, int | None], ResilientConfig]

    def __init__(
        self, default: ResilientConfig, configs: Mapping[str, ResilientConfig] | None = None
    ) -> None:
        if not isinstance(default, ResilientConfig):
            raise ConfigTypeError(
                f"Upstreams.default must be a ResilientConfig, got {default!r} "
                f"({type(default).__name__})"
            )
        given: Mapping[str, ResilientConfig] = {} if configs is None else configs
        if not isinstance(given, Mapping):
            raise ConfigTypeError(
                "Upstreams.configs must be a mapping of keys such as 'api.example.com' to "
                f"ResilientConfig, got {given!r} ({type(given).__name__})"
            )
        exact: dict[tuple[str | None, str, int | None], ResilientConfig] = {}
        wild: dict[tuple[str | None, str, int | None], ResilientConfig] = {}
        seen: dict[tuple[str | None, str, int | None], str] = {}
        copy: dict[str, ResilientConfig] = {}
        for key, config in given.items():
            parts = _upstream_key(key)
            if not isinstance(config, ResilientConfig):
                raise ConfigTypeError(
                    f"Upstreams.configs[{key!r}] must be a ResilientConfig, got {config!r} "
                    f"({type(config).__name__})"
                )
            if parts in seen:
                raise ConfigError(
                    f"Upstreams keys {seen[parts]!r} and {key!r} name the same upstream; "
                    "keep one (hosts compare without case)"
                )
            seen[parts] = key
            scheme, host, port = parts
            if host.startswith("*."):
                wild[scheme, host[2:], port] = config
            else:
                exact[parts] = config
            copy[key] = config
        object.__setattr__(self, "_default", default)
        object.__setattr__(self, "_configs", MappingProxyType(copy))
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_wild", wild)

    @property
    def default(self) -> ResilientConfig:
        """The config of every origin that no key matches."""
        return self._default

    @property
    def configs(self) -> Mapping[str, ResilientConfig]:
        """The per-upstream configs by key, as given (a read-only mapping)."""
        return self._configs

    def for_origin(self, origin: str) -> ResilientConfig:
        """The config for ``origin`` (``scheme://host:port``, as the transports spell it).

        The most specific matching key's config (the same object every time), else
        :attr:`default`.  A few dict lookups per label of the host: the transports
        call it once per new origin.  An origin without a port gets its scheme's
        default one; one that cannot be read gets :attr:`default`.
        """
        if not self._exact and not self._wild:
            return self._default
        parts = _origin_parts(origin)
        if parts is None:
            return self._default
        scheme, host, port = parts
        exact = self._exact
        if exact:
            for with_scheme, with_port in _SHAPES:
                found = exact.get(
                    (scheme if with_scheme else None, host, port if with_port else None)
                )
                if found is not None:
                    return found
        wild = self._wild
        if wild and not host.startswith("["):
            dot = host.find(".")
            while dot >= 0:  # the longest suffix first: "b.example.com", "example.com", "com"
                suffix = host[dot + 1 :]
                for with_scheme, with_port in _SHAPES:
                    found = wild.get(
                        (scheme if with_scheme else None, suffix, port if with_port else None)
                    )
                    if found is not None:
                        return found
                dot = host.find(".", dot + 1)
        return self._default

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Upstreams is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Upstreams is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Upstreams):
            return NotImplemented
        return self._default == other._default and dict(self._configs) == dict(other._configs)

    def __hash__(self) -> int:
        return hash(self._default)

    def __repr__(self) -> str:
        return f"Upstreams(default={self._default!r}, configs={dict(self._configs)!r})"
