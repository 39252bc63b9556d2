"""The happy path stays a straight line, and the breaker's counts stay exact under load.

DESIGN.md: "When the breaker is CLOSED with no recent failure, a call costs a
state read, the call itself and a return: no generator, no lock, no
allocation."  These tests hold the *shape* (no engine, no lock, nothing
retained), never a wall-clock figure; timings live in benchmarks/.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
from typing import Any

import httpx
import pytest

import smoothapi.engine
from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreakerConfig,
    ResilientConfig,
    ResilientTransport,
    RetriesExhausted,
    resilient_api,
)


class _NoLock:
    """Stands in for the breaker's lock: entering it means the happy path took a lock."""

    def __enter__(self) -> None:
        raise AssertionError("the happy path took the breaker's lock")

    def __exit__(self, *args: object) -> None:  # pragma: no cover - never entered
        return None


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of the engine fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the happy path started the engine")

    for name in ("retry_flow", "run_sync", "run_async"):
        monkeypatch.setattr(smoothapi.engine, name, refuse)
    monkeypatch.setattr("smoothapi.mounts.decorator.run_sync", refuse)
    monkeypatch.setattr("smoothapi.mounts.decorator.run_async", refuse)
    monkeypatch.setattr("smoothapi.mounts.httpx_transport.run_sync", refuse)
    monkeypatch.setattr("smoothapi.mounts.httpx_transport.run_async", refuse)


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def test_decorator_happy_path_uses_no_engine_and_no_lock(no_engine: None) -> None:
    """A successful sync call in a clean CLOSED breaker runs neither the engine nor the lock."""

    @resilient_api(ResilientConfig())
    def f(x: int) -> int:
        return x + 1

    f.breaker._lock = _NoLock()  # type: ignore[assignment]
    assert [f(i) for i in range(100)] == list(range(1, 101))


def test_async_decorator_happy_path_uses_no_engine_and_no_lock(no_engine: None) -> None:
    """The same for an `async def`."""

    @resilient_api(ResilientConfig())
    async def f(x: int) -> int:
        return x + 1

    f.breaker._lock = _NoLock()  # type: ignore[assignment]

    async def main() -> list[int]:
        return [await f(i) for i in range(100)]

    assert asyncio.run(main()) == list(range(1, 101))


def test_transport_happy_path_uses_no_engine_and_no_lock(no_engine: None) -> None:
    """A 200 through ResilientTransport, once its origin is known, runs no engine and no lock."""
    transport = ResilientTransport(transport=httpx.MockTransport(_ok))
    with httpx.Client(transport=transport) as client:
        client.get("http://upstream.test/x")  # first sight of the origin registers its breaker
        transport.breaker_for("http://upstream.test/")._lock = _NoLock()  # type: ignore[assignment]
        for _ in range(50):
            assert client.get("http://upstream.test/x").status_code == 200


def test_async_transport_happy_path_uses_no_engine_and_no_lock(no_engine: None) -> None:
    """The same for AsyncResilientTransport."""
    transport = AsyncResilientTransport(transport=httpx.MockTransport(_ok))

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://upstream.test/x")
            breaker = transport.breaker_for("http://upstream.test/")
            breaker._lock = _NoLock()  # type: ignore[assignment]
            for _ in range(50):
                assert (await client.get("http://upstream.test/x")).status_code == 200

    asyncio.run(main())


def test_happy_path_retains_no_memory_per_call() -> None:
    """10,000 happy calls leave no live allocation behind (a per-call leak would show 10,000)."""

    @resilient_api(ResilientConfig())
    def f(x: int) -> int:
        return x

    for i in range(1_000):  # warm caches, specialise the bytecode
        f(i)
    gc.collect()
    before = sys.getallocatedblocks()
    for i in range(10_000):
        f(i)
    gc.collect()
    assert sys.getallocatedblocks() - before < 100


# -- exact counts under concurrency ------------------------------------------------------

