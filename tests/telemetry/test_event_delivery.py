"""Every event reaches every hook exactly once per occurrence, in order, with the right fields.

Checked on all five mount points - ``@resilient_api`` on a ``def`` and on an ``async def``,
``ResilientAdapter``, ``ResilientTransport`` and ``AsyncResilientTransport`` - against the real
ScriptedServer on 127.0.0.1.  The decorated functions call the server through a plain
``requests.Session`` / ``httpx.AsyncClient`` and ``raise_for_status()``.

Retries are instant: every skipped backoff sleep is recorded by the fake clock (and moves it),
so a ``RetryScheduled.delay`` is checked against the sleep that was asked for, and a
``StateChanged.at`` against the clock.  Async tests run under asyncio and trio.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import anyio
import anyio.lowlevel
import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CallRejected,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    Event,
    FallbackServed,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    RetriesExhausted,
    RetryBudgetConfig,
    RetryBudgetExhausted,
    RetryScheduled,
    StateChanged,
    add_hook,
    remove_hook,
    resilient_api,
)
from smoothapi.mounts.httpx_transport import CircuitOpenTransportError
from smoothapi.mounts.requests_adapter import CircuitOpenConnectionError
from smoothapi.testing import FakeClock, set_testing

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
TIMEOUT = 5.0  # per-request socket timeout; passing tests take milliseconds
COOLDOWN = 10.0  # seconds

#: Threshold 3, two retries: three 503s make two RetryScheduled, then the third failure opens
#: the breaker.  Full jitter: the delays before retries 1 and 2 lie in [0, 0.5) and [0, 1.0).
OUTAGE = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.5, max_delay=1.0, max_retries=2),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=COOLDOWN * 1000),
)
#: The breaker never opens; 4 tokens, retries only while above 2: two retries in all.
BUDGET = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.5, max_delay=1.0, max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=10**9),
    retry_budget=RetryBudgetConfig(max_tokens=4, token_ratio=0.125),
)

OK = (200, "ok")
CACHED = (200, "cached")
LAST_503 = (503, "status 503")  # the ScriptedServer's body for an empty Reply(503)

SYNC_MOUNTS = ["decorator", "adapter", "transport"]
ASYNC_MOUNTS = ["async-decorator", "async-transport"]

Got = tuple[int, str]


# -- helpers -----------------------------------------------------------------------------------


class SleepLog(FakeClock):
    """A FakeClock that records each backoff sleep smoothapi skips (``set_testing`` calls
    ``advance`` with it); :meth:`pass_time` moves the clock without counting as a sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    def advance(self, seconds: float) -> None:
        self.slept.append(seconds)
        super().advance(seconds)

    def pass_time(self, seconds: float) -> None:
        FakeClock.advance(self, seconds)


@pytest.fixture
def clock() -> Iterator[SleepLog]:
    """Instant retries; every breaker reads this clock."""
    log = SleepLog()
    with set_testing(clock=log):
        yield log


@dataclass
class GlobalHooks:
    """What process-wide hooks received during a test."""

    seen: list[Event]  # a hook registered with add_hook() for the whole test
    removed: list[Event]  # a hook added and removed again before the test ran


@pytest.fixture
def global_hooks() -> Iterator[GlobalHooks]:
    hooks = GlobalHooks(seen=[], removed=[])
    add_hook(hooks.removed.append)
    remove_hook(hooks.removed.append)
    add_hook(hooks.seen.append)
    try:
        yield hooks
    finally:
        remove_hook(hooks.seen.append)


