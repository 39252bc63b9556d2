"""Concurrency: one probe at a time, and exact failure counting, under threads and coroutines.

DESIGN.md: "Then the first caller moves it to HALF_OPEN and becomes the
probe. While a probe is in flight, other callers are rejected (no
thundering herd into a recovering service)." and "Thread-safe and
asyncio-safe". No HTTP server, no real sleeps: a FakeClock moves time, and
Barriers/Events line the callers up.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ResilientConfig,
    StateChanged,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.testing import FakeClock

TIMEOUT = 10.0  # a safety net for a broken build; passing tests never wait on it


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms, to shake out races."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _config(fallback: Any = None, threshold: int = 1) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=10_000),
        fallback=fallback,
    )


def _cooled_open_breaker(config: ResilientConfig, name: str) -> CircuitBreaker:
    """A breaker forced OPEN whose cooldown has just elapsed on its fake clock."""
    clock = FakeClock()
    breaker = CircuitBreaker(config.circuit_breaker, name=name, clock=clock)
    breaker.force_open()
    clock.advance(10.0)
    assert breaker.state is CircuitState.OPEN
    return breaker


def _fallback_value(error: BaseException) -> str:
    assert isinstance(error, CircuitOpenError)
    return "stale"


# -- (a) threads: one probe among 16 ------------------------------------------------------------


def test_raw_acquire_from_16_threads_grants_exactly_one_probe(fast_switching: None) -> None:
    """16 threads calling acquire() at once after the cooldown: one probe ticket, 15 REJECTED."""
    breaker = _cooled_open_breaker(_config(), "raw")
    barrier = threading.Barrier(16)
    tickets: queue.Queue[int] = queue.Queue()

    def worker() -> None:
        barrier.wait(timeout=TIMEOUT)
        tickets.put(breaker.acquire())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    got = [tickets.get_nowait() for _ in range(16)]
    assert sorted(got)[:-1] == [REJECTED] * 15
    assert got.count(REJECTED) == 15
    assert max(got) > 0
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize(
    ("fallback", "rejected_answer"),
    [(None, CircuitOpenError), ("stale", "stale"), (_fallback_value, "stale")],
    ids=["no fallback", "fallback value", "fallback callable"],
)
def test_only_one_of_16_threads_probes_the_recovering_service(
    fast_switching: None, fallback: Any, rejected_answer: Any
) -> None:
    """16 threads after the cooldown: exactly 1 enters as the probe; 15 are rejected instantly."""
    config = _config(fallback)
    breaker = _cooled_open_breaker(config, "herd")
    gate = threading.Event()
    entered = threading.Event()
    count_lock = threading.Lock()
    entries = 0

    @resilient_api(config, breaker=breaker)
    def call() -> str:
        nonlocal entries
        with count_lock:
            entries += 1
            first = entries == 1
        entered.set()
        if first:  # only the first entrant blocks, so an extra entrant fails the test fast
            assert gate.wait(timeout=TIMEOUT), "the gate was never opened"
        return "fresh"

    barrier = threading.Barrier(16)
    results: queue.Queue[tuple[str, Any]] = queue.Queue()

    def worker() -> None:
        barrier.wait(timeout=TIMEOUT)
        try:
            results.put(("value", call()))
        except CircuitOpenError as exc:
            results.put(("rejected", exc))
        except BaseException as exc:
            results.put(("error", exc))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        early = [results.get(timeout=TIMEOUT) for _ in range(15)]
        # The probe may reach the body after the 15 rejections are in: wait for it.
        assert entered.wait(timeout=TIMEOUT), "the probe never reached the service"
        assert entries == 1, f"{entries} callers reached the recovering service"
        assert breaker.state is CircuitState.HALF_OPEN
        if rejected_answer is CircuitOpenError:
            assert [kind for kind, _ in early] == ["rejected"] * 15
            assert all(exc.name == "herd" for _, exc in early)
        else:
            assert early == [("value", rejected_answer)] * 15
    finally:
        gate.set()
        for t in threads:
            t.join(timeout=TIMEOUT)
    assert results.get_nowait() == ("value", "fresh")
    assert results.empty()
    assert entries == 1
    assert breaker.state is CircuitState.CLOSED


# -- (b) coroutines: one probe among 100, asyncio and trio --------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fallback", "rejected_answer"),
    [(None, None), ("stale", "stale"), (_fallback_value, "stale")],
    ids=["no fallback", "fallback value", "fallback callable"],
)
async def test_only_one_of_100_coroutines_probes_the_recovering_service(
    fallback: Any, rejected_answer: str | None
) -> None:
    """100 coroutines after the cooldown: exactly 1 enters as the probe; 99 are rejected."""
    config = _config(fallback)
    breaker = _cooled_open_breaker(config, "async-herd")
    gate = anyio.Event()
    others_done = anyio.Event()
    entries = 0
    done = 0
    answers: list[str] = []
    rejections: list[CircuitOpenError] = []

    @resilient_api(config, breaker=breaker)
    async def call() -> str:
        nonlocal entries
        entries += 1
        if entries == 1:
            await gate.wait()
        return "fresh"

    async def worker() -> None:
        nonlocal done
        try:
            answers.append(await call())
        except CircuitOpenError as exc:
            rejections.append(exc)
        done += 1
        if done == 99:
            others_done.set()

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(worker)
        with anyio.fail_after(TIMEOUT):
            await others_done.wait()
        assert entries == 1, f"{entries} callers reached the recovering service"
        assert breaker.state is CircuitState.HALF_OPEN
        if rejected_answer is None:
            assert len(rejections) == 99
            assert {exc.name for exc in rejections} == {"async-herd"}
            assert answers == []
        else:
            assert rejections == []
            assert answers == [rejected_answer] * 99
        gate.set()

    assert entries == 1
    assert answers.count("fresh") == 1
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.anyio
async def test_cancelling_the_async_probe_lets_exactly_one_new_probe_in() -> None:
    """The probe task is cancelled mid-flight: its permit returns, and of 20 new callers
    exactly one becomes the next probe while 19 are rejected."""
    config = _config()
    breaker = _cooled_open_breaker(config, "async-cancel")
    entered = anyio.Event()
    gate = anyio.Event()
    others_done = anyio.Event()
    entries = 0

    @resilient_api(config, breaker=breaker)
    async def call() -> str:
        nonlocal entries
        entries += 1
        me = entries
        if me == 1:
            entered.set()
            await anyio.Event().wait()  # hangs until cancelled
        elif me == 2:
            await gate.wait()
        return "fresh"

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(TIMEOUT):
            await entered.wait()
        tg.cancel_scope.cancel()
    assert breaker.state is CircuitState.HALF_OPEN

    results: list[str] = []
    rejected = 0
    done = 0

    async def worker() -> None:
        nonlocal rejected, done
        try:
            results.append(await call())
        except CircuitOpenError:
            rejected += 1
        done += 1
        if done == 19:
            others_done.set()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
        with anyio.fail_after(TIMEOUT):
            await others_done.wait()
        assert entries == 2, "the cancelled probe's permit was not given back exactly once"
        assert rejected == 19
        gate.set()
    assert results == ["fresh"]
    assert breaker.state is CircuitState.CLOSED


# -- (c) exact failure counting under threads ---------------------------------------------------


def _hammer(
    threshold: int, threads: int = 8, calls_each: int = 100
) -> tuple[CircuitBreaker, dict[str, int], list[StateChanged]]:
    """threads x calls_each calls that all fail with a transport error, max_retries=0."""
    events: list[StateChanged] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=60_000),
    )
    breaker = CircuitBreaker(
        config.circuit_breaker,
        name="count",
        clock=FakeClock(),
        hooks=(lambda e: events.append(e) if isinstance(e, StateChanged) else None,),
    )
    counts = {"entered": 0, "refused": 0, "rejected": 0, "other": 0}
    lock = threading.Lock()

    @resilient_api(config, breaker=breaker)
    def call() -> None:
        with lock:
            counts["entered"] += 1
        raise ConnectionRefusedError("refused")

    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait(timeout=TIMEOUT)
        for _ in range(calls_each):
            try:
                call()
            except CircuitOpenError:
                key = "rejected"
            except ConnectionRefusedError:
                key = "refused"
            except BaseException:
                key = "other"
            else:
                key = "other"
            with lock:
                counts[key] += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=TIMEOUT)
    assert not any(t.is_alive() for t in pool)
    return breaker, counts, events


def test_800_concurrent_failures_are_all_counted_below_the_threshold(
    fast_switching: None,
) -> None:
    """threshold 1000, 8 threads x 100 failing calls: failure_count is exactly 800, still CLOSED."""
    breaker, counts, events = _hammer(threshold=1000)
    assert breaker.failure_count == 800
    assert breaker.state is CircuitState.CLOSED
    assert counts == {"entered": 800, "refused": 800, "rejected": 0, "other": 0}
    assert events == []


def test_breaker_opens_exactly_on_the_800th_concurrent_failure(fast_switching: None) -> None:
    """threshold 800, 8 x 100 failing calls: every call runs and the last failure opens it."""
    breaker, counts, events = _hammer(threshold=800)
    assert breaker.failure_count == 800
    assert breaker.state is CircuitState.OPEN
    assert counts == {"entered": 800, "refused": 800, "rejected": 0, "other": 0}
    assert [(e.old, e.new, e.failures) for e in events] == [
        (CircuitState.CLOSED, CircuitState.OPEN, 800)
    ]


def test_threshold_801_is_not_reached_by_800_concurrent_failures(fast_switching: None) -> None:
    """threshold 801, 8 x 100 failing calls: one short of opening, so it stays CLOSED at 800."""
    breaker, _, events = _hammer(threshold=801)
    assert breaker.failure_count == 800
    assert breaker.state is CircuitState.CLOSED
    assert events == []


def test_breaker_opening_midway_freezes_the_count_and_rejects_the_rest(
    fast_switching: None,
) -> None:
    """threshold 300: opens once, count frozen at 300; late in-flight failures are not counted."""
    breaker, counts, events = _hammer(threshold=300)
    assert breaker.state is CircuitState.OPEN
    assert breaker.failure_count == 300
    assert len(events) == 1
    assert (events[0].old, events[0].new, events[0].failures) == (
        CircuitState.CLOSED,
        CircuitState.OPEN,
        300,
    )
    assert counts["other"] == 0
    assert counts["entered"] == counts["refused"]
    assert counts["entered"] >= 300
    assert counts["entered"] + counts["rejected"] == 800
    # At most one call per thread can be in flight when it opens.
    assert counts["entered"] <= 300 + 8
