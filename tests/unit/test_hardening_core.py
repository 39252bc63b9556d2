"""Issue 11, engine side: regressions that failed on the code before the fix.

1. A probe that ends without a verdict - cancelled while its call awaited an async hook, or a
   sync hook raising ``KeyboardInterrupt`` right after the probe was claimed - gave its permit
   back to nobody: the breaker stuck in HALF_OPEN, rejecting every later call with
   ``retry_after=0.0``.
2. The mark "a decorated call keeps this shared breaker's books" was inherited by tasks and
   threads the call started, and outlived the call: their requests through a transport
   sharing the breaker went to the server while it was OPEN, uncounted.
3. Nested mount points multiplied retries (4 x 4 = 16 requests where 4 were configured).
4. A generator function was decorated without a word, and protected nothing.

HTTP tests run against the real local server (``server``); retries are instant and the
cooldown passes on a fake clock (``instant``).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    ConfigTypeError,
    Event,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    RetriesExhausted,
    RetryScheduled,
    StateChanged,
    _runtime,
    resilient_api,
)
from smoothapi.engine import FAILURE, IGNORED, Outcome, Policy, run_async, run_sync
from smoothapi.testing import FakeClock

COOLDOWN = 10.0
# One failure opens the breaker; no retries, so one call trips it.
TRIPS_AT_ONCE = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=COOLDOWN * 1000)


def trips_at_once(*hooks: Any) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=0), circuit_breaker=TRIPS_AT_ONCE, hooks=hooks
    )


def to_half_open(event: Event) -> bool:
    return isinstance(event, StateChanged) and event.new == "HALF_OPEN"


# -- 1: the probe's permit is given back on every way out ----------------------------------------


@pytest.mark.anyio
async def test_a_probe_cancelled_while_awaiting_an_async_hook_gives_its_permit_back(
    instant: FakeClock,
) -> None:
    """The probe's call awaits the OPEN -> HALF_OPEN hook (before its attempt) and is cancelled
    there.  Before the fix it kept the permit for ever; now the next call is the probe."""
    hook_started = anyio.Event()
    block = True

    async def hook(event: Event) -> None:
        if block and to_half_open(event):
            hook_started.set()
            await anyio.sleep_forever()

    calls = 0

    @resilient_api(trips_at_once(hook))
    async def fetch(fail: bool) -> str:
        nonlocal calls
        calls += 1
        if fail:
            raise ConnectionError("down")
        return "ok"

    with pytest.raises(ConnectionError):
        await fetch(True)
    assert fetch.breaker.state == "OPEN"
    instant.advance(COOLDOWN)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch, False)
        await hook_started.wait()
        assert fetch.breaker.state == "HALF_OPEN"
        tg.cancel_scope.cancel()
    assert calls == 1  # the cancelled probe never made its attempt

    block = False
    assert await fetch(False) == "ok"  # the next call is the probe, not rejected
    assert calls == 2
    assert fetch.breaker.state == "CLOSED"


@pytest.mark.anyio
async def test_a_transport_probe_cancelled_while_awaiting_an_async_hook_gives_its_permit_back(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The same through AsyncResilientTransport, against the real server."""
    hook_started = anyio.Event()
    block = True

    async def hook(event: Event) -> None:
        if block and to_half_open(event):
            hook_started.set()
            await anyio.sleep_forever()

    transport = AsyncResilientTransport(trips_at_once(hook))
    server.script("/p", Reply(503))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(server.url + "/p")).status_code == 503
        breaker = transport.breaker_for(server.url)
        assert breaker.state == "OPEN"
        instant.advance(COOLDOWN)

        async def probe() -> None:
            await client.get(server.url + "/p")

        async with anyio.create_task_group() as tg:
            tg.start_soon(probe)
            await hook_started.wait()
            tg.cancel_scope.cancel()
        assert server.count("/p") == 1

        block = False
        assert (await client.get(server.url + "/p")).status_code == 200  # the probe goes out
    assert server.count("/p") == 2
    assert breaker.state == "CLOSED"


