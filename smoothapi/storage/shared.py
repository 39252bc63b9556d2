"""A circuit breaker whose state lives in a store the whole fleet shares.

Theory of operation
-------------------
:class:`SharedCircuitBreaker` speaks the same protocol as the in-memory
:class:`~smoothapi.breaker.CircuitBreaker` (``acquire`` / ``record_*`` /
``release`` and their ``*_async`` twins), but every decision is one atomic
call on a :class:`BreakerStore` - for :class:`~smoothapi.RedisStore`, one Lua
script run on the server, on the server's clock.  So every process that
builds a breaker with the same name and store trips, rejects and probes as
one breaker: one probe for the fleet in HALF_OPEN, as a lease tagged with a
generation (the probe's ticket) that expires by itself if its prober dies.

Tickets
    An even ticket is an ordinary call, numbered by the CLOSED period it was
    admitted in (``0``, or :data:`CLEAN`, reads as the current period); an odd
    one is the probe's generation in the store.  As in memory, a report from
    an earlier period or an earlier probe changes nothing.

One round trip for a healthy call
    A success is reported only when this process knows of a failure
    counted for the breaker: every reply from the store (an ``acquire``, a
    report, a read) says how many failures it holds, and the process keeps
    the last figure per breaker.  While it is 0 a success costs nothing
    beyond the ``acquire``; once a failure is counted, the next success
    reports and resets the count fleet-wide, as it would in memory.  The one
    thing no process can see without asking is a failure another process
    counted while its own call ran: a success that ends after it, from a call
    admitted at count 0 by a process that heard of no failure since, does not
    reset it.

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

A shared breaker's ``clean_ticket`` is always 0 (the store decides every call), so
mount points hand every call to the engine, which calls ``acquire``.

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

import functools
import math
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from .._runtime import at_fork_child
from .._runtime import running_trio as _running_trio
from ..breaker import _LIVE, REJECTED, CircuitBreaker, CircuitState
from ..config import MAX_DELAY_SECONDS, CircuitBreakerConfig, check_store
from ..errors import ConfigError
from ..events import Hook, StateChanged, StoreRecovered, StoreUnavailable, emit
from ..events import logger as smoothapi_logger
from .protocol import (
    Admission,
    BreakerStatus,
    BreakerStore,
    MalformedBreaker,
    MalformedState,
    Op,
    Opening,
    Report,
    Snapshot,
    Survey,
)

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "CLEAN",
    "Admission",
    "BreakerStatus",
    "BreakerStore",
    "MalformedBreaker",
    "Op",
    "Opening",
    "Report",
    "SharedCircuitBreaker",
    "Snapshot",
    "Survey",
]

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN

#: An ordinary call of the current CLOSED period (what ``acquire`` handed out before
#: tickets carried their period; still accepted by the reports).
CLEAN = -2
# Tickets from the local fallback breaker: -100 - local ticket (so local 0 is -100).
_LOCAL = -100
# How long a rejection's retry_after stays good for the engine's read right after acquire().
_REJECTION_FRESH = 0.1

_log = smoothapi_logger()  # the library's logger, with its NullHandler

T = TypeVar("T")


# -- outage bookkeeping, one per store ---------------------------------------------------


class _Health:
    """Whether a store is down, shared by every breaker that uses the store."""

    __slots__ = ("__weakref__", "down_since", "lock", "retry_at")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_since: float | None = None
        self.retry_at = 0.0

    def mark_down(self, interval: float) -> bool:
        """Record an error; True when it starts an outage."""
        now = time.monotonic()
        with self.lock:
            first = self.down_since is None
            if first:
                self.down_since = now
            self.retry_at = now + interval
        return first

    def mark_up(self) -> float | None:
        """Record an answer; the seconds the store was down if this ends an outage."""
        with self.lock:
            since = self.down_since
            self.down_since = None
        return None if since is None else time.monotonic() - since

    def claim_retry(self, interval: float) -> bool:
        # Only one caller per interval tries a store that was down: a dead
        # store then costs one timeout per interval, not one per call.
        now = time.monotonic()
        with self.lock:
            if self.down_since is None:
                return True
            if now < self.retry_at:
                return False
            self.retry_at = now + interval
            return True


_healths: weakref.WeakKeyDictionary[Any, _Health] = weakref.WeakKeyDictionary()

# The failure count each shared breaker last reported to this process, by (store label,
# key), for the breakers whose count was not 0: whether a success must be reported.
# Bounded, least recently used first out: every acquire and report of a breaker with a
# count moves it to the end, so beyond _COUNTED_MAX only breakers no call has touched
# while _COUNTED_MAX others counted failures are forgotten (abandoned breakers must not
# pile up).  A forgotten breaker is learnt again at its next acquire; only a call admitted
# before it was forgotten skips its success's reset report.
_counted: dict[tuple[str, str], int] = {}
_COUNTED_MAX = 10_000
_healths_lock = threading.Lock()


@at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child (see _runtime).
    global _healths_lock
    _healths_lock = threading.Lock()
    for health in list(_healths.values()):
        health.lock = threading.Lock()
    for breaker in list(_LIVE):
        if isinstance(breaker, SharedCircuitBreaker):  # its local one is not in _LIVE
            breaker._local._lock = threading.Lock()
            breaker._health.lock = threading.Lock()


def _health_of(store: object) -> _Health:
    with _healths_lock:
        try:
            health = _healths.get(store)
            if health is None:
                health = _healths[store] = _Health()
        except TypeError:  # unhashable or not weak-referenceable: one record per breaker
            return _Health()
        return health


# -- cancellation-safe awaiting --------------------------------------------------------

# Background releases of probes whose acquirer was cancelled; kept so they are not collected.
_background: set[asyncio.Future[Any]] = set()


def _is_probe(ticket: int) -> bool:
    """A store's probe ticket (odd and positive); local and rejected ones are negative."""
    return ticket > 0 and ticket % 2 == 1


