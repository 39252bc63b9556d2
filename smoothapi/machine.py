"""The circuit breaker's rules, once: pure functions over an immutable state.

Theory of operation
-------------------
A breaker is a :class:`Machine` value and a store that keeps it.  Each
decision is a pure function of the value, the time and the :class:`Rules`
(the breaker's config), returning the next value and the reply: no lock, no
clock, no I/O here.  The in-memory :class:`~smoothapi.CircuitBreaker` keeps
the value in an attribute and swaps it under a short lock (resilience4j's
``AtomicReference`` of an immutable state); a
:class:`~smoothapi.SharedCircuitBreaker` has its store apply the same rules
atomically on the server, where :mod:`smoothapi.storage.lua` is their
server-side twin (``tests/storage/test_differential.py`` drives both with the
same random histories and requires the same replies).

CLOSED lets every call through and counts consecutive failed attempts; a
success resets the count; reaching ``threshold`` opens the breaker.  OPEN
rejects every call until ``open_until``.  The first caller after that moves
it to HALF_OPEN and holds the probe's *lease*; every other caller is rejected
while the lease is held.  The probe's success closes the breaker, its failure
re-opens it, and giving it back (``release``: cancelled, interrupted, a bug)
frees the lease so that the next caller probes.  A lease also ends by itself
``lease`` seconds after it was taken (a shared store's crashed prober); in
memory it lasts until the probe reports.

Tickets.  An ordinary call holds the CLOSED period's ticket (``period``, even);
the probe holds its generation (``probe``, odd).  Every probe, reset and
forced opening takes a fresh generation (``fresh``: more than any earlier
one), and a probe's success starts the period ``generation + 1``; so a
report from an earlier period or an earlier probe, or from a probe that gave
its lease back, changes nothing.  Ticket ``0`` reports as an ordinary call of
the current period.

Open time (adaptive when ``multiplier > 1``): the ``k``-th consecutive failed
probe re-opens for ``cooldown + draw() * (grown - cooldown)`` with ``grown =
min(max_cooldown, cooldown * multiplier**k)``; a trip from CLOSED starts again
from ``k = 0`` when the breaker stayed CLOSED at least ``cooldown_reset``
since it last closed.  A failure's ``retry_after`` (the server's Retry-After)
holds an opening at least that long, capped at ``max_cooldown``.

Trip rules.  With ``rules.rate`` None (the seed's rule) CLOSED counts
consecutive failed attempts as above.  With a rate, CLOSED counts every
attempt of the period in a :class:`Window` (``BUCKETS`` buckets of
``window / BUCKETS``) instead, and opens when a failure leaves the window
holding at least ``minimum`` attempts with a failed share of ``rate`` or more
(a success never opens it, as in Polly: successes are counted without a lock); ``failures``
then stays 0 while CLOSED (the window holds the counts).  A *slow* success
(``fail(..., slow=True)``) is a failure for either rule.  Every opening
records why (``why``, ``calls``, ``failures``; :func:`reason` words it), and
the window is emptied whenever the breaker leaves or re-enters CLOSED.

Probes.  HALF_OPEN admits up to ``rules.probes`` probes at once, each with
its own generation and lease (``probes``); a probe that succeeds uses its
permit up (``passed``), one that gives its permit back frees it for the next
caller.  ``rules.probes`` successes close the breaker; any failed probe
re-opens it, and the reports of the other probes of that round are stale.

Transitions (state x event -> state)::
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple

__all__ = [
    "BUCKETS",
    "INITIAL",
    "REJECTED",
    "TRANSITIONS",
    "CircuitState",
    "Machine",
    "Rules",
    "Window",
    "admit",
    "fail",
    "force_open",
    "open_time",
    "reason",
    "release",
    "reset",
    "succeed",
]


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

#: The ticket of a rejected call.
REJECTED = -1

TRANSITIONS: dict[tuple[CircuitState, str], CircuitState] = {
    (CLOSED, "failure threshold reached"): OPEN,
    (CLOSED, "failure rate reached"): OPEN,
    (OPEN, "cooldown elapsed, probe claimed"): HALF_OPEN,
    (HALF_OPEN, "every probe succeeded"): CLOSED,
    (HALF_OPEN, "probe failed"): OPEN,
    (OPEN, "reset"): CLOSED,
    (HALF_OPEN, "reset"): CLOSED,
    (CLOSED, "force_open"): OPEN,
    (HALF_OPEN, "force_open"): OPEN,
}
__doc__ = (__doc__ or "") + "".join(
    f"\n    {s.value:9} --{e}--> {t.value}" for (s, e), t in TRANSITIONS.items()
)


class Machine(NamedTuple):
    """One breaker's state.  Times are on the store's clock, in its unit."""

    state: CircuitState = CLOSED
    failures: int = 0  # consecutive failed attempts (CLOSED), or counted up to the trip
    open_until: float = 0.0  # OPEN: when a probe is allowed
    probe: int = 1  # the latest probe generation (odd); also bumped by reset and force_open
    probes: tuple[tuple[int, float], ...] = ()  # HALF_OPEN: the live probes (ticket, lease end)
    period: int = 2  # the CLOSED period's ticket (even)
    growth: int = 0  # consecutive failed probes: the adaptive open time's exponent
    closed_at: float = -math.inf  # when the probes last closed the breaker
    passed: int = 0  # HALF_OPEN: probes of this round that succeeded
    slow: int = 0  # of ``failures``, how many were slow calls
    why: str = ""  # the last opening: "consecutive", "rate", "probe" or "forced"
    calls: int = 0  # the rate rule's window size at the last trip

    @property
    def clean(self) -> int:
        """The period's ticket when CLOSED with no failure counted (the happy path), else 0."""
        return self.period if self.state is CLOSED and not self.failures else 0


