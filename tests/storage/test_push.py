"""Issue 14: a shared breaker's healthy path from memory, kept true by push.

Against a real redis-server (the fixtures start it): once the store's watcher
is subscribed and one call learnt the CLOSED period, healthy calls send no
command at all (counted on the server with ``INFO commandstats``), sync and
under asyncio; a change made elsewhere (another store object: another
process's view, with its own watcher) zeroes the clean ticket and the next
call asks; a killed pub/sub connection, a Redis restart and a fork leave no
clean ticket standing, raise nothing, and the happy path comes back once the
watcher listens again.  A store with only an async client keeps one round trip
per call.  No wall-clock bound is asserted: every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
import redis.asyncio
from redisserver import RedisServer

from smoothapi import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ResilientConfig,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.storage import RedisStore, SharedCircuitBreaker, _watch
from smoothapi.storage._shared_trip import BATCH_MAX

WAIT = 10.0
OPEN = CircuitState.OPEN
CLOSED = CircuitState.CLOSED


def _until(check: Callable[[], object], what: str, wait: float = WAIT) -> None:
    deadline = time.monotonic() + wait
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _commands(client: redis.Redis, only: str | None = None) -> int:
    """Every command the server ran so far (those scripts ran included), but INFO (the
    counting itself); or only the ``only`` command's."""
    stats = client.info("commandstats")
    if only is not None:
        return int(stats.get(f"cmdstat_{only}", {}).get("calls", 0))
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def _shared(breaker: CircuitBreaker) -> SharedCircuitBreaker:
    assert isinstance(breaker, SharedCircuitBreaker)
    return breaker


def _warm(breaker: SharedCircuitBreaker, call: Callable[[], object]) -> None:
    """Until ``call()`` runs on the clean ticket: the watcher subscribed, and a call
    learnt the CLOSED period after every message so far arrived."""
    call()
    watcher = _watch.watch(breaker.store)
    _until(lambda: watcher.subscribed, "the watcher to subscribe")

    def learnt() -> bool:
        call()
        return breaker.clean_ticket != 0

    _until(learnt, "a clean ticket")


@pytest.fixture
def prefix() -> str:
    return f"push{uuid.uuid4().hex[:12]}"


@pytest.fixture
def counter(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize("rule", ["consecutive", "rate"])
def test_healthy_sync_calls_send_no_command(
    redis_url: str, prefix: str, counter: redis.Redis, rule: str
) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix)
    rate = {"failure_rate": 0.5, "window_ms": 60_000} if rule == "rate" else {}
    config = ResilientConfig(circuit_breaker=CircuitBreakerConfig(store=store, **rate))  # type: ignore[arg-type]
    fn = resilient_api(config, name="healthy")(lambda x: x)
    breaker = _shared(fn.breaker)  # type: ignore[attr-defined]
    try:
        _warm(breaker, lambda: fn(0))
        before, scripts = _commands(counter), _commands(counter, "evalsha")
        calls = 500 if rule == "consecutive" else 2 * BATCH_MAX + 10
        assert [fn(i) for i in range(calls)] == list(range(calls))
        sent = _commands(counter) - before
        if rule == "consecutive":
            assert sent == 0
        else:
            # The batch is due every BATCH_MAX successes (its bucket is 6 s long): the next
            # call's acquire carries it - one EVALSHA per BATCH_MAX calls, nothing else.
            assert _commands(counter, "evalsha") - scripts == calls // BATCH_MAX
            window = breaker.window
            assert window is not None
            assert window.calls >= calls
    finally:
        store.close()


def test_healthy_async_calls_send_no_command(
    redis_url: str, prefix: str, counter: redis.Redis
) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix)
    config = ResilientConfig(circuit_breaker=CircuitBreakerConfig(store=store))

    @resilient_api(config, name="healthy-async")
    async def fn(x: int) -> int:
        return x

    breaker = _shared(fn.breaker)  # type: ignore[attr-defined]

    async def main() -> int:
        await fn(0)
        watcher = _watch.watch(store)
        deadline = time.monotonic() + WAIT
        while not (watcher.subscribed and breaker.clean_ticket):
            assert time.monotonic() < deadline, "no clean ticket"
            await asyncio.sleep(0.005)
            await fn(0)
        before = _commands(counter)
        for i in range(500):
            assert await fn(i) == i
        sent = _commands(counter) - before
        await store.aclose()
        return sent

    assert asyncio.run(main()) == 0


