"""``AsyncResilientTransport``: the same for ``httpx.AsyncClient``, under asyncio or trio.

Retries sleep without blocking the event loop.  Against a local flaky server
(no network needed) the script retries a blip away, lets an outage open the
origin's breaker (the last 503 is returned as it is), shows ten concurrent
requests rejected at once without I/O (``except httpx.TransportError``), an
async ``fallback=`` answering instead, and the recovery after the cooldown.

Run it::

    python examples/httpx_async_transport.py          # asyncio
    python examples/httpx_async_transport.py --trio   # trio, if installed
"""

from __future__ import annotations

import sys

import anyio
import httpx

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientConfig,
)
from smoothapi.cli.demo_server import FlakyServer

config = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.05, max_delay=0.5, max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=1_000),
)


async def degraded(request: httpx.Request, error: BaseException) -> httpx.Response:
    """The fallback (it may be async): a synthetic 200 response, built without I/O."""
    return httpx.Response(200, json={"status": "degraded"}, request=request)


async def main() -> None:
    transport = AsyncResilientTransport(config)
    with FlakyServer() as server:
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            url = f"{server.url}/users/1"
            print("healthy:", (await client.get(url)).json())

            server.set_mode("flaky", script=[503, 503, 200])
            response = await client.get(url)
            attempts = response.extensions["smoothapi_attempts"]
            print("blip:   ", response.status_code, f"after {attempts} attempts")

            server.set_mode("outage")
            response = await client.get(url)
            print("outage: ", response.status_code, "- the last response, as is")
            breaker = transport.breaker_for(url)
            print("breaker:", breaker.name, breaker.state)

            rejected: list[float] = []

            async def get() -> None:
                try:
                    await client.get(url)
                except httpx.TransportError as exc:  # existing except clauses keep working
                    if isinstance(exc, CircuitOpenError):
                        rejected.append(exc.retry_after)

            async with anyio.create_task_group() as tasks:
                for _ in range(10):
                    tasks.start_soon(get)
            print(f"open:    {len(rejected)} of 10 concurrent requests rejected without I/O")

            cached = AsyncResilientTransport(config, breaker=breaker, fallback=degraded)
            async with httpx.AsyncClient(transport=cached) as cached_client:
                print("fallback:", (await cached_client.get(url)).json())
            print("requests while open:", server.count("outage") - 3)

            server.set_mode("healthy")
            await anyio.sleep(breaker.retry_after + 0.05)  # let the cooldown pass
            response = await client.get(url)  # the probe
            print("recovered:", response.status_code, f"breaker {breaker.state}")


if __name__ == "__main__":
    anyio.run(main, backend="trio" if "--trio" in sys.argv[1:] else "asyncio")
