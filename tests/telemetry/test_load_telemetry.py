"""Load control in the telemetry: a call shed by the bulkhead, the rate limit or the throttle,
and a hedge sent, each give one DEBUG line on the ``smoothapi`` logger, one Prometheus sample
and one OpenTelemetry data point, driven by real decorated calls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

import smoothapi.otel
import smoothapi.prometheus
from smoothapi import (
    BackoffConfig,
    BulkheadConfig,
    CallShed,
    CircuitBreakerConfig,
    HedgingConfig,
    LoadShedError,
    RateLimitConfig,
    ResilientConfig,
    ThrottleConfig,
    resilient_api,
)
from smoothapi.events import emit
from smoothapi.telemetry._base import STAGES
from smoothapi.testing import FakeClock

NO_RETRY = BackoffConfig(max_retries=0)
NEVER_OPENS = CircuitBreakerConfig(failure_threshold=10_000)
LOAD_EVENTS = {"call_shed", "hedge_sent"}


@dataclass
class Metrics:
    """Both backends instrumented at once, and the log records."""

    registry: CollectorRegistry
    reader: InMemoryMetricReader
    caplog: pytest.LogCaptureFixture

    def prom(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def otel(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        """Data points of the OTel metric ``name``: attributes (sorted items) -> value."""
        found: dict[tuple[tuple[str, Any], ...], float] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            attributes = tuple(sorted((point.attributes or {}).items()))
                            found[attributes] = point.value  # type: ignore[union-attr]
        return found

    def lines(self) -> list[logging.LogRecord]:
        """The load-control lines on the ``smoothapi`` logger."""
        return [
            r
            for r in self.caplog.records
            if r.name == "smoothapi" and getattr(r, "smoothapi_event", None) in LOAD_EVENTS
        ]


@pytest.fixture
def metrics(caplog: pytest.LogCaptureFixture) -> Iterator[Metrics]:
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    smoothapi.prometheus.instrument(registry)
    smoothapi.otel.instrument(meter_provider=provider, traces_enabled=False)
    caplog.set_level(logging.DEBUG, logger="smoothapi")
    try:
        yield Metrics(registry, reader, caplog)
    finally:
        smoothapi.otel.uninstrument()
        smoothapi.prometheus.uninstrument()
        provider.shutdown()


def _extra(record: logging.LogRecord, *fields: str) -> dict[str, object]:
    return {field: getattr(record, field) for field in fields}


def _shed_point(name: str, stage: str) -> tuple[tuple[str, str], ...]:
    return (("smoothapi.breaker", name), ("smoothapi.stage", stage))


def test_a_call_shed_by_the_bulkhead_is_logged_and_counted(metrics: Metrics) -> None:
    """One permit, no queue: while a call holds the permit the next one is shed, without I/O
    and with no retry_after (the bulkhead cannot tell when a permit frees): one DEBUG line
    without "retry in", smoothapi_shed_total{stage="bulkhead"} 1, smoothapi.shed 1."""
    name = "load-bulkhead"
    inside, release = threading.Event(), threading.Event()
    calls = []

    @resilient_api(
        ResilientConfig(
            backoff=NO_RETRY, bulkhead=BulkheadConfig(max_concurrent=1, max_queue=0, max_wait=0)
        ),
        name=name,
    )
    def work() -> str:
        calls.append(1)
        inside.set()
        assert release.wait(20)
        return "done"

    holder = threading.Thread(target=work)
    holder.start()
    try:
        assert inside.wait(20)
        with pytest.raises(LoadShedError) as shed:
            work()
        assert shed.value.stage == "bulkhead"
    finally:
        release.set()
        holder.join(20)
    assert len(calls) == 1  # the shed call never ran

    (line,) = metrics.lines()
    assert line.levelno == logging.DEBUG
    assert line.getMessage() == "load-bulkhead: call shed by bulkhead"
    assert _extra(line, "smoothapi_event", "breaker", "stage", "retry_after") == {
        "smoothapi_event": "call_shed",
        "breaker": name,
        "stage": "bulkhead",
        "retry_after": 0.0,
    }
    assert metrics.prom("smoothapi_shed_total", breaker=name, stage="bulkhead") == 1
    assert metrics.otel("smoothapi.shed") == {_shed_point(name, "bulkhead"): 1}
    assert metrics.otel("smoothapi.hedges") == {}


def test_a_call_shed_by_the_rate_limit_says_when_a_token_comes(
    metrics: Metrics, instant: FakeClock
) -> None:
    """One token a second, none to wait for: the first call passes and logs nothing, the next
    two are shed (the second answered by the fallback, and still counted) with the next
    token 1 s away on the breaker's clock."""
    name = "load-rate"
    config = ResilientConfig(
        backoff=NO_RETRY, rate_limit=RateLimitConfig(rate=1.0, burst=1, max_wait=0)
    )
    calls = []

    @resilient_api(config, name=name)
    def work() -> str:
        calls.append(1)
        return "fresh"

    assert work() == "fresh"
    assert metrics.lines() == []  # an admitted call is not logged
    with pytest.raises(LoadShedError) as shed:
        work()
    assert (shed.value.stage, shed.value.retry_after) == ("rate_limit", 1.0)
    assert work.with_fallback("cached")() == "cached"
    assert len(calls) == 1

    lines = metrics.lines()
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        ("DEBUG", "load-rate: call shed by rate_limit (retry in 1.000s)"),
    ] * 2
    for line in lines:
        assert _extra(line, "smoothapi_event", "breaker", "stage", "retry_after") == {
            "smoothapi_event": "call_shed",
            "breaker": name,
            "stage": "rate_limit",
            "retry_after": 1.0,
        }
    assert metrics.prom("smoothapi_shed_total", breaker=name, stage="rate_limit") == 2
    assert metrics.prom("smoothapi_fallbacks_total", breaker=name) == 1
    assert metrics.otel("smoothapi.shed") == {_shed_point(name, "rate_limit"): 2}
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE smoothapi_shed_total counter" in text
    assert "# TYPE smoothapi_hedges_total counter" in text


