"""OpenTelemetry: per-attempt client spans from the transports and metrics from events, read
with the SDK's in-memory exporter and reader, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer, refused_url
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import smoothapi.otel
from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.testing import FakeClock

TIMEOUT = 5.0
CONFIG = ResilientConfig(
    backoff=BackoffConfig(max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
)


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        """Data points of metric ``name``: attributes (sorted items) -> value."""
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


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    smoothapi.otel.instrument(meter_provider=t.meter_provider, tracer_provider=t.tracer_provider)
    try:
        yield t
    finally:
        smoothapi.otel.uninstrument()
        t.meter_provider.shutdown()
        t.tracer_provider.shutdown()


def _attempt_spans(t: Telemetry) -> list[ReadableSpan]:
    return sorted(
        (s for s in t.finished() if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0
    )


def _check_retry_spans(t: Telemetry, server: ScriptedServer, path: str) -> None:
    spans = _attempt_spans(t)
    assert [s.name for s in spans] == ["GET", "GET", "GET"]
    attrs = [dict(s.attributes or {}) for s in spans]
    assert [a.get("http.request.resend_count") for a in attrs] == [None, 1, 2]
    assert [a["http.response.status_code"] for a in attrs] == [503, 503, 200]
    assert [a.get("error.type") for a in attrs] == ["503", "503", None]
    assert [s.status.status_code for s in spans] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    for a in attrs:
        assert a["http.request.method"] == "GET"
        assert a["server.address"] == "127.0.0.1"
        assert a["server.port"] == server.port
        assert a["url.full"] == f"{server.url}{path}?api_key=REDACTED"


def test_httpx_transport_opens_one_client_span_per_attempt(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    """Each resend carries http.request.resend_count; the query's values never show."""
    server.script("/r", Reply(503), Reply(503), Reply(200))
    with httpx.Client(transport=ResilientTransport(CONFIG), timeout=TIMEOUT) as client:
        assert client.get(server.url + "/r?api_key=TOPSECRET").status_code == 200
    _check_retry_spans(telemetry, server, "/r")


def test_requests_adapter_opens_one_client_span_per_attempt(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    server.script("/r", Reply(503), Reply(503), Reply(200))
    with requests.Session() as session:
        session.mount("http://", ResilientAdapter(CONFIG))
        assert session.get(server.url + "/r?api_key=TOPSECRET", timeout=TIMEOUT).status_code == 200
    _check_retry_spans(telemetry, server, "/r")


@pytest.mark.anyio
async def test_async_transport_opens_one_client_span_per_attempt(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    server.script("/r", Reply(503), Reply(503), Reply(200))
    transport = AsyncResilientTransport(CONFIG)
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        response = await client.get(server.url + "/r?api_key=TOPSECRET")
    assert response.status_code == 200
    _check_retry_spans(telemetry, server, "/r")


def test_a_failed_connection_is_recorded_by_type_without_its_message(
    telemetry: Telemetry, instant: FakeClock
) -> None:
    """The exception's text holds the URL; the span keeps only its type."""
    url = refused_url().replace("http://", "http://alice:s3cr3t@") + "/x?token=TOPSECRET"
    config = ResilientConfig(backoff=BackoffConfig(max_retries=1))
    with httpx.Client(transport=ResilientTransport(config), timeout=TIMEOUT) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(url)
    spans = _attempt_spans(telemetry)
    assert len(spans) == 2
    for span in spans:
        attrs = dict(span.attributes or {})
        assert attrs["error.type"] == "ConnectError"
        assert span.status.status_code is StatusCode.ERROR
        assert "http.response.status_code" not in attrs
        text = repr(attrs) + repr(span.events) + str(span.status.description)
        assert "s3cr3t" not in text
        assert "TOPSECRET" not in text
        assert "alice" not in text
    assert dict(spans[1].attributes or {})["http.request.resend_count"] == 1


def test_attempt_spans_are_children_of_the_callers_span(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    server.script("/r", Reply(502), Reply(200))
    tracer = telemetry.tracer_provider.get_tracer("app")
    with (
        tracer.start_as_current_span("checkout") as parent,
        httpx.Client(transport=ResilientTransport(CONFIG), timeout=TIMEOUT) as client,
    ):
        client.get(server.url + "/r")
    spans = _attempt_spans(telemetry)
    assert len(spans) == 2
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id


def test_metrics_count_retries_give_ups_transitions_rejections_and_fallbacks(
    telemetry: Telemetry, instant: FakeClock
) -> None:
    """A scripted outage of a decorated function, read from the in-memory metric reader."""
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=30_000),
        fallback="cached",
    )

    @resilient_api(config, name="otel-outage")
    def fetch() -> str:
        raise ConnectionError("down")

    assert fetch() == "cached"  # 3 attempts, 2 retries; the third failure opens the breaker
    assert fetch() == "cached"  # rejected
    breaker = {"smoothapi.breaker": "otel-outage"}

    def key(**extra: str) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted({**breaker, **{f"smoothapi.{k}": v for k, v in extra.items()}}.items()))

    assert telemetry.points("smoothapi.retries") == {key(cause="ConnectionError"): 2}
    assert telemetry.points("smoothapi.gave_up") == {key(reason="breaker open"): 1}
    assert telemetry.points("smoothapi.breaker.transitions") == {
        key(from_state="CLOSED", to_state="OPEN"): 1
    }
    assert telemetry.points("smoothapi.rejected") == {key(): 1}
    assert telemetry.points("smoothapi.fallbacks") == {key(): 2}
    state = telemetry.points("smoothapi.breaker.state")
    assert state[key(state="OPEN")] == 1
    assert state[key(state="CLOSED")] == 0
    assert state[key(state="HALF_OPEN")] == 0
    assert telemetry.points("smoothapi.breaker.failures")[key()] == 3
    assert telemetry.points("smoothapi.breaker.open_remaining")[key()] == pytest.approx(30.0)

    fetch.breaker.reset()
    state = telemetry.points("smoothapi.breaker.state")
    assert state[key(state="CLOSED")] == 1
    assert telemetry.points("smoothapi.breaker.open_remaining")[key()] == 0