class Is:
    """Equal to any instance of ``cls`` whose attributes equal ``attrs``."""

    def __init__(self, cls: type[BaseException], **attrs: object) -> None:
        self.cls = cls
        self.attrs = attrs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.cls) and all(
            getattr(other, key) == value for key, value in self.attrs.items()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Is({self.cls.__name__}, {self.attrs!r})"


def about(seconds: float) -> float:
    """Equal to ``seconds`` up to float rounding (``open_until - now`` is not exact)."""
    return cast(float, pytest.approx(seconds))


def typed(events: list[Event]) -> list[tuple[type, Event]]:
    """Events with their types: named tuples of different types but equal fields are equal."""
    return [(type(event), event) for event in events]


def hook_pair() -> tuple[list[Event], list[Event], Callable[[Event], Awaitable[None]]]:
    """A sync recording hook's list, and an ``async def`` hook that records each event only
    after yielding to its event loop - so its list is complete only if it was run to the end."""
    seen: list[Event] = []
    done: list[Event] = []

    async def async_hook(event: Event) -> None:
        await anyio.sleep(0)  # noqa: ASYNC115 - a hook as users write it: it yields to the loop
        done.append(event)

    return seen, done, async_hook


@dataclass
class Mount:
    """One mount point wired to the server.  ``get(path)`` makes one GET the way a user would
    (it returns an awaitable for the async mounts) and gives ``(status, text)``."""

    kind: str
    name: str  # the breaker's name, as events carry it
    get: Callable[[str], Any]
    open_error: type[BaseException]
    # What the decorated function raised (its raise_for_status() errors), in order.
    raised: list[BaseException] = field(default_factory=list)

    @property
    def decorator(self) -> bool:
        return self.kind.endswith("decorator")

    def attempt_error(self, attempt: int) -> BaseException | None:
        """The ``error`` field of events about attempt n (1-based): the decorated function's
        exception; None for a transport, which reads the status from the response."""
        return self.raised[attempt - 1] if self.decorator else None


def _requests_fallback(request: requests.PreparedRequest, error: BaseException) -> Any:
    response = requests.Response()
    response.status_code = 200
    response._content = b"cached"
    response.encoding = "utf-8"
    response.request = request
    return response


def _httpx_fallback(request: httpx.Request, error: BaseException) -> httpx.Response:
    return httpx.Response(200, text="cached", request=request)


@contextmanager
def sync_mount(
    kind: str, server: ScriptedServer, config: ResilientConfig, fallback: bool
) -> Iterator[Mount]:
    """A sync mount point of ``kind`` with ``config``; ``fallback``: answers (200, "cached")."""
    if kind == "decorator":
        raised: list[BaseException] = []
        with requests.Session() as session:

            def get(path: str) -> Got:
                response = session.get(server.url + path, timeout=TIMEOUT)
                try:
                    response.raise_for_status()
                except requests.HTTPError as exc:
                    raised.append(exc)
                    raise
                return response.status_code, response.text

            decorated = resilient_api(replace(config, fallback=CACHED if fallback else None))(get)
            name = f"{get.__module__}.{get.__qualname__}"  # the documented default name
            yield Mount(kind, name, decorated, CircuitOpenError, raised)
    elif kind == "adapter":
        adapter = ResilientAdapter(config, fallback=_requests_fallback if fallback else None)
        with requests.Session() as session:
            session.mount("http://", adapter)

            def send(path: str) -> Got:
                response = session.get(server.url + path, timeout=TIMEOUT)
                return response.status_code, response.text

            yield Mount(kind, server.origin, send, CircuitOpenConnectionError)
    else:
        assert kind == "transport"
        transport = ResilientTransport(config, fallback=_httpx_fallback if fallback else None)
        with httpx.Client(transport=transport, timeout=TIMEOUT) as client:

            def fetch(path: str) -> Got:
                response = client.get(server.url + path)
                return response.status_code, response.text

            yield Mount(kind, server.origin, fetch, CircuitOpenTransportError)


@asynccontextmanager
async def async_mount(
    kind: str, server: ScriptedServer, config: ResilientConfig, fallback: bool
) -> AsyncIterator[Mount]:
    """An async mount point of ``kind``; as :func:`sync_mount`."""
    if kind == "async-decorator":
        raised: list[BaseException] = []
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:

            async def get(path: str) -> Got:
                response = await client.get(server.url + path)
                try:
                    response.raise_for_status()
                except httpx.HTTPStatusError as exc:
                    raised.append(exc)
                    raise
                return response.status_code, response.text

            decorated = resilient_api(replace(config, fallback=CACHED if fallback else None))(get)
            name = f"{get.__module__}.{get.__qualname__}"
            yield Mount(kind, name, decorated, CircuitOpenError, raised)
    else:
        assert kind == "async-transport"
        transport = AsyncResilientTransport(config, fallback=_httpx_fallback if fallback else None)
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:

            async def fetch(path: str) -> Got:
                response = await client.get(server.url + path)
                return response.status_code, response.text

            yield Mount(kind, server.origin, fetch, CircuitOpenTransportError)


def outcome(mount: Mount, path: str) -> Got | BaseException:
    """What a sync call gave: its value, or the exception it raised."""
    try:
        result: Got = mount.get(path)
    except Exception as exc:
        return exc
    return result


async def async_outcome(mount: Mount, path: str) -> Got | BaseException:
    """What an async call gave: its value, or the exception it raised."""
    try:
        result: Got = await mount.get(path)
    except Exception as exc:
        return exc
    return result


# -- what each phase of the outage sends --------------------------------------------------------


def outage_events(mount: Mount, clock: SleepLog, fallback: bool) -> list[Event]:
    """Three 503s: two retries (each after the sleep it announced), the third failure opens
    the breaker (``at`` = the clock then: nothing sleeps afterwards), the call gives up;
    the decorator serves its fallback for the last error, a transport returns the last 503."""
    assert len(clock.slept) == 2
    assert 0 <= clock.slept[0] < 0.5
    assert 0 <= clock.slept[1] < 1.0
    name, error = mount.name, mount.attempt_error
    events: list[Event] = [
        RetryScheduled(name, 1, clock.slept[0], 503, error(1)),
        RetryScheduled(name, 2, clock.slept[1], 503, error(2)),
        StateChanged(name, CLOSED, OPEN, 3, clock.now, "consecutive failures"),
        RetriesExhausted(name, 3, 503, error(3), "breaker open"),
    ]
    if mount.decorator and fallback:
        events.append(FallbackServed(name, mount.raised[2]))
    return events


def outage_result(mount: Mount, fallback: bool) -> object:
    if not mount.decorator:
        return LAST_503
    return CACHED if fallback else mount.raised[-1]


def rejection_events(mount: Mount, fallback: bool) -> list[Event]:
    """The open breaker rejects the next call without I/O; a probe is allowed in COOLDOWN s."""
    events: list[Event] = [CallRejected(mount.name, about(COOLDOWN))]
    if fallback:
        error: Any = Is(mount.open_error, name=mount.name, retry_after=about(COOLDOWN))
        events.append(FallbackServed(mount.name, error))
    return events


def rejection_result(mount: Mount, fallback: bool) -> object:
    return CACHED if fallback else Is(mount.open_error, name=mount.name)


def recovery_events(mount: Mount, clock: SleepLog) -> list[Event]:
    """The probe claims HALF_OPEN (3 failures still counted) and closes the breaker (0)."""
    return [
        StateChanged(mount.name, OPEN, HALF_OPEN, 3, clock.now),
        StateChanged(mount.name, HALF_OPEN, CLOSED, 0, clock.now),
    ]


# -- 1, 2, 3: a scripted outage, seen by per-config (sync and async) and global hooks ----------


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
@pytest.mark.parametrize("kind", SYNC_MOUNTS)
def test_a_scripted_outage_sends_each_event_once_in_order(
    kind: str,
    fallback: bool,
    server: ScriptedServer,
    clock: SleepLog,
    global_hooks: GlobalHooks,
) -> None:
    """503, 503, 503 opens the breaker (two RetryScheduled, StateChanged, RetriesExhausted,
    FallbackServed for a decorator with a fallback); the next call gets exactly one
    CallRejected (+ FallbackServed with a fallback); after the cooldown a good probe sends
    OPEN -> HALF_OPEN -> CLOSED once each; a plain success then sends nothing.

    A per-config sync hook, a per-config ``async def`` hook (no running loop: run to
    completion before the call returns) and a global hook all see exactly that sequence,
    once; a removed global hook sees nothing."""
    seen, done, async_hook = hook_pair()
    config = replace(OUTAGE, hooks=(seen.append, async_hook))
    server.script("/api", Reply(503), Reply(503), Reply(503))
    with sync_mount(kind, server, config, fallback) as mount:
        assert outcome(mount, "/api") == outage_result(mount, fallback)
        expected = outage_events(mount, clock, fallback)
        assert typed(seen) == typed(expected)
        assert done == seen
        assert server.count("/api") == 3

        assert outcome(mount, "/api") == rejection_result(mount, fallback)
        expected += rejection_events(mount, fallback)
        assert typed(seen) == typed(expected)
        assert done == seen
        assert server.count("/api") == 3  # rejected without I/O

        clock.pass_time(COOLDOWN + 0.001)
        assert outcome(mount, "/api") == OK
        expected += recovery_events(mount, clock)
        assert typed(seen) == typed(expected)
        assert done == seen

        assert outcome(mount, "/api") == OK
        assert server.count("/api") == 5
    assert typed(seen) == typed(expected)  # the success sent nothing
    assert done == seen
    assert typed(global_hooks.seen) == typed(expected)  # once, not once per registration
    assert global_hooks.removed == []


@pytest.mark.anyio
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
@pytest.mark.parametrize("kind", ASYNC_MOUNTS)
async def test_async_scripted_outage_sends_each_event_once_in_order(
    kind: str,
    fallback: bool,
    server: ScriptedServer,
    clock: SleepLog,
    global_hooks: GlobalHooks,
) -> None:
    """The same outage through the async mount points.  The ``async def`` hook has been
    awaited to its end - its appends after ``await anyio.sleep(0)`` are all there, in the
    sync hook's order - by the time each awaited call returns."""
    seen, done, async_hook = hook_pair()
    config = replace(OUTAGE, hooks=(seen.append, async_hook))
    server.script("/api", Reply(503), Reply(503), Reply(503))
    async with async_mount(kind, server, config, fallback) as mount:
        assert await async_outcome(mount, "/api") == outage_result(mount, fallback)
        expected = outage_events(mount, clock, fallback)
        assert typed(seen) == typed(expected)
        assert done == seen
        assert server.count("/api") == 3

        assert await async_outcome(mount, "/api") == rejection_result(mount, fallback)
        expected += rejection_events(mount, fallback)
        assert typed(seen) == typed(expected)
        assert done == seen
        assert server.count("/api") == 3

        clock.pass_time(COOLDOWN + 0.001)
        assert await async_outcome(mount, "/api") == OK
        expected += recovery_events(mount, clock)
        assert typed(seen) == typed(expected)
        assert done == seen

        assert await async_outcome(mount, "/api") == OK
        assert server.count("/api") == 5
    assert typed(seen) == typed(expected)
    assert done == seen
    assert typed(global_hooks.seen) == typed(expected)
    assert global_hooks.removed == []


@pytest.mark.anyio
async def test_async_hook_of_a_sync_call_inside_a_running_loop_runs_as_a_task(
    clock: SleepLog,
) -> None:
    """A sync call made inside a running event loop must not block it: its ``async def`` hook
    is started as a task on that loop, which runs it to the end once the test yields - not
    inline, and never dropped."""
    seen, done, async_hook = hook_pair()
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        fallback="cached",
        hooks=(seen.append, async_hook),
    )
    error = ConnectionError("refused")

    def down() -> str:
        raise error

    assert resilient_api(config)(down)() == "cached"
    name = f"{down.__module__}.{down.__qualname__}"
    assert typed(seen) == typed(
        [
            StateChanged(name, CLOSED, OPEN, 1, clock.now, "consecutive failures"),
            RetriesExhausted(name, 1, None, error, "breaker open"),
            FallbackServed(name, error),
        ]
    )
    assert done == []  # scheduled, not yet run: the sync call did not block the loop
    for _ in range(100):  # each task needs two turns of the loop; no wall clock involved
        if len(done) == len(seen):
            break
        await anyio.lowlevel.checkpoint()
    assert done == seen  # every event, once, in order


