"""``ResilientMiddleware`` on aiohttp's client middlewares, against real servers on 127.0.0.1.

DESIGN.md, "aiohttp" and "Transports": the middleware follows the transports'
rules - statuses read from responses, per-origin breakers in a bounded
registry (or one shared ``breaker=``), which requests may be resent
(idempotent methods, an ``Idempotency-Key``, ``retry_non_idempotent``; a
connect error for every method; a one-shot body never), ``Retry-After`` with
its cap, the last response returned as it is when retries run out, a retried
response released before the retry (bounded in bytes and time), the deadline
cutting each attempt and the body returned, the budget, the trip rules, load
control, and ``fallback=`` built with :meth:`ResilientMiddleware.response`.
An open breaker raises an error that is both ``CircuitOpenError`` and
``aiohttp.ClientConnectionError``.

These are the httpx async transport's cases (tests/mounts/test_transports.py,
test_retry_after.py, test_load_safety.py, test_trip_rules_http.py,
test_load_control.py) mirrored on aiohttp, plus what only aiohttp has
(per-request middlewares, redirects through a middleware, a user's middleware
composed with ours), 1,000 coroutines through one session and a shared
breaker, and cancelled requests.  aiohttp runs on asyncio only: the anyio
plugin runs these under asyncio.  Retrying tests use ``instant`` (backoff
sleeps skipped and added to a FakeClock that the breakers read); nothing
asserts a duration, only liveness guards (a hung call fails the test).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import itertools
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from httpserver import (
    BigBody,
    Delay,
    Drop,
    Raw,
    Reply,
    ScriptedServer,
    Trickle,
    Truncate,
    refused_url,
)
from quotaserver import Failing, LoadServer
from yarl import URL

import smoothapi
from smoothapi import (
    BackoffConfig,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    ConfigTypeError,
    Event,
    HedgingConfig,
    LoadShedError,
    RateLimitConfig,
    ResilientConfig,
    ResilientMiddleware,
    RetriesExhausted,
    RetryBudgetConfig,
    RetryScheduled,
    ThrottleConfig,
    resilient_api,
)
from smoothapi.load import BULKHEAD, RATE_LIMIT, THROTTLE
from smoothapi.mounts.aiohttp_middleware import CircuitOpenClientError, LoadShedClientError
from smoothapi.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
TIMEOUT = aiohttp.ClientTimeout(total=10)
GUARD = 10.0  # a hung call fails the test after this long; passing ones take milliseconds
IDEMPOTENT = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
# What may escape a request through the middleware (DESIGN.md, "What never leaks").
DOCUMENTED = (aiohttp.ClientError, asyncio.TimeoutError, CircuitOpenError)


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only."""
    return "asyncio"


def cfg(
    *,
    max_retries: int = 3,
    threshold: int = 100,
    hooks: tuple[Callable[[Event], object], ...] = (),
    **kwargs: Any,
) -> ResilientConfig:
    """A config whose breaker stays CLOSED unless a test lowers ``threshold``."""
    kwargs.setdefault("backoff", BackoffConfig(max_retries=max_retries))
    kwargs.setdefault(
        "circuit_breaker", CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=10_000)
    )
    return ResilientConfig(hooks=hooks, **kwargs)


@contextlib.asynccontextmanager
async def session_for(
    config: ResilientConfig | None = None, *, limit: int = 100, **kwargs: Any
) -> AsyncIterator[tuple[aiohttp.ClientSession, ResilientMiddleware]]:
    """An ``aiohttp.ClientSession(middlewares=(ResilientMiddleware(config, **kwargs),))``."""
    middleware = ResilientMiddleware(config, **kwargs)
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(
        middlewares=(middleware,), connector=connector, timeout=TIMEOUT
    ) as session:
        yield session, middleware


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, bytes, int]:
    """(status, body, attempts) of one request, its body read."""
    async with asyncio.timeout(GUARD), session.request(method, url, **kwargs) as response:
        return response.status, await response.read(), smoothapi.attempts(response)


def bodies(server: ScriptedServer, path: str) -> list[bytes]:
    return [r.body for r in server.requests if r.path == path]


def acquired(session: aiohttp.ClientSession) -> int:
    """Connections the session's pool has handed out and not had back (read-only peek)."""
    connector = session.connector
    assert isinstance(connector, aiohttp.TCPConnector)
    return len(connector._acquired)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Liveness only: let the event loop run (up to GUARD seconds) until ``condition``."""
    async with asyncio.timeout(GUARD):
        for _ in itertools.count():  # polled: nothing to wait on but a count or a state
            if condition():
                return
            await asyncio.sleep(0.005)
    raise AssertionError(what)  # pragma: no cover - count() is endless


# -- statuses come from responses --------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_each_status_in_retry_on_is_retried_then_the_200_returned(
    server: ScriptedServer, instant: FakeClock, status: int
) -> None:
    """Every default retry_on status is a failure and is retried; the 200 is what comes back."""
    server.script("/flaky", Reply(status), Reply(status), Reply(200, b"finally"))
    async with session_for(cfg()) as (session, _):
        assert await fetch(session, "GET", server.url + "/flaky") == (200, b"finally", 3)
    assert server.count("/flaky") == 3


@pytest.mark.anyio
async def test_a_plain_200_takes_one_attempt(server: ScriptedServer) -> None:
    """The happy path: one request, attempts() == 1."""
    async with session_for(cfg()) as (session, _):
        assert await fetch(session, "GET", server.url + "/ok") == (200, b"ok", 1)
    assert server.count("/ok") == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 404, 409])
async def test_a_status_outside_retry_on_is_returned_at_once(
    server: ScriptedServer, instant: FakeClock, status: int
) -> None:
    """A 4xx is the service answering: one request, returned as is, counted as a success."""
    server.script("/missing", Reply(status, b"nope"))
    async with session_for(cfg(threshold=1)) as (session, middleware):
        assert await fetch(session, "GET", server.url + "/missing") == (status, b"nope", 1)
        assert middleware.breaker_for(server.url).state is CLOSED
    assert server.count("/missing") == 1


@pytest.mark.anyio
async def test_retry_on_is_the_configs(server: ScriptedServer, instant: FakeClock) -> None:
    """ResilientConfig(retry_on=[418]): a 418 is retried, a 503 is not."""
    server.script("/teapot", Reply(418), Reply(200))
    server.script("/down", Reply(503), Reply(200))
    async with session_for(cfg(retry_on=[418])) as (session, _):
        assert (await fetch(session, "GET", server.url + "/teapot"))[::2] == (200, 2)
        assert (await fetch(session, "GET", server.url + "/down"))[::2] == (503, 1)


@pytest.mark.anyio
async def test_retries_exhausted_return_the_last_503_as_is(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """max_retries=3 against 503 x10: 4 requests, the last 503 returned with its body readable
    (read, text), raise_for_status raising aiohttp's ClientResponseError."""
    events: list[Event] = []
    server.script("/down", *[Reply(503, f"attempt {n}".encode()) for n in range(1, 11)])
    async with session_for(cfg(hooks=(events.append,))) as (session, _):
        async with session.get(server.url + "/down") as response:
            assert response.status == 503
            assert await response.read() == b"attempt 4"
            assert await response.text() == "attempt 4"
            assert smoothapi.attempts(response) == 4
            with pytest.raises(aiohttp.ClientResponseError) as info:
                response.raise_for_status()
            assert info.value.status == 503
    assert server.count("/down") == 4
    assert sum(isinstance(e, RetryScheduled) for e in events) == 3
    [exhausted] = [e for e in events if isinstance(e, RetriesExhausted)]
    assert (exhausted.attempts, exhausted.status) == (4, 503)


