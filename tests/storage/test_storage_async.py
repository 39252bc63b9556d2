"""The Redis-backed breaker from ``async def`` code, under asyncio and under trio.

Issue 5 ("Async flavour under asyncio and trio") and the spec of
``smoothapi.storage``: the ``*_async`` twins of a SharedCircuitBreaker use the
``redis.asyncio`` client under asyncio and run the sync client in a worker
thread under trio; a cancelled probe gives its permit back at once (the engine
reports "release" even while the task is being cancelled), so the next caller
probes without waiting for the lease to expire.

Every test runs against a real Redis (the ``redis_url`` session fixture) and a
real HTTP server, counts the requests that reached the server, and reads the
shared state through a second breaker object on a client of its own - so what
is checked is the state in Redis, not a local copy.  Each test has a key
prefix of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import uuid
import warnings
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from httpserver import Delay, Reply, ScriptedServer

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    Event,
    ResilientConfig,
    StateChanged,
    StoreRecovered,
    StoreUnavailable,
    resilient_api,
)
from smoothapi.storage import RedisStore

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

THRESHOLD = 5
COOLDOWN_MS = 1000
TASKS = 8
EXTRA_REJECTED = 3  # calls each task makes after its first rejection: all must be rejected
PROBE_DELAY = 0.5  # s the server holds the probe's reply
MARGIN = 0.05  # s of slack for Event.wait and clock reads, in the lenient direction
POLL = 0.002  # s between a rejected call and the next one
REDIS_TIMEOUT = 2.0
SAFETY_NET = 30.0  # anyio.fail_after around every wait; a passing run never comes near it
PROBE_BODY = "probe"
OK_BODY = "ok"


@contextlib.asynccontextmanager
async def _store(
    redis_url: str, prefix: str, backend: str, *, sync: bool = True
) -> AsyncIterator[RedisStore]:
    """A RedisStore with a redis.asyncio client (and a sync one unless ``sync=False``),
    both closed afterwards."""
    kwargs: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
    }
    async_client = redis.asyncio.Redis.from_url(redis_url, **kwargs)
    sync_client = redis.Redis.from_url(redis_url, **kwargs) if sync else None
    try:
        if sync_client is None:
            yield RedisStore(async_client, prefix=prefix)
        else:
            yield RedisStore(sync_client, async_client=async_client, prefix=prefix)
    finally:
        if sync_client is not None:
            sync_client.close()
        # Under trio the store must never touch the asyncio client (it would not run
        # there), and closing it needs asyncio: it never connected, there is nothing to close.
        if backend == "asyncio":
            await async_client.aclose()


@contextlib.contextmanager
def _observer(
    redis_url: str, prefix: str, name: str, cooldown_ms: float
) -> Iterator[CircuitBreaker]:
    """A second breaker on the same key, with a sync client of its own."""
    client = redis.Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        config = CircuitBreakerConfig(
            failure_threshold=THRESHOLD,
            cooldown_ms=cooldown_ms,
            store=RedisStore(client, prefix=prefix),
        )
        yield CircuitBreaker(config, name=name)
    finally:
        client.close()


@dataclass
class Events:
    """The hook of the decorated function's config."""

    transitions: list[tuple[str, str]] = field(default_factory=list)
    store: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self.transitions.append((str(event.old), str(event.new)))
        elif isinstance(event, (StoreUnavailable, StoreRecovered)):
            self.store.append(event)


def _decorated(
    store: RedisStore, client: httpx.AsyncClient, base_url: str, name: str, cooldown_ms: float
) -> tuple[Any, Events]:
    events = Events()
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=THRESHOLD, cooldown_ms=cooldown_ms, store=store
        ),
        hooks=(events,),
    )

    @resilient_api(config, name=name)
    async def fetch(path: str) -> str:
        response = await client.get(base_url + path)
        response.raise_for_status()
        return response.text

    return fetch, events


@dataclass(frozen=True)
class Call:
    task: int
    start: float
    end: float
    outcome: str  # "ok", "failed" (HTTPStatusError), "rejected" (CircuitOpenError), "error"
    body: str = ""
    retry_after: float | None = None


async def _call(fetch: Any, path: str, task: int) -> Call:
    start = time.monotonic()
    try:
        body = await fetch(path)
    except CircuitOpenError as exc:
        return Call(task, start, time.monotonic(), "rejected", retry_after=exc.retry_after)
    except httpx.HTTPStatusError as exc:
        return Call(task, start, time.monotonic(), "failed", body=str(exc.response.status_code))
    except Exception as exc:
        return Call(task, start, time.monotonic(), "error", body=f"{type(exc).__name__}: {exc}")
    return Call(task, start, time.monotonic(), "ok", body=body)