# -- 4: a raising hook never breaks the call ------------------------------------------------------


class HookFailure(Exception):
    """What the broken hooks raise."""


def broken_hooks() -> tuple[Callable[[Event], object], Callable[[Event], Awaitable[None]]]:
    def broken_sync_hook(event: Event) -> None:
        raise HookFailure(type(event).__name__)

    async def broken_async_hook(event: Event) -> None:
        await anyio.sleep(0)  # noqa: ASYNC115 - fails only after yielding to the loop
        raise HookFailure(type(event).__name__)

    return broken_sync_hook, broken_async_hook


def assert_each_failure_logged(
    caplog: pytest.LogCaptureFixture, seen: list[Event], hooks: tuple[Callable[..., Any], ...]
) -> None:
    """One ERROR on the ``smoothapi`` logger per event and broken hook, naming the hook and
    carrying its exception."""
    records = [r for r in caplog.records if r.name == "smoothapi" and r.levelno == logging.ERROR]
    for hook in hooks:
        mine = [r for r in records if hook.__qualname__ in r.getMessage()]
        assert [r.getMessage().count(" raised on ") for r in mine] == [1] * len(seen)
        for record, event in zip(mine, seen, strict=True):
            assert f"raised on {type(event).__name__}(" in record.getMessage()
            assert record.exc_info is not None
            assert isinstance(record.exc_info[1], HookFailure)
    assert len(records) == len(seen) * len(hooks)


