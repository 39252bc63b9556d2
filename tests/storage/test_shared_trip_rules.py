"""The trip rules on a breaker shared through a real Redis, across processes.

The rules themselves are proven equal to the memory breaker's by the
differential test (``test_differential.py``, one process on a caller clock).
Here they run as a fleet does: several OS processes (``spawn``, each with a
client of its own) share one breaker, so the failure-rate window is the
fleet's (four processes, each below ``minimum_calls`` alone, trip it
together), ``half_open_calls`` probes are that many leases for the whole fleet,
a dead prober's leases run out, slow calls trip either rule, and the
successes of healthy calls ride on the next store call instead of a round trip
of their own (counted on the server with ``INFO commandstats``).  Waits are
bounded by ``WAIT`` and poll the server's state; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster
from redisserver import RedisCluster, RedisServer

from smoothapi import CircuitBreaker, CircuitBreakerConfig, CircuitState
from smoothapi.breaker import REJECTED, WindowCounts
from smoothapi.errors import ConfigError
from smoothapi.events import Event, StateChanged
from smoothapi.storage import RedisStore, SharedCircuitBreaker

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN
WAIT = 20.0  # a wait that has not happened by then fails the test
HOUR = 3_600_000
PROCESSES = 4
PER_PROCESS = 6  # 3 successes, then 3 failures: a share of 0.5 on 6 calls
RATE = CircuitBreakerConfig(
    failure_rate=0.5, window_ms=60_000, minimum_calls=20, cooldown_ms=60_000
)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def shared(store: Any, name: str, config: CircuitBreakerConfig, **kw: Any) -> SharedCircuitBreaker:
    breaker = CircuitBreaker(config, name=name, store=store, **kw)
    assert isinstance(breaker, SharedCircuitBreaker)
    return breaker


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> Iterator[RedisStore]:
    client = _client(redis_url)
    try:
        yield RedisStore(client, prefix=redis_prefix)
    finally:
        client.close()


def _ctx() -> Any:
    return multiprocessing.get_context("spawn")


# -- (a) the fleet trips on its combined failure rate -------------------------------------


def _rate_child(url: str, prefix: str, start: Any, results: Any) -> None:
    """One process of the fleet: 3 successes, then 3 failures, on the shared breaker."""
    client = _client(url)
    opened: list[str] = []

    def hook(event: Event) -> None:
        if isinstance(event, StateChanged) and event.new is OPEN:
            opened.append(event.reason)

    breaker = shared(RedisStore(client, prefix=prefix), "fleet", RATE, hooks=(hook,))
    start.wait(WAIT)
    calls = 0
    for outcome in ["success"] * 3 + ["failure"] * 3:
        ticket = breaker.acquire()
        if ticket == REJECTED:
            continue  # the fleet tripped already
        calls += 1
        if outcome == "success":
            breaker.record_success(ticket)
        else:
            breaker.record_failure(ticket)
    results.put((os.getpid(), calls, opened))
    client.close()


def test_the_fleet_trips_on_its_combined_failure_rate(
    store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    # One process alone, the same calls: below minimum_calls, it never trips.
    alone = shared(store, "alone", RATE)
    for outcome in ["success"] * 3 + ["failure"] * 3:
        ticket = alone.acquire()
        if outcome == "success":
            alone.record_success(ticket)
        else:
            alone.record_failure(ticket)
    assert alone.state is CLOSED
    assert alone.window == WindowCounts(PER_PROCESS, 3, 0)

    ctx = _ctx()
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    children = [
        ctx.Process(target=_rate_child, args=(redis_url, redis_prefix, start, results))
        for _ in range(PROCESSES)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=WAIT * 3) for _ in children]
    for child in children:
        child.join(WAIT)
    assert len({pid for pid, _, _ in reports}) == PROCESSES
    assert all(calls < RATE.minimum_calls for _, calls, _ in reports), reports
    fleet = shared(store, "fleet", RATE)
    assert fleet.state is OPEN
    match = re.fullmatch(r"failure rate (0\.\d\d|1\.00) over (\d+) calls", fleet.reason)
    assert match, fleet.reason
    assert float(match[1]) >= 0.5
    assert int(match[2]) >= RATE.minimum_calls
    # Exactly one process moved it (its failure's reply said CLOSED -> OPEN), and it told
    # its hooks why.
    reasons = [reason for _, _, opened in reports for reason in opened]
    assert reasons == [fleet.reason]


# -- (b) slow calls ------------------------------------------------------------------------


def test_slow_calls_trip_the_consecutive_rule(store: RedisStore) -> None:
    config = CircuitBreakerConfig(failure_threshold=3, slow_call_ms=50, cooldown_ms=60_000)
    one, other = shared(store, "slow", config), shared(store, "slow", config)
    one.record_success(one.acquire(), elapsed=0.2)
    other.record_success(other.acquire(), elapsed=0.2)
    assert one.failure_count == 2
    other.record_success(other.acquire(), elapsed=0.01)  # a fast success resets the count
    assert one.failure_count == 0
    for breaker in (one, other, one):
        breaker.record_success(breaker.acquire(), elapsed=0.2)
    assert other.state is OPEN
    assert other.reason == "slow calls"


def test_slow_calls_count_in_the_fleet_window(store: RedisStore) -> None:
    config = CircuitBreakerConfig(
        failure_rate=0.5, minimum_calls=4, slow_call_ms=50, window_ms=60_000, cooldown_ms=60_000
    )
    one, other = shared(store, "slow-rate", config), shared(store, "slow-rate", config)
    one.record_success(one.acquire(), elapsed=0.01)
    other.record_success(other.acquire(), elapsed=0.01)
    one.record_success(one.acquire(), elapsed=0.2)
    assert other.window == WindowCounts(3, 1, 1)
    assert other.state is CLOSED
    other.record_success(other.acquire(), elapsed=0.2)
    assert one.state is OPEN
    assert one.reason == "slow call rate 0.50 over 4 calls"


# -- (c) n probes are n leases fleet-wide --------------------------------------------------

THREADS = 4


def _probe_child(url: str, prefix: str, config: Any, start: Any, results: Any) -> None:
    """THREADS threads of one process ask for a ticket at once; the tickets go back."""
    client = _client(url)
    breaker = shared(RedisStore(client, prefix=prefix), "probes", config)
    tickets: list[int] = []
    lock = threading.Lock()

    def ask() -> None:
        ticket = breaker.acquire()
        with lock:
            tickets.append(ticket)

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    start.wait(WAIT)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    results.put(tickets)
    client.close()


def _probe_round(redis_url: str, redis_prefix: str, config: CircuitBreakerConfig) -> list[int]:
    ctx = _ctx()
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    children = [
        ctx.Process(target=_probe_child, args=(redis_url, redis_prefix, config, start, results))
        for _ in range(PROCESSES)
    ]
    for child in children:
        child.start()
    tickets = [t for _ in children for t in results.get(timeout=WAIT * 3)]
    for child in children:
        child.join(WAIT)
    assert len(tickets) == PROCESSES * THREADS
    return tickets


def test_n_probes_are_n_leases_for_the_whole_fleet(
    store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    config = CircuitBreakerConfig(half_open_calls=3, cooldown_ms=10_000)  # leases of 10 s
    breaker = shared(store, "probes", config)

    # Round one: 16 callers in 4 processes, 3 probes; 3 successes close it.
    breaker.force_open(cooldown_ms=50)
    until(lambda: breaker.retry_after == 0.0, "the cooldown")
    tickets = _probe_round(redis_url, redis_prefix, config)
    probes = [t for t in tickets if t > 0 and t % 2 == 1]
    assert len(probes) == 3, tickets
    assert tickets.count(REJECTED) == PROCESSES * THREADS - 3
    assert breaker.state is HALF_OPEN
    assert breaker.record_success(probes[0]) is HALF_OPEN
    assert breaker.record_success(probes[1]) is HALF_OPEN
    assert breaker.acquire() == REJECTED  # two permits used up, one in flight
    assert breaker.record_success(probes[2]) is CLOSED

    # Round two: one failed probe re-opens it; the others' reports are stale.
    breaker.force_open(cooldown_ms=50)
    until(lambda: breaker.retry_after == 0.0, "the cooldown")
    probes = [t for t in _probe_round(redis_url, redis_prefix, config) if t > 0 and t % 2 == 1]
    assert len(probes) == 3
    assert breaker.record_failure(probes[1]) is OPEN
    assert breaker.reason == "probe failed"
    assert breaker.record_success(probes[0]) is OPEN
    assert breaker.record_success(probes[2]) is OPEN
    assert breaker.state is OPEN


LEASE_MS = 3_000  # far longer than the checks between the claims and the status read


def _dying_prober(url: str, prefix: str, config: Any, results: Any) -> None:
    """Claims both probe permits, says so, and dies without reporting either."""
    client = _client(url)
    breaker = shared(RedisStore(client, prefix=prefix, lease_ms=LEASE_MS), "crash", config)
    results.put([breaker.acquire(), breaker.acquire()])
    results.close()
    results.join_thread()  # the tickets reach the parent; nothing else is done
    os._exit(0)  # no report, no release, no cleanup: a crash


def test_a_dead_probers_leases_run_out(
    store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    config = CircuitBreakerConfig(half_open_calls=2, cooldown_ms=LEASE_MS)
    own = RedisStore(store.client, prefix=store.prefix, lease_ms=LEASE_MS)
    breaker = shared(own, "crash", config)
    breaker.force_open(cooldown_ms=50)
    until(lambda: breaker.retry_after == 0.0, "the cooldown")
    ctx = _ctx()
    results = ctx.Queue()
    child = ctx.Process(target=_dying_prober, args=(redis_url, redis_prefix, config, results))
    child.start()
    dead = results.get(timeout=WAIT * 3)
    child.join(WAIT)
    assert all(t > 0 and t % 2 == 1 for t in dead), dead
    (status,) = [b for b in store.breakers() if b.name == "crash"]
    assert (status.state, status.probes, status.probe_due) == (HALF_OPEN, 2, False)
    # Both permits are held by a dead process until their leases run out (server clock);
    # then each is free for another prober.
    fresh: list[int] = []

    def claim() -> bool:
        ticket = breaker.acquire()
        if ticket != REJECTED:
            fresh.append(ticket)
        return len(fresh) == 2

    until(claim, "both of a dead prober's leases to run out")
    # Its late reports change nothing: its leases were taken over.
    assert breaker.record_failure(dead[0]) is HALF_OPEN
    assert breaker.record_failure(dead[1]) is HALF_OPEN
    assert breaker.record_success(fresh[0]) is HALF_OPEN
    assert breaker.record_success(fresh[1]) is CLOSED


# -- (d) a healthy call's success costs no round trip -------------------------------------


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_hget", "cmdstat_hincrby")
    )


@pytest.mark.parametrize("rule", ["rate", "consecutive"])
def test_healthy_calls_cost_no_round_trip(redis_server: RedisServer, rule: str) -> None:
    client = _client(redis_server.url)
    try:
        config = RATE if rule == "rate" else CircuitBreakerConfig(cooldown_ms=60_000)
        store = RedisStore(client, prefix="cost")
        warm = shared(store, "warm-up", config)  # loads the scripts (a NOSCRIPT retry each)
        warm.record_failure(warm.acquire())
        breaker = shared(store, "healthy", config)
        breaker.record_success(breaker.acquire())
        assert breaker.state is CLOSED

        # Until the watcher listens and a call learnt the clean period (issue 14).
        def learnt() -> bool:
            breaker.record_success(breaker.acquire())
            return breaker.clean_ticket != 0

        until(learnt, "the watcher to listen and a call to learn the clean period")
        before = _script_calls(client)
        calls = 50
        for _ in range(calls):
            breaker.record_success(breaker.acquire())
        # Answered from the last clean reply; the rate rule's batch is not due yet.
        assert _script_calls(client) - before == 0
        if rule == "rate":
            # The batched successes reached the window: the last one with this read.
            window = breaker.window
            assert window is not None
            assert window.calls > calls  # and the learning calls before them
            assert window.failures == 0
            # A failure is reported at once, and carries the successes before it.
            ticket = breaker.acquire()
            breaker.record_success(breaker.acquire())
            before = _script_calls(client)
            breaker.record_failure(ticket)
            assert _script_calls(client) - before == 1
            assert breaker.window == WindowCounts(window.calls + 2, 1, 0)
    finally:
        client.close()


def test_no_success_is_lost_by_32_threads(store: RedisStore) -> None:
    breaker = shared(store, "threads", RATE)
    per_thread = 25

    def calls() -> None:
        for _ in range(per_thread):
            breaker.record_success(breaker.acquire())

    threads = [threading.Thread(target=calls) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert breaker.window == WindowCounts(32 * per_thread, 0, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_send_its_parents_successes(store: RedisStore) -> None:
    breaker = shared(store, "forked", RATE)
    breaker.record_success(breaker.acquire())  # counted in the parent, not sent yet
    pid = os.fork()
    if pid == 0:  # the child: its first read sends its own batch - none
        os._exit(0 if breaker.window == WindowCounts(0, 0, 0) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert breaker.window == WindowCounts(1, 0, 0)  # the parent's, once


# -- (e) a store that does not apply the trip rules -----------------------------------------


class _OlderStore:
    """A store written for the protocol before the trip rules (no ``trip_rules``, no
    ``rules=``): every attribute of a RedisStore but those."""

    def __init__(self, inner: RedisStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("trip_rules", "adaptive"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def acquire(self, key: str, threshold: int, cooldown_ms: int) -> Any:
        return self._inner.acquire(key, threshold, cooldown_ms)

    def record(
        self, key: str, op: Any, ticket: int, *, threshold: int, cooldown_ms: int, name: str
    ) -> Any:
        assert op in ("success", "failure", "release"), op
        return self._inner.record(
            key, op, ticket, threshold=threshold, cooldown_ms=cooldown_ms, name=name
        )

    def snapshot(self, key: str) -> Any:
        return self._inner.snapshot(key)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"failure_rate": 0.5}, "failure_rate=0.5"),
        ({"slow_call_ms": 200}, "slow_call_ms=200"),
        ({"half_open_calls": 2}, "half_open_calls=2"),
    ],
)
def test_a_store_without_the_trip_rules_refuses_them(
    store: RedisStore, setting: dict[str, Any], named: str
) -> None:
    older = _OlderStore(store)
    with pytest.raises(ConfigError, match=re.escape(named)) as caught:
        CircuitBreaker(CircuitBreakerConfig(store=older, **setting), name="refused")  # type: ignore[arg-type]
    assert "trip_rules = True" in str(caught.value)
    assert "drop these settings" in str(caught.value)


def test_a_store_without_the_trip_rules_keeps_the_seeds_rule(store: RedisStore) -> None:
    older = _OlderStore(store)
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000, store=older),  # type: ignore[arg-type]
        name="older",
    )
    breaker.record_failure(breaker.acquire())
    assert breaker.failure_count == 1
    breaker.record_success(breaker.acquire())
    assert breaker.failure_count == 0
    breaker.record_failure(breaker.acquire())
    breaker.record_failure(breaker.acquire())
    assert breaker.state is OPEN
    assert breaker.reason == "consecutive failures"


# -- (f) a fleet being upgraded: the one-probe fields of older versions ---------------------


def test_an_older_versions_probe_is_honoured_and_ours_is_kept_readable_for_it(
    store: RedisStore, redis_url: str
) -> None:
    """A HALF_OPEN hash as smoothapi before the trip rules writes it (``gen`` and
    ``lease_until``, no ``probes``; here over a stale ``probes`` field of an earlier
    round) holds one probe: ours is rejected until its lease ends, its report closes the
    breaker, and a stale round's probe reports nothing.  Our own probe keeps
    ``lease_until`` as older scripts read it: its lease while it runs, 0 once given back."""
    config = CircuitBreakerConfig(cooldown_ms=HOUR)
    breaker = shared(store, "upgrade", config)
    key = store.key("upgrade")
    client = store.client
    older_gen, stale_gen = 2**40 + 1, 2**40 - 1
    client.hset(
        key,
        mapping={
            "state": "HALF_OPEN",
            "gen": older_gen,
            "lease_until": 2**50,  # far in the future
            "probes": f"{stale_gen}/0/1,{stale_gen}:{2**50}",
        },
    )
    assert breaker.acquire() == REJECTED
    assert breaker.record_failure(stale_gen) is HALF_OPEN  # not this round's probe
    assert breaker.record_success(older_gen) is CLOSED

    breaker.force_open(cooldown_ms=0)
    ticket = breaker.acquire()
    assert ticket > 0
    assert ticket % 2 == 1
    lease = int(client.hget(key, "lease_until") or 0)
    assert lease > int(client.hget(key, "open_until") or 0)  # its lease, for older readers
    breaker.release(ticket)
    assert client.hget(key, "lease_until") == b"0"


def test_the_rate_rule_in_a_cluster(redis_cluster: RedisCluster) -> None:
    """Every rule is one script on one key: it runs on the node that holds it."""
    client = redis.cluster.RedisCluster(
        host="127.0.0.1", port=redis_cluster.ports[0], socket_timeout=2, socket_connect_timeout=2
    )
    try:
        store = RedisStore(client, prefix=f"t{os.getpid()}{time.monotonic_ns()}")
        config = CircuitBreakerConfig(
            failure_rate=0.5, minimum_calls=4, window_ms=60_000, half_open_calls=2
        )
        one, other = shared(store, "cluster", config), shared(store, "cluster", config)
        for breaker in (one, other):
            breaker.record_success(breaker.acquire())
        for breaker in (one, other):
            breaker.record_failure(breaker.acquire())
        assert one.state is OPEN
        assert other.reason == "failure rate 0.50 over 4 calls"
        other.force_open(cooldown_ms=0)
        tickets = [one.acquire(), other.acquire(), one.acquire()]
        assert [t > 0 and t % 2 == 1 for t in tickets] == [True, True, False]
        assert one.record_success(tickets[1]) is HALF_OPEN
        assert other.record_success(tickets[0]) is CLOSED
        assert one.window == WindowCounts(0, 0, 0)
    finally:
        client.close()


# -- (g) the async path ----------------------------------------------------------------------


def test_the_async_path(redis_url: str, redis_prefix: str) -> None:
    async def scenario() -> None:
        sync_client = _client(redis_url)
        # Room for 1,000 calls at once (redis-py 8 caps a pool at 100 connections).
        async_client = redis.asyncio.Redis.from_url(redis_url, max_connections=1024)
        try:
            store = RedisStore(sync_client, async_client=async_client, prefix=redis_prefix)
            config = CircuitBreakerConfig(
                failure_rate=0.5,
                minimum_calls=10,
                window_ms=60_000,
                half_open_calls=2,
                cooldown_ms=10_000,
            )
            breakers = [shared(store, "async", config) for _ in range(3)]

            async def call(breaker: SharedCircuitBreaker, fail: bool) -> None:
                ticket = await breaker.acquire_async()
                if fail:
                    await breaker.record_failure_async(ticket)
                else:
                    await breaker.record_success_async(ticket)

            await asyncio.gather(*(call(b, False) for b in breakers for _ in range(2)))
            # Each breaker (a process of the fleet) sends its successes with its next call.
            assert (await breakers[0].snapshot_async()).window == WindowCounts(2, 0, 0)
            assert (await breakers[1].snapshot_async()).window == WindowCounts(4, 0, 0)
            assert (await breakers[2].snapshot_async()).window == WindowCounts(6, 0, 0)
            # 1,000 coroutines of one breaker: every success counted, none lost.
            crowd = shared(store, "crowd", RATE)
            await asyncio.gather(*(call(crowd, False) for _ in range(1000)))
            assert (await crowd.snapshot_async()).window == WindowCounts(1000, 0, 0)

            await asyncio.gather(*(call(b, True) for b in breakers for _ in range(2)))
            snap = await breakers[1].snapshot_async()
            assert snap.state is OPEN, snap
            assert snap.window == WindowCounts(0, 0, 0)
            await breakers[0].force_open_async(50)
            while (await breakers[0].snapshot_async()).retry_after > 0:  # noqa: ASYNC110 - polls the server
                await asyncio.sleep(0.01)
            tickets = await asyncio.gather(*(b.acquire_async() for b in breakers * 3))
            probes = [t for t in tickets if t > 0 and t % 2 == 1]
            assert len(probes) == 2, tickets
            assert await breakers[2].record_success_async(probes[0]) is HALF_OPEN
            assert await breakers[1].record_success_async(probes[1]) is CLOSED
            assert (await breakers[0].snapshot_async()).window == WindowCounts(0, 0, 0)
        finally:
            await async_client.aclose()
            sync_client.close()

    asyncio.run(scenario())
