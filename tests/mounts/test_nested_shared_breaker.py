"""A decorated function that calls through a transport sharing its breaker.

README "Sharing one breaker": the decorator and the transport share one
failure count and one state.  When the decorated function's own requests go
through that transport, the decorator keeps the books: each upstream request
counts once, and the decorator's HALF_OPEN probe is not rejected by its own
transport (the breaker never sticks in HALF_OPEN).
"""

from __future__ import annotations

import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.testing import FakeClock

CONFIG = ResilientConfig(
    backoff=BackoffConfig(max_retries=2),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=5, cooldown_ms=10_000),
)


@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_each_upstream_request_counts_once_and_the_probe_goes_through(
    server: ScriptedServer, instant: FakeClock, library: str
) -> None:
    """3 failed requests count 3 (not 6); after the cooldown the decorator's probe reaches the
    server through the shared transport and closes the breaker."""
    breaker = CircuitBreaker(CONFIG.circuit_breaker, name="users-api")
    if library == "requests":
        session = requests.Session()
        session.mount("http://", ResilientAdapter(CONFIG, breaker=breaker))

        def get(url: str) -> int:
            response = session.get(url, timeout=5)
            response.raise_for_status()
            return response.status_code

        close = session.close
    else:
        client = httpx.Client(transport=ResilientTransport(CONFIG, breaker=breaker))

        def get(url: str) -> int:
            response = client.get(url)
            response.raise_for_status()
            return response.status_code

        close = client.close

    fetch = resilient_api(CONFIG, breaker=breaker)(get)
    try:
        server.script("/u", Reply(503), Reply(503), Reply(503))
        with pytest.raises((requests.HTTPError, httpx.HTTPStatusError)):
            fetch(server.url + "/u")
        assert server.count("/u") == 3
        assert breaker.failure_count == 3

        breaker.force_open()
        instant.advance(10.0)
        assert fetch(server.url + "/u") == 200  # the probe, through the shared transport
        assert server.count("/u") == 4
        assert breaker.state == "CLOSED"
    finally:
        close()


def test_the_transport_alone_still_keeps_its_own_books(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Outside a decorated call, the shared transport retries and counts as usual."""
    breaker = CircuitBreaker(CONFIG.circuit_breaker, name="users-api")
    server.script("/u", Reply(503), Reply(503), Reply(200))
    with httpx.Client(transport=ResilientTransport(CONFIG, breaker=breaker)) as client:
        response = client.get(server.url + "/u")
    assert response.status_code == 200
    assert response.extensions["smoothapi_attempts"] == 3
    assert breaker.failure_count == 0
