"""Load control against real servers on 127.0.0.1: rate limit, bulkhead, adaptive throttling.

Every mount point - ``ResilientTransport`` (httpx), ``AsyncResilientTransport``,
``ResilientAdapter`` (requests) and ``@resilient_api`` around ``requests.get``
with ``raise_for_status`` - talks to a :class:`~quotaserver.LoadServer`,
which counts what reaches it: the 429s a quota server had to send, the
requests in flight at once, the requests that got through at all.  Nothing
asserts a duration; waits for another thread or task are liveness bounds.

The quota tests use one-second windows (the shortest the headers can say:
``t=`` and ``Retry-After`` are whole seconds), so each pause costs about a
second; the bulkhead tests hold their requests behind a gate until every
caller is in flight, queued or shed, which makes the counts exact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
import requests
from quotaserver import STYLES, Answer, Failing, Fixed, LoadServer, Quota

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    BulkheadConfig,
    CircuitBreakerConfig,
    LoadShedError,
    RateLimitConfig,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    ThrottleConfig,
    resilient_api,
)
from smoothapi.engine import Policy
from smoothapi.load import BULKHEAD, RATE_LIMIT, THROTTLE, Bulkhead, LoadControl
from smoothapi.testing import FakeClock, set_testing

NEVER_OPENS = CircuitBreakerConfig(failure_threshold=10**9)
NO_RETRIES = BackoffConfig(max_retries=0)
FALLBACK_STATUS = 299  # what every client's fallback answers with

# -- the four mount points behind one interface ----------------------------------------------

CLIENTS = ["httpx", "httpx-async", "requests-adapter", "decorator"]
SYNC_TRANSPORTS = ["httpx", "requests-adapter"]


def _fallback_response(request: requests.PreparedRequest | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = FALLBACK_STATUS
    response.request = request  # type: ignore[assignment]
    return response


class Client:
    """One mount point of ``kind`` on ``url``; ``get(path)`` answers a status or the error.

    A 429 the decorated function raised (``raise_for_status``) is its status,
    as the transports' 429 response is; any other exception is returned as is.
    """

    def __init__(
        self, kind: str, config: ResilientConfig, url: str, *, fallback: bool = False
    ) -> None:
        self.kind, self.url = kind, url
        self._loop: asyncio.AbstractEventLoop | None = None
        if kind == "httpx":
            answer = (lambda r, e: httpx.Response(FALLBACK_STATUS, request=r)) if fallback else None
            self.transport: Any = ResilientTransport(config, fallback=answer)
            self.client: Any = httpx.Client(transport=self.transport, timeout=30)
        elif kind == "httpx-async":
            answer = (lambda r, e: httpx.Response(FALLBACK_STATUS, request=r)) if fallback else None
            self.transport = AsyncResilientTransport(
                config,
                fallback=answer,
                limits=httpx.Limits(max_connections=2000, max_keepalive_connections=2000),
            )
            self.client = httpx.AsyncClient(transport=self.transport, timeout=30)
            self._loop = asyncio.new_event_loop()
        elif kind == "requests-adapter":
            self.transport = ResilientAdapter(
                config,
                fallback=(lambda r, e: _fallback_response(r)) if fallback else None,
                pool_maxsize=64,
            )
            self.client = requests.Session()
            self.client.mount("http://", self.transport)
        else:
            assert kind == "decorator"
            if fallback:
                config = dataclasses.replace(config, fallback=lambda error: _fallback_response())

            @resilient_api(config, name=f"load-{uuid.uuid4().hex[:8]}")
            def get(url: str) -> requests.Response:
                response = requests.get(url, timeout=30)
                response.raise_for_status()
                return response

            self.client = get

    def get(self, path: str) -> int | BaseException:
        try:
            if self.kind == "httpx-async":
                assert self._loop is not None
                response = self._loop.run_until_complete(self.client.get(self.url + path))
            elif self.kind == "decorator":
                response = self.client(self.url + path)
            else:
                response = self.client.get(self.url + path)
        except requests.HTTPError as error:
            response = error.response  # raise_for_status: the response is the answer
        except Exception as error:
            return error
        return int(response.status_code)

    def policy(self) -> Policy:
        if self.kind in ("httpx", "httpx-async"):
            policy: Policy = self.transport._policy(httpx.URL(self.url))
        elif self.kind == "requests-adapter":
            policy = self.transport._policy(self.url + "/")
        else:  # the decorator keeps its policy in the wrapper's closure
            policy = inspect.getclosurevars(self.client).nonlocals["policy"]
        return policy

    def load(self) -> LoadControl:
        load = self.policy().load
        assert load is not None
        return load

    def close(self) -> None:
        if self.kind == "httpx-async":
            assert self._loop is not None
            self._loop.run_until_complete(self.client.aclose())
            self._loop.close()
        elif self.kind != "decorator":
            self.client.close()


def _config(**stages: Any) -> ResilientConfig:
    """No retries and a breaker that never opens, unless told otherwise: counts stay plain."""
    options: dict[str, Any] = {"backoff": NO_RETRIES, "circuit_breaker": NEVER_OPENS}
    options.update(stages)
    return ResilientConfig(**options)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """The clients a test makes (appended to the list), closed afterwards."""
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _client(made: list[Client], kind: str, config: ResilientConfig, url: str, **kw: Any) -> Client:
    client = Client(kind, config, url, **kw)
    made.append(client)
    return client


def _statuses(client: Client, path: str, calls: int) -> list[int | BaseException]:
    """``calls`` GETs of ``path`` one after the other: each status (or error)."""
    return [client.get(path) for _ in range(calls)]


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Liveness only: wait (up to 20 s) for other threads to get somewhere."""
    pause = threading.Event()
    for _ in range(4000):
        if condition():
            return
        pause.wait(0.005)
    raise AssertionError(f"never happened: {what}")


