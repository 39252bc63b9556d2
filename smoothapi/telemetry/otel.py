"""OpenTelemetry metrics and traces for smoothapi (``pip install "smoothapi-py[otel]"``).

::

    import smoothapi.otel

    smoothapi.otel.instrument()  # the global providers; or pass meter_provider=/tracer_provider=

**Metrics** - counters that advance from events (retries, give-ups by reason,
rejections, fallbacks, retry-budget refusals, breaker transitions, openings by
the kind of rule that tripped, store outages, calls shed by each load-control
stage, hedges sent) and gauges read from every live breaker at collection
(state, failures counted, seconds left open, and a failure-rate breaker's
window: calls, failures, slow calls).  Names and labels
are in :mod:`smoothapi.telemetry._base`; attributes are namespaced ``smoothapi.*``.

**Traces** - the transports (``ResilientAdapter``, ``ResilientTransport``,
``AsyncResilientTransport``) open one CLIENT span per physical attempt,
following the OpenTelemetry HTTP client conventions: named after the method,
with ``http.request.method``, ``server.address``, ``server.port``,
``url.full`` (as sent; userinfo dropped, query values and bare tokens replaced by
``REDACTED``),
``http.response.status_code``, ``error.type`` and, on every resend,
``http.request.resend_count`` (1 for the first retry).  The span is current
while the attempt runs, so spans of an inner instrumentation nest under it.
An exception is recorded by type only (its message often holds the URL).
A breaker's move adds the event ``smoothapi.breaker.state_changed`` to the span
current where it happened (the caller's: the request that tripped the breaker
or probed it), with ``smoothapi.breaker``, ``smoothapi.from_state``,
``smoothapi.to_state``, ``smoothapi.failures`` and, for a move to OPEN,
``smoothapi.reason`` (the kind of rule, as on the openings counter) and
``smoothapi.reason_text`` (its words: ``failure rate 0.53 over 212 calls``).

Nothing here is imported, allocated or called unless :func:`instrument` runs:
the transports read one module attribute per call to learn that tracing is
off, and the counters hang off the event hooks, which a succeeding call
never reaches.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _runtime
from .. import events as _events
from . import _base as _telemetry
from ._base import Counter, Gauge, Reading, Subscription

__all__ = ["instrument", "uninstrument"]

_lock = threading.Lock()
_active: _Instrumentation | None = None


@_runtime.at_fork_child
def _after_fork_in_child() -> None:
    # Another thread may have held the lock when the process forked (see _runtime).
    global _lock
    _lock = threading.Lock()


def instrument(
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    metrics_enabled: bool = True,
    traces_enabled: bool = True,
) -> None:
    """Start reporting smoothapi's metrics and attempt spans to OpenTelemetry.

    Without providers, the globally configured ones are used.  Calling it
    again replaces the previous instrumentation; :func:`uninstrument` stops it.
    """
    global _active
    from .. import __version__  # noqa: PLC0415 - avoids an import cycle

    with _lock:
        if _active is not None:
            _active.close()
            _active = None
        instrumentation = _Instrumentation()
        if metrics_enabled:
            meter = metrics.get_meter("smoothapi", __version__, meter_provider)
            instrumentation.start_metrics(meter)
        if traces_enabled:
            tracer = trace.get_tracer("smoothapi", __version__, tracer_provider)
            instrumentation.tracing = Tracing(tracer)
            _runtime.tracing = instrumentation.tracing
            _events.add_hook(instrumentation.tracing.on_event)
        _active = instrumentation


def uninstrument() -> None:
    """Stop reporting: no more spans, no counter moves, gauges report nothing."""
    global _active
    with _lock:
        if _active is not None:
            _active.close()
            _active = None


def _attributes(labels: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    return {f"smoothapi.{label}": value for label, value in zip(labels, values, strict=True)}


class _Instruments:
    """smoothapi's instruments on one meter, created once: the OpenTelemetry SDK hands back
    an instrument already registered under a name (and ignores new callbacks), so a
    second instrument() on the same meter reuses these, and they report while active."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.meter = meter
        self.counters = {
            counter: meter.create_counter(
                counter.name, unit=counter.unit, description=counter.description
            )
            for counter in _telemetry.COUNTERS
        }
        self._cache: tuple[list[Reading], set[Gauge]] = ([], set(_telemetry.GAUGES))
        for gauge in _telemetry.GAUGES:
            meter.create_observable_gauge(
                gauge.name,
                callbacks=[self._observer(gauge)],
                unit=gauge.unit,
                description=gauge.description,
            )

    def count(self, counter: Counter, values: tuple[str, ...]) -> None:
        self.counters[counter].add(1, _attributes(counter.labels, values))

    def _observer(self, gauge: Gauge) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            active = _active
            if active is None or active.instruments is not self:
                return
            for reading in self._readings(gauge):
                for measured, values, value in _telemetry.gauge_values(reading):
                    if measured is gauge:
                        yield Observation(value, _attributes(gauge.labels, values))

        return observe

    def _readings(self, gauge: Gauge) -> list[Reading]:
        # One collection calls each gauge's callback once: read every breaker once for
        # all three (a shared breaker's read is a round trip to its store), and again
        # when a gauge comes back for more, which means a new collection.
        readings, used = self._cache
        if gauge in used:
            readings, used = list(_telemetry.readings()), set()
            self._cache = (readings, used)
        used.add(gauge)
        return readings


# By id(meter), with the meter itself kept alive so that the id stays its own.
_instruments: dict[int, _Instruments] = {}


