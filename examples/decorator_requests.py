"""``@resilient_api`` around a function that calls ``requests`` (the seed README's example).

A local flaky server stands in for ``https://api.example.com`` (no network
needed).  The script shows a transient blip retried away, an outage opening
the circuit breaker, the fallback answering without I/O, a per-call
fallback override, ``CircuitOpenError`` when there is no fallback, and the
recovery once the cooldown has passed.

Run it::

    python examples/decorator_requests.py
"""

from __future__ import annotations

import time
from typing import Any

import requests

from smoothapi import (  # the seed's `from smooth_api import ...` works too
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientConfig,
    resilient_api,
)
from smoothapi.cli.demo_server import FlakyServer

config = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.05, max_delay=0.5, max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=1_000),
    fallback={"status": "degraded", "data": []},  # returned while the circuit is OPEN
    retry_on=[429, 500, 502, 503, 504],
)


@resilient_api(config)
def get_user_data(api: str, user_id: str) -> Any:
    res = requests.get(f"{api}/users/{user_id}", timeout=5)
    res.raise_for_status()  # the decorator reads the status from the HTTPError
    return res.json()


def main() -> None:
    with FlakyServer() as server:
        api = server.url
        print("healthy:", get_user_data(api, "1"))

        server.set_mode("flaky", script=[503, 503, 200])
        print("blip:   ", get_user_data(api, "2"), f"after {server.count('flaky')} requests")

        server.set_mode("outage")
        print("outage: ", get_user_data(api, "3"), f"after {server.count('outage')} requests")
        print("breaker:", get_user_data.breaker.state)  # OPEN: 3 failed attempts in a row
        print("open:   ", get_user_data(api, "4"), "- no request sent")
        # Per call: get_user_data(api, "5", fallback=...) as in the seed; this form type-checks.
        print("per-call fallback:", get_user_data.with_fallback({"status": "override"})(api, "5"))
        try:
            get_user_data.with_fallback(None)(api, "6")  # no fallback: the rejection raises
        except CircuitOpenError as exc:
            print(f"no fallback: {exc}")
        print("requests during the open circuit:", server.count("outage") - 3)

        server.set_mode("healthy")
        time.sleep(get_user_data.breaker.retry_after + 0.05)  # let the cooldown pass
        print("recovered:", get_user_data(api, "7"), f"breaker {get_user_data.breaker.state}")


if __name__ == "__main__":
    main()
