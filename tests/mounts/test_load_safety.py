"""Load safety: the retry budget and the per-call deadline (issue 6).

Budget: a token bucket (gRPC-style) caps retries relative to successes, so a
fleet-wide outage cannot multiply the upstream's load by max_retries + 1.
Deadline: one time budget per call, sleeps and attempts included.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import requests
from httpserver import Delay, Reply, ScriptedServer

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    ConfigError,
    Event,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    RetriesExhausted,
    RetryScheduled,
    resilient_api,
)
from smoothapi.config import RetryBudgetConfig
from smoothapi.testing import FakeClock

NEVER_OPENS = CircuitBreakerConfig(failure_threshold=10**9)


def _config(**kwargs: Any) -> ResilientConfig:
    kwargs.setdefault("backoff", BackoffConfig(max_retries=3))
    kwargs.setdefault("circuit_breaker", NEVER_OPENS)
    return ResilientConfig(**kwargs)


# -- retry budget ----------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [None, RetryBudgetConfig(max_tokens=10, token_ratio=0.1)])
def test_total_outage_with_many_concurrent_callers(
    server: ScriptedServer, instant: FakeClock, budget: RetryBudgetConfig | None
) -> None:
    """8 threads x 25 calls against a server answering 503 to everything, breaker never opening.

    Budget off: every call makes max_retries + 1 = 4 requests (800).  Budget on
    (10 tokens, retries while above 5): exactly 5 retries in all, so 205 requests
    - within (1 + token_ratio) x calls = 220.
    """
    server.default = Reply(503)
    events: list[Event] = []
    calls = 8 * 25

    @resilient_api(_config(retry_budget=budget, hooks=(events.append,)))
    def get() -> int:
        response = requests.get(server.url + "/down", timeout=5)
        response.raise_for_status()
        return response.status_code

    def worker() -> None:
        for _ in range(25):
            with pytest.raises(requests.HTTPError):
                get()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if budget is None:
        assert server.count("/down") == calls * 4
    else:
        assert server.count("/down") == calls + 5
        assert server.count("/down") <= (1 + budget.token_ratio) * calls
        reasons = [e.reason for e in events if isinstance(e, RetriesExhausted)]
        assert len(reasons) == calls
        # Every call ends on the budget, except one that thread timing let take three of
        # the five retries: it runs out of its own retries first (5 // 3 = at most one).
        assert set(reasons) <= {"retry budget exhausted", "retries exhausted"}
        assert reasons.count("retries exhausted") <= 1


def test_successes_refill_the_budget(instant: FakeClock) -> None:
    """4 tokens, retries while above 2: two retries, then none; eight successes at 1/8 of a
    token each (exact in binary floating point) earn exactly one back."""
    outcomes: list[str] = []
    config = _config(retry_budget=RetryBudgetConfig(max_tokens=4, token_ratio=0.125))

    @resilient_api(config)
    def call(fail: bool) -> str:
        outcomes.append("fail" if fail else "ok")
        if fail:
            raise ConnectionError("down")
        return "ok"

    with pytest.raises(ConnectionError):
        call(True)
    assert outcomes == ["fail"] * 3  # the try and two retries (4 -> 3 -> 2 tokens)
    outcomes.clear()
    with pytest.raises(ConnectionError):
        call(True)
    assert outcomes == ["fail"]  # at the floor: no retry
    for _ in range(8):  # 8 x 1/8 = one token earned back
        assert call(False) == "ok"
    outcomes.clear()
    with pytest.raises(ConnectionError):
        call(True)
    assert outcomes == ["fail", "fail"]  # one retry again


def test_transport_budget_is_per_origin(server: ScriptedServer, instant: FakeClock) -> None:
    """ResilientTransport keeps one budget per origin: 30 failing GETs make 30 + 5 requests."""
    server.default = Reply(503)
    config = _config(retry_budget=RetryBudgetConfig())
    with httpx.Client(transport=ResilientTransport(config)) as client:
        for _ in range(30):
            assert client.get(server.url + "/down").status_code == 503
    assert server.count("/down") == 35


def test_adapter_budget(server: ScriptedServer, instant: FakeClock) -> None:
    """ResilientAdapter too."""
    server.default = Reply(503)
    with requests.Session() as session:
        session.mount("http://", ResilientAdapter(_config(retry_budget=RetryBudgetConfig())))
        for _ in range(30):
            assert session.get(server.url + "/down", timeout=5).status_code == 503
    assert server.count("/down") == 35


def test_budget_config_is_validated() -> None:
    """Bad budget values fail at construction, naming the field."""
    with pytest.raises(ConfigError, match="max_tokens"):
        RetryBudgetConfig(max_tokens=0)
    with pytest.raises(ConfigError, match="token_ratio"):
        RetryBudgetConfig(token_ratio=0)
    with pytest.raises(TypeError, match="retry_budget"):
        ResilientConfig(retry_budget=10)  # type: ignore[arg-type]


# -- deadline --------------------------------------------------------------------------------


def test_a_schedule_that_cannot_fit_the_deadline_is_rejected() -> None:
    """jitter='none' sleeps exactly 0.4 + 0.8 + 0.8 s: a 1 s deadline cannot hold it."""
    with pytest.raises(ConfigError, match="deadline"):
        ResilientConfig(
            backoff=BackoffConfig(base_delay=0.4, max_delay=0.8, max_retries=3, jitter="none"),
            deadline=1.0,
        )
    ResilientConfig(  # full jitter may sleep 0: it fits
        backoff=BackoffConfig(base_delay=0.4, max_delay=0.8, max_retries=3), deadline=1.0
    )


@pytest.fixture
def seeded() -> Iterator[None]:
    """The jitter's default random source (the global one), seeded for this test only."""
    state = random.getstate()
    random.seed(7)
    yield
    random.setstate(state)


