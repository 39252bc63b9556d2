"""The engine's core only decides: ``retry_flow`` driven by hand.

Each test drives the generator itself, with a breaker kept in memory on a fake
clock and no hook installed, and reads the decisions it yields.  They hold what
``smoothapi.flow`` promises:

* events are decisions (``Emit``), yielded in the order the call meets them - the
  flow never sends one itself (a process-wide hook hears nothing unless the
  driver delivers the ``Emit``);
* each stop rule ends the call with its ``RetriesExhausted.reason``;
* the core never reads a breaker property that may do I/O (``state``,
  ``retry_after``, ``failure_count``): the breaker here raises on each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from smoothapi import (
    BackoffConfig,
    CallRejected,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    Event,
    FallbackServed,
    ResilientConfig,
    RetriesExhausted,
    RetryBudgetConfig,
    RetryBudgetExhausted,
    RetryScheduled,
    add_hook,
    remove_hook,
)
from smoothapi.engine import (
    ACQUIRE,
    ANSWERED,
    ATTEMPT,
    FAILURE,
    IGNORED,
    SUCCESS,
    Emit,
    Finish,
    Outcome,
    Policy,
    Record,
    Resend,
    Sleep,
    Within,
    retry_flow,
    run_async,
    run_sync,
)
from smoothapi.testing import FakeClock

COOLDOWN = 10.0
DOWN = ConnectionError("down")


STRICT = [False]  # on during each test of this module (see `strict`)


class NoPropertyReads(CircuitBreaker):
    """A memory breaker whose properties fail the test: the core must get what it needs
    from the breaker's replies (admit, the reports), never from a read.

    Only during this module's tests: a breaker outlives its test in the registry of
    live breakers, which other tests' metrics read."""

    __slots__ = ()

    @property
    def state(self) -> CircuitState:
        if STRICT[0]:
            raise AssertionError("the core read breaker.state")
        return super().state

    @property
    def retry_after(self) -> float:
        if STRICT[0]:
            raise AssertionError("the core read breaker.retry_after")
        return super().retry_after

    @property
    def failure_count(self) -> int:
        if STRICT[0]:
            raise AssertionError("the core read breaker.failure_count")
        return super().failure_count


@pytest.fixture(autouse=True)
def strict() -> Iterator[None]:
    STRICT[0] = True
    yield
    STRICT[0] = False


def failed(retry_after: float | None = None, *, sent: bool = True) -> Outcome:
    return Outcome(FAILURE, error=DOWN, retry_after=retry_after, sent=sent)


def make_policy(
    clock: FakeClock,
    *,
    max_retries: int = 3,
    threshold: int = 100,
    **options: Any,
) -> Policy:
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=max_retries, base_delay=1.0, max_delay=8.0),
        **options,
    )
    breaker = NoPropertyReads(
        CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=COOLDOWN * 1000),
        name="api",
        clock=clock,
    )
    return Policy(
        config,
        breaker,
        classify_error=lambda exc: Outcome(FAILURE, error=exc),
        classify_value=lambda value: Outcome(SUCCESS, value),
        rand=lambda: 0.5,
    )


def drive(
    policy: Policy,
    clock: FakeClock,
    outcomes: list[Outcome],
    *,
    during_sleep: Callable[[], object] = lambda: None,
    **flow_options: Any,
) -> list[Any]:
    """Drive ``retry_flow`` as a driver would, minus the I/O; return what it decided.

    Each entry: ``"ACQUIRE"``, ``"ATTEMPT"``, ``("Within", s)``, ``(method, ticket)`` for a
    Record, the event for an Emit (not delivered: no hook runs), ``("Sleep", s)`` (the
    clock moves that far, then ``during_sleep()`` runs), and last the Finish itself.
    """
    breaker = policy.breaker
    pending = iter(outcomes)
    flow = retry_flow(policy, flow_options.pop("fallback", None), **flow_options)
    seen: list[Any] = []
    decision = next(flow)
    while True:
        reply: Any = None
        if decision is ACQUIRE:
            seen.append("ACQUIRE")
            reply = breaker.admit()
        elif decision is ATTEMPT or isinstance(decision, Within):
            seen.append(("Within", decision.seconds) if isinstance(decision, Within) else "ATTEMPT")
            reply = next(pending)
        elif isinstance(decision, Record):
            seen.append((decision.method, decision.ticket))
            report = getattr(breaker, decision.method)
            reply = (
                report(decision.ticket)
                if decision.retry_after is None
                else report(decision.ticket, retry_after=decision.retry_after)
            )
        elif isinstance(decision, Emit):
            assert decision.hooks == policy.hooks
            seen.append(decision.event)
        elif isinstance(decision, Sleep):
            seen.append(("Sleep", decision.seconds))
            clock.advance(decision.seconds)
            during_sleep()
        else:
            assert isinstance(decision, Finish)
            seen.append(decision)
            with pytest.raises(StopIteration):
                flow.send(None)
            return seen
        decision = flow.send(reply)