def test_a_sync_hook_interrupting_the_probe_claim_leaves_the_permit_free(
    instant: FakeClock,
) -> None:
    """A sync hook raises KeyboardInterrupt on OPEN -> HALF_OPEN, inside the breaker's acquire,
    after the probe was claimed: the interrupt propagates and the next call is the probe."""
    interrupt = True

    def hook(event: Event) -> None:
        if interrupt and to_half_open(event):
            raise KeyboardInterrupt

    calls = 0

    @resilient_api(trips_at_once(hook))
    def fetch(fail: bool) -> str:
        nonlocal calls
        calls += 1
        if fail:
            raise ConnectionError("down")
        return "ok"

    with pytest.raises(ConnectionError):
        fetch(True)
    instant.advance(COOLDOWN)
    with pytest.raises(KeyboardInterrupt):
        fetch(False)
    assert calls == 1

    interrupt = False
    assert fetch(False) == "ok"
    assert calls == 2
    assert fetch.breaker.state == "CLOSED"


def reopening_policy(clock: FakeClock, **discards: Any) -> tuple[CircuitBreaker, Policy]:
    """A policy whose first attempt fails and whose RetryScheduled hook opens the breaker and
    lets its cooldown pass: the retry's ACQUIRE claims the probe, then the driver discards the
    first response (``discard``/``async_discard``) while holding it."""
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=5, cooldown_ms=COOLDOWN * 1000), name="driver"
    )

    def reopen(event: Event) -> None:
        if isinstance(event, RetryScheduled):
            breaker.force_open()
            clock.advance(COOLDOWN)

    config = ResilientConfig(backoff=BackoffConfig(max_retries=1), hooks=(reopen,))
    policy = Policy(
        config,
        breaker,
        classify_error=lambda exc: Outcome(IGNORED, error=exc),
        classify_value=lambda value: Outcome(FAILURE, value),
        **discards,
    )
    return breaker, policy


def assert_probe_is_free(breaker: CircuitBreaker) -> None:
    assert breaker.state == "HALF_OPEN"
    ticket = breaker.acquire()
    assert ticket > 0, ticket
    assert ticket % 2 == 1, ticket  # odd: the next caller is the probe
    assert breaker.record_success(ticket) == "CLOSED"


def test_the_sync_driver_frees_the_probe_it_holds_when_interrupted(instant: FakeClock) -> None:
    """Interrupted (KeyboardInterrupt) while draining the last response, after claiming the
    probe and before the attempt: the driver gives the permit back."""

    def discard(value: object, final: bool) -> None:
        if final:
            raise KeyboardInterrupt

    breaker, policy = reopening_policy(instant, discard=discard)
    with pytest.raises(KeyboardInterrupt):
        run_sync(policy, lambda: "a retried response")
    assert_probe_is_free(breaker)


@pytest.mark.anyio
async def test_the_async_driver_frees_the_probe_it_holds_when_cancelled(
    instant: FakeClock,
) -> None:
    """Cancelled while draining the last response, holding the probe: the permit goes back."""
    draining = anyio.Event()

    async def async_discard(value: object, final: bool) -> None:
        if final:
            draining.set()
            await anyio.sleep_forever()

    breaker, policy = reopening_policy(instant, async_discard=async_discard)

    async def attempt() -> str:
        return "a retried response"

    async def call() -> None:
        await run_async(policy, attempt)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await draining.wait()
        tg.cancel_scope.cancel()
    assert_probe_is_free(breaker)


