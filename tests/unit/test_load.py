"""smoothapi.load on a fake clock: the token bucket, the SRE throttle, the FIFO bulkhead.

Tables of steps drive :class:`TokenBucket` and :class:`Throttle` (their
arithmetic takes ``now`` as an argument); the bulkhead's bookkeeping is
driven with callbacks, then with real waiters (threads, asyncio and trio
tasks) for timeouts and cancellation; :class:`LoadControl` runs with a fake
``now`` and a fake ``sleep`` that records what it was asked to wait.
Nothing here reads the wall clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from smoothapi import (
    BulkheadConfig,
    LoadShedError,
    RateLimitConfig,
    ResilientConfig,
    ThrottleConfig,
)
from smoothapi.load import (
    BULKHEAD,
    NOTHING,
    RATE_LIMIT,
    THROTTLE,
    Admission,
    Bulkhead,
    LoadControl,
    Throttle,
    TokenBucket,
    _Waiter,
)
from smoothapi.rate_headers import ServerLimit

# -- TokenBucket ---------------------------------------------------------------------------
#
# A step is (op, at, arg, expected): "reserve" (arg: max_wait; expected: the wait or
# None), "next" (expected: seconds until a free token), "refund", "follow" (arg: a
# ServerLimit).  Every bucket starts full at t=0.

Step = tuple[str, float, Any, Any]


def _reserves(at: float, *waits: float | None, max_wait: float = 10.0) -> list[Step]:
    return [("reserve", at, max_wait, wait) for wait in waits]


BUCKET_CASES = [
    pytest.param(
        10.0,
        3.0,
        [*_reserves(0.0, 0.0, 0.0, 0.0, 0.1)],
        id="burst-tokens-at-once-then-one-per-1/rate",
    ),
    pytest.param(
        10.0,
        3.0,
        [*_reserves(0.0, 0.0, 0.0, 0.0), *_reserves(0.2, 0.0, 0.0, 0.1)],
        id="refill-at-rate",
    ),
    pytest.param(
        10.0,
        3.0,
        [*_reserves(0.0, 0.0), *_reserves(100.0, 0.0, 0.0, 0.0, 0.1)],
        id="never-more-than-burst-banked",
    ),
    pytest.param(
        10.0,
        1.0,
        [*_reserves(0.0, 0.0, 0.1, 0.2, 0.3)],
        id="waits-in-arrival-order-the-nth-waits-n-tokens",
    ),
    pytest.param(
        10.0,
        1.0,
        [*_reserves(0.0, 0.0, 0.1), *_reserves(0.05, 0.15)],
        id="a-reservation-ahead-is-waited-out-as-time-passes",
    ),
    pytest.param(
        10.0,
        1.0,
        [
            *_reserves(0.0, 0.0),
            *_reserves(0.0, None, max_wait=0.05),
            ("next", 0.0, None, 0.1),
            *_reserves(0.0, 0.1),
        ],
        id="max-wait-refusal-takes-nothing",
    ),
    pytest.param(
        10.0,
        2.0,
        [*_reserves(0.0, 0.0, 0.0), ("refund", 0.0, None, None), *_reserves(0.0, 0.0, 0.1)],
        id="refund-gives-the-token-back",
    ),
    pytest.param(
        10.0,
        2.0,
        [("refund", 0.0, None, None), *_reserves(0.0, 0.0, 0.0, 0.1)],
        id="refund-never-banks-more-than-burst",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            ("follow", 0.0, ServerLimit(2, 1.0), None),
            *_reserves(0.0, 0.0, 0.0),
            ("next", 0.0, None, 1.0),
            *_reserves(0.0, 1.0),
            *_reserves(0.5, 0.5),
        ],
        id="server-remaining-n-then-wait-until-reset",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            ("follow", 0.0, ServerLimit(0, 0.5), None),
            ("next", 0.0, None, 0.5),
            ("next", 0.2, None, 0.3),
            *_reserves(0.2, 0.3),
        ],
        id="server-remaining-0-pauses-until-reset",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            ("follow", 0.0, ServerLimit(0, 0.5), None),
            ("next", 0.5, None, 0.0),
            *_reserves(0.5, 0.0, 0.0, 0.0),
        ],
        id="server-reset-passed-lifts-the-pause",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            ("follow", 0.0, ServerLimit(0, 5.0), None),
            *_reserves(0.0, None, max_wait=1.0),
            ("next", 0.0, None, 5.0),
        ],
        id="server-pause-longer-than-max-wait-refuses",
    ),
    pytest.param(
        100.0,
        100.0,
        [("follow", 0.0, ServerLimit(0, 0.0), None), *_reserves(0.0, 0.0)],
        id="server-reset-of-0-says-nothing",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            ("follow", 0.0, ServerLimit(1, 1.0), None),
            *_reserves(0.0, 0.0),
            ("refund", 0.1, None, None),
            *_reserves(0.1, 0.0),
            *_reserves(0.1, 0.9),
        ],
        id="server-refund-within-the-allowance-gives-it-back",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            ("follow", 0.0, ServerLimit(0, 1.0), None),
            *_reserves(0.0, 1.0),
            ("refund", 0.5, None, None),  # e.g. the waiting call was cancelled
            *_reserves(0.5, 0.5),
        ],
        id="server-refund-of-a-token-past-the-reset-opens-no-allowance",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            ("follow", 0.0, ServerLimit(1, 1.0), None),
            *_reserves(0.0, 0.0, 1.0),
            ("refund", 0.5, None, None),  # which one? the bucket cannot tell: stay paused
            *_reserves(0.5, 0.5),
        ],
        id="server-a-refund-when-one-took-the-last-and-one-waits-past-the-reset",
    ),
    pytest.param(
        100.0,
        100.0,
        [
            *_reserves(0.0, 0.0),  # reserved before the server spoke, then never used
            ("follow", 0.0, ServerLimit(0, 1.0), None),
            ("refund", 0.1, None, None),
            *_reserves(0.1, 0.9),
        ],
        id="server-refund-never-lifts-the-allowance-above-what-the-server-said",
    ),
]


@pytest.mark.parametrize(("rate", "burst", "steps"), BUCKET_CASES)
def test_token_bucket(rate: float, burst: float, steps: list[Step]) -> None:
    bucket = TokenBucket(rate, burst, now=0.0)
    for number, (op, at, arg, expected) in enumerate(steps):
        where = f"step {number} {op}@{at}"
        if op == "reserve":
            got = bucket.reserve(at, arg)
            if expected is None:
                assert got is None, where
            else:
                assert got == pytest.approx(expected), where
        elif op == "next":
            assert bucket.next_token(at) == pytest.approx(expected), where
        elif op == "refund":
            bucket.refund(at)
        else:
            assert op == "follow"
            bucket.follow(at, arg)


def test_reservations_served_in_order_use_their_slot_in_time() -> None:
    """Ten callers arriving together wait 0, 1/rate, ... 9/rate: one token each, in order."""
    bucket = TokenBucket(20.0, 1.0, now=0.0)
    waits = [bucket.reserve(0.0, 10.0) for _ in range(10)]
    assert waits == pytest.approx([n / 20.0 for n in range(10)])


# -- Throttle ------------------------------------------------------------------------------


def _throttle(k: float = 2.0, window_ms: float = 1000.0) -> Throttle:
    return Throttle(ThrottleConfig(k=k, window_ms=window_ms))


def _count(throttle: Throttle, at: float, requests: int, accepts: int) -> None:
    for n in range(requests):
        throttle.count(at, accepted=n < accepts)


THROTTLE_FORMULA = [
    pytest.param(0, 0, 2.0, 0.0, id="nothing-yet"),
    pytest.param(10, 10, 2.0, 0.0, id="all-accepted"),
    pytest.param(10, 5, 2.0, 0.0, id="half-accepted-k2-is-still-0"),
    pytest.param(10, 4, 2.0, 2 / 11, id="k2-(10-8)/11"),
    pytest.param(100, 0, 2.0, 100 / 101, id="none-accepted-(n)/(n+1)"),
    pytest.param(10, 0, 1.0, 10 / 11, id="k1-none-accepted"),
    pytest.param(10, 9, 1.0, 1 / 11, id="k1-(10-9)/11"),
    pytest.param(30, 10, 1.5, 15 / 31, id="k1.5-(30-15)/31"),
    pytest.param(100, 30, 3.0, 10 / 101, id="k3-(100-90)/101"),
    pytest.param(100, 34, 3.0, 0.0, id="k3-never-below-0"),
]


@pytest.mark.parametrize(("requests", "accepts", "k", "expected"), THROTTLE_FORMULA)
def test_throttle_formula(requests: int, accepts: int, k: float, expected: float) -> None:
    """max(0, (requests - k * accepts) / (requests + 1))."""
    throttle = _throttle(k)
    _count(throttle, 0.05, requests, accepts)
    assert throttle.counts(0.05) == (requests, accepts)
    assert throttle.reject_probability(0.05) == pytest.approx(expected)


# (at, requests, accepts) counted, then (at, expected counts) read: a 1 s window in ten
# 100 ms buckets.  Times sit mid-bucket.
SLIDING = [
    pytest.param([(0.05, 5, 0)], [(0.05, (5, 0)), (0.95, (5, 0))], id="kept-within-the-window"),
    pytest.param([(0.05, 5, 0)], [(1.05, (0, 0)), (5.05, (0, 0))], id="expired-after-it"),
    pytest.param(
        [(0.05, 4, 1), (0.55, 6, 3)],
        [(0.95, (10, 4)), (1.05, (6, 3)), (1.45, (6, 3)), (1.55, (0, 0))],
        id="buckets-expire-one-by-one",
    ),
    pytest.param(
        [(0.05, 5, 0), (1.05, 2, 2)],
        [(1.05, (2, 2))],
        id="a-reused-bucket-starts-from-zero",
    ),
    pytest.param(
        [(0.05, 3, 0), (0.15, 3, 0), (0.25, 3, 3)],
        [(0.25, (9, 3)), (1.05, (6, 3)), (1.15, (3, 3)), (1.25, (0, 0))],
        id="the-window-slides-a-bucket-at-a-time",
    ),
]


@pytest.mark.parametrize(("counted", "reads"), SLIDING)
def test_throttle_window_slides(
    counted: list[tuple[float, int, int]], reads: list[tuple[float, tuple[int, int]]]
) -> None:
    throttle = _throttle()
    for at, requests, accepts in counted:
        _count(throttle, at, requests, accepts)
    for at, expected in reads:
        assert throttle.counts(at) == expected, f"at {at}"


def test_throttle_probability_falls_as_failures_leave_the_window() -> None:
    throttle = _throttle(k=2.0)
    _count(throttle, 0.05, 20, 0)
    assert throttle.reject_probability(0.5) == pytest.approx(20 / 21)
    assert throttle.reject_probability(1.05) == 0.0


# -- Bulkhead: the bookkeeping -------------------------------------------------------------


@dataclass
class Woken:
    """Wake callbacks that record which waiter was woken, in order."""

    order: list[str] = field(default_factory=list)

    def __call__(self, name: str) -> Callable[[], None]:
        return lambda: self.order.append(name)


def _bulkhead(max_concurrent: int = 1, max_queue: int = 10, max_wait: float = 1.0) -> Bulkhead:
    return Bulkhead(
        BulkheadConfig(max_concurrent=max_concurrent, max_queue=max_queue, max_wait=max_wait)
    )


def _queued(bulkhead: Bulkhead, wake: Callable[[], None]) -> _Waiter:
    place = bulkhead._enqueue(wake)
    assert isinstance(place, _Waiter), place
    return place


def test_bulkhead_free_permits_then_the_queue_then_full() -> None:
    bulkhead = _bulkhead(max_concurrent=2, max_queue=1)
    woken = Woken()
    assert bulkhead._enqueue(woken("a")) is True
    assert bulkhead.try_enter() is True
    assert bulkhead.active == 2
    _queued(bulkhead, woken("c"))
    assert bulkhead._enqueue(woken("d")) is False, "the queue holds max_queue waiters"
    assert bulkhead.try_enter() is False
    assert woken.order == []


def test_bulkhead_permit_goes_to_the_longest_waiter() -> None:
    """FIFO handoff: each permit given back goes to the head of the queue, in order."""
    bulkhead = _bulkhead(max_concurrent=1)
    woken = Woken()
    assert bulkhead.try_enter()
    waiters = [_queued(bulkhead, woken(name)) for name in "abc"]
    for step in range(3):
        bulkhead.leave()
        assert woken.order == list("abc"[: step + 1])
        assert [w.granted for w in waiters] == [i <= step for i in range(3)]
        assert bulkhead.active == 1, "a handoff keeps the permit in use"
    bulkhead.leave()
    assert bulkhead.active == 0
    assert not bulkhead.queue


def test_try_enter_never_overtakes_a_queued_waiter() -> None:
    bulkhead = _bulkhead(max_concurrent=1)
    woken = Woken()
    assert bulkhead.try_enter()
    waiter = _queued(bulkhead, woken("a"))
    bulkhead.leave()
    assert waiter.granted
    assert bulkhead.try_enter() is False, "the permit given back is the waiter's"
    # A permit free while someone is queued (the waiter has not run yet) is theirs too.
    bulkhead = _bulkhead(max_concurrent=2)
    bulkhead.active = 1
    bulkhead.queue.append(_Waiter(woken("b")))
    assert bulkhead.try_enter() is False
    assert bulkhead._enqueue(woken("c")) is not True


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    bulkhead = _bulkhead(max_concurrent=1)
    woken = Woken()
    assert bulkhead.try_enter()
    a, b = _queued(bulkhead, woken("a")), _queued(bulkhead, woken("b"))
    assert bulkhead._give_up(a) is False
    assert list(bulkhead.queue) == [b]
    bulkhead.leave()
    assert woken.order == ["b"], "the permit skipped the waiter that left"


def test_a_waiter_granted_as_it_gives_up_keeps_the_permit() -> None:
    """The wait ran out just as the permit came: the waiter holds it (nothing is lost)."""
    bulkhead = _bulkhead(max_concurrent=1)
    woken = Woken()
    assert bulkhead.try_enter()
    a = _queued(bulkhead, woken("a"))
    bulkhead.leave()  # granted to a ...
    assert bulkhead._give_up(a) is True  # ... which gave up meanwhile: it holds it
    assert bulkhead.active == 1
    bulkhead.leave()
    assert bulkhead.active == 0


# -- Bulkhead: real waiters -----------------------------------------------------------------


def test_sync_waiters_are_served_first_come_first_served() -> None:
    bulkhead = _bulkhead(max_concurrent=1, max_queue=10, max_wait=30.0)
    assert bulkhead.try_enter()
    served: list[tuple[int, bool]] = []
    threads = []

    def enter(n: int) -> None:
        served.append((n, bulkhead.enter_sync(30.0)))

    for n in range(5):
        thread = threading.Thread(target=enter, args=(n,))
        thread.start()
        threads.append(thread)
        _wait_for(_has(bulkhead.queue, n + 1))
    for n in range(5):
        bulkhead.leave()
        _wait_for(_has(served, n + 1))
    for thread in threads:
        thread.join(20)
    assert served == [(n, True) for n in range(5)]
    bulkhead.leave()
    assert bulkhead.active == 0


def test_sync_waiter_whose_wait_runs_out_leaves_the_queue() -> None:
    bulkhead = _bulkhead(max_concurrent=1, max_queue=10)
    assert bulkhead.try_enter()
    assert bulkhead.enter_sync(0.01) is False
    assert bulkhead.enter_sync(0.0) is False
    assert not bulkhead.queue
    assert bulkhead.active == 1
    bulkhead.leave()
    assert bulkhead.active == 0


def _has(items: Sized, length: int) -> Callable[[], bool]:
    """A condition: ``items`` holds ``length`` things."""
    return lambda: len(items) == length


def _wait_for(condition: Callable[[], bool]) -> None:
    """Liveness only: wait (up to 20 s) for another thread to get somewhere."""
    done = threading.Event()
    for _ in range(20_000):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("the condition never held")


@pytest.mark.anyio
async def test_async_waiter_cancelled_while_queued_leaves_the_queue() -> None:
    bulkhead = _bulkhead(max_concurrent=1, max_queue=10, max_wait=30.0)
    assert bulkhead.try_enter()
    results: list[bool] = []
    scope = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(_enter_into, bulkhead, results, scope)
        await _queue_length(bulkhead, 1)
        scope.cancel()
        await _queue_length(bulkhead, 0)
    assert results == []
    assert bulkhead.active == 1
    bulkhead.leave()
    assert bulkhead.active == 0


async def _enter_into(bulkhead: Bulkhead, results: list[bool], scope: anyio.CancelScope) -> None:
    with scope:
        results.append(await bulkhead.enter_async(30.0))


async def _until(condition: Callable[[], bool]) -> None:
    """Liveness only: let the other tasks run (up to 20 s) until ``condition`` holds."""
    for _ in range(20_000):
        if condition():
            return
        await anyio.sleep(0.001)
    raise AssertionError("the condition never held")


async def _queue_length(bulkhead: Bulkhead, length: int) -> None:
    await _until(lambda: len(bulkhead.queue) == length)


@pytest.mark.anyio
async def test_async_waiters_served_in_order_and_time_out() -> None:
    bulkhead = _bulkhead(max_concurrent=1, max_queue=10, max_wait=30.0)
    assert bulkhead.try_enter()
    served: list[int] = []

    async def enter(n: int) -> None:
        if await bulkhead.enter_async(30.0):
            served.append(n)

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(enter, n)
            await _queue_length(bulkhead, n + 1)
        assert await bulkhead.enter_async(0.01) is False, "a wait that runs out is shed"
        assert len(bulkhead.queue) == 4
        for n in range(4):
            bulkhead.leave()
            await _until(_has(served, n + 1))
    assert served == [0, 1, 2, 3]
    bulkhead.leave()
    assert bulkhead.active == 0


async def _asyncio_granted_as_cancelled() -> None:
    """The permit reached a waiter that is being cancelled: it goes to the next one."""
    bulkhead = _bulkhead(max_concurrent=1, max_queue=10, max_wait=30.0)
    assert bulkhead.try_enter()
    first = asyncio.ensure_future(bulkhead.enter_async(30.0))
    second = asyncio.ensure_future(bulkhead.enter_async(30.0))
    await _queue_length(bulkhead, 2)
    bulkhead.leave()  # granted to `first`, whose wake-up is still to run ...
    first.cancel()  # ... when it is cancelled
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 20) is True
    assert not bulkhead.queue
    assert bulkhead.active == 1
    bulkhead.leave()
    assert bulkhead.active == 0


def test_asyncio_waiter_granted_as_it_is_cancelled_passes_the_permit_on() -> None:
    asyncio.run(_asyncio_granted_as_cancelled())


async def _trio_granted_as_cancelled() -> None:
    import trio  # noqa: PLC0415 - trio only here

    bulkhead = _bulkhead(max_concurrent=1, max_queue=10, max_wait=30.0)
    assert bulkhead.try_enter()
    results: list[bool] = []
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def first() -> None:
            with scope:
                results.append(await bulkhead.enter_async(30.0))

        async def second() -> None:
            results.append(await bulkhead.enter_async(30.0))

        nursery.start_soon(first)
        await _queue_length(bulkhead, 1)
        nursery.start_soon(second)
        await _queue_length(bulkhead, 2)
        bulkhead.leave()  # granted to `first`: its event is set soon ...
        scope.cancel()  # ... but it is cancelled first
    assert results == [True], "the second waiter got the permit"
    assert not bulkhead.queue
    assert bulkhead.active == 1
    bulkhead.leave()
    assert bulkhead.active == 0


def test_trio_waiter_granted_as_it_is_cancelled_passes_the_permit_on() -> None:
    import trio  # noqa: PLC0415 - trio only here

    trio.run(_trio_granted_as_cancelled)


# -- LoadControl: the stages together, with a fake now and a fake sleep ---------------------


@dataclass
class Clock:
    """A fake ``now`` and a ``sleep`` that records each wait and moves the clock."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def _control(clock: Clock, rand: float = 0.5, **stages: Any) -> LoadControl:
    control = LoadControl.of(ResilientConfig(**stages), "api", clock, lambda: rand)
    assert control is not None
    return control