def shape(seen: list[Any]) -> list[Any]:
    """The decisions, with events and Finish shown by kind (and a give-up's reason)."""
    out: list[Any] = []
    for item in seen:
        if isinstance(item, RetriesExhausted):
            out.append(("RetriesExhausted", item.reason))
        elif hasattr(item, "_fields"):  # another event (a named tuple)
            out.append(type(item).__name__)
        elif isinstance(item, tuple):
            out.append(item[0] if item[0] in ("record_failure", "record_success") else item)
        elif isinstance(item, Finish):
            out.append("Finish")
        else:
            out.append(item)
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


@pytest.fixture
def heard() -> Iterator[list[Event]]:
    """A process-wide hook: the flow itself must never send it anything."""
    events: list[Event] = []
    add_hook(events.append)
    yield events
    remove_hook(events.append)


def test_a_retried_failure_yields_its_event_before_the_sleep(
    clock: FakeClock, heard: list[Event]
) -> None:
    """Fail, then succeed: RetryScheduled is a decision, between the report and the sleep.
    Undelivered, it reaches no hook: the core sent nothing itself."""
    policy = make_policy(clock)
    seen = drive(policy, clock, [failed(), Outcome(SUCCESS, "ok")])
    assert shape(seen) == [
        "ACQUIRE",
        "ATTEMPT",
        "record_failure",
        "RetryScheduled",
        ("Sleep", 0.5),  # full jitter of base_delay 1.0, rand 0.5
        "ACQUIRE",
        "ATTEMPT",
        "record_success",
        "Finish",
    ]
    assert seen[3] == RetryScheduled("api", 1, 0.5, None, DOWN)
    assert (seen[-1].value, seen[-1].error, seen[-1].attempts) == ("ok", None, 2)
    assert heard == []


@pytest.mark.parametrize(
    ("kind", "report"), [(SUCCESS, "record_success"), (ANSWERED, "record_success")]
)
def test_a_success_or_an_answer_is_reported_and_sends_no_event(
    clock: FakeClock, kind: Any, report: str
) -> None:
    seen = drive(make_policy(clock), clock, [Outcome(kind, "value")])
    assert shape(seen) == ["ACQUIRE", "ATTEMPT", report, "Finish"]


def test_an_ignored_result_gives_the_ticket_back_and_sends_no_event(clock: FakeClock) -> None:
    seen = drive(make_policy(clock), clock, [Outcome(IGNORED, error=KeyboardInterrupt())])
    assert shape(seen) == ["ACQUIRE", "ATTEMPT", ("release", 2), "Finish"]
    assert isinstance(seen[-1].error, KeyboardInterrupt)


# -- each stop rule, in the order they are tried ----------------------------------------------


def test_rule_1_breaker_open_after_the_failure_that_opened_it(clock: FakeClock) -> None:
    """The report's reply (OPEN) stops the call; the fallback gets the last error."""
    policy = make_policy(clock, threshold=1)
    seen = drive(policy, clock, [failed()], fallback=lambda error: ("fallback", error))
    assert shape(seen) == [
        "ACQUIRE",
        "ATTEMPT",
        "record_failure",
        ("RetriesExhausted", "breaker open"),
        "FallbackServed",
        "Finish",
    ]
    assert seen[-2] == FallbackServed("api", DOWN)
    assert seen[-1].value == ("fallback", DOWN)
    assert seen[-1].fallback


