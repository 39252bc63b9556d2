"""An aiohttp attempt cut at the call's deadline: its span says timeout, not cancellation.

The deadline cuts each attempt below the span wrapper, so the span ends with
the ``aiohttp.ServerTimeoutError`` the caller gets (dashboards that count
cancellations - clients going away - do not count deadline cuts with them).
"""

from __future__ import annotations

import aiohttp
import pytest
from httpserver import Delay, Reply, ScriptedServer
from opentelemetry.trace import StatusCode
from test_aiohttp_telemetry import (  # the helpers and fixtures of the aiohttp telemetry tests
    Telemetry,
    anyio_backend,  # noqa: F401 - a fixture
    session_for,
    status,
    telemetry,  # noqa: F401 - a fixture
)

from smoothapi import BackoffConfig, ResilientConfig


@pytest.mark.anyio
async def test_a_deadline_cut_span_says_timeout(
    telemetry: Telemetry,  # noqa: F811 - the fixture
    server: ScriptedServer,
) -> None:
    server.default = Delay(5.0, Reply(200))
    config = ResilientConfig(backoff=BackoffConfig(max_retries=0), deadline=0.3)
    async with session_for(config) as session:
        with pytest.raises(aiohttp.ServerTimeoutError):
            await status(session, server.url + "/slow")
    (span,) = telemetry.attempts()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "ServerTimeoutError"
