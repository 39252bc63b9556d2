"""The circuit breaker's state machine, driven on a fake clock (no real waiting).

DESIGN.md, "The breaker": CLOSED counts consecutive failed attempts and
opens at failure_threshold; OPEN rejects until cooldown_ms has passed; the
first caller then becomes the single HALF_OPEN probe; probe success closes,
probe failure re-opens with a fresh cooldown; a probe that ends any other
way gives its permit back; reading .state never claims the probe.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    ResilientConfig,
    StateChanged,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.testing import FakeClock, set_testing

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
COOLDOWN_S = 10.0


def make(
    threshold: int = 3, cooldown_ms: float = 10_000, hooks: tuple[Any, ...] = ()
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock(start=100.0)
    config = CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=cooldown_ms)
    return CircuitBreaker(config, name="svc", clock=clock, hooks=hooks), clock


# -- table-driven FSM --------------------------------------------------------------------------
#
# A scenario is a list of (action, expected state, expected failure_count or None = unpinned).
# Actions:
#   "fail" / "ok"      report the current ticket (0 unless a probe ticket is held); a probe
#                      report consumes the ticket
#   "fail0" / "ok0"    report ticket 0 whatever is held (a call admitted before the breaker opened)
#   "acquire=call"     acquire() must return an ordinary call's ticket (even, >= 0)
#   "acquire=probe"    acquire() must return a probe's ticket (odd, > 0), held from then on
#   "acquire=rejected" acquire() must return REJECTED
#   "release"          release the held ticket
#   "advance=S"        move the fake clock S seconds
#   "read"             read .state, .failure_count, .retry_after and repr() five times
#   "reset" / "force_open" / "force_open=MS"


@dataclass
class Driver:
    breaker: CircuitBreaker
    clock: FakeClock
    ticket: int = 0

    def do(self, action: str) -> None:
        br = self.breaker
        verb, _, arg = action.partition("=")
        if verb == "fail":
            br.record_failure(self.ticket)
            self.ticket = 0
        elif verb == "ok":
            br.record_success(self.ticket)
            self.ticket = 0
        elif verb == "fail0":
            br.record_failure(0)
        elif verb == "ok0":
            br.record_success(0)
        elif verb == "acquire":
            got = br.acquire()
            if arg == "call":
                assert got >= 0
                assert got % 2 == 0
            elif arg == "probe":
                assert got > 0
                assert got % 2 == 1
                self.ticket = got
            else:
                assert got == REJECTED
        elif verb == "release":
            br.release(self.ticket)
            self.ticket = 0
        elif verb == "advance":
            self.clock.advance(float(arg))
        elif verb == "read":
            for _ in range(5):
                _ = (br.state, br.failure_count, br.retry_after, repr(br))
        elif verb == "reset":
            br.reset()
        elif verb == "force_open":
            br.force_open(float(arg) if arg else None)
        else:  # pragma: no cover - a typo in a table
            raise AssertionError(f"unknown action {action!r}")


OPEN_IT = [("fail", CLOSED, 1), ("fail", CLOSED, 2), ("fail", OPEN, 3)]
TO_PROBE = [*OPEN_IT, ("advance=10", OPEN, 3), ("acquire=probe", HALF_OPEN, None)]

SCENARIOS: dict[str, list[tuple[str, CircuitState, int | None]]] = {
    "consecutive failures open exactly at the threshold": OPEN_IT,
    "CLOSED admits ordinary calls": [
        ("acquire=call", CLOSED, 0),
        ("fail", CLOSED, 1),
        ("acquire=call", CLOSED, 1),
    ],
    "a success resets the count, so non-consecutive failures never open": [
        ("fail", CLOSED, 1),
        ("fail", CLOSED, 2),
        ("ok", CLOSED, 0),
        ("fail", CLOSED, 1),
        ("fail", CLOSED, 2),
        ("ok", CLOSED, 0),
        ("ok", CLOSED, 0),
        *OPEN_IT,
    ],
    "OPEN rejects every call until the cooldown has fully passed": [
        *OPEN_IT,
        ("acquire=rejected", OPEN, 3),
        ("advance=9.999", OPEN, 3),
        ("acquire=rejected", OPEN, 3),
        ("advance=0.001", OPEN, 3),
        ("acquire=probe", HALF_OPEN, None),
    ],
    "reading state never claims the probe; acquire() does": [
        *OPEN_IT,
        ("advance=60", OPEN, 3),
        ("read", OPEN, 3),
        ("read", OPEN, 3),
        ("acquire=probe", HALF_OPEN, None),
    ],
    "a second caller is rejected while the probe is in flight": [
        *TO_PROBE,
        ("acquire=rejected", HALF_OPEN, None),
        ("advance=1000", HALF_OPEN, None),
        ("acquire=rejected", HALF_OPEN, None),
    ],
    "probe success closes the breaker and clears the count": [
        *TO_PROBE,
        ("ok", CLOSED, 0),
        ("acquire=call", CLOSED, 0),
        ("fail", CLOSED, 1),
    ],
    "probe failure re-opens the breaker with a fresh full cooldown": [
        *TO_PROBE,
        ("advance=3", HALF_OPEN, None),
        ("fail", OPEN, None),
        ("acquire=rejected", OPEN, None),
        ("advance=9.999", OPEN, None),
        ("acquire=rejected", OPEN, None),
        ("advance=0.001", OPEN, None),
        ("acquire=probe", HALF_OPEN, None),
        ("ok", CLOSED, 0),
    ],
    "releasing the probe ticket gives the permit back, state stays HALF_OPEN": [
        *TO_PROBE,
        ("release", HALF_OPEN, None),
        ("read", HALF_OPEN, None),
        ("acquire=probe", HALF_OPEN, None),
        ("acquire=rejected", HALF_OPEN, None),
        ("ok", CLOSED, 0),
    ],
    "ticket-0 reports while OPEN change nothing (admitted before it opened)": [
        *OPEN_IT,
        ("fail0", OPEN, 3),
        ("ok0", OPEN, 3),
        ("fail0", OPEN, 3),
        ("acquire=rejected", OPEN, 3),
    ],
    "ticket-0 reports while HALF_OPEN neither close nor re-open it": [
        *TO_PROBE,
        ("ok0", HALF_OPEN, None),
        ("fail0", HALF_OPEN, None),
        ("acquire=rejected", HALF_OPEN, None),
        ("fail", OPEN, None),
    ],
    "reset closes from OPEN and forgets every failure": [
        *OPEN_IT,
        ("reset", CLOSED, 0),
        ("acquire=call", CLOSED, 0),
        ("fail", CLOSED, 1),
    ],
    "reset closes from HALF_OPEN": [*TO_PROBE, ("reset", CLOSED, 0), ("acquire=call", CLOSED, 0)],
    "reset in CLOSED clears the count": [("fail", CLOSED, 1), ("reset", CLOSED, 0)],
    "force_open opens a healthy breaker for the configured cooldown": [
        ("force_open", OPEN, 0),
        ("acquire=rejected", OPEN, 0),
        ("advance=9.999", OPEN, 0),
        ("acquire=rejected", OPEN, 0),
        ("advance=0.001", OPEN, 0),
        ("acquire=probe", HALF_OPEN, None),
        ("ok", CLOSED, 0),
    ],
    "force_open(cooldown_ms) uses the given cooldown": [
        ("force_open=500", OPEN, 0),
        ("advance=0.499", OPEN, 0),
        ("acquire=rejected", OPEN, 0),
        ("advance=0.001", OPEN, 0),
        ("acquire=probe", HALF_OPEN, None),
    ],
    "force_open(0) makes the next caller the probe": [
        ("force_open=0", OPEN, 0),
        ("acquire=probe", HALF_OPEN, None),
    ],
    "force_open during a probe re-opens and invalidates the probe": [
        *TO_PROBE,
        ("force_open=1000", OPEN, None),
    ],
}
# Scenarios on another config: (failure_threshold, cooldown_ms, steps).
OTHER_CONFIG_SCENARIOS: dict[str, tuple[int, float, list[tuple[str, CircuitState, int | None]]]] = {
    "threshold 1 opens on the first failure": (1, 10_000, [("fail", OPEN, 1)]),
    "threshold 5 needs five consecutive failures": (
        5,
        10_000,
        [
            ("fail", CLOSED, 1),
            ("fail", CLOSED, 2),
            ("fail", CLOSED, 3),
            ("fail", CLOSED, 4),
            ("ok", CLOSED, 0),
            *[("fail", CLOSED, i) for i in range(1, 5)],
            ("fail", OPEN, 5),
        ],
    ),
    "cooldown 0 lets the probe through at once": (
        1,
        0,
        [
            ("fail", OPEN, 1),
            ("acquire=probe", HALF_OPEN, None),
            ("fail", OPEN, None),
            ("acquire=probe", HALF_OPEN, None),
            ("ok", CLOSED, 0),
        ],
    ),
}
ALL_SCENARIOS = {
    **{name: (3, 10_000.0, steps) for name, steps in SCENARIOS.items()},
    **OTHER_CONFIG_SCENARIOS,
}


@pytest.mark.parametrize(
    ("threshold", "cooldown_ms", "steps"), list(ALL_SCENARIOS.values()), ids=list(ALL_SCENARIOS)
)
def test_breaker_state_machine(
    threshold: int, cooldown_ms: float, steps: list[tuple[str, CircuitState, int | None]]
) -> None:
    """Each scenario's name states the rule; every step pins the state (and the failure count)."""
    br, clock = make(threshold=threshold, cooldown_ms=cooldown_ms)
    driver = Driver(br, clock)
    for i, (action, state, failures) in enumerate(steps):
        driver.do(action)
        assert br.state is state, f"step {i} {action!r}: state {br.state}, expected {state}"
        if failures is not None:
            assert br.failure_count == failures, f"step {i} {action!r}"