def test_rule_1_breaker_open_for_a_failing_value_hints_the_cooldown(clock: FakeClock) -> None:
    """A failure with no exception (a 503 response) that opens the breaker: the fallback's
    rejection error says when a probe may go, from the config, not from a property read."""
    policy = make_policy(clock, threshold=1)
    seen = drive(policy, clock, [Outcome(FAILURE, "503")], fallback=lambda error: error)
    error = seen[-1].value
    assert isinstance(error, CircuitOpenError)
    assert (error.name, error.retry_after) == ("api", COOLDOWN)


def test_rule_1_breaker_open_when_the_retry_is_rejected(clock: FakeClock) -> None:
    """Someone else opens the breaker during the sleep: the retry's ACQUIRE is rejected and
    the call stops, its error's retry_after taken from admit()'s reply."""
    policy = make_policy(clock)
    seen = drive(
        policy,
        clock,
        [Outcome(FAILURE, "503")],
        during_sleep=policy.breaker.force_open,
        fallback=lambda error: error,
    )
    assert shape(seen) == [
        "ACQUIRE",
        "ATTEMPT",
        "record_failure",
        "RetryScheduled",
        ("Sleep", 0.5),
        "ACQUIRE",
        ("RetriesExhausted", "breaker open"),
        "FallbackServed",
        "Finish",
    ]
    assert seen[-1].value.retry_after == COOLDOWN


def test_a_call_rejected_up_front_says_so_before_its_fallback(clock: FakeClock) -> None:
    policy = make_policy(clock)
    policy.breaker.force_open()
    clock.advance(4.0)
    seen = drive(policy, clock, [], fallback=lambda error: error)
    assert shape(seen) == ["ACQUIRE", "CallRejected", "FallbackServed", "Finish"]
    assert seen[1] == CallRejected("api", COOLDOWN - 4.0)
    assert seen[-1].value.retry_after == COOLDOWN - 4.0
    assert seen[-1].attempts == 0

    without = drive(policy, clock, [])
    assert shape(without) == ["ACQUIRE", "CallRejected", "Finish"]
    assert isinstance(without[-1].error, CircuitOpenError)


@pytest.mark.parametrize(
    ("options", "reason"),
    [({}, "retries exhausted"), ({"one_attempt": True}, "outer mount point retries")],
)
def test_rule_2_retries_exhausted_or_an_outer_mount_point_retries(
    clock: FakeClock, options: dict[str, Any], reason: str
) -> None:
    policy = make_policy(clock, max_retries=1)
    outcomes = [failed(), failed()]
    seen = drive(policy, clock, outcomes, **options)
    attempts = 1 if options else 2
    assert shape(seen)[-2:] == [("RetriesExhausted", reason), "Finish"]
    assert seen[-2] == RetriesExhausted("api", attempts, None, DOWN, reason)
    assert shape(seen).count("RetryScheduled") == attempts - 1
    assert seen[-1].error is DOWN


@pytest.mark.parametrize(
    ("resend", "sent", "stops"),
    [
        (Resend.NEVER, False, True),
        (Resend.IF_NOT_SENT, True, True),
        (Resend.IF_NOT_SENT, False, False),
        (Resend.ALWAYS, True, False),
    ],
)
def test_rule_3_not_safe_to_resend(
    clock: FakeClock, resend: Resend, sent: bool, stops: bool
) -> None:
    policy = make_policy(clock, max_retries=1)
    seen = drive(policy, clock, [failed(sent=sent), failed(sent=sent)], resend=resend)
    if stops:
        assert shape(seen) == [
            "ACQUIRE",
            "ATTEMPT",
            "record_failure",
            ("RetriesExhausted", "not safe to resend"),
            "Finish",
        ]
    else:
        assert shape(seen)[3] == "RetryScheduled"


def test_rule_4_retry_after_over_the_cap(clock: FakeClock) -> None:
    policy = make_policy(clock, retry_after_cap=5.0)
    seen = drive(policy, clock, [failed(retry_after=60.0)])
    assert shape(seen) == [
        "ACQUIRE",
        "ATTEMPT",
        "record_failure",
        ("RetriesExhausted", "Retry-After over cap"),
        "Finish",
    ]


