"""A retry budget the fleet shares through Redis (issue 14, item 3).

``RetryBudgetConfig(store=RedisStore(...))``: one bucket per breaker name in
Redis, leased ``batch`` tokens at a time, earnings reported ``batch`` tokens at
a time.  The documented bound (``smoothapi/storage/_budget.py``): from any
moment on, a fleet of ``P`` processes retries at most
``ceil(max_tokens / 2) + (2 * batch - 1) * P`` times plus ``token_ratio`` per
success from then on - and a fleet that starts fresh (no lease, nothing
unreported) and never succeeds retries exactly ``ceil(max_tokens / 2)`` times
in all, where per-process budgets would allow ``P`` times that.

Real OS processes ("spawn") against a real redis-server started by the
fixtures; each child counts what it did and the parent adds up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redisserver import RedisServer

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    ResilientConfig,
    RetryBudgetConfig,
    resilient_api,
)
from smoothapi.budget import RetryBudget
from smoothapi.config import _STORE_METHODS
from smoothapi.errors import ConfigError
from smoothapi.storage import RedisStore
from smoothapi.storage._budget import SharedRetryBudget
from smoothapi.storage._redis_budget import budget_key

pytestmark = pytest.mark.slow

WAIT = 60.0  # bound of every barrier and join; a passing run never comes near it
REDIS_TIMEOUT = 2.0  # generous: a loaded CI box must not look like an outage


def _store(url: str, prefix: str, **kwargs: Any) -> RedisStore:
    return RedisStore.from_url(
        url, timeout=kwargs.pop("timeout", REDIS_TIMEOUT), prefix=prefix, **kwargs
    )


def _budget(store: RedisStore, name: str, **config: Any) -> RetryBudget:
    return RetryBudget(RetryBudgetConfig(store=store, **config), name)


def _spends(budget: RetryBudget, limit: int = 10_000) -> int:
    """Spend until the budget refuses three times in a row; how many it granted."""
    granted = refused = 0
    while refused < 3 and granted < limit:
        if budget.try_spend():
            granted += 1
            refused = 0
        else:
            refused += 1
    return granted


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


# -- one process ---------------------------------------------------------------------------


def test_a_store_builds_the_shared_kind_and_compares_as_before(redis_url: str) -> None:
    store = _store(redis_url, "x")
    budget = _budget(store, "payments")
    assert isinstance(budget, SharedRetryBudget)
    assert type(RetryBudget(RetryBudgetConfig())) is RetryBudget
    # The store takes no part in comparing or hashing, as CircuitBreakerConfig.store.
    assert RetryBudgetConfig(store=store) == RetryBudgetConfig()
    assert hash(RetryBudgetConfig(store=store)) == hash(RetryBudgetConfig())


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, "2", True])
def test_batch_is_validated(bad: object) -> None:
    with pytest.raises((ConfigError, TypeError)):
        RetryBudgetConfig(batch=bad)  # type: ignore[arg-type]


def test_a_store_without_the_budget_is_refused() -> None:
    class Store:  # a BreakerStore's methods (by name), no budget
        pass

    for method in _STORE_METHODS:
        setattr(Store, method, lambda *a, **k: None)

    with pytest.raises(ConfigError, match="cannot keep a shared retry budget"):
        RetryBudget(RetryBudgetConfig(store=Store()), "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(("max_tokens", "batch"), [(10, 1), (10, 2), (10, 3), (7, 4), (10, 100)])
def test_leasing_in_batches_spends_exactly_what_single_spends_would(
    redis_url: str, redis_prefix: str, max_tokens: int, batch: int
) -> None:
    # The server grants min(batch, ceil(tokens - floor)): never past the floor, whatever
    # the batch - two budgets (two processes' worth) on one name share ceil(max / 2).
    store = _store(redis_url, redis_prefix)
    one = _budget(store, "n", max_tokens=max_tokens, batch=batch)
    two = _budget(store, "n", max_tokens=max_tokens, batch=batch)
    total = 0
    for _ in range(20):
        total += one.try_spend() + two.try_spend()
    assert total == math.ceil(max_tokens / 2)
    assert _spends(one) + _spends(two) == 0


def test_earnings_reach_the_fleet_in_batches(redis_server: RedisServer) -> None:
    # Healthy calls make one round trip per batch / token_ratio successes (here 8), from
    # the budget's reporter thread: no call waits for one.
    store = _store(redis_server.url, "p")
    client = redis.Redis.from_url(redis_server.url)
    budget = _budget(store, "n", max_tokens=10, token_ratio=0.25, batch=2)
    assert isinstance(budget, SharedRetryBudget)
    assert budget.try_spend()  # leases 2 (a round trip), spends 1
    assert sum(budget.try_spend() for _ in range(4)) == 4  # 1 leased, then 2 more, then 1
    key = budget_key("p", "n")
    assert float(client.get(key) or 0) == 5.0
    before = _evalsha_calls(client)
    for _ in range(10):
        for _ in range(8):
            budget.deposit()  # 0.25 each: 2 tokens, exactly one batch
        deadline = time.monotonic() + WAIT
        while budget._earned - budget._reported >= 2 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert _evalsha_calls(client) - before == 10  # 80 successes, 10 reports
    assert float(client.get(key) or 0) == 10.0  # refilled, capped at max_tokens
    # A budget on the same name in another process sees the refill.
    other = _budget(store, "n", max_tokens=10, batch=2)
    assert _spends(other) == 5


def test_a_report_credits_at_most_one_batch(redis_url: str, redis_prefix: str) -> None:
    # Earnings that piled up while their report waited (here: a lease holds the budget's
    # lock) are credited one batch at most: they cannot refill a bucket that ran dry.
    store = _store(redis_url, redis_prefix)
    budget = _budget(store, "n", max_tokens=10, token_ratio=0.1, batch=2)
    assert _spends(budget) == 5  # the fleet's bucket is at its floor
    assert isinstance(budget, SharedRetryBudget)
    with budget._exchange_lock:
        for _ in range(100):
            budget.deposit()  # 10 tokens earned; the reporter waits for the lock
    key = budget_key(redis_prefix, "n")
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + WAIT
    while float(client.get(key) or 0) == 5.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert float(client.get(key) or 0) == 7.0
    assert _spends(budget) == 2


def test_the_worst_case_reaches_the_documented_bound_exactly(
    redis_url: str, redis_prefix: str
) -> None:
    # Four budgets on one name stand for four processes (each has its own lease and
    # earnings).  The worst moment: each holds batch - 1 leased tokens and batch tokens
    # it earned and has not reported, while the fleet's bucket is full.  From then on
    # the fleet retries ceil(max / 2) + (2 * batch - 1) * 4 times - the bound, exactly.
    store = _store(redis_url, redis_prefix)
    max_tokens, ratio, batch, procs = 40, 0.25, 3, 4
    fleet = [
        _budget(store, "n", max_tokens=max_tokens, token_ratio=ratio, batch=batch)
        for _ in range(procs)
    ]
    shared = [b for b in fleet if isinstance(b, SharedRetryBudget)]
    assert len(shared) == procs
    for budget in fleet:
        assert budget.try_spend()  # each leases 3 and spends 1: 40 -> 28, 2 held each
    key = budget_key(redis_prefix, "n")
    client = redis.Redis.from_url(redis_url)
    client.set(key, str(max_tokens))  # the rest of the fleet's successes refilled it
    drainer = _budget(store, "n", max_tokens=max_tokens, batch=batch)  # a fifth process
    for budget in shared:
        budget._exchange_lock.acquire()  # the reporter waits: the earnings stay unreported
    try:
        for budget in fleet:
            for _ in range(16):
                budget.deposit()  # 4 tokens earned each, one batch (3) creditable
        after = _spends(drainer)  # the moment is past: the fleet's bucket runs dry
    finally:
        for budget in shared:
            budget._exchange_lock.release()
    deadline = time.monotonic() + WAIT
    while any(b._earned > b._reported for b in shared) and time.monotonic() < deadline:
        time.sleep(0.001)
    after += sum(_spends(b) for b in fleet) + _spends(drainer)
    assert after == math.ceil(max_tokens / 2) + (2 * batch - 1) * procs


def test_an_async_only_store_is_refused() -> None:
    import redis.asyncio  # noqa: PLC0415

    store = RedisStore(redis.asyncio.Redis())
    with pytest.raises(ConfigError, match="sync client"):
        RetryBudget(RetryBudgetConfig(store=store), "x")


def test_a_redis_cluster_keeps_the_fleets_bucket(redis_cluster: Any) -> None:
    store = RedisStore.from_url(redis_cluster.url, cluster=True, timeout=REDIS_TIMEOUT)
    prefix = f"t{uuid.uuid4().hex}"
    store.prefix = prefix
    try:
        one = _budget(store, "n", batch=3)
        two = _budget(store, "n", batch=3)
        assert _spends(one) + _spends(two) == 5
    finally:
        store.client.delete(budget_key(prefix, "n"))
        store.close()


def test_a_forked_child_starts_with_no_lease_and_none_of_the_parents_earnings(
    redis_url: str, redis_prefix: str
) -> None:
    store = _store(redis_url, redis_prefix)
    budget = _budget(store, "n", max_tokens=10, token_ratio=0.1, batch=3)
    assert budget.try_spend()  # the fleet: 10 -> 7; this process holds 2
    for _ in range(15):
        budget.deposit()  # 1.5 tokens earned, unreported (below batch)
    key = budget_key(redis_prefix, "n")
    client = redis.Redis.from_url(redis_url)
    assert float(client.get(key) or 0) == 7.0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            # No lease: this spend asks the fleet, without the parent's 1.5 tokens
            # (which would make the grant 3 and leave 5.5).
            spent = budget.try_spend()
            left = float(redis.Redis.from_url(redis_url).get(key) or 0)
            os.write(write, f"{spent} {left}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    reply = os.read(read, 100).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reply == "True 5.0"
    # The parent still holds its two leased tokens, and reports its own earnings.
    assert budget.try_spend()
    assert budget.try_spend()


def test_store_down_falls_back_to_the_process_budget_and_comes_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(redis_server.url, "p", timeout=0.2, retry_interval=0.05)
    budget = _budget(store, "n", max_tokens=10, batch=2)
    assert budget.try_spend()  # leased 2 from the fleet
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="smoothapi"):
        # The leased token, then the process's own bucket: 5 retries, nothing raised.
        assert _spends(budget) == 1 + 5
        for _ in range(30):
            budget.deposit()  # earns 3 tokens locally; none waits for the dead store
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()
    redis_server.start()  # empty (no persistence): the fleet's bucket starts full again
    time.sleep(0.1)  # past retry_interval: the next lease tries the store
    assert _spends(budget) == 5  # the fleet's half, not the local bucket's 3
    assert budget.tokens == pytest.approx(8.0)  # its own bucket: untouched since
    assert float(redis.Redis.from_url(redis_server.url).get(budget_key("p", "n")) or 0) == 5.0


def test_the_async_path_shares_the_fleets_bucket(redis_url: str, redis_prefix: str) -> None:
    store = _store(redis_url, redis_prefix)
    attempts = 0
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=0.0, max_delay=0.0, max_retries=3),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1_000_000),
        retry_budget=RetryBudgetConfig(max_tokens=10, store=store, batch=2),
    )

    async def down() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("upstream down")

    # Two decorated functions with one name: two processes' worth of budgets, one bucket.
    first = resilient_api(config, name="async-fleet")(down)
    second = resilient_api(config, name="async-fleet")(down)

    async def main() -> None:
        for fn in (first, second) * 25:
            with pytest.raises(ConnectionError):
                await fn()

    asyncio.run(main())
    assert attempts - 50 == 5


# -- a fleet of processes --------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    url: str
    prefix: str
    name: str
    max_tokens: float
    ratio: float
    batch: int
    ops: int
    seed: int


def _spend_and_earn(job: Job, start: Any, outage: Any, results: Any) -> None:
    """Phase 1: random successes and retries, then a healthy stretch that refills the
    fleet's bucket; phase 2 (an outage): retries until refused."""
    try:
        store = _store(job.url, job.prefix)
        budget = _budget(
            store, job.name, max_tokens=job.max_tokens, token_ratio=job.ratio, batch=job.batch
        )
        rand = random.Random(job.seed)
        start.wait(WAIT)
        successes = spent = 0
        for _ in range(job.ops):
            if rand.random() < 0.9:
                budget.deposit()
                successes += 1
            else:
                spent += budget.try_spend()
        # 10 tokens a process at 0.1: the bucket is full.  Calls take time, and so do
        # these: a report credits one batch, so a burst faster than the reporter thread
        # would credit less (only stricter).
        for _ in range(job.ops // 40):
            for _ in range(10):
                budget.deposit()
                successes += 1
            time.sleep(0.005)
        outage.wait(WAIT)
        results.put((successes, spent, _spends(budget), ""))
    except BaseException as exc:
        results.put((0, 0, 0, repr(exc)))


def _fleet(target: Any, args: list[tuple[Any, ...]], barriers: int) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    gates = [ctx.Barrier(len(args)) for _ in range(barriers)]
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, *gates, results), daemon=True) for a in args]
    try:
        for p in procs:
            p.start()
        got = [results.get(timeout=4 * WAIT) for _ in procs]
    finally:
        for g in gates:
            g.abort()
        for p in procs:
            p.join(WAIT)
            if p.is_alive():
                p.kill()
    return got


