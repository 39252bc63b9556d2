"""Review fixes of the aiohttp middleware, against real servers on 127.0.0.1.

- With a deadline, a WebSocket opened through the middleware is not closed at
  the deadline: the deadline bounds the handshake, the socket's life is yours.
- A fallback response built by ``ResilientMiddleware.response()`` streams its
  body too (``content.read()``, ``iter_chunked``), not only ``read()``.
- With a deadline, a response read and dropped is not kept alive (its body in
  memory) until the deadline.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import aiohttp
import pytest
from aiohttp import web
from httpserver import BigBody, ScriptedServer

from smoothapi import ResilientConfig, ResilientMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str("echo:" + message.data)
    return ws


@pytest.mark.parametrize("deadline", [None, 0.3])
async def test_a_websocket_outlives_the_deadline(deadline: float | None) -> None:
    app = web.Application()
    app.router.add_get("/ws", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        middleware = ResilientMiddleware(ResilientConfig(deadline=deadline))
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            await ws.send_str("a")
            assert (await ws.receive(timeout=5)).data == "echo:a"
            await asyncio.sleep(0.6)  # past the deadline
            await ws.send_str("b")
            assert (await ws.receive(timeout=5)).data == "echo:b"
    finally:
        await runner.cleanup()


async def test_a_fallback_response_streams_its_body(server: ScriptedServer) -> None:
    middleware = ResilientMiddleware(
        ResilientConfig(),
        fallback=lambda request, error: ResilientMiddleware.response(request, body=b"cached"),
    )
    middleware.breaker_for(server.url).force_open()
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        async with session.get(server.url + "/") as response:
            assert await response.content.read() == b"cached"
            assert await response.read() == b"cached"
        async with session.get(server.url + "/") as response:
            assert [chunk async for chunk in response.content.iter_chunked(2)] == [
                b"ca",
                b"ch",
                b"ed",
            ]
    assert server.count("/") == 0


@pytest.mark.parametrize("deadline", [None, 30.0])
async def test_a_read_response_is_not_kept_alive(
    server: ScriptedServer, deadline: float | None
) -> None:
    server.default = BigBody(200, 1_000_000)
    refs: list[weakref.ref[aiohttp.ClientResponse]] = []
    middleware = ResilientMiddleware(ResilientConfig(deadline=deadline))
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        for _ in range(5):
            async with session.get(server.url + "/big") as response:
                assert len(await response.read()) == 1_000_000
            refs.append(weakref.ref(response))
        del response
        gc.collect()
        assert [ref() for ref in refs] == [None] * 5