@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_a_sync_hook_interrupting_a_transport_probe_leaves_the_permit_free(
    server: ScriptedServer, instant: FakeClock, library: str
) -> None:
    """Through ResilientAdapter / ResilientTransport, against the real server: the interrupted
    probe sends nothing, and the next request is the probe and closes the breaker."""
    interrupt = True

    def hook(event: Event) -> None:
        if interrupt and to_half_open(event):
            raise KeyboardInterrupt

    config = trips_at_once(hook)
    breaker_for: Any
    if library == "requests":
        session = requests.Session()
        adapter = ResilientAdapter(config)
        session.mount("http://", adapter)
        get: Any = lambda: session.get(server.url + "/p", timeout=5).status_code  # noqa: E731
        breaker_for, close = adapter.breaker_for, session.close
    else:
        transport = ResilientTransport(config)
        client = httpx.Client(transport=transport)
        get = lambda: client.get(server.url + "/p").status_code  # noqa: E731
        breaker_for, close = transport.breaker_for, client.close
    try:
        server.script("/p", Reply(503))
        assert get() == 503
        breaker = breaker_for(server.url)
        assert breaker.state == "OPEN"
        instant.advance(COOLDOWN)
        with pytest.raises(KeyboardInterrupt):
            get()
        assert server.count("/p") == 1

        interrupt = False
        assert get() == 200
        assert server.count("/p") == 2
        assert breaker.state == "CLOSED"
    finally:
        close()


def test_the_breaker_frees_a_probe_whose_state_changed_hook_interrupts(
    instant: FakeClock,
) -> None:
    """The breaker alone: acquire() claims the probe, its hook interrupts, the probe is free."""
    interrupt = True

    def hook(event: Event) -> None:
        if interrupt and to_half_open(event):
            raise KeyboardInterrupt

    breaker = CircuitBreaker(TRIPS_AT_ONCE, name="b", hooks=(hook,))
    breaker.record_failure(breaker.acquire())
    instant.advance(COOLDOWN)
    with pytest.raises(KeyboardInterrupt):
        breaker.acquire()
    interrupt = False
    ticket = breaker.acquire()
    assert ticket > 0, ticket
    assert ticket % 2 == 1, ticket  # odd: this caller is the probe
    assert breaker.record_success(ticket) == "CLOSED"


# -- 2: the shared breaker's mark lives only as long as the call ----------------------------------

SHARED = ResilientConfig(
    backoff=BackoffConfig(max_retries=0),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=5, cooldown_ms=COOLDOWN * 1000),
)