#: A breaker nobody has used: CLOSED, period 2.
INITIAL = Machine()

#: How many buckets a failure-rate window has: its granularity is ``window / BUCKETS``.
BUCKETS = 10


class Rules(NamedTuple):
    """A breaker's configuration, in the store's time unit (seconds in memory)."""

    threshold: int
    cooldown: float
    multiplier: float = 1.0
    max_cooldown: float = math.inf
    cooldown_reset: float = 0.0
    lease: float = math.inf  # how long a probe's lease lasts; in memory, until it reports
    rate: float | None = None  # the failure-rate rule's share (None: consecutive failures)
    window: float = 10.0  # the rate rule's sliding window
    minimum: int = 20  # no rate verdict on fewer attempts than this
    probes: int = 1  # HALF_OPEN: probes admitted at once, and successes needed to close


_ONE_PROBE = Rules(1, 0.0)


class Window:
    """The failure-rate rule's counts: a ring of ``BUCKETS`` buckets over ``window``.

    Bucket ``floor(now * BUCKETS / window)`` holds the attempts that ended in
    it (computed in that order, as the Lua twin does with integer milliseconds:
    a precomputed ``BUCKETS / window`` would round some edges into the bucket
    before); the window is the current bucket and the ``BUCKETS - 1`` before it, so
    an attempt leaves the window between ``window * (1 - 1/BUCKETS)`` and
    ``window`` after it ended.  Failures (and slow calls) are counted under
    the breaker's lock; :meth:`success` may run without it, so under a race
    an increment of ``ok`` can be lost (a success missing from the window,
    never a failure).  Mutable, unlike :class:`Machine`: the happy path adds
    one to a list slot rather than build a new value.
    """

    __slots__ = ("epochs", "failed", "ok", "slow", "span")

    def __init__(self, window: float) -> None:
        self.span = window
        self.epochs = [-1] * BUCKETS
        self.ok = [0] * BUCKETS
        self.failed = [0] * BUCKETS
        self.slow = [0] * BUCKETS

    def bucket(self, now: float) -> int:
        """The bucket ``now`` falls in (an absolute number; its slot is ``% BUCKETS``)."""
        return math.floor(now * BUCKETS / self.span)

    def success(self, now: float) -> bool:
        """Count a success if its bucket is current (lock-free); False: the caller rolls it
        with :meth:`add` under its lock."""
        epoch = math.floor(now * BUCKETS / self.span)
        slot = epoch % BUCKETS
        if self.epochs[slot] != epoch:
            return False
        self.ok[slot] += 1
        return True

    def add(self, now: float, failed: int = 0, slow: int = 0) -> None:
        """Count one attempt (a success, a failure, or a slow success: failed and slow)."""
        epoch = math.floor(now * BUCKETS / self.span)
        slot = epoch % BUCKETS
        if self.epochs[slot] != epoch:
            # Zeroed before the epoch moves: a lock-free success that sees the new epoch
            # lands after the zeroing, not under it.
            self.ok[slot] = self.failed[slot] = self.slow[slot] = 0
            self.epochs[slot] = epoch
        if failed:
            self.failed[slot] += 1
            self.slow[slot] += slow
        else:
            self.ok[slot] += 1

    def totals(self, now: float) -> tuple[int, int, int]:
        """``(calls, failed, slow)`` over the window ending at ``now``."""
        oldest = math.floor(now * BUCKETS / self.span) - BUCKETS
        calls = failed = slow = 0
        for slot in range(BUCKETS):
            if self.epochs[slot] > oldest:
                failed += self.failed[slot]
                slow += self.slow[slot]
                calls += self.ok[slot] + self.failed[slot]
        return calls, failed, slow

    def clear(self) -> None:
        """Forget every count (the breaker left or re-entered CLOSED)."""
        for slot in range(BUCKETS):
            self.epochs[slot] = -1
            self.ok[slot] = self.failed[slot] = self.slow[slot] = 0