def test_no_stage_configured_is_no_load_control() -> None:
    assert LoadControl.of(ResilientConfig(), "api", Clock(), lambda: 0.5) is None


def test_rate_limit_sleeps_for_its_token_in_order() -> None:
    clock = Clock()
    control = _control(clock, rate_limit=RateLimitConfig(rate=10.0, burst=2.0))
    admissions = [control.enter_sync(None, clock.sleep) for _ in range(4)]
    assert all(isinstance(a, Admission) and a.token and not a.permit for a in admissions)
    # Two at once (the burst), then one each 1/rate: every call's sleep is its own wait.
    assert clock.sleeps == pytest.approx([0.1, 0.1])


def test_rate_limit_sheds_when_the_token_comes_after_max_wait() -> None:
    clock = Clock()
    control = _control(clock, rate_limit=RateLimitConfig(rate=1.0, burst=1.0, max_wait=0.5))
    assert isinstance(control.enter_sync(None, clock.sleep), Admission)
    shed = control.enter_sync(None, clock.sleep)
    assert isinstance(shed, LoadShedError)
    assert (shed.stage, shed.name) == (RATE_LIMIT, "api")
    assert shed.retry_after == pytest.approx(1.0)
    assert clock.sleeps == []


def test_rate_limit_sheds_at_once_when_the_deadline_is_nearer_than_the_token() -> None:
    clock = Clock()
    control = _control(clock, rate_limit=RateLimitConfig(rate=1.0, burst=1.0, max_wait=10.0))
    assert isinstance(control.enter_sync(None, clock.sleep), Admission)
    shed = control.enter_sync(0.5, clock.sleep)
    assert isinstance(shed, LoadShedError)
    assert shed.stage == RATE_LIMIT
    assert clock.sleeps == [], "no sleep: the call is shed at once"
    admitted = control.enter_sync(2.0, clock.sleep)  # nothing was taken by the shed call
    assert isinstance(admitted, Admission)
    assert clock.sleeps == pytest.approx([1.0])


