"""Where an ``async def`` hook's awaitable goes (``smoothapi._async_hooks``), and the first event's
Prometheus registration: regressions for defects found in review.

Each test failed with the previous delivery (one task per hook, a collector shared with every
task started inside an async call, ``asyncio.run`` from plain sync code):

1. a task started inside an async call, making a sync call after that call returned, had its
   async hook queued on the dead call's collector - never awaited;
2. under trio, one system task per hook ran hooks in scheduler order, not in event order;
3. a hook cancelled while the call awaited it vanished without a word;
4. a trio loop ending before its hook tasks ran dropped them silently;
5. an async hook from plain sync code unset the event loop the application had set;
6. a sync call in a ``trio.to_thread`` worker ran its async hook on a fresh asyncio loop, where
   trio's own functions fail;
7. threads whose first events raced past the automatic Prometheus registration went uncounted.

Async tests run under asyncio and trio; retries are instant (``instant``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    Event,
    ResilientConfig,
    RetriesExhausted,
    RetryScheduled,
    resilient_api,
)
from smoothapi.testing import FakeClock

NEVER_OPENS = CircuitBreakerConfig(failure_threshold=10**9)
CANCELLED = "was cancelled before it finished"


def gives_up_at_once(*hooks: Callable[[Event], Any]) -> ResilientConfig:
    """No retry and a breaker that never opens: one failing call sends one RetriesExhausted."""
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=0), circuit_breaker=NEVER_OPENS, hooks=hooks
    )


def names(events: list[Event]) -> list[str]:
    return [type(event).__name__ for event in events]


async def settle(done: Callable[[], bool], checkpoints: int = 1000) -> None:
    """Yield to the event loop until ``done()`` - a bounded number of times, never a sleep."""
    for _ in range(checkpoints):
        if done():
            return
        await anyio.lowlevel.checkpoint()


@contextmanager
def no_unawaited_coroutines() -> Iterator[None]:
    """Fail if a coroutine (an async hook's awaitable) is dropped without being awaited.

    The "never awaited" RuntimeWarning is emitted when the coroutine is collected, so this
    collects garbage before checking."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    unawaited = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert unawaited == [], [str(w.message) for w in unawaited]


def cancelled_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "smoothapi" and r.levelno == logging.WARNING and CANCELLED in r.getMessage()
    ]


# -- 1: a task started inside an async call ---------------------------------------------------


@pytest.mark.anyio
async def test_a_task_started_inside_an_async_call_still_runs_its_later_async_hooks(
    instant: FakeClock,
) -> None:
    """The call's first attempt fails, so the engine collects that call's async hooks; its
    second attempt starts a background task.  After the call returned, that task makes a
    failing sync call: its async hook runs (on the loop), not onto the finished call's
    collector, where nothing would ever await it."""
    ran: list[Event] = []

    async def hook(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(event)

    @resilient_api(gives_up_at_once(hook))
    def sync_down() -> None:
        raise ConnectionError("down")

    returned = anyio.Event()

    async def later() -> None:
        await returned.wait()
        with pytest.raises(ConnectionError):
            sync_down()

    attempts = 0

    @resilient_api(
        ResilientConfig(backoff=BackoffConfig(max_retries=1), circuit_breaker=NEVER_OPENS)
    )
    async def fetch(tg: anyio.abc.TaskGroup) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("the first attempt fails: the engine takes over")
        tg.start_soon(later)  # inherits the call's context
        return "ok"

    with no_unawaited_coroutines():
        async with anyio.create_task_group() as tg:
            assert await fetch(tg) == "ok"
            returned.set()
        await settle(lambda: bool(ran))
        assert names(ran) == ["RetriesExhausted"]
        assert attempts == 2


# -- 2: order ---------------------------------------------------------------------------------

EVENTS = 5  # four retries and the give-up
RUNS = 20  # under trio, one task per hook would misorder some run with odds 1 - 2**-20


@pytest.mark.anyio
async def test_async_hooks_of_sync_calls_in_a_running_loop_run_one_at_a_time_in_order(
    instant: FakeClock,
) -> None:
    """A sync call made from async code sends five events; their async hook runs later on the
    loop (the loop must not be blocked), but one event at a time and in the order sent - even
    though the hook for an earlier event yields to the loop more times than a later one."""
    log: list[tuple[str, int]] = []

    def number(event: Event) -> int:
        if isinstance(event, RetryScheduled):
            return event.attempt
        assert isinstance(event, RetriesExhausted)
        return event.attempts

    async def hook(event: Event) -> None:
        n = number(event)
        log.append(("start", n))
        for _ in range(EVENTS - n):
            await anyio.lowlevel.checkpoint()
        log.append(("end", n))

    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=EVENTS - 1), circuit_breaker=NEVER_OPENS, hooks=(hook,)
    )

    @resilient_api(config)
    def sync_down() -> None:
        raise ConnectionError("down")

    expected = [(step, n) for n in range(1, EVENTS + 1) for step in ("start", "end")]
    for run in range(RUNS):
        log.clear()
        with pytest.raises(ConnectionError):
            sync_down()
        await settle(lambda: len(log) >= len(expected))
        assert (run, log) == (run, expected)


