"""``ResilientAdapter``: every request of a ``requests.Session`` retried and guarded.

Mount the adapter once and keep writing plain ``session.get(...)``.  Against a
local flaky server (no network needed) the script shows: a blip of two 503s
retried inside the adapter (``response.smoothapi_attempts``); an outage that
opens the origin's breaker, with the last 503 response handed back as it is;
the next request rejected without I/O by an error that existing
``except requests.ConnectionError`` clauses catch; an adapter with
``fallback=`` answering instead; and the recovery after the cooldown.

Run it::

    python examples/requests_adapter.py
"""

from __future__ import annotations

import json
import time

import requests

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientAdapter,
    ResilientConfig,
)
from smoothapi.cli.demo_server import FlakyServer

config = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.05, max_delay=0.5, max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=1_000),
)


def degraded(request: requests.PreparedRequest, error: BaseException) -> requests.Response:
    """The fallback: a synthetic 200 response, built without I/O."""
    response = requests.Response()
    response.status_code = 200
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps({"status": "degraded"}).encode()  # what .json() reads
    response.request, response.url = request, request.url or ""
    return response


def main() -> None:
    adapter = ResilientAdapter(config, pool_maxsize=10)  # HTTPAdapter options pass through
    with FlakyServer() as server, requests.Session() as session:
        session.mount("http://", adapter)
        url = f"{server.url}/users/1"

        response = session.get(url, timeout=5)
        print("healthy:", response.status_code, response.json())

        server.set_mode("flaky", script=[503, 503, 200])
        response = session.get(url, timeout=5)
        attempts = response.smoothapi_attempts  # type: ignore[attr-defined]
        print("blip:   ", response.status_code, f"after {attempts} attempts")

        server.set_mode("outage")
        response = session.get(url, timeout=5)
        print("outage: ", response.status_code, "- the last response, as is")
        try:
            response.raise_for_status()
        except requests.HTTPError as exc:
            print("         raise_for_status() still raises:", exc.response.status_code)
        breaker = adapter.breaker_for(url)
        print("breaker:", breaker.name, breaker.state)  # one breaker per origin

        try:
            session.get(url, timeout=5)
        except requests.ConnectionError as exc:  # an existing except clause keeps working
            if isinstance(exc, CircuitOpenError):  # and it is smoothapi's error too
                print(f"open:    {type(exc).__name__}, retry in {exc.retry_after:.2f}s, no I/O")

        # A second adapter with a fallback, sharing the origin's breaker.
        with requests.Session() as cached:
            cached.mount("http://", ResilientAdapter(config, breaker=breaker, fallback=degraded))
            print("fallback:", cached.get(url, timeout=5).json())
        print("requests while open:", server.count("outage") - 3)

        server.set_mode("healthy")
        time.sleep(breaker.retry_after + 0.05)  # let the cooldown pass
        response = session.get(url, timeout=5)  # the probe
        print("recovered:", response.status_code, f"breaker {breaker.state}")


if __name__ == "__main__":
    main()
