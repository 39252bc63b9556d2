"""Issue 13's trip rules on the in-memory breaker, on a fake clock (no real waiting).

README, "Trip rules: failure rate, slow calls, several probes": with
``failure_rate=r`` the breaker opens on a failure after which, among the
attempts that ended in the last ``window_ms``, at least ``minimum_calls``
were seen and the failed share reaches ``r`` (exactly ``r`` trips; a success
never opens it); a 404 is a success, an ignored
outcome is not counted; the window is ten buckets (an attempt leaves it
between 90 % and 100 % of ``window_ms`` after it ended) and restarts empty
when the breaker opens, closes, is reset or forced open.  ``slow_call_ms=t``:
a success that took longer than ``t`` is a failure for the breaker (either
rule), its result still returned and not retried.  ``half_open_calls=n``: n
probes at once, n successes close, any failed (or slow) probe re-opens with
the adaptive open time, a cancelled probe gives its permit back.  The
reasons are worded as the README lists them.

Every time here is a binary fraction, so the fake clock's sums are exact and
each boundary is tested on the exact value the README names.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    ConfigTypeError,
    Event,
    ResilientConfig,
    RetryScheduled,
    StateChanged,
    WindowCounts,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.testing import FakeClock, set_testing

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
START = 1000.0  # the fake clock's start: a bucket boundary for every window used below
SLOW_S = 0.25  # slow_call_ms=250: exact in binary
TICK = 2.0**-10  # a little time, exact in binary


def make(
    *, rand: Callable[[], float] | None = None, **config: Any
) -> tuple[CircuitBreaker, FakeClock, list[StateChanged]]:
    clock = FakeClock(start=START)
    events: list[StateChanged] = []
    extra: dict[str, Any] = {} if rand is None else {"rand": rand}
    br = CircuitBreaker(
        CircuitBreakerConfig(**{"cooldown_ms": 1000, **config}),
        name="svc",
        clock=clock,
        hooks=(events.append,),
        **extra,
    )
    return br, clock, events


def run(br: CircuitBreaker, clock: FakeClock, steps: str) -> None:
    """Drive ``br`` through ``steps``: ``ok``, ``fail``, ``slow`` (a success slower than
    slow_call_ms), ``fast`` (a timed success exactly at slow_call_ms), ``ignored`` (an
    ordinary ticket given back) or ``adv=S``; ``*N`` repeats a step."""
    for step in steps.split():
        action, _, times = step.partition("*")
        for _ in range(int(times or 1)):
            if action.startswith("adv="):
                clock.advance(float(action[4:]))
                continue
            ticket = br.acquire()
            assert ticket != REJECTED, f"{step}: rejected while {br.state}"
            if action == "ok":
                br.record_success(ticket)
            elif action == "fail":
                br.record_failure(ticket)
            elif action == "slow":
                br.record_success(ticket, elapsed=SLOW_S + TICK)
            elif action == "fast":
                br.record_success(ticket, elapsed=SLOW_S)
            else:
                assert action == "ignored", action
                br.release(ticket)


def failed(steps: str) -> int:
    """How many failures (slow calls included) ``steps`` reports."""
    return sum(
        int(times or 1)
        for action, _, times in (step.partition("*") for step in steps.split())
        if action in ("fail", "slow")
    )


def trip(br: CircuitBreaker) -> None:
    for _ in range(10_000):
        if br.state is OPEN:
            return
        br.record_failure(br.acquire())
    raise AssertionError("the breaker never opened")


# -- the failure-rate rule, table-driven -----------------------------------------------------

RATE = {"failure_rate": 0.5, "minimum_calls": 4, "window_ms": 10_000, "slow_call_ms": 250}

# (steps, config overrides, state after, window after (None: as after a trip), reason)
RATE_CASES: list[tuple[str, dict[str, Any], CircuitState, tuple[int, int, int] | None, str]] = [
    ("fail*3", {}, CLOSED, (3, 3, 0), ""),  # under minimum_calls: no verdict
    ("fail*3", {"failure_threshold": 1}, CLOSED, (3, 3, 0), ""),  # the rate rule replaces it
    ("fail*4", {}, OPEN, None, "failure rate 1.00 over 4 calls"),
    ("ok*2 fail*2", {}, OPEN, None, "failure rate 0.50 over 4 calls"),  # exactly r
    ("ok*3 fail*2", {}, CLOSED, (5, 2, 0), ""),  # 0.40 < 0.5
    (
        "ok*7 fail*3",
        {"failure_rate": 0.3, "minimum_calls": 10},
        OPEN,
        None,
        "failure rate 0.30 over 10 calls",
    ),
    ("ok*8 fail*2 ok fail", {"failure_rate": 0.3, "minimum_calls": 10}, CLOSED, (12, 3, 0), ""),
    (
        "ok*3 fail*7",
        {"failure_rate": 0.7, "minimum_calls": 10},
        OPEN,
        None,
        "failure rate 0.70 over 10 calls",
    ),
    (
        "ok*2 fail",
        {"failure_rate": 1 / 3, "minimum_calls": 3},
        OPEN,
        None,
        "failure rate 0.33 over 3 calls",
    ),
    ("ok*4 fail*3", {"failure_rate": 1.0, "minimum_calls": 1}, CLOSED, (7, 3, 0), ""),
    (
        "fail",
        {"failure_rate": 1.0, "minimum_calls": 1},
        OPEN,
        None,
        "failure rate 1.00 over 1 calls",
    ),
    ("ok*3 slow", {}, CLOSED, (4, 1, 1), ""),  # a slow success counts as a failure ...
    ("ok*2 slow*2", {}, OPEN, None, "slow call rate 0.50 over 4 calls"),  # ... and trips
    ("ok*2 slow fail", {}, OPEN, None, "failure rate 0.50 over 4 calls"),  # not all slow
    ("ok*2 fast*2 fail*3", {}, CLOSED, (7, 3, 0), ""),  # exactly slow_call_ms: not slow
    ("ignored*10 fail*3", {}, CLOSED, (3, 3, 0), ""),  # an ignored attempt is not counted
    ("fail*2 adv=10 ok*2 fail", {}, CLOSED, (3, 1, 0), ""),  # old failures left the window
    ("fail*2 adv=8 ok*2 fail", {}, OPEN, None, "failure rate 0.60 over 5 calls"),  # still in
]


@pytest.mark.parametrize(("steps", "overrides", "state", "counts", "reason"), RATE_CASES)
def test_the_failure_rate_rule(
    steps: str,
    overrides: dict[str, Any],
    state: CircuitState,
    counts: tuple[int, int, int] | None,
    reason: str,
) -> None:
    br, clock, events = make(**{**RATE, **overrides})
    run(br, clock, steps)
    assert br.state is state
    assert br.window == (counts or (0, 0, 0))  # a trip empties the window
    assert br.reason == reason
    if state is OPEN:
        assert [(e.old, e.new, e.reason) for e in events] == [(CLOSED, OPEN, reason)]
        assert br.failure_count == events[0].failures == failed(steps)  # those that tripped it
    else:
        assert events == []
        assert br.failure_count == br.window.failures  # type: ignore[union-attr]


RATES = [0.05, 0.1, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5, 0.53, 0.6, 2 / 3, 0.7, 0.75, 0.9, 1.0]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("minimum", [1, 7, 20])
def test_the_rate_rule_trips_at_the_first_failure_that_reaches_the_share_exactly(
    rate: float, minimum: int
) -> None:
    """s successes, then failures one by one: OPEN exactly at the first failure after
    which calls >= minimum_calls and failures / calls >= rate (exact arithmetic)."""
    exact = Fraction(rate).limit_denominator(1000)  # 0.53 is 53/100, 1/3 is 1/3
    for successes in range(25):
        br, clock, _ = make(failure_rate=rate, minimum_calls=minimum)
        run(br, clock, f"ok*{successes}" if successes else "")
        for failures in range(1, 61):  # rate 1.0 after a success: never due
            br.record_failure(br.acquire())
            calls = successes + failures
            due = calls >= minimum and Fraction(failures, calls) >= exact
            assert (br.state is OPEN) == due, (successes, failures, br.window)
            if due:
                assert br.reason == f"failure rate {failures / calls:.2f} over {calls} calls"
                break


# -- the window's buckets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ended", "last_in", "first_out"),
    [
        # window_ms=10_000: buckets of 1 s, and START is a bucket boundary.
        (0.0, 10.0 - TICK, 10.0),  # ended as its bucket began: counted for the whole window
        (1.0 - TICK, 9.0, 9.0 + TICK),  # ended as its bucket ended: leaves after 90 % of it
        (0.5, 9.5 - TICK, 9.5),
    ],
    ids=["bucket-start", "bucket-end", "mid-bucket"],
)
def test_an_attempt_leaves_the_window_between_90_and_100_percent_of_it(
    ended: float, last_in: float, first_out: float
) -> None:
    br, clock, _ = make(failure_rate=0.5, minimum_calls=100, window_ms=10_000)
    clock.advance(ended)
    run(br, clock, "fail")
    assert br.window == (1, 1, 0)
    clock.advance(last_in)
    assert br.window == (1, 1, 0)  # still in the window
    assert 0.9 * 10 <= first_out <= 10
    clock.advance(first_out - last_in)
    assert br.window == (0, 0, 0)  # gone


@pytest.mark.parametrize("window_ms", [10, 640, 1000, 10_000, 60_000])
@pytest.mark.parametrize("share", [0.0, 0.1, 0.37, 0.5, 0.99])
def test_every_attempt_is_in_the_window_until_90_percent_and_out_at_100_percent(
    window_ms: int, share: float
) -> None:
    """For any ending time: counted at 0.9 x window after it ended (a hair before), and gone
    at the full window (a hair after), whatever the window's size."""
    window = window_ms / 1000
    br, clock, _ = make(failure_rate=0.5, minimum_calls=100, window_ms=window_ms)
    clock.advance(share * window / 10)  # somewhere in the first bucket
    run(br, clock, "fail")
    clock.advance(0.9 * window * (1 - 1e-9))
    assert br.window == (1, 1, 0)
    clock.advance(0.1 * window + 0.9 * window * 2e-9)
    assert br.window == (0, 0, 0)


