"""Cost of each transport mount point over the bare client, in the same run.

* `MockTransport`: httpx's in-memory transport, so the figure is our added
  cost per request (no network, no server).
* A real local keep-alive server: requests/s of the bare client, smoothapi's
  mount point, and the peers (urllib3 `Retry` through `HTTPAdapter`,
  httpx-retries).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from smoothapi import AsyncResilientTransport, ResilientAdapter, ResilientTransport
from smoothapi.demo_server import FlakyServer

MOCK_BATCH = 200
SERVER_BATCH = 50


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def _httpx_retries_transport(inner: Any, *, is_async: bool) -> Any:
    try:
        from httpx_retries import Retry as HXRetry
        from httpx_retries import RetryTransport
    except ImportError:
        pytest.skip("httpx-retries is a peer installed by `nox -s benchmarks` only")
    return RetryTransport(transport=inner, retry=HXRetry(total=3))


@pytest.mark.benchmark(group="transport-direct-sync")
@pytest.mark.parametrize("name", ["bare", "smoothapi"])
def test_transport_direct_sync(benchmark: Any, name: str) -> None:
    """MOCK_BATCH `handle_request` calls on the transport itself: our added cost, unblurred."""
    inner = httpx.MockTransport(_ok)
    transport: httpx.BaseTransport = (
        inner if name == "bare" else ResilientTransport(transport=inner)
    )
    request = httpx.Request("GET", "http://upstream.test/x")
    benchmark.extra_info["batch"] = MOCK_BATCH

    def run() -> None:
        for _ in range(MOCK_BATCH):
            transport.handle_request(request)

    benchmark(run)


@pytest.mark.benchmark(group="transport-direct-async")
@pytest.mark.parametrize("name", ["bare", "smoothapi"])
def test_transport_direct_async(benchmark: Any, name: str) -> None:
    """MOCK_BATCH `handle_async_request` calls on the async transport itself."""
    inner = httpx.MockTransport(_ok)
    transport: httpx.AsyncBaseTransport = (
        inner if name == "bare" else AsyncResilientTransport(transport=inner)
    )
    request = httpx.Request("GET", "http://upstream.test/x")
    benchmark.extra_info["batch"] = MOCK_BATCH
    loop = asyncio.new_event_loop()

    async def batch() -> None:
        for _ in range(MOCK_BATCH):
            await transport.handle_async_request(request)

    try:
        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.close()


@pytest.mark.benchmark(group="httpx-mock-sync")
@pytest.mark.parametrize("name", ["bare", "smoothapi", "httpx-retries"])
def test_httpx_mock_sync(benchmark: Any, name: str) -> None:
    """MOCK_BATCH GETs through httpx.Client on a MockTransport."""
    inner = httpx.MockTransport(_ok)
    transport: Any = inner
    if name == "smoothapi":
        transport = ResilientTransport(transport=inner)
    elif name == "httpx-retries":
        transport = _httpx_retries_transport(inner, is_async=False)
    benchmark.extra_info["batch"] = MOCK_BATCH
    with httpx.Client(transport=transport) as client:

        def run() -> None:
            for _ in range(MOCK_BATCH):
                client.get("http://upstream.test/x")

        benchmark(run)


@pytest.mark.benchmark(group="httpx-mock-async")
@pytest.mark.parametrize("name", ["bare", "smoothapi", "httpx-retries"])
def test_httpx_mock_async(benchmark: Any, name: str) -> None:
    """MOCK_BATCH GETs through httpx.AsyncClient on a MockTransport."""
    inner = httpx.MockTransport(_ok)
    transport: Any = inner
    if name == "smoothapi":
        transport = AsyncResilientTransport(transport=inner)
    elif name == "httpx-retries":
        transport = _httpx_retries_transport(inner, is_async=True)
    benchmark.extra_info["batch"] = MOCK_BATCH
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=transport)

    async def batch() -> None:
        for _ in range(MOCK_BATCH):
            await client.get("http://upstream.test/x")

    try:
        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


@pytest.mark.benchmark(group="requests-local-server")
@pytest.mark.parametrize("name", ["bare", "smoothapi", "urllib3-Retry"])
def test_requests_local_server(benchmark: Any, name: str, healthy_server: FlakyServer) -> None:
    """SERVER_BATCH keep-alive GETs with requests.Session against a local server."""
    with requests.Session() as session:
        if name == "smoothapi":
            session.mount("http://", ResilientAdapter())
        elif name == "urllib3-Retry":
            retry = Retry(total=3, backoff_factor=0.1, status_forcelist=[429, 500, 502, 503, 504])
            session.mount("http://", HTTPAdapter(max_retries=retry))
        url = healthy_server.url + "/users/1"
        benchmark.extra_info["batch"] = SERVER_BATCH

        def run() -> None:
            for _ in range(SERVER_BATCH):
                session.get(url).content  # noqa: B018 - read the body, as users do

        benchmark(run)


@pytest.mark.benchmark(group="httpx-local-server")
@pytest.mark.parametrize("name", ["bare", "smoothapi", "httpx-retries"])
def test_httpx_local_server(benchmark: Any, name: str, healthy_server: FlakyServer) -> None:
    """SERVER_BATCH keep-alive GETs with httpx.Client against a local server."""
    inner = httpx.HTTPTransport()
    transport: Any = inner
    if name == "smoothapi":
        transport = ResilientTransport(transport=inner)
    elif name == "httpx-retries":
        transport = _httpx_retries_transport(inner, is_async=False)
    with httpx.Client(transport=transport) as client:
        url = healthy_server.url + "/users/1"
        benchmark.extra_info["batch"] = SERVER_BATCH

        def run() -> None:
            for _ in range(SERVER_BATCH):
                client.get(url)

        benchmark(run)


@pytest.mark.benchmark(group="httpx-async-local-server")
@pytest.mark.parametrize("name", ["bare", "smoothapi", "httpx-retries"])
def test_httpx_async_local_server(benchmark: Any, name: str, healthy_server: FlakyServer) -> None:
    """SERVER_BATCH keep-alive GETs with httpx.AsyncClient against a local server."""
    inner = httpx.AsyncHTTPTransport()
    transport: Any = inner
    if name == "smoothapi":
        transport = AsyncResilientTransport(transport=inner)
    elif name == "httpx-retries":
        transport = _httpx_retries_transport(inner, is_async=True)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=transport)
    url = healthy_server.url + "/users/1"
    benchmark.extra_info["batch"] = SERVER_BATCH

    async def batch() -> None:
        for _ in range(SERVER_BATCH):
            await client.get(url)

    try:
        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
