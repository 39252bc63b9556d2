"""``ResilientMiddleware`` in the telemetry: events, Prometheus and OpenTelemetry metrics, and
one OpenTelemetry CLIENT span per attempt, against a real HTTP server on 127.0.0.1.

As for the httpx transports (tests/telemetry/test_otel.py, test_prometheus.py): events and
metrics name a breaker by its origin (``scheme://host:port``), never userinfo or the query
string; each attempt is one span carrying ``http.request.resend_count`` from the first
resend on, with ``url.full`` as sent but its query values redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from httpserver import Delay, Reply, ScriptedServer, refused_url
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest

import smoothapi.otel
import smoothapi.prometheus
from smoothapi import (
    BackoffConfig,
    BulkheadConfig,
    CallRejected,
    CallShed,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    Event,
    FallbackServed,
    LoadShedError,
    ResilientConfig,
    ResilientMiddleware,
    RetriesExhausted,
    RetryScheduled,
    StateChanged,
)
from smoothapi.testing import FakeClock

TIMEOUT = aiohttp.ClientTimeout(total=10)
SECRETS = ("secret", "SECRET", "api_key", "user:")


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only."""
    return "asyncio"


def cfg(max_retries: int = 3, threshold: int = 100, **kwargs: Any) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=max_retries),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=30_000),
        **kwargs,
    )


def fallback(request: aiohttp.ClientRequest, error: BaseException) -> aiohttp.ClientResponse:
    return ResilientMiddleware.response(request, json={"cached": True})


@contextlib.asynccontextmanager
async def session_for(
    config: ResilientConfig, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientSession]:
    middleware = ResilientMiddleware(config, **kwargs)
    async with aiohttp.ClientSession(middlewares=(middleware,), timeout=TIMEOUT) as session:
        yield session


async def status(session: aiohttp.ClientSession, url: str) -> int:
    async with asyncio.timeout(10), session.get(url) as response:
        await response.read()
        return response.status


def secret_url(server: ScriptedServer, path: str = "/x") -> str:
    return f"http://user:secret@127.0.0.1:{server.port}{path}?api_key=SECRET"


# -- events ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_events_name_the_origin_never_userinfo_or_query(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A failing origin reached through a URL with userinfo and an API key in its query:
    RetryScheduled, StateChanged, RetriesExhausted, CallRejected and FallbackServed all name
    http://127.0.0.1:PORT, and nothing in them carries the secrets."""
    events: list[Event] = []
    server.default = Reply(503)
    config = cfg(max_retries=1, threshold=2, hooks=(events.append,))
    async with session_for(config, fallback=fallback) as session:
        assert await status(session, secret_url(server)) == 503  # two attempts open it
        assert await status(session, secret_url(server)) == 200  # rejected: the fallback
    kinds = [type(e) for e in events]
    for kind in (RetryScheduled, StateChanged, RetriesExhausted, CallRejected, FallbackServed):
        assert kind in kinds, kinds
    assert {e.name for e in events} == {server.origin}
    [retry] = [e for e in events if isinstance(e, RetryScheduled)]
    assert (retry.attempt, retry.status) == (1, 503)
    [moved] = [e for e in events if isinstance(e, StateChanged)]
    assert (moved.old, moved.new) == (CircuitState.CLOSED, CircuitState.OPEN)
    [served] = [e for e in events if isinstance(e, FallbackServed)]
    assert isinstance(served.error, CircuitOpenError)
    assert isinstance(served.error, aiohttp.ClientConnectionError)
    text = repr(events) + "".join(str(getattr(e, "error", "")) for e in events)
    for secret in SECRETS:
        assert secret not in text, (secret, text)


