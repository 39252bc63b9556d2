"""Hedged requests (``HedgingConfig``) through the async mount points, against a real server.

The server (:class:`TailServer`, below) has a scripted slow tail: a request
it is told to hold answers late - after a while, or once something happened
(a second request arrived, another was answered) - and the others at once.
It counts the connections it accepted and closed, and notices a client that
hangs up on a held request (``abandoned``): a hedge's loser that was really
cancelled, its connection closed.  On the client side the httpx pool is
inspected (``transport.transport._pool.connections``): a cancelled
request's connection is closed, a discarded response's is back in the pool
and idle, never left active.

Async tests run under asyncio and trio (the ``anyio_backend`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
import trio

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    Event,
    HedgeSent,
    HedgingConfig,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    RetryScheduled,
    resilient_api,
)
from smoothapi.config import RetryBudgetConfig
from smoothapi.testing import FakeClock

GUARD = 20.0  # liveness bound: a hung call fails the test after this long
HELD = 30.0  # a held request answers this late: only a cancelled attempt ends it sooner
DELAY = 0.02  # the hedge delay of most tests
LATE = 0.3  # an answer late enough that a hedge would have gone (15 delays)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """A liveness bound: fail if the block takes ``GUARD`` seconds - also when it ends only
    because the bound cancelled it (a cancellation that found nothing left to interrupt)."""
    with anyio.fail_after(GUARD) as scope:
        yield
    assert not scope.cancel_called, f"needed the {GUARD} s guard's cancellation to end"


# -- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """Answer ``status`` after ``after`` seconds, or once ``until()`` holds (at most HELD s).

    The body says which request this was: ``b"200 #2"`` for the second.
    """

    status: int = 200
    after: float = 0.0
    until: Callable[[], bool] | None = None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    number: int  # 1 for the server's first request


class TailServer:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 whose scripted requests answer late.

    ``script(path, *answers)`` queues answers for the next requests to
    ``path``; the others get ``Answer()`` at once.  A held request whose client
    hangs up ends at once and counts as ``abandoned``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Answer]] = {}
        self.seen: list[Seen] = []
        self.accepted = 0
        self.closed = 0
        self.peak = 0  # the most connections open at once
        self.replied = 0
        self.abandoned = 0
        self._stopping = threading.Event()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(answers)

    @property
    def open(self) -> int:
        """Connections accepted and not closed yet."""
        with self._lock:
            return self.accepted - self.closed

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.seen if path is None or s.path == path)

    def arrived(self, n: int) -> Callable[[], bool]:
        """A condition: ``n`` requests have arrived."""
        return lambda: self.count() >= n

    def answered(self, n: int) -> Callable[[], bool]:
        """A condition: ``n`` requests have been answered."""
        return lambda: self.replied >= n

    # -- the handler's side

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.accepted += 1
            self.peak = max(self.peak, self.accepted - self.closed)
        try:
            reader = sock.makefile("rb")
            while not self._stopping.is_set():
                line = reader.readline(65537)
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := reader.readline(65537)) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", ""):
                    while (size := int(reader.readline(65537).split(b";")[0], 16)) > 0:
                        reader.read(size + 2)
                    reader.readline(65537)
                else:
                    reader.read(int(headers.get("content-length") or 0))
                path = target.partition("?")[0]
                with self._lock:
                    number = len(self.seen) + 1
                    self.seen.append(Seen(method, path, headers, number))
                    queue = self._scripts.get(path)
                    answer = queue.popleft() if queue else Answer()
                if not self._hold(sock, answer):
                    with self._lock:
                        self.abandoned += 1
                    return
                body = b"%d #%d" % (answer.status, number)
                sock.sendall(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                    % (answer.status, len(body), body)
                )
                with self._lock:
                    self.replied += 1
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self.closed += 1

    def _hold(self, sock: socket.socket, answer: Answer) -> bool:
        """Wait as ``answer`` says; False if the client hung up (or the server stops) first."""
        until = answer.until
        end = time.monotonic() + (HELD if until is not None else answer.after)
        while until is None or not until():
            left = end - time.monotonic()
            if left <= 0:
                return until is None
            if self._stopping.is_set():
                return False
            readable, _, _ = select.select([sock], [], [], min(left, 0.005))
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        return False  # the client closed the connection
                except OSError:
                    return False
        return True


@pytest.fixture
def tail() -> Iterator[TailServer]:
    server = TailServer()
    try:
        yield server
    finally:
        server.close()


# -- helpers ------------------------------------------------------------------------------------


def config(
    *,
    delay: float = DELAY,
    max_hedges: int = 1,
    events: list[Event] | None = None,
    max_retries: int = 0,
    threshold: int = 100,
    **kwargs: Any,
) -> ResilientConfig:
    kwargs.setdefault("hooks", () if events is None else (events.append,))
    return ResilientConfig(
        hedging=kwargs.pop("hedging", None) or HedgingConfig(delay=delay, max_hedges=max_hedges),
        backoff=BackoffConfig(max_retries=max_retries, base_delay=0.001),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=10_000),
        **kwargs,
    )


@contextlib.asynccontextmanager
async def client(
    cfg: ResilientConfig, **kwargs: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncResilientTransport]]:
    transport = AsyncResilientTransport(cfg, **kwargs)
    async with httpx.AsyncClient(transport=transport, timeout=GUARD) as http:
        yield http, transport


def pool(transport: AsyncResilientTransport) -> list[Any]:
    """The httpx (httpcore) pool's connections."""
    return list(transport.transport._pool.connections)  # type: ignore[attr-defined]


