"""The async driver's backoff sleep: it never blocks the event loop and it cancels cleanly.

DESIGN.md, "What counts as a failure (decorator)": "coroutine functions sleep
without blocking the event loop (asyncio and trio alike) and cancel cleanly",
and a call that "is cancelled" records nothing: "a probe permit is given back".
"The breaker": "A probe that ends any other way (cancelled, ...) gives its
permit back: the breaker never sticks in HALF_OPEN."

These tests sleep for real (no ``instant`` fixture) where the sleep itself is
under test, and never assert wall-clock durations: progress is counted in
ticks of another task, and cancellation is bounded only by a generous
``anyio.fail_after`` safety net that a passing run never comes near.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from httpserver import Delay, Json, Reply, ScriptedServer

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    Event,
    ResilientConfig,
    RetryScheduled,
    resilient_api,
)
from smoothapi.testing import FakeClock

pytestmark = pytest.mark.anyio

PATH = "/users/7"
BODY = {"id": 7}
SAFETY_NET = 10.0  # seconds; only a broken build gets near it
LONG_SLEEP = 60.0  # a backoff that a cancelled call must not sit out


def _config(delay: float, *, max_retries: int = 3, hooks: tuple[Any, ...] = ()) -> ResilientConfig:
    """Backoff of exactly ``delay`` seconds (no jitter); a breaker that will not open."""
    return ResilientConfig(
        backoff=BackoffConfig(
            base_delay=delay, max_delay=delay, max_retries=max_retries, jitter="none"
        ),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100, cooldown_ms=10_000),
        hooks=hooks,
    )


def _fetcher(config: ResilientConfig, base: str, on_attempt: Any = None) -> Any:
    @resilient_api(config)
    async def fetch() -> Any:
        if on_attempt is not None:
            on_attempt()
        async with httpx.AsyncClient(timeout=SAFETY_NET) as client:
            res = await client.get(f"{base}{PATH}")
            res.raise_for_status()
            return res.json()

    return fetch


async def _request_arrived(server: ScriptedServer) -> None:
    """Return once the server has received a request for PATH (it runs in another thread)."""
    while True:
        if server.count(PATH) >= 1:
            return
        await anyio.sleep(0.01)


async def test_backoff_sleep_lets_other_tasks_run(server: ScriptedServer) -> None:
    """While a call sleeps 0.2 s of real backoff, another task keeps ticking (loop not blocked)."""
    server.script(PATH, Reply(503), Json(200, BODY))
    sleeping = False
    ticks_while_sleeping = 0
    done = anyio.Event()

    def on_event(event: Event) -> None:
        nonlocal sleeping
        if isinstance(event, RetryScheduled):
            sleeping = True  # from here until the next attempt starts, the call is asleep

    def on_attempt() -> None:
        nonlocal sleeping
        sleeping = False

    fetch = _fetcher(_config(0.2, hooks=(on_event,)), server.url, on_attempt)

    async def ticker() -> None:
        nonlocal ticks_while_sleeping
        while not done.is_set():
            if sleeping:
                ticks_while_sleeping += 1
            await anyio.sleep(0.01)

    result: list[Any] = []
    with anyio.fail_after(SAFETY_NET):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            result.append(await fetch())
            done.set()

    assert result == [BODY]
    assert server.count(PATH) == 2
    # A blocking sleep (time.sleep) would leave no chance to tick between the
    # RetryScheduled event and the next attempt: the count would be 0.
    assert ticks_while_sleeping >= 2


async def test_cancelling_a_call_interrupts_its_backoff_sleep(server: ScriptedServer) -> None:
    """Cancelling during a 60 s backoff ends the call at once; nothing more is sent or recorded."""
    server.default = Reply(503)
    asleep = anyio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, RetryScheduled):
            asleep.set()

    fetch = _fetcher(_config(LONG_SLEEP, hooks=(on_event,)), server.url)
    finished: list[Any] = []

    async def call() -> None:
        finished.append(await fetch())

    with anyio.fail_after(SAFETY_NET):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await asleep.wait()
            tg.cancel_scope.cancel()

    assert finished == []  # cancelled, not completed
    assert server.count(PATH) == 1  # no attempt after the interrupted sleep
    breaker = fetch.breaker
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 1  # the 503 before the sleep; the cancellation adds nothing

    # The breaker is free at once: the next call goes straight to the server.
    server.default = Json(200, BODY)
    with anyio.fail_after(SAFETY_NET):
        assert await fetch() == BODY
    assert server.count(PATH) == 2
    assert breaker.failure_count == 0


async def test_deadline_interrupts_a_backoff_sleep(server: ScriptedServer) -> None:
    """A cancel-scope deadline expiring in a 60 s backoff cancels the call long before it ends."""
    server.default = Reply(503)
    scope = anyio.CancelScope()

    def on_event(event: Event) -> None:
        if isinstance(event, RetryScheduled):  # the backoff is about to start: 50 ms from now
            scope.deadline = anyio.current_time() + 0.05

    fetch = _fetcher(_config(LONG_SLEEP, hooks=(on_event,)), server.url)
    with anyio.fail_after(SAFETY_NET), scope:
        await fetch()
    assert scope.cancelled_caught
    assert server.count(PATH) == 1
    assert fetch.breaker.failure_count == 1


async def test_cancelled_probe_gives_its_permit_back(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A HALF_OPEN probe cancelled mid-request frees its permit: the next caller probes."""
    server.script(PATH, Delay(LONG_SLEEP, Json(200, BODY)))
    fetch = _fetcher(_config(0.1), server.url)
    fetch.breaker.force_open()
    instant.advance(11.0)  # the 10 s cooldown has elapsed: the next call is the probe

    with anyio.fail_after(SAFETY_NET):
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            await _request_arrived(server)  # the probe's request is in flight
            tg.cancel_scope.cancel()

    assert fetch.breaker.state is not CircuitState.CLOSED  # a cancellation proves nothing
    server.default = Json(200, BODY)
    with anyio.fail_after(SAFETY_NET):
        try:
            result = await fetch()
        except CircuitOpenError:  # pragma: no cover - the failure this test exists to catch
            pytest.fail("the cancelled probe kept its permit: the breaker is stuck in HALF_OPEN")
    assert result == BODY
    assert fetch.breaker.state is CircuitState.CLOSED
    assert server.count(PATH) == 2


async def test_cancelled_call_while_probe_rejected_others_leaves_breaker_usable(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """While a probe is in flight other callers are rejected; once it is cancelled they probe."""
    server.script(PATH, Delay(LONG_SLEEP, Json(200, BODY)))
    fetch = _fetcher(_config(0.1), server.url)
    fetch.breaker.force_open()
    instant.advance(11.0)

    with anyio.fail_after(SAFETY_NET):
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            await _request_arrived(server)
            with pytest.raises(CircuitOpenError):
                await fetch()  # the probe holds the permit: rejected, no I/O
            assert server.count(PATH) == 1
            tg.cancel_scope.cancel()

    server.default = Json(200, BODY)
    with anyio.fail_after(SAFETY_NET):
        assert await fetch() == BODY
    assert fetch.breaker.state is CircuitState.CLOSED
