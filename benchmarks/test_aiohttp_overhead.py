"""Cost of ``ResilientMiddleware`` over a bare aiohttp session, measured in interleaved rounds.

* `aiohttp-null`: the middleware called with a handler that returns a ready
  response - our added cost per request, with nothing else in the figure.
* `aiohttp-local-server`: keep-alive GETs against a real local server through a
  bare ``ClientSession``, one with ``ResilientMiddleware``, and the peer
  aiohttp-retry's ``RetryClient`` (when installed: ``nox -s benchmarks``).

Each test interleaves its contenders (see ``conftest.paired``) and stores the
medians per request in ``extra_info["paired"]``; ``report.py`` prints the ratios.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import paired
from yarl import URL

from smoothapi import ResilientMiddleware
from smoothapi.cli.demo_server import FlakyServer

NULL_BATCH = 200
SERVER_BATCH = 40


class _Request:
    # What the middleware's happy path reads of an aiohttp ClientRequest.
    method = "GET"
    url = URL("http://upstream.test/x")


class _Response:
    status = 200
    headers: dict[str, str] = {}  # noqa: RUF012 - read only


_RESPONSE = _Response()


async def _handler(request: Any) -> Any:
    return _RESPONSE


@pytest.mark.benchmark(group="aiohttp-null")
def test_aiohttp_null(benchmark: Any) -> None:
    """The handler alone vs the middleware around it (a ready response, no I/O)."""
    request: Any = _Request()
    middleware = ResilientMiddleware()
    loop = asyncio.new_event_loop()

    async def bare() -> None:
        for _ in range(NULL_BATCH):
            await _handler(request)

    async def smoothapi() -> None:
        for _ in range(NULL_BATCH):
            await middleware(request, _handler)

    contenders: dict[str, Callable[[], object]] = {
        "bare": lambda: loop.run_until_complete(bare()),
        "smoothapi": lambda: loop.run_until_complete(smoothapi()),
    }
    try:
        paired(benchmark, contenders, batch=NULL_BATCH, rounds=60)
    finally:
        loop.close()


def _retry_client(session: aiohttp.ClientSession) -> Any | None:
    try:
        from aiohttp_retry import ExponentialRetry, RetryClient
    except ImportError:  # a peer, installed by `nox -s benchmarks`
        return None
    return RetryClient(client_session=session, retry_options=ExponentialRetry(attempts=4))


@pytest.mark.benchmark(group="aiohttp-local-server")
def test_aiohttp_local_server(benchmark: Any, healthy_server: FlakyServer) -> None:
    """Keep-alive GETs: a bare ClientSession, ResilientMiddleware, aiohttp-retry."""
    loop = asyncio.new_event_loop()
    url = healthy_server.url + "/users/1"

    async def make() -> dict[str, Any]:
        clients: dict[str, Any] = {
            "bare": aiohttp.ClientSession(),
            "smoothapi": aiohttp.ClientSession(middlewares=(ResilientMiddleware(),)),
        }
        peer = _retry_client(aiohttp.ClientSession())
        if peer is not None:
            clients["aiohttp-retry"] = peer
        return clients

    clients = loop.run_until_complete(make())
    contenders: dict[str, Callable[[], object]] = {}
    for name, client in clients.items():

        async def many(c: Any = client) -> None:
            for _ in range(SERVER_BATCH):
                async with c.get(url) as response:
                    await response.read()

        contenders[name] = lambda many=many: loop.run_until_complete(many())
    try:
        paired(benchmark, contenders, batch=SERVER_BATCH, rounds=45)
    finally:
        for client in clients.values():
            loop.run_until_complete(client.close())
        loop.close()