@pytest.mark.anyio
async def test_a_refused_connections_events_carry_aiohttps_error(instant: FakeClock) -> None:
    """RetryScheduled and RetriesExhausted carry aiohttp's ClientConnectorError, named by
    origin only."""
    events: list[Event] = []
    url = refused_url()
    async with session_for(cfg(max_retries=2, hooks=(events.append,))) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await status(session, url.replace("http://", "http://alice:pw@") + "/?token=T0P")
    retries = [e for e in events if isinstance(e, RetryScheduled)]
    assert len(retries) == 2
    assert all(isinstance(e.error, aiohttp.ClientConnectorError) for e in retries)
    [exhausted] = [e for e in events if isinstance(e, RetriesExhausted)]
    assert exhausted.attempts == 3
    assert {e.name for e in events} == {url}  # http://127.0.0.1:PORT
    assert "alice" not in repr([e.name for e in events])


@pytest.mark.anyio
async def test_an_async_hook_is_awaited(server: ScriptedServer, instant: FakeClock) -> None:
    """An ``async def`` hook on the config is awaited within the request, on aiohttp's loop."""
    seen: list[str] = []

    async def hook(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(type(event).__name__)

    server.script("/x", Reply(503), Reply(200))
    async with session_for(cfg(hooks=(hook,))) as session:
        assert await status(session, server.url + "/x") == 200
    assert seen == ["RetryScheduled"]


# -- Prometheus ----------------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    smoothapi.prometheus.instrument(registry)
    try:
        yield registry
    finally:
        smoothapi.prometheus.uninstrument()


@pytest.mark.anyio
async def test_prometheus_counts_by_origin(
    registry: CollectorRegistry, server: ScriptedServer, instant: FakeClock
) -> None:
    """Retries by cause, the transition, the rejection, the fallback and the breaker gauges,
    labelled by origin; the exposition never shows the query's secret."""
    server.script("/p", Reply(503), Reply(503), Reply(200))
    async with session_for(cfg()) as session:
        assert await status(session, server.url + "/p?key=SECRET") == 200
    value = registry.get_sample_value
    b = {"breaker": server.origin}
    assert value("smoothapi_retries_total", {**b, "cause": "503"}) == 2
    assert value("smoothapi_breaker_state", {**b, "state": "CLOSED"}) == 1

    down = ScriptedServer().start()
    try:
        down.default = Reply(503)
        async with session_for(cfg(max_retries=1, threshold=2), fallback=fallback) as session:
            assert await status(session, down.url + "/d?key=SECRET") == 503
            assert await status(session, down.url + "/d?key=SECRET") == 200
        d = {"breaker": down.origin}
        assert value("smoothapi_retries_total", {**d, "cause": "503"}) == 1
        transition = {**d, "from_state": "CLOSED", "to_state": "OPEN"}
        assert value("smoothapi_breaker_transitions_total", transition) == 1
        assert value("smoothapi_rejected_total", d) == 1
        assert value("smoothapi_fallbacks_total", d) == 1
        assert value("smoothapi_breaker_state", {**d, "state": "OPEN"}) == 1
        assert value("smoothapi_breaker_open_remaining_seconds", d) == pytest.approx(30.0)
    finally:
        down.stop()
    text = generate_latest(registry).decode()
    assert "SECRET" not in text
    assert "key=" not in text


@pytest.mark.anyio
async def test_prometheus_counts_a_call_shed_by_the_bulkhead(
    registry: CollectorRegistry, server: ScriptedServer
) -> None:
    """One permit, no queue: while one request holds it the next is shed, without I/O, and
    smoothapi_shed_total{stage="bulkhead"} counts it."""
    events: list[Event] = []
    server.script("/held", Delay(0.3, Reply(200)))
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        bulkhead=BulkheadConfig(max_concurrent=1, max_queue=0),
        hooks=(events.append,),
    )
    async with session_for(config) as session:
        held = asyncio.ensure_future(status(session, server.url + "/held"))
        for _ in range(2000):  # liveness: until the first request holds the permit
            if server.count("/held"):
                break
            await asyncio.sleep(0.005)
        with pytest.raises(LoadShedError) as info:
            await status(session, server.url + "/shed")
        assert isinstance(info.value, aiohttp.ClientConnectionError)
        assert await held == 200
    assert server.count("/shed") == 0
    labels = {"breaker": server.origin, "stage": "bulkhead"}
    assert registry.get_sample_value("smoothapi_shed_total", labels) == 1
    [shed] = [e for e in events if isinstance(e, CallShed)]
    assert (shed.name, shed.stage) == (server.origin, "bulkhead")


