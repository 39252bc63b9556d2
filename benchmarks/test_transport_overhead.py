"""Cost of each transport mount point over the bare client, measured in interleaved rounds.

* `null`: the transports around an inner transport that returns a ready
  response - our added cost per request, with nothing else in the figure.
* `MockTransport`: httpx.Client / AsyncClient over httpx's in-memory transport.
* A real local keep-alive server: the bare client, smoothapi's mount point and
  the peers (urllib3 `Retry` through `HTTPAdapter`, httpx-retries).

Each test interleaves its contenders (see `conftest.paired`) and stores the
medians per request in `extra_info["paired"]`; `report.py` prints the ratios.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
from conftest import AsyncNullTransport, NullTransport, paired
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from smoothapi import AsyncResilientTransport, ResilientAdapter, ResilientTransport
from smoothapi.cli.demo_server import FlakyServer

MOCK_BATCH = 200
SERVER_BATCH = 40


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def _httpx_retries(inner: Any) -> Any | None:
    try:
        from httpx_retries import Retry as HXRetry
        from httpx_retries import RetryTransport
    except ImportError:  # a peer, installed by `nox -s benchmarks`
        return None
    return RetryTransport(transport=inner, retry=HXRetry(total=3))


@pytest.mark.benchmark(group="transport-null-sync")
def test_transport_null_sync(benchmark: Any) -> None:
    """handle_request on the transport itself: bare null transport vs ResilientTransport(null)."""
    request = httpx.Request("GET", "http://upstream.test/x")
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in (
        ("bare", NullTransport()),
        ("smoothapi", ResilientTransport(transport=NullTransport())),
    ):

        def batch(t: httpx.BaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                t.handle_request(request)

        contenders[name] = batch
    paired(benchmark, contenders, batch=MOCK_BATCH, rounds=60)


@pytest.mark.benchmark(group="transport-null-async")
def test_transport_null_async(benchmark: Any) -> None:
    """handle_async_request: bare null transport vs AsyncResilientTransport(null)."""
    request = httpx.Request("GET", "http://upstream.test/x")
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in (
        ("bare", AsyncNullTransport()),
        ("smoothapi", AsyncResilientTransport(transport=AsyncNullTransport())),
    ):

        async def many(t: httpx.AsyncBaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                await t.handle_async_request(request)

        contenders[name] = lambda many=many: loop.run_until_complete(many())
    try:
        paired(benchmark, contenders, batch=MOCK_BATCH, rounds=60)
    finally:
        loop.close()


@pytest.mark.benchmark(group="httpx-mock-sync")
def test_httpx_mock_sync(benchmark: Any) -> None:
    """GETs through httpx.Client on a MockTransport: bare, smoothapi, httpx-retries."""
    transports: dict[str, Any] = {
        "bare": httpx.MockTransport(_ok),
        "smoothapi": ResilientTransport(transport=httpx.MockTransport(_ok)),
    }
    peer = _httpx_retries(httpx.MockTransport(_ok))
    if peer is not None:
        transports["httpx-retries"] = peer
    clients = {name: httpx.Client(transport=t) for name, t in transports.items()}
    contenders: dict[str, Callable[[], object]] = {}
    for name, client in clients.items():

        def batch(c: httpx.Client = client) -> None:
            for _ in range(MOCK_BATCH):
                c.get("http://upstream.test/x")

        contenders[name] = batch
    try:
        paired(benchmark, contenders, batch=MOCK_BATCH, rounds=45)
    finally:
        for client in clients.values():
            client.close()


@pytest.mark.benchmark(group="httpx-mock-async")
def test_httpx_mock_async(benchmark: Any) -> None:
    """GETs through httpx.AsyncClient on a MockTransport: bare, smoothapi, httpx-retries."""
    transports: dict[str, Any] = {
        "bare": httpx.MockTransport(_ok),
        "smoothapi": AsyncResilientTransport(transport=httpx.MockTransport(_ok)),
    }
    peer = _httpx_retries(httpx.MockTransport(_ok))
    if peer is not None:
        transports["httpx-retries"] = peer
    loop = asyncio.new_event_loop()
    clients = {name: httpx.AsyncClient(transport=t) for name, t in transports.items()}
    contenders: dict[str, Callable[[], object]] = {}
    for name, client in clients.items():

        async def many(c: httpx.AsyncClient = client) -> None:
            for _ in range(MOCK_BATCH):
                await c.get("http://upstream.test/x")

        contenders[name] = lambda many=many: loop.run_until_complete(many())
    try:
        paired(benchmark, contenders, batch=MOCK_BATCH, rounds=45)
    finally:
        for client in clients.values():
            loop.run_until_complete(client.aclose())
        loop.close()


@pytest.mark.benchmark(group="requests-local-server")
def test_requests_local_server(benchmark: Any, healthy_server: FlakyServer) -> None:
    """Keep-alive GETs with requests.Session: bare, ResilientAdapter, urllib3 Retry."""
    sessions = {name: requests.Session() for name in ("bare", "smoothapi", "urllib3-Retry")}
    sessions["smoothapi"].mount("http://", ResilientAdapter())
    retry = Retry(total=3, backoff_factor=0.1, status_forcelist=[429, 500, 502, 503, 504])
    sessions["urllib3-Retry"].mount("http://", HTTPAdapter(max_retries=retry))
    url = healthy_server.url + "/users/1"
    contenders: dict[str, Callable[[], object]] = {}
    for name, session in sessions.items():

        def batch(s: requests.Session = session) -> None:
            for _ in range(SERVER_BATCH):
                s.get(url).content  # noqa: B018 - read the body, as users do

        contenders[name] = batch
    try:
        paired(benchmark, contenders, batch=SERVER_BATCH, rounds=45)
    finally:
        for session in sessions.values():
            session.close()


@pytest.mark.benchmark(group="httpx-local-server")
def test_httpx_local_server(benchmark: Any, healthy_server: FlakyServer) -> None:
    """Keep-alive GETs with httpx.Client: bare, ResilientTransport, httpx-retries."""
    transports: dict[str, Any] = {
        "bare": httpx.HTTPTransport(),
        "smoothapi": ResilientTransport(),
    }
    peer = _httpx_retries(httpx.HTTPTransport())
    if peer is not None:
        transports["httpx-retries"] = peer
    clients = {name: httpx.Client(transport=t) for name, t in transports.items()}
    url = healthy_server.url + "/users/1"
    contenders: dict[str, Callable[[], object]] = {}
    for name, client in clients.items():

        def batch(c: httpx.Client = client) -> None:
            for _ in range(SERVER_BATCH):
                c.get(url)

        contenders[name] = batch
    try:
        paired(benchmark, contenders, batch=SERVER_BATCH, rounds=45)
    finally:
        for client in clients.values():
            client.close()


@pytest.mark.benchmark(group="httpx-async-local-server")
def test_httpx_async_local_server(benchmark: Any, healthy_server: FlakyServer) -> None:
    """Keep-alive GETs with httpx.AsyncClient: bare, AsyncResilientTransport, httpx-retries."""
    transports: dict[str, Any] = {
        "bare": httpx.AsyncHTTPTransport(),
        "smoothapi": AsyncResilientTransport(),
    }
    peer = _httpx_retries(httpx.AsyncHTTPTransport())
    if peer is not None:
        transports["httpx-retries"] = peer
    loop = asyncio.new_event_loop()
    clients = {name: httpx.AsyncClient(transport=t) for name, t in transports.items()}
    url = healthy_server.url + "/users/1"
    contenders: dict[str, Callable[[], object]] = {}
    for name, client in clients.items():

        async def many(c: httpx.AsyncClient = client) -> None:
            for _ in range(SERVER_BATCH):
                await c.get(url)

        contenders[name] = lambda many=many: loop.run_until_complete(many())
    try:
        paired(benchmark, contenders, batch=SERVER_BATCH, rounds=45)
    finally:
        for client in clients.values():
            loop.run_until_complete(client.aclose())
        loop.close()
