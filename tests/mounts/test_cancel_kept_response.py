"""A call cancelled in its backoff sleep lets go of the response it kept for that sleep.

Before the sleep, a retried response whose body is large (or of unknown length) is
kept unread: it is returned whole if the breaker opens meanwhile.  A caller
cancelled during the sleep will never read it, so the engine closes it on the way
out; otherwise its connection stays taken and a pool of one hangs on the next
request.  (The aiohttp twin is in test_aiohttp_middleware.py.)
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from httpserver import Reply, ScriptedServer

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    Event,
    ResilientConfig,
    RetryScheduled,
)

pytestmark = pytest.mark.anyio


async def test_a_cancelled_sleep_gives_the_kept_connection_back(server: ScriptedServer) -> None:
    server.script("/busy", Reply(503, b"b" * 1_000_000))  # too large to read before the sleep
    sleeping = anyio.Event()

    def hook(event: Event) -> None:
        if isinstance(event, RetryScheduled):  # the call is in its 30 s sleep
            sleeping.set()

    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=1, base_delay=30, max_delay=30, jitter="none"),
        hooks=(hook,),
    )
    transport = AsyncResilientTransport(config, limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as tasks:

            async def busy() -> None:
                await client.get(server.url + "/busy")

            tasks.start_soon(busy)
            with anyio.fail_after(10):
                await sleeping.wait()
            tasks.cancel_scope.cancel()
        # The pool's one connection is free again: the next request is answered.
        with anyio.fail_after(10):
            response = await client.get(server.url + "/ok")
    assert response.status_code == 200
    assert server.count("/busy") == 1