def test_the_decorator_never_sleeps_past_the_deadline(instant: FakeClock, seeded: None) -> None:
    """Sleeps that would overshoot are not taken: the fake clock (moved only by the skipped
    sleeps) ends within the deadline, and the call gives up with reason "deadline"."""
    events: list[Event] = []
    config = _config(
        backoff=BackoffConfig(base_delay=0.5, max_delay=0.8, max_retries=10),
        deadline=1.0,
        hooks=(events.append,),
    )
    start = instant.now

    @resilient_api(config)
    def call() -> None:
        raise TimeoutError("slow upstream")

    with pytest.raises(TimeoutError):
        call()
    assert instant.now - start <= 1.0
    slept = sum(e.delay for e in events if isinstance(e, RetryScheduled))
    assert slept == pytest.approx(instant.now - start)
    assert [e.reason for e in events if isinstance(e, RetriesExhausted)] == ["deadline"]


def test_async_decorator_never_sleeps_past_the_deadline(instant: FakeClock, seeded: None) -> None:
    """The same for an `async def` (asyncio and trio)."""
    config = _config(
        backoff=BackoffConfig(base_delay=0.5, max_delay=0.8, max_retries=10),
        deadline=1.0,
    )

    @resilient_api(config)
    async def call() -> None:
        raise TimeoutError("slow upstream")

    for backend in ("asyncio", "trio"):
        start = instant.now
        with pytest.raises(TimeoutError):
            anyio.run(call, backend=backend)
        assert instant.now - start <= 1.0


@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_transport_attempts_shrink_to_the_time_left(server: ScriptedServer, library: str) -> None:
    """A server that answers only after 5 s, a 0.6 s deadline: the attempt's timeouts are cut
    to the time left, so the call ends (with the client's timeout error) within the deadline
    plus a generous margin for a loaded machine - never after the server's 5 s."""
    server.default = Delay(5.0, Reply(200))
    config = _config(backoff=BackoffConfig(base_delay=0.05, max_delay=0.1), deadline=0.6)
    began = time.monotonic()
    if library == "requests":
        with requests.Session() as session:
            session.mount("http://", ResilientAdapter(config))
            with pytest.raises(requests.exceptions.Timeout):
                session.get(server.url + "/slow", timeout=30)
    else:
        with httpx.Client(transport=ResilientTransport(config), timeout=30) as client:
            with pytest.raises(httpx.TimeoutException):
                client.get(server.url + "/slow")
    assert time.monotonic() - began < 3.0


def test_deadline_is_validated() -> None:
    """A deadline must be a positive number of seconds."""
    with pytest.raises(ConfigError, match="deadline"):
        ResilientConfig(deadline=0)
    with pytest.raises(TypeError, match="deadline"):
        ResilientConfig(deadline="1s")  # type: ignore[arg-type]
