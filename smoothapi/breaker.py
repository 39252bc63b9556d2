"""The circuit breaker kept in process memory, and what every breaker shares.

:class:`CircuitBreaker` keeps one :class:`~smoothapi.machine.Machine` value
and swaps it, under one short lock, for what :mod:`smoothapi.machine`'s pure
rules return: the rules (states, tickets, the probe's lease, the adaptive
open time) are written there once, for this breaker and for the shared one
(:class:`~smoothapi.SharedCircuitBreaker`, whose store applies them
atomically on the server).  This module adds what is not a rule: the lock,
the clock, the hooks that hear of every transition, and the registry of live
breakers.

The lock guards bookkeeping only.  It is never held while the user's call
runs, while anyone sleeps, or while a hook runs (events are sent after the
swap).  The happy path - CLOSED with no failure counted - reads one attribute
(:attr:`CircuitBreaker.clean_ticket`: the CLOSED period's ticket, or 0) and
takes no lock at all.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from . import _runtime, machine
from .config import CircuitBreakerConfig
from .errors import CircuitOpenError, ConfigError, ConfigTypeError
from .events import Hook, StateChanged, emit, logger
from .machine import BUCKETS, INITIAL, REJECTED, CircuitState, Machine, Rules, Window

if TYPE_CHECKING:
    from .storage import BreakerStore

_floor = math.floor

#: Seconds a duration may exceed ``slow_call_ms`` and still not be slow (float rounding).
SLOW_SLACK = 1e-6

__all__ = [
    "REJECTED",
    "CircuitBreaker",
    "CircuitState",
    "WindowCounts",
    "live_breakers",
    "reset_all",
    "rules_of",
]


class WindowCounts(NamedTuple):
    """A failure-rate breaker's sliding window now: attempts that ended in it, how many
    failed (slow calls included) and how many of those were slow calls."""

    calls: int
    failures: int
    slow: int

    @property
    def rate(self) -> float:
        """The failed share (0.0 for an empty window)."""
        return self.failures / self.calls if self.calls else 0.0


def rules_of(config: CircuitBreakerConfig, scale: float = 1.0, lease: float = math.inf) -> Rules:
    """The machine's :class:`Rules` for ``config``, with times in seconds times ``scale``
    (a store that counts milliseconds passes 1000)."""
    return Rules(
        config.failure_threshold,
        config.cooldown * scale,
        config.cooldown_multiplier,
        config.max_cooldown * scale,
        config.cooldown_reset * scale,
        lease,
        config.failure_rate,
        config.window * scale,
        config.minimum_calls,
        config.half_open_calls,
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
        "_hook_table",
        "_hooks",
        "_lock",
        "_m",
        "_rand",
        "_rules",
        "_slow",
        "_window",
        "clean_ticket",
        "config",
        "name",
    )

    #: The lock-free read of the happy path: the CLOSED period's ticket while the
    #: breaker is CLOSED with no failure counted, else 0 (a shared breaker's is non-zero
    #: only while its store's watcher vouches for it).  A mount point that reads a
    #: non-zero ticket may make its call without :meth:`acquire`, and reports it only
    #: if the ticket changed meanwhile.
    clean_ticket: int

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
            return super().__new__(_shared_class())
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
        config = self._setup(config, name, clock, hooks, rand)
        if store is not None or config.store is not None:
            # Only a subclass gets here: CircuitBreaker itself dispatched in __new__.
            raise ConfigTypeError(
                f"{type(self).__name__} keeps its state in memory and cannot take a store; "
                "subclass smoothapi.SharedCircuitBreaker instead, or drop store="
            )
        self._lock = threading.Lock()
        self._rules = rules_of(config)
        self._window = None if config.failure_rate is None else Window(config.window)
        self._m = INITIAL
        self.clean_ticket = INITIAL.period
        _LIVE.add(self)

    def _setup(
        self,
        config: CircuitBreakerConfig | None,
        name: str,
        clock: Callable[[], float] | None,
        hooks: tuple[Hook, ...],
        rand: Callable[[], float],
    ) -> CircuitBreakerConfig:
        """What every breaker holds, wherever its state lives."""
        config = checked_config(config)
        if not callable(rand):
            raise ConfigTypeError(
                f"CircuitBreaker(rand=...) needs a callable returning a float, got {rand!r}"
            )
        self.config = config
        self.name = name
        self._clock = clock
        self._hooks = tuple(hooks)
        self._rand = rand
        slow = config.slow_call
        # A microsecond of slack: the difference of two float clock readings can exceed the
        # threshold by rounding alone (1000.1 - 1000.0 > 0.1), and exactly slow_call_ms is
        # documented as not slow.
        self._slow = None if slow is None else slow + SLOW_SLACK
        return config

    def __repr__(self) -> str:
        rate = self.config.failure_rate
        if rate is None:
            counts = f"failures={self._m.failures}/{self.config.failure_threshold}"
        else:
            calls, failures, _ = self.window or (0, 0, 0)
            counts = f"window={failures}/{calls} failure_rate={rate:g}"
        return f"<CircuitBreaker {self.name!r} {self._m.state.value} {counts}>"

    # -- reading (no side effects) ---------------------------------------

    def now(self) -> float:
        """The breaker's clock, in seconds."""
        clock = self._clock
        return clock() if clock is not None else _runtime.clock()

    @property
    def state(self) -> CircuitState:
        """The current state.  Reading never claims the probe: an elapsed cooldown reads OPEN."""
        return self._m.state

    @property
    def failure_count(self) -> int:
        """Failed attempts counted in CLOSED: consecutive ones, or for the failure-rate rule
        those in the window; after a trip, the failures that tripped it."""
        m = self._m
        window = self._window
        if window is not None and m.state is CircuitState.CLOSED:
            return window.totals(self.now())[1]
        return m.failures

    @property
    def window(self) -> WindowCounts | None:
        """The failure-rate rule's window now (None for the consecutive rule).  Empty
        while the breaker is not CLOSED: the window restarts when it closes."""
        window = self._window
        if window is None:
            return None
        return WindowCounts(*window.totals(self.now()))

    @property
    def reason(self) -> str:
        """Why the breaker is open or half-open (see :class:`~smoothapi.events.StateChanged`);
        "" while CLOSED (never opened, or closed again)."""
        return machine.reason(self._m)

    @property
    def retry_after(self) -> float:
        """Seconds until a probe is allowed: 0.0 when CLOSED or when the cooldown has elapsed."""
        m = self._m
        if m.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, m.open_until - self.now())

    # -- the protocol the engine speaks --------------------------------------

    def admit(self) -> tuple[int, float]:
        """Ask to make one attempt: ``(ticket, 0.0)``, or ``(REJECTED, retry_after)``.

        The ticket is even for an ordinary call in CLOSED, odd when this caller
        is the HALF_OPEN probe.  ``retry_after`` is the seconds until a probe
        is allowed (0.0 while another probe is in flight).
        """
        m = self._m
        if m.state is CircuitState.CLOSED:
            return (m.period, 0.0)
        with self._lock:
            old = self._m
            new, ticket, retry_after = machine.admit(old, self.now(), self._rules)
            self._swap(new)
        if new is not old:
            try:
                self._changed(old, new)
            except BaseException:  # a hook interrupted us (KeyboardInterrupt): free the probe
                self.release(ticket)
                raise
        return (ticket, retry_after)

    def acquire(self) -> int:
        """Ask to make one attempt: an even ticket for an ordinary call in CLOSED, an odd one
        when this caller is the HALF_OPEN probe, or :data:`REJECTED`.  (Reports with ticket
        ``0`` count as ordinary calls of the current CLOSED period.)"""
        m = self._m
        if m.state is CircuitState.CLOSED:
            return m.period
        return self.admit()[0]

    def check(self) -> int:
        """Like :meth:`acquire`, but raise :class:`CircuitOpenError` rather than return REJECTED."""
        ticket, retry_after = self.admit()
        if ticket == REJECTED:
            raise CircuitOpenError(self.name, retry_after)
        return ticket

    def record_success(self, ticket: int, elapsed: float | None = None) -> CircuitState:
        """The attempt holding ``ticket`` succeeded, or the service answered (a 404, say).

        ``elapsed`` is how long the attempt took, in seconds on this breaker's
        clock: over ``config.slow_call_ms`` the success counts as a failure for
        the breaker (a slow call).  Returns the state after the report (as do
        :meth:`record_failure` and :meth:`release`).
        """
        slow = self._slow
        if elapsed is not None and slow is not None and elapsed > slow:
            return self._fail(ticket, None, slow=True)
        if ticket and ticket == self.clean_ticket:
            if self._window is None:
                return CircuitState.CLOSED  # nothing to reset: no lock
            return self.settle(ticket)  # counted without a lock, unless its bucket rolls
        with self._lock:
            old = self._m
            new = machine.succeed(old, ticket, self.now(), self._rules, self._window)
            self._swap(new)
        return self._changed(old, new)

    def settle(self, ticket: int, began: float | None = None) -> CircuitState:
        """A happy-path success under ``ticket``, the clean ticket the mount point read;
        ``began``: when the attempt started, on this breaker's clock (for ``slow_call_ms``).

        :meth:`record_success` with the clock read and the window's count inlined:
        the happy path of a failure-rate or slow-call breaker makes this one call,
        and takes no lock unless the success changes something (it was slow, the
        ticket moved, or the window's bucket rolled).  A shared breaker overrides it
        (``smoothapi.storage._watch_view``).
        """
        now = (self._clock or _runtime.clock)()
        slow = self._slow
        if slow is not None and began is not None and now - began > slow:
            return self._fail(ticket, None, slow=True)
        window = self._window
        if window is None:
            if ticket == self.clean_ticket:
                return CircuitState.CLOSED
        else:
            epoch = _floor(now * BUCKETS / window.span)
            slot = epoch % BUCKETS
            # Nothing callable between the ticket's check and the increment, so no other
            # thread runs in between (a trip and a close there would let this success of
            # the period before into the new period's bucket).  Lock-free: see Window.
            if ticket == self.clean_ticket and window.epochs[slot] == epoch:
                window.ok[slot] += 1
                return CircuitState.CLOSED
        with self._lock:
            old = self._m
            new = machine.succeed(old, ticket, now, self._rules, self._window)
            self._swap(new)
        return self._changed(old, new)

    def record_failure(self, ticket: int, retry_after: float | None = None) -> CircuitState:
        """The attempt holding ``ticket`` failed (a retryable status or a transport error).

        ``retry_after`` is the server's requested wait in seconds, if the failure
        carried one: when this failure opens the breaker, it stays open at least
        that long (capped at ``config.max_cooldown``).
        """
        return self._fail(ticket, retry_after)

    def _fail(self, ticket: int, retry_after: float | None, *, slow: bool = False) -> CircuitState:
        with self._lock:
            old = self._m
            new = machine.fail(
                old, ticket, self.now(), self._rules, self._rand, retry_after, slow, self._window
            )
            self._swap(new)
        return self._changed(old, new)

    def release(self, ticket: int) -> CircuitState:
        """The attempt ended without a verdict (cancelled, interrupted, a bug): free the permit."""
        if ticket <= 0 or ticket % 2 == 0:
            return self._m.state  # only a probe holds anything to give back
        with self._lock:
            self._swap(machine.release(self._m, ticket))
            return self._m.state

    # The async protocol the async driver speaks.  In memory there is nothing to
    # await; a breaker whose state lives in a server (Redis) awaits its client here.

    async def admit_async(self) -> tuple[int, float]:
        """:meth:`admit` for the async driver."""
        return self.admit()

    async def acquire_async(self) -> int:
        """:meth:`acquire` for the async driver."""
        return self.acquire()

    async def record_success_async(self, ticket: int, elapsed: float | None = None) -> CircuitState:
        """:meth:`record_success` for the async driver."""
        return self.record_success(ticket, elapsed)

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

        An in-flight probe's report is ignored, and so is that of any call
        admitted before the reset.
        """
        with self._lock:
            old = self._m
            new = machine.reset(old, window=self._window)
            self._swap(new)
        self._changed(old, new, cause="reset")

    def force_open(self, cooldown_ms: float | None = None) -> None:
        """Open the breaker now, for ``cooldown_ms`` (default: the configured cooldown)."""
        if cooldown_ms is None:
            cooldown = self.config.cooldown
        else:
            CircuitBreakerConfig(cooldown_ms=cooldown_ms)  # validates the value
            cooldown = cooldown_ms / 1000.0
        with self._lock:
            old = self._m
            new = machine.force_open(old, self.now(), cooldown, window=self._window)
            self._swap(new)
        self._changed(old, new, cause="forced open")

    # -- internals ---------------------------------------------------------------

    def _swap(self, new: Machine) -> None:
        # With the lock held: the one place the state and the happy path's read change.
        self._m = new
        self.clean_ticket = new.clean

    def _changed(self, old: Machine, new: Machine, cause: str | None = None) -> CircuitState:
        """Send the transition from ``old`` to ``new``, if the state moved (lock released)."""
        state = new.state
        if old.state is not state:
            if (old.state, state) not in _MOVES:
                raise RuntimeError(
                    f"smoothapi bug: breaker {self.name!r} cannot go from {old.state.value} "
                    f"to {state.value}"
                )
            why = machine.reason(new) if state is CircuitState.OPEN else ""
            emit(
                StateChanged(self.name, old.state, state, new.failures, self.now(), why),
                self._hooks,
                cause=cause,
            )
        return state


_MOVES = frozenset((old, new) for (old, _event), new in machine.TRANSITIONS.items())


def _shared_class() -> type[CircuitBreaker]:
    """The class of a breaker whose state lives in a store, registered from above.

    The stores sit above the breaker in the layers, so the breaker never
    imports them: the package (``smoothapi/__init__.py``, on top of every
    layer and always imported first) registers this at import.
    """
    find = _runtime.shared_breaker_class
    if find is None:  # cannot happen: importing smoothapi.breaker runs the package first
        raise ConfigError("a breaker store was given, but smoothapi.storage is not set up")
    found: type[CircuitBreaker] = find()
    return found