def test_a_success_on_the_lock_free_path_rolls_into_a_new_bucket() -> None:
    """A success arriving in a bucket not yet started is counted under the lock; stale
    counts from ten buckets ago are dropped, not added to it."""
    br, clock, _ = make(failure_rate=0.5, minimum_calls=100, window_ms=10_000)
    run(br, clock, "ok*3 fail")
    clock.advance(10.0)  # the same slot, ten buckets later
    run(br, clock, "ok")
    assert br.window == (1, 0, 0)
    run(br, clock, "ok*2 adv=0.5 ok")
    assert br.window == (4, 0, 0)


# -- the window restarts empty ----------------------------------------------------------------


def test_the_window_restarts_empty_on_reset_force_open_trip_and_close() -> None:
    br, clock, _ = make(failure_rate=0.5, minimum_calls=4, half_open_calls=1)
    run(br, clock, "ok*3 fail")
    assert br.window == (4, 1, 0)
    br.reset()
    assert br.window == (0, 0, 0)
    assert br.failure_count == 0
    run(br, clock, "ok*5 fail*2")
    assert br.window == (7, 2, 0)
    br.force_open()
    assert br.window == (0, 0, 0)
    assert br.reason == "forced open"
    # A success racing the opening on the lock-free path may land in the window while
    # OPEN (README: a race can only add a success); closing forgets it too.
    br._window.add(clock())  # type: ignore[union-attr]
    clock.advance(1.0)
    probe = br.acquire()
    assert probe % 2 == 1
    br.record_success(probe)
    assert br.state is CLOSED
    assert br.window == (0, 0, 0)
    # Judged on fresh calls only: three failures alone are under minimum_calls.
    run(br, clock, "fail*3")
    assert br.state is CLOSED
    run(br, clock, "fail")
    assert br.state is OPEN
    assert br.window == (0, 0, 0)


