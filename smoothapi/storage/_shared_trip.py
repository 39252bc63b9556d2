"""The shared breaker's config checks and trip-rule helpers: which stores may take a
config (trip rules, open times), the batch of successes a process has not sent yet, and
the words of an opening.

Used by :mod:`smoothapi.storage.shared`; see its docstring ("Trip rules") for the rules
these serve.
"""

from __future__ import annotations

import math
import threading
import time

from .. import machine
from ..breaker import CircuitState, WindowCounts
from ..config import CircuitBreakerConfig
from ..errors import ConfigError
from .protocol import Batch, Trip, TripRules

__all__ = [
    "Batcher",
    "check_open_time",
    "millis",
    "reason_of",
    "rules_for",
    "trip_of",
]


#: The most successes a process batches before its next call sends them to the store.
BATCH_MAX = 1000

#: An empty window: what a rate breaker's window holds after a reset or while not CLOSED.
EMPTY = WindowCounts(0, 0, 0)


def rules_for(config: CircuitBreakerConfig, store: object) -> TripRules | None:
    """The :class:`TripRules` to pass to ``store``: None for a config that uses none of
    them (the store is called with the protocol before the trip rules, whatever it
    supports); a :class:`ConfigError` for a config whose rules the store cannot apply."""
    used = _used(config)
    if not used:
        return None
    if getattr(store, "trip_rules", False) is not True:
        raise ConfigError(
            f"CircuitBreakerConfig sets {', '.join(used)}, but the breaker store "
            f"{type(store).__name__} does not apply these trip rules (its class does not set "
            "trip_rules = True): use a store that does (RedisStore), implement them in the "
            "store (see smoothapi.storage.protocol.BreakerStore), or drop these settings to "
            "share the consecutive-failures rule"
        )
    return TripRules(
        config.failure_rate, config.window_ms, config.minimum_calls, config.half_open_calls
    )


def _used(config: CircuitBreakerConfig) -> list[str]:
    """The trip rules ``config`` uses, as ``name=value``."""
    used = []
    if config.failure_rate is not None:
        used.append(f"failure_rate={config.failure_rate:g}")
    if config.slow_call_ms is not None:
        used.append(f"slow_call_ms={config.slow_call_ms:g}")
    if config.half_open_calls > 1:
        used.append(f"half_open_calls={config.half_open_calls}")
    return used


def trip_of(m: machine.Machine) -> Trip:
    """A machine's last opening, as a store reports it."""
    return Trip(m.why, m.failures, m.slow, m.calls)


def reason_of(trip: Trip | None, old: CircuitState, cause: str | None) -> str:
    """Why the breaker opened, in :func:`smoothapi.machine.reason`'s words.  Without the
    store's record (a store with the older protocol), from what this process saw."""
    if trip is not None:
        return machine.reason(
            machine.INITIAL._replace(
                why=trip.why, failures=trip.failures, slow=trip.slow, calls=trip.calls
            )
        )
    if cause == "forced open":
        return "forced open"
    return "probe failed" if old is CircuitState.HALF_OPEN else "consecutive failures"


class Batcher:
    """The successes of ordinary calls this process counted for a rate breaker and has not
    sent to the store yet: one CLOSED period's count (a success of a later period drops
    the earlier ones, which the store would ignore anyway; one of an earlier period is
    dropped at once).  ``take`` hands them to the next store call and starts again from 0.

    A lock around the count and the swap: an uncontended lock costs far less than the
    store's round trip that every call makes anyway, and no success is lost to a race.
    """

    __slots__ = ("count", "first", "lock", "period")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.period = 0
        self.count = 0
        self.first = 0.0  # when the batch's first success was counted (monotonic)

    def add(self, period: int, due_after: float = math.inf) -> bool:
        """One more success of an ordinary call admitted in ``period``; True when the batch
        is due: :data:`BATCH_MAX` successes, or ``due_after`` seconds since its first (the
        caller then sends it with its next store call)."""
        with self.lock:
            if period == self.period:
                self.count += 1
            elif period > self.period:
                self.period, self.count = period, 1
            else:
                return False
            if self.count == 1:
                self.first = time.monotonic()
                return False
            return self.count >= BATCH_MAX or time.monotonic() - self.first >= due_after

    def take(self) -> Batch | None:
        """The successes counted since the last ``take`` (None if none)."""
        with self.lock:
            count = self.count
            if not count:
                return None
            self.count = 0
            return Batch(self.period, count)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held it at the fork) and
        none of the parent's successes (the parent sends those)."""
        self.lock = threading.Lock()
        self.count = 0


def millis(seconds: float) -> int:
    """Whole milliseconds, rounded up, of a config's seconds (``max_cooldown_ms=2007`` is
    2.007 s, and 2.007 * 1000 is 2007.0000000000002: not 2008)."""
    return math.ceil(round(seconds * 1000, 6))


def check_open_time(store: object, field: str, millis: float) -> None:
    """Refuse an open time the store cannot hold (``store.max_open_ms``), naming the field."""
    limit = getattr(store, "max_open_ms", None)
    if isinstance(limit, (int, float)) and millis > limit:
        raise ConfigError(
            f"{field} is {millis:g} ms, more than the {limit:g} ms (about "
            f"{limit / 3.15576e10:.0f} years) that a breaker store such as "
            f"{type(store).__name__} can hold; lower it"
        )