@pytest.mark.anyio
async def test_a_task_started_inside_a_decorated_call_cannot_bypass_the_open_breaker(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A task started inside the call (breaker= shared with the transport) makes its request
    after the call returned, while the breaker is OPEN: rejected, nothing reaches the server.
    Before the fix the inherited mark let it through, uncounted."""
    breaker = CircuitBreaker(SHARED.circuit_breaker, name="shared-task")
    transport = AsyncResilientTransport(SHARED, breaker=breaker)
    returned = anyio.Event()
    outcome: list[object] = []

    async with httpx.AsyncClient(transport=transport) as client:

        async def later() -> None:
            await returned.wait()
            try:
                outcome.append(await client.get(server.url + "/later"))
            except CircuitOpenError as exc:
                outcome.append(exc)

        @resilient_api(SHARED, breaker=breaker)
        async def call(tg: anyio.abc.TaskGroup) -> int:
            tg.start_soon(later)  # inherits the call's context
            return (await client.get(server.url + "/now")).status_code

        async with anyio.create_task_group() as tg:
            assert await call(tg) == 200
            breaker.force_open()
            returned.set()

    assert len(outcome) == 1, outcome
    assert isinstance(outcome[0], CircuitOpenError), outcome
    assert server.count("/later") == 0
    assert server.count("/now") == 1


@pytest.mark.anyio
async def test_a_task_whose_own_decorated_call_began_inside_cannot_bypass_the_open_breaker(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The task's own decorated call g() starts while the outer call runs (so g's attempt runs
    inside the outer one) and sends its request after the outer call returned and its breaker
    was forced OPEN: rejected.  An inner attempt links to the outer cell instead of copying
    the outer mark, so the outer's end is seen through g's attempt too."""
    breaker = CircuitBreaker(SHARED.circuit_breaker, name="shared-nested-task")
    transport = AsyncResilientTransport(SHARED, breaker=breaker)
    started = anyio.Event()
    returned = anyio.Event()
    outcome: list[object] = []

    async with httpx.AsyncClient(transport=transport) as client:

        @resilient_api(SHARED)
        async def g() -> int:
            started.set()
            await returned.wait()  # the outer call has returned by now
            return (await client.get(server.url + "/later")).status_code

        async def later() -> None:
            try:
                outcome.append(await g())
            except CircuitOpenError as exc:
                outcome.append(exc)

        @resilient_api(SHARED, breaker=breaker)
        async def call(tg: anyio.abc.TaskGroup) -> str:
            tg.start_soon(later)  # inherits the call's context
            await started.wait()  # g's attempt is running inside ours
            return "done"

        async with anyio.create_task_group() as tg:
            assert await call(tg) == "done"
            breaker.force_open()
            returned.set()

    assert len(outcome) == 1, outcome
    assert isinstance(outcome[0], CircuitOpenError), outcome
    assert server.count("/later") == 0


def test_many_calls_inside_one_outer_call_keep_the_scope_chain_short() -> None:
    """Ended attempts are skipped when a new one links to its parent, so 10,000 inner calls
    inside one outer call leave a chain of at most two cells (the last inner one, ended, and
    the outer one) - never one cell per call."""

    @resilient_api(ResilientConfig())
    def inner() -> int:
        return 1

    @resilient_api(ResilientConfig())
    def outer() -> int:
        total = sum(inner() for _ in range(10_000))
        cell, length = _runtime.scope.get(), 0
        while cell is not None:
            length += 1
            cell = cell[1]
        assert length <= 2
        assert _runtime.outer_retries()  # the outer call is live and retries
        return total

    assert outer() == 10_000
    assert not _runtime.outer_retries()  # ended: nothing live around us any more


def test_a_thread_started_inside_a_decorated_call_cannot_bypass_the_open_breaker(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The same with a thread that runs in a copy of the call's context (as
    ``asyncio.to_thread`` and ``loop.run_in_executor`` do), through ResilientAdapter."""
    breaker = CircuitBreaker(SHARED.circuit_breaker, name="shared-thread")
    session = requests.Session()
    session.mount("http://", ResilientAdapter(SHARED, breaker=breaker))
    returned = threading.Event()
    outcome: list[object] = []

    def later() -> None:
        returned.wait(5)
        try:
            outcome.append(session.get(server.url + "/later", timeout=5))
        except CircuitOpenError as exc:
            outcome.append(exc)

    threads: list[threading.Thread] = []

    @resilient_api(SHARED, breaker=breaker)
    def call() -> int:
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(later,))
        thread.start()
        threads.append(thread)
        return session.get(server.url + "/now", timeout=5).status_code

    try:
        assert call() == 200
        breaker.force_open()
        returned.set()
        threads[0].join(5)
        assert not threads[0].is_alive()
    finally:
        session.close()
    assert len(outcome) == 1, outcome
    assert isinstance(outcome[0], CircuitOpenError), outcome
    assert server.count("/later") == 0


# -- 3: nested mount points do not multiply retries ----------------------------------------------

FOUR_ATTEMPTS = ResilientConfig(
    backoff=BackoffConfig(max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
)


@pytest.fixture
def down(server: ScriptedServer) -> ScriptedServer:
    """The real server, answering 503 to everything."""
    server.default = Reply(503)
    return server


def test_a_decorated_function_calling_through_an_adapter_sends_four_requests(
    down: ScriptedServer, instant: FakeClock
) -> None:
    """decorator(max_retries=3) around ResilientAdapter(max_retries=3): 4 requests, not 16.
    The adapter's own breaker still counts each of its one-attempt calls."""
    adapter = ResilientAdapter(FOUR_ATTEMPTS)
    session = requests.Session()
    session.mount("http://", adapter)
    outcomes: list[Event] = []

    @resilient_api(replace(FOUR_ATTEMPTS, hooks=(outcomes.append,)))
    def fetch() -> int:
        response = session.get(down.url + "/x", timeout=5)
        response.raise_for_status()
        return response.status_code

    try:
        with pytest.raises(requests.HTTPError):
            fetch()
    finally:
        session.close()
    assert down.count("/x") == 4
    assert adapter.breaker_for(down.url).failure_count == 4
    assert [e.attempts for e in outcomes if isinstance(e, RetriesExhausted)] == [4]


def test_the_inner_breaker_still_rejects_inside_an_outer_retry(
    down: ScriptedServer, instant: FakeClock
) -> None:
    """The adapter's breaker opens after 2 failures: the decorator's later attempts are
    rejected by it without a request."""
    adapter = ResilientAdapter(
        ResilientConfig(
            backoff=BackoffConfig(max_retries=3),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000),
        )
    )
    session = requests.Session()
    session.mount("http://", adapter)

    @resilient_api(FOUR_ATTEMPTS)
    def fetch() -> int:
        response = session.get(down.url + "/x", timeout=5)
        response.raise_for_status()
        return response.status_code

    try:
        with pytest.raises((requests.HTTPError, CircuitOpenError)):
            fetch()
    finally:
        session.close()
    assert down.count("/x") == 2
    assert adapter.breaker_for(down.url).state == "OPEN"