@pytest.mark.parametrize("report", ["record_success", "settle", "record_failure"])
def test_an_attempt_admitted_before_the_trip_is_not_counted_after_the_close(report: str) -> None:
    br, clock, _ = make(failure_rate=0.5, minimum_calls=2)
    old = br.clean_ticket
    run(br, clock, "fail*2 adv=1 ok")  # open, then a probe closes it: a new period
    assert br.state is CLOSED
    getattr(br, report)(old)  # the lock-free path checks the ticket first
    assert br.window == (0, 0, 0)


def test_the_consecutive_rule_is_unchanged_without_a_failure_rate() -> None:
    br, clock, events = make(failure_threshold=3)
    assert br.window is None
    run(br, clock, "fail*2 ok fail*2")  # a success resets the count
    assert (br.state, br.failure_count) == (CLOSED, 2)
    run(br, clock, "adv=3600 fail")  # time does not forget a failure
    assert br.state is OPEN
    assert br.reason == "consecutive failures"
    assert [(e.new, e.failures, e.reason) for e in events] == [(OPEN, 3, "consecutive failures")]
    assert br.clean_ticket == 0
    clock.advance(1.0)
    run(br, clock, "ok")
    assert br.state is CLOSED
    assert br.clean_ticket != 0  # the happy path is back: no rate rule, no slow rule


