"""Hedged requests' parts: the delay (fixed, or a percentile of recent attempts), the race's
bookkeeping (:class:`smoothapi.hedge._Race`, no I/O, on a fake clock), and :func:`hedged`
itself with attempts that are plain coroutines - no network - under asyncio and trio.

The HTTP side (a real server with a slow tail, both transports' pools, the decorator
calling httpx) is in ``tests/mounts/test_hedging.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from smoothapi import (
    BulkheadConfig,
    CircuitBreaker,
    Event,
    HedgeSent,
    HedgingConfig,
    ResilientConfig,
    resilient_api,
)
from smoothapi.config import RetryBudgetConfig
from smoothapi.engine import _attempt_async
from smoothapi.flow import FAILURE, IGNORED, SUCCESS, Outcome, Policy
from smoothapi.hedge import EVERY, KNOWN, SAMPLES, HedgeDelay, _Race, hedged
from smoothapi.load import percentile

GUARD = 20.0  # liveness bound


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """A liveness bound: fail if the block takes ``GUARD`` seconds - also when it ends only
    because the bound cancelled it (a cancellation that found nothing left to interrupt)."""
    with anyio.fail_after(GUARD) as scope:
        yield
    assert not scope.cancel_called, f"needed the {GUARD} s guard's cancellation to end"


# -- the percentile -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([5.0], 50.0, 5.0),  # one value: it, whatever the share
        ([5.0], 99.9, 5.0),
        ([3.0, 1.0, 2.0], 50.0, 2.0),  # unsorted input; rank ceil(1.5) = 2
        ([1.0, 2.0, 3.0, 4.0], 50.0, 2.0),  # rank 2: nearest rank, no interpolation
        ([1.0, 2.0, 3.0, 4.0], 50.1, 3.0),  # just past a rank: the next value
        ([float(i) for i in range(1, 21)], 95.0, 19.0),  # rank 19 of 20
        ([float(i) for i in range(1, 21)], 1.0, 1.0),  # the lowest share: the smallest
        ([float(i) for i in range(1, 101)], 99.0, 99.0),
        ([float(i) for i in range(1, 101)], 99.5, 100.0),
        ([float(i) for i in range(1, 129)], 50.0, 64.0),
        ([2.0, 2.0, 2.0, 9.0], 75.0, 2.0),  # ties
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], share: float, expected: float) -> None:
    """``percentile(values, p)`` is the value of rank ceil(p/100 * n) in sorted order."""
    assert percentile(values, share) == expected


# -- the delay ----------------------------------------------------------------------------------


def test_a_fixed_delay_ignores_samples_and_never_goes_below_min_delay() -> None:
    """Without ``percentile`` the delay is ``delay`` (at least ``min_delay``), whatever the
    attempts took."""
    tracker = HedgeDelay(HedgingConfig(delay=0.05))
    for _ in range(100):
        tracker.record(9.0)
    assert (tracker.current, tracker.samples) == (0.05, [])
    assert HedgeDelay(HedgingConfig(delay=0.0, min_delay=0.01)).current == 0.01


def test_the_percentile_replaces_the_delay_once_enough_samples_are_known() -> None:
    """With ``percentile``: the fixed delay until 20 samples; at the 20th the percentile of
    those; then recomputed every 16 samples, not between."""
    tracker = HedgeDelay(HedgingConfig(delay=5.0, percentile=50.0, min_delay=0.001))
    for i in range(1, KNOWN):
        tracker.record(float(i))  # 1..19
    assert tracker.current == 5.0
    tracker.record(20.0)
    assert tracker.current == 10.0  # the median of 1..20 (rank 10)
    for _ in range(EVERY - 1):
        tracker.record(100.0)
    assert tracker.current == 10.0  # 15 new samples: not yet
    tracker.record(100.0)
    assert tracker.current == 18.0  # recomputed over 36 samples (1..20, 16 x 100): rank 18


def test_the_percentile_keeps_the_recent_samples_only_and_respects_min_delay() -> None:
    """The percentile is taken over the last 128 samples (older ones are replaced), and is
    never below ``min_delay``."""
    tracker = HedgeDelay(HedgingConfig(delay=5.0, percentile=90.0, min_delay=0.5))
    for _ in range(SAMPLES):
        tracker.record(3.0)
    assert tracker.current == 3.0
    for _ in range(SAMPLES):
        tracker.record(0.001)
    assert len(tracker.samples) == SAMPLES
    assert tracker.current == 0.5  # every sample is 1 ms now: floored at min_delay


# -- the race's bookkeeping ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy_of(config: ResilientConfig, **kwargs: Any) -> Policy:
    breaker = CircuitBreaker(config.circuit_breaker, name="hedge-unit")
    return Policy(
        config,
        breaker,
        classify_error=lambda exc: Outcome(IGNORED, error=exc),
        classify_value=lambda value: Outcome(FAILURE if value == "fail" else SUCCESS, value),
        **kwargs,
    )


def race_of(
    hedging: HedgingConfig, *, within: float | None = None, **config: Any
) -> tuple[_Race, Clock, list[Event]]:
    events: list[Event] = []
    policy = policy_of(ResilientConfig(hedging=hedging, hooks=(events.append,), **config))
    clock = Clock()
    return _Race(policy, HedgeDelay(hedging), clock, within), clock, events


def test_the_race_schedules_each_hedge_a_delay_after_the_last_was_due() -> None:
    """The first hedge is due a delay after the start, each next one a delay after the last;
    an answer that comes in between does not move the schedule; after max_hedges turns
    no more is due (``wait()`` is None)."""
    race, clock, events = race_of(HedgingConfig(delay=0.5, max_hedges=2))
    assert race.wait() == 0.5
    clock.now += 0.2
    assert race.wait() == pytest.approx(0.3)
    clock.now += 0.3
    assert race.wait() == 0.0
    assert race.hedge() == 1
    assert race.wait() == 0.5
    clock.now += 0.1
    assert race.answered(0, Outcome(FAILURE, "fail")) is None  # the first failed: wait on
    assert not race.over
    assert race.wait() == pytest.approx(0.4)
    clock.now += 0.4
    assert race.hedge() == 2
    assert race.wait() is None
    assert [(e.hedge, e.delay) for e in events if isinstance(e, HedgeSent)] == [(1, 0.5), (2, 0.5)]


@pytest.mark.parametrize(
    "why",
    ["breaker-failure", "breaker-open", "budget-empty", "bulkhead-full", "deadline-passed"],
)
def test_a_hedge_is_refused_when_it_would_cost_something_scarce(why: str) -> None:
    """No hedge - and no HedgeSent - while the breaker has a failure counted or is open, the
    retry budget is empty, the bulkhead has no free permit, or the call's deadline has no
    time left; the refused turn still counts against max_hedges."""
    kwargs: dict[str, Any] = {}
    if why == "budget-empty":
        kwargs["retry_budget"] = RetryBudgetConfig(max_tokens=2)
    if why == "bulkhead-full":
        kwargs["bulkhead"] = BulkheadConfig(max_concurrent=1)
    within = 0.5 if why == "deadline-passed" else None
    race, clock, events = race_of(HedgingConfig(delay=0.5), within=within, **kwargs)
    policy = race.policy
    breaker = policy.breaker
    if why == "breaker-failure":
        breaker.record_failure(breaker.acquire())
    elif why == "breaker-open":
        breaker.force_open()
    elif why == "budget-empty":
        assert policy.budget is not None
        while policy.budget.try_spend():
            pass
    elif why == "bulkhead-full":
        assert policy.load is not None
        assert policy.load.try_enter() is not None  # the first attempt's permit
    clock.now += 0.5
    assert race.hedge() is None
    assert race.wait() is None  # max_hedges=1: the turn is used up
    assert race.running == {0: True}
    assert events == []


def test_a_hedge_takes_its_permit_and_budget_token_and_gives_the_permit_back() -> None:
    """An admitted hedge holds a bulkhead permit and spent a budget token; its answer, or
    its cancellation, gives the permit back."""
    for cancelled in (False, True):
        race, clock, _ = race_of(
            HedgingConfig(delay=0.1),
            bulkhead=BulkheadConfig(max_concurrent=2),
            retry_budget=RetryBudgetConfig(max_tokens=10),
        )
        load, budget = race.policy.load, race.policy.budget
        assert load is not None
        assert load.bulkhead is not None
        assert budget is not None
        clock.now += 0.1
        assert race.hedge() == 1
        assert (load.bulkhead.active, budget.tokens) == (1, 9.0)
        if cancelled:
            race.lost(1, None)
        else:
            assert race.answered(1, Outcome(SUCCESS, "b")) is None
        assert load.bulkhead.active == 0


def test_the_first_final_outcome_wins_and_every_other_result_is_let_go() -> None:
    """A failure is replaced by a later outcome (and let go); a success ends the race; an
    answer after it is a loser's (let go); when every attempt failed, the last failure is
    the race's outcome."""
    race, clock, _ = race_of(HedgingConfig(delay=0.1, max_hedges=2))
    clock.now += 0.1
    race.hedge()
    clock.now += 0.1
    race.hedge()
    first = Outcome(FAILURE, "fail")
    won = Outcome(SUCCESS, "won")
    late = Outcome(SUCCESS, "late")
    assert race.answered(0, first) is None
    assert race.answered(2, won) is first
    assert race.over
    assert race.last is won
    assert race.answered(1, late) is late
    assert race.spare(True) is None
    assert race.spare(False) is won  # not returned (the caller was cancelled): let go

    race, clock, _ = race_of(HedgingConfig(delay=0.1))
    clock.now += 0.1
    race.hedge()
    one, two = Outcome(FAILURE, "fail"), Outcome(FAILURE, "fail")
    assert race.answered(1, one) is None
    assert not race.over
    assert race.answered(0, two) is one
    assert race.over
    assert race.last is two