def test_a_transport_wrapping_a_transport_sends_four_requests(
    down: ScriptedServer, instant: FakeClock
) -> None:
    inner = ResilientTransport(FOUR_ATTEMPTS)
    with httpx.Client(transport=ResilientTransport(FOUR_ATTEMPTS, inner)) as client:
        response = client.get(down.url + "/x")
    assert response.status_code == 503
    assert down.count("/x") == 4
    assert response.extensions["smoothapi_attempts"] == 4
    assert inner.breaker_for(down.url).failure_count == 4


@pytest.mark.anyio
async def test_async_nested_mount_points_send_four_requests(
    down: ScriptedServer, instant: FakeClock
) -> None:
    """AsyncResilientTransport in AsyncResilientTransport, and a decorated async def calling
    through one: 4 requests each."""
    inner = AsyncResilientTransport(FOUR_ATTEMPTS)
    async with httpx.AsyncClient(transport=AsyncResilientTransport(FOUR_ATTEMPTS, inner)) as c:
        assert (await c.get(down.url + "/nested")).status_code == 503
    assert down.count("/nested") == 4

    async with httpx.AsyncClient(transport=AsyncResilientTransport(FOUR_ATTEMPTS)) as client:

        @resilient_api(FOUR_ATTEMPTS)
        async def fetch() -> int:
            response = await client.get(down.url + "/decorated")
            response.raise_for_status()
            return response.status_code

        with pytest.raises(httpx.HTTPStatusError):
            await fetch()
    assert down.count("/decorated") == 4


def test_the_outer_mark_survives_inner_decorated_calls(
    down: ScriptedServer, instant: FakeClock
) -> None:
    """Inside a retrying decorated call: a decorated helper that returned before the request,
    and one that does not retry around it, do not hide the outer retries from the adapter:
    still 4 requests, not 16."""
    session = requests.Session()
    session.mount("http://", ResilientAdapter(FOUR_ATTEMPTS))

    @resilient_api(FOUR_ATTEMPTS)
    def helper() -> int:
        return 1

    @resilient_api(replace(FOUR_ATTEMPTS, backoff=BackoffConfig(max_retries=0)))
    def once(path: str) -> int:
        response = session.get(down.url + path, timeout=5)
        response.raise_for_status()
        return response.status_code

    @resilient_api(FOUR_ATTEMPTS)
    def fetch(path: str) -> int:
        helper()
        helper()
        if path == "/direct":
            response = session.get(down.url + path, timeout=5)
            response.raise_for_status()
            return response.status_code
        return once(path)

    try:
        for path in ("/direct", "/through-once"):
            with pytest.raises(requests.HTTPError):
                fetch(path)
            assert down.count(path) == 4, path
    finally:
        session.close()