@pytest.mark.parametrize(
    ("steps", "reason"),
    [("slow*3", "slow calls"), ("slow fail slow", "consecutive failures")],
)
def test_slow_calls_count_for_the_consecutive_rule(steps: str, reason: str) -> None:
    br, clock, _ = make(failure_threshold=3, slow_call_ms=250)
    run(br, clock, "fast slow*2 ok")  # exactly slow_call_ms is not slow; a success resets
    assert (br.state, br.failure_count) == (CLOSED, 0)
    run(br, clock, steps)
    assert br.state is OPEN
    assert br.reason == reason


# -- several probes ---------------------------------------------------------------------------


def open_for_probes(n: int, **config: Any) -> tuple[CircuitBreaker, FakeClock, list[int]]:
    br, clock, _ = make(failure_threshold=1, half_open_calls=n, **config)
    trip(br)
    clock.advance(br.retry_after)
    probes = [br.acquire() for _ in range(n)]
    return br, clock, probes


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_n_probes_are_admitted_the_next_is_rejected_and_n_successes_close(n: int) -> None:
    br, _, probes = open_for_probes(n)
    assert all(p % 2 == 1 for p in probes)
    assert len(set(probes)) == n
    assert br.state is HALF_OPEN
    assert br.admit() == (REJECTED, 0.0)  # every permit taken: no wait to tell
    for i, probe in enumerate(reversed(probes)):  # reported out of order
        assert br.admit()[0] == REJECTED  # a used permit is not handed out again
        assert br.record_success(probe) is (CLOSED if i == n - 1 else HALF_OPEN)
    assert br.state is CLOSED
    assert br.reason == ""  # closed: the opening is over, its reason with it


@pytest.mark.parametrize("last", ["fail", "slow"])
def test_any_failed_or_slow_probe_reopens_with_the_adaptive_open_time(last: str) -> None:
    br, _, probes = open_for_probes(
        3,
        cooldown_multiplier=2,
        max_cooldown_ms=8000,
        slow_call_ms=250,
        rand=lambda: 0.5,
    )
    br.record_success(probes[1])
    br.record_success(probes[2])
    if last == "fail":
        br.record_failure(probes[0])
    else:
        br.record_success(probes[0], elapsed=SLOW_S + TICK)
    assert br.state is OPEN
    assert br.reason == "probe failed"
    assert br.retry_after == 1.5  # 1 s + 0.5 x (2 s - 1 s): the first grown open time


def test_after_a_failed_probe_the_other_probes_of_the_round_report_nothing() -> None:
    br, clock, probes = open_for_probes(3)
    br.record_failure(probes[0])
    for probe in probes[1:]:
        assert br.record_success(probe) is OPEN
        assert br.record_failure(probe) is OPEN
    clock.advance(br.retry_after)
    fresh = [br.acquire() for _ in range(3)]
    assert set(fresh).isdisjoint(probes)
    assert br.acquire() == REJECTED