def test_a_retry_after_within_the_cap_is_waited_with_a_little_spread(clock: FakeClock) -> None:
    policy = make_policy(clock, retry_after_cap=5.0)
    seen = drive(policy, clock, [failed(retry_after=2.0), Outcome(SUCCESS, "ok")])
    assert seen[4] == ("Sleep", pytest.approx(2.0 + 0.5 * 0.2))


def test_rule_5_deadline_before_the_sleep(clock: FakeClock) -> None:
    """The backoff would end past the deadline: no sleep, the call stops now."""
    policy = make_policy(clock, deadline=2.0)
    seen = drive(policy, clock, [failed(retry_after=3.0)])
    assert shape(seen) == [
        "ACQUIRE",
        ("Within", 2.0),
        "record_failure",
        ("RetriesExhausted", "deadline"),
        "Finish",
    ]


def test_rule_5_deadline_passed_during_the_sleep(clock: FakeClock) -> None:
    """The sleep overran (a slow wake-up): the retry's ticket is given back unused."""
    policy = make_policy(clock, deadline=2.0)
    seen = drive(policy, clock, [failed()], during_sleep=lambda: clock.advance(5.0))
    assert shape(seen) == [
        "ACQUIRE",
        ("Within", 2.0),
        "record_failure",
        "RetryScheduled",
        ("Sleep", 0.5),
        "ACQUIRE",
        ("release", 2),
        ("RetriesExhausted", "deadline"),
        "Finish",
    ]


def test_an_attempt_under_a_deadline_gets_the_time_left(clock: FakeClock) -> None:
    policy = make_policy(clock, deadline=2.0)
    seen = drive(policy, clock, [failed(), Outcome(SUCCESS, "ok")])
    assert seen[6] == ("Within", pytest.approx(1.5))


def test_rule_6_retry_budget_exhausted(clock: FakeClock) -> None:
    """The budget refuses (it is tried last: a refusal is its only side effect): two events,
    RetryBudgetExhausted first."""
    policy = make_policy(clock, retry_budget=RetryBudgetConfig(max_tokens=1.0))
    seen = drive(policy, clock, [failed(), failed()])
    assert shape(seen) == [
        "ACQUIRE",
        "ATTEMPT",
        "record_failure",
        "RetryScheduled",  # the first retry spends the only token above the floor
        ("Sleep", 0.5),
        "ACQUIRE",
        "ATTEMPT",
        "record_failure",
        "RetryBudgetExhausted",
        ("RetriesExhausted", "retry budget exhausted"),
        "Finish",
    ]
    assert seen[-3] == RetryBudgetExhausted("api", 2, None, DOWN)


def test_the_rules_are_tried_in_order(clock: FakeClock) -> None:
    """A failure that breaks every rule at once is stopped by the first: breaker open."""
    policy = make_policy(
        clock,
        threshold=1,
        max_retries=0,
        retry_after_cap=1.0,
        deadline=0.5,
        retry_budget=RetryBudgetConfig(max_tokens=1.0),
    )
    policy.budget.tokens = 0.0  # type: ignore[union-attr]
    seen = drive(policy, clock, [failed(retry_after=9.0, sent=True)], resend=Resend.NEVER)
    assert shape(seen)[3] == ("RetriesExhausted", "breaker open")


# -- the drivers read no property either -----------------------------------------------------


def test_run_sync_reads_no_breaker_property_through_an_outage(clock: FakeClock) -> None:
    policy = make_policy(clock, threshold=2)
    calls = 0

    def attempt() -> str:
        nonlocal calls
        calls += 1
        raise DOWN

    with pytest.raises(ConnectionError):
        run_sync(policy, attempt)  # two failures open the breaker
    assert run_sync(policy, attempt, fallback=lambda error: "cached") == "cached"
    assert calls == 2


@pytest.mark.anyio
async def test_run_async_reads_no_breaker_property_through_an_outage(clock: FakeClock) -> None:
    policy = make_policy(clock, threshold=2)

    async def attempt() -> str:
        raise DOWN

    with pytest.raises(ConnectionError):
        await run_async(policy, attempt)
    assert await run_async(policy, attempt, fallback=lambda error: "cached") == "cached"