def test_bulkhead_sheds_when_the_queue_is_full_and_leave_frees_the_permit() -> None:
    clock = Clock()
    control = _control(clock, bulkhead=BulkheadConfig(max_concurrent=1, max_queue=0))
    first = control.enter_sync(None, clock.sleep)
    assert isinstance(first, Admission)
    assert first.permit
    assert not first.token
    shed = control.enter_sync(None, clock.sleep)
    assert isinstance(shed, LoadShedError)
    assert shed.stage == BULKHEAD
    control.leave(first, made=True)
    assert isinstance(control.enter_sync(None, clock.sleep), Admission)


def test_a_call_the_bulkhead_sheds_gives_its_token_back() -> None:
    clock = Clock()
    control = _control(
        clock,
        rate_limit=RateLimitConfig(rate=1.0, burst=2.0),
        bulkhead=BulkheadConfig(max_concurrent=1, max_queue=0),
    )
    assert isinstance(control.enter_sync(None, clock.sleep), Admission)
    shed = control.enter_sync(None, clock.sleep)
    assert isinstance(shed, LoadShedError)
    assert shed.stage == BULKHEAD
    bucket = control.bucket
    assert bucket is not None
    assert bucket.tokens == pytest.approx(1.0), "the shed call's token came back"


def test_leave_without_an_attempt_gives_the_token_back() -> None:
    clock = Clock()
    control = _control(clock, rate_limit=RateLimitConfig(rate=1.0, burst=1.0))
    admission = control.enter_sync(None, clock.sleep)
    assert isinstance(admission, Admission)
    control.leave(admission, made=False)  # e.g. the breaker rejected the call after the gate
    assert isinstance(control.enter_sync(None, clock.sleep), Admission)
    assert clock.sleeps == []


