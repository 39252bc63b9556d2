"""The circuit breaker: a three-state machine guarded by one short lock.

Theory of operation
-------------------
CLOSED lets every call through and counts consecutive failed attempts; a
success resets the count; reaching ``failure_threshold`` opens the breaker.
OPEN rejects every call, without I/O, until ``cooldown`` seconds have passed
on a monotonic clock.  The first caller after that moves it to HALF_OPEN and
holds the single *probe permit*; every other caller is rejected while the
probe is in flight.  The probe's success closes the breaker, its failure
re-opens it with a fresh cooldown, and any other ending (cancellation,
``KeyboardInterrupt``, a programming error) gives the permit back so that the
next caller probes - the breaker can never stick in HALF_OPEN.

Adaptive open time (``cooldown_multiplier > 1``): the ``k``-th consecutive
failed probe re-opens the breaker for ``cooldown + rand() * (grown -
cooldown)`` with ``grown = min(max_cooldown, cooldown * multiplier**k)``.  A
trip from CLOSED opens for the plain cooldown (``k`` back to 0) when the
breaker stayed CLOSED for at least ``cooldown_reset`` since it last closed;
sooner, it re-opens at the growth level ``k`` it had reached.  A failure that
opens the breaker and carries the server's ``Retry-After`` holds it open at
least that long, capped at ``max_cooldown``.

Callers hold a *ticket* from :meth:`CircuitBreaker.acquire`: for an ordinary
call the even number of the current CLOSED period, for the probe an odd
number.  Outcomes are reported with the ticket, so a stale report (a call
admitted before the breaker last opened, a probe whose breaker was reset
meanwhile) cannot flip state it knows nothing about.  Ticket ``0`` reports
as an ordinary call of the current period.

The lock guards bookkeeping only.  It is never held while the user's call
runs or while anyone sleeps.  The happy path - CLOSED with no failure counted
- reads one attribute (``clean_ticket``: the CLOSED period's ticket, or 0) and
  takes no lock at all.

Transitions, as data (state x event -> state)::
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import weakref
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from . import _runtime
from .config import CircuitBreakerConfig
from .errors import CircuitOpenError, ConfigError, ConfigTypeError
from .events import Hook, StateChanged, emit, logger

if TYPE_CHECKING:
    from .storage import BreakerStore

__all__ = ["REJECTED", "CircuitBreaker", "CircuitState", "live_breakers", "reset_all"]


class CircuitState(str, Enum):
    """The breaker's state; a ``str`` so ``breaker.state == "OPEN"`` holds."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"

    def __str__(self) -> str:
        return self.value


CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN

# Events that move the machine.
_TRIP = "failure threshold reached"
_COOLED = "cooldown elapsed, probe claimed"
_PROBE_OK = "probe succeeded"
_PROBE_FAILED = "probe failed"
_RESET = "reset"
_FORCE_OPEN = "force_open"

_TRANSITIONS: dict[tuple[CircuitState, str], CircuitState] = {
    (CLOSED, _TRIP): OPEN,
    (OPEN, _COOLED): HALF_OPEN,
    (HALF_OPEN, _PROBE_OK): CLOSED,
    (HALF_OPEN, _PROBE_FAILED): OPEN,
    (CLOSED, _RESET): CLOSED,
    (OPEN, _RESET): CLOSED,
    (HALF_OPEN, _RESET): CLOSED,
    (CLOSED, _FORCE_OPEN): OPEN,
    (OPEN, _FORCE_OPEN): OPEN,
    (HALF_OPEN, _FORCE_OPEN): OPEN,
}
__doc__ = (__doc__ or "") + "".join(
    f"\n    {s.value:9} --{e}--> {t.value}" for (s, e), t in _TRANSITIONS.items()
)

# Every breaker alive in this process (decorators', transports' per-origin ones, yours),
# for introspection and for test suites that reset them all.  Weak: a breaker goes
# when its owner does.
_LIVE: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def checked_config(config: CircuitBreakerConfig | None) -> CircuitBreakerConfig:
    """``config``, or the default one for None; anything else is a TypeError."""
    if config is None:
        return CircuitBreakerConfig()
    if not isinstance(config, CircuitBreakerConfig):
        raise TypeError(f"CircuitBreaker(config=...) needs a CircuitBreakerConfig, got {config!r}")
    return config