# -- 3: a cancelled call ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_call_cancelled_while_awaiting_its_async_hook_logs_it_and_is_cancelled(
    instant: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An async call awaits its hook on the first retry; the hook waits for something that never
    comes and the caller cancels the call.  The cancellation reaches the caller (no retry is
    made) and the hook that did not finish is named in a WARNING."""
    started = anyio.Event()

    async def stuck_hook(event: Event) -> None:
        started.set()
        await anyio.Event().wait()  # never set

    attempts = 0

    @resilient_api(
        ResilientConfig(
            backoff=BackoffConfig(max_retries=3), circuit_breaker=NEVER_OPENS, hooks=(stuck_hook,)
        )
    )
    async def fetch() -> str:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    scope = anyio.CancelScope()
    finished: list[str] = []

    async def call() -> None:
        with scope:
            finished.append(await fetch())  # never: cancelled in the hook

    with caplog.at_level(logging.WARNING, logger="smoothapi"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await started.wait()
            scope.cancel()

    assert scope.cancelled_caught
    assert finished == []
    assert attempts == 1
    records = cancelled_records(caplog)
    assert len(records) == 1
    assert "stuck_hook" in records[0].getMessage()
    assert "RetryScheduled(" in records[0].getMessage()


# -- 4: the loop shuts down before the hooks ran ------------------------------------------------


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_hooks_left_when_the_loop_shuts_down_are_each_logged(
    library: str, instant: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync call inside ``trio.run``/``asyncio.run`` sends two events to two async hooks, and
    the loop ends at once: each of the four undelivered hooks gets a WARNING naming the hook
    and the event, and no coroutine is left un-awaited."""
    ran: list[Event] = []

    async def first_hook(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(event)

    async def second_hook(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(event)

    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=1),
        circuit_breaker=NEVER_OPENS,
        hooks=(first_hook, second_hook),
    )

    @resilient_api(config)
    def sync_down() -> None:
        raise ConnectionError("down")

    async def main() -> None:
        with pytest.raises(ConnectionError):
            sync_down()  # returns at once; the loop ends before the runner gets to the hooks

    with no_unawaited_coroutines(), caplog.at_level(logging.WARNING, logger="smoothapi"):
        if library == "trio":
            import trio  # noqa: PLC0415 - this test drives a raw trio loop

            trio.run(main)
        else:
            asyncio.run(main())

    assert ran == []
    messages = [r.getMessage() for r in cancelled_records(caplog)]
    assert len(messages) == 4, messages
    for hook in ("first_hook", "second_hook"):
        for event in ("RetryScheduled(", "RetriesExhausted("):
            assert sum(hook in m and event in m for m in messages) == 1, (hook, event, messages)