def test_a_sleep_interrupted_gives_the_token_back() -> None:
    clock = Clock()
    control = _control(clock, rate_limit=RateLimitConfig(rate=1.0, burst=1.0, max_wait=5.0))
    assert isinstance(control.enter_sync(None, clock.sleep), Admission)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        control.enter_sync(None, interrupted)
    control.enter_sync(None, clock.sleep)
    assert clock.sleeps == pytest.approx([1.0]), "one token ahead, not two"


def test_leave_follows_the_server_only_when_configured() -> None:
    for follow, expected in ((True, [0.8]), (False, [])):
        clock = Clock()
        rate = RateLimitConfig(rate=100.0, follow_server=follow)
        control = _control(clock, rate_limit=rate)
        admission = control.enter_sync(None, clock.sleep)
        assert isinstance(admission, Admission)
        control.leave(admission, made=True, accepted=False, limit=ServerLimit(0, 0.8))
        control.enter_sync(None, clock.sleep)
        assert clock.sleeps == pytest.approx(expected), f"follow_server={follow}"


def test_throttle_sheds_with_its_probability_and_counts_the_shed_call() -> None:
    clock = Clock(now=0.05)
    low = _control(clock, rand=0.0, throttle=ThrottleConfig(k=2.0, window_ms=1000))
    high = _control(clock, rand=0.999, throttle=ThrottleConfig(k=2.0, window_ms=1000))
    assert high.enter_sync(None, clock.sleep) is NOTHING, "the throttle alone holds nothing"
    for control in (low, high):
        for _ in range(10):
            control.leave(NOTHING, made=True, accepted=False)
    # p = 10/11: a draw below it sheds, one above passes.
    shed = low.enter_sync(None, clock.sleep)
    assert isinstance(shed, LoadShedError)
    assert shed.stage == THROTTLE
    assert low.throttle is not None
    assert low.throttle.counts(clock.now) == (11, 0), "a shed call is a request not accepted"
    high.leave(NOTHING, made=True, accepted=True)
    assert high.throttle is not None
    assert high.throttle.counts(clock.now) == (11, 1)
    assert high.enter_sync(None, clock.sleep) is NOTHING
    assert clock.sleeps == []