def live_breakers() -> list[CircuitBreaker]:
    """Every circuit breaker alive in this process, sorted by name."""
    # Copy first: another thread may add or drop a breaker while we iterate.
    return sorted(list(_LIVE), key=lambda breaker: breaker.name)  # noqa: C414


def reset_all() -> None:
    """Close every live breaker and forget its failures (e.g. between tests).

    A shared breaker whose store has only an async client cannot be reset in
    its store from sync code: it is skipped with a WARNING that says to
    ``await breaker.reset_async()``, and the others are still reset.
    """
    for breaker in live_breakers():
        try:
            breaker.reset()
        except ConfigError as exc:  # an async-only store: no sync way to reach it
            logger().warning(
                "reset_all() skipped breaker %r: %s (await breaker.reset_async() instead)",
                breaker.name,
                exc,
            )


#: Returned by :meth:`CircuitBreaker.acquire` when the call is rejected.
REJECTED = -1


class _HookTable:
    """A breaker's hooks once some are registered per owner (``add_hook(owner=...)``).

    ``fixed``: the breaker's own hooks; ``owned``: registration key -> (weak
    reference to the owner, hook), each removed by a finalizer when its owner
    goes; ``version`` changes on every change (see ``_refresh_hooks``).
    """

    __slots__ = ("fixed", "owned", "version")

    def __init__(self, fixed: tuple[Hook, ...]) -> None:
        self.fixed = fixed
        self.owned: dict[int, tuple[weakref.ref[object], Hook]] = {}
        self.version = next(_VERSIONS)


_HOOKS_LOCK = threading.Lock()  # serialises add_hook; finalizers never take it
_VERSIONS = itertools.count(1)  # next() is atomic: keys and versions, never repeated


@_runtime.at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child (see _runtime).
    global _HOOKS_LOCK
    _HOOKS_LOCK = threading.Lock()
    for breaker in list(_LIVE):
        if getattr(breaker, "_lock", None) is not None:
            breaker._lock = threading.Lock()


def _drop_hook(breaker_ref: weakref.ref[CircuitBreaker], key: int) -> None:
    """An owner went: forget the hook it registered (a ``weakref.finalize`` callback)."""
    breaker = breaker_ref()
    table = None if breaker is None else getattr(breaker, "_hook_table", None)
    if breaker is None or table is None:
        return
    if table.owned.pop(key, None) is not None:
        table.version = next(_VERSIONS)
        breaker._refresh_hooks(table)


