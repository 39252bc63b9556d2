"""Tests for the Redis test-server helper (tests/redisserver.py) and its fixtures.

The Redis tests must never be skipped silently in CI: with no server binary
and no ``SMOOTHAPI_REDIS_URL``, the fixtures fail when ``CI`` is set and skip
with a message naming the missing binary otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import _redis_unavailable, _start_redis_server
from redisserver import ENV_URL, RedisServer, RedisServerError, env_url, find_binary, ping


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        yield c
    finally:
        c.close()


def test_server_listens_on_loopback_on_a_free_port_never_6379(redis_server: RedisServer) -> None:
    """The helper starts a real server on 127.0.0.1, away from a developer's own Redis."""
    assert redis_server.running
    assert redis_server.port is not None
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert ping(redis_server.port)


def test_server_persists_nothing(client: redis.Redis) -> None:
    """The server runs with ``--save ''`` and ``--appendonly no``."""
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}


def test_stop_then_start_reuses_the_port_with_an_empty_data_set(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    """stop() ends the server (connections refused); start() brings it back on the
    same port, so a client configured before the outage reconnects to it."""
    port = redis_server.port
    assert port is not None
    client.set("k", "v")
    redis_server.stop()
    assert not redis_server.running
    assert not ping(port)
    with pytest.raises(redis.ConnectionError):
        client.get("k")
    redis_server.start()
    assert redis_server.port == port
    assert ping(port)
    assert client.get("k") is None  # nothing was saved


def test_context_manager_stops_the_server() -> None:
    """Leaving the ``with`` block stops the server."""
    if find_binary() is None:
        _redis_unavailable("no redis-server/valkey-server on PATH")
    with RedisServer() as srv:
        port = srv.port
        assert port is not None
        assert ping(port)
    assert not srv.running
    assert not ping(port)


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no server binary on PATH, RedisServer says which binaries it looked for."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_binary() is None
    with pytest.raises(RedisServerError, match="redis-server, valkey-server"):
        RedisServer()


def test_no_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CI set and no binary: the fixture fails (a Redis test is never skipped in CI)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"redis-server.*CI is set"):
        _start_redis_server()


def test_no_server_skips_with_the_reason_outside_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No CI and no binary: the fixture skips, naming the missing binary and the way out."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"redis-server.*{ENV_URL}"):
        _start_redis_server()


def test_env_url_is_read_from_smoothapi_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """SMOOTHAPI_REDIS_URL selects an existing server; an empty value means unset."""
    monkeypatch.setenv(ENV_URL, "redis://10.0.0.1:7000/2")
    assert env_url() == "redis://10.0.0.1:7000/2"
    monkeypatch.setenv(ENV_URL, "")
    assert env_url() is None
    monkeypatch.delenv(ENV_URL)
    assert env_url() is None


def test_session_redis_url_answers(redis_url: str) -> None:
    """The session server (or SMOOTHAPI_REDIS_URL) answers PING."""
    c = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        assert c.ping()
    finally:
        c.close()


def test_a_server_that_never_answers_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    """A binary that exits at once (a broken install, a bad flag) makes start() raise,
    quoting the exit code and the output, instead of waiting for a PING that never comes."""
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'FATAL: broken build' >&2\nexit 3\n")
    broken.chmod(0o755)
    srv = RedisServer(binary=str(broken))
    try:
        with pytest.raises(RedisServerError, match=r"(?s)exit code 3.*FATAL: broken build"):
            srv.start()
        assert not srv.running
    finally:
        srv.close()