@pytest.mark.anyio
async def test_breaker_opening_during_retries_returns_the_last_response(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Threshold 2, max_retries 5: two requests, the last 503 returned whole; no fallback."""
    calls: list[BaseException] = []

    def fallback(request: aiohttp.ClientRequest, error: BaseException) -> aiohttp.ClientResponse:
        calls.append(error)
        return ResilientMiddleware.response(request, body=b"fallback")

    server.script("/x", Reply(503, b"first"), Reply(503, b"second"))
    server.default = Reply(503)
    async with session_for(cfg(max_retries=5, threshold=2), fallback=fallback) as (session, mw):
        assert await fetch(session, "GET", server.url + "/x") == (503, b"second", 2)
        assert mw.breaker_for(server.url).state is OPEN
    assert server.count("/x") == 2
    assert calls == []


class _OpenDuringSleep:
    """A hook that opens the origin's breaker as soon as a retry is scheduled (as other
    callers' failures would, while this call sleeps)."""

    def __init__(self) -> None:
        self.middleware: ResilientMiddleware | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RetryScheduled) and self.middleware is not None:
            self.middleware.breakers[event.name].force_open()


@pytest.mark.anyio
@pytest.mark.parametrize("size", [12, 70_000], ids=["small-body", "body-over-drain-limit"])
async def test_breaker_opening_during_the_sleep_returns_the_last_response_whole(
    server: ScriptedServer, instant: FakeClock, size: int
) -> None:
    """The 503 read into memory before the sleep (small) or kept unread (large) comes back
    whole and readable - never a closed stream or an emptied body."""
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    # The body follows the head a moment later, so the drain reads it (a body that came with
    # the head is already buffered and the connection back in the pool).
    head = b"HTTP/1.1 503 X\r\nContent-Length: %d\r\n\r\n" % size
    server.script("/opens", Raw(head, ((0.05, body),)), Reply(200, b"never sent"))
    hook = _OpenDuringSleep()
    async with session_for(cfg(threshold=10, hooks=(hook,))) as (session, middleware):
        hook.middleware = middleware
        assert await fetch(session, "GET", server.url + "/opens") == (503, body, 1)
    assert server.count("/opens") == 1


# -- a retried response gives its connection back -------------------------------------------------


@pytest.mark.anyio
async def test_small_retried_bodies_are_read_and_the_connection_reused(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A pool of one: the two 503s are read into memory and their connection goes back, so
    all three requests travel on one keep-alive connection (no hang)."""
    server.script("/flaky", Reply(503), Reply(503), Reply(200, b"ok"))
    async with session_for(cfg(), limit=1) as (session, _):
        assert await fetch(session, "GET", server.url + "/flaky") == (200, b"ok", 3)
        assert acquired(session) == 0
    ids = [r.connection_id for r in server.requests]
    assert len(ids) == 3
    assert len(set(ids)) == 1, f"keep-alive lost between retries: connection ids {ids}"


@pytest.mark.anyio
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_large_retried_body_is_closed_not_read(
    server: ScriptedServer, instant: FakeClock, chunked: bool
) -> None:
    """A 1 MB 503 (declared, or of unknown length past 64 KiB) is over the drain limit: its
    connection is closed rather than read, and a pool of one still completes the retry."""
    big = BigBody(503, 1024 * 1024, chunked=chunked)
    server.script("/big", big, big, Reply(200, b"small"))
    async with session_for(cfg(), limit=1) as (session, _):
        assert await fetch(session, "GET", server.url + "/big") == (200, b"small", 3)
        assert acquired(session) == 0
    ids = [r.connection_id for r in server.requests]
    assert len(set(ids)) == 3, f"a 1 MB body was read to keep its connection: {ids}"


@pytest.mark.anyio
async def test_a_trickled_retried_body_is_dropped_not_waited_for(server: ScriptedServer) -> None:
    """Three 503s whose 60-byte bodies trickle for 3 s each: each is dropped with its
    connection after the bounded drain (0.5 s), so the call ends long before the 9 s that
    reading them would take (a liveness bound, not a timing claim)."""
    server.script("/busy", *[Trickle(503, 60, 0.05) for _ in range(3)], Reply(200, b"ok"))
    config = cfg(backoff=BackoffConfig(max_retries=3, base_delay=0.01, max_delay=0.02))
    async with session_for(config) as (session, _):
        async with asyncio.timeout(6.0):
            assert await fetch(session, "GET", server.url + "/busy") == (200, b"ok", 4)
    ids = [r.connection_id for r in server.requests]
    assert len(set(ids)) == 4, f"a trickled body's connection was reused: {ids}"


# -- bodies: resent whole, or sent once ------------------------------------------------------------


PAYLOAD = bytes(range(256)) * 40


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("bytes", PAYLOAD),
        ("str", "héllo wörld".encode()),
        ("json", b'{"id": 7, "tags": ["a", "b"]}'),
        ("form", b"a=1&b=two"),
        ("bytesio", PAYLOAD),
        ("file", PAYLOAD),
    ],
)
async def test_a_replayable_body_is_resent_whole(
    server: ScriptedServer, instant: FakeClock, tmp_path: Path, kind: str, expected: bytes
) -> None:
    """Bytes, str, JSON, form data and seekable files reach the server whole on every attempt."""
    server.script("/item", Reply(503), Reply(503), Reply(200))
    with contextlib.ExitStack() as stack:
        if kind == "bytes":
            body: dict[str, Any] = {"data": PAYLOAD}
        elif kind == "str":
            body = {"data": "héllo wörld"}
        elif kind == "json":
            body = {"json": {"id": 7, "tags": ["a", "b"]}}
        elif kind == "form":
            body = {"data": {"a": "1", "b": "two"}}
        elif kind == "bytesio":
            body = {"data": io.BytesIO(PAYLOAD)}
        else:
            path = tmp_path / "payload.bin"
            path.write_bytes(PAYLOAD)
            body = {"data": stack.enter_context(path.open("rb"))}
        async with session_for(cfg()) as (session, _):
            assert (await fetch(session, "PUT", server.url + "/item", **body))[::2] == (200, 3)
    assert bodies(server, "/item") == [expected] * 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    "options",
    [{"expect100": True}, {"chunked": True}, {"compress": "deflate"}, {"offset": 10}],
    ids=["expect-100-continue", "chunked", "deflate", "file-from-offset"],
)
async def test_request_options_keep_the_body_whole_on_every_attempt(
    server: ScriptedServer, instant: FakeClock, options: dict[str, Any]
) -> None:
    """Expect: 100-continue, a chunked upload, a compressed body, a file read from where it
    stood: each of the three attempts carries the same, whole body."""
    server.script("/x", Reply(503), Reply(503), Reply(200))
    data: Any = b"payload-" * 10
    if "offset" in options:
        data = io.BytesIO(b"skipped:::" + data)
        data.seek(options.pop("offset"))
    async with session_for(cfg()) as (session, _):
        assert (await fetch(session, "PUT", server.url + "/x", data=data, **options))[::2] == (
            200,
            3,
        )
    sent = bodies(server, "/x")
    assert len(sent) == 3
    assert sent[0] == sent[1] == sent[2]
    if "compress" not in options:
        assert sent[0] == b"payload-" * 10


@pytest.mark.anyio
async def test_a_multipart_upload_is_resent_identically(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A multipart body with a field and a (seekable) file is rendered whole for each attempt."""
    server.script("/upload", Reply(503), Reply(503), Reply(200))
    form = aiohttp.FormData()
    form.add_field("name", "report")
    form.add_field("f", io.BytesIO(b"file-content-" * 100), filename="f.bin")
    async with session_for(cfg()) as (session, _):
        status, _, attempts = await fetch(
            session,
            "POST",
            server.url + "/upload",
            data=form,
            headers={"Idempotency-Key": "upload-1"},
        )
    assert (status, attempts) == (200, 3)
    sent = bodies(server, "/upload")
    assert len(sent) == 3
    assert sent[0] == sent[1] == sent[2]
    assert b"file-content-" * 100 in sent[0]
    assert b"report" in sent[0]


async def _chunks() -> AsyncIterator[bytes]:
    yield b"a"
    yield b"b"


def _stream_reader() -> aiohttp.StreamReader:
    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(aiohttp.base_protocol.BaseProtocol(loop), 2**16, loop=loop)
    reader.feed_data(b"ab")
    reader.feed_eof()
    return reader


def _pipe(data: bytes) -> io.BufferedReader:
    """The read end of a pipe holding ``data``: a file that cannot seek."""
    read_fd, write_fd = os.pipe()
    with open(write_fd, "wb") as writer:
        writer.write(data)
    return open(read_fd, "rb")  # the caller closes it


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async-generator", "stream-reader", "pipe", "multipart"])
async def test_a_one_shot_body_is_sent_exactly_once(
    server: ScriptedServer, instant: FakeClock, kind: str
) -> None:
    """A body that cannot be replayed (an async generator, a StreamReader, a pipe, a multipart
    with such a part) gets one attempt - even for an idempotent PUT - and its 503 is returned,
    never resent truncated."""
    server.script("/stream", Reply(503), Reply(200))
    with contextlib.ExitStack() as stack:
        if kind == "async-generator":
            data: Any = _chunks()
        elif kind == "stream-reader":
            data = _stream_reader()
        elif kind == "pipe":
            data = stack.enter_context(_pipe(b"ab"))
        else:
            data = aiohttp.MultipartWriter()
            data.append(_chunks())
        async with session_for(cfg()) as (session, _):
            status, _, attempts = await fetch(session, "PUT", server.url + "/stream", data=data)
    assert (status, attempts) == (503, 1)
    assert server.count("/stream") == 1
    if kind != "multipart":
        assert bodies(server, "/stream") == [b"ab"]


# -- which requests are resent --------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "case",
    [
        ("POST", {}, cfg(), 1),
        ("PATCH", {}, cfg(), 1),
        ("POST", {"Idempotency-Key": "k-1"}, cfg(), 3),
        ("PATCH", {"Idempotency-Key": "k-1"}, cfg(), 3),
        ("POST", {}, cfg(retry_non_idempotent=True), 3),
        ("POST", {}, cfg(idempotent_methods=("GET", "POST")), 3),
        *[(method, {}, cfg(), 3) for method in IDEMPOTENT],
    ],
    ids=[
        "post",
        "patch",
        "post-key",
        "patch-key",
        "post-allowed",
        "post-listed",
        *[m.lower() for m in IDEMPOTENT],
    ],
)
async def test_idempotency_decides_what_is_resent_after_a_503(
    server: ScriptedServer,
    instant: FakeClock,
    case: tuple[str, dict[str, str], ResilientConfig, int],
) -> None:
    """POST/PATCH may have had an effect: not resent unless keyed or allowed; idempotent
    methods are.  The key reaches the server on every attempt."""
    method, headers, config, expected = case
    server.script("/res", Reply(503), Reply(503), Reply(200))
    async with session_for(config) as (session, _):
        status, _, attempts = await fetch(
            session, method, server.url + "/res", data=b"{}", headers=headers
        )
    assert server.count("/res", method=method) == expected == attempts
    assert status == (503 if expected == 1 else 200)
    if headers:
        assert {r.headers["idempotency-key"] for r in server.requests} == {"k-1"}


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PUT", "DELETE"])
async def test_a_refused_connection_is_retried_for_every_method(
    instant: FakeClock, method: str
) -> None:
    """Nothing was sent: every method is retried until max_retries runs out; then aiohttp's own
    ClientConnectorError is raised, unwrapped."""
    events: list[Event] = []
    url = refused_url()
    async with session_for(cfg(hooks=(events.append,))) as (session, middleware):
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await fetch(session, method, url + "/x", data=b"payload")
        assert not isinstance(info.value, CircuitOpenError)
        assert middleware.breaker_for(url).failure_count == 4
    assert sum(isinstance(e, RetryScheduled) for e in events) == 3