THREADS = 8
PER_THREAD = 400
COROUTINES = 200
PER_COROUTINE = 5


def _hammer(fn: Any, afn: Any, fail_every: int) -> int:
    """Run 8 threads and 200 coroutines (in a ninth thread) at once; return calls made."""
    start = threading.Barrier(THREADS + 1)

    def worker(offset: int) -> None:
        start.wait()
        for i in range(PER_THREAD):
            with contextlib.suppress(ConnectionError):
                fn(offset * PER_THREAD + i, fail_every)

    async def coroutine(offset: int) -> None:
        for i in range(PER_COROUTINE):
            with contextlib.suppress(ConnectionError):
                await afn(offset * PER_COROUTINE + i, fail_every)
            await asyncio.sleep(0)

    async def swarm() -> None:
        await asyncio.gather(*(coroutine(n) for n in range(COROUTINES)))

    def loop_thread() -> None:
        start.wait()
        asyncio.run(swarm())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    threads.append(threading.Thread(target=loop_thread))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a stress worker hung"
    return THREADS * PER_THREAD + COROUTINES * PER_COROUTINE


def _decorated(config: ResilientConfig) -> tuple[Any, Any, list[int]]:
    calls: list[int] = []  # list.append is atomic under the GIL

    def body(i: int, fail_every: int) -> int:
        calls.append(i)
        if fail_every and i % fail_every == 0:
            raise ConnectionError(f"injected failure {i}")
        return i

    fn = resilient_api(config, name="stress")(body)

    async def abody(i: int, fail_every: int) -> int:
        return body(i, fail_every)

    afn = resilient_api(config, breaker=fn.breaker)(abody)
    return fn, afn, calls


def test_every_concurrent_failure_is_counted_exactly() -> None:
    """8 threads + 200 coroutines, every call failing: failure_count equals the calls made."""
    events: list[RetriesExhausted] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10**9),
        hooks=(lambda e: events.append(e) if isinstance(e, RetriesExhausted) else None,),
    )
    fn, afn, calls = _decorated(config)
    total = _hammer(fn, afn, fail_every=1)
    assert len(calls) == total
    assert fn.breaker.failure_count == total
    assert len(events) == total
    assert fn.breaker.state == "CLOSED"


def test_mixed_successes_and_failures_add_up_exactly() -> None:
    """Happy calls and injected failures interleaved: each call runs once, each failure is seen.

    With no retries, the function runs exactly once per call; every injected
    failure produces exactly one RetriesExhausted event; and a final success
    leaves the breaker CLOSED with a count of zero.
    """
    events: list[RetriesExhausted] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10**9),
        hooks=(lambda e: events.append(e) if isinstance(e, RetriesExhausted) else None,),
    )
    fn, afn, calls = _decorated(config)
    total = _hammer(fn, afn, fail_every=7)
    assert len(calls) == total
    assert len(events) == sum(1 for i in calls if i % 7 == 0)
    assert fn(1, 0) == 1
    assert fn.breaker.failure_count == 0
    assert fn.breaker.state == "CLOSED"


def test_breaker_opens_once_and_admits_nothing_after_opening() -> None:
    """Under the same load with a low threshold: one CLOSED -> OPEN, then no call reaches the body.

    Calls admitted while CLOSED may still be in flight when it opens, so the
    body count is at least the threshold; after the load, the breaker is OPEN
    and a further call is rejected without running the body.
    """
    transitions: list[Any] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=50, cooldown_ms=3_600_000),
        fallback="fallback",
        hooks=(lambda e: transitions.append(e) if type(e).__name__ == "StateChanged" else None,),
    )
    fn, afn, calls = _decorated(config)
    _hammer(fn, afn, fail_every=1)
    assert [(t.old, t.new) for t in transitions] == [("CLOSED", "OPEN")]
    assert len(calls) >= 50
    made = len(calls)
    assert fn(0, 1) == "fallback"
    assert len(calls) == made