def test_an_async_only_store_keeps_one_round_trip_per_call(
    redis_url: str, prefix: str, counter: redis.Redis
) -> None:
    """No sync client to listen with: no watcher, no clean ticket, as before issue 14."""

    async def main() -> int:
        client = redis.asyncio.Redis.from_url(redis_url)
        store = RedisStore(client, prefix=prefix)
        config = ResilientConfig(circuit_breaker=CircuitBreakerConfig(store=store))

        @resilient_api(config, name="async-only")
        async def fn(x: int) -> int:
            return x

        await fn(0)
        before = _commands(counter, "evalsha")
        for i in range(20):
            await fn(i)
        sent = _commands(counter, "evalsha") - before
        assert _watch.watch(store) is _watch.NO_WATCH
        assert fn.breaker.clean_ticket == 0  # type: ignore[attr-defined]
        await client.aclose()
        return sent

    assert asyncio.run(main()) == 20


def _pair(redis_url: str, prefix: str, **config: float) -> tuple[RedisStore, RedisStore]:
    """Two stores on one server: two processes' views, each with a watcher of its own."""
    return (
        RedisStore.from_url(redis_url, prefix=prefix, **config),  # type: ignore[arg-type]
        RedisStore.from_url(redis_url, prefix=prefix, **config),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("how", ["trip", "force_open", "reset", "failure"])
def test_a_change_elsewhere_zeroes_the_clean_ticket(redis_url: str, prefix: str, how: str) -> None:
    mine, theirs = _pair(redis_url, prefix)
    threshold = 1 if how == "trip" else 3
    config = CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=60_000)
    a = _shared(CircuitBreaker(config, name="svc", store=mine))
    b = _shared(CircuitBreaker(config, name="svc", store=theirs))
    try:
        _warm(a, a.acquire)
        clean = a.clean_ticket
        assert a.acquire() == clean  # from memory
        if how in {"trip", "failure"}:
            b.record_failure(b.acquire())
        elif how == "force_open":
            b.force_open()
        else:
            b.reset()
        _until(lambda: a.clean_ticket == 0, "the push")
        ticket = a.acquire()  # asks the store
        if how in ("trip", "force_open"):
            assert ticket == REJECTED
        elif how == "reset":
            assert ticket not in (REJECTED, clean)  # a new period
        else:
            assert ticket == clean
            assert a.clean_ticket == 0  # a failure is counted: every call asks
    finally:
        mine.close()
        theirs.close()


def test_a_failure_here_stops_the_happy_path_at_once(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix)
    a = _shared(CircuitBreaker(CircuitBreakerConfig(failure_threshold=2), name="s", store=store))
    try:
        _warm(a, a.acquire)
        a.record_failure(a.clean_ticket)
        assert a.clean_ticket == 0  # without waiting for its own message
        assert a.failure_count == 1
    finally:
        store.close()


def test_a_killed_pubsub_connection_zeroes_and_comes_back(
    redis_url: str, prefix: str, counter: redis.Redis
) -> None:
    """CLIENT KILL TYPE pubsub while Redis stays up: every clean ticket is zeroed, calls go
    on (no exception), the watcher subscribes again, and a trip after that is pushed."""
    mine, theirs = _pair(redis_url, prefix, sync_interval=0.2)
    config = ResilientConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000, store=mine)
    )
    fn = resilient_api(config, name="killed")(lambda x: x)
    breaker = _shared(fn.breaker)  # type: ignore[attr-defined]
    watcher = _watch.watch(mine)
    try:
        _warm(breaker, lambda: fn(0))
        seq = watcher.seq
        killed = counter.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        _until(lambda: watcher.seq != seq, "the watcher to notice")
        assert breaker.clean_ticket == 0 or watcher.subscribed
        for i in range(100):  # nothing raises while it resubscribes
            assert fn(i) == i
        _until(lambda: watcher.subscribed, "the watcher to subscribe again")
        _warm(breaker, lambda: fn(0))
        other = CircuitBreaker(config.circuit_breaker, name="killed", store=theirs)
        other.record_failure(other.acquire())  # trips
        _until(lambda: breaker.clean_ticket == 0, "the trip to be pushed")
        with pytest.raises(CircuitOpenError):
            fn(1)
    finally:
        mine.close()
        theirs.close()