@pytest.mark.anyio
async def test_a_refused_connection_with_a_one_shot_body_gets_one_attempt(
    instant: FakeClock,
) -> None:
    """A one-shot body is never sent twice, even when the first attempt sent nothing."""
    async with session_for(cfg()) as (session, middleware):
        url = refused_url()
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(session, "PUT", url + "/x", data=_chunks())
        assert middleware.breaker_for(url).failure_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "headers", "requests"),
    [("GET", {}, 2), ("PUT", {}, 2), ("POST", {"Idempotency-Key": "k"}, 2), ("POST", {}, 1)],
    ids=["get", "put", "post-key", "post"],
)
async def test_a_connection_dropped_after_sending(
    server: ScriptedServer,
    instant: FakeClock,
    method: str,
    headers: dict[str, str],
    requests: int,
) -> None:
    """A dropped connection after the request was sent: idempotent (or keyed) requests are
    retried; a plain POST gets one request and aiohttp's disconnect error, not a breaker's."""
    server.script("/pay", Drop(), Reply(200, b"paid"))
    async with session_for(cfg()) as (session, _):
        if requests == 1:
            with pytest.raises(aiohttp.ClientConnectionError) as info:
                await fetch(session, method, server.url + "/pay", data=b"1", headers=headers)
            assert not isinstance(info.value, CircuitOpenError)
        else:
            assert await fetch(
                session, method, server.url + "/pay", data=b"1", headers=headers
            ) == (200, b"paid", 2)
    assert server.count("/pay") == requests


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "requests"), [("GET", 2), ("POST", 1)])
async def test_a_503_cut_mid_body(
    server: ScriptedServer, instant: FakeClock, method: str, requests: int
) -> None:
    """A 503 whose body is cut short: a GET is retried (the broken drain closes the
    connection); a POST's 503 comes back, and reading its body raises aiohttp's payload error."""
    server.script("/cut", Truncate(503, declared=5000, sent=10), Reply(200, b"whole"))
    async with session_for(cfg()) as (session, _):
        if requests == 2:
            assert await fetch(session, method, server.url + "/cut") == (200, b"whole", 2)
        else:
            async with session.request(method, server.url + "/cut") as response:
                assert response.status == 503
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
    assert server.count("/cut") == requests


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        """Silenced."""


class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    handshakes = 0

    def get_request(self) -> Any:
        self.handshakes += 1  # every accepted connection is one TLS handshake attempt
        return super().get_request()

    def handle_error(self, request: object, client_address: object) -> None:
        """Silenced: the failed handshakes are the point."""