def test_uninstrument_stops_spans_and_counters(server: ScriptedServer, instant: FakeClock) -> None:
    t = Telemetry()
    smoothapi.otel.instrument(meter_provider=t.meter_provider, tracer_provider=t.tracer_provider)
    smoothapi.otel.uninstrument()
    server.script("/r", Reply(503), Reply(200))
    with httpx.Client(transport=ResilientTransport(CONFIG), timeout=TIMEOUT) as client:
        assert client.get(server.url + "/r").status_code == 200
    assert t.finished() == []
    assert t.points("smoothapi.retries") == {}
    t.meter_provider.shutdown()
    t.tracer_provider.shutdown()


def test_nothing_of_opentelemetry_or_prometheus_loads_unless_instrumented() -> None:
    """Zero cost when off: the transports and the decorator run without importing either."""
    script = textwrap.dedent(
        """
        import sys
        import httpx, requests
        import smoothapi
        from smoothapi import ResilientTransport, ResilientAdapter, resilient_api, _runtime

        ok = lambda request: httpx.Response(200)
        with httpx.Client(transport=ResilientTransport(transport=httpx.MockTransport(ok))) as c:
            assert c.get("http://127.0.0.1:9/").status_code == 200
        requests.Session().mount("http://", ResilientAdapter())
        assert resilient_api()(lambda: 1)() == 1
        assert _runtime.tracing is None
        optional = ("opentelemetry", "prometheus_client")
        loaded = [m for m in sys.modules if m.split(".")[0] in optional]
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("path", "full"),
    [
        ("/files/%3Fsecret%3D1", "/files/%3Fsecret%3D1"),  # an encoded "?" is path, as sent
        ("/a%20b%2Fc?x=1&x=2", "/a%20b%2Fc?x=REDACTED&x=REDACTED"),
        ("/r?SECRETTOKEN", "/r?REDACTED"),  # a bare token is a value too
        ("/r?k=v&TOKEN", "/r?k=REDACTED&REDACTED"),
    ],
)
def test_url_full_is_the_url_as_sent_with_query_values_redacted(
    telemetry: Telemetry, server: ScriptedServer, path: str, full: str
) -> None:
    with httpx.Client(transport=ResilientTransport(CONFIG), timeout=TIMEOUT) as client:
        client.get(server.url + path)
    (span,) = _attempt_spans(telemetry)
    assert dict(span.attributes or {})["url.full"] == server.url + full


def test_instrument_again_on_the_same_meter_keeps_every_metric(instant: FakeClock) -> None:
    """The SDK hands back instruments already registered on a meter (ignoring new gauge
    callbacks): a second instrument() must still report the breaker gauges."""
    t = Telemetry()
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        fallback="x",
    )

    @resilient_api(config, name="otel-twice")
    def down() -> None:
        raise ConnectionError

    try:
        for _ in range(2):
            smoothapi.otel.instrument(meter_provider=t.meter_provider, traces_enabled=False)
            down()
        smoothapi.otel.uninstrument()
        smoothapi.otel.instrument(meter_provider=t.meter_provider, traces_enabled=False)
        down()
        key = (("smoothapi.breaker", "otel-twice"), ("smoothapi.state", "OPEN"))
        assert t.points("smoothapi.breaker.state")[key] == 1
        assert t.points("smoothapi.fallbacks") == {(("smoothapi.breaker", "otel-twice"),): 3}
    finally:
        smoothapi.otel.uninstrument()
        t.meter_provider.shutdown()
        t.tracer_provider.shutdown()


def _report(breaker: CircuitBreaker, clock: FakeClock, outcomes: str) -> None:
    """One attempt per word (ok, fail, slow: a success that took 0.5 s), 0.1 s apart."""
    for outcome in outcomes.split():
        ticket = breaker.acquire()
        if outcome == "fail":
            breaker.record_failure(ticket)
        else:
            breaker.record_success(ticket, elapsed=0.5 if outcome == "slow" else 0.01)
        clock.advance(0.1)


RATE = CircuitBreakerConfig(
    failure_rate=0.5, minimum_calls=4, window_ms=10_000, slow_call_ms=100, cooldown_ms=1_000
)


def test_openings_by_rule_kind_and_a_rate_breakers_window(
    telemetry: Telemetry, instant: FakeClock
) -> None:
    """smoothapi.breaker.openings counts by the kind (never the words with their numbers);
    the window's gauges are read at collection, for a failure-rate breaker only."""
    tripped = CircuitBreaker(RATE, name="otel-rate")
    _report(tripped, instant, "ok slow ok slow")  # slow call rate 0.50 over 4 calls
    instant.advance(1)
    _report(tripped, instant, "fail")  # the probe fails
    healthy = CircuitBreaker(RATE, name="otel-window")
    _report(healthy, instant, "ok fail ok ok slow ok")
    plain = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), name="otel-plain")
    _report(plain, instant, "fail")

    assert telemetry.points("smoothapi.breaker.openings") == {
        (("smoothapi.breaker", "otel-rate"), ("smoothapi.reason", "slow_rate")): 1,
        (("smoothapi.breaker", "otel-rate"), ("smoothapi.reason", "probe")): 1,
        (("smoothapi.breaker", "otel-plain"), ("smoothapi.reason", "consecutive")): 1,
    }

    def window(name: str) -> tuple[float | None, ...]:
        key = (("smoothapi.breaker", name),)
        return tuple(
            telemetry.points(f"smoothapi.breaker.window.{count}").get(key)
            for count in ("calls", "failures", "slow_calls")
        )

    assert window("otel-window") == (6, 2, 1)
    assert window("otel-rate") == (0, 0, 0)  # OPEN: the window restarts when it closes
    assert window("otel-plain") == (None, None, None)  # the consecutive rule has no window
    instant.advance(10)
    assert window("otel-window") == (0, 0, 0)  # read now, not when the calls happened


