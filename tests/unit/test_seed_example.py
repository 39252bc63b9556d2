"""The seed README's usage example runs unchanged, against a local server.

DESIGN.md: "``smooth_api`` is an importable alias with the same objects, so
this works unchanged: ``from smooth_api import resilient_api,
ResilientConfig`` and ``from smooth_api.config import BackoffConfig,
CircuitBreakerConfig``."  The imports, the config values and the function
bodies below are the README's, word for word; only the URL points at the
scripted server (``f"{server.url}/users/{user_id}"``).  The ``instant``
fixture skips the 0.1 s backoff sleeps and moves a fake clock instead, so
the 10 s cooldown passes without waiting.

What the README promises and these tests make visible: a 200's JSON comes
back; an outage trips the breaker (3 consecutive failed attempts) and the
fallback dict is then returned with no request reaching the server; a
per-call ``fallback=`` overrides it; after the cooldown the next call probes
and a success closes the circuit; 4xx errors are re-raised at once.
"""

from __future__ import annotations

import httpx
import pytest
import requests
from httpserver import Json, Reply, ScriptedServer

from smooth_api import ResilientConfig, resilient_api
from smooth_api.config import BackoffConfig, CircuitBreakerConfig
from smoothapi import CircuitState
from smoothapi.testing import FakeClock

config = ResilientConfig(
    backoff=BackoffConfig(
        base_delay=0.1,  # seconds to wait before first retry
        max_delay=30.0,  # cap on exponential growth
        max_retries=3,  # max number of retry attempts
    ),
    circuit_breaker=CircuitBreakerConfig(
        failure_threshold=3,  # trip OPEN after 3 consecutive failures
        cooldown_ms=10_000,  # stay OPEN for 10 seconds before probing
    ),
    # Optional: return this exact object when the circuit is OPEN
    fallback={"status": "degraded", "data": []},
    # Optional: HTTP status codes to trigger a retry
    retry_on=[429, 500, 502, 503, 504],
)

USER_123 = {"id": "123", "name": "Ada Lovelace"}
USER_456 = {"id": "456", "name": "Grace Hopper"}
DEGRADED = {"status": "degraded", "data": []}
OVERRIDE = {"status": "override"}


def test_seed_imports_are_the_smoothapi_objects() -> None:
    """``smooth_api`` is an alias: the README's imports give smoothapi's own classes."""
    import smoothapi  # noqa: PLC0415

    assert resilient_api is smoothapi.resilient_api
    assert ResilientConfig is smoothapi.ResilientConfig
    assert BackoffConfig is smoothapi.BackoffConfig
    assert CircuitBreakerConfig is smoothapi.CircuitBreakerConfig


