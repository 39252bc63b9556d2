"""``ResilientMiddleware`` against hostile and broken servers on 127.0.0.1.

DESIGN.md, "What never leaks": nothing a server sends (a header, a body) can
make the client sleep past its cap, allocate without bound, or raise anything
but the documented errors.  For aiohttp the documented errors are
``aiohttp.ClientError`` and its subclasses, ``asyncio.TimeoutError`` and
``CircuitOpenError`` (tests/mounts/test_hardening_transport.py holds the same
for requests and httpx).

Every request here runs under a liveness guard: a call that hangs past its
caps fails the test; a guard is far above what the call should take and far
below what the hostile server would cost if the caps did not hold.  Nothing
asserts how long a call took.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from httpserver import (
    Action,
    BigBody,
    Delay,
    Raw,
    Reply,
    ScriptedServer,
    Trickle,
    Truncate,
    chunk_extension_trickle,
    gzip_header_trickle,
    late_byte_then_stall,
)

import smoothapi
from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    Event,
    ResilientConfig,
    ResilientMiddleware,
    RetryScheduled,
)
from smoothapi.testing import FakeClock, set_testing

DOCUMENTED = (aiohttp.ClientError, asyncio.TimeoutError, CircuitOpenError)
TIMEOUT = aiohttp.ClientTimeout(total=20)


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only."""
    return "asyncio"


def retrying(max_retries: int = 3, **kwargs: Any) -> ResilientConfig:
    kwargs.setdefault("circuit_breaker", CircuitBreakerConfig(failure_threshold=100))
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=max_retries, base_delay=0.01, max_delay=0.05), **kwargs
    )


def deadline(seconds: float = 1.0, max_retries: int = 0) -> ResilientConfig:
    return retrying(max_retries, deadline=seconds)


@contextlib.asynccontextmanager
async def session_for(
    config: ResilientConfig, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientSession]:
    middleware = ResilientMiddleware(config)
    async with aiohttp.ClientSession(
        middlewares=(middleware,), timeout=kwargs.pop("timeout", TIMEOUT), **kwargs
    ) as session:
        yield session


async def get(session: aiohttp.ClientSession, url: str, guard: float) -> tuple[int, bytes, int]:
    """(status, body, attempts), the body read, all within ``guard`` seconds (liveness)."""
    async with asyncio.timeout(guard), session.get(url) as response:
        return response.status, await response.read(), smoothapi.attempts(response)


async def outcome(
    session: aiohttp.ClientSession, url: str, guard: float
) -> tuple[int, bytes, int] | BaseException:
    """:func:`get`'s answer, or the documented error it raised; anything else fails the test
    (a hang past ``guard`` is a failure, not an asyncio.TimeoutError)."""
    try:
        async with asyncio.timeout(guard) as scope:
            return await get(session, url, guard + 1)
    except DOCUMENTED as error:
        if scope.expired():
            pytest.fail(f"the call hung for {guard} s")
        return error


# -- trickling bodies: each retried 503 is let go of within the drain's bound ---------------------