# -- retry_after and CircuitOpenError ----------------------------------------------------------


def test_check_raises_circuit_open_error_with_name_and_seconds_left() -> None:
    """OPEN: check() raises CircuitOpenError (a RuntimeError) with .name and .retry_after."""
    br, clock = make()
    for _ in range(3):
        br.record_failure(0)
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as info:
        br.check()
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.name == "svc"
    assert err.retry_after == pytest.approx(6.0)
    assert "Circuit breaker is OPEN for:" in str(err)
    assert "svc" in str(err)
    assert br.retry_after == pytest.approx(6.0)


def test_check_returns_the_ticket_when_admitted() -> None:
    """check() returns an ordinary (even) ticket in CLOSED and a probe's (odd) one once the
    cooldown has passed."""
    br, clock = make(threshold=1)
    assert br.check() % 2 == 0
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    assert br.check() % 2 == 1
    assert br.state is HALF_OPEN


@pytest.mark.parametrize(
    ("advance", "expected"),
    [(0.0, 10.0), (2.5, 7.5), (9.0, 1.0), (10.0, 0.0), (50.0, 0.0)],
)
def test_retry_after_counts_down_the_cooldown_and_never_goes_negative(
    advance: float, expected: float
) -> None:
    """retry_after is the seconds left of the cooldown, floored at 0.0."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(advance)
    assert br.retry_after == pytest.approx(expected)


def test_probe_failure_restarts_the_full_cooldown_from_the_failure() -> None:
    """After a failed probe, retry_after is the full cooldown again, measured from the failure."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(25.0)  # well past the cooldown
    ticket = br.acquire()
    assert ticket > 0
    clock.advance(3.0)  # the probe takes a while
    br.record_failure(ticket)
    assert br.state is OPEN
    assert br.retry_after == pytest.approx(COOLDOWN_S)
    with pytest.raises(CircuitOpenError) as info:
        br.check()
    assert info.value.retry_after == pytest.approx(COOLDOWN_S)