@pytest.mark.parametrize("kind", SYNC_MOUNTS)
def test_a_raising_hook_is_logged_and_never_breaks_the_call(
    kind: str, server: ScriptedServer, clock: SleepLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync hook and an ``async def`` hook that raise on every event: the outage and the
    rejection give their usual result (fallback or last 503), the next hook still sees every
    event, and each failure is logged with the hook's name."""
    broken = broken_hooks()
    seen: list[Event] = []
    config = replace(OUTAGE, hooks=(*broken, seen.append))
    server.script("/api", Reply(503), Reply(503), Reply(503))
    with sync_mount(kind, server, config, fallback=True) as mount:
        assert outcome(mount, "/api") == outage_result(mount, fallback=True)
        expected = outage_events(mount, clock, fallback=True)
        assert outcome(mount, "/api") == CACHED
        expected += rejection_events(mount, fallback=True)
    assert typed(seen) == typed(expected)
    assert_each_failure_logged(caplog, seen, broken)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_MOUNTS)
async def test_async_a_raising_hook_is_logged_and_never_breaks_the_call(
    kind: str, server: ScriptedServer, clock: SleepLog, caplog: pytest.LogCaptureFixture
) -> None:
    """The same through the async mount points, where the async hook is awaited."""
    broken = broken_hooks()
    seen: list[Event] = []
    config = replace(OUTAGE, hooks=(*broken, seen.append))
    server.script("/api", Reply(503), Reply(503), Reply(503))
    async with async_mount(kind, server, config, fallback=True) as mount:
        assert await async_outcome(mount, "/api") == outage_result(mount, fallback=True)
        expected = outage_events(mount, clock, fallback=True)
        assert await async_outcome(mount, "/api") == CACHED
        expected += rejection_events(mount, fallback=True)
    assert typed(seen) == typed(expected)
    assert_each_failure_logged(caplog, seen, broken)


