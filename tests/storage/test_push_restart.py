"""Issue 14: Redis stopped and restarted under a fleet on the push happy path.

Four child processes (the "spawn" context) each call a decorated function in a loop
through one breaker shared with a ``RedisStore`` (small ``sync_interval`` and
``retry_interval``) on a private redis-server.  The parent moves them through phases
(a shared ``phase`` value; each child writes in ``done`` the last phase whose goal it
reached) and checks, with bounded polls only:

1. WARM: every child runs on a clean ticket (watcher subscribed).
2. OUTAGE: the parent stops redis-server; every child keeps answering from the local
   breaker (``OUTAGE_CALLS`` successful calls each, the store marked down) and its
   clean ticket is gone.
3. BACK: the parent restarts redis-server on the same port; every child's watcher
   subscribes again and its breaker learns a clean ticket again.
4. TRIPPED: the parent trips the breaker (its own breaker object, same name, one
   failure, ``failure_threshold=1``); every child sees a call rejected within the
   liveness bound ``SYNC_INTERVAL + SLACK`` (far above the figures), and none of its
   calls passes after that.
5. SETTLE / BURST: the parent resets the breaker; every child gets a clean ticket back
   and stops calling; then each makes ``BURST`` calls while the parent counts the
   server's commands (``INFO commandstats``): none at all but the watchers' PINGs.  A
   burst during which a child's watcher heard anything is done again, at most
   ``ATTEMPTS`` times: the reset's message often reaches a child's watcher after that
   child already learnt the new clean period from its own call, and zeroes the ticket
   (harmless: the next call asks once, one EVALSHA).

Through every phase no call raises anything but ``CircuitOpenError`` (and that only in
TRIPPED and SETTLE) and every call returns its own argument: no Redis exception ever
reaches a call.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import uuid
from typing import Any

import pytest
import redis
from redisserver import RedisServer

from smoothapi import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ResilientConfig,
    resilient_api,
)
from smoothapi.storage import RedisStore, SharedCircuitBreaker, _watch

pytestmark = pytest.mark.slow

CHILDREN = 4
NAME = "fleet-restart"
SYNC_INTERVAL = 0.3
RETRY_INTERVAL = 0.1
TIMEOUT = 2.0  # the clients' socket timeout: a loaded box must not fake an outage
SLACK = 5.0  # seconds beyond sync_interval: a liveness bound for a loaded CI box, not a figure
WAIT = 60.0  # any one bounded poll (spawning 4 interpreters on 2 busy cores is slow)
POLL = 0.001  # seconds between two calls of a child
OUTAGE_CALLS = 50  # successful calls each child makes with Redis down
BURST = 200  # healthy calls per child while the server's commands are counted
ATTEMPTS = 3

WARM, OUTAGE, BACK, TRIPPED = 1, 2, 3, 4
FIRST_SETTLE = 5  # then BURST at 6; a repeated burst settles at 7 and bursts at 8...


def _echo(x: int) -> int:
    return x


def _settling(phase: int) -> bool:
    return phase >= FIRST_SETTLE and phase % 2 == 1


def _child(  # noqa: PLR0915, PLR0917 - one child's whole script
    index: int,
    url: str,
    prefix: str,
    phase: Any,
    done: Any,
    outage_calls: Any,
    seen_at: Any,
    quiet: Any,
    stop: Any,
    errors: Any,
) -> None:
    store = RedisStore.from_url(
        url,
        prefix=prefix,
        sync_interval=SYNC_INTERVAL,
        retry_interval=RETRY_INTERVAL,
        timeout=TIMEOUT,
    )
    config = ResilientConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_ms=600_000, store=store)
    )
    fn = resilient_api(config, name=NAME)(_echo)
    breaker = fn.breaker  # type: ignore[attr-defined]
    watcher = _watch.watch(store)
    n = 0
    current = 0
    rejected = False
    ok_calls = 0

    def call(ph: int) -> bool | None:
        """One call: True if it returned its argument, False if rejected (allowed in
        ``ph``), None after reporting anything else to the parent."""
        nonlocal n
        n += 1
        try:
            value = fn(n)
        except CircuitOpenError:
            if ph == TRIPPED or _settling(ph):
                return False
            errors.put(f"child {index}: CircuitOpenError in phase {ph}")
            return None
        except Exception as exc:  # never expected: reported to the parent
            errors.put(f"child {index}, phase {ph}: {type(exc).__name__}: {exc}")
            return None
        if value != n:
            errors.put(f"child {index}: got {value!r} for {n}")
            return None
        return True

    def clean() -> bool:
        return bool(watcher.subscribed and breaker.clean_ticket != 0)

    deadline = time.monotonic() + 10 * WAIT
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            ph = phase.value
            if ph != current:
                current, rejected, ok_calls = ph, False, 0
            if ph >= FIRST_SETTLE and done[index] == ph:
                time.sleep(POLL)  # holds still: the parent counts the server's commands
                continue
            if ph >= FIRST_SETTLE and not _settling(ph):  # a burst, on the happy path
                seq, ticket = watcher.seq, breaker.clean_ticket
                passed = [call(ph) for _ in range(BURST)]
                quiet[index] = int(
                    ticket != 0
                    and all(passed)
                    and watcher.subscribed
                    and watcher.seq == seq
                    and breaker.clean_ticket == ticket
                )
                done[index] = ph
                continue
            outcome = call(ph)
            if outcome is True:
                ok_calls += 1
                if ph == TRIPPED and rejected:
                    errors.put(f"child {index}: a call passed after a rejection")
            elif outcome is False and ph == TRIPPED and not rejected:
                rejected = True
                seen_at[index] = time.monotonic()
                done[index] = ph
            if ph == OUTAGE:
                outage_calls[index] = ok_calls
                # On the local fallback: the store is marked down, no clean ticket left.
                down = breaker._health.down_since is not None
                if ok_calls >= OUTAGE_CALLS and down and breaker.clean_ticket == 0:
                    done[index] = ph
            elif (ph in (WARM, BACK) or _settling(ph)) and clean():
                done[index] = ph
            time.sleep(POLL)
    finally:
        store.close()


def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _counts(client: redis.Redis) -> tuple[int, int]:
    """(EVALSHA calls, every other command but INFO - the counting - and PING - the
    watchers' liveness check) the server ran so far; the commands a script runs count
    as commands too."""
    stats = client.info("commandstats")
    evalsha = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    other = sum(
        int(v["calls"])
        for k, v in stats.items()
        if k not in ("cmdstat_info", "cmdstat_ping", "cmdstat_evalsha")
    )
    return evalsha, other


def test_a_fleet_rides_out_a_redis_restart(redis_server: RedisServer) -> None:  # noqa: PLR0915
    prefix = f"restart{uuid.uuid4().hex[:10]}"
    port = redis_server.port
    ctx = multiprocessing.get_context("spawn")
    phase = ctx.Value("i", 0)
    done = ctx.Array("i", [0] * CHILDREN)
    outage_calls = ctx.Array("i", [0] * CHILDREN)
    seen_at = ctx.Array("d", [0.0] * CHILDREN)
    quiet = ctx.Array("i", [0] * CHILDREN)
    stop = ctx.Event()
    errors = ctx.Queue()
    procs = [
        ctx.Process(
            target=_child,
            args=(
                i,
                redis_server.url,
                prefix,
                phase,
                done,
                outage_calls,
                seen_at,
                quiet,
                stop,
                errors,
            ),
            daemon=True,
        )
        for i in range(CHILDREN)
    ]

    def reached(ph: int) -> None:
        _until(lambda: all(done[i] == ph for i in range(CHILDREN)), f"every child in phase {ph}")

    store: RedisStore | None = None
    admin: redis.Redis | None = None
    bursts: list[tuple[int, int, list[int]]] = []
    for proc in procs:
        proc.start()
    try:
        phase.value = WARM
        reached(WARM)

        redis_server.stop()
        phase.value = OUTAGE  # every call from now on runs with Redis down
        reached(OUTAGE)
        assert all(outage_calls[i] >= OUTAGE_CALLS for i in range(CHILDREN))

        redis_server.start()
        assert redis_server.port == port
        phase.value = BACK
        reached(BACK)

        # The parent's own view of the breaker, on a server that is up.
        store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=TIMEOUT)
        admin = redis.Redis.from_url(redis_server.url, socket_timeout=TIMEOUT)
        a = CircuitBreaker(
            CircuitBreakerConfig(failure_threshold=1, cooldown_ms=600_000),
            name=NAME,
            store=store,
        )
        assert isinstance(a, SharedCircuitBreaker)
        phase.value = TRIPPED
        t0 = time.monotonic()
        ticket = a.acquire()
        assert ticket >= 0  # the store's ticket, not the local fallback's
        a.record_failure(ticket)  # trips: one failure, threshold 1
        assert a.state is CircuitState.OPEN
        reached(TRIPPED)
        lags = [seen_at[i] - t0 for i in range(CHILDREN)]
        assert all(0 <= lag < SYNC_INTERVAL + SLACK for lag in lags), lags  # liveness only

        settle = FIRST_SETTLE
        phase.value = settle  # before the reset: a call that passes is no error from now on
        a.reset()
        for _ in range(ATTEMPTS):
            phase.value = settle
            reached(settle)
            for i in range(CHILDREN):
                quiet[i] = 0
            before = _counts(admin)
            phase.value = settle + 1
            reached(settle + 1)
            after = _counts(admin)
            flags = [quiet[i] for i in range(CHILDREN)]
            bursts.append((after[0] - before[0], after[1] - before[1], flags))
            if all(flags):
                break
            settle += 2
    finally:
        stop.set()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        if store is not None:
            store.close()
        if admin is not None:
            admin.close()

    print("restart:", {"lags_ms": [round(lag * 1000, 1) for lag in lags], "bursts": bursts})
    reported: list[str] = []
    while True:
        try:
            reported.append(errors.get(timeout=0.5))
        except queue.Empty:
            break
    assert reported == []
    assert all(proc.exitcode == 0 for proc in procs)
    for evalsha, _, flags in bursts:  # at most a round trip or two per late message
        assert evalsha <= 2 * flags.count(0), bursts
    # The last burst ran with every child on its clean ticket throughout: it sent nothing.
    evalsha, other, flags = bursts[-1]
    assert all(flags), bursts
    assert (evalsha, other) == (0, 0), bursts