def reason(m: Machine) -> str:
    """Why the breaker is open or half-open, in words: ``consecutive failures``,
    ``failure rate 0.53 over 212 calls``, ``slow calls``, ``slow call rate 0.60 over 50
    calls``, ``probe failed`` or ``forced open`` ("" while CLOSED: a close forgets it)."""
    why = m.why
    if why == "consecutive":
        return "slow calls" if m.slow >= m.failures > 0 else "consecutive failures"
    if why == "rate":
        share = m.failures / m.calls if m.calls else 0.0
        kind = "slow call rate" if m.slow >= m.failures > 0 else "failure rate"
        return f"{kind} {share:.2f} over {m.calls} calls"
    if why == "probe":
        return "probe failed"
    if why == "forced":
        return "forced open"
    return ""


def _next(machine: Machine, fresh: int | None) -> int:
    return machine.probe + 2 if fresh is None else fresh


def admit(
    machine: Machine, now: float, rules: Rules, fresh: int | None = None
) -> tuple[Machine, int, float]:
    """Ask to make one attempt: ``(next, ticket, retry_after)``.

    ``ticket`` is the period's (even) for an ordinary call, a fresh generation
    (odd) for a probe, or :data:`REJECTED` with ``retry_after`` the time
    until a probe is allowed (0 while every probe permit is taken).
    ``fresh`` is the store's new generation (default: ``probe + 2``).
    """
    state = machine.state
    if state is CLOSED:
        return machine, machine.period, 0.0
    if state is OPEN:
        if now < machine.open_until:
            return machine, REJECTED, machine.open_until - now
        live: tuple[tuple[int, float], ...] = ()
        passed = 0
    else:  # HALF_OPEN: a lease that ran out (its prober crashed or hung) frees its permit
        live = tuple(p for p in machine.probes if now < p[1])
        passed = machine.passed
        if len(live) + passed >= rules.probes:
            if len(live) != len(machine.probes):
                return machine._replace(probes=live), REJECTED, 0.0
            return machine, REJECTED, 0.0
    ticket = _next(machine, fresh)
    claimed = machine._replace(
        state=HALF_OPEN, probe=ticket, probes=(*live, (ticket, now + rules.lease)), passed=passed
    )
    return claimed, ticket, 0.0


def _live_probe(machine: Machine, ticket: int) -> bool:
    # A probe that gave its permit back (or whose lease was taken over) reports nothing.
    return machine.state is HALF_OPEN and any(p[0] == ticket for p in machine.probes)


def _this_period(machine: Machine, ticket: int) -> bool:
    return machine.state is CLOSED and ticket in (0, machine.period)


def _without(machine: Machine, ticket: int) -> tuple[tuple[int, float], ...]:
    return tuple(p for p in machine.probes if p[0] != ticket)