def test_an_ignored_outcome_a_bug_is_never_hedged_away() -> None:
    """An ignored outcome (a bug, a cancellation) ends the race at once, as a success does."""
    race, clock, _ = race_of(HedgingConfig(delay=0.1))
    clock.now += 0.1
    race.hedge()
    bug = Outcome(IGNORED, error=ValueError("bug"))
    assert race.answered(0, bug) is None
    assert race.over
    assert race.last is bug


# -- hedged() with plain coroutines -------------------------------------------------------------


def attempts(*scripts: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """An ``attempt()`` whose n-th call runs ``scripts[n]``."""
    calls = iter(scripts)

    def attempt() -> Awaitable[Any]:
        return next(calls)()

    return attempt


async def run_hedged(
    policy: Policy, attempt: Callable[[], Awaitable[Any]], within: float | None = None
) -> tuple[Outcome, list[Outcome]]:
    let_go: list[Outcome] = []

    async def discard(outcome: Outcome) -> None:
        let_go.append(outcome)

    with guard():
        outcome = await hedged(policy, (attempt, None), within, _attempt_async, discard)
    return outcome, let_go


@pytest.mark.anyio
async def test_a_loser_that_returns_anyway_is_let_go() -> None:
    """The hedge wins; the first attempt, cancelled, returns a result all the same (it
    swallowed the cancellation): that result is discarded, not lost."""
    policy = policy_of(ResilientConfig(hedging=HedgingConfig(delay=0.01)))
    stubborn = Outcome(SUCCESS)

    async def first() -> str:
        try:
            await anyio.sleep(GUARD)
        except anyio.get_cancelled_exc_class():
            return "stubborn"
        return "slept"

    async def hedge() -> str:
        return "hedge"

    outcome, let_go = await run_hedged(policy, attempts(first, hedge))
    assert (outcome.kind, outcome.value) == (SUCCESS, "hedge")
    assert [o.value for o in let_go] == ["stubborn"]
    assert stubborn.kind is SUCCESS


@pytest.mark.anyio
async def test_a_bug_in_the_first_attempt_ends_the_race_and_cancels_the_hedge() -> None:
    """The first attempt raises a bug once the hedge runs: the bug is the outcome (never
    hedged away) and the hedge is cancelled."""
    policy = policy_of(ResilientConfig(hedging=HedgingConfig(delay=0.01)))
    hedge_started = anyio.Event()
    ended: list[str] = []

    async def first() -> str:
        await hedge_started.wait()
        raise ValueError("bug")

    async def hedge() -> str:
        hedge_started.set()
        try:
            await anyio.sleep(GUARD)
        finally:
            ended.append("hedge")
        return "hedge"

    outcome, _ = await run_hedged(policy, attempts(first, hedge))
    assert outcome.kind is IGNORED
    assert isinstance(outcome.error, ValueError)
    assert ended == ["hedge"]


@pytest.mark.anyio
async def test_no_hedge_once_the_deadline_has_no_time_left() -> None:
    """The call's deadline (``within``) ends before the hedge delay: no hedge is sent."""
    events: list[Event] = []
    policy = policy_of(ResilientConfig(hedging=HedgingConfig(delay=0.05), hooks=(events.append,)))

    async def first() -> str:
        await anyio.sleep(0.2)
        return "first"

    outcome, _ = await run_hedged(policy, attempts(first), within=0.01)
    assert outcome.value == "first"
    assert events == []


@pytest.mark.anyio
async def test_the_winners_duration_feeds_the_percentile() -> None:
    """Each successful hedged attempt is a sample of the delay tracker (20 calls: the
    percentile is in force)."""
    policy = policy_of(
        ResilientConfig(hedging=HedgingConfig(delay=5.0, percentile=50.0, min_delay=0.001))
    )

    async def quick() -> str:
        await anyio.lowlevel.checkpoint()
        return "ok"

    for _ in range(KNOWN):
        outcome, _ = await run_hedged(policy, attempts(quick))
        assert outcome.value == "ok"
    assert isinstance(policy.hedger, HedgeDelay)
    assert len(policy.hedger.samples) == KNOWN
    assert policy.hedger.current < 5.0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_an_asyncio_caller_cancelled_while_the_losers_wind_down_stays_cancelled() -> None:
    """The hedge won; the loser's cleanup takes a while; the caller's task is cancelled
    meanwhile: the call ends cancelled (the cancellation is not swallowed), once the loser
    is done (no task left behind)."""
    cleanup = asyncio.Event()
    ended: list[str] = []
    calls: list[int] = []

    @resilient_api(ResilientConfig(hedging=HedgingConfig(delay=0.01)))
    async def work() -> str:
        calls.append(1)
        if len(calls) == 2:
            return "hedge"
        try:
            await asyncio.sleep(GUARD)
        finally:
            cleanup.set()
            try:
                await asyncio.sleep(50 * GUARD)  # a slow cleanup: cut short by the next cancel
            finally:
                ended.append("loser")
        return "first"

    baseline = asyncio.all_tasks()
    task = asyncio.ensure_future(work())
    with guard():
        await cleanup.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=GUARD)  # never cancels the task itself
    assert task.cancelled()
    assert ended == ["loser"]
    assert asyncio.all_tasks() == baseline


@pytest.mark.anyio
async def test_hedge_sent_names_the_attempt_it_hedges() -> None:
    """``hedged(..., attempt=n)``: the HedgeSent of a hedge beside the call's n-th attempt
    says attempt n (the engine passes 1 unless told otherwise)."""
    events: list[Event] = []
    policy = policy_of(ResilientConfig(hedging=HedgingConfig(delay=0.01), hooks=(events.append,)))

    async def slow() -> str:
        await anyio.sleep(GUARD)
        return "slow"

    async def quick() -> str:
        return "quick"

    async def discard(outcome: Outcome) -> None:
        pass

    for attempt, expected in ((None, 1), (3, 3)):
        make = attempts(slow, quick)
        with guard():
            if attempt is None:
                outcome = await hedged(policy, (make, None), None, _attempt_async, discard)
            else:
                outcome = await hedged(
                    policy, (make, None), None, _attempt_async, discard, attempt=attempt
                )
        assert outcome.value == "quick"
        assert [(e.attempt, e.hedge) for e in events if isinstance(e, HedgeSent)][-1] == (
            expected,
            1,
        )