def hedges(events: list[Event]) -> list[HedgeSent]:
    return [e for e in events if isinstance(e, HedgeSent)]


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (the server notices a hang-up a few ms after it)."""
    with guard():
        while not check():  # noqa: ASYNC110 - the counts are the server thread's
            await anyio.sleep(0.005)


# -- a slow tail, hedged ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_slow_get_is_hedged_the_fast_answer_wins_and_the_loser_lets_go(
    tail: TailServer,
) -> None:
    """The first request is held: after the delay a hedge goes, answers at once and is
    returned.  The server saw 2 requests; the held one was abandoned (its connection
    closed by the client), so one connection stays open, idle in the pool."""
    tail.script("/a", Answer(after=HELD))
    events: list[Event] = []
    async with client(config(events=events)) as (http, transport):
        with guard():
            response = await http.get(tail.url + "/a")
        assert (response.status_code, response.text) == (200, "200 #2")
        assert tail.count("/a") == 2
        assert [(e.attempt, e.hedge, e.delay) for e in hedges(events)] == [(1, 1, DELAY)]
        connections = pool(transport)
        assert len(connections) == 1
        assert connections[0].is_idle()
        await eventually(lambda: tail.abandoned == 1)
        await eventually(lambda: tail.open == 1)
        assert (tail.accepted, tail.replied) == (2, 1)


@pytest.mark.anyio
async def test_fifty_hedged_calls_in_a_row_keep_the_connections_bounded(
    tail: TailServer,
) -> None:
    """Each call's first request is held, its hedge wins: after every call the pool holds
    one idle connection, and in the end the server has one open - every loser's
    connection was closed, none leaked (50 abandoned, 51 accepted)."""
    async with client(config(delay=0.005)) as (http, transport):
        for n in range(50):
            tail.script("/a", Answer(after=HELD))
            with guard():
                response = await http.get(tail.url + "/a")
            assert response.text == f"200 #{2 * n + 2}"
            connections = pool(transport)
            assert len(connections) == 1
            assert connections[0].is_idle()
        await eventually(lambda: tail.open == 1)
        assert (tail.count(), tail.accepted, tail.abandoned) == (100, 51, 50)
        # At a time: the winner's, the next hedge's, a loser or two not yet seen closed.
        assert tail.peak <= 10


@pytest.mark.anyio
async def test_a_hedged_call_gives_its_bulkhead_permits_back(tail: TailServer) -> None:
    """With a bulkhead, the hedge takes a permit of its own without waiting; the winner's
    and the loser's are both back once the call returns."""
    tail.script("/a", Answer(after=HELD))
    events: list[Event] = []
    async with client(config(events=events, bulkhead=BulkheadConfig(max_concurrent=2))) as (
        http,
        transport,
    ):
        with guard():
            response = await http.get(tail.url + "/a")
        assert response.text == "200 #2"
        assert len(hedges(events)) == 1
        load = transport._policy(httpx.URL(tail.url)).load
        assert load is not None
        assert load.bulkhead is not None
        assert load.bulkhead.active == 0


