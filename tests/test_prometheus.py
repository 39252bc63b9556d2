"""Prometheus metrics through prometheus_client, read back from a registry's exposition."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from httpserver import Reply, ScriptedServer
from prometheus_client import CollectorRegistry, generate_latest

import smoothapi.prometheus
from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.testing import FakeClock


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    smoothapi.prometheus.instrument(registry)
    try:
        yield registry
    finally:
        smoothapi.prometheus.uninstrument()


def test_an_outage_shows_in_counters_and_breaker_gauges(
    registry: CollectorRegistry, instant: FakeClock
) -> None:
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=45_000),
        fallback="cached",
    )

    @resilient_api(config, name="prom-outage")
    def fetch() -> str:
        raise TimeoutError("slow")

    assert fetch() == "cached"
    assert fetch() == "cached"
    b = {"breaker": "prom-outage"}
    value = registry.get_sample_value
    assert value("smoothapi_retries_total", {**b, "cause": "TimeoutError"}) == 2
    assert value("smoothapi_gave_up_total", {**b, "reason": "breaker open"}) == 1
    assert value("smoothapi_rejected_total", b) == 1
    assert value("smoothapi_fallbacks_total", b) == 2
    transition = {**b, "from_state": "CLOSED", "to_state": "OPEN"}
    assert value("smoothapi_breaker_transitions_total", transition) == 1
    assert value("smoothapi_breaker_state", {**b, "state": "OPEN"}) == 1
    assert value("smoothapi_breaker_state", {**b, "state": "CLOSED"}) == 0
    assert value("smoothapi_breaker_failures", b) == 3
    assert value("smoothapi_breaker_open_remaining_seconds", b) == pytest.approx(45.0)

    instant.advance(45)  # cooled down: the next call is the probe
    assert value("smoothapi_breaker_open_remaining_seconds", b) == 0
    fetch.breaker.reset()
    assert value("smoothapi_breaker_state", {**b, "state": "CLOSED"}) == 1

    text = generate_latest(registry).decode()
    assert "# TYPE smoothapi_retries_total counter" in text
    assert "# TYPE smoothapi_breaker_state gauge" in text


def test_transport_breakers_are_labelled_by_origin(
    registry: CollectorRegistry, server: ScriptedServer, instant: FakeClock
) -> None:
    server.script("/p", Reply(503), Reply(503), Reply(200))
    config = ResilientConfig(backoff=BackoffConfig(max_retries=3))
    with httpx.Client(transport=ResilientTransport(config), timeout=5.0) as client:
        assert client.get(server.url + "/p?key=SECRET").status_code == 200
    labels = {"breaker": server.origin, "cause": "503"}
    assert registry.get_sample_value("smoothapi_retries_total", labels) == 2
    assert (
        registry.get_sample_value(
            "smoothapi_breaker_state", {"breaker": server.origin, "state": "CLOSED"}
        )
        == 1
    )
    assert "SECRET" not in generate_latest(registry).decode()


def test_instrument_twice_replaces_and_uninstrument_unregisters(instant: FakeClock) -> None:
    registry = CollectorRegistry()
    smoothapi.prometheus.instrument(registry)
    smoothapi.prometheus.instrument(registry)  # no "Duplicated timeseries" error
    smoothapi.prometheus.uninstrument()
    assert "smoothapi_" not in generate_latest(registry).decode()

    @resilient_api(ResilientConfig(backoff=BackoffConfig(max_retries=1)), name="prom-off")
    def fails() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        fails()
    assert "smoothapi_" not in generate_latest(registry).decode()
