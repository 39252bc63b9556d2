"""A load-control refusal inside a decorated function is not the upstream's failure.

A transport that sheds a request raises an error that is also the client's own
(``httpx.TransportError``): an outer ``@resilient_api`` must re-raise it at
once, neither retrying nor counting it, as it does a nested ``CircuitOpenError``
(nothing was sent).  The inner transport's I/O is an ``httpx.MockTransport``.
"""

from __future__ import annotations

import httpx
import pytest

from smoothapi import (
    BackoffConfig,
    LoadShedError,
    RateLimitConfig,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.mounts.httpx_transport import LoadShedTransportError


def test_a_shed_request_is_reraised_not_retried_nor_counted() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    inner = ResilientTransport(
        ResilientConfig(rate_limit=RateLimitConfig(rate=0.001, burst=1, max_wait=0.0)),
        transport=httpx.MockTransport(handler),
    )
    client = httpx.Client(transport=inner)
    attempts = []

    @resilient_api(ResilientConfig(backoff=BackoffConfig(base_delay=0.0, max_retries=3)))
    def fetch() -> int:
        attempts.append(1)
        return client.get("http://upstream.test/").status_code

    assert fetch() == 200
    with pytest.raises(LoadShedError) as caught:
        fetch()
    assert isinstance(caught.value, LoadShedTransportError)
    assert isinstance(caught.value, httpx.TransportError)
    assert caught.value.stage == "rate_limit"
    assert caught.value.retry_after > 0
    assert len(attempts) == 2  # not retried
    assert len(sent) == 1  # nothing sent for the shed call
    assert fetch.breaker.failure_count == 0  # not counted