@pytest.mark.anyio
async def test_a_full_bulkhead_sends_no_hedge(tail: TailServer) -> None:
    """A hedge never waits for a permit: with one permit, held by the first attempt, no
    hedge goes and the held answer is returned."""
    tail.script("/a", Answer(after=LATE))
    events: list[Event] = []
    async with client(config(events=events, bulkhead=BulkheadConfig(max_concurrent=1))) as (
        http,
        _,
    ):
        with guard():
            response = await http.get(tail.url + "/a")
    assert response.text == "200 #1"
    assert (tail.count(), hedges(events)) == (1, [])


# -- which requests may be hedged ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "body", "sent"),
    [
        pytest.param({}, b"x", 1, id="no-key"),
        pytest.param({"Idempotency-Key": "k-1"}, b"x", 2, id="idempotency-key"),
        pytest.param({"Idempotency-Key": "k-2"}, None, 1, id="key-but-one-shot-body"),
    ],
)
async def test_a_post_is_hedged_only_with_an_idempotency_key_and_a_replayable_body(
    tail: TailServer, headers: dict[str, str], body: bytes | None, sent: int
) -> None:
    """A POST may be sent twice only with an Idempotency-Key (and a body that can be sent
    again): without one it is never hedged, however slow its answer."""
    tail.script("/p", Answer(after=LATE if sent == 1 else HELD))
    events: list[Event] = []

    async def one_shot() -> AsyncIterator[bytes]:
        yield b"x"

    content: Any = body if body is not None else one_shot()
    async with client(config(events=events)) as (http, _):
        with guard():
            response = await http.post(tail.url + "/p", content=content, headers=headers)
    assert response.status_code == 200
    assert tail.count("/p") == sent
    assert len(hedges(events)) == sent - 1
    assert response.text == f"200 #{sent}"


# -- an async def calling httpx -----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_decorated_async_def_is_hedged_and_its_loser_cancelled(
    tail: TailServer,
) -> None:
    """``@resilient_api`` with hedging on an async def: the first call's request is held,
    the hedge's answer wins; the loser is cancelled - its ``finally`` ran after the
    event loop's cancellation reached it - and its request abandoned."""
    tail.script("/d", Answer(after=HELD))
    events: list[Event] = []
    ended: list[str] = []
    cancelled = anyio.get_cancelled_exc_class()

    async with httpx.AsyncClient(timeout=GUARD) as http:

        @resilient_api(config(events=events))
        async def fetch() -> str:
            how = "returned"
            try:
                response = await http.get(tail.url + "/d")
            except cancelled:
                how = "cancelled"
                raise
            finally:
                ended.append(how)
            return response.text

        with guard():
            assert await fetch() == "200 #2"
        assert sorted(ended) == ["cancelled", "returned"]
        assert len(hedges(events)) == 1
        await eventually(lambda: tail.abandoned == 1)


