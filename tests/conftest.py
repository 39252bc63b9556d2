"""Shared fixtures: a real scripted HTTP/1.1 server (see tests/httpserver.py) and a real
Redis server (see tests/redisserver.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest
from httpserver import ScriptedServer
from redisserver import (
    BINARIES,
    CLI_BINARIES,
    ENV_URL,
    RedisCluster,
    RedisServer,
    env_url,
    find_binary,
    find_cli,
)

from smoothapi.testing import FakeClock, set_testing

pytest_plugins = ["pytester"]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A fresh, started ScriptedServer per test; stopped afterwards."""
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def shared_server() -> Iterator[ScriptedServer]:
    """One ScriptedServer for the whole session; call ``reset()`` before scripting."""
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Async tests (``@pytest.mark.anyio``) run under asyncio and under trio."""
    return str(request.param)


@pytest.fixture
def instant() -> Iterator[FakeClock]:
    """Backoff sleeps return at once and advance a fake clock that every breaker reads."""
    clock = FakeClock()
    with set_testing(clock=clock):
        yield clock


# -- a real Redis (or Valkey) server -------------------------------------------------------------


def _redis_unavailable(why: str) -> NoReturn:
    """No server to test against: a clear failure in CI, a skip that says why elsewhere."""
    message = (
        f"{why}. The Redis tests need a real server: install one "
        f"({' or '.join(BINARIES)} on PATH, e.g. `apt-get install redis-server`) "
        f"or set {ENV_URL}=redis://HOST:PORT/DB."
    )
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message} CI is set, so this is a failure, not a skip.", pytrace=False)
    pytest.skip(message)


def _start_redis_server() -> RedisServer:
    if find_binary() is None:
        _redis_unavailable(f"none of {', '.join(BINARIES)} is on PATH")
    srv = RedisServer()
    try:
        return srv.start()
    except BaseException:
        srv.close()
        raise


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis server shared by the session: ``SMOOTHAPI_REDIS_URL`` if set,
    else a ``redis-server``/``valkey-server`` started on 127.0.0.1 (never port 6379).

    Tests sharing it must namespace their keys (a unique ``prefix=`` per test) and
    never stop, flush or reconfigure it.
    """
    url = env_url()
    if url is not None:
        yield url
        return
    srv = _start_redis_server()
    try:
        yield srv.url
    finally:
        srv.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis server for one test, which may ``stop()`` and ``start()`` it again
    (same port).  Always a server of its own, even when ``SMOOTHAPI_REDIS_URL`` is set."""
    srv = _start_redis_server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on the session server; its keys are deleted afterwards
    (the server may be a developer's, via ``SMOOTHAPI_REDIS_URL``)."""
    import redis  # noqa: PLC0415 - only the Redis tests need redis-py

    prefix = f"smoothapi-test-{uuid.uuid4().hex[:16]}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _start_redis_cluster() -> RedisCluster:
    if find_binary() is None:
        _redis_unavailable(f"none of {', '.join(BINARIES)} is on PATH")
    if find_cli() is None:
        _redis_unavailable(
            f"none of {', '.join(CLI_BINARIES)} is on PATH (it creates the test cluster)"
        )
    return RedisCluster().start()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-node Redis Cluster on 127.0.0.1 shared by the session (never stopped by tests;
    they namespace their keys with a prefix of their own).  Fails under CI when it cannot
    start, like the other Redis fixtures."""
    cluster = _start_redis_cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def private_redis_cluster() -> Iterator[RedisCluster]:
    """A 3-node Redis Cluster for one test, which may ``stop()`` it."""
    cluster = _start_redis_cluster()
    try:
        yield cluster
    finally:
        cluster.close()
