"""One ``CircuitBreaker`` shared by a decorated function and an httpx transport.

``@resilient_api(config, breaker=breaker)`` and ``ResilientTransport(config,
breaker=breaker)`` guard the same upstream with one breaker: a failure seen
through either counts toward the same ``failure_threshold``, and once it
opens, both stop sending requests.  The decorated function here uses
``requests``, the transport ``httpx``: the breaker does not care.  Each call
makes one attempt (``max_retries=0``) so that every failure is easy to count.

Run it::

    python examples/shared_breaker.py
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import requests

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.cli.demo_server import FlakyServer

breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3, cooldown_ms=1_000), name="users")
config = ResilientConfig(backoff=BackoffConfig(max_retries=0))


@resilient_api(config, breaker=breaker)
def get_profile(api: str, user_id: int) -> Any:
    response = requests.get(f"{api}/users/{user_id}", timeout=5)
    response.raise_for_status()
    return response.json()


def show(via: str, outcome: object) -> None:
    print(f"{via:<10} {outcome!s:<35} breaker {breaker.state}, failures {breaker.failure_count}")


def main() -> None:
    transport = ResilientTransport(config, breaker=breaker)
    with FlakyServer() as server, httpx.Client(transport=transport, timeout=5) as client:
        api = server.url
        server.set_mode("outage")
        try:
            get_profile(api, 1)
        except requests.HTTPError:
            show("decorator", "503: HTTPError raised")
        show("transport", f"{client.get(f'{api}/users/1').status_code}: response returned")
        try:
            get_profile(api, 1)
        except requests.HTTPError:
            show("decorator", "503: HTTPError raised")

        try:
            client.get(f"{api}/users/2")
        except httpx.TransportError as exc:
            show("transport", f"rejected: {type(exc).__name__}")
        try:
            get_profile(api, 2)
        except CircuitOpenError as exc:
            show("decorator", f"rejected: {type(exc).__name__}")
        print("requests while open:", server.count("outage") - 3)

        server.set_mode("healthy")
        time.sleep(breaker.retry_after + 0.05)  # let the cooldown pass
        show("transport", client.get(f"{api}/users/3"))  # the probe closes the shared breaker
        show("decorator", get_profile(api, 4))


if __name__ == "__main__":
    main()