async def _until_rejected(fetch: Any, task: int, calls: list[Call]) -> None:
    rejected = 0
    for _ in range(100):
        c = await _call(fetch, "/down", task)
        calls.append(c)
        if c.outcome == "error":
            return
        if rejected or c.outcome == "rejected":
            rejected += 1
            if rejected > EXTRA_REJECTED:
                return


async def _until_value(fetch: Any, task: int, calls: list[Call], probe_done: anyio.Event) -> None:
    while True:
        c = await _call(fetch, "/up", task)
        calls.append(c)
        if c.outcome == "ok" and c.body == PROBE_BODY:
            probe_done.set()
        if c.outcome != "rejected":
            return
        await anyio.sleep(POLL)


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (bounded by the callers' ``fail_after``)."""
    for _ in range(int(SAFETY_NET / POLL)):
        if predicate():
            return
        await anyio.sleep(POLL)
    pytest.fail("timed out")


async def _sample(
    server: ScriptedServer, samples: list[tuple[float, int, float]], done: anyio.Event
) -> None:
    """Count the requests at /up, with the interval each count was read in, until ``done``."""
    while not done.is_set():
        before = time.monotonic()
        n = server.count("/up")
        samples.append((before, n, time.monotonic()))
        await anyio.sleep(0.005)


async def test_async_callers_open_the_shared_breaker_then_send_one_probe(
    anyio_backend: str, server: ScriptedServer, redis_url: str, redis_prefix: str
) -> None:
    """8 tasks call an ``async def`` decorated with a Redis-backed config (failure_threshold
    5, max_retries 0) on an upstream that answers 503: the breaker in Redis opens (a second
    breaker object sees OPEN) after 5 failures in total and at most 5 + 8 - 1 requests (the
    in-flight calls when it opened), and every task is rejected from then on.  After the
    cooldown, with the upstream answering 200 after PROBE_DELAY, exactly one request
    reaches the server while the probe is unanswered (the other tasks keep calling and are
    rejected with retry_after == 0.0); its success closes the breaker for everyone.
    Under trio the store runs its sync client in worker threads.
    """
    prefix, name = redis_prefix, "async-upstream"
    server.default = Reply(503)
    calls: list[Call] = []
    samples: list[tuple[float, int, float]] = []
    probe_done = anyio.Event()
    with _observer(redis_url, prefix, name, COOLDOWN_MS) as observer:
        async with (
            _store(redis_url, prefix, anyio_backend) as store,
            httpx.AsyncClient(timeout=10) as client,
        ):
            fetch, events = _decorated(store, client, server.url, name, COOLDOWN_MS)
            with anyio.fail_after(SAFETY_NET):
                async with anyio.create_task_group() as tg:
                    for i in range(TASKS):
                        tg.start_soon(_until_rejected, fetch, i, calls)
            state_after_trip = observer.state
            down_requests = server.count("/down")

            server.script("/up", Delay(PROBE_DELAY, Reply(200, PROBE_BODY.encode())))
            server.default = Reply(200, OK_BODY.encode())
            samples.append((time.monotonic(), server.count("/up"), time.monotonic()))
            with anyio.fail_after(SAFETY_NET):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_sample, server, samples, probe_done)
                    async with anyio.create_task_group() as callers:
                        for i in range(TASKS):
                            callers.start_soon(_until_value, fetch, i, calls, probe_done)
                    probe_done.set()  # stops the sampler if the probe never came
            state_at_end = observer.state
            final = [await _call(fetch, "/up", i) for i in range(TASKS)]

    assert [c for c in calls + final if c.outcome == "error"] == []
    assert events.store == [], "Redis looked unavailable"

    # The shared breaker opened after failure_threshold failures in total.
    failed = [c for c in calls if c.outcome == "failed"]
    assert state_after_trip == OPEN
    assert down_requests == server.count("/down") == len(failed)
    assert THRESHOLD <= len(failed) <= THRESHOLD + TASKS - 1
    assert {c.task for c in calls if c.outcome == "rejected"} == set(range(TASKS))

    # One probe: while it was unanswered, the server saw exactly one request.
    assert [c.body for c in calls].count(PROBE_BODY) == 1
    arrived = min(after for _, n, after in samples if n >= 1)
    unanswered_until = max(before for before, n, _ in samples if n == 0) + PROBE_DELAY - MARGIN
    while_out = [
        n for before, n, after in samples if before >= arrived and after < unanswered_until
    ]
    assert while_out, "no count sample was taken while the probe was unanswered"
    assert set(while_out) == {1}
    rejected_meanwhile = [
        c
        for c in calls
        if c.outcome == "rejected" and c.start >= arrived and c.end < unanswered_until
    ]
    assert rejected_meanwhile, "no task called while the probe was in flight"
    assert {c.retry_after for c in rejected_meanwhile} == {0.0}

    # Closed for everyone; every value came with exactly one request.
    assert state_at_end == CLOSED
    assert [(c.outcome, c.body) for c in final] == [("ok", OK_BODY)] * TASKS
    assert server.count("/up") == sum(c.outcome == "ok" for c in calls + final)
    assert Counter(events.transitions) == {
        ("CLOSED", "OPEN"): 1,
        ("OPEN", "HALF_OPEN"): 1,
        ("HALF_OPEN", "CLOSED"): 1,
    }