def test_without_push_a_clean_reply_is_trusted_for_sync_interval_only(
    redis_url: str, prefix: str
) -> None:
    """The fallback: with the watcher stopped, a breaker answers from its last clean reply
    (no clean ticket for the mount points), and asks again once sync_interval passed."""
    mine, theirs = _pair(redis_url, prefix, sync_interval=0.3)
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
    a = _shared(CircuitBreaker(config, name="stale", store=mine))
    b = _shared(CircuitBreaker(config, name="stale", store=theirs))
    watcher = _watch.watch(mine)
    try:
        a.acquire()
        assert isinstance(watcher, _watch.Watcher)
        watcher.close()
        _until(lambda: not watcher.subscribed, "the watcher to stop")
        clean = a.acquire()  # learns the period; not subscribed: no clean ticket
        assert a.clean_ticket == 0
        b.record_failure(b.acquire())  # trips; nobody tells `a`
        assert b.state is OPEN
        seen: list[int] = []
        _until(lambda: seen.append(a.acquire()) or seen[-1] == REJECTED, "the bound")
        assert seen[0] in (clean, REJECTED)  # stale for at most sync_interval
    finally:
        mine.close()
        theirs.close()


def test_a_restarted_redis_leaves_no_clean_ticket(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="restart", retry_interval=0.05)
    config = ResilientConfig(circuit_breaker=CircuitBreakerConfig(store=store))
    fn = resilient_api(config, name="restart")(lambda x: x)
    breaker = _shared(fn.breaker)  # type: ignore[attr-defined]
    watcher = _watch.watch(store)
    try:
        _warm(breaker, lambda: fn(0))
        redis_server.stop()
        _until(lambda: not watcher.subscribed, "the watcher to notice")
        assert breaker.clean_ticket == 0
        for i in range(50):  # the local breaker, no exception
            assert fn(i) == i
        redis_server.start()
        _until(lambda: watcher.subscribed, "the watcher to subscribe again")
        _warm(breaker, lambda: fn(0))
        assert breaker.clean_ticket != 0
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_without_a_clean_ticket(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix)
    a = _shared(CircuitBreaker(CircuitBreakerConfig(), name="forked", store=store))
    try:
        _warm(a, a.acquire)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                ok = a.clean_ticket == 0 and a._watcher is None
                a.acquire()  # asks, and starts the child's own watcher
                ok = ok and isinstance(a._watcher, _watch.Watcher)
                code = 0 if ok else 1
            finally:
                os.write(write, bytes([code]))
                os._exit(0)
        os.close(write)
        assert os.read(read, 1) == b"\x00"
        os.close(read)
        os.waitpid(pid, 0)
        assert a.clean_ticket != 0  # the parent's is untouched
    finally:
        store.close()


def test_the_push_reaches_every_node_of_a_cluster(redis_cluster: object) -> None:
    """PUBLISH from a script on any node reaches a watcher subscribed on one node."""
    url = redis_cluster.url  # type: ignore[attr-defined]
    prefix = f"c{uuid.uuid4().hex[:8]}"
    mine = RedisStore.from_url(url, prefix=prefix, cluster=True)
    theirs = RedisStore.from_url(url, prefix=prefix, cluster=True)
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
    try:
        names = [f"svc-{i}" for i in range(12)]  # spread over the three nodes' slots
        mine_b = [_shared(CircuitBreaker(config, name=n, store=mine)) for n in names]
        theirs_b = [_shared(CircuitBreaker(config, name=n, store=theirs)) for n in names]
        for breaker in mine_b:
            _warm(breaker, breaker.acquire)
        for breaker in theirs_b:
            breaker.record_failure(breaker.acquire())
        for breaker in mine_b:
            _until(lambda breaker=breaker: breaker.clean_ticket == 0, "the push")  # type: ignore[misc]
            assert breaker.acquire() == REJECTED
    finally:
        mine.close()
        theirs.close()


def test_closing_the_store_stops_its_watcher(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix)
    a = _shared(CircuitBreaker(CircuitBreakerConfig(), name="closed", store=store))
    _warm(a, a.acquire)
    watcher = _watch.watch(store)
    assert isinstance(watcher, _watch.Watcher)
    thread = watcher._thread
    assert thread is not None
    store.close()
    assert a.clean_ticket == 0
    thread.join(WAIT)
    assert not thread.is_alive()
    assert not watcher.subscribed


def test_a_lost_key_does_not_strand_a_clean_ticket(
    redis_url: str, prefix: str, counter: redis.Redis
) -> None:
    """The breaker's key expired or was deleted while this process called on a clean
    ticket of its period: the first failure under it is ignored by the store (another
    period), but the next call asks, learns the period the store holds, and the
    failures after it count and trip."""
    store = RedisStore.from_url(redis_url, prefix=prefix)
    config = CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000)
    a = _shared(CircuitBreaker(config, name="lost", store=store))
    try:
        _warm(a, a.acquire)
        stale = a.clean_ticket
        counter.delete(a._key)  # no script ran: nobody published anything
        assert a.clean_ticket == stale
        a.record_failure(stale)  # ignored by the store: not its period
        assert a.clean_ticket == 0
        for _ in range(2):
            a.record_failure(a.acquire())
        assert a.state is OPEN
    finally:
        store.close()