@pytest.mark.anyio
async def test_a_certificate_failure_is_not_retried(instant: FakeClock) -> None:
    """An HTTPS server whose certificate aiohttp does not trust: one handshake, aiohttp's
    ClientConnectorCertificateError raised, the breaker not counting it (the next try would
    fail the same way)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = _TLSServer(("127.0.0.1", 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        async with session_for(cfg()) as (session, middleware):
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await fetch(session, "GET", url)
            assert middleware.breaker_for(url).failure_count == 0
    finally:
        server.shutdown()
        server.server_close()
    assert server.handshakes == 1


# -- Retry-After -----------------------------------------------------------------------------------


def scheduled(events: list[Event]) -> list[RetryScheduled]:
    return [e for e in events if isinstance(e, RetryScheduled)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "case",
    [
        (503, "1", {}, 1.0, 30.0),
        (429, "5", {}, 5.0, 30.0),
        (503, "45", {"max_delay": 60.0}, 45.0, 60.0),  # the cap follows max_delay
        (503, "29.9", {}, 29.9, 30.0),  # jitter never pushes it past the cap
        (503, "soon", {"base_delay": 0.1}, 0.0, 0.1),  # garbage: the normal backoff
        (503, "-3", {"base_delay": 0.1}, 0.0, 0.1),
    ],
    ids=["seconds", "429", "max-delay-60", "just-under-cap", "garbage", "negative"],
)
async def test_retry_after_sets_the_wait(
    server: ScriptedServer,
    instant: FakeClock,
    case: tuple[int, str, dict[str, float], float, float],
) -> None:
    """The wait before the retry is at least what the server asked, and within the cap; the
    fake clock moved by exactly that wait."""
    status, value, backoff, low, high = case
    events: list[Event] = []
    server.script("/x", Reply(status, headers={"Retry-After": value}), Reply(200))
    config = cfg(backoff=BackoffConfig(max_retries=3, **backoff), hooks=(events.append,))
    start = instant.now
    async with session_for(config) as (session, _):
        assert (await fetch(session, "GET", server.url + "/x"))[::2] == (200, 2)
    [event] = scheduled(events)
    assert low <= event.delay <= high
    assert instant.now - start == pytest.approx(event.delay)


@pytest.mark.anyio
async def test_retry_after_as_an_http_date(server: ScriptedServer, instant: FakeClock) -> None:
    """An HTTP-date 5 s ahead: the wait is at least the time left until then."""
    events: list[Event] = []
    target = int(time.time()) + 5
    server.script("/x", Reply(503, headers={"Retry-After": formatdate(target, usegmt=True)}))
    async with session_for(cfg(hooks=(events.append,))) as (session, _):
        assert (await fetch(session, "GET", server.url + "/x"))[::2] == (200, 2)
    left = target - time.time()
    [event] = scheduled(events)
    assert max(left, 3.0) <= event.delay <= 30.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "config"),
    [
        ("3600", cfg()),  # over the default cap, max_delay 30 s
        ("9999999999", cfg()),
        ("20", cfg(retry_after_cap=10.0)),
        (formatdate(time.time() + 86_400 * 365, usegmt=True), cfg()),
    ],
    ids=["hour", "huge", "retry-after-cap", "next-year"],
)
async def test_retry_after_over_the_cap_returns_the_response_at_once(
    server: ScriptedServer, instant: FakeClock, value: str, config: ResilientConfig
) -> None:
    """No sleep at all: the 503 comes back after one request and the clock has not moved."""
    events: list[Event] = []
    config = cfg(
        retry_after_cap=config.retry_after_cap, hooks=(events.append,)
    )  # the same cap, with our hook
    server.script("/x", Reply(503, b"later", headers={"Retry-After": value}), Reply(200))
    start = instant.now
    async with session_for(config) as (session, _):
        assert await fetch(session, "GET", server.url + "/x") == (503, b"later", 1)
    assert server.count("/x") == 1
    assert instant.now == start
    assert scheduled(events) == []
    assert [e.attempts for e in events if isinstance(e, RetriesExhausted)] == [1]


# -- breakers per origin ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_open_breaker_rejects_its_origin_only(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The failing origin is rejected without I/O, with an error that is both CircuitOpenError
    and aiohttp.ClientConnectionError (retry_after > 0, named by its origin); the healthy
    origin is never rejected."""
    server.default = Reply(503)
    async with session_for(cfg(max_retries=1, threshold=2)) as (session, middleware):
        with ScriptedServer() as healthy:
            assert (await fetch(session, "GET", server.url + "/x"))[::2] == (503, 2)
            assert middleware.breaker_for(server.url).state is OPEN
            for _ in range(3):
                assert (await fetch(session, "GET", healthy.url + "/y"))[0] == 200
                with pytest.raises(CircuitOpenError) as info:
                    await fetch(session, "GET", server.url + "/x")
                error = info.value
                assert isinstance(error, aiohttp.ClientConnectionError)
                assert isinstance(error, CircuitOpenClientError)
                assert error.retry_after > 0
                assert error.name == server.origin
            assert healthy.count() == 3
            assert middleware.breaker_for(healthy.url).state is CLOSED
            assert set(middleware.breakers) == {server.origin, healthy.origin}
    assert server.count() == 2


