"""``ResilientMiddleware``: the same for ``aiohttp.ClientSession`` (aiohttp 3.12+).

A client middleware, so every ``session.get(...)`` is resilient.  Against a
local flaky server (no network needed) the script retries a blip away, lets an
outage open the origin's breaker (the last 503 is returned as it is, and
``raise_for_status()`` still raises), shows ten concurrent requests rejected
at once without I/O (``except aiohttp.ClientConnectionError``), a
``fallback=`` answering instead with a response built in memory, and the
recovery after the cooldown.

Run it::

    python examples/aiohttp_middleware.py
"""

from __future__ import annotations

import asyncio

import aiohttp

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientConfig,
    ResilientMiddleware,
    attempts,
)
from smoothapi.cli.demo_server import FlakyServer

config = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.05, max_delay=0.5, max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=1_000),
)


def degraded(request: aiohttp.ClientRequest, error: BaseException) -> aiohttp.ClientResponse:
    """The fallback (it may be async): a 200 response built in memory, without I/O."""
    return ResilientMiddleware.response(request, json={"status": "degraded"})


async def main() -> None:
    middleware = ResilientMiddleware(config)
    timeout = aiohttp.ClientTimeout(total=5)
    with FlakyServer() as server:
        async with aiohttp.ClientSession(middlewares=(middleware,), timeout=timeout) as session:
            url = f"{server.url}/users/1"
            async with session.get(url) as response:
                print("healthy:", await response.json())

            server.set_mode("flaky", script=[503, 503, 200])
            async with session.get(url) as response:
                print("blip:   ", response.status, f"after {attempts(response)} attempts")

            server.set_mode("outage")
            async with session.get(url) as response:
                print("outage: ", response.status, "- the last response, as is")
                try:
                    response.raise_for_status()
                except aiohttp.ClientResponseError as exc:
                    print("raise_for_status() still raises:", exc.status)
            breaker = middleware.breaker_for(url)
            print("breaker:", breaker.name, breaker.state)

            rejected: list[float] = []

            async def get() -> None:
                try:
                    async with session.get(url):
                        pass
                except aiohttp.ClientConnectionError as exc:  # existing except clauses work
                    if isinstance(exc, CircuitOpenError):
                        rejected.append(exc.retry_after)

            await asyncio.gather(*(get() for _ in range(10)))
            print(f"open:    {len(rejected)} of 10 concurrent requests rejected without I/O")

            cached = ResilientMiddleware(config, breaker=breaker, fallback=degraded)
            async with session.get(url, middlewares=(cached,)) as response:
                print("fallback:", await response.json())
            print("requests while open:", server.count("outage") - 3)

            server.set_mode("healthy")
            await asyncio.sleep(breaker.retry_after + 0.05)  # let the cooldown pass
            async with session.get(url) as response:  # the probe
                print("recovered:", response.status, f"breaker {breaker.state}")


if __name__ == "__main__":
    asyncio.run(main())
