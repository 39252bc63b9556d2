"""One config per origin: every transport mount point picks its upstream's config.

``Upstreams`` (smoothapi/config.py) maps upstream keys to configs; the
transports call ``for_origin`` once per new origin and build that origin's
breaker and rules from the config it returns.  Two origins of one real server
(``127.0.0.1:<port>`` and ``localhost:<port>``) get different retry counts,
retried statuses, idempotent methods and breaker thresholds.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    ConfigError,
    HedgingConfig,
    ResilientAdapter,
    ResilientConfig,
    ResilientMiddleware,
    ResilientTransport,
    attempts,
)
from smoothapi.config import Upstreams

FAST = BackoffConfig(base_delay=0.001, max_delay=0.01, max_retries=3)
# The default breaker stays CLOSED through these tests: only the retries are counted.
PATIENT = CircuitBreakerConfig(failure_threshold=20)


def _upstreams() -> Upstreams:
    default = ResilientConfig(backoff=FAST, circuit_breaker=PATIENT)
    local = ResilientConfig(
        backoff=BackoffConfig(base_delay=0.001, max_delay=0.01, max_retries=1),
        retry_on=[502],
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000),
    )
    return Upstreams(default, {"localhost": local})


def _urls(server: ScriptedServer) -> tuple[str, str]:
    port = server.url.rsplit(":", 1)[1]
    return f"http://127.0.0.1:{port}", f"http://localhost:{port}"


def _script(server: ScriptedServer) -> None:
    server.default = Reply(503)
    server.script("/bad-gateway", Reply(502), Reply(502), Reply(502), Reply(200))


def _check_counts(server: ScriptedServer, results: dict[str, int]) -> None:
    # The default config retries 503 three times: four requests.
    assert results["default-503"] == 4
    # localhost's config retries only 502, once; its breaker then opens (threshold 2).
    assert results["local-503"] == 1
    assert results["local-502"] == 2
    assert server.count("/x") == 5
    assert server.count("/bad-gateway") == 2


def test_requests_adapter_picks_a_config_per_origin(server: ScriptedServer) -> None:
    _script(server)
    default_url, local_url = _urls(server)
    adapter = ResilientAdapter(_upstreams())
    with requests.Session() as session:
        session.mount("http://", adapter)
        results = {
            "default-503": attempts(session.get(default_url + "/x")),
            "local-503": attempts(session.get(local_url + "/x")),
        }
        results["local-502"] = attempts(session.get(local_url + "/bad-gateway"))
        # localhost's breaker tripped after two failures (its failure_threshold=2)...
        with pytest.raises(CircuitOpenError):
            session.get(local_url + "/x")
    _check_counts(server, results)
    # ... the default origin's did not: its threshold is the default's.
    assert adapter.breaker_for(default_url).config.failure_threshold == 20
    assert adapter.breaker_for(local_url).config.failure_threshold == 2
    assert adapter.upstreams is not None
    assert adapter.config is adapter.upstreams.default


def test_httpx_transport_picks_a_config_per_origin(server: ScriptedServer) -> None:
    _script(server)
    default_url, local_url = _urls(server)
    transport = ResilientTransport(_upstreams())
    with httpx.Client(transport=transport) as client:
        results = {
            "default-503": attempts(client.get(default_url + "/x")),
            "local-503": attempts(client.get(local_url + "/x")),
        }
        results["local-502"] = attempts(client.get(local_url + "/bad-gateway"))
        with pytest.raises(CircuitOpenError):
            client.get(local_url + "/x")
    _check_counts(server, results)
    assert transport.breaker_for(local_url).config.failure_threshold == 2
    assert transport.breaker_for(default_url + "/other").config.failure_threshold == 20


def test_async_httpx_transport_picks_a_config_per_origin(server: ScriptedServer) -> None:
    _script(server)
    default_url, local_url = _urls(server)
    transport = AsyncResilientTransport(_upstreams())

    async def main() -> dict[str, int]:
        async with httpx.AsyncClient(transport=transport) as client:
            results = {
                "default-503": attempts(await client.get(default_url + "/x")),
                "local-503": attempts(await client.get(local_url + "/x")),
            }
            results["local-502"] = attempts(await client.get(local_url + "/bad-gateway"))
            with pytest.raises(CircuitOpenError):
                await client.get(local_url + "/x")
            return results

    _check_counts(server, asyncio.run(main()))


def test_aiohttp_middleware_picks_a_config_per_origin(server: ScriptedServer) -> None:
    _script(server)
    default_url, local_url = _urls(server)
    middleware = ResilientMiddleware(_upstreams())

    async def main() -> dict[str, int]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            results: dict[str, int] = {}
            async with session.get(default_url + "/x") as response:
                results["default-503"] = attempts(response)
            async with session.get(local_url + "/x") as response:
                results["local-503"] = attempts(response)
            async with session.get(local_url + "/bad-gateway") as response:
                results["local-502"] = attempts(response)
            with pytest.raises(CircuitOpenError):
                await session.get(local_url + "/x")
            return results

    _check_counts(server, asyncio.run(main()))


def test_idempotent_methods_are_per_origin(server: ScriptedServer) -> None:
    """POST is resent to the upstream whose config allows it, and only there."""
    default_url, local_url = _urls(server)
    upstreams = Upstreams(
        ResilientConfig(backoff=FAST, circuit_breaker=PATIENT),
        {
            "localhost": ResilientConfig(
                backoff=FAST, circuit_breaker=PATIENT, retry_non_idempotent=True
            )
        },
    )
    server.default = Reply(503)
    with httpx.Client(transport=ResilientTransport(upstreams)) as client:
        assert attempts(client.post(default_url + "/p", content=b"x")) == 1
        assert attempts(client.post(local_url + "/q", content=b"x")) == 4
    assert server.count("/p") == 1
    assert server.count("/q") == 4


def test_upstreams_and_a_shared_breaker_are_refused() -> None:
    from smoothapi import CircuitBreaker  # noqa: PLC0415

    with pytest.raises(ConfigError, match="cannot be combined with Upstreams"):
        ResilientTransport(_upstreams(), breaker=CircuitBreaker())


@pytest.mark.parametrize("mount", [ResilientAdapter, ResilientTransport, ResilientMiddleware])
def test_hedging_in_any_upstream_is_refused_where_it_cannot_hedge(mount: type) -> None:
    upstreams = Upstreams(
        ResilientConfig(), {"api.example.com": ResilientConfig(hedging=HedgingConfig())}
    )
    with pytest.raises(ConfigError, match="cannot hedge requests"):
        mount(upstreams)


def test_async_httpx_transport_hedges_per_upstream() -> None:
    upstreams = Upstreams(
        ResilientConfig(), {"api.example.com": ResilientConfig(hedging=HedgingConfig())}
    )
    transport = AsyncResilientTransport(upstreams)
    assert transport.breaker_for("https://api.example.com").name == "https://api.example.com:443"


def test_a_config_that_is_neither_is_refused() -> None:
    with pytest.raises(TypeError, match="ResilientConfig or Upstreams"):
        ResilientTransport({"backoff": {}})  # type: ignore[arg-type]
