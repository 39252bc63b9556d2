"""A retry budget the fleet shares through Redis, beside the per-process one (issue 14).

* Happy path: `@resilient_api` on `def f(x): return x` with no budget, the
  per-process budget (`RetryBudgetConfig()`), and the fleet's
  (`RetryBudgetConfig(store=RedisStore(...))`), sync and under asyncio, in
  the same interleaved run.  A healthy call never waits for Redis: it earns
  `token_ratio` locally, and the earnings go to Redis `batch` tokens at a
  time - one EVALSHA per `batch / token_ratio` calls (20 at the defaults),
  counted with `INFO commandstats` (`extra_info["evalsha_per_call"]`).
* An outage, not a timing: 8 processes x 50 calls each through
  `@resilient_api` (`requests`, 3 retries, breaker threshold out of reach)
  against a local server that answers 503 to everything; the requests that
  reached it, with per-process budgets and with the fleet's
  (`extra_info["upstream_requests"]`).

Needs a `redis-server` (or `valkey-server`) on PATH, or SMOOTHAPI_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    RedisStore,
    ResilientConfig,
    RetryBudgetConfig,
    resilient_api,
)
from smoothapi.cli.demo_server import FlakyServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redisserver import RedisServer, env_url

BATCH = 1_000
PROCESSES = 8
CALLS = 50
WAIT = 120.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    url = env_url()
    if url is not None:
        yield url
        return
    with RedisServer() as server:
        yield server.url


def _configs(store: RedisStore) -> dict[str, ResilientConfig]:
    return {
        "no budget": ResilientConfig(),
        "local budget": ResilientConfig(retry_budget=RetryBudgetConfig()),
        "shared budget": ResilientConfig(retry_budget=RetryBudgetConfig(store=store)),
    }


def f(x: int) -> int:
    return x


async def af(x: int) -> int:
    return x


def _evalsha(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _reports_per_call(url: str, run: Callable[[], object], batches: int = 5) -> float:
    """EVALSHA per healthy call over ``batches`` batches, once the reporter thread is done."""
    before = _evalsha(url)
    for _ in range(batches):
        run()
    time.sleep(0.5)  # the reporter sends what the batches earned (no call waited for it)
    return (_evalsha(url) - before) / (batches * BATCH)


@pytest.mark.benchmark(group="shared-budget-sync")
def test_shared_budget_sync(benchmark: Any, redis_url: str) -> None:
    """Happy-path calls with no budget, the process's budget and the fleet's."""
    from conftest import paired  # not at import: the outage's children import this module

    store = RedisStore.from_url(redis_url, prefix=f"bench{uuid.uuid4().hex}")
    contenders: dict[str, Callable[[], object]] = {}
    for name, config in _configs(store).items():
        fn = resilient_api(config, name=f"bench-{name}")(f)

        def run(fn: Callable[[int], int] = fn) -> None:
            for i in range(BATCH):
                fn(i)

        contenders[name] = run
    try:
        per_call = _reports_per_call(redis_url, contenders["shared budget"])
        # At most one report of `batch` (2) tokens per 2 / 0.1 = 20 successes, from the
        # budget's reporter thread, never one per call.
        assert per_call <= 1 / 20
        benchmark.extra_info["evalsha_per_call"] = per_call
        paired(benchmark, contenders, batch=BATCH, rounds=25)
    finally:
        store.close()


@pytest.mark.benchmark(group="shared-budget-async")
def test_shared_budget_async(benchmark: Any, redis_url: str) -> None:
    """The same with `async def` under asyncio (the budget's reports use the sync client)."""
    from conftest import paired  # see above

    store = RedisStore.from_url(redis_url, prefix=f"bench{uuid.uuid4().hex}")
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, config in _configs(store).items():
        fn = resilient_api(config, name=f"bench-async-{name}")(af)

        async def batch(fn: Any = fn) -> None:
            for i in range(BATCH):
                await fn(i)

        contenders[name] = lambda batch=batch: loop.run_until_complete(batch())
    try:
        per_call = _reports_per_call(redis_url, contenders["shared budget"])
        assert per_call <= 1 / 20
        benchmark.extra_info["evalsha_per_call"] = per_call
        paired(benchmark, contenders, batch=BATCH, rounds=25)
    finally:
        store.close()
        loop.close()


# -- an outage: 8 processes x 50 calls against an always-503 server ---------------------------


def _outage_calls(url: str, redis_url: str, prefix: str, shared: bool, start: Any) -> None:
    store = RedisStore.from_url(redis_url, timeout=2.0, prefix=prefix) if shared else None
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=0.0, max_delay=0.0, max_retries=3),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1_000_000),  # never opens
        retry_budget=RetryBudgetConfig(store=store),
    )
    session = requests.Session()

    @resilient_api(config, name="outage")
    def get() -> int:
        response = session.get(url, timeout=5)
        response.raise_for_status()
        return response.status_code

    start.wait(WAIT)
    for _ in range(CALLS):
        with contextlib.suppress(requests.HTTPError):  # every call fails: that is the outage
            get()
    session.close()


def _fleet_requests(server: FlakyServer, redis_url: str, shared: bool, phase: str) -> int:
    server.set_mode("outage", phase=phase)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    prefix = f"bench{uuid.uuid4().hex}"
    args = (server.url + "/users/1", redis_url, prefix, shared, start)
    procs = [ctx.Process(target=_outage_calls, args=args, daemon=True) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0
    return server.count(phase)


@pytest.mark.benchmark(group="shared-budget-outage")
@pytest.mark.parametrize("name", ["per-process budgets", "shared budget"])
def test_outage_retries_fleet_wide(benchmark: Any, redis_url: str, name: str) -> None:
    """Requests that reached an always-503 server from 8 processes: their own budgets or
    the fleet's (report.py's table: contender, calls, requests)."""
    shared = name == "shared budget"
    with FlakyServer() as server:
        counts: list[int] = []
        benchmark.pedantic(
            lambda: counts.append(_fleet_requests(server, redis_url, shared, name)),
            rounds=1,
            iterations=1,
        )
    calls = PROCESSES * CALLS
    benchmark.extra_info["calls"] = calls
    benchmark.extra_info["upstream_requests"] = counts[0]
    # max_tokens=10: each process's own budget allows 5 retries, the fleet's 5 in all
    # (a fresh fleet holds no lease; the documented worst case adds (2 * batch - 1) * 8 = 24).
    assert counts[0] - calls == (5 if shared else 5 * PROCESSES)
