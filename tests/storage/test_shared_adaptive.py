"""Adaptive open time and the Retry-After hold on a breaker shared through a real Redis.

The growth level lives in the store, so every process sharing the breaker
backs off together; the rule is the memory breaker's (README "Adaptive open
time").  Jitter is pinned with ``rand=lambda: 1.0`` (the top of the range),
so each opening lasts exactly the grown bound.  Times are the Redis server's:
a test reads ``retry_after`` right after an opening and checks it lies above
the previous level's open time and at most this level's - an opening of the
plain cooldown could not satisfy it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from smoothapi import CircuitBreaker, CircuitBreakerConfig, CircuitState
from smoothapi.breaker import REJECTED
from smoothapi.storage import RedisStore, SharedCircuitBreaker

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN
WAIT = 10.0  # a wait that has not happened by then fails the test; passing tests wait ~1 s


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        yield RedisStore(client, prefix=f"t{uuid.uuid4().hex}")
    finally:
        client.close()


def shared(store: RedisStore, name: str = "grows", **config: Any) -> SharedCircuitBreaker:
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, store=store, **config),
        name=name,
        rand=lambda: 1.0,
    )
    assert isinstance(breaker, SharedCircuitBreaker)
    return breaker


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def fail_probe(breaker: SharedCircuitBreaker) -> None:
    """Wait out the cooldown (on the server's clock), claim the probe and fail it."""
    until(lambda: breaker.retry_after == 0.0, "the cooldown")
    ticket = breaker.acquire()
    assert ticket > 0, ticket  # the probe
    assert breaker.record_failure(ticket) is OPEN


def opened_for(breaker: SharedCircuitBreaker, low: float, high: float) -> None:
    left = breaker.retry_after
    assert low < left <= high, (low, left, high)


def test_failed_probes_grow_the_fleets_open_time_up_to_the_cap(store: RedisStore) -> None:
    """100 ms, then 200, 400, 800 (the cap), 800: and another process reads the same."""
    breaker = shared(store, cooldown_ms=100, cooldown_multiplier=2, max_cooldown_ms=800)
    other_process = shared(store)
    assert breaker.record_failure(breaker.acquire()) is OPEN
    opened_for(breaker, 0.0, 0.1)
    for previous, level in ((0.1, 0.2), (0.2, 0.4), (0.4, 0.8), (0.4, 0.8)):
        fail_probe(breaker)
        opened_for(breaker, previous, level)
        opened_for(other_process, previous, level)
        assert other_process.acquire() == REJECTED


def test_a_trip_soon_after_closing_keeps_the_level_and_a_healthy_period_resets_it(
    store: RedisStore,
) -> None:
    breaker = shared(
        store, cooldown_ms=100, cooldown_multiplier=2, max_cooldown_ms=800, cooldown_reset_ms=300
    )
    assert breaker.record_failure(breaker.acquire()) is OPEN
    fail_probe(breaker)  # level 1: 200 ms
    until(lambda: breaker.retry_after == 0.0, "the cooldown")
    probe = breaker.acquire()
    assert breaker.record_success(probe) is CLOSED
    # Falls over again at once: it opens at the level it had reached.
    assert breaker.record_failure(breaker.acquire()) is OPEN
    opened_for(breaker, 0.1, 0.2)
    until(lambda: breaker.retry_after == 0.0, "the cooldown")
    assert breaker.record_success(breaker.acquire()) is CLOSED
    time.sleep(0.35)  # CLOSED for longer than cooldown_reset_ms (300 ms): healthy again
    assert breaker.record_failure(breaker.acquire()) is OPEN
    opened_for(breaker, 0.0, 0.1)


def test_reset_forgets_the_growth(store: RedisStore) -> None:
    breaker = shared(store, cooldown_ms=100, cooldown_multiplier=4, max_cooldown_ms=5_000)
    assert breaker.record_failure(breaker.acquire()) is OPEN
    fail_probe(breaker)
    opened_for(breaker, 0.1, 0.4)
    breaker.reset()
    assert breaker.record_failure(breaker.acquire()) is OPEN
    opened_for(breaker, 0.0, 0.1)


def test_retry_after_holds_the_shared_breaker_open_up_to_the_cap(store: RedisStore) -> None:
    """A 503 with Retry-After: 2 holds the fleet's breaker 2 s; 60 s is capped at 5 s."""
    held = shared(store, name="held", cooldown_ms=100, max_cooldown_ms=5_000)
    assert held.record_failure(held.acquire(), retry_after=2.0) is OPEN
    opened_for(held, 1.5, 2.0)
    capped = shared(store, name="capped", cooldown_ms=100, max_cooldown_ms=5_000)
    assert capped.record_failure(capped.acquire(), retry_after=60.0) is OPEN
    opened_for(capped, 4.5, 5.0)
    plain = shared(store, name="plain", cooldown_ms=100)  # no max_cooldown_ms: cap = cooldown
    assert plain.record_failure(plain.acquire(), retry_after=60.0) is OPEN
    opened_for(plain, 0.0, 0.1)


@pytest.mark.anyio
async def test_the_async_driver_holds_the_shared_breaker_too(
    store: RedisStore, redis_url: str, anyio_backend: str
) -> None:
    """Under asyncio through the async client; under trio through the sync one in a thread."""
    if anyio_backend == "trio":
        await _hold_for_three_seconds(store)
        return
    async_client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await _hold_for_three_seconds(
            RedisStore(store.client, async_client=async_client, prefix=store.prefix)
        )
    finally:
        await async_client.aclose()


async def _hold_for_three_seconds(store: RedisStore) -> None:
    breaker = shared(store, name="async-held", cooldown_ms=100, max_cooldown_ms=5_000)
    ticket = await breaker.acquire_async()
    assert await breaker.record_failure_async(ticket, retry_after=3.0) is OPEN
    opened_for(breaker, 2.5, 3.0)


class _PlainStore:
    """A store written before adaptive open times (and trip rules): ``record`` takes no
    ``opening=`` (nor ``rules=``)."""

    def __init__(self, inner: RedisStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("adaptive", "trip_rules"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def record(
        self, key: str, op: Any, ticket: int, *, threshold: int, cooldown_ms: int, name: str
    ) -> Any:
        return self._inner.record(
            key, op, ticket, threshold=threshold, cooldown_ms=cooldown_ms, name=name
        )


def test_a_store_without_adaptive_keeps_its_protocol_and_the_plain_cooldown(
    store: RedisStore,
) -> None:
    plain = _PlainStore(store)
    breaker = CircuitBreaker(
        CircuitBreakerConfig(
            failure_threshold=1,
            cooldown_ms=100,
            cooldown_multiplier=2,
            max_cooldown_ms=5_000,
            store=plain,  # type: ignore[arg-type]
        ),
        name="plain-store",
    )
    assert breaker.record_failure(breaker.acquire(), retry_after=3.0) is OPEN
    assert 0.0 < breaker.retry_after <= 0.1