class CircuitBreaker:
    """A thread-safe and asyncio-safe circuit breaker.

    ``clock`` is a monotonic clock in seconds; by default the library clock
    (``time.monotonic``, or the fake clock that :mod:`smoothapi.testing`
    installs).  ``hooks`` receive a :class:`~smoothapi.events.StateChanged`
    on every transition.

    ``store`` (or ``config.store``; ``store=`` wins) keeps the state in a
    :class:`~smoothapi.storage.BreakerStore` such as
    :class:`~smoothapi.RedisStore` that the whole fleet shares: the
    constructor then returns a :class:`~smoothapi.SharedCircuitBreaker`.

    ``rand`` is the random source of the adaptive open time's jitter (a
    callable returning a float in ``[0, 1)``); it is called only when a
    cooldown grows, so with ``cooldown_multiplier=1`` it is never called.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_closed_at",
        "_failures",
        "_growth",
        "_hook_table",
        "_hooks",
        "_lock",
        "_open_until",
        "_period",
        "_probe",
        "_probe_active",
        "_rand",
        "_state",
        "clean_ticket",
        "config",
        "name",
    )

    def __new__(
        cls,
        config: CircuitBreakerConfig | None = None,
        *,
        name: str = "circuit",
        clock: Callable[[], float] | None = None,
        hooks: tuple[Hook, ...] = (),
        store: BreakerStore | None = None,
        rand: Callable[[], float] = random.random,
    ) -> CircuitBreaker:
        # Dispatch here, so that every place that builds a breaker from a config
        # (the decorator, the transports' per-origin registry) gets a shared one
        # when the config names a store, without knowing about stores.
        if cls is CircuitBreaker and (
            store is not None
            or (isinstance(config, CircuitBreakerConfig) and config.store is not None)
        ):
            from .storage.shared import SharedCircuitBreaker  # noqa: PLC0415 - only with a store

            return super().__new__(SharedCircuitBreaker)
        return super().__new__(cls)

    def __init__(
        self,
        config: CircuitBreakerConfig | None = None,
        *,
        name: str = "circuit",
        clock: Callable[[], float] | None = None,
        hooks: tuple[Hook, ...] = (),
        store: BreakerStore | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        config = checked_config(config)
        if store is not None or config.store is not None:
            # Only a subclass gets here: CircuitBreaker itself dispatched in __new__.
            raise ConfigTypeError(
                f"{type(self).__name__} keeps its state in memory and cannot take a store; "
                "subclass smoothapi.SharedCircuitBreaker instead, or drop store="
            )
        if not callable(rand):
            raise ConfigTypeError(
                f"CircuitBreaker(rand=...) needs a callable returning a float, got {rand!r}"
            )
        _LIVE.add(self)
        self.config = config
        self.name = name
        self._clock = clock
        self._hooks = tuple(hooks)
        self._rand = rand
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._open_until = 0.0
        # Adaptive open time: consecutive failed probes since the last healthy trip
        # (the exponent of the growth), and when the breaker last closed.
        self._growth = 0
        self._closed_at = -math.inf
        # Tickets: the probe's are odd, ordinary calls' are the even number of the
        # current CLOSED period, so a report from an earlier period (a call admitted
        # before the breaker last opened) cannot count against a fresh one.
        self._probe = -1
        self._probe_active = False
        self._period = 2
        # The period's ticket exactly when CLOSED with no failure counted, else 0:
        # the one attribute the happy path reads.  Written only under the lock.
        self.clean_ticket = self._period

    #: The lock-free read of the happy path: the CLOSED period's ticket while the
    #: breaker is CLOSED with no failure counted, else 0 (always 0 for a shared
    #: breaker).  A mount point that reads a non-zero ticket may make its call
    #: without :meth:`acquire`, and reports it only if the ticket changed meanwhile.
    clean_ticket: int

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.name!r} {self._state.value} "
            f"failures={self._failures}/{self.config.failure_threshold}>"
        )

    # -- reading (no side effects) ---------------------------------------

    def now(self) -> float:
        """The breaker's clock, in seconds."""
        clock = self._clock
        return clock() if clock is not None else _runtime.clock()

    @property
    def state(self) -> CircuitState:
        """The current state.  Reading never claims the probe: an elapsed cooldown reads OPEN."""
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failed attempts counted in CLOSED."""
        return self._failures

    @property
    def retry_after(self) -> float:
        """Seconds until a probe is allowed: 0.0 when CLOSED or when the cooldown has elapsed."""
        if self._state is not OPEN:
            return 0.0
        return max(0.0, self._open_until - self.now())

    # -- the protocol the engine speaks --------------------------------------

    def acquire(self) -> int:
        """Ask to make one attempt.

        Returns an even ticket for an ordinary call in CLOSED, an odd one when
        this caller is the HALF_OPEN probe, or :data:`REJECTED`.  (Reports with
        ticket ``0`` count as ordinary calls of the current CLOSED period.)
        """
        if self._state is CLOSED:
            return self._period
        changed: StateChanged | None = None
        with self._lock:
            state = self._state
            if state is CLOSED:
                return self._period
            if self._probe_active:
                return REJECTED
            now = self.now()
            if state is OPEN:
                if now < self._open_until:
                    return REJECTED
                changed = self._move(_COOLED, now)
            self._probe += 2
            self._probe_active = True
            ticket = self._probe
        if changed is not None:
            try:
                emit(changed, self._hooks)
            except BaseException:  # a hook interrupted us (KeyboardInterrupt): free the probe
                self.release(ticket)
                raise
        return ticket

    def admit(self) -> tuple[int, float]:
        """:meth:`acquire`, with the seconds until a probe is allowed when rejected.

        ``(ticket, 0.0)`` when admitted, ``(REJECTED, retry_after)`` when not:
        the engine's question, answered in one step (for a shared breaker, from
        the store's one reply), so nothing has to read :attr:`retry_after` after.
        """
        ticket = self.acquire()
        return (ticket, self.retry_after if ticket == REJECTED else 0.0)

    async def admit_async(self) -> tuple[int, float]:
        """:meth:`admit` for the async driver."""
        ticket = await self.acquire_async()
        return (ticket, self.retry_after if ticket == REJECTED else 0.0)

    def check(self) -> int:
        """Like :meth:`acquire`, but raise :class:`CircuitOpenError` rather than return REJECTED."""
        ticket = self.acquire()
        if ticket == REJECTED:
            raise CircuitOpenError(self.name, self.retry_after)
        return ticket

    def record_success(self, ticket: int) -> CircuitState:
        """The attempt holding ``ticket`` succeeded, or the service answered (a 404, say).

        Returns the state after the report (as do :meth:`record_failure` and
        :meth:`release`).
        """
        if ticket % 2 == 0:
            if ticket and self.clean_ticket == ticket:
                return CLOSED
            with self._lock:
                if self._state is CLOSED and ticket in (0, self._period):
                    self._failures = 0
                    self.clean_ticket = self._period
                return self._state
        changed: StateChanged | None = None
        with self._lock:
            if self._is_live_probe(ticket):
                self._probe_active = False
                self._failures = 0
                self._period += 2  # a new CLOSED period: earlier calls' reports are stale
                now = self.now()
                self._closed_at = now
                changed = self._move(_PROBE_OK, now)
            state = self._state
        if changed is not None:
            emit(changed, self._hooks)
        return state

    def record_failure(self, ticket: int, retry_after: float | None = None) -> CircuitState:
        """The attempt holding ``ticket`` failed (a retryable status or a transport error).

        ``retry_after`` is the server's requested wait in seconds, if the failure
        carried one: when this failure opens the breaker, it stays open at least
        that long (capped at ``config.max_cooldown``).
        """
        changed: StateChanged | None = None
        with self._lock:
            if ticket % 2 == 0:
                # A call admitted in an earlier CLOSED period (before the breaker last
                # opened) is not counted again: it cannot re-open or extend anything.
                if self._state is CLOSED and ticket in (0, self._period):
                    self._failures += 1
                    self.clean_ticket = 0
                    if self._failures >= self.config.failure_threshold:
                        now = self.now()
                        if now - self._closed_at >= self.config.cooldown_reset:
                            self._growth = 0  # a healthy period: start from the cooldown
                        self._open_until = now + self._open_time(retry_after)
                        changed = self._move(_TRIP, now)
            elif self._is_live_probe(ticket):
                self._probe_active = False
                self._failures += 1
                now = self.now()
                self._growth += 1
                self._open_until = now + self._open_time(retry_after)
                changed = self._move(_PROBE_FAILED, now)
            state = self._state
        if changed is not None:
            emit(changed, self._hooks)
        return state

    def release(self, ticket: int) -> CircuitState:
        """The attempt ended without a verdict (cancelled, interrupted, a bug): free the permit."""
        if ticket <= 0 or ticket % 2 == 0:
            return self._state
        with self._lock:
            if self._is_live_probe(ticket):
                self._probe_active = False
            return self._state

    # The async protocol the async driver speaks.  In memory there is nothing to
    # await; a breaker whose state lives in a server (Redis) awaits its client here.

    async def acquire_async(self) -> int:
        """:meth:`acquire` for the async driver."""
        return self.acquire()

    async def record_success_async(self, ticket: int) -> CircuitState:
        """:meth:`record_success` for the async driver."""
        return self.record_success(ticket)

    async def record_failure_async(
        self, ticket: int, retry_after: float | None = None
    ) -> CircuitState:
        """:meth:`record_failure` for the async driver."""
        return self.record_failure(ticket, retry_after)

    async def release_async(self, ticket: int) -> CircuitState:
        """:meth:`release` for the async driver."""
        return self.release(ticket)

    def add_hook(self, hook: Hook, *, owner: object = None) -> None:
        """Also send this breaker's :class:`~smoothapi.events.StateChanged` events to ``hook``.

        With ``owner``, only while ``owner`` is alive: the hook is dropped when
        ``owner`` is garbage-collected.  Transports and decorated functions given
        a shared breaker register their config's hooks this way, so one that
        goes away leaves nothing behind.  A hook registered more than once (by
        several owners, or also without one) is called once per event.
        """
        if not callable(hook):
            raise TypeError(f"add_hook() needs a callable, got {hook!r}")
        if owner is None:
            with _HOOKS_LOCK:
                table = getattr(self, "_hook_table", None)
                if table is None:
                    if hook not in self._hooks:
                        self._hooks = (*self._hooks, hook)
                    return
                if hook not in table.fixed:
                    table.fixed = (*table.fixed, hook)
                    table.version = next(_VERSIONS)
                    self._refresh_hooks(table)
            return
        try:
            owner_ref = weakref.ref(owner)
        except TypeError:
            raise TypeError(
                f"add_hook(owner=...) needs an object that supports weak references, "
                f"got a {type(owner).__name__}"
            ) from None
        with _HOOKS_LOCK:
            table = getattr(self, "_hook_table", None)
            if table is None:
                table = _HookTable(self._hooks)
                self._hook_table = table
            for ref, registered in list(table.owned.values()):
                if ref() is owner and registered == hook:
                    return
            key = next(_VERSIONS)
            table.owned[key] = (owner_ref, hook)
            table.version = next(_VERSIONS)
            # Weak on the breaker too: a finalizer must not keep a breaker alive.
            finalizer = weakref.finalize(owner, _drop_hook, weakref.ref(self), key)
            finalizer.atexit = False
            self._refresh_hooks(table)

    def _refresh_hooks(self, table: _HookTable) -> None:
        # Lock-free, because a finalizer may run it while this very thread holds
        # _HOOKS_LOCK (a collection inside add_hook): rebuilt until no change
        # happened meanwhile, so the last writer always writes the latest table.
        while True:
            version = table.version
            hooks = list(table.fixed)
            for _ref, hook in list(table.owned.values()):
                if hook not in hooks:
                    hooks.append(hook)
            self._hooks = tuple(hooks)
            if table.version == version:
                return

    # -- manual control ----------------------------------------------------

    def reset(self) -> None:
        """Close the breaker and forget every failure and any grown open time.

        An in-flight probe's report is ignored.
        """
        with self._lock:
            self._probe_active = False
            self._probe += 2  # invalidate the ticket of any probe in flight
            self._period += 2  # and of any call admitted before the reset
            self._failures = 0
            self._growth = 0
            self._closed_at = -math.inf
            changed = self._move(_RESET, self.now()) if self._state is not CLOSED else None
            self.clean_ticket = self._period
        if changed is not None:
            emit(changed, self._hooks, cause="reset")

    def force_open(self, cooldown_ms: float | None = None) -> None:
        """Open the breaker now, for ``cooldown_ms`` (default: the configured cooldown)."""
        if cooldown_ms is None:
            cooldown = self.config.cooldown
        else:
            CircuitBreakerConfig(cooldown_ms=cooldown_ms)  # validates the value
            cooldown = cooldown_ms / 1000.0
        with self._lock:
            now = self.now()
            self._probe_active = False
            self._probe += 2
            self._open_until = now + cooldown
            old = self._state
            changed = self._move(_FORCE_OPEN, now)
        if changed is not None and old is not OPEN:
            emit(changed, self._hooks, cause="forced open")

    # -- internals (called with the lock held) ---------------------------------

    def _open_time(self, retry_after: float | None) -> float:
        """Seconds to stay open from now: the grown, jittered cooldown or the hold."""
        config = self.config
        cooldown = config.cooldown
        open_for = cooldown
        if self._growth and config.cooldown_multiplier > 1.0:
            cap = config.max_cooldown
            try:
                grown = min(cap, cooldown * config.cooldown_multiplier**self._growth)
            except OverflowError:
                grown = cap
            if grown > cooldown:
                share = min(1.0, max(0.0, self._rand()))  # a NaN reads as 0.0
                open_for = cooldown + share * (grown - cooldown)
        if retry_after is not None and retry_after > open_for:  # a NaN is ignored
            open_for = max(open_for, min(retry_after, config.max_cooldown))
        return open_for

    def _is_live_probe(self, ticket: int) -> bool:
        return self._probe_active and ticket == self._probe and self._state is HALF_OPEN

    def _move(self, event: str, now: float) -> StateChanged:
        old = self._state
        try:
            new = _TRANSITIONS[(old, event)]
        except KeyError:
            raise RuntimeError(
                f"smoothapi bug: breaker {self.name!r} cannot go from {old.value} on {event!r}"
            ) from None
        self._state = new
        self.clean_ticket = self._period if new is CLOSED and self._failures == 0 else 0
        return StateChanged(self.name, old, new, self._failures, now)