def test_rejection_while_probe_in_flight_raises_circuit_open_error() -> None:
    """HALF_OPEN with a probe in flight: check() raises CircuitOpenError for every other caller."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    assert br.check() > 0
    with pytest.raises(CircuitOpenError) as info:
        br.check()
    assert info.value.name == "svc"
    assert info.value.retry_after >= 0.0


def test_circuit_open_error_survives_pickling() -> None:
    """CircuitOpenError pickles with its name and retry_after (it crosses process pools)."""
    err = pickle.loads(pickle.dumps(CircuitOpenError("svc", 1.5)))  # noqa: S301
    assert (err.name, err.retry_after) == ("svc", 1.5)
    assert "Circuit breaker is OPEN for: svc" in str(err)


# -- elapsed cooldown: reading is side-effect free ---------------------------------------------


def test_reading_state_after_cooldown_never_claims_the_probe() -> None:
    """Elapsed cooldown reads OPEN on every read; the first acquire() then gets the probe."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(COOLDOWN_S + 1)
    assert [br.state for _ in range(10)] == [OPEN] * 10
    assert br.retry_after == 0.0
    ticket = br.acquire()
    assert ticket > 0
    assert ticket != REJECTED
    assert br.state is HALF_OPEN
    assert br.acquire() == REJECTED


