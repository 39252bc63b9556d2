"""``@resilient_api`` around aiohttp calls: aiohttp's errors mean what the failure table says.

``aiohttp.ClientConnectionError`` (refused, disconnected, timed out) and
``ClientPayloadError`` (a body cut short) are transport failures, retried; a
TLS failure is not; ``raise_for_status()``'s ``ClientResponseError`` carries
its status, so a status in ``retry_on`` is retried (honouring ``Retry-After``)
and a 404 is an answer, not retried.  Against a real local server.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import HttpProcessingError
from httpserver import Drop, Raw, Reply, ScriptedServer, Truncate, refused_url

from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, resilient_api
from smoothapi.classify import classify_exception
from smoothapi.engine import ANSWERED, FAILURE, IGNORED

CONFIG = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.001, max_delay=0.01, max_retries=2),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
)


def _fetch(url: str) -> Any:
    @resilient_api(CONFIG)
    async def fetch() -> bytes:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            response.raise_for_status()
            return await response.read()

    return fetch


def test_a_retried_status_from_raise_for_status_is_retried(server: ScriptedServer) -> None:
    server.script("/s", Reply(503), Reply(503, headers={"Retry-After": "0"}), Reply(200, b"ok"))
    assert asyncio.run(_fetch(server.url + "/s")()) == b"ok"
    assert server.count("/s") == 3


def test_a_404_is_an_answer_not_retried(server: ScriptedServer) -> None:
    server.default = Reply(404)
    with pytest.raises(aiohttp.ClientResponseError) as caught:
        asyncio.run(_fetch(server.url + "/missing")())
    assert caught.value.status == 404
    assert server.count("/missing") == 1


@pytest.mark.parametrize("action", [Drop(), Truncate(200, 100, 10)])
def test_a_dropped_or_cut_connection_is_retried(server: ScriptedServer, action: Any) -> None:
    server.script("/d", action, Reply(200, b"ok"))
    assert asyncio.run(_fetch(server.url + "/d")()) == b"ok"
    assert server.count("/d") == 2


def test_a_response_aiohttp_cannot_parse_is_a_protocol_error_and_retried(
    server: ScriptedServer,
) -> None:
    server.script("/garbage", Raw(b"HTTP/1.1 2OO OK\r\n\r\n"), Reply(200, b"ok"))
    assert asyncio.run(_fetch(server.url + "/garbage")()) == b"ok"
    assert server.count("/garbage") == 2


def test_a_refused_connection_is_retried_then_raised() -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        asyncio.run(_fetch(refused_url())())


def test_the_failure_table_for_aiohttp_errors() -> None:
    key = ConnectionKey("example.test", 443, True, True, None, None, None)
    retry_on = frozenset({503})
    assert classify_exception(aiohttp.ServerDisconnectedError(), retry_on).kind is FAILURE
    assert classify_exception(aiohttp.ClientPayloadError("cut"), retry_on).kind is FAILURE
    assert classify_exception(aiohttp.SocketTimeoutError(), retry_on).kind is FAILURE
    certificate = aiohttp.ClientConnectorCertificateError(key, ssl.SSLError("bad cert"))
    assert classify_exception(certificate, retry_on).kind is IGNORED
    assert classify_exception(aiohttp.InvalidURL("nope"), retry_on).kind is IGNORED
    info = aiohttp.RequestInfo(
        aiohttp.client_reqrep.URL("http://x.test/"),
        "GET",
        {},
        aiohttp.client_reqrep.URL("http://x.test/"),
    )
    busy = aiohttp.ClientResponseError(info, (), status=503, headers={"Retry-After": "2"})
    outcome = classify_exception(busy, retry_on)
    assert (outcome.kind, outcome.status, outcome.retry_after) == (FAILURE, 503, 2.0)
    missing = aiohttp.ClientResponseError(info, (), status=404)
    assert classify_exception(missing, retry_on).kind is ANSWERED
    # A response aiohttp could not parse: its "400" is aiohttp's, not the server's.
    garbled = aiohttp.ClientResponseError(info, (), status=400)
    garbled.__cause__ = HttpProcessingError()  # as aiohttp raises it `from` the parse error
    assert classify_exception(garbled, retry_on).kind is FAILURE
