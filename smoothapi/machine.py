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

Transitions (state x event -> state)::
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple

__all__ = [
    "INITIAL",
    "REJECTED",
    "TRANSITIONS",
    "CircuitState",
    "Machine",
    "Rules",
    "admit",
    "fail",
    "force_open",
    "open_time",
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
    (OPEN, "cooldown elapsed, probe claimed"): HALF_OPEN,
    (HALF_OPEN, "probe succeeded"): CLOSED,
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
    lease_until: float = 0.0  # HALF_OPEN: the probe's lease holds while now < lease_until
    period: int = 2  # the CLOSED period's ticket (even)
    growth: int = 0  # consecutive failed probes: the adaptive open time's exponent
    closed_at: float = -math.inf  # when a probe last closed the breaker

    @property
    def clean(self) -> int:
        """The period's ticket when CLOSED with no failure counted (the happy path), else 0."""
        return self.period if self.state is CLOSED and not self.failures else 0


#: A breaker nobody has used: CLOSED, period 2.
INITIAL = Machine()


class Rules(NamedTuple):
    """A breaker's configuration, in the store's time unit (seconds in memory)."""

    threshold: int
    cooldown: float
    multiplier: float = 1.0
    max_cooldown: float = math.inf
    cooldown_reset: float = 0.0
    lease: float = math.inf  # how long a probe's lease lasts; in memory, until it reports


def _next(machine: Machine, fresh: int | None) -> int:
    return machine.probe + 2 if fresh is None else fresh


def admit(
    machine: Machine, now: float, rules: Rules, fresh: int | None = None
) -> tuple[Machine, int, float]:
    """Ask to make one attempt: ``(next, ticket, retry_after)``.

    ``ticket`` is the period's (even) for an ordinary call, a fresh generation
    (odd) for the probe, or :data:`REJECTED` with ``retry_after`` the time
    until a probe is allowed (0 while another probe holds the lease).
    ``fresh`` is the store's new generation (default: ``probe + 2``).
    """
    state = machine.state
    if state is CLOSED:
        return machine, machine.period, 0.0
    if state is OPEN:
        if now < machine.open_until:
            return machine, REJECTED, machine.open_until - now
    elif now < machine.lease_until:  # HALF_OPEN, a probe in flight
        return machine, REJECTED, 0.0
    ticket = _next(machine, fresh)
    claimed = machine._replace(state=HALF_OPEN, probe=ticket, lease_until=now + rules.lease)
    return claimed, ticket, 0.0


def _live_probe(machine: Machine, ticket: int) -> bool:
    # A probe that gave its lease back (lease_until 0) reports nothing any more.
    return machine.state is HALF_OPEN and ticket == machine.probe and machine.lease_until != 0


def _this_period(machine: Machine, ticket: int) -> bool:
    return machine.state is CLOSED and ticket in (0, machine.period)


def succeed(machine: Machine, ticket: int, now: float) -> Machine:
    """The attempt holding ``ticket`` succeeded (or the service answered, a 404)."""
    if ticket % 2 == 0:
        if machine.failures and _this_period(machine, ticket):
            return machine._replace(failures=0)
        return machine
    if not _live_probe(machine, ticket):
        return machine
    return machine._replace(
        state=CLOSED, failures=0, lease_until=0.0, closed_at=now, period=ticket + 1
    )


def fail(  # noqa: PLR0917 - the verdict and what the open time depends on
    machine: Machine,
    ticket: int,
    now: float,
    rules: Rules,
    draw: Callable[[], float],
    retry_after: float | None = None,
) -> Machine:
    """The attempt holding ``ticket`` failed; ``draw()`` is called only if the open time grows."""
    if ticket % 2 == 0:
        if not _this_period(machine, ticket):
            return machine  # admitted before the breaker last opened: not counted again
        failures = machine.failures + 1
        if failures < rules.threshold:
            return machine._replace(failures=failures)
        growth = machine.growth
        if now - machine.closed_at >= rules.cooldown_reset:
            growth = 0  # a healthy period: start from the cooldown
    elif _live_probe(machine, ticket):
        failures = machine.failures + 1
        growth = machine.growth + 1
    else:
        return machine
    return machine._replace(
        state=OPEN,
        failures=failures,
        growth=growth,
        open_until=now + open_time(rules, growth, draw, retry_after),
        lease_until=0.0,
    )


def release(machine: Machine, ticket: int) -> Machine:
    """The attempt ended without a verdict: a probe gives its lease back."""
    if ticket % 2 == 1 and _live_probe(machine, ticket):
        return machine._replace(lease_until=0.0)
    return machine


def reset(machine: Machine, fresh: int | None = None) -> Machine:
    """CLOSED, every failure and any grown open time forgotten; tickets handed out before
    (a probe's, an ordinary call's) report nothing any more."""
    probe = _next(machine, fresh)
    return Machine(state=CLOSED, probe=probe, period=probe + 1)


def force_open(machine: Machine, now: float, open_for: float, fresh: int | None = None) -> Machine:
    """OPEN for ``open_for``; a probe in flight reports nothing any more."""
    return machine._replace(
        state=OPEN, open_until=now + open_for, lease_until=0.0, probe=_next(machine, fresh)
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