# Each of these hostile 503 bodies takes about 5 s in full; the drain gives it 0.5 s.
HOSTILE_503S: list[Any] = [
    pytest.param(Trickle(503, 100, 0.05), id="trickle"),
    pytest.param(Trickle(503, 100, 0.05, chunked=True), id="trickle-chunked"),
    pytest.param(gzip_header_trickle(503, 0.1), id="gzip-header-trickle"),
    pytest.param(chunk_extension_trickle(503, 0.1), id="chunk-size-line-trickle"),
    pytest.param(late_byte_then_stall(503, at=0.1, stall=5.0), id="late-byte-then-stall"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("hostile", HOSTILE_503S)
async def test_a_trickled_503_is_dropped_and_the_retry_goes_on(
    server: ScriptedServer, hostile: Action
) -> None:
    """A hostile 503 then a 200: the 503 is dropped with its connection (a second connection
    carries the 200), and the call ends long before the whole trickle."""
    server.script("/busy", hostile, Reply(200, b"ok"))
    async with session_for(retrying()) as session:
        assert await get(session, server.url + "/busy", guard=3.0) == (200, b"ok", 2)
    ids = [r.connection_id for r in server.requests]
    assert len(set(ids)) == 2, ids


# Bodies of a 200 that trickle past a 0.5 s deadline (each takes about 5 s in full).
HOSTILE_200S: list[Any] = [
    pytest.param(Trickle(200, 100, 0.05), id="trickle"),
    pytest.param(gzip_header_trickle(200, 0.1), id="gzip-header-trickle"),
    pytest.param(chunk_extension_trickle(200, 0.1), id="chunk-size-line-trickle"),
    pytest.param(late_byte_then_stall(200, at=0.3, stall=5.0), id="late-byte-then-stall"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("hostile", HOSTILE_200S)
async def test_the_deadline_bounds_a_trickled_body(server: ScriptedServer, hostile: Action) -> None:
    """A 200 whose body trickles (also inside a gzip header or a chunk-size line): reading it
    raises aiohttp.ServerTimeoutError at the deadline, never the whole trickle."""
    server.script("/slow", hostile)
    async with session_for(deadline(0.5)) as session:
        async with asyncio.timeout(3.0), session.get(server.url + "/slow") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ServerTimeoutError, match="deadline"):
                await response.read()


# -- stalled heads ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(Delay(10.0, Reply(200)), id="no-head"),
        pytest.param(
            Raw(b"HTTP/1.1 200 OK\r\nContent-", ((10.0, b"Length: 0\r\n\r\n"),)), id="half"
        ),
        pytest.param(
            Raw(b"HTTP/1.1 200 OK\r\n", tuple((0.1, b"X: y\r\n") for _ in range(100))),  # 10 s
            id="slow-headers",
        ),
    ],
)
async def test_a_stalled_head_is_cut_at_the_deadline(
    server: ScriptedServer, hostile: Action
) -> None:
    """No head, half a head, or headers a line every 0.1 s: the attempt is cut at the 0.5 s
    deadline with aiohttp.ServerTimeoutError naming it."""
    server.script("/stall", hostile)
    async with session_for(deadline(0.5, max_retries=3)) as session:
        async with asyncio.timeout(3.0):
            with pytest.raises(aiohttp.ServerTimeoutError, match="deadline"):
                await get(session, server.url + "/stall", guard=3.0)


@pytest.mark.anyio
async def test_aiohttps_own_read_timeout_is_a_failure_and_retried(server: ScriptedServer) -> None:
    """ClientTimeout(sock_read=0.2) against heads that stall for 2 s: aiohttp's own timeout is
    a transport failure - retried, and counted by the breaker - until the server answers."""
    stall = Delay(2.0, Reply(200, b"late"))
    server.script("/stall", stall, stall, Reply(200, b"ok"))
    timeout = aiohttp.ClientTimeout(total=20, sock_read=0.2)
    middleware = ResilientMiddleware(retrying())
    async with aiohttp.ClientSession(middlewares=(middleware,), timeout=timeout) as session:
        assert await get(session, server.url + "/stall", guard=5.0) == (200, b"ok", 3)
        assert middleware.breaker_for(server.url).failure_count == 0  # reset by the success
    assert server.count("/stall") == 3


# -- heads that are not HTTP -------------------------------------------------------------------


# Heads aiohttp cannot parse: a protocol failure (like httpx's RemoteProtocolError), retried.
UNPARSEABLE: list[Any] = [
    pytest.param(b"garbage\r\n\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", id="status-not-a-number"),
    pytest.param(b"HTTP/1.1 99999 X\r\nContent-Length: 0\r\n\r\n", id="status-too-long"),
    pytest.param(b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n", id="http-9.9"),
    pytest.param(b"\x00\xff\xfe\r\n\r\n", id="binary"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", id="length-not-a-number"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc", id="two-lengths"
    ),
    pytest.param(
        b"HTTP/1.1 503 X\r\nContent-Length: 99999999999999999999\r\n\r\nxx", id="huge-length-503"
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", id="header-without-colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", id="100kb-header"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20_000)) + b"\r\n",
        id="20000-headers",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        id="chunk-size-not-hex",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("head", UNPARSEABLE)
async def test_an_unparseable_response_is_retried_then_raised(
    server: ScriptedServer, head: bytes
) -> None:
    """Garbage status lines, impossible lengths, huge or countless headers: each attempt is a
    protocol failure - retried (max_retries=2: three requests), counted by the breaker - and
    then aiohttp's ClientResponseError is raised, nothing else, within the guard."""
    server.default = Raw(head)
    async with session_for(
        retrying(max_retries=2, circuit_breaker=CircuitBreakerConfig(failure_threshold=3))
    ) as session:
        result = await outcome(session, server.url + "/broken", guard=8.0)
    assert isinstance(result, aiohttp.ClientResponseError), repr(result)
    assert not isinstance(result, CircuitOpenError)
    assert server.count("/broken") == 3
    assert server.errors == []


# Heads that parse, bodies that do not: the response is the caller's; reading it fails.
BROKEN_BODIES: list[Any] = [
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz",
        id="gzip-that-is-not",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", id="closed-mid-body"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", id="closed-mid-chunk"
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("head", BROKEN_BODIES)
async def test_a_broken_body_raises_aiohttps_payload_error(
    server: ScriptedServer, head: bytes
) -> None:
    """A 200 whose body is cut short or undecodable: one request (a 200 is an answer), and
    reading the body raises aiohttp.ClientPayloadError."""
    server.default = Raw(head)
    async with session_for(retrying()) as session:
        result = await outcome(session, server.url + "/broken", guard=8.0)
    assert isinstance(result, aiohttp.ClientPayloadError), repr(result)
    assert server.count("/broken") == 1


@pytest.mark.anyio
async def test_a_status_below_100_is_returned_as_aiohttp_reads_it(server: ScriptedServer) -> None:
    """aiohttp accepts "HTTP/1.1 099": not in retry_on, it is returned as it is, once."""
    server.default = Raw(b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n")
    async with session_for(retrying()) as session:
        assert await get(session, server.url + "/odd", guard=8.0) == (99, b"", 1)


@pytest.mark.anyio
async def test_a_redirect_loop_ends_with_aiohttps_own_error(server: ScriptedServer) -> None:
    """A 302 to itself forever: aiohttp's TooManyRedirects (a ClientResponseError), each hop
    seen by the middleware and none retried."""
    server.default = Reply(302, headers={"Location": "/loop"})
    async with session_for(retrying()) as session:
        with pytest.raises(aiohttp.TooManyRedirects):
            await get(session, server.url + "/loop", guard=8.0)
    assert server.count("/loop") == 10  # max_redirects=10, the first request included


# -- hostile Retry-After ---------------------------------------------------------------------------

CAP = 0.25  # ResilientConfig.retry_after_cap


class Sleeps(FakeClock):
    """The testing clock: every sleep the library asks for is recorded, none is slept."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def advance(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().advance(seconds)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("value", "honoured"),
    [
        pytest.param("9" * 40, False, id="huge"),
        pytest.param("99999999999", False, id="far-epoch-as-seconds"),
        pytest.param("1e309", None, id="overflowing"),
        pytest.param("-1", None, id="negative"),
        pytest.param("NaN", None, id="nan"),
        pytest.param("inf", None, id="inf"),
        pytest.param("soon, maybe", None, id="garbage"),
        pytest.param("9" * 10_240, None, id="10kb"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", False, id="year-9999"),
        pytest.param("Tue, 31 Feb 2023 22:13:50 GMT", None, id="no-such-day"),
        pytest.param("\u00b2", None, id="superscript-two"),
        pytest.param("0.2", True, id="under-the-cap"),
    ],
)
async def test_hostile_retry_after_never_waits_past_the_cap(
    server: ScriptedServer, status: int, value: str, honoured: bool | None
) -> None:
    """Retry-After over the cap returns the response at once (honoured=False); garbage is
    ignored for the normal backoff (None); a value under the cap is waited (True).  No wait
    is ever longer than the cap, and nothing is raised."""
    events: list[Event] = []
    server.script("/x", Reply(status, b"busy", headers={"Retry-After": value}), Reply(200))
    clock = Sleeps()
    config = retrying(retry_after_cap=CAP, hooks=(events.append,))
    with set_testing(clock=clock):
        async with session_for(config) as session:
            result = await get(session, server.url + "/x", guard=5.0)
    assert max(clock.sleeps, default=0.0) <= CAP + 1e-9, clock.sleeps
    if honoured is False:
        assert result == (status, b"busy", 1)
        assert clock.sleeps == []
    else:
        assert result[::2] == (200, 2)
        [event] = [e for e in events if isinstance(e, RetryScheduled)]
        assert event.delay <= (CAP if honoured else 0.01)
        if honoured:
            assert event.delay >= 0.2


@pytest.mark.anyio
async def test_a_far_future_retry_after_costs_no_real_time(server: ScriptedServer) -> None:
    """On the real clock too: three 503s with Retry-After in the year 9999 come back at once."""
    server.default = Reply(503, headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})
    async with session_for(retrying()) as session:
        async with asyncio.timeout(5.0):  # liveness: an honoured value would never end
            for _ in range(3):
                assert (await get(session, server.url + "/x", guard=5.0))[::2] == (503, 1)


# -- memory stays bounded ------------------------------------------------------------------------

BIG = 32 * 1024 * 1024


@pytest.mark.anyio
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_huge_retried_bodies_are_never_read_into_memory(
    server: ScriptedServer, chunked: bool
) -> None:
    """Two 32 MB 503s before the 200: the traced heap peaks under a quarter of one body
    (measured: under 3 MB) - the drain reads at most 64 KiB and drops the rest with the
    connection."""
    big = BigBody(503, BIG, chunked=chunked)
    server.script("/big", big, big, Reply(200, b"ok"))
    gc.collect()
    tracemalloc.start()
    try:
        async with session_for(retrying()) as session:
            result = await get(session, server.url + "/big", guard=10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == (200, b"ok", 3)
    assert peak < BIG // 4, f"peak {peak} bytes while retrying past 32 MB bodies"


@pytest.mark.anyio
async def test_many_hostile_calls_at_once_all_end(server: ScriptedServer) -> None:
    """50 concurrent calls against a mix of hostile answers: every one ends within the guard,
    each with a response or a documented error; the pool ends with nothing handed out."""
    hostile: list[Callable[[], Action]] = [
        lambda: Trickle(503, 100, 0.05),
        lambda: Raw(b"garbage\r\n\r\n"),
        lambda: Truncate(503, declared=5000, sent=10),
        lambda: BigBody(503, 1024 * 1024, chunked=True),
        lambda: Reply(503, headers={"Retry-After": "9" * 40}),
    ]
    for i in range(50):
        server.script(f"/h{i}", hostile[i % len(hostile)](), Reply(200, b"ok"))
    async with session_for(retrying()) as session:
        async with asyncio.timeout(10.0):
            results = await asyncio.gather(
                *(outcome(session, f"{server.url}/h{i}", guard=10.0) for i in range(50))
            )
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert len(connector._acquired) == 0
    for result in results:
        assert not isinstance(result, BaseException) or isinstance(result, aiohttp.ClientError)
    assert all(r[0] in (200, 503) for r in results if not isinstance(r, BaseException))
