"""Issue 13's trip rules through every mount point, against the real local HTTP server.

README, "Trip rules": a failure-rate breaker opens when the failed share of
the attempts in its window reaches ``failure_rate`` (an answered 404 is a
success) and not below it; ``slow_call_ms`` counts a success that took
longer as a failure, its response still returned and not retried;
``half_open_calls=n`` admits n probes at once and closes after n good ones.

Each case runs through ``requests`` + ``ResilientAdapter``, ``httpx.Client``
+ ``ResilientTransport`` and ``@resilient_api`` around an ``httpx.Client``
(sync), and ``httpx.AsyncClient`` + ``AsyncResilientTransport`` and an async
``@resilient_api`` (under asyncio and trio).  Times are small and real (the
server's delay, the cooldown); every assertion is on states, reasons, counts
and what the server saw, never on a duration.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import requests
from httpserver import Delay, Reply, ScriptedServer

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
TIMEOUT = 5.0  # per request
GUARD = 10.0  # a hung test fails after this long; passing ones take well under a second
REJECTED = "rejected"


def config(max_retries: int = 0, **breaker: Any) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=max_retries, base_delay=0.001, max_delay=0.001),
        circuit_breaker=CircuitBreakerConfig(**{"cooldown_ms": 10_000, **breaker}),
    )


# -- one interface over the five mount points ---------------------------------------------------


class Sync:
    """``get(path)``: the status (or the body, see ``last``), or ``REJECTED``."""

    def __init__(self, kind: str, cfg: ResilientConfig, server: ScriptedServer) -> None:
        self.kind, self.url = kind, server.url
        self.last: bytes = b""
        if kind == "requests":
            self.adapter = ResilientAdapter(cfg)
            self.session = requests.Session()
            self.session.mount("http://", self.adapter)
            self.breaker = self.adapter.breaker_for(server.url)
        elif kind == "httpx":
            self.transport = ResilientTransport(cfg)
            self.client = httpx.Client(transport=self.transport, timeout=TIMEOUT)
            self.breaker = self.transport.breaker_for(server.url)
        else:
            self.client = httpx.Client(timeout=TIMEOUT)

            @resilient_api(cfg)
            def fetch(url: str) -> httpx.Response:
                response = self.client.get(url)
                response.raise_for_status()  # the decorator judges what it sees raised
                return response

            self.fetch = fetch
            self.breaker = fetch.breaker

    def get(self, path: str) -> int | str:
        url = self.url + path
        try:
            if self.kind == "requests":
                response: Any = self.session.get(url, timeout=TIMEOUT)
            elif self.kind == "httpx":
                response = self.client.get(url)
            else:
                response = self.fetch(url)
        except CircuitOpenError:
            return REJECTED
        except httpx.HTTPStatusError as exc:
            response = exc.response
        self.last = response.content
        return int(response.status_code)

    def close(self) -> None:
        (self.session if self.kind == "requests" else self.client).close()


class Async:
    """:class:`Sync` for ``AsyncResilientTransport`` and an async ``@resilient_api``."""

    def __init__(self, kind: str, cfg: ResilientConfig, server: ScriptedServer) -> None:
        self.kind, self.url = kind, server.url
        self.last: bytes = b""
        if kind == "httpx_async":
            transport = AsyncResilientTransport(cfg)
            self.client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT)
            self.breaker: CircuitBreaker = transport.breaker_for(server.url)
        else:
            self.client = httpx.AsyncClient(timeout=TIMEOUT)

            @resilient_api(cfg)
            async def fetch(url: str) -> httpx.Response:
                response = await self.client.get(url)
                response.raise_for_status()
                return response

            self.fetch = fetch
            self.breaker = fetch.breaker

    async def get(self, path: str) -> int | str:
        url = self.url + path
        try:
            if self.kind == "httpx_async":
                response = await self.client.get(url)
            else:
                response = await self.fetch(url)
        except CircuitOpenError:
            return REJECTED
        except httpx.HTTPStatusError as exc:
            response = exc.response
        self.last = response.content
        return int(response.status_code)


SYNC_KINDS = ["requests", "httpx", "decorator"]
ASYNC_KINDS = ["httpx_async", "decorator_async"]


@pytest.fixture(params=SYNC_KINDS)
def sync_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def made() -> Iterator[list[Sync]]:
    clients: list[Sync] = []
    yield clients
    for client in clients:
        client.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition()`` (a safety net of GUARD seconds, never an assertion on time)."""
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


async def until(condition: Callable[[], bool], what: str) -> None:
    """:func:`wait_for` without blocking the event loop."""
    with anyio.fail_after(GUARD):
        for _ in itertools.count():  # polled: nothing to wait on but the server's count
            if condition():
                return
            await anyio.sleep(0.005)
    raise AssertionError(f"gave up waiting for {what}")  # pragma: no cover - count() is endless