@pytest.mark.parametrize("batch", [1, 3])
def test_concurrent_processes_never_exceed_the_documented_overspend(
    redis_url: str, redis_prefix: str, batch: int
) -> None:
    procs, max_tokens, ratio = 4, 40.0, 0.1
    jobs = [
        Job(redis_url, redis_prefix, "fleet", max_tokens, ratio, batch, 400, seed)
        for seed in range(procs)
    ]
    results = _fleet(_spend_and_earn, [(j,) for j in jobs], barriers=2)
    assert [r[3] for r in results] == [""] * procs
    successes = sum(r[0] for r in results)
    spent = sum(r[1] for r in results)
    in_outage = sum(r[2] for r in results)
    # The outage: what the bucket held (at most max) above the floor, plus each
    # process's unspent lease (at most batch - 1) and unreported earnings (at most batch).
    assert in_outage <= math.ceil(max_tokens / 2) + (2 * batch - 1) * procs
    # Per-process budgets would have allowed procs * max / 2 = 80 here.
    assert in_outage < procs * max_tokens / 2
    # All along: never more than the bucket's half plus what the successes earned.
    assert spent + in_outage <= max_tokens / 2 + 1 + ratio * successes
    assert spent > 0  # the random phase did retry


def _failing_calls(url: str, prefix: str, calls: int, start: Any, results: Any) -> None:
    attempts = 0
    try:
        store = _store(url, prefix)
        config = ResilientConfig(
            backoff=BackoffConfig(base_delay=0.0, max_delay=0.0, max_retries=3),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=1_000_000),
            retry_budget=RetryBudgetConfig(max_tokens=10, store=store, batch=2),
        )

        @resilient_api(config, name="always-503")
        def call() -> None:
            nonlocal attempts
            attempts += 1
            raise ConnectionError("503")  # noqa: TRY301 - the upstream, not our error handling

        start.wait(WAIT)
        errors = 0
        for _ in range(calls):
            try:
                call()
            except ConnectionError:
                errors += 1
        results.put((attempts, errors, ""))
    except BaseException as exc:
        results.put((attempts, 0, repr(exc)))


def test_a_fleets_retries_in_an_outage_stay_within_its_budget(
    redis_url: str, redis_prefix: str
) -> None:
    procs, calls = 8, 50
    results = _fleet(_failing_calls, [(redis_url, redis_prefix, calls)] * procs, barriers=1)
    assert [r[2] for r in results] == [""] * procs
    assert sum(r[1] for r in results) == procs * calls  # every call failed, none raised else
    retries = sum(r[0] for r in results) - procs * calls
    # A fresh fleet that never succeeds: exactly the bucket's half, fleet-wide (the
    # documented bound, ceil(10 / 2) + (2 * 2 - 1) * 8 = 29, is for a fleet holding
    # leases and earnings it has not reported).
    assert retries == 5