# -- what a hedge may spend ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_hedge_spends_a_retry_budget_token_and_none_goes_without_one(
    tail: TailServer,
) -> None:
    """Each hedge takes a retry budget token: one goes while the budget has them (one token
    spent), none once it is empty (the held answer is returned, 1 request)."""
    events: list[Event] = []
    budget = RetryBudgetConfig(max_tokens=4, token_ratio=0.1)
    async with client(config(events=events, retry_budget=budget)) as (http, transport):
        tokens = transport._policy(httpx.URL(tail.url)).budget
        assert tokens is not None
        assert tokens.tokens == 4
        tail.script("/b", Answer(after=HELD))
        with guard():
            assert (await http.get(tail.url + "/b")).text == "200 #2"
        assert len(hedges(events)) == 1
        assert tokens.tokens == pytest.approx(3 + 0.1)  # one spent, the success earned 0.1

        while tokens.try_spend():  # empty it: at or below half full, nothing is spent
            pass
        left = tokens.tokens
        tail.script("/b", Answer(after=LATE))
        with guard():
            assert (await http.get(tail.url + "/b")).text == "200 #3"
        assert tail.count("/b") == 3
        assert len(hedges(events)) == 1
        assert tokens.tokens == pytest.approx(left + 0.1)


@pytest.mark.anyio
async def test_no_hedge_after_a_counted_failure(tail: TailServer) -> None:
    """A failure counted by the breaker (a 503, no retry) ends its clean CLOSED period: the
    next call, however slow, is not hedged; a success makes it clean again, and the next
    slow call is hedged."""
    events: list[Event] = []
    async with client(config(events=events)) as (http, transport):
        breaker = transport.breaker_for(tail.url)
        tail.script("/c", Answer(503), Answer(after=LATE), Answer(after=HELD))
        with guard():
            assert (await http.get(tail.url + "/c")).status_code == 503
            assert breaker.failure_count == 1
            assert breaker.clean_ticket == 0
            assert (await http.get(tail.url + "/c")).text == "200 #2"
            assert hedges(events) == []
            assert breaker.clean_ticket != 0  # the success reset the count
            assert (await http.get(tail.url + "/c")).text == "200 #4"
        assert len(hedges(events)) == 1


