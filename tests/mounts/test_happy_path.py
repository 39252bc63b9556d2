"""The one happy path: every mount point closes a clean first attempt through ``_happy.settle``.

Five mount points (the decorator's sync and async wrappers, the requests adapter,
the sync and async httpx transports) read the breaker's ``clean_ticket``, make the
first attempt, and settle it with the same function; these tests hold that wiring
and what the rule does (a failure reported meanwhile is reset by the success made
under the earlier ticket; the retry budget earns a deposit), against a real local
HTTP server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer
from requests.adapters import HTTPAdapter

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    RetryBudgetConfig,
    resilient_api,
)
from smoothapi.engine import FAILURE, Outcome, Policy
from smoothapi.mounts import _happy, decorator, httpx_transport, requests_adapter

MOUNTS = ("decorator", "decorator-async", "requests", "httpx", "httpx-async")

CONFIG = ResilientConfig(
    backoff=BackoffConfig(max_retries=2),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
    retry_budget=RetryBudgetConfig(max_tokens=10, token_ratio=0.5),
)


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The tickets every mount point settles, in order (the real settle still runs)."""
    tickets: list[int] = []

    def recording(policy: Any, ticket: int, began: float | None = None) -> None:
        tickets.append(ticket)
        _happy.settle(policy, ticket, began)

    for module in (decorator, httpx_transport, requests_adapter):
        monkeypatch.setattr(module, "settle", recording)
    return tickets


@pytest.fixture
def closing() -> Iterator[list[Callable[[], object]]]:
    """Close what a test opened (clients, sessions), after it."""
    closers: list[Callable[[], object]] = []
    yield closers
    for close in closers:
        close()