class _Instrumentation:
    def __init__(self) -> None:
        self.subscription: Subscription | None = None
        self.instruments: _Instruments | None = None
        self.tracing: Tracing | None = None

    def start_metrics(self, meter: metrics.Meter) -> None:
        instruments = _instruments.get(id(meter))
        if instruments is None or instruments.meter is not meter:
            instruments = _instruments[id(meter)] = _Instruments(meter)
        self.instruments = instruments
        self.subscription = Subscription(instruments.count)

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
        if self.tracing is not None:
            _events.remove_hook(self.tracing.on_event)
            if _runtime.tracing is self.tracing:
                _runtime.tracing = None


#: The name of the span event a breaker's move adds to the current span.
STATE_CHANGED = "smoothapi.breaker.state_changed"
# The words of an opening whose breaker gave none (a store that predates the trip rules):
# its kind is read from the move, and these are what the log line says for it.
_WORDS = {"consecutive": "consecutive failures", "probe": "probe failed", "forced": "forced open"}


class Tracing:
    """Opens a CLIENT span around each physical attempt a transport makes, and adds a
    breaker's moves to the current span."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def on_event(self, event: _events.Event) -> None:
        """A breaker's move, as an event on the span current where it happened: the
        caller's span (the request that tripped the breaker, or that was its probe),
        since a transport's attempt span has ended by the time the attempt is reported."""
        if not isinstance(event, _events.StateChanged):
            return
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            "smoothapi.breaker": event.name,
            "smoothapi.from_state": event.old.value,
            "smoothapi.to_state": event.new.value,
            "smoothapi.failures": event.failures,
        }
        kind = _events.reason_kind(event)
        if kind:
            attributes["smoothapi.reason"] = kind  # as on smoothapi.breaker.openings
            attributes["smoothapi.reason_text"] = event.reason or _WORDS.get(kind, kind)
        span.add_event(STATE_CHANGED, attributes)

    def httpx(self, transport: Any) -> Any:
        """Wrap an httpx transport for one logical request: each call is one attempt."""
        return _TracedHTTPX(self, transport)

    def aiohttp(self, handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """Wrap an aiohttp middleware's ``handler`` for one logical request: each call is one
        attempt."""
        sent = 0

        async def traced(request: Any) -> Any:
            nonlocal sent
            resends = sent
            sent += 1
            with self.attempt(request.method, _YarlURL(request.url), resends) as span:
                response = await handler(request)
                _finish(span, response.status)
                return response

        return traced

    def requests(self, send: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``HTTPAdapter.send`` for one logical request: each call is one attempt."""
        sent = 0

        def traced_send(request: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal sent
            resends = sent
            sent += 1
            url = urlsplit(request.url or "")
            with self.attempt(request.method or "GET", url, resends) as span:
                response = send(request, *args, **kwargs)
                _finish(span, response.status_code)
                return response

        return traced_send

    @contextmanager
    def attempt(self, method: str, url: Any, resends: int) -> Iterator[trace.Span]:
        """One attempt's span (``url``: ``scheme``, ``hostname``, ``port``, ``path``, ``query``)."""
        scheme = url.scheme or "http"
        host = url.hostname or ""
        port = url.port or (443 if scheme == "https" else 80)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": host,
            "server.port": port,
            "url.full": _full_url(scheme, host, url.port, url.path, url.query),
        }
        if resends:
            attributes["http.request.resend_count"] = resends
        with self.tracer.start_as_current_span(
            method,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                kind = type(exc).__qualname__
                span.set_attribute("error.type", kind)
                span.set_status(Status(StatusCode.ERROR, kind))
                raise


class _TracedHTTPX:
    """An httpx transport stand-in: the resilient transport's attempts go through it."""

    def __init__(self, tracing: Tracing, transport: Any) -> None:
        self._tracing = tracing
        self._transport = transport
        self._sent = 0

    def _resends(self) -> int:
        resends = self._sent
        self._sent += 1
        return resends

    def handle_request(self, request: Any) -> Any:
        with self._tracing.attempt(request.method, _HTTPXURL(request.url), self._resends()) as span:
            response = self._transport.handle_request(request)
            _finish(span, response.status_code)
            return response

    async def handle_async_request(self, request: Any) -> Any:
        with self._tracing.attempt(request.method, _HTTPXURL(request.url), self._resends()) as span:
            response = await self._transport.handle_async_request(request)
            _finish(span, response.status_code)
            return response


class _HTTPXURL:
    # httpx.URL's parts under the names urlsplit uses.
    __slots__ = ("hostname", "path", "port", "query", "scheme")

    def __init__(self, url: Any) -> None:
        # The bytes as sent: `url.path`/`url.host` are decoded (%3F would become a "?",
        # an IDNA host its Unicode form).
        self.scheme = url.scheme
        self.hostname = url.raw_host.decode("ascii", "replace")
        self.port = url.port
        path, _, query = url.raw_path.decode("ascii", "replace").partition("?")
        self.path = path
        self.query = query


class _YarlURL:
    # yarl.URL's parts (as sent) under the names urlsplit uses; no port when it is the default.
    __slots__ = ("hostname", "path", "port", "query", "scheme")

    def __init__(self, url: Any) -> None:
        self.scheme = url.scheme
        self.hostname = url.raw_host or ""
        self.port = url.explicit_port
        self.path = url.raw_path
        self.query = url.raw_query_string


def _finish(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 400:  # the HTTP client conventions' error boundary
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))


def _full_url(scheme: str, host: str, port: int | None, path: str, query: str) -> str:
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    url = f"{scheme}://{netloc}{path or '/'}"
    if query:
        # Keys stay (as sent) to show the request's shape; a value, or a part that is
        # not key=value at all (a bare token), is replaced.
        parts = query.split("&")
        redacted = [
            f"{part.partition('=')[0]}=REDACTED" if "=" in part else "REDACTED" for part in parts
        ]
        url = f"{url}?{'&'.join(redacted)}"
    return url