@pytest.mark.parametrize("how", ["force_open", "reset"])
def test_probes_in_flight_report_nothing_after_force_open_or_reset(how: str) -> None:
    br, clock, probes = open_for_probes(3, failure_rate=0.5, minimum_calls=2)
    br.record_success(probes[0])
    getattr(br, how)()
    for probe in probes[1:]:
        br.record_success(probe)
        br.record_failure(probe)
    if how == "reset":
        assert br.state is CLOSED
        assert br.window == (0, 0, 0)  # neither stale report was counted
        return
    assert br.state is OPEN
    clock.advance(1.0)
    fresh = [br.acquire() for _ in range(3)]
    assert br.acquire() == REJECTED  # a new round: three permits, none used up before
    for probe in fresh[:2]:
        assert br.record_success(probe) is HALF_OPEN
    assert br.record_success(fresh[2]) is CLOSED


def test_a_released_probe_gives_its_permit_back_and_reports_nothing_after() -> None:
    br, _, probes = open_for_probes(2)
    assert br.acquire() == REJECTED
    assert br.release(probes[0]) is HALF_OPEN
    third = br.acquire()
    assert third % 2 == 1
    assert third not in probes
    assert br.acquire() == REJECTED
    assert br.record_success(probes[0]) is HALF_OPEN  # gave its permit back: stale
    assert br.record_failure(probes[0]) is HALF_OPEN  # a stale failure does not reopen
    assert br.record_success(probes[1]) is HALF_OPEN
    assert br.record_success(third) is CLOSED


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_async_probe_among_three_gives_its_permit_back(backend: str) -> None:
    """Through the decorator: 3 probes hold the permits, one is cancelled, and the next
    call is admitted as a probe; 3 successes close the breaker."""
    clock = FakeClock(start=START)
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=1, cooldown_ms=1000, half_open_calls=3
        ),
    )
    br = CircuitBreaker(config.circuit_breaker, name="probes", clock=clock)
    br.force_open()
    clock.advance(1.0)
    entered: list[str] = []

    async def main() -> None:
        gate = anyio.Event()
        arrived = {3: anyio.Event(), 4: anyio.Event()}  # set when that many calls entered

        @resilient_api(config, breaker=br)
        async def call(who: str) -> str:
            entered.append(who)
            if len(entered) in arrived:
                arrived[len(entered)].set()
            await gate.wait()
            return who

        async with anyio.create_task_group() as outer:
            with anyio.CancelScope() as doomed:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(call, "cancelled")
                    outer.start_soon(call, "a")
                    outer.start_soon(call, "b")
                    await arrived[3].wait()
                    with pytest.raises(CircuitOpenError):
                        await call("rejected")
                    doomed.cancel()
            assert br.state is HALF_OPEN
            outer.start_soon(call, "c")  # the cancelled probe's permit
            await arrived[4].wait()
            gate.set()
        assert br.state is CLOSED

    anyio.run(main, backend=backend)
    assert sorted(entered) == ["a", "b", "c", "cancelled"]


# -- slow calls through the decorator --------------------------------------------------------


def slow_config(**breaker: Any) -> tuple[ResilientConfig, list[Event]]:
    """Retries allowed (a slow call must still not be retried), and the events seen."""
    events: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=3),
        circuit_breaker=CircuitBreakerConfig(cooldown_ms=1000, slow_call_ms=250, **breaker),
        hooks=(events.append,),
    )
    return config, events


@pytest.mark.parametrize(("took", "slow"), [(SLOW_S, False), (SLOW_S + TICK, True)])
def test_a_slow_success_is_returned_not_retried_and_opens_the_breaker(
    took: float, slow: bool
) -> None:
    clock = FakeClock(start=START)
    config, events = slow_config(failure_threshold=1)
    calls = []

    with set_testing(clock=clock):

        @resilient_api(config)
        def fetch() -> str:
            calls.append(1)
            clock.advance(took)
            return "answer"

        assert fetch() == "answer"
        assert len(calls) == 1
        assert not any(isinstance(e, RetryScheduled) for e in events)
        assert fetch.breaker.state is (OPEN if slow else CLOSED)
        assert fetch.breaker.reason == ("slow calls" if slow else "")
        assert [e.reason for e in events if isinstance(e, StateChanged)] == (
            ["slow calls"] if slow else []
        )


