"""A breaker shared through Redis beside the in-process breaker, in the same run.

`@resilient_api` on `def f(x): return x`, happy path: the in-memory breaker,
and the same config with `CircuitBreakerConfig(store=RedisStore(...))` against
a local redis-server, sync and under asyncio, for the consecutive rule and the
failure-rate rule.  Since issue 14 a shared breaker that last heard CLOSED and
clean calls on its clean ticket while its store's watcher is subscribed to the
breaker events: no Redis command per healthy call (the rate rule sends its
batched successes with one acquire per 1,000 calls).  Each benchmark waits for
that state first, and counts the commands the server ran during the timed
rounds (``INFO commandstats``, every command but INFO, those run by scripts
included) into ``extra_info["redis_commands_per_call"]``.  The
``redis-async-only`` contender (a store with only an async client: no watcher)
shows the round trip per call that such a store still makes.
Needs a `redis-server` (or `valkey-server`) on PATH, or SMOOTHAPI_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import paired

from smoothapi import CircuitBreakerConfig, ResilientConfig, resilient_api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redisserver import RedisServer, env_url

BATCH = 200
ROUNDS = 15


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    url = env_url()
    if url is not None:
        yield url
        return
    with RedisServer() as server:
        yield server.url


def _rule(rule: str) -> dict[str, Any]:
    return {"failure_rate": 0.5, "window_ms": 60_000} if rule == "rate" else {}


def _configs(redis_url: str, rule: str) -> tuple[dict[str, ResilientConfig], Any]:
    from smoothapi import RedisStore

    store = RedisStore.from_url(redis_url, prefix=f"bench{uuid.uuid4().hex}")
    return {
        "memory": ResilientConfig(circuit_breaker=CircuitBreakerConfig(**_rule(rule))),
        "redis": ResilientConfig(circuit_breaker=CircuitBreakerConfig(store=store, **_rule(rule))),
    }, store


def _commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def _until_clean(breaker: Any, call: Callable[[], object]) -> None:
    """Until the shared breaker calls on its clean ticket (its watcher subscribed)."""
    deadline = time.monotonic() + 10
    while not breaker.clean_ticket:
        assert time.monotonic() < deadline, "the shared breaker never got a clean ticket"
        call()
        time.sleep(0.005)


def _count(benchmark: Any, redis_url: str, measure: Callable[[], dict[str, float]]) -> None:
    counter = redis.Redis.from_url(redis_url)
    try:
        before = _commands(counter)
        medians = measure()
        sent = _commands(counter) - before
    finally:
        counter.close()
    calls = BATCH * (ROUNDS + 1)  # the warm-up round and the timed ones
    benchmark.extra_info["redis_commands_per_call"] = sent / calls
    benchmark.extra_info["ratio_redis_to_memory"] = medians["redis"] / medians["memory"]


@pytest.mark.parametrize("rule", ["consecutive", "rate"])
@pytest.mark.benchmark(group="shared-breaker-sync")
def test_shared_breaker_sync(benchmark: Any, redis_url: str, rule: str) -> None:
    """Happy-path calls through the in-memory breaker and through a Redis-shared one."""
    contenders: dict[str, Callable[[], object]] = {}
    configs, store = _configs(redis_url, rule)
    shared = None
    for name, config in configs.items():
        fn = resilient_api(config, name=f"bench-{name}")(f)
        if name == "redis":
            shared = fn
            _until_clean(fn.breaker, lambda fn=fn: fn(0))  # type: ignore[attr-defined]

        def run(fn: Callable[[int], int] = fn) -> None:
            for i in range(BATCH):
                fn(i)

        contenders[name] = run
    assert shared is not None
    try:
        _count(
            benchmark,
            redis_url,
            lambda: paired(benchmark, contenders, batch=BATCH, rounds=ROUNDS),
        )
    finally:
        store.close()


def f(x: int) -> int:
    return x


async def af(x: int) -> int:
    return x


@pytest.mark.parametrize("rule", ["consecutive", "rate"])
@pytest.mark.benchmark(group="shared-breaker-async")
def test_shared_breaker_async(benchmark: Any, redis_url: str, rule: str) -> None:
    """The same with `async def` under asyncio (a store with both clients), and a store
    with only an async client (no watcher: one round trip per call)."""
    import redis.asyncio

    from smoothapi import RedisStore

    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    configs, store = _configs(redis_url, rule)
    async_client = redis.asyncio.Redis.from_url(redis_url)
    only_async = RedisStore(async_client, prefix=f"bench{uuid.uuid4().hex}")
    configs["redis-async-only"] = ResilientConfig(
        circuit_breaker=CircuitBreakerConfig(store=only_async, **_rule(rule))
    )
    for name, config in configs.items():
        fn = resilient_api(config, name=f"bench-async-{name}")(af)
        if name == "redis":
            _until_clean(fn.breaker, lambda fn=fn: loop.run_until_complete(fn(0)))  # type: ignore[attr-defined]

        async def batch(fn: Any = fn) -> None:
            for i in range(BATCH):
                await fn(i)

        contenders[name] = lambda batch=batch: loop.run_until_complete(batch())
    try:
        medians = paired(benchmark, contenders, batch=BATCH, rounds=ROUNDS)
        benchmark.extra_info["ratio_redis_to_memory"] = medians["redis"] / medians["memory"]
        # The shared contender alone, untimed, for its commands per call.
        counter = redis.Redis.from_url(redis_url)
        try:
            before = _commands(counter)
            for _ in range(ROUNDS):
                contenders["redis"]()
            sent = _commands(counter) - before
        finally:
            counter.close()
        benchmark.extra_info["redis_commands_per_call"] = sent / (BATCH * ROUNDS)
    finally:
        loop.run_until_complete(store.aclose())
        loop.run_until_complete(async_client.aclose())
        loop.close()
