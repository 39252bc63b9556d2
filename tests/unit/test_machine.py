"""The breaker's rules as pure functions (smoothapi.machine): one table test per rule."""

from __future__ import annotations

import math

import pytest

from smoothapi import machine
from smoothapi.machine import INITIAL, REJECTED, CircuitState, Machine, Rules

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
RULES = Rules(threshold=2, cooldown=10.0)


def never() -> float:
    raise AssertionError("draw() called although the open time does not grow")


def tripped(now: float = 0.0, rules: Rules = RULES) -> Machine:
    m = INITIAL
    for _ in range(rules.threshold):
        m = machine.fail(m, m.period, now, rules, never)
    return m


def test_closed_admits_every_call_with_the_period_ticket_and_changes_nothing() -> None:
    assert machine.admit(INITIAL, 5.0, RULES) == (INITIAL, INITIAL.period, 0.0)
    assert INITIAL.clean == INITIAL.period


def test_failures_count_up_to_the_threshold_and_a_success_clears_them() -> None:
    once = machine.fail(INITIAL, 0, 1.0, RULES, never)
    assert (once.state, once.failures, once.clean) == (CLOSED, 1, 0)
    assert machine.succeed(once, once.period, 2.0) == INITIAL
    m = tripped(3.0)
    assert (m.state, m.failures, m.open_until) == (OPEN, 2, 13.0)


def test_open_rejects_until_the_cooldown_then_one_probe_holds_the_lease() -> None:
    m = tripped()
    assert machine.admit(m, 9.5, RULES) == (m, REJECTED, 0.5)
    probing, ticket, wait = machine.admit(m, 10.0, RULES)  # exactly at the end: admitted
    assert (probing.state, ticket % 2, wait) == (HALF_OPEN, 1, 0.0)
    assert machine.admit(probing, 11.0, RULES)[1:] == (REJECTED, 0.0)  # lease held (no expiry)


def test_a_probe_lease_with_an_expiry_frees_itself() -> None:
    rules = RULES._replace(lease=1.0)
    probing, first, _ = machine.admit(tripped(rules=rules), 10.0, rules)
    assert machine.admit(probing, 10.5, rules)[1] == REJECTED
    again, second, _ = machine.admit(probing, 11.0, rules)
    assert second > first
    assert machine.succeed(again, first, 11.5) is again  # the expired probe's report is stale


def test_the_probe_success_closes_into_a_new_period_and_stale_tickets_change_nothing() -> None:
    m = tripped()
    old_period = m.period
    probing, ticket, _ = machine.admit(m, 10.0, RULES)
    closed = machine.succeed(probing, ticket, 12.0)
    assert (closed.state, closed.failures, closed.closed_at, closed.period) == (
        CLOSED,
        0,
        12.0,
        ticket + 1,
    )
    assert machine.fail(closed, old_period, 13.0, RULES, never) is closed
    assert machine.succeed(closed, ticket, 13.0) is closed  # the probe reported already


def test_a_failed_probe_reopens_and_a_released_one_frees_the_lease() -> None:
    probing, ticket, _ = machine.admit(tripped(), 10.0, RULES)
    reopened = machine.fail(probing, ticket, 10.5, RULES, never)
    assert (reopened.state, reopened.failures, reopened.open_until) == (OPEN, 3, 20.5)
    freed = machine.release(probing, ticket)
    assert (freed.state, freed.probes) == (HALF_OPEN, ())
    assert machine.succeed(freed, ticket, 11.0) is freed  # it gave its lease back
    assert machine.admit(freed, 11.0, RULES)[1] > ticket  # the next caller probes


def test_reset_and_force_open_invalidate_every_ticket_handed_out() -> None:
    probing, ticket, _ = machine.admit(tripped(), 10.0, RULES)
    fresh = machine.reset(probing)
    assert (fresh.state, fresh.failures, fresh.growth, fresh.closed_at) == (CLOSED, 0, 0, -math.inf)
    assert machine.succeed(fresh, ticket, 11.0) is fresh
    assert machine.fail(fresh, probing.period, 11.0, RULES, never) is fresh
    forced = machine.force_open(INITIAL, 1.0, 30.0)
    assert (forced.state, forced.open_until, forced.probe > INITIAL.probe) == (OPEN, 31.0, True)


@pytest.mark.parametrize(
    ("growth", "draw", "retry_after", "expected"),
    [
        (0, 0.5, None, 10.0),  # the plain cooldown
        (1, 0.5, None, 15.0),  # 10 + 0.5 * (20 - 10)
        (3, 1.0, None, 60.0),  # 10 * 2**3 = 80, capped at 60
        (0, 0.5, 25.0, 25.0),  # the server's hold
        (0, 0.5, 99.0, 60.0),  # ... capped
        (0, 0.5, math.nan, 10.0),  # a NaN hold is ignored
        (1, math.nan, None, 10.0),  # a NaN draw reads as 0
    ],
)
def test_the_adaptive_open_time(
    growth: int, draw: float, retry_after: float | None, expected: float
) -> None:
    rules = Rules(threshold=1, cooldown=10.0, multiplier=2.0, max_cooldown=60.0)
    assert machine.open_time(rules, growth, lambda: draw, retry_after) == expected


def test_a_trip_after_a_healthy_period_starts_the_growth_again() -> None:
    rules = Rules(threshold=1, cooldown=10.0, multiplier=2.0, max_cooldown=60.0, cooldown_reset=100)
    grown = Machine(state=CLOSED, growth=3, closed_at=0.0)
    soon = machine.fail(grown, grown.period, 50.0, rules, lambda: 1.0)
    late = machine.fail(grown, grown.period, 100.0, rules, lambda: 1.0)
    assert (soon.growth, soon.open_until) == (3, 50.0 + 60.0)
    assert (late.growth, late.open_until) == (0, 100.0 + 10.0)


def test_every_state_change_the_rules_make_is_in_the_table() -> None:
    moves = {(old, new) for (old, _event), new in machine.TRANSITIONS.items()}
    probing, ticket, _ = machine.admit(tripped(), 10.0, RULES)
    seen = {
        (INITIAL.state, tripped().state),
        (tripped().state, probing.state),
        (probing.state, machine.succeed(probing, ticket, 11).state),
        (probing.state, machine.fail(probing, ticket, 11, RULES, never).state),
        (probing.state, machine.reset(probing).state),
        (probing.state, machine.force_open(probing, 11, 1).state),
    }
    assert seen <= moves
    assert "probe failed" in (machine.__doc__ or "")  # the table is drawn in the docstring


def test_a_shared_breaker_sends_the_configured_milliseconds_exactly() -> None:
    """Found beside the differential test: 2.007 s * 1000 is 2007.0000000000002, which a plain
    ceil made 2008 ms of max_cooldown / cooldown_reset for the store."""
    from smoothapi.storage.shared import _millis  # noqa: PLC0415

    assert [n for n in range(1, 20_001) if _millis(n / 1000) != n] == []
    assert _millis(0.0015) == 2  # a fraction of a millisecond still rounds up