@pytest.mark.anyio
@pytest.mark.parametrize(("took", "slow"), [(SLOW_S, False), (SLOW_S + TICK, True)])
async def test_a_slow_async_success_is_returned_and_counted_by_the_rate_rule(
    took: float, slow: bool
) -> None:
    clock = FakeClock(start=START)
    config, events = slow_config(failure_rate=0.5, minimum_calls=2)
    calls = []

    with set_testing(clock=clock):

        @resilient_api(config)
        async def fetch(delay: float) -> str:
            calls.append(delay)
            await anyio.lowlevel.checkpoint()
            clock.advance(delay)
            return "answer"

        assert await fetch(0.0) == "answer"
        assert fetch.breaker.window == (1, 0, 0)
        assert await fetch(took) == "answer"
        assert calls == [0.0, took]
        assert not any(isinstance(e, RetryScheduled) for e in events)
        if slow:
            assert fetch.breaker.state is OPEN
            assert fetch.breaker.reason == "slow call rate 0.50 over 2 calls"
        else:
            assert fetch.breaker.window == WindowCounts(2, 0, 0)


def test_slow_calls_are_timed_on_the_breakers_own_clock() -> None:
    """A breaker given its own clock= (no set_testing): the decorator times on that clock."""
    clock = FakeClock(start=START)
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=2, slow_call_ms=250), name="own", clock=clock
    )

    @resilient_api(ResilientConfig(backoff=BackoffConfig(max_retries=0)), breaker=breaker)
    def fetch(took: float) -> str:
        clock.advance(took)
        return "answer"

    assert [fetch(SLOW_S + TICK), fetch(SLOW_S), fetch(SLOW_S + TICK)] == ["answer"] * 3
    assert (breaker.state, breaker.failure_count) == (CLOSED, 1)  # the exact one reset it
    assert fetch(1.0) == "answer"
    assert breaker.state is OPEN
    assert breaker.reason == "slow calls"


def test_window_counts_rate() -> None:
    assert WindowCounts(8, 2, 1).rate == 0.25
    assert WindowCounts(0, 0, 0).rate == 0.0


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example.com/users/7")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


@pytest.mark.parametrize(
    ("raised", "took", "counts"),
    [
        (http_error(404), 0.0, (1, 0, 0)),  # the service answered: a success
        (http_error(404), SLOW_S + TICK, (1, 1, 1)),  # ... a slow one
        (http_error(503), SLOW_S + TICK, (1, 1, 0)),  # a failure, slow or not, counts once
        (ConnectionError("refused"), 0.0, (1, 1, 0)),
        (ValueError("a bug"), SLOW_S + TICK, (0, 0, 0)),  # ignored: not counted at all
        (KeyError("a bug"), 0.0, (0, 0, 0)),
    ],
    ids=["404", "slow-404", "slow-503", "refused", "ValueError", "KeyError"],
)
def test_what_the_decorator_counts_in_the_window(
    raised: BaseException, took: float, counts: tuple[int, int, int]
) -> None:
    clock = FakeClock(start=START)
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_rate=0.5, minimum_calls=100, slow_call_ms=250),
    )
    with set_testing(clock=clock):

        @resilient_api(config)
        def fetch() -> str:
            clock.advance(took)
            raise raised

        with pytest.raises(type(raised)):
            fetch()
        assert fetch.breaker.window == counts


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_call_is_not_counted_in_the_window(backend: str) -> None:
    config = ResilientConfig(
        circuit_breaker=CircuitBreakerConfig(failure_rate=0.5, minimum_calls=100)
    )

    @resilient_api(config)
    async def hang() -> None:
        await anyio.sleep_forever()

    async def main() -> None:
        with anyio.move_on_after(0.01):
            await hang()

    anyio.run(main, backend=backend)
    assert hang.breaker.window == (0, 0, 0)


# -- reasons ----------------------------------------------------------------------------------