def _get_through(
    kind: str,
    url: str,
    breaker: CircuitBreaker,
    meanwhile: Callable[[], object],
    closing: list[Callable[[], object]],
) -> Callable[[], str]:
    """A zero-argument GET of ``url`` through mount point ``kind``, sharing ``breaker``;
    ``meanwhile()`` runs inside each attempt, before the request is sent."""
    if kind in ("decorator", "decorator-async"):
        if kind == "decorator":

            @resilient_api(CONFIG, breaker=breaker)
            def fetch() -> str:
                meanwhile()
                return httpx.get(url).text

            return fetch

        @resilient_api(CONFIG, breaker=breaker)
        async def afetch() -> str:
            meanwhile()
            async with httpx.AsyncClient() as client:
                return (await client.get(url)).text

        return lambda: asyncio.run(afetch())
    if kind == "requests":
        session = requests.Session()
        closing.append(session.close)
        session.mount("http://", ResilientAdapter(CONFIG, breaker=breaker))
        return lambda: session.get(url).text

    class Meanwhile(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.HTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            meanwhile()
            return self.inner.handle_request(request)

        def close(self) -> None:
            self.inner.close()

    class AsyncMeanwhile(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            meanwhile()
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    if kind == "httpx":
        client = httpx.Client(transport=ResilientTransport(CONFIG, Meanwhile(), breaker=breaker))
        closing.append(client.close)
        return lambda: client.get(url).text

    async def aget() -> str:
        transport = AsyncResilientTransport(CONFIG, AsyncMeanwhile(), breaker=breaker)
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.get(url)).text

    return lambda: asyncio.run(aget())


@pytest.fixture
def inside_requests(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], object]]:
    """Lets a test run code inside the requests adapter's attempt (as `responses` would)."""
    inside: list[Callable[[], object]] = []
    send = HTTPAdapter.send

    def patched(self: HTTPAdapter, *args: Any, **kwargs: Any) -> requests.Response:
        for run in inside:
            run()
        return send(self, *args, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", patched)
    return inside


@pytest.mark.parametrize("kind", MOUNTS)
def test_every_mount_point_settles_a_clean_call_through_one_function(
    kind: str, server: ScriptedServer, settled: list[int], closing: list[Callable[[], object]]
) -> None:
    """Three clean calls: three settles, each with the CLOSED period's (non-zero) ticket."""
    server.default = Reply(200, b"ok")
    breaker = CircuitBreaker(CONFIG.circuit_breaker, name=f"happy-{kind}")
    get = _get_through(kind, server.url + "/ok", breaker, lambda: None, closing)
    assert [get() for _ in range(3)] == ["ok"] * 3
    assert len(settled) == 3
    assert settled[0] != 0
    assert set(settled) == {breaker.clean_ticket}


@pytest.mark.parametrize("kind", MOUNTS)
def test_a_failure_reported_meanwhile_is_reset_by_the_clean_success(
    kind: str,
    server: ScriptedServer,
    settled: list[int],
    inside_requests: list[Callable[[], object]],
    closing: list[Callable[[], object]],
) -> None:
    """Another caller fails while our first attempt runs: the count goes to 1 and the
    clean ticket to 0; our success, settled with the ticket it ran under, resets it."""
    server.default = Reply(200, b"ok")
    breaker = CircuitBreaker(CONFIG.circuit_breaker, name=f"meanwhile-{kind}")
    seen: list[int] = []

    def fail_once() -> None:
        if not seen:
            breaker.record_failure(breaker.acquire())
            seen.append(breaker.failure_count)

    if kind == "requests":
        inside_requests.append(fail_once)
    get = _get_through(kind, server.url + "/ok", breaker, fail_once, closing)
    ticket = breaker.clean_ticket
    assert get() == "ok"
    assert seen == [1]  # the failure counted while the attempt ran
    assert settled == [ticket]  # settled with the ticket read before the attempt
    assert breaker.failure_count == 0  # and the success reset the count
    assert breaker.clean_ticket == ticket
    assert server.count("/ok") == 1  # one attempt: the engine never ran


def test_settle_deposits_into_the_retry_budget() -> None:
    """The rule's other half: every settled success earns the policy's budget a deposit."""
    breaker = CircuitBreaker(CONFIG.circuit_breaker, name="settle-budget")
    policy = Policy(
        CONFIG,
        breaker,
        classify_error=lambda exc: Outcome(FAILURE, error=exc),
        classify_value=lambda value: Outcome(FAILURE, value),
    )
    budget = policy.budget
    assert budget is not None
    assert budget.try_spend()
    before = budget.tokens
    _happy.settle(policy, breaker.clean_ticket)
    assert budget.tokens == before + budget.ratio
    assert breaker.failure_count == 0
    assert breaker.state == "CLOSED"


@pytest.mark.parametrize("kind", MOUNTS)
def test_a_slow_first_attempt_counts_on_the_happy_path(
    kind: str,
    server: ScriptedServer,
    settled: list[int],
    inside_requests: list[Callable[[], object]],
    closing: list[Callable[[], object]],
) -> None:
    """A slow-call breaker keeps the happy path: the mount point reads the breaker's clock
    before the attempt and ``settle`` judges its duration.  Exactly ``slow_call_ms`` is not
    slow; longer counts as a failure for the breaker, the answer is still returned, and
    nothing is retried."""
    server.default = Reply(200, b"ok")
    now = [0.0]
    step = [0.05]

    def advance() -> None:  # the attempt "takes" step[0] seconds on the breaker's clock
        now[0] += step[0]

    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=2, slow_call_ms=50),
        name=f"slow-{kind}",
        clock=lambda: now[0],
    )
    if kind == "requests":
        inside_requests.append(advance)
    get = _get_through(kind, server.url + "/ok", breaker, advance, closing)
    ticket = breaker.clean_ticket
    assert ticket != 0  # a timed breaker keeps its happy path
    assert get() == "ok"
    assert breaker.failure_count == 0  # exactly 50 ms: not slow
    step[0] = 0.2
    assert get() == "ok"
    assert breaker.failure_count == 1
    assert breaker.state == "CLOSED"
    assert get() == "ok"
    assert breaker.state == "OPEN"
    assert breaker.reason == "slow calls"
    # The first two settled on the happy path; after a counted failure the breaker is not
    # clean, so the third went through the engine (which timed it as well).
    assert settled == [ticket] * 2
    assert server.count("/ok") == 3  # a slow answer is not retried


@pytest.mark.parametrize("is_async", [False, True])
def test_a_slow_answered_error_on_the_happy_path_is_timed_by_the_engine(
    is_async: bool, server: ScriptedServer
) -> None:
    """A 404 raised by the decorated function is an answer (a success for the breaker) that
    the engine books as the happy path's first outcome: it is timed from the attempt's start
    (the mount point's clock read), so a slow one counts as a slow call."""
    server.default = Reply(404, b"missing")
    now = [0.0]
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, slow_call_ms=50),
        name=f"slow-404-{is_async}",
        clock=lambda: now[0],
    )
    url = server.url + "/missing"

    @resilient_api(CONFIG, breaker=breaker)
    def fetch() -> str:
        now[0] += 0.2
        return httpx.get(url).raise_for_status().text

    @resilient_api(CONFIG, breaker=breaker)
    async def afetch() -> str:
        now[0] += 0.2
        async with httpx.AsyncClient() as client:
            return (await client.get(url)).raise_for_status().text

    call: Callable[[], object] = (lambda: asyncio.run(afetch())) if is_async else fetch
    with pytest.raises(httpx.HTTPStatusError):
        call()
    assert breaker.state == "OPEN"
    assert breaker.reason == "slow calls"
    assert server.count("/missing") == 1
