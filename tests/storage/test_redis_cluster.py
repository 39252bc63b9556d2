"""Issue 11, item 12: shared breakers in a real Redis Cluster (3 primaries on loopback,
started by the tests: see tests/redisserver.py and the ``redis_cluster`` fixture).

Calls trip, reject and probe; ``state`` and the gauges read the cluster (a one-key script,
not a pipelined TIME, which a cluster refuses); ``smoothapi status`` finds the breakers on
every primary; a stopped cluster falls back to the local breaker like any outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry
from redisserver import RedisCluster

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ResilientConfig,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.cli import main
from smoothapi.prometheus import instrument, uninstrument
from smoothapi.storage import RedisStore

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
WAIT = 10.0


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _cluster_client(cluster: RedisCluster, timeout: float = 2.0) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster(
        host="127.0.0.1",
        port=cluster.ports[0],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


@pytest.fixture
def client(redis_cluster: RedisCluster) -> Iterator[redis.cluster.RedisCluster]:
    c = _cluster_client(redis_cluster)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def store(client: redis.cluster.RedisCluster) -> RedisStore:
    return RedisStore(client, prefix=f"t{uuid.uuid4().hex}")


def _probe(breaker: CircuitBreaker) -> int:
    held: list[int] = []
    _until(lambda: held.append(breaker.acquire()) or held[-1] != REJECTED, "the probe")
    return held[-1]


def test_trip_reject_probe_and_state_in_a_cluster(store: RedisStore) -> None:
    """The whole cycle, with ``state``, ``failure_count``, ``retry_after`` and
    ``snapshot()`` read from the cluster (before: RedisClusterException)."""
    assert store.is_cluster
    config = CircuitBreakerConfig(failure_threshold=2, cooldown_ms=200)
    breaker = CircuitBreaker(config, name="payments", store=store)
    other = CircuitBreaker(config, name="payments", store=store)  # another worker, say
    assert breaker.state is CLOSED
    breaker.record_failure(breaker.acquire())
    assert (other.state, other.failure_count) == (CLOSED, 1)
    assert breaker.record_failure(breaker.acquire()) is OPEN
    assert other.state is OPEN
    assert 0.0 < other.retry_after <= 0.2
    assert other.acquire() == REJECTED
    assert other.snapshot().state is OPEN

    probe = _probe(other)
    assert probe % 2 == 1
    assert breaker.acquire() == REJECTED  # one probe for the fleet
    assert breaker.state is HALF_OPEN
    assert other.record_success(probe) is CLOSED
    assert (breaker.state, breaker.failure_count) == (CLOSED, 0)
    breaker.force_open()
    assert other.state is OPEN
    other.reset()
    assert breaker.state is CLOSED


def test_breakers_spread_over_every_node(
    store: RedisStore, client: redis.cluster.RedisCluster
) -> None:
    """Each breaker's script runs on the node holding its key's slot (the hash tag): with
    enough breakers every primary holds some, and each trips on its own."""
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
    names = [f"svc-{i}" for i in range(24)]
    for name in names:
        b = CircuitBreaker(config, name=name, store=store)
        b.record_failure(b.acquire())
    nodes = {client.get_node_from_key(store.key(name)).name for name in names}
    assert len(nodes) == 3
    assert {CircuitBreaker(config, name=n, store=store).state for n in names} == {OPEN}


def test_a_decorated_function_trips_and_rejects_through_the_cluster(store: RedisStore) -> None:
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000, store=store),
    )
    calls = 0

    @resilient_api(config, name="users")
    def call() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            call()
    with pytest.raises(CircuitOpenError):
        call()
    assert calls == 2
    assert call.breaker.state is OPEN


def test_an_async_cluster_client(redis_cluster: RedisCluster) -> None:
    """redis.asyncio.cluster.RedisCluster: acquire, report and snapshot from async code."""

    async def scenario() -> tuple[CircuitState, int, CircuitState]:
        client = redis.asyncio.cluster.RedisCluster(
            host="127.0.0.1", port=redis_cluster.ports[1], socket_timeout=2
        )
        try:
            store = RedisStore(client, prefix=f"t{uuid.uuid4().hex}")
            breaker = CircuitBreaker(
                CircuitBreakerConfig(failure_threshold=2), name="a", store=store
            )
            await breaker.record_failure_async(await breaker.acquire_async())
            first = await breaker.snapshot_async()
            await breaker.record_failure_async(await breaker.acquire_async())
            second = await breaker.snapshot_async()
            return first.state, first.failures, second.state
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (CLOSED, 1, OPEN)


def test_from_url_builds_cluster_clients(redis_cluster: RedisCluster) -> None:
    store = RedisStore.from_url(
        redis_cluster.url, cluster=True, timeout=2, prefix=f"t{uuid.uuid4().hex}"
    )
    try:
        assert store.is_cluster
        assert store.label.startswith("redis-cluster://127.0.0.1:")
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), name="a", store=store)
        breaker.record_failure(breaker.acquire())
        assert breaker.state is OPEN
    finally:
        store.close()


def test_gauges_read_shared_breakers_in_a_cluster(store: RedisStore) -> None:
    registry = CollectorRegistry()
    instrument(registry)
    try:
        name = f"gauge-{uuid.uuid4().hex[:8]}"
        breaker = CircuitBreaker(
            CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000), name=name, store=store
        )
        labels = {"breaker": name}
        breaker.record_failure(breaker.acquire())
        assert registry.get_sample_value("smoothapi_breaker_failures", labels) == 1
        breaker.record_failure(breaker.acquire())
        assert (
            registry.get_sample_value("smoothapi_breaker_state", {**labels, "state": "OPEN"}) == 1
        )
        remaining = registry.get_sample_value("smoothapi_breaker_open_remaining_seconds", labels)
        assert remaining is not None
        assert 0 < remaining <= 60
    finally:
        uninstrument()


def test_status_reads_every_primary_of_a_cluster(
    store: RedisStore, redis_cluster: RedisCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """``smoothapi status --redis <one node>`` finds the breakers on all three primaries,
    in the table and in JSON; a malformed entry on any node is reported, the rest listed."""
    config = CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000)
    names = [f"svc-{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        b = CircuitBreaker(config, name=name, store=store)
        for _ in range(1 + i % 2):  # 1: CLOSED with a failure counted; 2: OPEN
            b.record_failure(b.acquire())
    assert len({store.client.get_node_from_key(store.key(n)).name for n in names}) == 3
    assert [b.name for b in store.breakers()] == names

    for port in redis_cluster.ports:  # whichever node the URL names
        argv = ["status", "--redis", f"redis://127.0.0.1:{port}/0", "--prefix", store.prefix]
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert err == ""
        assert "12 breakers stored" in out
        assert "(every primary)" in out
        for i, name in enumerate(names):
            row = next(line for line in out.splitlines() if line.startswith(name + " "))
            assert ("OPEN" if i % 2 else "CLOSED") in row

    assert main([*argv, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == names
    assert [r["failures"] for r in records] == [1 + i % 2 for i in range(12)]

    store.client.hset(store.key("broken"), mapping={"state": "AJAR", "name": "broken"})
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "12 breakers and 1 malformed entry stored" in out
    assert "broken" in err
    assert "AJAR" in err


def test_a_stopped_cluster_falls_back_to_the_local_breaker(
    private_redis_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Every node stopped: calls go on through the local breaker (RedisClusterException and
    ConnectionError alike are an outage), one WARNING for the outage, and no call hangs."""
    caplog.set_level(logging.INFO, logger="smoothapi")
    client = redis.cluster.RedisCluster(
        host="127.0.0.1",
        port=private_redis_cluster.ports[0],
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    store = RedisStore(client, prefix="stopped", retry_interval=0.05)
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000, store=store),
    )
    outcomes: list[str] = []

    @resilient_api(config, name="cluster down")
    def call(ok: bool) -> str:
        if not ok:
            raise ConnectionError("upstream down")
        return "fine"

    try:
        assert call(True) == "fine"
        assert call.breaker.state is CLOSED  # read from the cluster
        private_redis_cluster.stop()
        start = time.monotonic()
        for ok in (True, False, False, True):
            time.sleep(0.06)  # past the retry interval: each call tries the cluster again
            try:
                outcomes.append(call(ok))
            except ConnectionError:
                outcomes.append("failed")
            except CircuitOpenError:
                outcomes.append("rejected")
        state = call.breaker.state
        elapsed = time.monotonic() - start
    finally:
        client.close()
    assert outcomes == ["fine", "failed", "failed", "rejected"]
    assert state is OPEN  # the local breaker's
    assert elapsed < 60  # did not hang (each attempt on the cluster is bounded)
    warnings = [
        r for r in caplog.records if getattr(r, "smoothapi_event", "") == "store_unavailable"
    ]
    assert len(warnings) == 1
    assert "redis-cluster://127.0.0.1:" in warnings[0].getMessage()