def test_a_breaker_move_is_an_event_on_the_callers_span(
    telemetry: Telemetry, instant: FakeClock
) -> None:
    """The request that trips the breaker carries the opening, with the rule's kind and its
    words; a move outside any span is dropped quietly; uninstrument stops the events."""
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=RATE,
    )
    outcomes = iter(["ok", "fail", "ok", "fail"])

    @resilient_api(config, name="otel-span")
    def fetch() -> str:
        if next(outcomes) == "fail":
            raise ConnectionError("down")
        return "fresh"

    tracer = telemetry.tracer_provider.get_tracer("app")
    fetch()  # no span current: nothing to add to, and no error
    for _ in range(3):
        with tracer.start_as_current_span("checkout"), contextlib.suppress(ConnectionError):
            fetch()
    spans = [s for s in telemetry.finished() if s.name == "checkout"]
    assert [len(s.events) for s in spans] == [0, 0, 1]
    (event,) = spans[-1].events
    assert event.name == smoothapi.otel.STATE_CHANGED
    assert dict(event.attributes or {}) == {
        "smoothapi.breaker": "otel-span",
        "smoothapi.from_state": "CLOSED",
        "smoothapi.to_state": "OPEN",
        "smoothapi.failures": 2,
        "smoothapi.reason": "rate",
        "smoothapi.reason_text": "failure rate 0.50 over 4 calls",
    }

    instant.advance(1)  # cooled down: the next call probes
    outcomes = iter(["ok"])
    with tracer.start_as_current_span("probe"):
        assert fetch() == "fresh"
    (probe,) = [s for s in telemetry.finished() if s.name == "probe"]
    assert [dict(e.attributes or {})["smoothapi.to_state"] for e in probe.events] == [
        "HALF_OPEN",
        "CLOSED",
    ]
    assert all("smoothapi.reason" not in (e.attributes or {}) for e in probe.events)

    smoothapi.otel.uninstrument()
    fetch.breaker.force_open()
    with tracer.start_as_current_span("after"):
        fetch.breaker.reset()
    (after,) = [s for s in telemetry.finished() if s.name == "after"]
    assert after.events == ()