async def _shielded(
    make: Callable[[], Awaitable[T]], orphan: Callable[[T], object] | None = None
) -> T:
    """Await ``make()`` so that cancelling the caller cannot cut the store call in half.

    A store call cut in half may have changed state on the server (claimed
    the probe, say) without anyone hearing about it, and leaves the client's
    connection unusable.  Under trio the call is shielded and finishes (it is
    bounded by the client's socket timeout); under asyncio it runs on as a
    task, and ``orphan`` receives its result if the caller was cancelled.
    """
    if _running_trio():
        import trio  # noqa: PLC0415 - only under trio

        with trio.CancelScope(shield=True):
            return await make()
    import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

    task = asyncio.ensure_future(make())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(functools.partial(_settle_orphan, orphan))
        raise


def _settle_orphan(orphan: Callable[[Any], object] | None, task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        _log.debug("a store call outlived its cancelled caller and failed: %r", error)
    elif orphan is not None:
        orphan(task.result())


class SharedCircuitBreaker(CircuitBreaker):
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
        "_cooldown_ms",
        "_health",
        "_key",
        "_last",
        "_local",
        "_malformed",
        "_max_cooldown_ms",
        "_rejection",
        "_reset_ms",
        "_seen_key",
        "_threshold",
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
        self.store: BreakerStore = store
        # Every call goes through the engine, which asks the store.
        self.clean_ticket = 0
        self._threshold = config.failure_threshold
        self._cooldown_ms = math.ceil(config.cooldown_ms)
        self._key = store.key(name)
        self._seen_key = (str(store.label), self._key)
        self._health = _health_of(store)
        self._local = CircuitBreaker(
            replace(config, store=None), name=name, clock=clock, hooks=self._hooks, rand=rand
        )
        self._adaptive = getattr(store, "adaptive", False) is True
        self._max_cooldown_ms = math.ceil(config.max_cooldown * 1000)
        self._reset_ms = math.ceil(config.cooldown_reset * 1000)
        _check_open_time(store, "CircuitBreakerConfig.cooldown_ms", config.cooldown_ms)
        if self._adaptive:
            _check_open_time(
                store, "CircuitBreakerConfig.max_cooldown_ms", config.max_cooldown * 1000
            )
        _LIVE.discard(self._local)  # an implementation detail of this breaker, not a breaker
        self._rejection = threading.local()
        self._malformed = False  # its entry in the store held nonsense (warned once)
        # The last state this breaker heard from the store: (state, failures, open
        # until on the local monotonic clock).  Answers the reports that need no round
        # trip, and the sync reads of a store that has only an async client.
        self._last: tuple[CircuitState, int, float] = (CLOSED, 0, 0.0)
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
        snap = self._read()
        return self._local.state if snap is None else snap.state

    @property
    def failure_count(self) -> int:
        """Consecutive failed attempts counted in CLOSED, fleet-wide."""
        snap = self._read()
        return self._local.failure_count if snap is None else snap.failures

    @property
    def retry_after(self) -> float:
        """Seconds until a probe is allowed: 0.0 when CLOSED, HALF_OPEN or cooled down."""
        seen: tuple[float, float] | None = getattr(self._rejection, "seen", None)
        if seen is not None:
            # The engine reads this right after a rejected acquire(), whose reply
            # carried it: answering from that saves a second round trip per rejection.
            self._rejection.seen = None
            elapsed = time.monotonic() - seen[0]
            if elapsed < _REJECTION_FRESH:
                return max(0.0, seen[1] - elapsed)
        snap = self._read()
        return self._local.retry_after if snap is None else snap.retry_after

    def snapshot(self) -> Snapshot:
        """State, failure count and retry_after in one read (one round trip)."""
        snap = self._read()
        if snap is None:
            local = self._local
            return Snapshot(local.state, local.failure_count, local.retry_after)
        return snap

    async def snapshot_async(self) -> Snapshot:
        """:meth:`snapshot` for async code (reads the store with the async client)."""
        if self._may_call():
            try:
                snap = await self.store.snapshot_async(self._key)
            except Exception as exc:
                self._store_failed(exc)
            else:
                self._store_ok()
                return self._seen_snapshot(snap)
        local = self._local
        return Snapshot(local.state, local.failure_count, local.retry_after)

    def _read(self) -> Snapshot | None:
        if not self.store.supports_sync:
            if self._health.down_since is not None:
                return None
            state, failures, open_until = self._last
            retry = max(0.0, open_until - time.monotonic()) if state is OPEN else 0.0
            return Snapshot(state, failures, retry)
        snap = self._call(self.store.snapshot, self._key)
        return None if snap is None else self._seen_snapshot(snap)

    # -- the protocol the engine speaks ----------------------------------------------

    def acquire(self) -> int:
        """Ask to make one attempt: 0 or :data:`CLEAN`, a probe ticket, or ``REJECTED``."""
        admission = self._call(self.store.acquire, self._key, self._threshold, self._cooldown_ms)
        if admission is None:
            return self._local_acquire()
        try:
            return self._admit(admission)
        except BaseException:  # a hook interrupted the probe's claim (KeyboardInterrupt)
            if _is_probe(admission[0]):
                self.release(admission[0])  # give it back now, not when the lease runs out
            raise

    def admit(self) -> tuple[int, float]:
        """:meth:`acquire`, with the seconds until a probe is allowed when rejected (from
        the store's one reply: no second round trip)."""
        ticket = self.acquire()
        return (ticket, self._rejected_for() if ticket == REJECTED else 0.0)

    async def admit_async(self) -> tuple[int, float]:
        """:meth:`admit` for the async driver."""
        ticket = await self.acquire_async()
        return (ticket, self._rejected_for() if ticket == REJECTED else 0.0)

    def _rejected_for(self) -> float:
        seen: tuple[float, float] | None = getattr(self._rejection, "seen", None)
        self._rejection.seen = None
        if seen is not None:
            return max(0.0, seen[1] - (time.monotonic() - seen[0]))
        return self._local.retry_after  # rejected by the local fallback breaker

    def record_success(self, ticket: int) -> CircuitState:
        """The attempt holding ``ticket`` succeeded; returns the state after the report."""
        if ticket <= _LOCAL:
            return self._local.record_success(_LOCAL - ticket)
        if ticket == CLEAN:
            ticket = 0
        elif ticket < 0:
            return self._last[0]
        if ticket % 2 == 0 and self._seen_key not in _counted:
            return CLOSED  # no failure counted as far as this process knows: no round trip
        return self._record("success", ticket)

    def record_failure(self, ticket: int, retry_after: float | None = None) -> CircuitState:
        """The attempt holding ``ticket`` failed; returns the state after the report.

        ``retry_after`` (the server's requested wait) holds the local fallback
        breaker open; the store ignores it.
        """
        if ticket <= _LOCAL:
            return self._local.record_failure(_LOCAL - ticket, retry_after)
        if ticket == CLEAN:
            ticket = 0
        elif ticket < 0:
            return self._last[0]
        return self._record("failure", ticket, retry_after)

    def release(self, ticket: int) -> CircuitState:
        """The attempt ended without a verdict: give back the probe permit it may hold."""
        if ticket <= _LOCAL:
            return self._local.release(_LOCAL - ticket)
        if ticket <= 0 or ticket % 2 == 0:
            return self._last[0]  # only a probe holds anything to give back
        return self._record("release", ticket)

    async def acquire_async(self) -> int:
        """:meth:`acquire` for the async driver (cancellation never strands a probe)."""
        if not self._may_call():
            return self._local_acquire()
        return await _shielded(self._acquire_remote_async, self._orphaned_ticket)

    async def record_success_async(self, ticket: int) -> CircuitState:
        """:meth:`record_success` for the async driver."""
        if ticket == CLEAN:
            ticket = 0
        elif ticket < 0:
            return self.record_success(ticket)  # local or rejected: no store call
        if ticket % 2 == 0 and self._seen_key not in _counted:
            return CLOSED  # no failure counted as far as this process knows: no round trip
        return await self._record_async("success", ticket)

    async def record_failure_async(
        self, ticket: int, retry_after: float | None = None
    ) -> CircuitState:
        """:meth:`record_failure` for the async driver."""
        if ticket <= _LOCAL or (ticket < 0 and ticket != CLEAN):
            return self.record_failure(ticket, retry_after)  # local or rejected: no store call
        return await self._record_async("failure", 0 if ticket == CLEAN else ticket, retry_after)

    async def release_async(self, ticket: int) -> CircuitState:
        """:meth:`release` for the async driver; completes even while the caller is cancelled."""
        if ticket <= 0 or ticket % 2 == 0:
            return self.release(ticket)  # only a probe holds anything to give back
        return await self._record_async("release", ticket)

    def add_hook(self, hook: Hook, *, owner: object = None) -> None:
        """Also send this breaker's events (and its local fallback's) to ``hook``."""
        super().add_hook(hook, owner=owner)
        self._local.add_hook(hook, owner=owner)

    # -- manual control --------------------------------------------------------------

    def reset(self) -> None:
        """Close the breaker for the whole fleet and forget every failure."""
        self._rejection.seen = None
        report = self._call(self.store.reset, self._key, self.name)
        if report is None:
            self._local.reset()
        else:
            self._report(report, "reset")

    def force_open(self, cooldown_ms: float | None = None) -> None:
        """Open the breaker fleet-wide for ``cooldown_ms`` (default: the configured cooldown)."""
        millis = self._force_cooldown(cooldown_ms)
        self._rejection.seen = None
        report = self._call(self.store.force_open, self._key, millis, self.name)
        if report is None:
            self._local.force_open(cooldown_ms)
        else:
            self._report(report, "forced open")

    async def reset_async(self) -> None:
        """:meth:`reset` for async code (and for a store with only an async client)."""
        self._rejection.seen = None
        if self._may_call():
            try:
                report = await _shielded(
                    functools.partial(self.store.reset_async, self._key, self.name)
                )
            except Exception as exc:
                self._unavailable(exc)
            else:
                self._store_ok()
                self._report(report, "reset")
                return
        self._local.reset()

    async def force_open_async(self, cooldown_ms: float | None = None) -> None:
        """:meth:`force_open` for async code (and for a store with only an async client)."""
        millis = self._force_cooldown(cooldown_ms)
        self._rejection.seen = None
        if self._may_call():
            try:
                report = await _shielded(
                    functools.partial(self.store.force_open_async, self._key, millis, self.name)
                )
            except Exception as exc:
                self._unavailable(exc)
            else:
                self._store_ok()
                self._report(report, "forced open")
                return
        self._local.force_open(cooldown_ms)

    # -- internals -------------------------------------------------------------------

    def _force_cooldown(self, cooldown_ms: float | None) -> int:
        if cooldown_ms is None:
            return self._cooldown_ms
        CircuitBreakerConfig(cooldown_ms=cooldown_ms)  # validates the value
        _check_open_time(self.store, "force_open(cooldown_ms)", cooldown_ms)
        return math.ceil(cooldown_ms)

    def _local_acquire(self) -> int:
        ticket = self._local.acquire()
        return REJECTED if ticket == REJECTED else _LOCAL - ticket

    def _admit(self, admission: Admission) -> int:
        ticket, retry_after, failures, state, changed = admission
        self._count(failures)
        if ticket >= 0 and ticket % 2 == 0:
            self._last = (CLOSED, failures, 0.0)
            return ticket
        now = time.monotonic()
        self._last = (state, failures, now + retry_after)
        if ticket < 0:
            self._rejection.seen = (now, retry_after)
            return REJECTED
        if changed:
            emit(StateChanged(self.name, OPEN, HALF_OPEN, failures, self.now()), self._hooks)
        return ticket

    def _count(self, failures: int) -> None:
        if not failures:
            _counted.pop(self._seen_key, None)
            return
        # Re-inserted, not updated in place: a dict keeps insertion order, so the front
        # is the least recently used breaker.
        _counted.pop(self._seen_key, None)
        _counted[self._seen_key] = failures
        while len(_counted) > _COUNTED_MAX:
            try:
                del _counted[next(iter(_counted))]
            except (KeyError, StopIteration, RuntimeError):  # another thread got there first
                break

    def _report(self, report: Report, cause: str | None = None) -> CircuitState:
        state, old, failures = report
        self._count(failures)
        if state is OPEN and old is not OPEN:
            self._last = (state, failures, time.monotonic() + self._cooldown_ms / 1000.0)
        elif state is not OPEN:
            self._last = (state, failures, 0.0)
        if old is not state:
            event = StateChanged(self.name, old, state, failures, self.now())
            emit(event, self._hooks, cause=cause)
        return state

    def _seen_snapshot(self, snap: Snapshot) -> Snapshot:
        self._count(snap.failures)
        self._last = (snap.state, snap.failures, time.monotonic() + snap.retry_after)
        return snap

    def _record(self, op: Op, ticket: int, retry_after: float | None = None) -> CircuitState:
        report = self._call(
            functools.partial(self.store.record, **self._record_options(op, retry_after)),
            self._key,
            op,
            ticket,
        )
        if report is None:
            return self._local_verdict(op, retry_after)
        return self._report(report)

    def _record_options(self, op: Op, retry_after: float | None) -> dict[str, Any]:
        """The keywords of ``store.record``: ``opening=`` only for a failure reported to
        an adaptive store (another store keeps the protocol it was written for)."""
        options: dict[str, Any] = {
            "threshold": self._threshold,
            "cooldown_ms": self._cooldown_ms,
            "name": self.name,
        }
        if op != "failure" or not self._adaptive:
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

    def _local_verdict(self, op: Op, retry_after: float | None = None) -> CircuitState:
        # The store failed under a call it admitted: count the verdict locally as an
        # ordinary call.  A shared probe's lease runs out on the server by itself.
        local = self._local
        if op == "success":
            return local.record_success(0)
        if op == "failure":
            return local.record_failure(0, retry_after)
        return local.state

    async def _acquire_remote_async(self) -> int:
        try:
            admission = await self.store.acquire_async(
                self._key, self._threshold, self._cooldown_ms
            )
        except Exception as exc:
            self._unavailable(exc)
            return self._local_acquire()
        self._store_ok()
        try:
            return self._admit(admission)
        except BaseException:  # a hook interrupted the probe's claim (KeyboardInterrupt)
            if _is_probe(admission[0]):
                await self.release_async(admission[0])
            raise

    def _orphaned_ticket(self, ticket: int) -> None:
        # acquire_async() was cancelled while the store answered: give back a probe
        # it claimed at once, rather than leave the fleet waiting for the lease.
        if ticket <= _LOCAL:
            self._local.release(_LOCAL - ticket)
        elif ticket > 0 and ticket % 2 == 1:
            import asyncio  # noqa: PLC0415 - orphans exist only under asyncio

            task = asyncio.ensure_future(self.release_async(ticket))
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _record_async(
        self, op: Op, ticket: int, retry_after: float | None = None
    ) -> CircuitState:
        if not self._may_call():
            return self._local_verdict(op, retry_after)
        return await _shielded(
            functools.partial(self._record_remote_async, op, ticket, retry_after)
        )

    async def _record_remote_async(
        self, op: Op, ticket: int, retry_after: float | None = None
    ) -> CircuitState:
        try:
            report = await self.store.record_async(
                self._key, op, ticket, **self._record_options(op, retry_after)
            )
        except Exception as exc:
            self._unavailable(exc)
            return self._local_verdict(op, retry_after)
        self._store_ok()
        return self._report(report)

    # -- store health ----------------------------------------------------------------

    def _may_call(self) -> bool:
        health = self._health
        return health.down_since is None or health.claim_retry(self.store.retry_interval)

    def _call(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)`` on the store, or None (no exception) when the store is down."""
        if not self._may_call():
            return None
        try:
            result = fn(*args)
        except Exception as exc:
            self._unavailable(exc)
            return None
        self._store_ok()
        return result

    def _unavailable(self, error: Exception) -> None:
        """The store raised: an outage, unless it is a misuse no retry will fix.

        Not only the errors a store declares: a client library raises more
        (redis-py: ``RedisClusterException``, ``AttributeError`` for a server
        that answers its handshake with nonsense, ``RuntimeError`` for a closed
        event loop...), and a breaker must never fail a call because of its
        store.  :class:`ConfigError` (no sync client, say) reaches the caller.
        """
        if isinstance(error, ConfigError):
            raise error
        if isinstance(error, MalformedState):
            self._malformed_entry(error)
            return
        self._store_failed(error)

    def _malformed_entry(self, error: MalformedState) -> None:
        """Only this breaker's entry is bad: it goes local, the store stays up for the rest."""
        if self._malformed:
            return
        self._malformed = True  # one WARNING per breaker
        _log.warning(
            "breaker %s: its entry %s in store %s is malformed (%s); this breaker runs on "
            "in-process state until the entry is fixed or deleted (smoothapi status shows it)",
            self.name,
            self._key,
            self.store.label,
            error,
            extra={
                "smoothapi_event": "store_entry_malformed",
                "breaker": self.name,
                "store": self.store.label,
            },
        )

    def _store_failed(self, error: BaseException) -> None:
        interval = self.store.retry_interval
        label = self.store.label
        if not self._health.mark_down(interval):
            _log.debug("breaker store %s still unreachable: %r", label, error)
            return
        _log.warning(
            "breaker store %s is unreachable (%s: %s); breakers fall back to "
            "in-process state and try the store again every %gs. Check the server, or the "
            "client's address and credentials.",
            label,
            type(error).__name__,
            error,
            interval,
            extra={
                "smoothapi_event": "store_unavailable",
                "store": label,
                "error_type": type(error).__qualname__,
                "retry_interval": interval,
            },
        )
        emit(StoreUnavailable(label, error), self._hooks)

    def _store_ok(self) -> None:
        health = self._health
        if health.down_since is None:
            return
        down_for = health.mark_up()
        if down_for is None:  # another thread reported the recovery
            return
        label = self.store.label
        _log.info(
            "breaker store %s answers again after %.1fs; breakers share its state again",
            label,
            down_for,
            extra={"smoothapi_event": "store_recovered", "store": label, "down_for": down_for},
        )
        emit(StoreRecovered(label, down_for), self._hooks)


def _check_open_time(store: object, field: str, millis: float) -> None:
    """Refuse an open time the store cannot hold (``store.max_open_ms``), naming the field."""
    limit = getattr(store, "max_open_ms", None)
    if isinstance(limit, (int, float)) and millis > limit:
        raise ConfigError(
            f"{field} is {millis:g} ms, more than the {limit:g} ms (about "
            f"{limit / 3.15576e10:.0f} years) that a breaker store such as "
            f"{type(store).__name__} can hold; lower it"
        )