# -- 5: plain sync code and the application's event loop ---------------------------------------


def current_event_loop() -> object:
    """The loop set for this thread (None if none), without deprecation noise on newer Pythons."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return asyncio.get_event_loop()
        except RuntimeError:  # no current event loop
            return None


def test_an_async_hook_from_plain_sync_code_keeps_the_applications_event_loop(
    instant: FakeClock,
) -> None:
    """A legacy application sets an event loop for its thread (not running) and makes a sync
    call whose async hook runs to completion on a private loop; the application's loop is still
    the current one afterwards, and still usable."""
    ran: list[Event] = []

    async def hook(event: Event) -> None:
        await asyncio.sleep(0)
        ran.append(event)

    @resilient_api(gives_up_at_once(hook))
    def legacy_call() -> None:
        raise ConnectionError("down")

    loop = asyncio.new_event_loop()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop(loop)
        with pytest.raises(ConnectionError):
            legacy_call()
        assert names(ran) == ["RetriesExhausted"]
        assert current_event_loop() is loop
        assert loop.run_until_complete(asyncio.sleep(0, "usable")) == "usable"
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop(None)
        loop.close()


# -- 6: a trio worker thread --------------------------------------------------------------------


def test_an_async_hook_from_a_trio_worker_thread_runs_on_the_trio_loop_before_the_call_returns(
    instant: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync call in ``trio.to_thread.run_sync``: its async hook, which uses trio itself, runs
    on the trio loop that started the thread, and has finished when the sync call returns."""
    import trio  # noqa: PLC0415 - this test drives a raw trio loop

    ran: list[tuple[Event, object, int]] = []

    async def hook(event: Event) -> None:
        await trio.sleep(0)  # noqa: ASYNC115 - a hook as users write it, with trio itself
        ran.append((event, trio.lowlevel.current_trio_token(), threading.get_ident()))

    @resilient_api(gives_up_at_once(hook))
    def sync_down() -> None:
        raise ConnectionError("down")

    def in_worker() -> tuple[list[tuple[Event, object, int]], int]:
        with pytest.raises(ConnectionError):
            sync_down()
        return list(ran), threading.get_ident()  # what had run when the call returned

    async def main() -> tuple[object, list[tuple[Event, object, int]], int]:
        token = trio.lowlevel.current_trio_token()
        seen, worker = await trio.to_thread.run_sync(in_worker)
        return token, seen, worker

    with caplog.at_level(logging.WARNING, logger="smoothapi"):
        token, seen, worker = trio.run(main)

    assert [r.getMessage() for r in caplog.records if r.name == "smoothapi"] == []
    assert len(seen) == 1
    event, hook_token, hook_thread = seen[0]
    assert isinstance(event, RetriesExhausted)
    assert hook_token is token
    assert hook_thread == threading.get_ident() != worker


# -- 7: the automatic Prometheus registration, raced by threads ---------------------------------

_RACE = """
    import threading
    from prometheus_client import REGISTRY
    from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, resilient_api

    THREADS = 8
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10**9),
    )

    @resilient_api(config, name="race")
    def down():
        raise ConnectionError("refused")

    barrier = threading.Barrier(THREADS)

    def one_call():
        barrier.wait()
        try:
            down()
        except ConnectionError:
            pass

    threads = [threading.Thread(target=one_call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(REGISTRY.get_sample_value(
        "smoothapi_gave_up_total", {"breaker": "race", "reason": "retries exhausted"}))
"""


def test_first_events_racing_in_threads_are_all_counted_by_the_automatic_registration() -> None:
    """The first event of the process registers the Prometheus metrics.  Eight threads make
    their first (failing) call at once: every give-up is counted, none slips past while the
    registration is under way.  In a fresh interpreter: the registration happens once per
    process."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", textwrap.dedent(_RACE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SMOOTHAPI_PROMETHEUS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8.0"
