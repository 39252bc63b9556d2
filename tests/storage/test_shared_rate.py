"""Issue 15: a rate limit the whole fleet shares through a real Redis (RateLimitConfig(store=)).

Four OS processes (``spawn``, each with a client of its own) call through one
bucket: the calls they make, stamped on the host's clock, never exceed the
bucket's rate plus its burst in any one-second window, which four
per-process buckets would.  A server's "none left" seen by one process pauses
the others; Redis stopped mid-run leaves every process on its own bucket
without an exception, and the fleet's bucket back in charge once it returns.
Nothing asserts a duration: the tests count calls per window of the clock.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from httpserver import free_port
from redisserver import RedisServer

from smoothapi import LoadShedError, RateLimitConfig, RedisStore, ResilientConfig, resilient_api
from smoothapi.errors import ConfigError
from smoothapi.load import LoadControl
from smoothapi.rate_headers import ServerLimit
from smoothapi.storage._rate import SharedTokenBucket

PROCESSES = 4
CALLS = 30  # per process
RATE = 40.0
BURST = 4.0
WAIT = 30.0


def _most_in_a_second(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    most, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def _caller(url: str, prefix: str, shared: bool, out: Any) -> None:
    store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
    config = ResilientConfig(
        rate_limit=RateLimitConfig(
            rate=RATE, burst=BURST, max_wait=WAIT, store=store if shared else None, key="api"
        )
    )
    stamps: list[float] = []

    @resilient_api(config, name="fleet-rate")
    def call() -> None:
        stamps.append(time.time())

    for _ in range(CALLS):
        call()
    store.close()
    out.put(stamps)


def _fleet(url: str, prefix: str, *, shared: bool) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_caller, args=(url, prefix, shared, out)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    stamps: list[float] = []
    for _ in procs:
        stamps.extend(out.get(timeout=120))
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return stamps


def test_the_fleet_keeps_one_rate(redis_url: str, redis_prefix: str) -> None:
    stamps = _fleet(redis_url, redis_prefix, shared=True)
    assert len(stamps) == PROCESSES * CALLS
    # One bucket: at most a burst plus a second's worth of tokens in any second (+1 for the
    # token that refills at the window's edge).
    assert _most_in_a_second(stamps) <= RATE + BURST + 1


def test_per_process_buckets_exceed_it(redis_url: str, redis_prefix: str) -> None:
    """The control: the same fleet with a bucket per process sends more per second."""
    stamps = _fleet(redis_url, redis_prefix, shared=False)
    assert _most_in_a_second(stamps) > RATE + BURST + 1


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_url, prefix=redis_prefix, timeout=2.0)
    try:
        yield s
    finally:
        s.close()


def _control(store: RedisStore, name: str, **kw: Any) -> LoadControl:
    config = ResilientConfig(rate_limit=RateLimitConfig(store=store, key="k", **kw))
    load = LoadControl.of(config, name, time.monotonic, lambda: 0.5)
    assert load is not None
    return load


def test_none_left_in_one_process_pauses_the_others(store: RedisStore) -> None:
    first = _control(store, "a", rate=1000.0, max_wait=0.0)
    second = _control(store, "b", rate=1000.0, max_wait=0.0)
    assert first.bucket is not None
    assert second.bucket is not None
    first.bucket.follow(time.monotonic(), ServerLimit(remaining=0, reset=30.0))
    # The other holder of the key has no word of the server's, yet waits: the fleet is paused.
    assert second.bucket.reserve(time.monotonic(), 0.0) is None
    assert second.bucket.next_token(time.monotonic()) > 25.0
    shed = second.enter_sync(None, time.sleep)
    assert isinstance(shed, LoadShedError)
    assert shed.stage == "rate_limit"
    assert shed.retry_after > 25.0


def test_a_refunded_token_goes_back_to_the_fleet(store: RedisStore) -> None:
    first = _control(store, "a", rate=0.01, burst=1.0, max_wait=0.0)
    second = _control(store, "b", rate=0.01, burst=1.0, max_wait=0.0)
    assert first.bucket is not None
    assert second.bucket is not None
    now = time.monotonic()
    assert first.bucket.reserve(now, 0.0) == 0.0
    assert second.bucket.reserve(now, 0.0) is None  # the fleet's one token is taken
    first.bucket.refund(now)
    assert second.bucket.reserve(now, 0.0) == 0.0


def test_redis_down_falls_back_to_the_process_bucket(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="down", timeout=0.2)
    try:
        config = ResilientConfig(
            rate_limit=RateLimitConfig(rate=1000.0, burst=5.0, max_wait=0.0, store=store)
        )
        calls = []

        @resilient_api(config, name="down")
        def call() -> int:
            calls.append(1)
            return 1

        assert call() == 1
        redis_server.stop()
        # No Redis error reaches a call: the process's own bucket (burst 5) answers.
        results = []
        for _ in range(5):
            try:
                results.append(call())
            except LoadShedError as exc:
                results.append(exc.stage)
        assert results == [1] * 5  # its own bucket, full: Redis took the tokens until now
        redis_server.start()
        client = redis.Redis.from_url(redis_server.url)
        try:
            deadline = time.monotonic() + WAIT
            while not client.keys("down:rate:*"):  # the fleet's bucket is written again
                assert time.monotonic() < deadline, "the store was never used again"
                call()
                time.sleep(0.05)
        finally:
            client.close()
    finally:
        store.close()


def test_a_store_without_a_sync_client_is_refused() -> None:
    import redis.asyncio  # noqa: PLC0415

    store = RedisStore(redis.asyncio.Redis())
    config = ResilientConfig(rate_limit=RateLimitConfig(store=store))
    with pytest.raises(ConfigError, match="sync client"):
        resilient_api(config)(lambda: 1)


def test_a_refund_never_opens_more_than_the_server_allowed(store: RedisStore) -> None:
    """The server said one request is left until its reset: A takes it, B waits for the
    reset and is refunded (cancelled): C must still wait for the reset."""
    config = RateLimitConfig(rate=100.0, store=store, key="allowance")
    bucket = SharedTokenBucket(config, "allowance", 0.0)
    bucket.follow(0.0, ServerLimit(remaining=1, reset=1.0))
    assert bucket.reserve(0.0, 10.0) == 0.0
    assert bucket.reserve(0.0, 10.0) == 1.0
    bucket.refund(0.5)
    assert bucket.reserve(0.5, 10.0) == 0.5


def test_a_refund_while_redis_is_down_counts_once() -> None:
    """The store is down: a refund goes back to the process's bucket and allowance once."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix="down", timeout=0.2)
    try:
        bucket = SharedTokenBucket(RateLimitConfig(rate=100.0, store=store, key="k"), "k", 0.0)
        bucket.follow(0.0, ServerLimit(remaining=2, reset=1.0))
        waits = [bucket.reserve(0.0, 10.0), bucket.reserve(0.0, 10.0)]
        bucket.refund(0.1)  # the second made no attempt
        waits += [bucket.reserve(0.1, 10.0), bucket.reserve(0.1, 10.0)]
        sent = [w for w in waits if w is not None and w < 0.9]
        assert len(sent) - 1 <= 2  # one of them was refunded: at most the 2 the server allowed
    finally:
        store.close()