# -- stale tickets -----------------------------------------------------------------------------


def test_probe_ticket_from_before_reset_is_ignored_after_reset() -> None:
    """A probe admitted before reset() reports late: its success or failure changes nothing."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    stale = br.acquire()
    assert stale > 0
    br.reset()
    br.record_failure(stale)
    assert (br.state, br.failure_count) == (CLOSED, 0)
    br.record_success(stale)
    assert (br.state, br.failure_count) == (CLOSED, 0)


def test_stale_probe_ticket_cannot_settle_a_newer_probe() -> None:
    """After reset() and a new probe, the old ticket neither settles nor frees the new probe."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    stale = br.acquire()
    br.reset()
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    live = br.acquire()
    assert live > 0
    assert live != stale
    br.record_failure(stale)
    assert br.state is HALF_OPEN
    br.release(stale)
    assert br.acquire() == REJECTED, "a stale release must not free the live probe's permit"
    br.record_success(stale)
    assert br.state is HALF_OPEN
    br.record_success(live)
    assert br.state is CLOSED


def test_probe_ticket_from_before_force_open_is_ignored() -> None:
    """force_open() during a probe invalidates it: the old probe's success does not close it."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    stale = br.acquire()
    br.force_open()
    br.record_success(stale)
    assert br.state is OPEN
    assert br.retry_after == pytest.approx(COOLDOWN_S)


def test_released_probe_permit_goes_to_the_next_caller_with_a_new_ticket() -> None:
    """release(probe) frees the permit: the next acquire() gets a NEW probe ticket, the old one
    is then stale, and the state stays HALF_OPEN throughout."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    first = br.acquire()
    assert first > 0
    br.release(first)
    assert br.state is HALF_OPEN
    second = br.acquire()
    assert second > 0
    assert second != first
    assert br.state is HALF_OPEN
    br.record_success(first)  # the released ticket no longer speaks for the probe
    assert br.state is HALF_OPEN
    br.record_failure(second)
    assert br.state is OPEN