def test_throttle_counts_only_verdicts() -> None:
    clock = Clock(now=0.05)
    control = _control(clock, throttle=ThrottleConfig())
    for accepted in (True, False, None):
        control.leave(NOTHING, made=True, accepted=accepted)
    control.leave(NOTHING, made=False, accepted=False)
    assert control.throttle is not None
    assert control.throttle.counts(clock.now) == (2, 1)


def test_enter_async_waits_with_the_drivers_sleep() -> None:
    clock = Clock()
    control = _control(
        clock,
        rate_limit=RateLimitConfig(rate=10.0, burst=1.0),
        bulkhead=BulkheadConfig(max_concurrent=1, max_queue=0),
    )

    async def main() -> list[Admission | LoadShedError]:
        first = await control.enter_async(None, clock.async_sleep)
        second = await control.enter_async(None, clock.async_sleep)
        assert isinstance(first, Admission)
        control.leave(first, made=True)
        third = await control.enter_async(None, clock.async_sleep)
        return [first, second, third]

    _, second, third = asyncio.run(main())
    assert isinstance(second, LoadShedError)
    assert second.stage == BULKHEAD
    assert isinstance(third, Admission)
    assert third.permit
    assert third.token
    # The second waited for its token, then was shed by the bulkhead, which gave the
    # token back: the third found it there.
    assert clock.sleeps == pytest.approx([0.1])
