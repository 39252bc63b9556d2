"""Seeing what smoothapi does: hooks, the ``smoothapi`` logger, OpenTelemetry spans and
Prometheus metrics, through one ``httpx.Client`` against a local flaky server.

Needs the extras: ``pip install -e ".[httpx,otel,prometheus]" opentelemetry-sdk``.
The spans go to an in-memory exporter and the metrics to a private registry so
that the script can print them; in an application you would configure your
exporter and scrape the default registry instead.

Run it::

    python examples/observability.py
"""

from __future__ import annotations

import logging
import sys

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

import smoothapi
import smoothapi.otel
import smoothapi.prometheus
from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, ResilientTransport
from smoothapi.cli.demo_server import FlakyServer


def on_event(event: smoothapi.Event) -> None:
    """A plain hook: every event, typed and frozen (errors shown by type only)."""
    print("hook:   ", event)


config = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.02, max_delay=0.2, max_retries=2),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=500),
    hooks=(on_event,),
)


def main() -> None:
    # The smoothapi logger: one line per retry (DEBUG), breaker moves at WARNING/INFO.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("log:     %(levelname)s %(message)s"))
    logging.getLogger("smoothapi").addHandler(handler)
    logging.getLogger("smoothapi").setLevel(logging.DEBUG)

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    smoothapi.otel.instrument(tracer_provider=tracer_provider, metrics_enabled=False)
    registry = CollectorRegistry()
    smoothapi.prometheus.instrument(registry)

    transport = ResilientTransport(config)
    with FlakyServer() as server, httpx.Client(transport=transport, timeout=5) as client:
        server.set_mode("flaky", script=[503, 503, 200])
        response = client.get(f"{server.url}/users/1?api_key=SECRET")
        print("blip:   ", response.status_code, "after", response.extensions["smoothapi_attempts"])

        for span in spans.get_finished_spans():
            attributes = span.attributes or {}
            print(
                f"span:    {span.name} {attributes.get('http.response.status_code')} "
                f"resend_count={attributes.get('http.request.resend_count', '-')} "
                f"url={attributes.get('url.full')}"
            )

        server.set_mode("outage")
        client.get(f"{server.url}/users/1")  # 3 failures: the origin's breaker opens
        try:
            client.get(f"{server.url}/users/1")
        except smoothapi.CircuitOpenError as exc:
            print("open:   ", type(exc).__name__)

        for breaker in smoothapi.live_breakers():
            print(
                f"breaker: {breaker.name} {breaker.state.value} "
                f"failures={breaker.failure_count} open for {breaker.retry_after:.1f}s more"
            )
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith(("smoothapi_retries_total", "smoothapi_breaker_state{")):
                print("metric: ", line.replace(server.url, "http://127.0.0.1:PORT"))

    smoothapi.otel.uninstrument()
    smoothapi.prometheus.uninstrument()


if __name__ == "__main__":
    main()
