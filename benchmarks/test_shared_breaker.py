"""A breaker shared through Redis beside the in-process breaker, in the same run.

`@resilient_api` on `def f(x): return x`, happy path: the in-memory breaker,
and the same config with `CircuitBreakerConfig(store=RedisStore(...))` against
a local redis-server (one EVALSHA per call), sync and under asyncio. The
Redis figure is a loopback round trip; the ratio says what sharing costs.
Needs a `redis-server` (or `valkey-server`) on PATH, or SMOOTHAPI_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import paired

from smoothapi import CircuitBreakerConfig, ResilientConfig, resilient_api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redisserver import RedisServer, env_url

BATCH = 200


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    url = env_url()
    if url is not None:
        yield url
        return
    with RedisServer() as server:
        yield server.url


def _configs(redis_url: str) -> tuple[dict[str, ResilientConfig], Any]:
    from smoothapi import RedisStore

    store = RedisStore.from_url(redis_url, prefix=f"bench{uuid.uuid4().hex}")
    return {
        "memory": ResilientConfig(),
        "redis": ResilientConfig(circuit_breaker=CircuitBreakerConfig(store=store)),
    }, store


def f(x: int) -> int:
    return x


async def af(x: int) -> int:
    return x


@pytest.mark.benchmark(group="shared-breaker-sync")
def test_shared_breaker_sync(benchmark: Any, redis_url: str) -> None:
    """Happy-path calls through the in-memory breaker and through a Redis-shared one."""
    contenders: dict[str, Callable[[], object]] = {}
    configs, store = _configs(redis_url)
    for name, config in configs.items():
        fn = resilient_api(config, name=f"bench-{name}")(f)

        def run(fn: Callable[[int], int] = fn) -> None:
            for i in range(BATCH):
                fn(i)

        contenders[name] = run
    try:
        paired(benchmark, contenders, batch=BATCH, rounds=15)
    finally:
        asyncio.run(store.aclose())


@pytest.mark.benchmark(group="shared-breaker-async")
def test_shared_breaker_async(benchmark: Any, redis_url: str) -> None:
    """The same with `async def` under asyncio (redis.asyncio client)."""
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    configs, store = _configs(redis_url)
    for name, config in configs.items():
        fn = resilient_api(config, name=f"bench-async-{name}")(af)

        async def batch(fn: Any = fn) -> None:
            for i in range(BATCH):
                await fn(i)

        contenders[name] = lambda batch=batch: loop.run_until_complete(batch())
    try:
        paired(benchmark, contenders, batch=BATCH, rounds=15)
    finally:
        loop.run_until_complete(store.aclose())
        loop.close()