def test_releasing_ticket_zero_or_rejected_is_a_no_op() -> None:
    """release(0) and release(REJECTED) never touch the probe permit."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(COOLDOWN_S)
    assert br.acquire() > 0
    br.release(0)
    br.release(REJECTED)
    assert br.acquire() == REJECTED


# -- manual control ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_force_open_rejects_a_bad_cooldown_and_changes_nothing(bad: float) -> None:
    """force_open(cooldown_ms=bad) raises ConfigError and leaves the breaker as it was."""
    br, _ = make()
    with pytest.raises(ConfigError, match="cooldown_ms"):
        br.force_open(bad)
    assert br.state is CLOSED


def test_force_open_when_open_restarts_the_cooldown() -> None:
    """force_open() on an OPEN breaker sets a new cooldown from now."""
    br, clock = make(threshold=1)
    br.record_failure(0)
    clock.advance(8.0)
    br.force_open(cooldown_ms=30_000)
    assert br.state is OPEN
    assert br.retry_after == pytest.approx(30.0)


# -- events ------------------------------------------------------------------------------------


def test_state_changed_events_reach_hooks_in_order_with_old_and_new() -> None:
    """Every transition sends one StateChanged(old, new) to hooks=, in order, at the clock time."""
    seen: list[StateChanged] = []
    br, clock = make(threshold=2, hooks=(seen.append,))
    br.record_failure(0)
    assert seen == []  # no transition yet
    br.record_failure(0)  # CLOSED -> OPEN at t=100
    clock.advance(COOLDOWN_S)
    probe = br.acquire()  # OPEN -> HALF_OPEN at t=110
    br.record_failure(probe)  # HALF_OPEN -> OPEN
    clock.advance(COOLDOWN_S)
    probe = br.acquire()  # OPEN -> HALF_OPEN at t=120
    br.record_success(probe)  # HALF_OPEN -> CLOSED
    br.force_open()  # CLOSED -> OPEN
    br.force_open()  # already OPEN: no event
    br.reset()  # OPEN -> CLOSED
    br.reset()  # already CLOSED: no event
    assert all(isinstance(e, StateChanged) for e in seen)
    assert [(e.old, e.new) for e in seen] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (CLOSED, OPEN),
        (OPEN, CLOSED),
    ]
    assert {e.name for e in seen} == {"svc"}
    assert [e.at for e in seen] == [100.0, 110.0, 110.0, 120.0, 120.0, 120.0, 120.0]
    assert seen[0].failures == 2


def test_a_raising_hook_never_breaks_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged; the transition still happens."""

    def bad_hook(_event: object) -> None:
        raise RuntimeError("hook bug")

    br, _ = make(threshold=1, hooks=(bad_hook,))
    br.record_failure(0)
    assert br.state is OPEN
    assert "hook bug" in caplog.text


# -- CircuitState ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(CircuitState))
def test_circuit_state_is_a_str_enum_equal_to_its_name(state: CircuitState) -> None:
    """CircuitState is a str enum: state == "OPEN" holds, str()/format() give the bare name."""
    assert isinstance(state, str)
    assert state == state.name
    assert str(state) == state.name
    assert f"{state}" == state.name
    assert CircuitState(state.name) is state


def test_breaker_state_compares_equal_to_plain_strings() -> None:
    """breaker.state == "OPEN" holds once it opens (and != "CLOSED")."""
    br, _ = make(threshold=1)
    assert br.state == "CLOSED"
    br.record_failure(0)
    assert br.state == "OPEN"
    assert br.state != "CLOSED"
    assert {"CLOSED", "OPEN", "HALF_OPEN"} == {s.value for s in CircuitState}


# -- the decorator gives a probe's permit back -------------------------------------------------


def _open_decorated_breaker() -> tuple[CircuitBreaker, FakeClock, ResilientConfig]:
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_ms=10_000),
    )
    clock = FakeClock()
    br = CircuitBreaker(config.circuit_breaker, name="decorated", clock=clock)
    br.force_open()
    clock.advance(COOLDOWN_S)
    return br, clock, config


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cancelled_async_probe_gives_its_permit_back(backend: str) -> None:
    """An async probe cancelled mid-await frees the permit: the next call becomes the probe."""
    br, _, config = _open_decorated_breaker()
    entries = 0

    async def main() -> None:
        nonlocal entries
        entered, gate = anyio.Event(), anyio.Event()

        @resilient_api(config, breaker=br)
        async def call() -> str:
            nonlocal entries
            entries += 1
            entered.set()
            await gate.wait()
            return "recovered"

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await entered.wait()
            assert br.state is HALF_OPEN
            with pytest.raises(CircuitOpenError):
                await call()  # the permit is taken: rejected without entering
            assert entries == 1
            tg.cancel_scope.cancel()

        assert br.state is HALF_OPEN
        gate.set()
        assert await call() == "recovered"  # would raise CircuitOpenError if the permit stuck
        assert entries == 2
        assert br.state is CLOSED

    anyio.run(main, backend=backend)


