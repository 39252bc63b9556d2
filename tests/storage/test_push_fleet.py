"""Issue 14: a trip in one process stops the others' healthy-path calls, by push.

Four child processes (the "spawn" context) each call a decorated function in a loop
through a breaker shared with a RedisStore, on the happy path (no Redis command while
clean).  The parent plays process A: for each of ``ROUNDS`` rounds it resets the breaker,
waits until every child runs on a clean ticket again, reads ``time.monotonic()`` (system
wide on Linux, so comparable across processes), trips the breaker with one failure
(``failure_threshold=1``), and waits until every child saw a call rejected; each child
writes the time of its first rejection.  Every few rounds the parent also kills every
pub/sub connection (``CLIENT KILL TYPE pubsub``) right before the trip: then the children
learn it from their watcher's disconnect or within ``sync_interval``.  Every wait is a
bounded poll; the one bound asserted is a liveness bound per round (``sync_interval`` +
``SLACK``), far above the figures.  ``SMOOTHAPI_PROPAGATION_OUT=file`` writes the lags
(p50/p99 are printed with ``pytest -s``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
import uuid
from typing import Any

import pytest
import redis

from smoothapi import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilientConfig,
    resilient_api,
)
from smoothapi.storage import RedisStore, SharedCircuitBreaker, _watch

pytestmark = pytest.mark.slow

CHILDREN = 4
ROUNDS = 100
KILL_EVERY = 20  # rounds between CLIENT KILL TYPE pubsub
SYNC_INTERVAL = 0.5
SLACK = 5.0  # seconds beyond sync_interval: a liveness bound for a loaded CI box, not a figure
WAIT = 30.0
POLL = 0.0005  # seconds between two calls of a child


def _child(  # noqa: PLR0917 - the shared values of one child
    index: int,
    url: str,
    prefix: str,
    current: Any,
    ready: Any,
    seen_round: Any,
    seen_at: Any,
    stop: Any,
    errors: Any,
) -> None:
    store = RedisStore.from_url(url, prefix=prefix, sync_interval=SYNC_INTERVAL, timeout=2.0)
    config = ResilientConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_ms=600_000, store=store)
    )
    fn = resilient_api(config, name="fleet-push")(lambda: None)
    breaker = fn.breaker  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10 * WAIT
    while not stop.is_set() and time.monotonic() < deadline:
        r = current.value
        try:
            fn()
        except CircuitOpenError:
            now = time.monotonic()
            if ready[index] == r and seen_round[index] < r:
                seen_at[index] = now
                seen_round[index] = r
        except Exception as exc:  # never expected: reported to the parent
            errors.put(f"{type(exc).__name__}: {exc}")
            return
        if breaker.clean_ticket and seen_round[index] == r - 1:
            ready[index] = r
        time.sleep(POLL)
    store.close()


def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_a_trip_reaches_every_process(redis_url: str) -> None:
    prefix = f"fleet{uuid.uuid4().hex[:10]}"
    ctx = multiprocessing.get_context("spawn")
    current = ctx.Value("i", 0)
    ready = ctx.Array("i", [0] * CHILDREN)
    seen_round = ctx.Array("i", [0] * CHILDREN)
    seen_at = ctx.Array("d", [0.0] * CHILDREN)
    stop = ctx.Event()
    errors = ctx.Queue()
    procs = [
        ctx.Process(
            target=_child,
            args=(i, redis_url, prefix, current, ready, seen_round, seen_at, stop, errors),
            daemon=True,
        )
        for i in range(CHILDREN)
    ]
    store = RedisStore.from_url(redis_url, prefix=prefix, sync_interval=SYNC_INTERVAL)
    admin = redis.Redis.from_url(redis_url)
    a = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=600_000),
        name="fleet-push",
        store=store,
    )
    assert isinstance(a, SharedCircuitBreaker)
    lags: list[float] = []
    killed_lags: list[float] = []
    for proc in procs:
        proc.start()
    try:
        for r in range(1, ROUNDS + 2):  # the first round warms up (connections, scripts)
            current.value = r
            a.reset()
            _until(lambda r=r: all(ready[i] == r for i in range(CHILDREN)), f"round {r} ready")
            kill = r % KILL_EVERY == 0
            t0 = time.monotonic()
            if kill:
                admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            a.record_failure(a.acquire())  # trips: one failure, threshold 1
            _until(lambda r=r: all(seen_round[i] == r for i in range(CHILDREN)), f"round {r}")
            round_lags = [seen_at[i] - t0 for i in range(CHILDREN)]
            assert max(round_lags) < SYNC_INTERVAL + SLACK  # liveness only
            if r > 1:
                (killed_lags if kill else lags).extend(round_lags)
        assert errors.empty()
    finally:
        stop.set()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        store.close()
        admin.close()
    assert all(proc.exitcode == 0 for proc in procs)
    quantiles = statistics.quantiles(lags, n=100)
    figures = {
        "processes": CHILDREN,
        "trips": ROUNDS,
        "p50_ms": round(statistics.median(lags) * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "max_ms": round(max(lags) * 1000, 2),
        "pubsub_killed_max_ms": round(max(killed_lags) * 1000, 2),
        "sync_interval_s": SYNC_INTERVAL,
    }
    print("propagation:", json.dumps(figures))
    out = os.environ.get("SMOOTHAPI_PROPAGATION_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({**figures, "lags": lags, "killed": killed_lags}, fh)
    assert _watch.watch(store) is not _watch.NO_WATCH