def test_a_breaker_shared_with_the_outer_call_is_not_hidden_by_an_inner_one(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """decorator(breaker=B) -> another decorated function -> transport(breaker=B): the
    transport still leaves B's books to the outer call (each request counts once)."""
    # Counted twice per request, 3 failed requests would open it (6 >= 5).
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=5), name="outer-shared")
    server.script("/u", Reply(503), Reply(503), Reply(503))
    counted: list[int] = []
    with httpx.Client(transport=ResilientTransport(FOUR_ATTEMPTS, breaker=breaker)) as client:

        @resilient_api(replace(FOUR_ATTEMPTS, backoff=BackoffConfig(max_retries=0)))
        def inner() -> int:
            response = client.get(server.url + "/u")
            counted.append(breaker.failure_count)
            response.raise_for_status()
            return response.status_code

        @resilient_api(FOUR_ATTEMPTS, breaker=breaker)
        def outer() -> int:
            return inner()

        assert outer() == 200
    assert server.count("/u") == 4
    assert counted == [0, 1, 2, 3]  # only the outer call counts, after each failed attempt
    assert breaker.state == "CLOSED"


def test_a_transport_given_the_decorators_own_breaker_leaves_it_the_books(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """``fn.breaker`` passed to a transport used inside ``fn``: each request counts once."""
    server.script("/u", Reply(503), Reply(503), Reply(503))
    counted: list[int] = []
    session = requests.Session()

    @resilient_api(
        replace(FOUR_ATTEMPTS, circuit_breaker=CircuitBreakerConfig(failure_threshold=5))
    )
    def fetch() -> int:
        response = session.get(server.url + "/u", timeout=5)
        counted.append(fetch.breaker.failure_count)
        response.raise_for_status()
        return response.status_code

    session.mount("http://", ResilientAdapter(FOUR_ATTEMPTS, breaker=fetch.breaker))
    try:
        assert fetch() == 200
    finally:
        session.close()
    assert counted == [0, 1, 2, 3]
    assert server.count("/u") == 4


def test_a_transport_wrapping_one_that_shares_its_breaker_counts_each_request_once(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Counted twice, two 503s would open a breaker with threshold 3 before the 200."""
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3), name="both")
    server.script("/u", Reply(503), Reply(503))
    inner = ResilientTransport(FOUR_ATTEMPTS, breaker=breaker)
    outer = ResilientTransport(FOUR_ATTEMPTS, inner, breaker=breaker)
    with httpx.Client(transport=outer) as client:
        response = client.get(server.url + "/u")
    assert response.status_code == 200
    assert response.extensions["smoothapi_attempts"] == 3
    assert server.count("/u") == 3
    assert breaker.state == "CLOSED"


def test_an_inner_mount_point_retries_on_its_own_outside_the_outer_call(
    down: ScriptedServer, instant: FakeClock
) -> None:
    """The rule covers only the outer call's lifetime: the same adapter used on its own
    afterwards, and an outer mount point that does not retry, leave it its retries."""
    session = requests.Session()
    session.mount("http://", ResilientAdapter(FOUR_ATTEMPTS))

    @resilient_api(ResilientConfig(backoff=BackoffConfig(max_retries=0)))
    def once() -> int:
        return session.get(down.url + "/once", timeout=5).status_code

    try:
        assert once() == 503
        assert down.count("/once") == 4  # the decorator does not retry: the adapter does
        assert session.get(down.url + "/alone", timeout=5).status_code == 503
        assert down.count("/alone") == 4
    finally:
        session.close()


# -- 4: decorator friction -------------------------------------------------------------------------


def test_decorating_a_generator_function_is_refused() -> None:
    def pages() -> Iterator[int]:
        yield 1

    with pytest.raises(ConfigTypeError, match=r"generator function .*pages.*list\(gen\(\)\)"):
        resilient_api(pages)
    with pytest.raises(ConfigTypeError, match="generator function"):
        resilient_api(ResilientConfig())(pages)


def test_decorating_an_async_generator_function_is_refused() -> None:
    async def pages() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ConfigTypeError, match=r"async generator function .*pages.*async for"):
        resilient_api(pages)


def test_with_fallback_takes_a_value_or_a_callable_of_the_error() -> None:
    """What the typed signature allows works at run time (the types: tests/typing)."""

    @resilient_api
    def fetch() -> int:
        return 1

    fetch.breaker.force_open()
    assert fetch.with_fallback(7)() == 7
    assert fetch.with_fallback(lambda error: int(isinstance(error, CircuitOpenError)))() == 1