# -- 5: the retry budget ------------------------------------------------------------------------


def budget_events(mount: Mount, clock: SleepLog) -> list[Event]:
    """Two calls against a dead server, the bucket at 4 tokens and retrying above 2.

    Call 1: attempt 1 fails, retry (3 tokens), attempt 2 fails, retry (2), attempt 3 fails
    and the retry is refused.  Call 2: attempt 1 fails, refused at once.  Each refusal sends
    one RetryBudgetExhausted, immediately followed by its RetriesExhausted.
    """
    name, error = mount.name, mount.attempt_error
    reason = "retry budget exhausted"
    return [
        RetryScheduled(name, 1, clock.slept[0], 503, error(1)),
        RetryScheduled(name, 2, clock.slept[1], 503, error(2)),
        RetryBudgetExhausted(name, 3, 503, error(3)),
        RetriesExhausted(name, 3, 503, error(3), reason),
        RetryBudgetExhausted(name, 1, 503, error(4)),
        RetriesExhausted(name, 1, 503, error(4), reason),
    ]


def budget_result(mount: Mount) -> object:
    """The give-up returns the last 503 (transports) or re-raises the last error."""
    return mount.raised[-1] if mount.decorator else LAST_503


@pytest.mark.parametrize("kind", SYNC_MOUNTS)
def test_each_refused_retry_sends_one_budget_event_then_gives_up(
    kind: str, server: ScriptedServer, clock: SleepLog
) -> None:
    """RetryBudgetExhausted once per refused retry, right before RetriesExhausted."""
    seen: list[Event] = []
    server.default = Reply(503)
    with sync_mount(kind, server, replace(BUDGET, hooks=(seen.append,)), fallback=False) as mount:
        assert outcome(mount, "/down") == budget_result(mount)
        assert outcome(mount, "/down") == budget_result(mount)
        assert typed(seen) == typed(budget_events(mount, clock))
    assert server.count("/down") == 4
    assert len(clock.slept) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_MOUNTS)
async def test_async_each_refused_retry_sends_one_budget_event_then_gives_up(
    kind: str, server: ScriptedServer, clock: SleepLog
) -> None:
    """The same through the async mount points."""
    seen: list[Event] = []
    server.default = Reply(503)
    config = replace(BUDGET, hooks=(seen.append,))
    async with async_mount(kind, server, config, fallback=False) as mount:
        assert await async_outcome(mount, "/down") == budget_result(mount)
        assert await async_outcome(mount, "/down") == budget_result(mount)
        assert typed(seen) == typed(budget_events(mount, clock))
    assert server.count("/down") == 4
    assert len(clock.slept) == 2


# -- 6: a call that succeeds first time sends nothing ---------------------------------------------