async def test_cancelled_async_prober_releases_the_probe_at_once(
    anyio_backend: str, server: ScriptedServer, redis_url: str, redis_prefix: str
) -> None:
    """A task holding the probe is cancelled while its request hangs: the probe is given
    back in Redis at once, so the very next call (from another task) is the new probe and
    reaches the server - although the cancelled probe's lease (the 60 s cooldown) is far
    from expired - and its success closes the breaker.
    """
    prefix, name = redis_prefix, "async-cancel"
    cooldown_ms = 60_000  # so the lease of the cancelled probe would outlive the test
    server.script("/hang", Delay(SAFETY_NET * 4, Reply(200, b"never answered")))
    server.default = Reply(200, OK_BODY.encode())
    with _observer(redis_url, prefix, name, cooldown_ms) as observer:
        async with (
            _store(redis_url, prefix, anyio_backend) as store,
            httpx.AsyncClient(timeout=60) as client,
        ):
            fetch, events = _decorated(store, client, server.url, name, cooldown_ms)
            observer.force_open(cooldown_ms=10)  # OPEN for 10 ms only

            async def doomed_prober(scope: anyio.CancelScope) -> None:
                with scope:
                    while True:
                        with contextlib.suppress(CircuitOpenError):
                            await fetch("/hang")
                        await anyio.sleep(POLL)

            scope = anyio.CancelScope()
            with anyio.fail_after(SAFETY_NET):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(doomed_prober, scope)
                    await _until(lambda: server.count("/hang") > 0)
                    state_while_probing = observer.state
                    scope.cancel()
            state_after_cancel = observer.state

            # At once: no sleep, no retry.
            after = await _call(fetch, "/next", 0)
            state_at_end = observer.state

    assert scope.cancelled_caught
    assert state_while_probing == HALF_OPEN
    assert server.count("/hang") == 1
    assert after.outcome == "ok", f"the next call was not let through as the probe: {after}"
    assert server.count("/next") == 1
    assert state_after_cancel == HALF_OPEN  # no verdict: still probing, the permit free
    assert state_at_end == CLOSED
    assert events.store == []
    assert events.transitions.count(("HALF_OPEN", "CLOSED")) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_store_with_only_an_async_client_shares_the_state(
    anyio_backend: str, server: ScriptedServer, redis_url: str, redis_prefix: str
) -> None:
    """Under asyncio the async twins talk to Redis through the redis.asyncio client: a
    store given only that client trips the shared breaker, which a second breaker object
    (sync client of its own) sees OPEN, and rejects from then on without I/O."""
    prefix, name = redis_prefix, "asyncio-only"
    server.default = Reply(503)
    with _observer(redis_url, prefix, name, COOLDOWN_MS * 60) as observer:
        async with (
            _store(redis_url, prefix, anyio_backend, sync=False) as store,
            httpx.AsyncClient(timeout=10) as client,
        ):
            fetch, events = _decorated(store, client, server.url, name, COOLDOWN_MS * 60)
            outcomes = [(await _call(fetch, "/down", 0)).outcome for _ in range(THRESHOLD + 2)]
            state = observer.state
    assert outcomes == ["failed"] * THRESHOLD + ["rejected"] * 2
    assert server.count("/down") == THRESHOLD
    assert state == OPEN
    assert events.store == []


def test_a_new_event_loop_is_not_mistaken_for_a_redis_outage(redis_url: str) -> None:
    """A store built by from_url and used from one asyncio.run() after another (a test suite,
    a per-request loop): its async connections belong to the first loop, yet the next loop
    must reach Redis - no StoreUnavailable, no fallback to local state, the shared state kept."""

    events: list[Event] = []
    store = RedisStore.from_url(redis_url, prefix=f"loops{uuid.uuid4().hex}")
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, store=store),
        hooks=(events.append,),
    )

    @resilient_api(config, name="per-loop")
    async def failing() -> None:
        raise ConnectionError("down")

    async def twice() -> None:
        for _ in range(2):
            with contextlib.suppress(ConnectionError):
                await failing()

    with warnings.catch_warnings():
        # The first loop's sockets can only be collected, not closed, once it is gone.
        warnings.simplefilter("ignore", ResourceWarning)
        asyncio.run(twice())  # opens the shared breaker (threshold 2)
        store.client.delete(store.key("per-loop"))  # a fresh state for the second loop
        asyncio.run(twice())  # must reach Redis again, in a new loop
        state = failing.breaker.state
        asyncio.run(store.aclose())
        gc.collect()
    assert not [e for e in events if isinstance(e, StoreUnavailable)]
    assert state == "OPEN"
    assert store.client.hgetall(store.key("per-loop"))[b"state"] == b"OPEN"
    store.close()