def succeed(
    machine: Machine,
    ticket: int,
    now: float,
    rules: Rules | None = None,
    window: Window | None = None,
) -> Machine:
    """The attempt holding ``ticket`` succeeded (or the service answered, a 404).

    ``rules`` None: one probe closes the breaker.  With the rate rule the
    success is counted in ``window``.
    """
    if ticket % 2 == 0:
        if _this_period(machine, ticket):
            if window is not None:
                window.add(now)
            elif machine.failures:
                return machine._replace(failures=0, slow=0)
        return machine
    if not _live_probe(machine, ticket):
        return machine
    passed = machine.passed + 1
    if passed < (rules or _ONE_PROBE).probes:
        return machine._replace(probes=_without(machine, ticket), passed=passed)
    if window is not None:
        window.clear()
    return machine._replace(
        state=CLOSED,
        failures=0,
        slow=0,
        probes=(),
        passed=0,
        closed_at=now,
        period=ticket + 1,
        why="",  # the opening is over: its reason (worded from its counts) goes with it
        calls=0,
    )


def fail(  # noqa: PLR0917 - the verdict and what the open time depends on
    machine: Machine,
    ticket: int,
    now: float,
    rules: Rules,
    draw: Callable[[], float],
    retry_after: float | None = None,
    slow: bool = False,
    window: Window | None = None,
) -> Machine:
    """The attempt holding ``ticket`` failed (``slow``: it succeeded, too slowly);
    ``draw()`` is called only if the open time grows."""
    calls = 0
    if ticket % 2 == 0:
        if not _this_period(machine, ticket):
            return machine  # admitted before the breaker last opened: not counted again
        if rules.rate is not None and window is not None:
            window.add(now, 1, int(slow))
            calls, failures, slows = window.totals(now)
            if calls < rules.minimum or failures / calls < rules.rate:
                return machine
            why = "rate"
        else:
            failures = machine.failures + 1
            slows = machine.slow + int(slow)
            if failures < rules.threshold:
                return machine._replace(failures=failures, slow=slows)
            why = "consecutive"
        growth = machine.growth
        if now - machine.closed_at >= rules.cooldown_reset:
            growth = 0  # a healthy period: start from the cooldown
    elif _live_probe(machine, ticket):
        failures = machine.failures + 1
        slows = machine.slow + int(slow)
        growth = machine.growth + 1
        why = "probe"
    else:
        return machine
    if window is not None:
        window.clear()
    return machine._replace(
        state=OPEN,
        failures=failures,
        slow=slows,
        growth=growth,
        open_until=now + open_time(rules, growth, draw, retry_after),
        probes=(),
        passed=0,
        why=why,
        calls=calls,
    )


def release(machine: Machine, ticket: int) -> Machine:
    """The attempt ended without a verdict: a probe gives its permit back."""
    if ticket % 2 == 1 and _live_probe(machine, ticket):
        return machine._replace(probes=_without(machine, ticket))
    return machine


def reset(machine: Machine, fresh: int | None = None, window: Window | None = None) -> Machine:
    """CLOSED, every failure and any grown open time forgotten; tickets handed out before
    (a probe's, an ordinary call's) report nothing any more."""
    if window is not None:
        window.clear()
    probe = _next(machine, fresh)
    return Machine(state=CLOSED, probe=probe, period=probe + 1)


def force_open(
    machine: Machine,
    now: float,
    open_for: float,
    fresh: int | None = None,
    window: Window | None = None,
) -> Machine:
    """OPEN for ``open_for``; a probe in flight reports nothing any more."""
    if window is not None:
        window.clear()
    return machine._replace(
        state=OPEN,
        open_until=now + open_for,
        probes=(),
        passed=0,
        probe=_next(machine, fresh),
        why="forced",
    )


def open_time(
    rules: Rules, growth: int, draw: Callable[[], float], retry_after: float | None
) -> float:
    """How long an opening lasts: the grown, jittered cooldown, or the server's hold."""
    cooldown = rules.cooldown
    open_for = cooldown
    if growth and rules.multiplier > 1.0:
        cap = rules.max_cooldown
        try:
            grown = min(cap, cooldown * rules.multiplier**growth)
        except OverflowError:
            grown = cap
        if grown > cooldown:
            share = min(1.0, max(0.0, draw()))  # a NaN reads as 0.0
            open_for = cooldown + share * (grown - cooldown)
    if retry_after is not None and retry_after > open_for:  # a NaN is ignored
        open_for = max(open_for, min(retry_after, rules.max_cooldown))
    return open_for