def test_nothing_from_before_a_key_was_lost_counts_after_it(
    redis_url: str, prefix: str, counter: redis.Redis
) -> None:
    """A breaker's key lost (deleted here; FLUSHALL, a restart without persistence or an
    expiry alike) while a process holds a ticket and a batch of successes of the key's
    first period: neither counts in the key written after the loss, which starts a fresh
    period (no two keys share a period, not even a never-written key's first one)."""
    store = RedisStore.from_url(redis_url, prefix=prefix)
    rate = CircuitBreakerConfig(failure_rate=0.5, minimum_calls=2, cooldown_ms=60_000)
    consecutive = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
    try:
        counting = _shared(CircuitBreaker(rate, name="lost-batch", store=store))
        _warm(counting, lambda: counting.record_success(counting.acquire()))
        for _ in range(3):
            counting.record_success(counting.acquire())  # batched, not sent yet
        counter.delete(counting._key)
        window = counting.window  # carries the batch: of a period the new key never had
        assert window is not None
        assert window.calls == 0

        tripping = _shared(CircuitBreaker(consecutive, name="lost-ticket", store=store))
        ticket = tripping.acquire()
        counter.delete(tripping._key)
        tripping.record_failure(ticket)  # of the lost key's period: ignored
        assert tripping.state is CLOSED
        tripping.record_failure(tripping.acquire())
        assert tripping.state is OPEN
    finally:
        store.close()


@pytest.mark.parametrize("rule", ["consecutive", "rate"])
def test_a_slow_call_on_the_happy_path_is_reported(redis_url: str, prefix: str, rule: str) -> None:
    """settle() on the clean ticket: a call over slow_call_ms goes to the store at once, as
    a slow call, and trips the breaker for the fleet; a quick one sends nothing."""
    store = RedisStore.from_url(redis_url, prefix=prefix)
    rate = {"failure_rate": 0.5, "minimum_calls": 2} if rule == "rate" else {}
    breaker_config = CircuitBreakerConfig(
        failure_threshold=1,
        cooldown_ms=60_000,
        slow_call_ms=50,
        store=store,
        **rate,  # type: ignore[arg-type]
    )
    config = ResilientConfig(circuit_breaker=breaker_config)
    delay = [0.0]

    def work() -> str:
        time.sleep(delay[0])
        return "ok"

    fn = resilient_api(config, name="slow")(work)
    breaker = _shared(fn.breaker)  # type: ignore[attr-defined]
    try:
        _warm(breaker, fn)
        delay[0] = 0.1
        assert fn() == "ok"  # a slow call's value is returned, not retried
        if rule == "rate":  # the warm-up's successes are in the window too
            for _ in range(20):
                if breaker.state is OPEN:
                    break
                assert fn() == "ok"
        assert breaker.state is OPEN
        assert "slow" in breaker.reason
        with pytest.raises(CircuitOpenError):
            fn()
    finally:
        store.close()


def test_a_user_without_channel_permission_still_trips(
    redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis 7 gives a new ACL user no channel: the scripts' PUBLISH fails quietly (the
    state changes all the same), the watcher cannot subscribe (one WARNING), and the
    breakers use the sync_interval fallback - no exception, no outage."""
    user = f"u{uuid.uuid4().hex[:8]}"
    counter = redis.Redis.from_url(redis_server.url)  # a server of its own: ACLs change
    counter.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-subscribe", "resetchannels"
    )
    host, port = (
        counter.connection_pool.connection_kwargs["host"],
        counter.connection_pool.connection_kwargs["port"],
    )
    url = f"redis://{user}:pw@{host}:{port}/0"
    store = RedisStore.from_url(url, prefix=prefix, sync_interval=0.2)
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
    a = _shared(CircuitBreaker(config, name="noperm", store=store))
    try:
        with caplog.at_level("WARNING", logger="smoothapi"):
            a.acquire()
            _until(lambda: "cannot subscribe" in caplog.text, "the warning")
        assert a.clean_ticket == 0
        a.record_failure(a.acquire())
        assert a.state is OPEN
        assert a.acquire() == REJECTED
        assert "unreachable" not in caplog.text  # never an outage
    finally:
        store.close()
        counter.close()