def test_every_reason_in_state_changed_and_breaker_reason() -> None:
    br, clock, events = make(failure_rate=0.53, minimum_calls=212, slow_call_ms=250)
    run(br, clock, "ok*99 fail*113")
    assert br.reason == "failure rate 0.53 over 212 calls"
    clock.advance(1.0)
    run(br, clock, "fail")
    assert br.reason == "probe failed"
    br.force_open()
    assert br.reason == "forced open"
    br.reset()
    br2, clock2, events2 = make(failure_rate=0.6, minimum_calls=50, slow_call_ms=250)
    run(br2, clock2, "ok*20 slow*30")
    assert br2.reason == "slow call rate 0.60 over 50 calls"
    assert [(e.old, e.new, e.reason) for e in events + events2] == [
        (CLOSED, OPEN, "failure rate 0.53 over 212 calls"),
        (OPEN, HALF_OPEN, ""),
        (HALF_OPEN, OPEN, "probe failed"),
        (OPEN, CLOSED, ""),  # the reset (forcing an OPEN breaker open is no move)
        (CLOSED, OPEN, "slow call rate 0.60 over 50 calls"),
    ]
    assert events[0].failures == 113
    assert br.reason == ""  # reset forgets everything, why it opened too


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("failure_rate", 0, ConfigError, "must be > 0 and <= 1"),
        ("failure_rate", 1.01, ConfigError, "must be > 0 and <= 1"),
        ("failure_rate", 50, ConfigError, "a share, not a percentage"),
        ("failure_rate", float("nan"), ConfigError, "must be > 0 and <= 1"),
        ("failure_rate", "0.5", ConfigTypeError, "must be a number"),
        ("window_ms", 9, ConfigError, "must be at least 10 ms"),
        ("window_ms", -1, ConfigError, "must be a finite number of milliseconds"),
        ("minimum_calls", 0, ConfigError, "must be >= 1, got 0"),
        ("minimum_calls", 2.0, ConfigTypeError, "must be an int"),
        ("slow_call_ms", -1, ConfigError, "milliseconds, more than 0 to 86,400,000"),
        ("window_ms", None, ConfigTypeError, "must be a number of milliseconds, got None"),
        ("window_ms", 86_400_001, ConfigError, "milliseconds, 10 to 86,400,000"),
        ("slow_call_ms", float("inf"), ConfigError, "must be a finite number"),
        ("slow_call_ms", 0, ConfigError, "must be more than 0 ms"),
        ("half_open_calls", 0, ConfigError, "must be >= 1, got 0"),
        ("half_open_calls", 1001, ConfigError, "must be at most 1000, got 1001"),
        ("half_open_calls", True, ConfigTypeError, "must be an int"),
    ],
)
def test_bad_trip_rule_settings_are_refused_with_a_clear_message(
    field: str, value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        CircuitBreakerConfig(**{field: value})
    text = str(raised.value)
    assert text.startswith(f"CircuitBreakerConfig.{field} must be ")  # names the field ...
    assert message in text  # ... says what is allowed ...
    assert f"got {value!r}" in text  # ... and what was given


def test_the_edges_of_the_valid_settings_are_accepted() -> None:
    config = CircuitBreakerConfig(
        failure_rate=1, window_ms=10, minimum_calls=1, slow_call_ms=1, half_open_calls=1000
    )
    assert (config.failure_rate, config.window, config.slow_call) == (1.0, 0.01, 0.001)
    assert CircuitBreakerConfig(failure_rate=1e-9).failure_rate == 1e-9


def test_exactly_slow_call_ms_is_not_slow_on_a_clock_that_rounds() -> None:
    """1000.1 - 1000.0 is 0.10000000000002274 in floats: still exactly 100 ms, not slow."""
    clock = FakeClock()  # starts at 1000.0
    br = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, slow_call_ms=100), clock=clock)
    began = clock()
    clock.advance(0.1)
    assert br.record_success(br.acquire(), clock() - began) is CLOSED
    assert br.settle(br.clean_ticket, began) is CLOSED
    clock.advance(0.000_002)  # two microseconds over: slow
    assert br.settle(br.clean_ticket, began) is OPEN
    assert br.reason == "slow calls"


def test_a_success_never_opens_a_rate_breaker_the_next_failure_does() -> None:
    """README: the verdict is taken on a failed attempt (as Polly's), so 9 failures and a
    success with minimum_calls=10 leave it CLOSED though the share is 0.9 over 10 calls."""
    br, _, _ = make(failure_rate=0.5, minimum_calls=10)
    for _ in range(9):
        br.record_failure(br.acquire())
    assert br.record_success(br.acquire()) is CLOSED
    assert br.window == WindowCounts(10, 9, 0)
    assert br.record_failure(br.acquire()) is OPEN
    assert br.reason == "failure rate 0.91 over 11 calls"