@pytest.mark.anyio
async def test_no_hedge_for_the_half_open_probe_nor_while_open(tail: TailServer) -> None:
    """OPEN: the call is rejected, no request at all.  After the cooldown, the probe is sent
    alone, however slow (a hedge would be a second probe); its success closes the breaker."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1000), name="hedge-probe", clock=clock
    )
    events: list[Event] = []
    async with client(config(events=events), breaker=breaker) as (http, _):
        breaker.force_open()
        with pytest.raises(CircuitOpenError):
            await http.get(tail.url + "/h")
        assert tail.count() == 0
        clock.advance(2.0)
        tail.script("/h", Answer(after=LATE))
        with guard():
            response = await http.get(tail.url + "/h")
        assert response.text == "200 #1"
        assert (tail.count(), hedges(events)) == (1, [])
        assert breaker.state is CircuitState.CLOSED


@pytest.mark.anyio
async def test_max_hedges_bounds_the_requests_and_each_hedge_is_announced(
    tail: TailServer,
) -> None:
    """max_hedges=2: two hedges go, a delay apart, each announced (HedgeSent: attempt 1,
    hedge 1 then 2, the delay); the third request answers.  max_hedges=1: one hedge, and
    the call waits for the first of the two to answer - never a third request."""
    events: list[Event] = []
    async with client(config(events=events, max_hedges=2)) as (http, _):
        tail.script("/m", Answer(after=HELD), Answer(after=HELD))
        with guard():
            assert (await http.get(tail.url + "/m")).text == "200 #3"
    assert [(e.attempt, e.hedge, e.delay) for e in hedges(events)] == [
        (1, 1, DELAY),
        (1, 2, DELAY),
    ]
    await eventually(lambda: tail.abandoned == 2)

    events.clear()
    async with client(config(events=events, max_hedges=1)) as (http, _):
        tail.script("/one", Answer(after=HELD), Answer(after=LATE))
        with guard():
            assert (await http.get(tail.url + "/one")).text == "200 #5"
    assert tail.count("/one") == 2
    assert len(hedges(events)) == 1


@pytest.mark.anyio
async def test_the_percentile_mode_hedges_after_the_recent_percentile(tail: TailServer) -> None:
    """HedgingConfig(delay=5, percentile=50): the first 20 fast calls are hedged only after
    5 s (none is); from then on the delay is their median, so a held request is hedged
    long before 5 s - its HedgeSent says the delay used."""
    events: list[Event] = []
    hedging = HedgingConfig(delay=5.0, percentile=50.0, min_delay=0.001)
    async with client(config(events=events, hedging=hedging)) as (http, transport):
        for _ in range(20):
            await http.get(tail.url + "/q")
        tracker = transport._policy(httpx.URL(tail.url)).hedger
        assert tracker is not None
        assert len(tracker.samples) == 20
        assert 0.001 <= tracker.current < 5.0
        tail.script("/q", Answer(after=HELD))
        with guard():
            assert (await http.get(tail.url + "/q")).text == "200 #22"
    (sent,) = hedges(events)
    assert sent.delay == tracker.current or len(tracker.samples) == 21
    assert sent.delay < 5.0


# -- failures while a hedge is pending ----------------------------------------------------------


@pytest.mark.anyio
async def test_the_first_fails_fast_while_the_hedge_is_pending_and_the_hedge_wins(
    tail: TailServer,
) -> None:
    """The first request answers 503 once the hedge has arrived; the hedge answers after
    that, 200: the call waits for it and returns it.  The breaker counts nothing, nothing
    is retried, and the 503's connection went back to the pool (two idle connections)."""
    events: list[Event] = []
    tail.script("/f", Answer(503, until=tail.arrived(2)), Answer(until=tail.answered(1)))
    async with client(config(events=events, max_retries=3)) as (http, transport):
        with guard():
            response = await http.get(tail.url + "/f")
        assert response.text == "200 #2"
        assert transport.breaker_for(tail.url).failure_count == 0
        assert [e for e in events if isinstance(e, RetryScheduled)] == []
        assert tail.count() == 2
        connections = pool(transport)
        assert len(connections) == 2
        assert all(c.is_idle() for c in connections)


@pytest.mark.anyio
async def test_both_fail_one_failure_is_counted_and_the_retry_loop_goes_on(
    tail: TailServer,
) -> None:
    """Both the first request and its hedge answer 503: the attempt is one failure - one
    RetryScheduled, the breaker counting 1 - and the retry (not hedged: the breaker is no
    longer clean) answers 200."""
    events: list[Event] = []
    failures: list[int] = []
    breakers: list[CircuitBreaker] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, RetryScheduled):  # the failed attempt has been recorded
            failures.append(breakers[0].failure_count)

    async with client(config(max_retries=2, hooks=(on_event,))) as (http, transport):
        breaker = transport.breaker_for(tail.url)
        breakers.append(breaker)
        tail.script(
            "/f",
            Answer(503, until=tail.arrived(2)),
            Answer(503, until=tail.answered(1)),
            Answer(after=LATE),
        )
        with guard():
            response = await http.get(tail.url + "/f")
        assert response.text == "200 #3"
        assert failures == [1]
        assert len(hedges(events)) == 1
        assert [e.attempt for e in events if isinstance(e, RetryScheduled)] == [1]
        assert tail.count() == 3
        assert breaker.failure_count == 0
        assert all(c.is_idle() for c in pool(transport))


# -- the caller cancels -------------------------------------------------------------------------


def _bulkhead_active(transport: AsyncResilientTransport, url: str) -> int:
    load = transport._policy(httpx.URL(url)).load
    assert load is not None
    assert load.bulkhead is not None
    return load.bulkhead.active


