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


def _paired(benchmark: Any, contenders: dict[str, Callable[[], object]]) -> dict[str, float]:
    # Imported here: a spawned child imports this module with tests/ first on sys.path.
    from conftest import paired

    return paired(benchmark, contenders, batch=BATCH, rounds=ROUNDS)  # type: ignore[no-any-return]


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
            lambda: _paired(benchmark, contenders),
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
        medians = _paired(benchmark, contenders)
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


# -- an outage: 8 processes x 50 calls against an always-503 server ---------------------------

PROCESSES = 8
CALLS = 50
THRESHOLD = 5


def _outage_calls(url: str, redis_url: str, prefix: str, start: Any) -> None:
    import contextlib

    import requests

    from smoothapi import BackoffConfig, CircuitOpenError, RedisStore

    store = RedisStore.from_url(redis_url, timeout=2.0, prefix=prefix)
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=THRESHOLD, cooldown_ms=60_000, store=store
        ),
    )
    session = requests.Session()

    @resilient_api(config, name="outage")
    def get() -> int:
        response = session.get(url, timeout=5)
        response.raise_for_status()
        return response.status_code

    start.wait(60)
    for _ in range(CALLS):
        with contextlib.suppress(requests.HTTPError, CircuitOpenError):
            get()
    session.close()
    store.close()


@pytest.mark.benchmark(group="shared-breaker-outage")
def test_outage_requests_fleet_wide(benchmark: Any, redis_url: str) -> None:
    """Requests that reached an always-503 server from 8 processes sharing one breaker
    (failure_threshold=5, a cooldown longer than the run): the threshold's requests, plus
    those already on their way when the trip was pushed."""
    import multiprocessing

    from smoothapi.cli.demo_server import FlakyServer

    with FlakyServer() as server:
        server.set_mode("outage", phase="outage")
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Barrier(PROCESSES)
        prefix = f"bench{uuid.uuid4().hex}"
        args = (server.url + "/users/1", redis_url, prefix, start)

        def run() -> None:
            procs = [ctx.Process(target=_outage_calls, args=args) for _ in range(PROCESSES)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(120)
                assert p.exitcode == 0

        benchmark.pedantic(run, rounds=1, iterations=1)
        requests_seen = server.count("outage")
    benchmark.extra_info["calls"] = PROCESSES * CALLS
    benchmark.extra_info["upstream_requests"] = requests_seen
    assert requests_seen >= THRESHOLD