CALLS_PER_LOOP = 150
LOOP_THREADS = 2


@pytest.mark.parametrize("built", ["from_url", "given async client", "given cluster client"])
def test_two_event_loops_in_two_threads_share_one_store(
    built: str, redis_url: str, redis_prefix: str, request: pytest.FixtureRequest
) -> None:
    """Issue 11 review, D6: two threads, each running its own asyncio loop at the same time,
    call one shared breaker through one store.  Before, both loops used one async client (a
    pool, its locks and connections bound to one loop): a call was woken from the other loop
    and waited for ever, or failed with 'bound to a different event loop'.  Each loop now has
    a client of its own: every call finishes, none falls back to local state, and every
    failure is counted in Redis (the count is exactly the number of calls)."""
    url, sync_class, async_class = redis_url, redis.Redis, redis.asyncio.Redis
    if built == "given cluster client":  # cloned from its startup nodes and settings
        url = request.getfixturevalue("redis_cluster").url
        sync_class, async_class = redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster
    options = {"socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT}
    reader = sync_class.from_url(url, **options)  # reads the count at the end
    if built == "from_url":
        store = RedisStore.from_url(url, timeout=REDIS_TIMEOUT, prefix=redis_prefix)
    else:  # the other loop's client is cloned from the given one (its pool, or its nodes)
        store = RedisStore(
            sync_class.from_url(url, **options),
            async_client=async_class.from_url(url, **options),
            prefix=redis_prefix,
        )
    events: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=LOOP_THREADS * CALLS_PER_LOOP + 1, store=store
        ),
        hooks=(events.append,),
    )

    @resilient_api(config, name="two loops")
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("down")

    finished: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        async def main() -> None:
            try:
                for _ in range(CALLS_PER_LOOP):
                    with contextlib.suppress(ConnectionError):
                        await failing()
            finally:
                await store.aclose()  # this loop's client
            finished.append(CALLS_PER_LOOP)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(LOOP_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SAFETY_NET)  # a hung call would keep its thread alive
    assert not [t for t in threads if t.is_alive()], "a call hung"
    assert errors == []
    assert finished == [CALLS_PER_LOOP] * LOOP_THREADS
    assert not [e for e in events if isinstance(e, StoreUnavailable)]
    try:
        stored = reader.hgetall(store.key("two loops"))
    finally:
        store.close()
        reader.close()
    assert stored[b"state"] == b"CLOSED"
    assert int(stored[b"failures"]) == LOOP_THREADS * CALLS_PER_LOOP


# The runs below end without aclose(): their connections are collected, not closed, and
# asyncio says so with a ResourceWarning from each stream's __del__ (the documented case).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_finished_loops_let_go_of_their_clients(redis_url: str, redis_prefix: str) -> None:
    """Issue 11 review: a loop's client holds its loop (its connections' streams do), so a
    weak map from loop to client never dropped an entry: every short asyncio.run() beside a
    long-lived loop kept its loop, its client and its connections for the store's life.
    Closed loops' entries are now dropped when another loop comes: after 8 runs, at most the
    long-lived loop's and the last run's remain, and the earlier loops are collected."""
    store = RedisStore.from_url(redis_url, timeout=REDIS_TIMEOUT, prefix=redis_prefix)
    config = CircuitBreakerConfig(store=store)
    breaker = CircuitBreaker(config, name="loops come and go")
    owner_ready, stop_owner = threading.Event(), threading.Event()

    def owner() -> None:
        async def main() -> None:
            await breaker.acquire_async()  # this long-lived loop owns the given client
            owner_ready.set()
            await asyncio.to_thread(stop_owner.wait, 30)
            await store.aclose()

        asyncio.run(main())

    thread = threading.Thread(target=owner)
    thread.start()
    try:
        assert owner_ready.wait(10)
        loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

        async def one() -> None:
            loops.append(weakref.ref(asyncio.get_running_loop()))
            await breaker.acquire_async()

        for _ in range(8):
            asyncio.run(one())
        gc.collect()
        assert len(store._loops.by_loop) <= 2
        assert sum(ref() is not None for ref in loops) <= 1  # only the last run's, if any
    finally:
        stop_owner.set()
        thread.join(10)
        store.close()
        # The last run's client: collect it here, under this test's filters.
        store._loops.by_loop.clear()
        gc.collect()