# -- following the server's rate limit --------------------------------------------------------

QUOTA = 5  # requests per one-second window, per path
# Well above the quota: on its own the bucket would let every call through at once.
FAST = RateLimitConfig(rate=50.0, burst=50.0, max_wait=5.0, follow_server=True)
BLIND = RateLimitConfig(rate=50.0, burst=50.0, max_wait=5.0, follow_server=False)
# What each style may cost a client that follows the server, calling one call after the
# other: the quota's own headers say when none is left, so no 429 at all; Retry-After alone
# speaks only on a 429, so the first request over the quota gets one.
ALLOWED_429 = {"ietf": 0, "x-ratelimit": 0, "retry-after": 1}
# Callers sharing one client add the requests already in flight when the server says "none
# left": up to one per other caller (measured: 1-2 with 3 threads, every style).
THREADS_SHARING = 3


def _in_parallel(work: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run each of ``work`` in a thread of its own; their results (or errors) by name."""
    done: dict[str, Any] = {}

    def run(name: str, job: Callable[[], Any]) -> None:
        try:
            done[name] = job()
        except BaseException as error:  # reported by the test, not lost in the thread
            done[name] = error

    threads = [threading.Thread(target=run, args=item) for item in work.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)  # liveness
    assert set(done) == set(work), f"still running: {set(work) - set(done)}"
    return done


def _shared(client: Client, path: str, threads: int, calls: int) -> list[int | BaseException]:
    """``threads`` threads making ``calls`` calls each through ``client``: every status."""
    ran = _in_parallel(
        {str(n): functools.partial(_statuses, client, path, calls) for n in range(threads)}
    )
    return [status for statuses in ran.values() for status in statuses]


def _quota_run(
    clients: list[Client], url: str, rate: RateLimitConfig, calls: int
) -> dict[str, list[int | BaseException]]:
    """Every mount point making ``calls`` calls, plus ``THREADS_SHARING`` threads sharing
    one ResilientTransport (``calls`` in all), side by side: a path (a quota) each."""
    work: dict[str, Callable[[], Any]] = {}
    for kind in CLIENTS:
        client = _client(clients, kind, _config(rate_limit=rate), url)
        work[kind] = functools.partial(_statuses, client, f"/{kind}", calls)
    shared = _client(clients, "httpx", _config(rate_limit=rate), url)
    each = -(-calls // THREADS_SHARING)
    work["shared"] = functools.partial(_shared, shared, "/shared", THREADS_SHARING, each)
    return _in_parallel(work)


@pytest.mark.parametrize("style", STYLES)
def test_following_the_server_stays_within_its_quota(style: str, clients: list[Client]) -> None:
    """follow_server=True keeps within the quota (a documented few 429s); False runs over it.

    The four mount points (and three threads sharing a transport) run side by
    side, each on a path of its own, so a quota of its own: the one-second
    pause is paid once per style.
    """
    with LoadServer(Quota(limit=QUOTA, window=1.0, style=style)) as server:
        # Three windows' worth at once: whatever windows they straddle (at most two,
        # unless 15 loopback calls take a second), at least 5 are over the quota.
        ran = _quota_run(clients, server.url + "/blind", BLIND, 3 * QUOTA)
        for name, statuses in ran.items():
            assert set(statuses) <= {200, 429}, (name, statuses)
            assert server.statuses(f"/blind/{name}")[429] >= QUOTA, name

        # Over the quota by two calls (three threads: by four): one pause for the reset.
        ran = _quota_run(clients, server.url + "/follow", FAST, QUOTA + 2)
        for name, statuses in ran.items():
            allowed = ALLOWED_429[style] + (THREADS_SHARING - 1 if name == "shared" else 0)
            sent = server.statuses(f"/follow/{name}")
            assert set(statuses) <= {200, 429}, (name, statuses)
            assert sent[429] <= allowed, (name, statuses, sent)
            assert sent[200] >= len(statuses) - allowed, (name, statuses, sent)
        assert server.errors == []


# -- hostile headers -----------------------------------------------------------------------------

CAP = 0.25  # ResilientConfig.retry_after_cap: the longest single wait a server can cause
HUGE = "9" * 40
TEN_KB = "9" * 10_240
FAR_EPOCH = "99999999999"  # year 5138: seconds since the epoch, far beyond the cap

# (status, headers, pauses): ``pauses`` - the value is read and cut to the cap (the bucket
# pauses exactly the cap); otherwise it is garbage and ignored.
HOSTILE = [
    pytest.param(429, {"Retry-After": "-1"}, False, id="retry-after-negative"),
    pytest.param(429, {"Retry-After": HUGE}, True, id="retry-after-huge"),
    pytest.param(429, {"Retry-After": "NaN"}, False, id="retry-after-nan"),
    pytest.param(429, {"Retry-After": "inf"}, False, id="retry-after-inf"),
    pytest.param(429, {"Retry-After": "soon, maybe"}, False, id="retry-after-garbage"),
    pytest.param(429, {"Retry-After": TEN_KB}, False, id="retry-after-10kb"),
    pytest.param(
        503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, True, id="retry-after-year-9999"
    ),
    pytest.param(200, {"RateLimit": '"default";r=-1;t=5'}, False, id="ietf-negative-remaining"),
    pytest.param(200, {"RateLimit": f'"default";r=0;t={HUGE}'}, False, id="ietf-huge-reset"),
    pytest.param(200, {"RateLimit": '"default";r=0;t=99999999'}, True, id="ietf-reset-beyond-cap"),
    pytest.param(200, {"RateLimit": '"default";r=0;t=nan'}, False, id="ietf-nan"),
    pytest.param(200, {"RateLimit": "r=0, t=garbage;;;"}, False, id="ietf-garbage"),
    pytest.param(200, {"RateLimit": f'"default";r=0;t={TEN_KB}'}, False, id="ietf-10kb"),
    pytest.param(
        200,
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": FAR_EPOCH},
        True,
        id="x-epoch-far-in-the-future",
    ),
    pytest.param(
        200,
        {"X-RateLimit-Remaining": "-3", "X-RateLimit-Reset": "5"},
        False,
        id="x-negative-remaining",
    ),
    pytest.param(
        200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "NaN"}, False, id="x-nan-reset"
    ),
    pytest.param(
        200,
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1e309"},
        False,
        id="x-overflowing-reset",
    ),
    pytest.param(
        200,
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "-1700000000"},
        False,
        id="x-negative",
    ),
    pytest.param(
        200, {"X-RateLimit-Remaining": TEN_KB, "X-RateLimit-Reset": TEN_KB}, False, id="x-10kb"
    ),
    pytest.param(
        429,
        {
            "Retry-After": HUGE,
            "RateLimit": f'"default";r=0;t={HUGE}',
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": FAR_EPOCH,
        },
        True,
        id="all-at-once",
    ),
]


class Sleeps(FakeClock):
    """The testing clock: every sleep the library asks for is recorded, none is slept."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def advance(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().advance(seconds)


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(("status", "headers", "pauses"), HOSTILE)
def test_hostile_headers_never_wait_past_the_cap(
    status: int, headers: dict[str, str], pauses: bool, kind: str, clients: list[Client]
) -> None:
    """Whatever the server sends, no wait is longer than the cap and no call is refused.

    The sleeps are recorded, not slept (``smoothapi.testing``); a one-retry
    backoff covers the engine's own ``Retry-After`` handling too.  ``max_wait``
    is far above the cap, so a pause the cap failed to bound would be waited
    (and recorded), not shed.
    """
    config = _config(
        backoff=BackoffConfig(max_retries=1, base_delay=0.01, max_delay=0.05),
        retry_after_cap=CAP,
        rate_limit=RateLimitConfig(rate=1000.0, max_wait=3600.0, follow_server=True),
    )
    clock = Sleeps()
    with LoadServer(Fixed(Answer(status, headers))) as server, set_testing(clock=clock):
        client = _client(clients, kind, config, server.url)
        results = [client.get("/hostile") for _ in range(4)]
        bucket = client.load().bucket
        assert bucket is not None
        assert bucket.next_token(clock()) <= CAP
        if bucket.allow_until is not None:
            assert bucket.allow_until - clock() <= CAP
    assert results == [status] * 4, results
    assert max(clock.sleeps, default=0.0) <= CAP + 1e-9, clock.sleeps
    if pauses:
        assert max(clock.sleeps) == pytest.approx(CAP), "the bucket paused the cap"
    elif status == 200:
        assert clock.sleeps == [], "a value that is garbage is ignored"
    assert server.count() >= 4


@pytest.mark.parametrize("kind", ["httpx", "httpx-async"])
def test_a_far_future_reset_pauses_no_longer_than_the_cap_in_real_time(
    kind: str, clients: list[Client]
) -> None:
    """The same on the real clock: an epoch years ahead costs each call at most the cap."""
    config = _config(
        retry_after_cap=CAP,
        rate_limit=RateLimitConfig(rate=1000.0, max_wait=3600.0, follow_server=True),
    )
    answer = Answer(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": FAR_EPOCH})
    with LoadServer(Fixed(answer)) as server:
        client = _client(clients, kind, config, server.url)
        done: list[int | BaseException] = []
        worker = threading.Thread(target=lambda: done.extend(client.get("/") for _ in range(3)))
        worker.start()
        worker.join(20)  # liveness: three calls, each paused at most CAP
        assert not worker.is_alive(), "a call waited for the far-future reset"
    assert done == [200, 200, 200]


# -- a deadline nearer than the next token ------------------------------------------------------

SLOW_BUCKET = RateLimitConfig(rate=1.0, burst=1.0, max_wait=30.0)


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_deadline_nearer_than_the_token_sheds_at_once(kind: str, clients: list[Client]) -> None:
    with LoadServer() as server:
        config = _config(deadline=0.5, rate_limit=SLOW_BUCKET)
        client = _client(clients, kind, config, server.url)
        assert client.get("/") == 200  # the bucket's one token
        shed = client.get("/")
        assert isinstance(shed, LoadShedError), shed
        assert shed.stage == RATE_LIMIT
        assert shed.retry_after > 0.5, "it says when the next token comes"
        if kind in ("httpx", "httpx-async"):
            assert isinstance(shed, httpx.TransportError), "an httpx error as well"
        elif kind == "requests-adapter":
            assert isinstance(shed, requests.exceptions.ConnectionError), "a requests error too"
        assert server.count() == 1, "the shed call sent nothing"


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_call_shed_by_the_rate_limit_gets_the_fallback(kind: str, clients: list[Client]) -> None:
    with LoadServer() as server:
        config = _config(deadline=0.5, rate_limit=SLOW_BUCKET)
        client = _client(clients, kind, config, server.url, fallback=True)
        assert client.get("/") == 200
        assert client.get("/") == FALLBACK_STATUS
        assert server.count() == 1


# -- the bulkhead ------------------------------------------------------------------------------

THREADS = 32
MAX_CONCURRENT = 4


def _in_threads(count: int, call: Callable[[], int | BaseException]) -> tuple[list[Any], list[Any]]:
    """Start ``count`` threads making ``call``; their results list and the threads."""
    results: list[int | BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def run() -> None:
        start.wait(20)
        result = call()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def _bulkhead(client: Client) -> Bulkhead:
    bulkhead = client.load().bulkhead
    assert bulkhead is not None
    return bulkhead


@pytest.mark.parametrize("kind", SYNC_TRANSPORTS)
def test_bulkhead_threads_never_put_more_than_max_concurrent_in_flight(
    kind: str, clients: list[Client]
) -> None:
    """32 threads, 4 permits: 4 at the server, 28 queued; then the handoffs, 50 ms each."""
    config = _config(bulkhead=BulkheadConfig(max_concurrent=MAX_CONCURRENT, max_queue=THREADS))
    with LoadServer(hold=0.05, gated=True) as server:
        client = _client(clients, kind, config, server.url)
        bulkhead = _bulkhead(client)
        results, threads = _in_threads(THREADS, lambda: client.get("/held"))
        _wait_for(
            lambda: server.in_flight + len(bulkhead.queue) == THREADS,
            "every thread at the server or in the queue",
        )
        assert server.in_flight == MAX_CONCURRENT
        server.release()
        for thread in threads:
            thread.join(20)
        assert results == [200] * THREADS
        assert server.peak == MAX_CONCURRENT
        assert server.count() == THREADS
        assert (bulkhead.active, len(bulkhead.queue)) == (0, 0)


@pytest.mark.parametrize("kind", SYNC_TRANSPORTS)
def test_bulkhead_sheds_at_once_what_the_queue_cannot_hold(
    kind: str, clients: list[Client]
) -> None:
    """4 permits and a queue of 4: of 32 threads 8 are served, 24 shed without waiting."""
    queue = 4
    config = _config(
        bulkhead=BulkheadConfig(max_concurrent=MAX_CONCURRENT, max_queue=queue, max_wait=60.0)
    )
    with LoadServer(gated=True) as server:
        client = _client(clients, kind, config, server.url)
        results, threads = _in_threads(THREADS, lambda: client.get("/held"))
        over = THREADS - MAX_CONCURRENT - queue
        # Shed at once: they come back while the gate still holds every admitted request.
        _wait_for(
            lambda: len(results) >= over and server.in_flight == MAX_CONCURRENT,
            f"{over} calls shed, {MAX_CONCURRENT} at the server",
        )
        assert server.count() == MAX_CONCURRENT
        server.release()
        for thread in threads:
            thread.join(20)
    shed = [r for r in results if isinstance(r, LoadShedError)]
    assert len(shed) == over, results
    assert all(error.stage == BULKHEAD for error in shed)
    client_error = httpx.TransportError if kind == "httpx" else requests.ConnectionError
    assert all(isinstance(error, client_error) for error in shed)
    assert results.count(200) == MAX_CONCURRENT + queue
    assert server.count() == MAX_CONCURRENT + queue
    assert server.peak == MAX_CONCURRENT


COROUTINES = 1000
ASYNC_MAX = 20


async def _until(condition: Callable[[], bool]) -> None:
    """Liveness only: let the event loop run (up to 20 s) until ``condition`` holds."""
    for _ in range(4000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Leave no task behind, whatever happened (a failed check, a hang)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_bulkhead_1000_coroutines_never_exceed_max_concurrent(clients: list[Client]) -> None:
    """1,000 coroutines through one AsyncResilientTransport, whose pool would take 2,000
    connections: 20 at the server, 980 queued, then served 20 at a time (20 ms each)."""
    config = _config(
        bulkhead=BulkheadConfig(max_concurrent=ASYNC_MAX, max_queue=COROUTINES, max_wait=60.0)
    )
    with LoadServer(hold=0.02, gated=True) as server:
        client = _client(clients, "httpx-async", config, server.url)
        bulkhead = _bulkhead(client)

        async def main() -> tuple[tuple[int, int], list[Any]]:
            async def one() -> int:
                response = await client.client.get(server.url + "/many")
                return int(response.status_code)

            tasks = [asyncio.ensure_future(one()) for _ in range(COROUTINES)]
            try:
                await _until(lambda: server.in_flight + len(bulkhead.queue) == COROUTINES)
                snapshot = (server.in_flight, len(bulkhead.queue))
                server.release()
                return snapshot, list(await asyncio.wait_for(asyncio.gather(*tasks), 60))
            finally:
                await _cancel(tasks)

        assert client._loop is not None
        snapshot, statuses = client._loop.run_until_complete(main())
        assert snapshot == (ASYNC_MAX, COROUTINES - ASYNC_MAX), "(at the server, queued)"
        assert statuses == [200] * COROUTINES
        assert server.peak == ASYNC_MAX
        assert server.count() == COROUTINES
        assert (bulkhead.active, len(bulkhead.queue)) == (0, 0)


def test_bulkhead_cancelled_asyncio_waiter_leaves_the_queue(clients: list[Client]) -> None:
    config = _config(bulkhead=BulkheadConfig(max_concurrent=1, max_queue=10, max_wait=60.0))
    with LoadServer(gated=True) as server:
        client = _client(clients, "httpx-async", config, server.url)
        bulkhead = _bulkhead(client)

        async def main() -> tuple[int, list[Any]]:
            async def one() -> int:
                response = await client.client.get(server.url + "/q")
                return int(response.status_code)

            first = asyncio.ensure_future(one())
            tasks = [first]
            try:
                await _until(lambda: server.in_flight == 1)
                tasks += [asyncio.ensure_future(one()), asyncio.ensure_future(one())]
                await _until(lambda: len(bulkhead.queue) == 2)
                tasks[1].cancel()
                await asyncio.gather(tasks[1], return_exceptions=True)
                queued = len(bulkhead.queue)
                server.release()
                return queued, await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                await _cancel(tasks)

        assert client._loop is not None
        queued, results = client._loop.run_until_complete(main())
        assert queued == 1, "the cancelled waiter left the queue"
        assert results[0] == results[2] == 200
        assert isinstance(results[1], asyncio.CancelledError)
        assert server.count() == 2, "the cancelled call never reached the server"
        assert (bulkhead.active, len(bulkhead.queue)) == (0, 0)


# -- adaptive throttling ------------------------------------------------------------------------

CALLS = 150
ADAPTIVE = ThrottleConfig(k=2.0, window_ms=60_000)


@pytest.mark.parametrize("kind", CLIENTS)
def test_throttling_sheds_locally_what_a_partly_overloaded_server_would_fail(
    kind: str, clients: list[Client]
) -> None:
    """7 of every 10 requests fail: with the throttle fewer reach the server, the rest shed."""
    with LoadServer(Failing(failures=7, out_of=10, status=503)) as server:
        plain = _client(clients, kind, _config(), server.url)
        unthrottled = _statuses(plain, "/plain", CALLS)
        assert server.count("/plain") == CALLS
        assert not any(isinstance(r, LoadShedError) for r in unthrottled)

        throttled = _client(clients, kind, _config(throttle=ADAPTIVE), server.url)
        results = _statuses(throttled, "/throttled", CALLS)
    shed = [r for r in results if isinstance(r, LoadShedError)]
    reached = server.count("/throttled")
    assert reached + len(shed) == CALLS, "each call either reached the server or was shed"
    assert reached <= CALLS // 2, f"only {len(shed)} of {CALLS} calls shed"
    assert shed, "the throttle shed nothing"
    assert all(error.stage == THROTTLE for error in shed)


@pytest.mark.parametrize("kind", CLIENTS)
def test_throttling_a_healthy_server_sheds_nothing(kind: str, clients: list[Client]) -> None:
    with LoadServer() as server:
        client = _client(clients, kind, _config(throttle=ADAPTIVE), server.url)
        results = _statuses(client, "/", CALLS)
        assert results == [200] * CALLS
        assert server.count() == CALLS


# -- no stage configured: the happy path as it was --------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_unconfigured_stage_leaves_the_happy_path_untouched(
    kind: str, clients: list[Client]
) -> None:
    with LoadServer() as server:
        default = _client(clients, kind, ResilientConfig(), server.url)
        assert default.get("/") == 200
        policy = default.policy()
        assert policy.load is None
        assert policy.direct is True
        staged = _client(clients, kind, _config(throttle=ADAPTIVE), server.url)
        assert staged.get("/") == 200
        assert staged.policy().load is not None
        assert staged.policy().direct is False