# -- the failure rate ---------------------------------------------------------------------------

RATE = {"failure_rate": 0.5, "minimum_calls": 10, "window_ms": 60_000}
AT_RATE = [Reply(200), Reply(503)] * 5  # half of ten fail: the tenth trips it
BELOW_RATE = [Reply(200), Reply(404), Reply(503)] * 10  # a third fail; a 404 is a success


def test_a_server_failing_half_the_requests_trips_the_rate_rule(
    sync_kind: str, server: ScriptedServer, made: list[Sync]
) -> None:
    server.script("/flaky", *AT_RATE)
    client = Sync(sync_kind, config(**RATE), server)
    made.append(client)
    assert [client.get("/flaky") for _ in range(9)] == [200, 503] * 4 + [200]
    assert client.breaker.state is CLOSED
    assert client.breaker.window == (9, 4, 0)
    assert client.get("/flaky") == 503  # the last response is still handed back
    assert client.breaker.state is OPEN
    assert client.breaker.reason == "failure rate 0.50 over 10 calls"
    assert client.get("/flaky") == REJECTED
    assert server.count("/flaky") == 10


def test_a_server_failing_a_third_of_the_requests_does_not_trip_it(
    sync_kind: str, server: ScriptedServer, made: list[Sync]
) -> None:
    server.script("/flaky", *BELOW_RATE)
    client = Sync(sync_kind, config(**RATE), server)
    made.append(client)
    assert [client.get("/flaky") for _ in range(30)] == [200, 404, 503] * 10
    assert client.breaker.state is CLOSED
    assert client.breaker.window == (30, 10, 0)  # a 404 counted as a success
    assert client.breaker.reason == ""


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_KINDS)
async def test_the_rate_rule_async(kind: str, server: ScriptedServer) -> None:
    server.script("/below", *BELOW_RATE)
    server.script("/at", *AT_RATE)
    client = Async(kind, config(**RATE), server)
    async with client.client:
        assert [await client.get("/below") for _ in range(30)] == [200, 404, 503] * 10
        assert client.breaker.window == (30, 10, 0)
        client.breaker.reset()
        assert [await client.get("/at") for _ in range(10)] == [200, 503] * 5
        assert client.breaker.state is OPEN
        assert client.breaker.reason == "failure rate 0.50 over 10 calls"
        assert await client.get("/at") == REJECTED
    assert server.count("/at") == 10


# -- slow calls ---------------------------------------------------------------------------------

SLOW = Delay(0.15, Reply(200, b"late but fine"))  # three times slow_call_ms=50


def test_a_slow_response_is_returned_not_retried_and_opens_the_breaker(
    sync_kind: str, server: ScriptedServer, made: list[Sync]
) -> None:
    server.script("/slow", SLOW)
    client = Sync(sync_kind, config(max_retries=3, failure_threshold=1, slow_call_ms=50), server)
    made.append(client)
    assert client.get("/slow") == 200
    assert client.last == b"late but fine"
    assert server.count("/slow") == 1  # a slow success is never retried
    assert client.breaker.state is OPEN
    assert client.breaker.reason == "slow calls"


def test_slow_responses_trip_the_rate_rule(
    sync_kind: str, server: ScriptedServer, made: list[Sync]
) -> None:
    server.script("/slow", SLOW, SLOW)
    client = Sync(sync_kind, config(slow_call_ms=50, failure_rate=0.5, minimum_calls=2), server)
    made.append(client)
    assert [client.get("/slow"), client.get("/slow")] == [200, 200]
    assert client.breaker.state is OPEN
    assert client.breaker.reason == "slow call rate 1.00 over 2 calls"
    assert server.count("/slow") == 2


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_KINDS)
async def test_a_slow_async_response_is_returned_not_retried_and_counted(
    kind: str, server: ScriptedServer
) -> None:
    server.script("/slow", SLOW)
    cfg = config(max_retries=3, slow_call_ms=50, failure_rate=0.5, minimum_calls=5)
    client = Async(kind, cfg, server)
    async with client.client:
        assert await client.get("/slow") == 200
        assert client.last == b"late but fine"
        assert client.breaker.window == (1, 1, 1)
    assert server.count("/slow") == 1


# -- several probes -----------------------------------------------------------------------------

PROBES = {"failure_threshold": 1, "cooldown_ms": 30, "half_open_calls": 3}


def tripped(breaker: CircuitBreaker, get: Callable[[str], Any], server: ScriptedServer) -> None:
    """Open ``breaker`` with one 503, and wait out its (real, 30 ms) cooldown."""
    server.script("/down", Reply(503))
    get("/down")
    assert breaker.state is OPEN
    wait_for(lambda: breaker.retry_after == 0.0, "the cooldown")


