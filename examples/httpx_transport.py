"""``ResilientTransport``: an ``httpx.Client`` whose every request is retried and guarded.

Pass the transport once and keep writing plain ``client.get(...)``.  Against a
local flaky server (no network needed) the script shows: a blip of two 503s
retried inside the transport (``response.extensions["smoothapi_attempts"]``);
an outage that opens the origin's breaker, with the last 503 response handed
back as it is; the next request rejected without I/O by an error that
existing ``except httpx.TransportError`` clauses catch; a transport with
``fallback=`` answering instead; and the recovery after the cooldown.

Run it::

    python examples/httpx_transport.py
"""

from __future__ import annotations

import time

import httpx

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientConfig,
    ResilientTransport,
)
from smoothapi.cli.demo_server import FlakyServer

config = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.05, max_delay=0.5, max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=1_000),
)


def degraded(request: httpx.Request, error: BaseException) -> httpx.Response:
    """The fallback: a synthetic 200 response, built without I/O."""
    return httpx.Response(200, json={"status": "degraded"}, request=request)


def main() -> None:
    # HTTPTransport options (limits=, verify=, proxy=) pass through.
    transport = ResilientTransport(config, limits=httpx.Limits(max_connections=10))
    with FlakyServer() as server, httpx.Client(transport=transport, timeout=5) as client:
        url = f"{server.url}/users/1"

        response = client.get(url)
        print("healthy:", response.status_code, response.json())

        server.set_mode("flaky", script=[503, 503, 200])
        response = client.get(url)
        attempts = response.extensions["smoothapi_attempts"]
        print("blip:   ", response.status_code, f"after {attempts} attempts")

        server.set_mode("outage")
        response = client.get(url)
        print("outage: ", response.status_code, "- the last response, as is")
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            print("         raise_for_status() still raises:", exc.response.status_code)
        breaker = transport.breaker_for(url)
        print("breaker:", breaker.name, breaker.state)  # one breaker per origin

        try:
            client.get(url)
        except httpx.TransportError as exc:  # an existing except clause keeps working
            if isinstance(exc, CircuitOpenError):  # and it is smoothapi's error too
                print(f"open:    {type(exc).__name__}, retry in {exc.retry_after:.2f}s, no I/O")

        # A second transport with a fallback, sharing the origin's breaker.
        cached = ResilientTransport(config, breaker=breaker, fallback=degraded)
        with httpx.Client(transport=cached) as cached_client:
            print("fallback:", cached_client.get(url).json())
        print("requests while open:", server.count("outage") - 3)

        server.set_mode("healthy")
        time.sleep(breaker.retry_after + 0.05)  # let the cooldown pass
        response = client.get(url)  # the probe
        print("recovered:", response.status_code, f"breaker {breaker.state}")


if __name__ == "__main__":
    main()