def test_calls_shed_by_the_throttle_are_each_logged_and_counted(
    metrics: Metrics, instant: FakeClock
) -> None:
    """Every attempt fails, so the throttle sheds a growing share of calls (k=1: n/(n+1) after
    n failures); the draw is random, so the test counts the LoadShedErrors it saw and finds
    exactly that many lines, Prometheus increments and OTel increments."""
    name = "load-throttle"
    config = ResilientConfig(
        backoff=NO_RETRY, circuit_breaker=NEVER_OPENS, throttle=ThrottleConfig(k=1.0)
    )

    @resilient_api(config, name=name)
    def work() -> None:
        raise ConnectionError("refused")

    refusals: list[LoadShedError] = []
    failed = 0
    while len(refusals) < 5 and failed + len(refusals) < 200:
        try:
            work()
        except LoadShedError as exc:
            refusals.append(exc)
        except ConnectionError:
            failed += 1
    shed = len(refusals)
    assert shed == 5, (shed, failed)  # p(fewer in 200 calls) is below 1e-300
    assert {(exc.stage, exc.retry_after) for exc in refusals} == {("throttle", 0.0)}
    assert failed >= 1

    lines = metrics.lines()
    assert [r.getMessage() for r in lines] == ["load-throttle: call shed by throttle"] * shed
    assert {r.levelno for r in lines} == {logging.DEBUG}
    assert {(r.stage, r.retry_after) for r in lines} == {("throttle", 0.0)}  # type: ignore[attr-defined]
    assert metrics.prom("smoothapi_shed_total", breaker=name, stage="throttle") == shed
    assert metrics.prom("smoothapi_retries_total", breaker=name, cause="ConnectionError") is None
    assert metrics.otel("smoothapi.shed") == {_shed_point(name, "throttle"): shed}


@pytest.mark.anyio
async def test_a_hedge_sent_is_logged_and_counted(metrics: Metrics) -> None:
    """The first attempt has no answer after the 10 ms hedge delay: one hedge goes, answers
    and wins (the first is cancelled).  One DEBUG line with attempt, hedge and delay;
    smoothapi_hedges_total 1; smoothapi.hedges 1; no shed counted."""
    name = "load-hedge"
    config = ResilientConfig(backoff=NO_RETRY, hedging=HedgingConfig(delay=0.01))
    calls = []

    @resilient_api(config, name=name)
    async def work() -> str:
        calls.append(1)
        if len(calls) == 1:
            await anyio.sleep(60)  # the slow attempt: the hedge wins and cancels it
            return "slow"
        return "hedge"

    with anyio.fail_after(20):
        assert await work() == "hedge"
    assert len(calls) == 2

    (line,) = metrics.lines()
    assert line.levelno == logging.DEBUG
    assert line.getMessage() == "load-hedge: attempt 1 had no answer after 0.010s; hedge 1 sent"
    assert _extra(line, "smoothapi_event", "breaker", "attempt", "hedge", "delay") == {
        "smoothapi_event": "hedge_sent",
        "breaker": name,
        "attempt": 1,
        "hedge": 1,
        "delay": 0.01,
    }
    assert metrics.prom("smoothapi_hedges_total", breaker=name) == 1
    assert metrics.otel("smoothapi.hedges") == {(("smoothapi.breaker", name),): 1}
    assert metrics.otel("smoothapi.shed") == {}


def test_the_stage_label_stays_a_closed_set(metrics: Metrics) -> None:
    """The stage label takes the three stages' names, and any other value (a hand-made
    event) is counted as "other", so the series stay bounded; the log line keeps the text."""
    assert STAGES == ("bulkhead", "rate_limit", "throttle")
    emit(CallShed("load-odd", "stage-" + "x" * 40, 2.5))
    assert metrics.prom("smoothapi_shed_total", breaker="load-odd", stage="other") == 1
    assert metrics.otel("smoothapi.shed") == {_shed_point("load-odd", "other"): 1}
    (line,) = metrics.lines()
    assert line.getMessage() == f"load-odd: call shed by stage-{'x' * 40} (retry in 2.500s)"
