"""The transports compose with the test mocks users already have.

DESIGN.md, "Transports": "They compose with what users already have: test
mocks (responses, respx) still see every attempt."  ``responses`` patches
``HTTPAdapter.send``, which ``ResilientAdapter`` calls once per attempt;
``respx`` patches httpx's transport layer beneath ``ResilientTransport``'s
default inner transport; ``httpx.MockTransport`` can be the inner transport.
No sockets are opened here; ``instant`` makes the backoff sleeps instant.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests
import responses
import respx

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
)
from smoothapi.testing import FakeClock

URL = "http://api.example.test/users/1"


def cfg(max_retries: int = 3, threshold: int = 100) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=max_retries),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold),
    )


def session_with(adapter: ResilientAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


# -- responses (requests) --------------------------------------------------------------------


def test_responses_sees_every_attempt(instant: FakeClock) -> None:
    """responses patches HTTPAdapter.send: 503, 503, 200 are three recorded calls, 200 returned."""
    with responses.RequestsMock() as rsps, session_with(ResilientAdapter(cfg())) as session:
        rsps.add(responses.GET, URL, status=503)
        rsps.add(responses.GET, URL, status=503)
        rsps.add(responses.GET, URL, status=200, json={"id": 1})
        response = session.get(URL)
        assert response.status_code == 200
        assert response.json() == {"id": 1}
        assert response.smoothapi_attempts == 3
        assert len(rsps.calls) == 3
        assert [c.response.status_code for c in rsps.calls] == [503, 503, 200]


def test_responses_post_without_idempotency_key_is_one_call(instant: FakeClock) -> None:
    """Under responses as against a real server, a POST answered 503 is not resent."""
    with (
        responses.RequestsMock(assert_all_requests_are_fired=False) as rsps,
        session_with(ResilientAdapter(cfg())) as session,
    ):
        rsps.add(responses.POST, URL, status=503)
        rsps.add(responses.POST, URL, status=200)  # must stay unused
        response = session.post(URL, json={"name": "x"})
        assert response.status_code == 503
        assert len(rsps.calls) == 1


def test_responses_mocked_connection_error_is_retried_for_get(instant: FakeClock) -> None:
    """A ConnectionError raised by the mock is a transport failure: GET is retried."""
    with responses.RequestsMock() as rsps, session_with(ResilientAdapter(cfg())) as session:
        rsps.add(responses.GET, URL, body=requests.exceptions.ConnectionError("reset"))
        rsps.add(responses.GET, URL, status=200)
        assert session.get(URL).status_code == 200
        assert len(rsps.calls) == 2


def test_responses_open_breaker_stops_calls_reaching_the_mock(instant: FakeClock) -> None:
    """Once the origin's breaker opens, requests raise CircuitOpenError (a requests
    ConnectionError) and the mock sees no further call."""
    with (
        responses.RequestsMock() as rsps,
        session_with(ResilientAdapter(cfg(max_retries=1, threshold=2))) as session,
    ):
        rsps.add(responses.GET, URL, status=503)
        assert session.get(URL).status_code == 503
        assert len(rsps.calls) == 2
        with pytest.raises(requests.exceptions.ConnectionError) as info:
            session.get(URL)
        assert isinstance(info.value, CircuitOpenError)
        assert len(rsps.calls) == 2


# -- respx (httpx) ------------------------------------------------------------------------------


def test_respx_sees_every_attempt_through_the_default_inner_transport(instant: FakeClock) -> None:
    """respx mocks beneath ResilientTransport()'s default HTTPTransport: three calls recorded."""
    with (
        respx.mock(assert_all_called=True) as router,
        httpx.Client(transport=ResilientTransport()) as client,
    ):
        route = router.get(URL).mock(
            side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, json=[1])]
        )
        response = client.get(URL)
        assert response.status_code == 200
        assert response.json() == [1]
        assert response.extensions["smoothapi_attempts"] == 3
        assert route.call_count == 3


def test_respx_module_level_route_sees_every_attempt(instant: FakeClock) -> None:
    """The respx.mock context with module-level respx.get() composes the same way."""
    with respx.mock, httpx.Client(transport=ResilientTransport()) as client:
        route = respx.get(URL).mock(
            side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200)]
        )
        assert client.get(URL).status_code == 200
        assert route.call_count == 3


@pytest.mark.anyio
async def test_respx_sees_every_attempt_of_the_async_transport(instant: FakeClock) -> None:
    """respx under AsyncResilientTransport() (asyncio and trio): three calls recorded."""
    async with httpx.AsyncClient(transport=AsyncResilientTransport()) as client:
        with respx.mock:
            route = respx.get(URL).mock(
                side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200)]
            )
            response = await client.get(URL)
            assert response.status_code == 200
            assert response.extensions["smoothapi_attempts"] == 3
            assert route.call_count == 3


def test_respx_raised_connect_error_is_retried_for_post(instant: FakeClock) -> None:
    """A mocked httpx.ConnectError (nothing sent) is retried even for POST."""
    with respx.mock, httpx.Client(transport=ResilientTransport()) as client:
        route = respx.post(URL).mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(201)]
        )
        assert client.post(URL, json={"a": 1}).status_code == 201
        assert route.call_count == 2


# -- httpx.MockTransport as the inner transport ---------------------------------------------


def test_mock_transport_inner_sees_every_attempt_with_the_same_body(instant: FakeClock) -> None:
    """ResilientTransport(transport=httpx.MockTransport(handler)) calls the handler per attempt,
    each time with the full request body."""
    seen: list[tuple[str, bytes]] = []
    statuses = iter([503, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.read()))
        return httpx.Response(next(statuses))

    transport = ResilientTransport(cfg(), transport=httpx.MockTransport(handler))
    with httpx.Client(transport=transport) as client:
        response = client.put(URL, content=b"payload")
    assert response.status_code == 200
    assert seen == [("PUT", b"payload")] * 3


@pytest.mark.anyio
async def test_mock_transport_inner_of_the_async_transport(instant: FakeClock) -> None:
    """AsyncResilientTransport(transport=httpx.MockTransport(async handler)): one call per
    attempt."""
    calls: list[Any] = []
    statuses = iter([503, 502, 200])

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(next(statuses), text="body")

    transport = AsyncResilientTransport(cfg(), transport=httpx.MockTransport(handler))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert response.extensions["smoothapi_attempts"] == 3
    assert len(calls) == 3
