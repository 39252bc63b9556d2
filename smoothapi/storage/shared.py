"""A circuit breaker whose state lives in a store the whole fleet shares.

Theory of operation
-------------------
:class:`SharedCircuitBreaker` is the in-memory
:class:`~smoothapi.breaker.CircuitBreaker` over another store: the same
protocol (``admit`` / ``acquire`` / ``record_*`` / ``release`` and their
``*_async`` twins) and the same rules (:mod:`smoothapi.machine`), but every
decision is one atomic call on a :class:`BreakerStore` - for
:class:`~smoothapi.RedisStore`, one Lua script run on the server, on the
server's clock, proven equal to the rules by a differential test.  So every process that
builds a breaker with the same name and store trips, rejects and probes as
one breaker: one probe for the fleet in HALF_OPEN, as a lease tagged with a
generation (the probe's ticket) that expires by itself if its prober dies.

Tickets
    An even ticket is an ordinary call, numbered by the CLOSED period it was
    admitted in (``0``, or :data:`CLEAN`, reads as the current period); an odd
    one is the probe's generation in the store.  As in memory, a report from
    an earlier period or an earlier probe changes nothing.

Reporting a success
    A success is reported only when this process knows of a failure
    counted for the breaker: every reply from the store (an ``acquire``, a
    report, a read) says how many failures it holds, and the process keeps
    the last figure per breaker.  While it is 0 a success costs nothing; once
    a failure is counted, the next success reports and resets the count
    fleet-wide, as it would in memory.  The one thing no process can see
    without asking is a failure another process counted while its own call
    ran: a success that ends after it, from a call admitted at count 0 by a
    process that heard of no failure since, does not reset it.

Never worse than no store
    Any exception from the store but a :class:`~smoothapi.errors.ConfigError`
    (redis-py's own errors, ``OSError``, a cluster client's
    ``RedisClusterException``, an ``AttributeError`` from a server that
    answered the handshake with nonsense...) is caught here.  The store is then
    *down*: for ``store.retry_interval`` seconds no store call is attempted
    at all and the breaker runs on a private in-memory breaker (same config,
    same name); after that, one caller tries the store again.  One WARNING
    on the ``smoothapi`` logger and one
    :class:`~smoothapi.events.StoreUnavailable` event per outage, one INFO
    and one :class:`~smoothapi.events.StoreRecovered` when the store answers
    again.  Tickets handed out by the local breaker are encoded as
    ``-100 - local_ticket`` so that their reports always go back to it, even
    if the store is back by then.

No round trip while healthy (push)
    With a store that publishes its state changes (``RedisStore``), a breaker
    that last heard CLOSED and clean hands out ``clean_ticket`` while this
    process's watcher listens, and answers ``admit`` from it: see
    :mod:`smoothapi.storage._watch_view`.

One flow per operation
    Each operation (admit, a report, reset, force_open, a read) is written
    once, as a short generator that yields the store calls it needs and is
    sent their replies (None while the store is down); ``_run`` drives it
    with the sync client, ``_run_async`` with the async one.

Trip rules
    With a store that sets ``trip_rules = True`` (``RedisStore`` does), the
    failure-rate window, slow calls (reported as op ``"slow"``) and
    ``half_open_calls`` probes run in the store, for the whole fleet, as
    :mod:`smoothapi.machine` runs them in memory; a config that uses them with
    another store is refused when the breaker is built.  With the rate rule a
    success of an ordinary CLOSED call costs no round trip of its own either:
    it is added to a local count (under a short lock, so none is lost) that
    rides on this process's next store call for the breaker (an ``acquire``,
    a report or a read), which adds it to the window atomically.  So a
    success is counted at the store's time of that next call - within one
    call of this process - and the successes of a process that never calls
    again are never counted (at most its calls in flight); a batch whose
    store call failed is dropped (it may have been counted).  A forked child
    starts from none.  ``reason`` and ``window`` read the store, as ``state``
    does; StateChanged events carry the reason of an opening.

Adaptive open time
    With a store that sets ``adaptive = True`` (``RedisStore`` does), the
    shared state's open time follows the memory breaker's rule -
    ``cooldown_multiplier``, ``max_cooldown_ms``, ``cooldown_reset_ms`` and
    ``record_failure``'s ``retry_after`` hold - with the growth level kept in
    the store, so the whole fleet backs off together.  Each opening's jitter
    is drawn by the process whose failure opened it.  Other stores open for
    the plain ``cooldown_ms``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from .._runtime import at_fork_child
from ..breaker import _LIVE, REJECTED, CircuitBreaker, CircuitState, WindowCounts
from ..config import MAX_DELAY_SECONDS, CircuitBreakerConfig, check_store
from ..errors import ConfigError
from ..events import Hook, StateChanged, emit
from . import _watch, outage
from ._shared_drivers import Flow, FlowDriver, _Ask
from ._shared_trip import EMPTY, Batcher, reason_of, rules_for, trip_of
from ._shared_trip import check_open_time as _check_open_time
from ._shared_trip import millis as _millis
from ._watch_view import LocalView
from .protocol import (
    Admission,
    BreakerStore,
    Op,
    Opening,
    Report,
    Snapshot,
    Trip,
)

__all__ = ["CLEAN", "SharedCircuitBreaker"]

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN

#: An ordinary call of the current CLOSED period (what ``acquire`` handed out before
#: tickets carried their period; still accepted by the reports).
CLEAN = -2
# Tickets from the local fallback breaker: -100 - local ticket (so local 0 is -100).
_LOCAL = -100

T = TypeVar("T")


@at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child (see _runtime).
    for breaker in list(_LIVE):
        if isinstance(breaker, SharedCircuitBreaker):  # its local one is not in _LIVE
            breaker._local._lock = threading.Lock()
            breaker._health.lock = threading.Lock()
            breaker._batch.after_fork()
            # The watcher's thread did not survive the fork: ask until a new one listens.
            breaker.clean_ticket = 0
            breaker._fresh_until = 0.0
            breaker._watcher = None


class SharedCircuitBreaker(LocalView, FlowDriver, CircuitBreaker):
    """A :class:`~smoothapi.CircuitBreaker` whose state lives in a :class:`BreakerStore`.

    Built by ``CircuitBreaker(config, name=..., store=store)`` or by any
    breaker built from a ``CircuitBreakerConfig(store=store)`` (the
    decorator's private breakers, the transports' per-origin breakers).
    Every process using the same store and ``name`` shares one breaker.

    ``state``, ``failure_count`` and ``retry_after`` read the store (one
    round trip, no side effect).  With a store that has no sync client
    (an async-only :class:`~smoothapi.RedisStore`) they answer from the
    last reply this breaker saw; :meth:`snapshot_async` reads the store.
    ``reset()`` and ``force_open()`` act on the shared state, or on the
    local fallback breaker while the store is unreachable.

    ``clock`` (as for the memory breaker) dates events and drives the local
    fallback breaker; the shared state runs on the store's clock.  ``rand``
    draws the jitter of the adaptive open time, for the store (one that sets
    ``adaptive = True``) and for the local fallback breaker; a store that
    does not grow the open time opens for the plain ``cooldown_ms`` and
    ignores ``record_failure``'s ``retry_after`` (see the module docstring).
    """

    __slots__ = (
        "_adaptive",
        "_batch",
        "_cooldown_ms",
        "_flush_after",
        "_fresh",
        "_fresh_until",
        "_health",
        "_heard",
        "_key",
        "_last",
        "_local",
        "_malformed",
        "_max_cooldown_ms",
        "_rate",
        "_reset_ms",
        "_seen_key",
        "_store_rules",
        "_threshold",
        "_watcher",
        "store",
    )

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
        if store is None:
            store = config.store
            if store is None:
                raise ConfigError(
                    "SharedCircuitBreaker needs a store: pass store=RedisStore(...) or "
                    "set CircuitBreakerConfig(store=...)"
                )
        else:
            check_store("CircuitBreaker(store=...)", store)
        # A config whose trip rules the store cannot apply is refused here.
        self._store_rules = rules_for(config, store)
        self.store: BreakerStore = store
        # Non-zero only while the store's watcher vouches for it (module docstring).
        self.clean_ticket = 0
        self._watcher: _watch.Watcher | _watch._NoWatch | None = None  # on first admit
        # The bounded-staleness fallback: the last clean period, trusted until then.
        self._fresh = 0
        self._fresh_until = 0.0
        self._threshold = config.failure_threshold
        self._cooldown_ms = math.ceil(config.cooldown_ms)
        self._key = store.key(name)
        self._seen_key = (str(store.label), self._key)
        self._health = outage.health_of(store)
        # Where the calls go while the store cannot answer: the same rules in memory.
        self._local = CircuitBreaker(
            replace(config, store=None), name=name, clock=clock, hooks=self._hooks, rand=rand
        )
        _LIVE.discard(self._local)  # an implementation detail of this breaker, not a breaker
        self._adaptive = getattr(store, "adaptive", False) is True
        self._max_cooldown_ms = _millis(config.max_cooldown)
        self._reset_ms = _millis(config.cooldown_reset)
        _check_open_time(store, "CircuitBreakerConfig.cooldown_ms", config.cooldown_ms)
        if self._adaptive:
            _check_open_time(
                store, "CircuitBreakerConfig.max_cooldown_ms", config.max_cooldown * 1000
            )
        self._malformed = False  # its entry in the store held nonsense (warned once)
        # The last state this breaker heard from the store: (state, failures, open
        # until on the local monotonic clock).  Answers the reports that need no round
        # trip, and the sync reads of a store that has only an async client.
        self._last: tuple[CircuitState, int, float] = (CLOSED, 0, 0.0)
        # The rate rule batches the successes of ordinary calls (see the module docstring).
        self._rate = config.failure_rate is not None
        self._batch = Batcher()
        self._flush_after = config.window_ms / 10_000.0  # one bucket, in seconds
        # The last opening and window the store reported (for the sync reads of a store
        # that has only an async client).
        self._heard: tuple[Trip | None, WindowCounts | None] = (
            None,
            EMPTY if self._rate else None,
        )
        _LIVE.add(self)

    def __repr__(self) -> str:
        return (
            f"<SharedCircuitBreaker {self.name!r} store={self.store.label} "
            f"threshold={self._threshold} cooldown_ms={self.config.cooldown_ms:g}>"
        )

    # -- reading (no side effects) ---------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The shared state (read from the store; the local one while the store is down)."""
        return self.snapshot().state

    @property
    def failure_count(self) -> int:
        """Consecutive failed attempts counted in CLOSED, fleet-wide."""
        return self.snapshot().failures

    @property
    def retry_after(self) -> float:
        """Seconds until a probe is allowed: 0.0 when CLOSED, HALF_OPEN or cooled down."""
        return self.snapshot().retry_after

    @property
    def window(self) -> WindowCounts | None:
        """The failure-rate rule's window now, fleet-wide (None for the consecutive rule);
        one read of the store, which also sends this process's batched successes."""
        return self.snapshot().window if self._rate else None

    @property
    def reason(self) -> str:
        """Why the breaker is open or half-open, fleet-wide (see
        :class:`~smoothapi.events.StateChanged`); "" while CLOSED (one read)."""
        trip = self.snapshot().trip
        return "" if trip is None else reason_of(trip, CLOSED, None)

    def snapshot(self) -> Snapshot:
        """State, failure count and retry_after (and the last opening and the window) in one
        read (one round trip).

        With a store that has no sync client (an async-only ``RedisStore``),
        the last reply this breaker saw; :meth:`snapshot_async` reads the store.
        """
        if self.store.supports_sync:
            return self._run(self._snapshot_flow())
        if self._health.down_since is not None:
            return self._local_snapshot()
        state, failures, open_until = self._last
        retry = max(0.0, open_until - time.monotonic()) if state is OPEN else 0.0
        return Snapshot(state, failures, retry, *self._heard)

    async def snapshot_async(self) -> Snapshot:
        """:meth:`snapshot` for async code (reads the store with the async client)."""
        return await self._run_async(self._snapshot_flow())

    # -- the protocol the engine speaks: each operation once, as a flow ---------------

    def admit(self) -> tuple[int, float]:
        """Ask to make one attempt: ``(ticket, 0.0)`` or ``(REJECTED, retry_after)``, from
        the store's one reply."""
        return self._run(self._admit_flow())

    async def admit_async(self) -> tuple[int, float]:
        """:meth:`admit` for the async driver (cancellation never strands a probe)."""
        return await self._run_async(self._admit_flow())

    def acquire(self) -> int:
        """Ask to make one attempt: an even ticket, a probe's (odd), or ``REJECTED``."""
        return self.admit()[0]

    async def acquire_async(self) -> int:
        """:meth:`acquire` for the async driver."""
        return (await self.admit_async())[0]

    def record_success(self, ticket: int, elapsed: float | None = None) -> CircuitState:
        """The attempt holding ``ticket`` succeeded (``elapsed`` seconds: over
        ``slow_call_ms`` it is a slow call, a failure for the breaker); returns the state
        after the report."""
        return self._run(self._record_flow(self._success_op(elapsed), ticket))

    async def record_success_async(self, ticket: int, elapsed: float | None = None) -> CircuitState:
        """:meth:`record_success` for the async driver."""
        return await self._run_async(self._record_flow(self._success_op(elapsed), ticket))

    def _success_op(self, elapsed: float | None) -> Op:
        slow = self._slow
        return "slow" if elapsed is not None and slow is not None and elapsed > slow else "success"

    def record_failure(self, ticket: int, retry_after: float | None = None) -> CircuitState:
        """The attempt holding ``ticket`` failed; returns the state after the report.

        ``retry_after`` (the server's requested wait) holds an opening open at
        least that long with an adaptive store, and the local fallback breaker.
        """
        return self._run(self._record_flow("failure", ticket, retry_after))

    async def record_failure_async(
        self, ticket: int, retry_after: float | None = None
    ) -> CircuitState:
        """:meth:`record_failure` for the async driver."""
        return await self._run_async(self._record_flow("failure", ticket, retry_after))

    def release(self, ticket: int) -> CircuitState:
        """The attempt ended without a verdict: give back the probe permit it may hold."""
        return self._run(self._record_flow("release", ticket))

    async def release_async(self, ticket: int) -> CircuitState:
        """:meth:`release` for the async driver; completes even while the caller is cancelled."""
        return await self._run_async(self._record_flow("release", ticket))

    def add_hook(self, hook: Hook, *, owner: object = None) -> None:
        """Also send this breaker's events (and its local fallback's) to ``hook``."""
        super().add_hook(hook, owner=owner)
        self._local.add_hook(hook, owner=owner)

    # -- manual control --------------------------------------------------------------

    def reset(self) -> None:
        """Close the breaker for the whole fleet and forget every failure."""
        self._run(self._reset_flow())

    async def reset_async(self) -> None:
        """:meth:`reset` for async code (and for a store with only an async client)."""
        await self._run_async(self._reset_flow())

    def force_open(self, cooldown_ms: float | None = None) -> None:
        """Open the breaker fleet-wide for ``cooldown_ms`` (default: the configured cooldown)."""
        self._run(self._force_open_flow(cooldown_ms))

    async def force_open_async(self, cooldown_ms: float | None = None) -> None:
        """:meth:`force_open` for async code (and for a store with only an async client)."""
        await self._run_async(self._force_open_flow(cooldown_ms))

    # -- the flows ---------------------------------------------------------------------

    def _admit_flow(self) -> Flow[tuple[int, float]]:
        clean = self.clean_ticket
        if clean:  # the watcher vouches that nothing changed since the store said clean
            return (clean, 0.0)
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = _watch.watch(self.store)
            watcher.add(self)
        if self._fresh_until and time.monotonic() < self._fresh_until:
            return (self._fresh, 0.0)  # the push channel is down: the fallback's bound
        seq = watcher.seq
        admission = yield _Ask("acquire", (self._key, self._threshold, self._cooldown_ms))
        if admission is None:  # the store is down: the local breaker decides
            self._unclean()
            ticket, retry_after = self._local.admit()
            return (REJECTED if ticket == REJECTED else _LOCAL - ticket, retry_after)
        ticket, retry_after, failures, state, changed = admission[:5]
        outage.count(self._seen_key, failures)
        counted = self._hear(admission, state, failures)
        if ticket >= 0 and ticket % 2 == 0:
            self._last = (CLOSED, counted, 0.0)
            if self._rate or not counted:
                self._learn(ticket, watcher, seq)
            else:
                self._unclean()
            return (ticket, 0.0)
        self._unclean()
        self._last = (state, counted, time.monotonic() + retry_after)
        if ticket < 0:
            return (REJECTED, retry_after)
        if changed:  # this call moved OPEN -> HALF_OPEN: it tells the hooks
            try:
                emit(StateChanged(self.name, OPEN, HALF_OPEN, failures, self.now()), self._hooks)
            except BaseException:  # a hook interrupted the claim: give the lease back now
                yield from self._record_flow("release", ticket)
                raise
        return (ticket, 0.0)

    def _record_flow(
        self, op: Op, ticket: int, retry_after: float | None = None
    ) -> Flow[CircuitState]:
        if ticket <= _LOCAL:  # handed out by the local breaker: reported to it
            return self._local_report(op, _LOCAL - ticket, retry_after)
        if ticket == CLEAN:
            ticket = 0
        elif ticket < 0:
            return self._last[0]  # rejected: nothing held
        if op == "release" and (ticket == 0 or ticket % 2 == 0):
            return self._last[0]  # only a probe holds anything to give back
        if op == "success" and ticket % 2 == 0:
            if self._rate:
                if ticket:  # sent with this process's next store call (module docstring)
                    self._count(ticket)
                    return self._last[0]
            elif not outage.counted(self._seen_key):
                return self._last[0]  # no failure counted as far as this process knows
        report = yield _Ask(
            "record", (self._key, op, ticket), self._record_options(op, retry_after)
        )
        if report is None:
            self._unclean()
            # The store failed under a call it admitted: count the verdict locally as an
            # ordinary call.  A shared probe's lease runs out on the server by itself.
            return self._local_report(op, 0, retry_after) if op != "release" else self._local.state
        if op != "success":
            # The next call asks: a failure under a period the store no longer holds (its
            # key expired or was flushed) is ignored, and only a new acquire learns that.
            self._unclean()
        return self._report(report)

    def _reset_flow(self) -> Flow[None]:
        report = yield _Ask("reset", (self._key, self.name))
        if report is None:
            self._local.reset()
        else:
            self._report(report, "reset")

    def _force_open_flow(self, cooldown_ms: float | None) -> Flow[None]:
        if cooldown_ms is None:
            open_ms = self._cooldown_ms
        else:
            CircuitBreakerConfig(cooldown_ms=cooldown_ms)  # validates the value
            _check_open_time(self.store, "force_open(cooldown_ms)", cooldown_ms)
            open_ms = math.ceil(cooldown_ms)
        report = yield _Ask("force_open", (self._key, open_ms, self.name))
        if report is None:
            self._local.force_open(cooldown_ms)
        else:
            self._report(report, "forced open")

    def _snapshot_flow(self) -> Flow[Snapshot]:
        snap: Snapshot | None = yield _Ask("snapshot", (self._key,))
        if snap is None:
            self._unclean()
            return self._local_snapshot()
        state, failures = snap.state, snap.failures
        if state is not CLOSED or (failures and not self._rate):
            self._unclean()
        trip, window = getattr(snap, "trip", None), getattr(snap, "window", None)
        if self._rate and window is None:  # a store that keeps no window
            window = EMPTY
        outage.count(self._seen_key, trip.failures if trip is not None else failures)
        self._heard = (trip, window)
        self._last = (state, failures, time.monotonic() + snap.retry_after)
        return Snapshot(state, failures, snap.retry_after, trip, window)

    def _local_snapshot(self) -> Snapshot:
        local = self._local
        return Snapshot(
            local.state,
            local.failure_count,
            local.retry_after,
            trip_of(local._m),
            local.window,
        )

    def _hear(self, reply: Admission | Report, state: CircuitState, failures: int) -> int:
        """Keep a reply's last opening and window; returns the failure count to remember
        (for the rate rule in CLOSED, the window's)."""
        trip, window = getattr(reply, "trip", None), getattr(reply, "window", None)
        if self._rate and window is None:
            window = EMPTY  # reset, force_open, or a store that keeps no window
        self._heard = (trip, window)
        if window is not None and state is CLOSED:
            return int(window.failures)
        return failures

    def _local_report(self, op: Op, ticket: int, retry_after: float | None) -> CircuitState:
        local = self._local
        if op == "success":
            return local.record_success(ticket)
        if op == "failure":
            return local.record_failure(ticket, retry_after)
        if op == "slow":
            return local._fail(ticket, None, slow=True)
        return local.release(ticket)

    def _report(self, report: Report, cause: str | None = None) -> CircuitState:
        state, old, failures = report[:3]
        outage.count(self._seen_key, failures)
        counted = self._hear(report, state, failures)
        if cause is not None or state is not CLOSED or (counted and not self._rate):
            self._unclean()  # at once: this process does not wait for its own message
        if state is OPEN and old is not OPEN:
            self._last = (state, counted, time.monotonic() + self._cooldown_ms / 1000.0)
        elif state is not OPEN:
            self._last = (state, counted, 0.0)
        if old is not state:
            why = reason_of(self._heard[0], old, cause) if state is OPEN else ""
            event = StateChanged(self.name, old, state, failures, self.now(), why)
            emit(event, self._hooks, cause=cause)
        return state

    def _record_options(self, op: Op, retry_after: float | None) -> dict[str, Any]:
        """The keywords of ``store.record``: ``opening=`` only for a failure reported to
        an adaptive store (another store keeps the protocol it was written for)."""
        options: dict[str, Any] = {
            "threshold": self._threshold,
            "cooldown_ms": self._cooldown_ms,
            "name": self.name,
        }
        if op not in ("failure", "slow") or not self._adaptive:
            return options
        wanted = None
        if retry_after is not None and not math.isnan(retry_after):
            wanted = math.ceil(min(retry_after, MAX_DELAY_SECONDS) * 1000)
        draw = self._rand()
        share = 0.0 if math.isnan(draw) else min(1.0, max(0.0, draw))
        options["opening"] = Opening(
            self.config.cooldown_multiplier, self._max_cooldown_ms, self._reset_ms, share, wanted
        )
        return options