# -- OpenTelemetry -------------------------------------------------------------------------------


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def attempts(self) -> list[ReadableSpan]:
        """The CLIENT spans, in the order they started."""
        return sorted(
            (s for s in self.spans.get_finished_spans() if s.kind is SpanKind.CLIENT),
            key=lambda s: s.start_time or 0,
        )

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


@pytest.mark.anyio
async def test_one_client_span_per_attempt(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    """503, 503, 200: three CLIENT spans; http.request.resend_count absent on the first, then
    1 and 2; the 503s are errors typed "503"; url.full as sent with the query value redacted."""
    server.script("/r", Reply(503), Reply(503), Reply(200))
    async with session_for(cfg()) as session:
        assert await status(session, server.url + "/r?api_key=TOPSECRET") == 200
    spans = telemetry.attempts()
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
        assert a["url.full"] == f"{server.url}/r?api_key=REDACTED"


@pytest.mark.anyio
async def test_the_happy_path_is_one_span_without_a_resend_count(
    telemetry: Telemetry, server: ScriptedServer
) -> None:
    async with session_for(cfg()) as session:
        assert await status(session, server.url + "/ok") == 200
        assert await status(session, server.url + "/ok") == 200
    spans = telemetry.attempts()
    assert len(spans) == 2  # each request starts its own count
    assert all("http.request.resend_count" not in (s.attributes or {}) for s in spans)


@pytest.mark.anyio
async def test_a_failed_connection_is_recorded_by_type_without_its_message(
    telemetry: Telemetry, instant: FakeClock
) -> None:
    """aiohttp's error text holds the host; the span keeps only the error's type."""
    url = refused_url().replace("http://", "http://alice:s3cr3t@") + "/x?token=TOPSECRET"
    async with session_for(cfg(max_retries=1)) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await status(session, url)
    spans = telemetry.attempts()
    assert len(spans) == 2
    for span in spans:
        attrs = dict(span.attributes or {})
        assert attrs["error.type"] == "ClientConnectorError"
        assert span.status.status_code is StatusCode.ERROR
        assert "http.response.status_code" not in attrs
        text = repr(attrs) + repr(span.events) + str(span.status.description)
        for secret in ("s3cr3t", "TOPSECRET", "alice"):
            assert secret not in text, text
    assert dict(spans[1].attributes or {})["http.request.resend_count"] == 1


@pytest.mark.anyio
async def test_a_rejected_or_fallback_request_makes_no_span(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    """Nothing is sent while the breaker is open: no attempt span, with or without fallback."""
    server.default = Reply(503)
    async with session_for(cfg(max_retries=0, threshold=1), fallback=fallback) as session:
        assert await status(session, server.url + "/x") == 503
        assert await status(session, server.url + "/x") == 200  # the fallback
    async with session_for(cfg(max_retries=0, threshold=1)) as session:
        assert await status(session, server.url + "/y") == 503
        with pytest.raises(CircuitOpenError):
            await status(session, server.url + "/y")
    assert len(telemetry.attempts()) == 2
    assert server.count() == 2


@pytest.mark.anyio
async def test_attempt_spans_are_children_of_the_callers_span(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    server.script("/r", Reply(502), Reply(200))
    tracer = telemetry.tracer_provider.get_tracer("app")
    async with session_for(cfg()) as session:
        with tracer.start_as_current_span("checkout") as parent:
            assert await status(session, server.url + "/r") == 200
    spans = telemetry.attempts()
    assert len(spans) == 2
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id


@pytest.mark.anyio
async def test_the_breaker_opening_is_an_event_on_the_callers_span(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    server.default = Reply(503)
    tracer = telemetry.tracer_provider.get_tracer("app")
    async with session_for(cfg(max_retries=1, threshold=2)) as session:
        with tracer.start_as_current_span("checkout"):
            assert await status(session, server.url + "/x") == 503
    [checkout] = [s for s in telemetry.spans.get_finished_spans() if s.name == "checkout"]
    [event] = checkout.events
    assert event.name == smoothapi.otel.STATE_CHANGED
    attributes = dict(event.attributes or {})
    assert attributes["smoothapi.breaker"] == server.origin
    assert (attributes["smoothapi.from_state"], attributes["smoothapi.to_state"]) == (
        "CLOSED",
        "OPEN",
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "full"),
    [
        ("/files/%3Fsecret%3D1", "/files/%3Fsecret%3D1"),  # an encoded "?" is path, as sent
        ("/a%20b%2Fc?x=1&x=2", "/a%20b%2Fc?x=REDACTED&x=REDACTED"),
        ("/r?SECRETTOKEN", "/r?REDACTED"),  # a bare token is a value too
        ("/r?k=v&TOKEN", "/r?k=REDACTED&REDACTED"),
    ],
)
async def test_url_full_is_the_url_as_sent_with_query_values_redacted(
    telemetry: Telemetry, server: ScriptedServer, path: str, full: str
) -> None:
    async with session_for(cfg()) as session:
        async with session.get(aiohttp.client.URL(server.url + path, encoded=True)) as response:
            await response.read()
    (span,) = telemetry.attempts()
    assert dict(span.attributes or {})["url.full"] == server.url + full


@pytest.mark.anyio
async def test_otel_metrics_count_by_origin(
    telemetry: Telemetry, server: ScriptedServer, instant: FakeClock
) -> None:
    """Retries, the give-up, the transition, the rejection and the fallback as OTel points,
    labelled by origin."""
    server.default = Reply(503)
    async with session_for(cfg(max_retries=1, threshold=2), fallback=fallback) as session:
        assert await status(session, server.url + "/x?api_key=SECRET") == 503
        assert await status(session, server.url + "/x?api_key=SECRET") == 200
    breaker = (("smoothapi.breaker", server.origin),)

    def key(**extra: str) -> tuple[tuple[str, Any], ...]:
        return tuple(
            sorted({**dict(breaker), **{f"smoothapi.{k}": v for k, v in extra.items()}}.items())
        )

    assert telemetry.points("smoothapi.retries") == {key(cause="503"): 1}
    assert telemetry.points("smoothapi.breaker.transitions") == {
        key(from_state="CLOSED", to_state="OPEN"): 1
    }
    assert telemetry.points("smoothapi.rejected") == {key(): 1}
    assert telemetry.points("smoothapi.fallbacks") == {key(): 1}
    assert telemetry.points("smoothapi.breaker.state")[key(state="OPEN")] == 1


@pytest.mark.anyio
async def test_uninstrument_stops_spans(server: ScriptedServer, instant: FakeClock) -> None:
    t = Telemetry()
    smoothapi.otel.instrument(meter_provider=t.meter_provider, tracer_provider=t.tracer_provider)
    smoothapi.otel.uninstrument()
    server.script("/r", Reply(503), Reply(200))
    try:
        async with session_for(cfg()) as session:
            assert await status(session, server.url + "/r") == 200
        assert t.attempts() == []
        assert t.points("smoothapi.retries") == {}
    finally:
        t.meter_provider.shutdown()
        t.tracer_provider.shutdown()


@pytest.mark.anyio
async def test_a_deadline_cut_span_says_timeout(
    telemetry: Telemetry, server: ScriptedServer
) -> None:
    """An attempt cut at the deadline is an error span typed as the caller's error
    (ServerTimeoutError), never a bare cancellation."""
    server.default = Delay(5.0, Reply(200))
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0), deadline=0.3, circuit_breaker=CircuitBreakerConfig()
    )
    async with session_for(config) as session:
        with pytest.raises(aiohttp.ServerTimeoutError):
            await status(session, server.url + "/slow")
    (span,) = telemetry.attempts()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "ServerTimeoutError"