def test_three_good_probes_close_the_breaker_one_by_one(
    sync_kind: str, server: ScriptedServer, made: list[Sync]
) -> None:
    client = Sync(sync_kind, config(**PROBES), server)
    made.append(client)
    tripped(client.breaker, client.get, server)
    assert client.get("/ok") == 200
    assert client.breaker.state is HALF_OPEN
    assert client.get("/ok") == 200
    assert client.breaker.state is HALF_OPEN
    assert client.get("/ok") == 200
    assert client.breaker.state is CLOSED


def test_a_failed_probe_among_three_reopens(
    sync_kind: str, server: ScriptedServer, made: list[Sync]
) -> None:
    client = Sync(sync_kind, config(**PROBES), server)
    made.append(client)
    tripped(client.breaker, client.get, server)
    server.script("/flaky", Reply(200), Reply(503))
    assert [client.get("/flaky"), client.get("/flaky")] == [200, 503]
    assert client.breaker.state is OPEN
    assert client.breaker.reason == "probe failed"


def test_three_probes_in_flight_the_fourth_rejected_without_a_request(
    sync_kind: str, server: ScriptedServer, made: list[Sync]
) -> None:
    client = Sync(sync_kind, config(**PROBES), server)
    made.append(client)
    tripped(client.breaker, client.get, server)
    hold = Delay(0.3, Reply(200, b"probe"))  # keeps the three probes in flight
    server.script("/probe", hold, hold, hold)
    results: list[int | str] = []
    # The decorator's function shares one httpx.Client: its pool serves the three at once.
    threads = [
        threading.Thread(target=lambda: results.append(client.get("/probe")), daemon=True)
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: server.count("/probe") == 3, "three probes at the server")
    assert client.breaker.state is HALF_OPEN
    assert client.get("/probe") == REJECTED  # every permit is taken
    for thread in threads:
        thread.join(GUARD)
    assert results == [200, 200, 200]
    assert server.count("/probe") == 3
    assert client.breaker.state is CLOSED


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_KINDS)
async def test_three_async_probes_in_flight_then_closed(kind: str, server: ScriptedServer) -> None:
    client = Async(kind, config(**PROBES), server)
    async with client.client:
        server.script("/down", Reply(503))
        assert await client.get("/down") == 503
        await until(lambda: client.breaker.retry_after == 0.0, "the cooldown")
        hold = Delay(0.3, Reply(200, b"probe"))
        server.script("/probe", hold, hold, hold)
        results: list[int | str] = []

        async def probe() -> None:
            results.append(await client.get("/probe"))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(probe)
            await until(lambda: server.count("/probe") == 3, "three probes at the server")
            assert client.breaker.state is HALF_OPEN
            assert await client.get("/probe") == REJECTED
        assert results == [200, 200, 200]
        assert client.breaker.state is CLOSED
    assert server.count("/probe") == 3


def test_a_slow_probe_reopens(sync_kind: str, server: ScriptedServer, made: list[Sync]) -> None:
    client = Sync(sync_kind, config(slow_call_ms=50, **PROBES), server)
    made.append(client)
    tripped(client.breaker, client.get, server)
    server.script("/slow", SLOW)
    # (No fast probe first: on a loaded machine even a local answer might pass 50 ms.)
    assert client.get("/slow") == 200  # answered, but too slowly: a failed probe
    assert client.last == b"late but fine"
    assert client.breaker.state is OPEN
    assert client.breaker.reason == "probe failed"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ASYNC_KINDS)
async def test_a_cancelled_async_probe_gives_its_permit_back(
    kind: str, server: ScriptedServer
) -> None:
    """Two probes hang at the server; one is cancelled, and the next request is admitted
    (it reaches the server) instead of being rejected."""
    client = Async(kind, config(**{**PROBES, "half_open_calls": 2}), server)
    async with client.client:
        server.script("/down", Reply(503))
        assert await client.get("/down") == 503
        await until(lambda: client.breaker.retry_after == 0.0, "the cooldown")
        hang = Delay(GUARD, Reply(200))  # cut short when the server stops
        server.script("/probe", hang, Delay(0.3, Reply(200)), Reply(200))
        results: list[int | str] = []

        async def probe() -> None:
            results.append(await client.get("/probe"))

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as doomed:
                async with anyio.create_task_group() as hung:
                    hung.start_soon(probe)
                    await until(lambda: server.count("/probe") == 1, "the first probe")
                    tg.start_soon(probe)
                    await until(lambda: server.count("/probe") == 2, "the second probe")
                    assert await client.get("/probe") == REJECTED  # both permits taken
                    doomed.cancel()
            assert client.breaker.state is HALF_OPEN
            assert await client.get("/probe") == 200  # the cancelled probe's permit
        assert results == [200]
        assert client.breaker.state is CLOSED
    assert server.count("/probe") == 3