@pytest.mark.parametrize("kind", SYNC_MOUNTS)
def test_a_first_time_success_sends_no_event(
    kind: str, server: ScriptedServer, clock: SleepLog, global_hooks: GlobalHooks
) -> None:
    """No hook - per-config sync or async, or global - hears of a call that simply succeeds."""
    seen, done, async_hook = hook_pair()
    config = replace(OUTAGE, hooks=(seen.append, async_hook))
    with sync_mount(kind, server, config, fallback=True) as mount:
        for _ in range(3):
            assert outcome(mount, "/fine") == OK
    assert server.count("/fine") == 3
    assert seen == done == global_hooks.seen == []


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_MOUNTS)
async def test_async_a_first_time_success_sends_no_event(
    kind: str, server: ScriptedServer, clock: SleepLog, global_hooks: GlobalHooks
) -> None:
    """The same through the async mount points."""
    seen, done, async_hook = hook_pair()
    config = replace(OUTAGE, hooks=(seen.append, async_hook))
    async with async_mount(kind, server, config, fallback=True) as mount:
        for _ in range(3):
            assert await async_outcome(mount, "/fine") == OK
    assert server.count("/fine") == 3
    assert seen == done == global_hooks.seen == []


def test_an_async_hook_task_cancelled_by_loop_shutdown_is_logged_not_lost_silently(
    caplog: pytest.LogCaptureFixture, clock: SleepLog
) -> None:
    """A sync call inside ``asyncio.run(main)`` whose loop ends before the hook's task runs:
    the loop cancels the task; smoothapi says so on its logger (and no "never awaited"
    warning escapes, which ``filterwarnings = error`` would turn into a failure)."""
    import asyncio  # noqa: PLC0415 - this test alone drives a raw asyncio loop

    ran: list[Event] = []

    async def slow_hook(event: Event) -> None:
        await asyncio.sleep(0)
        ran.append(event)

    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        hooks=(slow_hook,),
    )

    @resilient_api(config)
    def down() -> None:
        raise ConnectionError("refused")

    async def main() -> None:
        with pytest.raises(ConnectionError):
            down()  # returns at once; the loop ends before the hook tasks start

    with caplog.at_level(logging.WARNING, logger="smoothapi"):
        asyncio.run(main())
    cancelled = [r for r in caplog.records if "was cancelled before it finished" in r.message]
    assert ran == []
    assert len(cancelled) == 2  # StateChanged and RetriesExhausted
    assert all("slow_hook" in r.getMessage() for r in cancelled)


# -- the trip rules: the opening says the rule that tripped, through every mount ----------------

RATE_OUTAGE = ResilientConfig(
    backoff=BackoffConfig(max_retries=0),
    circuit_breaker=CircuitBreakerConfig(
        failure_rate=0.5, minimum_calls=4, cooldown_ms=COOLDOWN * 1000
    ),
)


def _rate_opening(mount: Mount, clock: SleepLog, seen: list[Event]) -> None:
    """200, 503, 200, 503: the fourth attempt brings the window to 2 failed of 4."""
    changes = [event for event in seen if isinstance(event, StateChanged)]
    reason = "failure rate 0.50 over 4 calls"
    expected = [StateChanged(mount.name, CLOSED, OPEN, 2, clock.now, reason)]
    assert typed(changes) == typed(expected)


@pytest.mark.parametrize("kind", SYNC_MOUNTS)
def test_a_failure_rate_opening_reaches_the_hooks_with_its_reason(
    kind: str, server: ScriptedServer, clock: SleepLog
) -> None:
    seen: list[Event] = []
    config = replace(RATE_OUTAGE, hooks=(seen.append,))
    server.script("/rate", Reply(200), Reply(503), Reply(200), Reply(503))
    with sync_mount(kind, server, config, fallback=False) as mount:
        for _ in range(4):
            assert not any(isinstance(event, StateChanged) for event in seen)
            outcome(mount, "/rate")
        _rate_opening(mount, clock, seen)
        assert isinstance(outcome(mount, "/rate"), mount.open_error)  # rejected: it is open


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_MOUNTS)
async def test_async_a_failure_rate_opening_reaches_the_hooks_with_its_reason(
    kind: str, server: ScriptedServer, clock: SleepLog
) -> None:
    seen: list[Event] = []
    config = replace(RATE_OUTAGE, hooks=(seen.append,))
    server.script("/rate", Reply(200), Reply(503), Reply(200), Reply(503))
    async with async_mount(kind, server, config, fallback=False) as mount:
        for _ in range(4):
            assert not any(isinstance(event, StateChanged) for event in seen)
            await async_outcome(mount, "/rate")
        _rate_opening(mount, clock, seen)
        assert isinstance(await async_outcome(mount, "/rate"), mount.open_error)
