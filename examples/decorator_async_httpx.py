"""``@resilient_api`` on an ``async def`` that calls ``httpx.AsyncClient``.

The decorator sees a coroutine function and sleeps between retries without
blocking the event loop.  Against a local flaky server (no network needed)
the script retries a blip away, then hits an outage with ten concurrent
calls: the breaker opens and the calls get the fallback; while it is OPEN,
ten more calls are answered at once without a single request.

Run it::

    python examples/decorator_async_httpx.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, resilient_api
from smoothapi.cli.demo_server import FlakyServer

config = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.05, max_delay=0.5, max_retries=3),
    # Long enough that the "open" phase below always falls inside it, even on a busy machine.
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=4_000),
    fallback={"status": "degraded"},
)


@resilient_api(config)
async def get_user(client: httpx.AsyncClient, user_id: int) -> Any:
    response = await client.get(f"/users/{user_id}")
    response.raise_for_status()  # the decorator reads the status from HTTPStatusError
    return response.json()


async def main() -> None:
    with FlakyServer() as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            print("healthy:", await get_user(client, 1))

            server.set_mode("flaky", script=[503, 503, 200])
            print("blip:   ", await get_user(client, 2), f"after {server.count('flaky')} requests")

            server.set_mode("outage")
            results = await asyncio.gather(*(get_user(client, n) for n in range(10, 20)))
            print(f"outage: {results.count({'status': 'degraded'})} of 10 calls got the fallback,")
            print(f"        breaker {get_user.breaker.state}, {server.count('outage')} requests")

            before = server.count("outage")
            results = await asyncio.gather(*(get_user(client, n) for n in range(20, 30)))
            print(f"open:   {results.count({'status': 'degraded'})} of 10 calls got the fallback,")
            print(f"        {server.count('outage') - before} requests sent")

            server.set_mode("healthy")
            await asyncio.sleep(get_user.breaker.retry_after + 0.05)  # the cooldown
            print("recovered:", await get_user(client, 30), f"breaker {get_user.breaker.state}")


if __name__ == "__main__":
    asyncio.run(main())
