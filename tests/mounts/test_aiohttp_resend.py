"""aiohttp's own resend does not multiply the config's retries.

aiohttp sends an idempotent request once more when it fails with
``ServerDisconnectedError`` or ``ClientOSError`` (meant for a keep-alive
connection the server had closed), running every middleware again.  With
``ResilientMiddleware`` a request is sent at most ``max_retries + 1`` times:
the second run raises the error the first one's retries ended with, at once.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from httpserver import Drop, ScriptedServer

from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, ResilientMiddleware


def _config(retries: int) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(base_delay=0.001, max_delay=0.01, max_retries=retries),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1_000),
    )


@pytest.mark.parametrize(
    ("method", "retries", "sent"), [("GET", 1, 2), ("GET", 0, 1), ("PUT", 2, 3), ("POST", 3, 1)]
)
def test_a_disconnected_request_is_sent_max_retries_plus_one_times(
    server: ScriptedServer, method: str, retries: int, sent: int
) -> None:
    server.default = Drop()
    middleware = ResilientMiddleware(_config(retries))

    async def main() -> None:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                async with session.request(method, server.url + "/gone"):
                    pass

    asyncio.run(main())
    assert server.count("/gone") == sent
    assert not middleware._raised  # the second run took what the first left


def test_concurrent_requests_each_keep_their_own_error(server: ScriptedServer) -> None:
    server.default = Drop()
    middleware = ResilientMiddleware(_config(1))

    async def one(session: aiohttp.ClientSession, n: int) -> BaseException | None:
        try:
            async with session.get(f"{server.url}/gone/{n}"):
                return None
        except aiohttp.ServerDisconnectedError as exc:
            return exc

    async def main() -> list[BaseException | None]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            return await asyncio.gather(*(one(session, n) for n in range(20)))

    errors = asyncio.run(main())
    assert all(isinstance(error, aiohttp.ServerDisconnectedError) for error in errors)
    assert [server.count(f"/gone/{n}") for n in range(20)] == [2] * 20
    assert not middleware._raised