def test_seed_example_sync(
    server: ScriptedServer, instant: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """README sync example: JSON on success, the fallback once OPEN (no I/O), per-call override."""
    server.script("/users/123", Json(200, USER_123))

    @resilient_api(config)
    def get_user_data(user_id: str):
        res = requests.get(f"{server.url}/users/{user_id}")
        res.raise_for_status()
        return res.json()

    # Standard usage
    try:
        data = get_user_data("123")
        print(data)
    except Exception as e:
        print("Request failed completely:", e)

    assert capsys.readouterr().out == f"{USER_123!r}\n"
    assert server.count("/users/123") == 1
    assert get_user_data.breaker.state == "CLOSED"

    # The upstream goes down: 3 consecutive failed attempts trip the breaker mid-retry,
    # and the call answers with the configured fallback instead of raising.
    server.default = Reply(503)
    try:
        data = get_user_data("123")
        print(data)
    except Exception as e:
        print("Request failed completely:", e)

    assert capsys.readouterr().out == f"{DEGRADED!r}\n"
    assert server.count("/users/123") == 1 + 3
    assert get_user_data.breaker.state == "OPEN"

    # While OPEN, calls are answered at once with the fallback: nothing reaches the server.
    assert get_user_data("123") == DEGRADED
    assert get_user_data("789") == DEGRADED

    # You can also override the fallback at runtime per-call:
    data = get_user_data("456", fallback={"status": "override"})

    assert data == OVERRIDE
    assert server.count() == 4  # no request since the breaker opened
    assert get_user_data.breaker.state == "OPEN"


def test_seed_example_sync_recovers_after_the_cooldown(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """README "How It Works" 4: after cooldown_ms the next call probes; a success closes it."""

    @resilient_api(config)
    def get_user_data(user_id: str):
        res = requests.get(f"{server.url}/users/{user_id}")
        res.raise_for_status()
        return res.json()

    server.script("/users/123", Reply(503), Reply(502), Reply(500), Reply(503), Json(200, USER_123))
    assert get_user_data("123") == DEGRADED  # tripped after 3 failed attempts
    assert server.count("/users/123") == 3

    instant.advance(10.0)  # the 10 s cooldown passes
    assert get_user_data("123") == DEGRADED  # the probe fails: snaps back to OPEN at once
    assert server.count("/users/123") == 4
    assert get_user_data.breaker.state == "OPEN"

    instant.advance(10.0)
    assert get_user_data("123") == USER_123  # the probe succeeds: CLOSED again
    assert get_user_data.breaker.state == "CLOSED"
    assert server.count("/users/123") == 5


def test_seed_example_per_call_override_with_a_healthy_upstream(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The override call on a healthy upstream returns the data; the keyword is not passed on."""
    server.script("/users/456", Json(200, USER_456))

    @resilient_api(config)
    def get_user_data(user_id: str):
        res = requests.get(f"{server.url}/users/{user_id}")
        res.raise_for_status()
        return res.json()

    # You can also override the fallback at runtime per-call:
    data = get_user_data("456", fallback={"status": "override"})

    assert data == USER_456
    assert server.count("/users/456") == 1


def test_seed_example_client_error_is_reraised_at_once(
    server: ScriptedServer, instant: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """README "Smart Retries": a client error (404) is re-raised immediately, not retried."""
    server.script("/users/404", Reply(404))

    @resilient_api(config)
    def get_user_data(user_id: str):
        res = requests.get(f"{server.url}/users/{user_id}")
        res.raise_for_status()
        return res.json()

    try:
        data = get_user_data("404")
        print(data)
    except Exception as e:
        print("Request failed completely:", e)

    out = capsys.readouterr().out
    assert out.startswith("Request failed completely: 404 Client Error")
    assert server.count("/users/404") == 1
    assert get_user_data.breaker.state == "CLOSED"
    assert get_user_data.breaker.failure_count == 0


def test_seed_example_per_call_fallback_none_raises_runtime_error_when_open(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """README "Circuit Check": OPEN, no fallback (per-call fallback=None): RuntimeError."""

    @resilient_api(config)
    def get_user_data(user_id: str):
        res = requests.get(f"{server.url}/users/{user_id}")
        res.raise_for_status()
        return res.json()

    get_user_data.breaker.force_open()
    with pytest.raises(RuntimeError, match=r"Circuit breaker is OPEN for: .*get_user_data"):
        get_user_data("123", fallback=None)
    assert server.count() == 0


@pytest.mark.anyio
async def test_seed_example_async(server: ScriptedServer, instant: FakeClock) -> None:
    """The README's async example under asyncio and trio: same data, fallback and override."""
    server.script("/users/123", Json(200, USER_123))

    @resilient_api(config)
    async def get_user_data_async(user_id: str):
        async with httpx.AsyncClient() as client:
            res = await client.get(f"{server.url}/users/{user_id}")
            res.raise_for_status()
            return res.json()

    data = await get_user_data_async("123")
    assert data == USER_123
    assert server.count("/users/123") == 1

    # An outage trips the breaker after 3 failed attempts; the fallback answers.
    server.default = Reply(503)
    assert await get_user_data_async("123") == DEGRADED
    assert server.count("/users/123") == 4
    assert get_user_data_async.breaker.state == CircuitState.OPEN

    # OPEN: the fallback, and the per-call override, come back with no I/O.
    assert await get_user_data_async("123") == DEGRADED
    data = await get_user_data_async("456", fallback={"status": "override"})
    assert data == OVERRIDE
    assert server.count() == 4

    # After the cooldown the probe succeeds and the circuit closes.
    server.default = Json(200, USER_456)
    instant.advance(10.0)
    assert await get_user_data_async("456") == USER_456
    assert get_user_data_async.breaker.state == CircuitState.CLOSED
    assert server.count("/users/456") == 1


@pytest.mark.anyio
async def test_seed_example_sync_and_async_functions_have_isolated_breakers(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """README "Isolation": one breaker per decorated function; tripping one leaves the other."""

    @resilient_api(config)
    def get_user_data(user_id: str):
        res = requests.get(f"{server.url}/users/{user_id}")
        res.raise_for_status()
        return res.json()

    @resilient_api(config)
    async def get_user_data_async(user_id: str):
        async with httpx.AsyncClient() as client:
            res = await client.get(f"{server.url}/users/{user_id}")
            res.raise_for_status()
            return res.json()

    server.script("/users/123", Reply(503), Reply(503), Reply(503), Json(200, USER_123))
    assert get_user_data("123") == DEGRADED
    assert get_user_data.breaker.state == "OPEN"
    assert get_user_data_async.breaker.state == "CLOSED"
    assert await get_user_data_async("123") == USER_123
    assert server.count("/users/123") == 4