CANCEL_CONFIG = {"max_hedges": 2, "bulkhead": BulkheadConfig(max_concurrent=5)}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_an_asyncio_caller_cancelled_while_hedges_run_leaves_nothing_behind(
    tail: TailServer,
) -> None:
    """The call's task is cancelled while its first request and two hedges are held: all
    three are cancelled (abandoned at the server, no connection left in the pool), no task
    is left behind, every bulkhead permit is back."""
    tail.script("/x", Answer(after=HELD), Answer(after=HELD), Answer(after=HELD))
    async with client(config(**CANCEL_CONFIG)) as (http, transport):  # type: ignore[arg-type]
        baseline = asyncio.all_tasks()
        task = asyncio.ensure_future(http.get(tail.url + "/x"))
        await eventually(tail.arrived(3))
        assert _bulkhead_active(transport, tail.url) == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == baseline
        assert _bulkhead_active(transport, tail.url) == 0
        assert pool(transport) == []
        await eventually(lambda: tail.abandoned == 3)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_a_trio_caller_cancelled_while_hedges_run_leaves_nothing_behind(
    tail: TailServer,
) -> None:
    """The call's cancel scope is cancelled while its first request and two hedges are held:
    the call raises trio's own Cancelled (not an exception group), all three requests are
    cancelled, every bulkhead permit is back."""
    tail.script("/x", Answer(after=HELD), Answer(after=HELD), Answer(after=HELD))
    raised: list[BaseException] = []
    async with client(config(**CANCEL_CONFIG)) as (http, transport):  # type: ignore[arg-type]
        with guard():
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def call() -> None:
                    with scope:
                        try:
                            await http.get(tail.url + "/x")
                        except BaseException as exc:
                            raised.append(exc)
                            raise

                nursery.start_soon(call)
                await eventually(tail.arrived(3))
                assert _bulkhead_active(transport, tail.url) == 3
                scope.cancel()
        assert [type(e) for e in raised] == [trio.Cancelled]
        assert _bulkhead_active(transport, tail.url) == 0
        assert pool(transport) == []
        await eventually(lambda: tail.abandoned == 3)


@pytest.mark.anyio
async def test_a_failure_in_hand_is_let_go_when_the_caller_cancels(tail: TailServer) -> None:
    """The first request answered 503 while its hedge is held; then the caller cancels.
    The 503 is not returned, so it is let go like a retried response: its connection is
    back in the pool, idle - not left active (leaked) - and the hedge's is closed."""
    tail.script("/y", Answer(503, until=tail.arrived(2)), Answer(after=HELD))
    async with client(config()) as (http, transport):
        with guard():
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:

                    async def call() -> None:
                        await http.get(tail.url + "/y")

                    group.start_soon(call)
                    await eventually(tail.answered(1))
                    await anyio.sleep(0.05)  # the race takes the 503 in hand
                    scope.cancel()
        connections = pool(transport)
        assert len(connections) == 1
        assert connections[0].is_idle()
        await eventually(lambda: tail.abandoned == 1)
        await eventually(lambda: tail.open == 1)


# -- mount points that cannot hedge -------------------------------------------------------------


def test_the_sync_mount_points_refuse_hedging_at_construction() -> None:
    """A blocking attempt cannot be cancelled once a hedge wins: ResilientTransport,
    ResilientAdapter and a decorated plain def refuse a hedging config with a ConfigError;
    the async ones take it."""
    cfg = config()
    with pytest.raises(ConfigError, match="cannot hedge"):
        ResilientTransport(cfg)
    with pytest.raises(ConfigError, match="cannot hedge"):
        ResilientAdapter(cfg)
    with pytest.raises(ConfigError, match="hedging needs an async def"):

        @resilient_api(cfg)
        def plain() -> None: ...

    AsyncResilientTransport(cfg)

    @resilient_api(cfg)
    async def coroutine() -> None: ...