@pytest.mark.anyio
async def test_rejection_names_the_origin_never_userinfo_or_query(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The error, its name and every breaker and event name say http://127.0.0.1:PORT only."""
    events: list[Event] = []
    secret = f"http://user:secret@127.0.0.1:{server.port}/x?api_key=SECRET"
    server.default = Reply(503)
    async with session_for(cfg(max_retries=1, threshold=2, hooks=(events.append,))) as (
        session,
        middleware,
    ):
        assert (await fetch(session, "GET", secret))[0] == 503
        with pytest.raises(CircuitOpenError) as info:
            await fetch(session, "GET", secret)
        error = info.value
        texts = [str(error), repr(error), error.name, *middleware.breakers]
        texts += [e.name for e in events]
    assert error.name == server.origin
    assert server.origin in str(error)
    for text in texts:
        assert "secret" not in text.lower(), text
        assert "api_key" not in text, text
        assert "user" not in text, text


@pytest.mark.anyio
@pytest.mark.parametrize("opened_via", ["plain", "userinfo"])
async def test_one_breaker_per_origin_whatever_the_userinfo_path_or_query(
    server: ScriptedServer, instant: FakeClock, opened_via: str
) -> None:
    """A breaker opened through one URL of an origin rejects every other URL of it."""
    plain = server.url + "/a"
    secret = f"http://user:secret@127.0.0.1:{server.port}/b?api_key=SECRET"
    first, other = (plain, secret) if opened_via == "plain" else (secret, plain)
    server.default = Reply(503)
    async with session_for(cfg(max_retries=1, threshold=2)) as (session, _):
        assert (await fetch(session, "GET", first))[0] == 503
        with pytest.raises(CircuitOpenError):
            await fetch(session, "GET", other)
    assert server.count() == 2, "the same origin got a second, CLOSED breaker"


def test_every_spelling_of_one_origin_maps_to_one_breaker() -> None:
    """(scheme, host, port) is the key: a default port written out, userinfo, path, query and
    the case of scheme and host make no second breaker."""
    middleware = ResilientMiddleware(cfg())
    spellings = [
        "http://127.0.0.1/x",
        "http://127.0.0.1:80/y?api_key=SECRET",
        "http://user:secret@127.0.0.1/z",
        "HTTP://127.0.0.1:80/",
    ]
    found = {u: middleware.breaker_for(u) for u in spellings}
    assert len({id(b) for b in found.values()}) == 1, found
    assert {b.name for b in found.values()} == {"http://127.0.0.1:80"}
    assert middleware.breaker_for("https://127.0.0.1/").name == "https://127.0.0.1:443"


@pytest.mark.anyio
async def test_the_registry_is_bounded_by_max_breakers(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """max_breakers=2: CLOSED breakers of older origins are forgotten; an OPEN one is kept
    (forgetting it would let traffic through to a dead origin)."""
    middleware = ResilientMiddleware(cfg(threshold=1, max_retries=0), max_breakers=2)
    for port in range(1, 10):
        middleware.breaker_for(f"http://127.0.0.{port}:8080/")
    assert len(middleware.breakers) == 2
    server.default = Reply(503)
    async with aiohttp.ClientSession(middlewares=(middleware,), timeout=TIMEOUT) as session:
        assert (await fetch(session, "GET", server.url + "/"))[0] == 503
        with ScriptedServer() as one, ScriptedServer() as two:
            for url in (one.url, two.url, one.url):
                assert (await fetch(session, "GET", url + "/"))[0] == 200
            assert server.origin in middleware.breakers
            assert len(middleware.breakers) == 2
            with pytest.raises(CircuitOpenError):
                await fetch(session, "GET", server.url + "/")
    assert server.count() == 1


@pytest.mark.parametrize(
    ("value", "error"), [(0, ConfigError), (-1, ConfigError), ("3", ConfigTypeError)]
)
def test_max_breakers_is_validated(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_breakers"):
        ResilientMiddleware(cfg(), max_breakers=value)


@pytest.mark.anyio
async def test_a_shared_breaker_guards_every_origin(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """breaker=: failures at one origin open it for all; breakers lists that one breaker."""
    shared = CircuitBreaker(CircuitBreakerConfig(failure_threshold=2), name="backends")
    server.default = Reply(503)
    async with session_for(cfg(max_retries=1), breaker=shared) as (session, middleware):
        with ScriptedServer() as healthy:
            assert (await fetch(session, "GET", server.url + "/x"))[0] == 503
            assert shared.state is OPEN
            with pytest.raises(CircuitOpenClientError) as info:
                await fetch(session, "GET", healthy.url + "/y")
            assert healthy.count() == 0
            assert middleware.breaker_for(healthy.url) is shared
        assert info.value.name == "backends"
        assert middleware.breakers == {"backends": shared}


@pytest.mark.anyio
async def test_one_breaker_shared_by_a_decorated_function_and_the_middleware(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Failures through an async decorated function and the middleware add up in one
    breaker=; once open, both are rejected."""
    br = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3), name="users-api")
    config = ResilientConfig(backoff=BackoffConfig(max_retries=1), circuit_breaker=br.config)
    server.default = Reply(503)
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as plain,
        session_for(config, breaker=br) as (session, _),
    ):

        @resilient_api(config, breaker=br)
        async def fetch_user() -> Any:
            async with plain.get(server.url + "/users/1") as response:
                response.raise_for_status()
                return await response.json()

        assert (await fetch(session, "GET", server.url + "/users/1"))[::2] == (503, 2)
        assert br.failure_count == 2
        with pytest.raises(aiohttp.ClientResponseError):
            await fetch_user()
        assert br.state is OPEN
        with pytest.raises(CircuitOpenError):
            await fetch_user()
        with pytest.raises(CircuitOpenClientError):
            await fetch(session, "GET", server.url + "/users/1")
    assert server.count() == 3


# -- fallback and attempts() -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_a_fallback_answers_a_request_rejected_up_front(
    server: ScriptedServer, instant: FakeClock, kind: str
) -> None:
    """fallback(request, error) - plain or async - builds the response served while the
    breaker is open: read/text/json work on it, attempts() is 0, nothing is sent."""
    calls: list[tuple[aiohttp.ClientRequest, BaseException]] = []

    def build(request: aiohttp.ClientRequest, error: BaseException) -> aiohttp.ClientResponse:
        calls.append((request, error))
        return ResilientMiddleware.response(request, json={"cached": True})

    async def async_build(
        request: aiohttp.ClientRequest, error: BaseException
    ) -> aiohttp.ClientResponse:
        await asyncio.sleep(0)
        return build(request, error)

    fallback = async_build if kind == "async" else build
    server.default = Reply(503)
    async with session_for(cfg(max_retries=1, threshold=2), fallback=fallback) as (session, _):
        assert (await fetch(session, "GET", server.url + "/users"))[0] == 503
        assert calls == []  # opened mid-call: that call got its last 503
        async with session.get(server.url + "/users?page=2") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            assert await response.json() == {"cached": True}
            assert await response.text() == '{"cached": true}'
            assert await response.read() == b'{"cached": true}'
            assert smoothapi.attempts(response) == 0
            response.raise_for_status()
    assert server.count() == 2
    [(request, error)] = calls
    assert str(request.url).endswith("/users?page=2")
    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, aiohttp.ClientConnectionError)
    assert error.retry_after > 0


@pytest.mark.anyio
async def test_response_builds_bodies_statuses_and_headers(server: ScriptedServer) -> None:
    """ResilientMiddleware.response(request, status, body=|json=, headers=): bytes and str
    bodies, a status of one's choice, headers kept; body= and json= together are refused."""
    seen: list[aiohttp.ClientRequest] = []

    async def capture(
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        seen.append(request)
        return await handler(request)

    async with aiohttp.ClientSession(middlewares=(capture,), timeout=TIMEOUT) as session:
        async with session.get(server.url + "/") as response:
            await response.read()
    [request] = seen
    raw = ResilientMiddleware.response(request, 203, body=b"\x00\x01", headers={"X-Cache": "1"})
    assert (raw.status, await raw.read(), raw.headers["X-Cache"]) == (203, b"\x00\x01", "1")
    assert raw.headers["Content-Length"] == "2"
    text = ResilientMiddleware.response(request, body="héllo")
    assert (text.status, await text.text()) == (200, "héllo")
    assert text.headers["Content-Type"].startswith("text/plain")
    empty = ResilientMiddleware.response(request, 204)
    assert (empty.status, await empty.read()) == (204, b"")
    with pytest.raises(ConfigError, match="body= or json="):
        ResilientMiddleware.response(request, body=b"x", json={"x": 1})


def test_a_fallback_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ConfigError, match="callable"):
        ResilientMiddleware(cfg(), fallback="cached")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_attempts_of_responses_through_the_middleware_and_not(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """smoothapi.attempts(): 3 after two retries, 1 on the happy path; a response from a
    session without the middleware says why it has none."""
    server.script("/flaky", Reply(503), Reply(503), Reply(200))
    async with session_for() as (session, _):
        async with session.get(server.url + "/flaky") as response:
            assert smoothapi.attempts(response) == 3
        async with session.get(server.url + "/ok") as response:
            assert smoothapi.attempts(response) == 1
    async with aiohttp.ClientSession(timeout=TIMEOUT) as plain:
        async with plain.get(server.url + "/ok") as response:
            with pytest.raises(ValueError, match="did not come through a smoothapi"):
                smoothapi.attempts(response)


# -- the deadline ----------------------------------------------------------------------------------


def deadline(seconds: float = 1.0, retries: int = 3) -> ResilientConfig:
    return cfg(
        deadline=seconds,
        backoff=BackoffConfig(max_retries=retries, base_delay=0.01, max_delay=0.05),
        threshold=10,
    )


@pytest.mark.anyio
async def test_the_deadline_cuts_an_attempt(server: ScriptedServer) -> None:
    """A server that answers after 5 s, a 0.6 s deadline: the attempt is cut with
    aiohttp.ServerTimeoutError naming the deadline, long before the server's answer."""
    server.default = Delay(5.0, Reply(200))
    async with session_for(deadline(0.6)) as (session, _):
        async with asyncio.timeout(3.0):  # liveness: the server would take 5 s
            with pytest.raises(aiohttp.ServerTimeoutError, match="deadline"):
                await fetch(session, "GET", server.url + "/slow")
    assert server.count("/slow") == 1


@pytest.mark.anyio
async def test_retries_fit_inside_the_deadline(server: ScriptedServer) -> None:
    """Two 503s then a 200, all within a 5 s deadline: the 200 after three attempts."""
    server.script("/flaky", Reply(503), Reply(503), Reply(200, b"in time"))
    async with session_for(deadline(5.0)) as (session, _):
        assert await fetch(session, "GET", server.url + "/flaky") == (200, b"in time", 3)


@pytest.mark.anyio
async def test_the_returned_body_must_be_read_within_the_deadline(
    server: ScriptedServer,
) -> None:
    """The headers come at once, the body trickles for 3 s, the deadline is 1 s: reading it
    fails with a documented error near the deadline rather than taking 3 s."""
    server.script("/slow", Trickle(200, 20, 0.15))
    async with session_for(deadline(1.0)) as (session, _):
        async with asyncio.timeout(2.5):  # liveness: the whole body would take 3 s
            async with session.get(server.url + "/slow") as response:
                assert response.status == 200
                with pytest.raises(aiohttp.ServerTimeoutError, match="deadline"):
                    await response.read()


@pytest.mark.anyio
@pytest.mark.parametrize("size", [0, 10, 100_000, 3_000_000])
async def test_bodies_read_in_time_are_whole(server: ScriptedServer, size: int) -> None:
    """Bounding the body changes nothing for one that arrives in time; the connection is
    reusable afterwards."""
    server.script("/body", BigBody(200, size))
    async with session_for(deadline(5.0), limit=1) as (session, _):
        assert await fetch(session, "GET", server.url + "/body") == (200, b"x" * size, 1)
        for _ in range(3):
            assert (await fetch(session, "GET", server.url + "/ok"))[:2] == (200, b"ok")


# -- the retry budget ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_budget_is_per_origin(server: ScriptedServer, instant: FakeClock) -> None:
    """RetryBudgetConfig(): 30 failing GETs make 30 + 5 requests (10 tokens, retries while
    above 5), not 30 x 4."""
    server.default = Reply(503)
    config = cfg(retry_budget=RetryBudgetConfig(), threshold=10**9)
    async with session_for(config) as (session, _):
        for _ in range(30):
            assert (await fetch(session, "GET", server.url + "/down"))[0] == 503
    assert server.count("/down") == 35


# -- trip rules ------------------------------------------------------------------------------------

RATE = {"failure_rate": 0.5, "minimum_calls": 10, "window_ms": 60_000}
AT_RATE = [Reply(200), Reply(503)] * 5  # half of ten fail: the tenth trips it
BELOW_RATE = [Reply(200), Reply(404), Reply(503)] * 10  # a third fail; a 404 is a success
SLOW = Delay(0.15, Reply(200, b"late but fine"))  # three times slow_call_ms=50


def rules(max_retries: int = 0, **breaker: Any) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=max_retries, base_delay=0.001, max_delay=0.001),
        circuit_breaker=CircuitBreakerConfig(**{"cooldown_ms": 10_000, **breaker}),
    )


async def status_of(session: aiohttp.ClientSession, url: str) -> int | str:
    try:
        return (await fetch(session, "GET", url))[0]
    except CircuitOpenError:
        return "rejected"


@pytest.mark.anyio
async def test_the_failure_rate_rule(server: ScriptedServer) -> None:
    """A third failing (a 404 is a success) stays CLOSED; half failing opens at the tenth."""
    server.script("/below", *BELOW_RATE)
    server.script("/at", *AT_RATE)
    async with session_for(rules(**RATE)) as (session, middleware):
        breaker = middleware.breaker_for(server.url)
        assert [await status_of(session, server.url + "/below") for _ in range(30)] == [
            200,
            404,
            503,
        ] * 10
        assert breaker.window == (30, 10, 0)
        breaker.reset()
        assert [await status_of(session, server.url + "/at") for _ in range(10)] == [200, 503] * 5
        assert breaker.state is OPEN
        assert breaker.reason == "failure rate 0.50 over 10 calls"
        assert await status_of(session, server.url + "/at") == "rejected"
    assert server.count("/at") == 10


@pytest.mark.anyio
async def test_a_slow_response_is_returned_not_retried_and_opens_the_breaker(
    server: ScriptedServer,
) -> None:
    server.script("/slow", SLOW)
    config = rules(max_retries=3, failure_threshold=1, slow_call_ms=50)
    async with session_for(config) as (session, middleware):
        assert await fetch(session, "GET", server.url + "/slow") == (200, b"late but fine", 1)
        breaker = middleware.breaker_for(server.url)
        assert breaker.state is OPEN
        assert breaker.reason == "slow calls"
    assert server.count("/slow") == 1


@pytest.mark.anyio
async def test_three_probes_in_flight_the_fourth_rejected_then_closed(
    server: ScriptedServer,
) -> None:
    """half_open_calls=3: three probes at the server at once, a fourth rejected without a
    request; three good probes close the breaker."""
    config = rules(failure_threshold=1, cooldown_ms=30, half_open_calls=3)
    async with session_for(config) as (session, middleware):
        breaker = middleware.breaker_for(server.url)
        server.script("/down", Reply(503))
        assert await status_of(session, server.url + "/down") == 503
        await until(lambda: breaker.retry_after == 0.0, "the cooldown")
        hold = Delay(0.3, Reply(200, b"probe"))
        server.script("/probe", hold, hold, hold)
        probes = [
            asyncio.ensure_future(status_of(session, server.url + "/probe")) for _ in range(3)
        ]
        await until(lambda: server.count("/probe") == 3, "three probes at the server")
        assert breaker.state is HALF_OPEN
        assert await status_of(session, server.url + "/probe") == "rejected"
        assert await asyncio.gather(*probes) == [200, 200, 200]
        assert breaker.state is CLOSED
    assert server.count("/probe") == 3


# -- load control ----------------------------------------------------------------------------------


def staged(**stages: Any) -> ResilientConfig:
    """No retries and a breaker that never opens: the counts stay plain."""
    options: dict[str, Any] = {
        "backoff": BackoffConfig(max_retries=0),
        "circuit_breaker": CircuitBreakerConfig(failure_threshold=10**9),
    }
    return ResilientConfig(**{**options, **stages})


async def outcome(session: aiohttp.ClientSession, url: str) -> int | BaseException:
    try:
        return (await fetch(session, "GET", url))[0]
    except DOCUMENTED as error:
        return error


def test_hedging_is_refused_saying_why() -> None:
    """aiohttp sends one request object at a time: hedging is a ConfigError that says so and
    names the mount point that can hedge."""
    with pytest.raises(ConfigError) as info:
        ResilientMiddleware(ResilientConfig(hedging=HedgingConfig()))
    message = str(info.value)
    assert message.startswith("ResilientMiddleware cannot hedge requests (ResilientConfig.hedging)")
    assert "aiohttp sends one request object at a time" in message
    assert "AsyncResilientTransport" in message
    assert "hedging=None" in message


@pytest.mark.anyio
async def test_the_bulkhead_holds_max_concurrent_and_sheds_past_its_queue() -> None:
    """4 permits and a queue of 4: of 32 coroutines 8 are served, 24 shed at once with an error
    that is both LoadShedError and aiohttp.ClientConnectionError."""
    config = staged(bulkhead=BulkheadConfig(max_concurrent=4, max_queue=4, max_wait=60.0))
    with LoadServer(gated=True) as server:
        async with session_for(config) as (session, _):
            tasks = [
                asyncio.ensure_future(outcome(session, server.url + "/held")) for _ in range(32)
            ]
            try:
                await until(
                    lambda: sum(t.done() for t in tasks) == 24 and server.in_flight == 4,
                    "24 shed, 4 at the server",
                )
                assert server.count() == 4
                server.release()
                results = await asyncio.gather(*tasks)
            finally:
                server.release()
                for task in tasks:
                    task.cancel()
        assert server.peak == 4
    shed = [r for r in results if isinstance(r, BaseException)]
    assert len(shed) == 24, results
    assert all(isinstance(e, LoadShedClientError) for e in shed), shed
    assert all(isinstance(e, aiohttp.ClientConnectionError) for e in shed)
    assert all(isinstance(e, LoadShedError) and e.stage == BULKHEAD for e in shed)
    assert results.count(200) == 8


@pytest.mark.anyio
async def test_a_deadline_nearer_than_the_next_token_sheds_at_once() -> None:
    """A rate limit of 1/s with a 0.5 s deadline: the second call is shed (stage rate_limit,
    retry_after past the deadline) without a request; a fallback answers it if given."""
    config = staged(deadline=0.5, rate_limit=RateLimitConfig(rate=1.0, burst=1.0, max_wait=30.0))
    with LoadServer() as server:
        async with session_for(config) as (session, _):
            assert await outcome(session, server.url + "/") == 200
            shed = await outcome(session, server.url + "/")
        assert isinstance(shed, LoadShedClientError), shed
        assert shed.stage == RATE_LIMIT
        assert shed.retry_after > 0.5
        assert server.count() == 1

        def fallback(request: aiohttp.ClientRequest, error: BaseException) -> Any:
            assert isinstance(error, LoadShedError)
            return ResilientMiddleware.response(request, 299)

        async with session_for(config, fallback=fallback) as (session, _):
            assert [await outcome(session, server.url + "/") for _ in range(2)] == [200, 299]
        assert server.count() == 2


@pytest.mark.anyio
async def test_throttling_sheds_locally_what_a_partly_failing_server_would_fail() -> None:
    """7 of every 10 requests fail: with the adaptive throttle, fewer than half of 150 calls
    reach the server, the others are shed (stage throttle); a healthy server sheds none."""
    with LoadServer(Failing(failures=7, out_of=10, status=503)) as server:
        async with session_for(staged(throttle=ThrottleConfig(k=2.0))) as (session, _):
            results = [await outcome(session, server.url + "/t") for _ in range(150)]
    shed = [r for r in results if isinstance(r, LoadShedError)]
    assert server.count("/t") + len(shed) == 150
    assert shed
    assert server.count("/t") <= 75
    assert all(e.stage == THROTTLE for e in shed)
    with LoadServer() as healthy:
        async with session_for(staged(throttle=ThrottleConfig(k=2.0))) as (session, _):
            assert [await outcome(session, healthy.url + "/") for _ in range(50)] == [200] * 50


# -- aiohttp's own ways: per-request middlewares, redirects, composition ---------------------------


@pytest.mark.anyio
async def test_a_per_request_middleware(server: ScriptedServer, instant: FakeClock) -> None:
    """session.get(url, middlewares=(mw,)): that request is retried; the session's others not."""
    middleware = ResilientMiddleware(cfg())
    server.script("/with", Reply(503), Reply(503), Reply(200))
    server.script("/without", Reply(503), Reply(200))
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(server.url + "/with", middlewares=(middleware,)) as response:
            assert (response.status, smoothapi.attempts(response)) == (200, 3)
        async with session.get(server.url + "/without") as response:
            assert response.status == 503
    assert (server.count("/with"), server.count("/without")) == (3, 1)


@pytest.mark.anyio
async def test_each_redirect_hop_has_its_origins_breaker(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A 302 from one origin to another: the middleware sees each hop, retries the target's
    503s and keeps a breaker per origin; the target's open breaker rejects the hop to it
    while the first origin's stays CLOSED."""
    with ScriptedServer() as target:
        server.default = Reply(302, headers={"Location": target.url + "/dest"})
        target.script("/dest", Reply(503), Reply(200, b"arrived"))
        config = cfg(max_retries=1, threshold=2)
        async with session_for(config) as (session, middleware):
            assert await fetch(session, "GET", server.url + "/go") == (200, b"arrived", 2)
            assert set(middleware.breakers) == {server.origin, target.origin}
            target.default = Reply(503)
            assert (await fetch(session, "GET", server.url + "/go"))[0] == 503
            assert middleware.breaker_for(target.url).state is OPEN
            with pytest.raises(CircuitOpenClientError) as info:
                await fetch(session, "GET", server.url + "/go")
            assert info.value.name == target.origin
            assert middleware.breaker_for(server.url).state is CLOSED
        assert target.count("/dest") == 4
    assert server.count("/go") == 3


@pytest.mark.anyio
@pytest.mark.parametrize("order", ["user-outside", "user-inside"])
async def test_composed_with_a_users_middleware(
    server: ScriptedServer, instant: FakeClock, order: str
) -> None:
    """A user's middleware outside ours sees one request and the final response; inside ours it
    sees every attempt (and its header reaches the server each time)."""
    seen: list[int] = []

    async def tag(
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        request.headers["X-Tag"] = "t"
        response = await handler(request)
        seen.append(response.status)
        return response

    resilient = ResilientMiddleware(cfg())
    chain = (tag, resilient) if order == "user-outside" else (resilient, tag)
    server.script("/x", Reply(503), Reply(502), Reply(200))
    async with aiohttp.ClientSession(middlewares=chain, timeout=TIMEOUT) as session:
        assert (await fetch(session, "GET", server.url + "/x"))[::2] == (200, 3)
    assert seen == ([200] if order == "user-outside" else [503, 502, 200])
    assert [r.headers.get("x-tag") for r in server.requests] == ["t"] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["session", "request"])
async def test_aiohttps_raise_for_status_sees_the_final_response(
    server: ScriptedServer, instant: FakeClock, where: str
) -> None:
    """raise_for_status=True (on the session or the request) judges what the middleware
    returns: the 503s are retried first, and the final 200 raises nothing."""
    server.script("/x", Reply(503), Reply(503), Reply(200, b"ok"))
    middleware = ResilientMiddleware(cfg())
    options = {"raise_for_status": True}
    async with aiohttp.ClientSession(
        middlewares=(middleware,), timeout=TIMEOUT, **(options if where == "session" else {})
    ) as session:
        request = options if where == "request" else {}
        async with session.get(server.url + "/x", **request) as response:
            assert (response.status, smoothapi.attempts(response)) == (200, 3)
        server.default = Reply(503)
        with pytest.raises(aiohttp.ClientResponseError) as info:
            async with session.get(server.url + "/down", **request):
                pass
        assert info.value.status == 503
    assert server.count("/down") == 4


@pytest.mark.anyio
async def test_two_resilient_middlewares_in_one_chain_do_not_multiply(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """(outer, inner): the inner one makes one attempt per outer attempt - max_retries + 1
    requests in all, not (max_retries + 1) squared."""
    server.default = Reply(503)
    outer, inner = ResilientMiddleware(cfg()), ResilientMiddleware(cfg())
    async with aiohttp.ClientSession(middlewares=(outer, inner), timeout=TIMEOUT) as session:
        assert (await fetch(session, "GET", server.url + "/x"))[::2] == (503, 4)
    assert server.count("/x") == 4


@pytest.mark.anyio
async def test_a_decorated_function_through_a_middleware_sharing_its_breaker(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The decorator keeps the books when its requests go through a middleware sharing its
    breaker: 3 failed requests count 3 (not 6 or 9); after the cooldown the decorator's probe
    goes through the middleware and closes the breaker."""
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, cooldown_ms=10_000),
    )
    breaker = CircuitBreaker(config.circuit_breaker, name="users-api")
    async with session_for(config, breaker=breaker) as (session, _):

        @resilient_api(config, breaker=breaker)
        async def get(url: str) -> int:
            async with session.get(url) as response:
                response.raise_for_status()
                return response.status

        server.script("/u", Reply(503), Reply(503), Reply(503))
        with pytest.raises(aiohttp.ClientResponseError):
            await get(server.url + "/u")
        assert server.count("/u") == 3
        assert breaker.failure_count == 3
        breaker.force_open()
        instant.advance(10.0)
        assert await get(server.url + "/u") == 200
        assert breaker.state is CLOSED
    assert server.count("/u") == 4


@pytest.mark.anyio
async def test_aiohttps_total_timeout_ends_the_retries_and_frees_the_connection(
    server: ScriptedServer,
) -> None:
    """ClientTimeout(total=0.5) against 503s with 0.2 s backoffs: aiohttp's own timeout ends
    the call (asyncio.TimeoutError) during the retries; a pool of one is free afterwards."""
    server.default = Reply(503)
    backoff = BackoffConfig(max_retries=10, base_delay=0.2, max_delay=0.2, jitter="none")
    async with session_for(cfg(backoff=backoff), limit=1) as (session, _):
        with pytest.raises(asyncio.TimeoutError):
            await fetch(session, "GET", server.url + "/x", timeout=aiohttp.ClientTimeout(total=0.5))
        assert acquired(session) == 0
        server.default = Reply(200)
        assert (await fetch(session, "GET", server.url + "/x"))[0] == 200
    assert 1 <= server.count("/x") <= 5


@pytest.mark.anyio
async def test_a_cancelled_bulkhead_waiter_leaves_the_queue(server: ScriptedServer) -> None:
    """One permit: of two queued requests the cancelled one leaves the queue and is never
    sent; the other is served after the first."""
    config = staged(bulkhead=BulkheadConfig(max_concurrent=1, max_queue=10, max_wait=60.0))
    server.script("/q", Delay(0.3, Reply(200)))
    async with session_for(config) as (session, middleware):
        load = middleware._policy(URL(server.url)).load
        assert load is not None
        bulkhead = load.bulkhead
        assert bulkhead is not None
        first = asyncio.ensure_future(outcome(session, server.url + "/q"))
        await until(lambda: server.count("/q") == 1, "the first request at the server")
        second = asyncio.ensure_future(outcome(session, server.url + "/q"))
        third = asyncio.ensure_future(outcome(session, server.url + "/q"))
        await until(lambda: len(bulkhead.queue) == 2, "two queued")
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        assert len(bulkhead.queue) == 1
        assert [await first, await third] == [200, 200]
        assert (bulkhead.active, len(bulkhead.queue)) == (0, 0)
    assert server.count("/q") == 2


@pytest.mark.anyio
@pytest.mark.parametrize("deadline", [None, 0.2], ids=["no-deadline", "past-the-deadline"])
async def test_a_websocket_through_the_middleware(deadline: float | None) -> None:
    """session.ws_connect() goes through the middlewares: the handshake is one attempt and the
    WebSocket lives on after it (an echo, a pause, another echo)."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str("echo:" + message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with session_for(cfg(deadline=deadline)) as (session, _):
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                for word in ("a", "b"):
                    await ws.send_str(word)
                    assert (await ws.receive(timeout=GUARD)).data == f"echo:{word}"
                    await asyncio.sleep(0.2)
    finally:
        await runner.cleanup()


# -- 1,000 coroutines, one session, one shared breaker -------------------------------------------

CROWD = 1000


@pytest.mark.anyio
async def test_a_thousand_coroutines_and_one_probe(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """1,000 coroutines through one session and a shared breaker while the server is down:
    each gets a 503 or CircuitOpenClientError, nothing else; once it is OPEN, 1,000 more are
    all rejected without a request.  After the cooldown, 1,000 at once against the recovering
    server: exactly one probe reaches it, 999 are rejected; the probe closes the breaker and
    the next 1,000 all get through."""
    shared = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=5, cooldown_ms=10_000), name="crowd"
    )
    server.default = Reply(503)
    async with session_for(cfg(max_retries=1), breaker=shared) as (session, _):

        async def crowd(path: str) -> list[int | BaseException]:
            async with asyncio.timeout(60):
                tasks = [outcome(session, server.url + path) for _ in range(CROWD)]
                return list(await asyncio.gather(*tasks, return_exceptions=True))

        down = await crowd("/down")
        assert shared.state is OPEN
        unexpected = [r for r in down if r != 503 and not isinstance(r, CircuitOpenClientError)]
        assert unexpected == []
        # Admitted before it opened, each went on; once open, none retried.
        assert server.count("/down") < 2 * CROWD
        reached = server.count()
        still_open = await crowd("/down")
        assert all(isinstance(r, CircuitOpenClientError) for r in still_open)
        assert server.count() == reached

        instant.advance(10)  # the cooldown passes
        # The recovering server holds every request at its gate until the other 999 have
        # their answer, so the probe is in flight the whole time, however slow the machine.
        with LoadServer(gated=True) as recovering_server:
            tasks = [
                asyncio.ensure_future(outcome(session, recovering_server.url + "/up"))
                for _ in range(CROWD)
            ]
            try:
                await until(lambda: sum(t.done() for t in tasks) == CROWD - 1, "999 answered")
                await until(lambda: recovering_server.in_flight == 1, "the probe at the gate")
                assert shared.state is HALF_OPEN
                recovering_server.release()
                async with asyncio.timeout(GUARD):
                    recovering = await asyncio.gather(*tasks)
            finally:
                recovering_server.release()
                for task in tasks:
                    task.cancel()
            assert recovering_server.count("/up") == 1, "more than one probe reached it"
        assert recovering.count(200) == 1
        rejected = [r for r in recovering if isinstance(r, CircuitOpenClientError)]
        assert len(rejected) == CROWD - 1, [r for r in recovering if r not in rejected]
        assert shared.state is CLOSED

        server.default = Reply(200)
        assert await crowd("/after") == [200] * CROWD
    assert server.count("/after") == CROWD


# -- cancelled requests ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_request_cancelled_at_the_server_releases_its_connection(
    server: ScriptedServer,
) -> None:
    """A pool of one: a request cancelled while its attempt waits on a slow server gives its
    connection back (the next request goes through), and the breaker records nothing."""
    server.script("/hang", Delay(GUARD, Reply(200)))
    async with session_for(cfg(threshold=1), limit=1) as (session, middleware):
        task = asyncio.ensure_future(fetch(session, "GET", server.url + "/hang"))
        await until(lambda: server.count("/hang") == 1, "the request at the server")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert acquired(session) == 0
        assert await fetch(session, "GET", server.url + "/ok") == (200, b"ok", 1)
        breaker = middleware.breaker_for(server.url)
        assert (breaker.state, breaker.failure_count) == (CLOSED, 0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "size", [10, 60_000, 1_000_000], ids=["small-body", "64k-body", "body-over-drain-limit"]
)
async def test_a_request_cancelled_in_the_backoff_sleep_releases_its_connection(
    server: ScriptedServer, size: int
) -> None:
    """A pool of one: a request cancelled during its 5 s backoff sleep leaves no connection
    held for the 503 it was going to retry - read before the sleep (up to 64 KiB), or kept
    whole for the sleep (1 MB) and closed when the call is cancelled."""
    events: list[Event] = []
    config = cfg(
        backoff=BackoffConfig(max_retries=1, base_delay=5.0, max_delay=5.0, jitter="none"),
        hooks=(events.append,),
    )
    server.script("/busy", Reply(503, b"b" * size))
    async with session_for(config, limit=1) as (session, _):
        task = asyncio.ensure_future(fetch(session, "GET", server.url + "/busy"))
        await until(lambda: bool(scheduled(events)), "the retry scheduled")
        await asyncio.sleep(0.05)  # into the sleep
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert acquired(session) == 0, "the cancelled request kept its connection"
        assert (await fetch(session, "GET", server.url + "/ok"))[0] == 200
    assert server.count("/busy") == 1


@pytest.mark.anyio
async def test_a_cancelled_probe_gives_its_permit_back(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The HALF_OPEN probe is cancelled while the server holds it: the next call probes at once
    (it reaches the server) instead of being rejected, and closes the breaker."""
    async with session_for(cfg(max_retries=0, threshold=1)) as (session, middleware):
        breaker = middleware.breaker_for(server.url)
        server.script("/x", Reply(503), Delay(GUARD, Reply(200)), Reply(200, b"probe"))
        assert (await fetch(session, "GET", server.url + "/x"))[0] == 503
        assert breaker.state is OPEN
        instant.advance(10)
        probe = asyncio.ensure_future(fetch(session, "GET", server.url + "/x"))
        await until(lambda: server.count("/x") == 2, "the probe at the server")
        assert breaker.state is HALF_OPEN
        assert await status_of(session, server.url + "/x") == "rejected"
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert await fetch(session, "GET", server.url + "/x") == (200, b"probe", 1)
        assert breaker.state is CLOSED
    assert server.count("/x") == 3


# -- imports ---------------------------------------------------------------------------------------


def _python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_smoothapi_does_not_import_aiohttp() -> None:
    result = _python(
        """
        import sys, smoothapi, smooth_api
        from smoothapi import ResilientConfig, resilient_api
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "multidict", "yarl")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "access",
    [
        "from smoothapi import ResilientMiddleware",
        "smoothapi.ResilientMiddleware",
        "import smoothapi.mounts.aiohttp_middleware",
    ],
)
def test_without_aiohttp_the_error_names_the_extra(access: str) -> None:
    """aiohttp blocked: asking for the middleware raises ModuleNotFoundError naming the
    'aiohttp' extra and how to install it; the rest of smoothapi still imports."""
    result = _python(
        f"""
        import sys
        sys.modules["aiohttp"] = None  # `import aiohttp` now raises ModuleNotFoundError
        import smoothapi
        try:
            {access}
        except ModuleNotFoundError as exc:
            print(type(exc).__name__, exc.name, "|", exc)
        else:
            print("imported")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ModuleNotFoundError aiohttp |"), result.stdout
    assert "'aiohttp' extra" in result.stdout
    assert "pip install" in result.stdout