@pytest.mark.parametrize(
    "error",
    [KeyboardInterrupt, ValueError, KeyError, SystemExit],
    ids=lambda e: e.__name__,
)
def test_sync_probe_ending_in_a_non_http_error_gives_its_permit_back(
    error: type[BaseException],
) -> None:
    """A sync probe raising KeyboardInterrupt/ValueError: re-raised, not recorded, permit freed."""
    br, _, config = _open_decorated_breaker()
    calls: list[str] = []

    @resilient_api(config, breaker=br)
    def call(raise_: type[BaseException] | None) -> str:
        calls.append("entered")
        if raise_ is not None:
            raise raise_("boom")
        return "ok"

    with pytest.raises(error):
        call(error)
    assert calls == ["entered"]  # not retried
    assert br.state is HALF_OPEN  # neither closed nor re-opened
    assert call(None) == "ok"  # the next caller is the probe
    assert calls == ["entered", "entered"]
    assert br.state is CLOSED


def test_probe_failure_through_the_decorator_reopens_with_fresh_cooldown() -> None:
    """A decorated probe raising a transport error re-opens the breaker for the full cooldown."""
    br, clock, config = _open_decorated_breaker()

    @resilient_api(config, breaker=br)
    def call() -> None:
        clock.advance(2.0)
        raise ConnectionResetError("reset by peer")

    with pytest.raises(ConnectionResetError):
        call()
    assert br.state is OPEN
    assert br.retry_after == pytest.approx(COOLDOWN_S)
    with pytest.raises(CircuitOpenError) as info:
        call()
    assert info.value.name == "decorated"


def test_decorated_breaker_opens_on_its_own_retries_under_set_testing() -> None:
    """Under set_testing(clock=fake), a call's own failed retries open its private breaker."""
    clock = FakeClock()
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=0.1, max_retries=5),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=10_000),
    )
    attempts: list[float] = []

    @resilient_api(config)
    def flaky() -> None:
        attempts.append(clock.now)
        raise TimeoutError("read timeout")

    breaker = flaky.breaker
    with set_testing(clock=clock):
        with pytest.raises(TimeoutError):  # the last error, unwrapped
            flaky()
        assert len(attempts) == 2  # stopped retrying when the breaker opened
        assert breaker.state is OPEN
        with pytest.raises(CircuitOpenError) as info:
            flaky()
        assert len(attempts) == 2  # rejected without I/O
        assert info.value.retry_after == pytest.approx(COOLDOWN_S)
        assert info.value.name == f"{flaky.__module__}.{flaky.__qualname__}"
        assert breaker.name == info.value.name
        clock.advance(COOLDOWN_S)
        assert breaker.state is OPEN  # reading does not claim the probe


def test_a_call_admitted_before_the_breaker_opened_cannot_reopen_it_after_it_closed() -> None:
    """A slow call admitted while CLOSED, failing after the breaker opened, probed and closed
    again, belongs to an earlier CLOSED period: its failure is not counted (threshold 1)."""
    clock = FakeClock()
    br = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1_000), clock=clock)
    slow = br.acquire()  # admitted while CLOSED; its answer comes much later
    fast = br.acquire()
    br.record_failure(fast)  # opens it
    assert br.state is OPEN
    clock.advance(1.0)
    probe = br.acquire()
    br.record_success(probe)  # closes it: a new CLOSED period
    assert br.state is CLOSED
    br.record_failure(slow)  # stale: ignored
    assert br.state is CLOSED
    assert br.failure_count == 0
    br.record_failure(br.acquire())  # a call of the current period still counts
    assert br.state is OPEN


def test_a_success_from_an_earlier_period_does_not_reset_the_current_count() -> None:
    """The same for successes: a stale success cannot wipe failures counted after a reset."""
    br = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3), clock=FakeClock())
    stale = br.acquire()
    br.reset()
    br.record_failure(br.acquire())
    br.record_success(stale)
    assert br.failure_count == 1
