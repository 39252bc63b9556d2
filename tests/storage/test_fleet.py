"""One breaker for a whole fleet: real OS processes, a real Redis, a real HTTP server.

Issue 5, "Tests it must have", and the spec of ``smoothapi.storage``: with
``CircuitBreakerConfig(store=RedisStore(...))`` every process that calls the
same upstream under the same breaker name shares one state in Redis.  The
whole fleet trips after ``failure_threshold`` failures in total, rejects
together, and sends exactly ONE probe when the cooldown ends; a prober that
dies keeps the probe only until its lease expires (the lease is never longer
than the cooldown); and when Redis goes away the calls go on with a local
breaker, with no Redis exception ever reaching a caller, and the shared state
is used again once Redis is back.

How the tests observe a fleet without trusting it:

* Every request that reaches the upstream is counted by the ScriptedServer
  (``server.count(path)``), before its reply is sent.
* Every call records its outcome and ``time.monotonic()`` at its start and end.
  On Linux that clock (CLOCK_MONOTONIC) is system-wide, so the parent compares
  times taken in different processes.
* "Exactly one probe while it is in flight" is checked against the server, not
  against the callers: the probe's reply is delayed by ``PROBE_DELAY`` on the
  server, so the probe cannot be answered before ``t0 + PROBE_DELAY`` where
  ``t0`` is the start of the last count sample that still saw no request.
  Every count sample that ended before that instant was taken while the probe
  was unanswered - while no caller could have closed the breaker - and must
  see exactly the probe.  No bound on speed is asserted anywhere: slowness
  only shortens that window (the test fails if it leaves no sample at all).

The children are started with the "spawn" context (a fresh interpreter that
imports this module) and synchronise with multiprocessing Barriers and Events;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests
from httpserver import Delay, Reply, ScriptedServer
from redisserver import RedisServer

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    Event,
    ResilientConfig,
    StateChanged,
    StoreRecovered,
    StoreUnavailable,
    add_hook,
    remove_hook,
    resilient_api,
)
from smoothapi.storage import RedisStore

pytestmark = pytest.mark.slow

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

THRESHOLD = 5  # failure_threshold of every breaker here
COOLDOWN_MS = 1000  # short, so that the tests can wait for it; the probe lease defaults to it
PROBE_DELAY = 1.0  # seconds the server holds a probe's reply
MARGIN = 0.05  # s of slack for Event.wait and clock reads, always in the lenient direction
EXTRA_REJECTED = 3  # calls each thread makes after its first rejection: all must be rejected
POLL = 0.002  # s between a rejected call and the next one (callers keep calling)
HTTP_TIMEOUT = 10.0
REDIS_TIMEOUT = 2.0  # generous in the fleet tests: a loaded CI box must not look like an outage
WAIT = 30.0  # bound of every barrier and wait; a passing run never comes near it
PROBE_BODY = "probe"
OK_BODY = "ok"


# -- what a caller saw -------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One call of the decorated function, as its caller saw it.

    ``outcome``: "ok" (returned a value), "failed" (the upstream's HTTPError),
    "rejected" (CircuitOpenError), "error" (anything else: never expected).
    """

    proc: int
    thread: int
    phase: int
    start: float
    end: float
    outcome: str
    body: str = ""  # the value of an "ok" call, the status of a "failed" one
    retry_after: float | None = None  # of a "rejected" call
    error: str = ""  # type and message of an "error" call


@dataclass
class Report:
    """Everything one child process sends back to the parent."""

    proc: int
    calls: list[Call] = field(default_factory=list)
    transitions: list[tuple[str, str]] = field(default_factory=list)  # StateChanged old, new
    store_events: list[str] = field(default_factory=list)  # StoreUnavailable/StoreRecovered
    states: list[str] = field(default_factory=list)  # each thread's breaker.state at the end
    errors: list[str] = field(default_factory=list)  # failures of the worker code itself


@dataclass(frozen=True)
class Fleet:
    """What a child needs to build its decorated function (picklable)."""

    base_url: str
    redis_url: str
    prefix: str
    name: str


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


def _fetcher(fleet: Fleet, hooks: tuple[Callable[[Event], object], ...]) -> Any:
    """The function every process decorates: GET base_url + path, raise_for_status, text."""
    store = RedisStore.from_url(fleet.redis_url, timeout=REDIS_TIMEOUT, prefix=fleet.prefix)
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=THRESHOLD, cooldown_ms=COOLDOWN_MS, store=store
        ),
        hooks=hooks,
    )

    @resilient_api(config, name=fleet.name)
    def fetch(session: requests.Session, path: str) -> str:
        response = session.get(fleet.base_url + path, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return response.text

    return fetch


@dataclass
class Caller:
    """One thread of one process: calls ``fetch`` and records every call."""

    fetch: Callable[[requests.Session, str], str]
    proc: int
    thread: int
    session: requests.Session = field(default_factory=requests.Session)
    calls: list[Call] = field(default_factory=list)

    def call(self, path: str, phase: int) -> Call:
        start = time.monotonic()
        where = (self.proc, self.thread, phase, start)
        try:
            body = self.fetch(self.session, path)
        except CircuitOpenError as exc:
            c = Call(*where, time.monotonic(), "rejected", retry_after=exc.retry_after)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            c = Call(*where, time.monotonic(), "failed", body=str(status))
        except Exception as exc:
            c = Call(*where, time.monotonic(), "error", error=_describe(exc))
        else:
            c = Call(*where, time.monotonic(), "ok", body=body)
        self.calls.append(c)
        return c

    def until_value(self, path: str, phase: int, probe_done: Any) -> None:
        """Keep calling while rejected; set ``probe_done`` if this call was the probe."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            c = self.call(path, phase)
            if c.outcome == "ok" and c.body == PROBE_BODY:
                probe_done.set()
            if c.outcome != "rejected":
                return
            time.sleep(POLL)


class _Recorder:
    """The hook of one process: state changes and store events, thread-safe."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, StateChanged):
                self.report.transitions.append((str(event.old), str(event.new)))
            elif isinstance(event, (StoreUnavailable, StoreRecovered)):
                self.report.store_events.append(type(event).__name__)


def _run_child(
    proc: int, fleet: Fleet, threads: int, body: Callable[[Caller], None], results: Any
) -> None:
    """Run ``body`` in ``threads`` threads of this process; send the Report to ``results``."""
    report = Report(proc)
    fetch = _fetcher(fleet, hooks=(_Recorder(report),))
    lock = threading.Lock()

    def thread_main(index: int) -> None:
        caller = Caller(fetch, proc, index)
        try:
            body(caller)
            state = str(fetch.breaker.state)
        except BaseException as exc:
            state = "?"
            with lock:
                report.errors.append(f"thread {index}: {_describe(exc)}")
        finally:
            caller.session.close()
        with lock:
            report.calls.extend(caller.calls)
            report.states.append(state)

    workers = [threading.Thread(target=thread_main, args=(i,), daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(4 * WAIT)
        if t.is_alive():
            report.errors.append(f"{t.name} still running")
    results.put(report)


# -- the parent's side -------------------------------------------------------------------------


def _spawn() -> Any:
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def _processes(procs: list[Any], barriers: list[Any]) -> Iterator[None]:
    """Start ``procs``; on the way out break every barrier and reap every child."""
    try:
        for p in procs:
            p.start()
        yield
    finally:
        for b in barriers:
            b.abort()
        for p in procs:
            p.join(WAIT)
            if p.is_alive():
                p.kill()
                p.join(WAIT)


def _collect(results: Any, procs: list[Any]) -> list[Report]:
    """One Report per child process; fails (bounded) if a child dies without sending one."""
    reports: list[Report] = []
    deadline = time.monotonic() + 4 * WAIT
    while len(reports) < len(procs):
        try:
            reports.append(results.get(timeout=0.2))
        except queue.Empty:
            dead = [p for p in procs if not p.is_alive() and p.exitcode != 0]
            if dead or time.monotonic() > deadline:
                pytest.fail(
                    f"got {len(reports)}/{len(procs)} reports; children (pid:exit code): "
                    + ", ".join(f"{p.pid}:{p.exitcode}" for p in procs)
                )
    return sorted(reports, key=lambda r: r.proc)


@dataclass
class Samples:
    """Request counts at one path, each with the monotonic interval in which it was read."""

    taken: list[tuple[float, int, float]] = field(default_factory=list)  # (before, count, after)

    def sample(self, server: ScriptedServer, path: str) -> int:
        before = time.monotonic()
        n = server.count(path)
        self.taken.append((before, n, time.monotonic()))
        return n

    def until(self, server: ScriptedServer, path: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not done() and time.monotonic() < deadline:
            self.sample(server, path)
            time.sleep(0.005)
        self.sample(server, path)

    def arrived_by(self, already: int) -> float:
        """A time by which request number ``already + 1`` had surely arrived."""
        return min(after for _, n, after in self.taken if n > already)

    def unanswered_until(self, already: int, delay: float) -> float:
        """A time before which request number ``already + 1`` was surely unanswered.

        It arrived after the start of the last sample that saw only ``already``
        requests, and the server holds its reply ``delay`` seconds.
        """
        return max(before for before, n, _ in self.taken if n <= already) + delay - MARGIN

    def while_unanswered(self, already: int, delay: float) -> list[int]:
        """The counts read entirely while request number ``already + 1`` was unanswered."""
        since = self.arrived_by(already)
        until = self.unanswered_until(already, delay)
        return [n for before, n, after in self.taken if before >= since and after < until]


@contextlib.contextmanager
def _observer(redis_url: str, prefix: str, name: str) -> Iterator[CircuitBreaker]:
    """The parent's own breaker on the fleet's key, with a client of its own."""
    client = redis.Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        config = CircuitBreakerConfig(
            failure_threshold=THRESHOLD,
            cooldown_ms=COOLDOWN_MS,
            store=RedisStore(client, prefix=prefix),
        )
        yield CircuitBreaker(config, name=name)
    finally:
        client.close()


def _errors(reports: list[Report]) -> list[str]:
    """Every worker failure and every undocumented exception that reached a caller."""
    found = [f"proc {r.proc}: {e}" for r in reports for e in r.errors]
    found += [
        f"proc {c.proc} thread {c.thread} phase {c.phase}: {c.error}"
        for r in reports
        for c in r.calls
        if c.outcome == "error"
    ]
    found += [f"proc {r.proc}: {e} (Redis looked down)" for r in reports for e in r.store_events]
    return found


# == (a) the fleet trips together and sends one probe ==========================================

PROCS = 4  # OS processes in the fleet
THREADS = 4  # threads per process
CALLERS = PROCS * THREADS


@dataclass(frozen=True)
class TripSync:
    start: Any  # Barrier(CALLERS + 1): every process imported, every thread ready
    tripped: Any  # Barrier(CALLERS + 1): every thread has seen the breaker open
    go: Any  # Barrier(CALLERS + 1): the server now answers 200 (the probe slowly)
    closed: Any  # Barrier(CALLERS + 1): every thread has had a value
    probe_done: Any  # Event: the probe's call has returned


def _trip_thread(caller: Caller, sync: TripSync) -> None:
    sync.start.wait(WAIT)
    # Phase 1: call the failing upstream until rejected, then a few more times.
    rejected = 0
    for _ in range(100):
        c = caller.call("/down", 1)
        if c.outcome == "error":
            break
        if rejected or c.outcome == "rejected":
            rejected += 1
            if rejected > EXTRA_REJECTED:
                break
    sync.tripped.wait(WAIT)
    sync.go.wait(WAIT)
    # Phase 2: keep calling until a value: the probe's, or one once the probe closed it.
    caller.until_value("/up", 2, sync.probe_done)
    sync.closed.wait(WAIT)
    # Phase 3: the breaker is closed for everyone.
    caller.call("/up", 3)


def _trip_child(proc: int, fleet: Fleet, sync: TripSync, results: Any) -> None:
    _run_child(proc, fleet, THREADS, lambda caller: _trip_thread(caller, sync), results)


@dataclass
class TripRun:
    reports: list[Report]
    calls: list[Call]
    down_requests: int  # requests at /down when every thread had seen the breaker open
    state_after_trip: CircuitState
    state_at_end: CircuitState
    probe: Samples


def _run_trip_fleet(fleet: Fleet, server: ScriptedServer) -> TripRun:
    server.default = Reply(503)
    ctx = _spawn()
    start, tripped, go, closed = (ctx.Barrier(CALLERS + 1) for _ in range(4))
    sync = TripSync(start, tripped, go, closed, ctx.Event())
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_trip_child, args=(i, fleet, sync, results), daemon=True)
        for i in range(PROCS)
    ]
    probe = Samples()
    with (
        _observer(fleet.redis_url, fleet.prefix, fleet.name) as observer,
        _processes(procs, [sync.start, sync.tripped, sync.go, sync.closed]),
    ):
        sync.start.wait(WAIT)
        sync.tripped.wait(WAIT)
        down_requests = server.count("/down")
        state_after_trip = observer.state
        server.script("/up", Delay(PROBE_DELAY, Reply(200, PROBE_BODY.encode())))
        server.default = Reply(200, OK_BODY.encode())
        probe.sample(server, "/up")  # 0: nobody may call before the barrier
        sync.go.wait(WAIT)
        probe.until(server, "/up", sync.probe_done.is_set)
        sync.closed.wait(WAIT)
        reports = _collect(results, procs)
        state_at_end = observer.state
    calls = [c for r in reports for c in r.calls]
    return TripRun(reports, calls, down_requests, state_after_trip, state_at_end, probe)


def _assert_tripped_together(run: TripRun, server: ScriptedServer) -> None:
    """The breaker opens for every caller after failure_threshold failures in total.

    The server sees at least ``failure_threshold`` requests and at most
    ``failure_threshold + processes x threads - 1``: the tripping failure is the
    threshold-th counted, and each of the other callers can have had at most one
    request in flight, admitted while the breaker was still CLOSED.  After the
    first rejection anywhere in the fleet, no call that starts reaches the server.
    """
    phase1 = [c for c in run.calls if c.phase == 1]
    failed = [c for c in phase1 if c.outcome == "failed"]
    assert {c.body for c in failed} == {"503"}
    assert run.state_after_trip == OPEN
    assert server.count("/down") == run.down_requests == len(failed), "a request unaccounted"
    assert THRESHOLD <= len(failed) <= THRESHOLD + CALLERS - 1
    for r in run.reports:
        for t in range(THREADS):
            mine = [c.outcome for c in r.calls if c.phase == 1 and c.thread == t]
            assert "rejected" in mine, f"proc {r.proc} thread {t} never saw the breaker open"
            first = mine.index("rejected")
            assert mine[first:] == ["rejected"] * (EXTRA_REJECTED + 1)
    first_rejection = min(c.end for c in phase1 if c.outcome == "rejected")
    late = [c for c in failed if c.start > first_rejection]
    assert late == [], "a call that started after the breaker opened reached the server"


def _assert_one_probe(run: TripRun) -> None:
    """After the cooldown exactly one request reaches the server while the probe is out,
    although every process keeps calling and is rejected with retry_after == 0.0 ("a
    probe is in flight")."""
    while_out = run.probe.while_unanswered(0, PROBE_DELAY)
    assert while_out, "no count sample was taken while the probe was unanswered"
    assert set(while_out) == {1}
    phase2 = [c for c in run.calls if c.phase == 2]
    assert {c.outcome for c in phase2} <= {"ok", "rejected"}
    assert [c.body for c in phase2].count(PROBE_BODY) == 1
    arrived = run.probe.arrived_by(0)
    unanswered = run.probe.unanswered_until(0, PROBE_DELAY)
    during = [
        c for c in phase2 if c.outcome == "rejected" and arrived <= c.start and c.end < unanswered
    ]
    assert {c.proc for c in during} == set(range(PROCS)), "a process was not calling"
    assert {c.retry_after for c in during} == {0.0}


def _assert_closed_for_all(run: TripRun, server: ScriptedServer) -> None:
    """After the probe's success the breaker is CLOSED in every process; every call that
    returned a value made exactly one request; each transition was reported once, by the
    process that made it."""
    phase3 = [c for c in run.calls if c.phase == 3]
    assert len(phase3) == CALLERS
    assert {(c.outcome, c.body) for c in phase3} == {("ok", OK_BODY)}
    assert [s for r in run.reports for s in r.states] == ["CLOSED"] * CALLERS
    assert run.state_at_end == CLOSED
    assert server.count("/up") == sum(c.outcome == "ok" for c in run.calls)
    transitions = Counter(t for r in run.reports for t in r.transitions)
    assert transitions == {
        ("CLOSED", "OPEN"): 1,
        ("OPEN", "HALF_OPEN"): 1,
        ("HALF_OPEN", "CLOSED"): 1,
    }


def test_fleet_opens_together_then_sends_exactly_one_probe(
    server: ScriptedServer, redis_url: str, redis_prefix: str
) -> None:
    """4 processes x 4 threads share one Redis breaker (failure_threshold=5, max_retries=0)
    on an upstream that answers 503: it opens for all of them after 5 failures in total
    (at most 5 + 16 - 1 requests reach the server: the in-flight calls at the moment it
    opens), then rejects without I/O; after the cooldown, with the upstream answering 200
    slowly, exactly one request reaches it as the probe while everyone keeps calling, and
    after the probe's success the breaker is CLOSED for everyone.  No undocumented
    exception reaches a caller.  (Details in the _assert_* helpers.)
    """
    run = _run_trip_fleet(Fleet(server.url, redis_url, redis_prefix, "fleet-trip"), server)
    assert _errors(run.reports) == []
    _assert_tripped_together(run, server)
    _assert_one_probe(run)
    _assert_closed_for_all(run, server)


# == (b) a prober killed mid-probe ============================================================

OTHER_PROCS = 3
OTHER_THREADS = 2
OTHERS = OTHER_PROCS * OTHER_THREADS


@dataclass(frozen=True)
class KillSync:
    ready: Any  # Barrier(OTHERS + 2): the prober, every other thread and the parent are ready
    prober_go: Any  # Event: the prober may start calling
    prober_start: Any  # Value('d'): monotonic start of the prober's latest call
    others_go: Any  # Event: the prober is dead; the others start calling
    closed: Any  # Barrier(OTHERS + 1): every other thread has had a value
    probe_done: Any  # Event: the new probe's call has returned


def _doomed_prober(fleet: Fleet, sync: KillSync) -> None:
    """Call until this process holds the probe; its request then hangs until SIGKILL."""
    fetch = _fetcher(fleet, hooks=())
    with requests.Session() as session:
        sync.ready.wait(WAIT)
        sync.prober_go.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            sync.prober_start.value = time.monotonic()
            with contextlib.suppress(CircuitOpenError):
                fetch(session, "/p")
            time.sleep(POLL)


def _survivor_thread(caller: Caller, sync: KillSync) -> None:
    sync.ready.wait(WAIT)
    sync.others_go.wait(WAIT)
    caller.until_value("/p", 2, sync.probe_done)
    sync.closed.wait(WAIT)
    caller.call("/p", 3)


def _survivor_child(proc: int, fleet: Fleet, sync: KillSync, results: Any) -> None:
    _run_child(proc, fleet, OTHER_THREADS, lambda caller: _survivor_thread(caller, sync), results)


@dataclass
class KillRun:
    reports: list[Report]
    calls: list[Call]
    prober_probed: bool  # the doomed prober's request had reached the server when killed
    prober_start: float  # the doomed probe's call started then, before it took the lease
    prober_exit: int | None
    state_after_kill: CircuitState
    state_at_end: CircuitState
    samples: Samples


def _run_kill(fleet: Fleet, server: ScriptedServer) -> KillRun:
    server.script(
        "/p",
        Delay(4 * WAIT, Reply(200, b"never answered")),  # the doomed probe
        Delay(PROBE_DELAY, Reply(200, PROBE_BODY.encode())),  # the next probe
    )
    server.default = Reply(200, OK_BODY.encode())
    ctx = _spawn()
    sync = KillSync(
        ctx.Barrier(OTHERS + 2),
        ctx.Event(),
        ctx.Value("d", 0.0),
        ctx.Event(),
        ctx.Barrier(OTHERS + 1),
        ctx.Event(),
    )
    results = ctx.Queue()
    prober = ctx.Process(target=_doomed_prober, args=(fleet, sync), daemon=True)
    others = [
        ctx.Process(target=_survivor_child, args=(i, fleet, sync, results), daemon=True)
        for i in range(OTHER_PROCS)
    ]
    samples = Samples()
    with (
        _observer(fleet.redis_url, fleet.prefix, fleet.name) as observer,
        _processes([prober, *others], [sync.ready, sync.closed]),
    ):
        sync.ready.wait(WAIT)
        observer.force_open(cooldown_ms=10)  # OPEN for 10 ms; the probe's lease stays 1 s
        sync.prober_go.set()
        deadline = time.monotonic() + WAIT
        while samples.sample(server, "/p") < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        prober_probed = server.count("/p") == 1
        prober_start = sync.prober_start.value
        os.kill(prober.pid, signal.SIGKILL)
        prober.join(WAIT)
        state_after_kill = observer.state
        sync.others_go.set()
        samples.until(server, "/p", sync.probe_done.is_set)
        sync.closed.wait(WAIT)
        reports = _collect(results, others)
        state_at_end = observer.state
    calls = [c for r in reports for c in r.calls]
    return KillRun(
        reports,
        calls,
        prober_probed,
        prober_start,
        prober.exitcode,
        state_after_kill,
        state_at_end,
        samples,
    )


def test_killed_prober_blocks_the_fleet_only_until_its_lease_expires(
    server: ScriptedServer, redis_url: str, redis_prefix: str
) -> None:
    """A process holding the probe is killed with SIGKILL while its request hangs on the
    server.  Its lease (by default the cooldown, never longer) keeps the probe: every call
    of the 3 other processes that ended before the lease can have expired was rejected with
    retry_after == 0.0 and none reached the server; after the expiry exactly one of them
    becomes the new probe (one request while it is unanswered), its success closes the
    breaker for all, and no call is lost.
    """
    run = _run_kill(Fleet(server.url, redis_url, redis_prefix, "fleet-kill"), server)
    assert run.prober_exit == -signal.SIGKILL
    assert run.prober_probed, "the doomed prober never sent its probe"
    assert _errors(run.reports) == []
    assert run.state_after_kill == HALF_OPEN

    lease_alive_until = run.prober_start + COOLDOWN_MS / 1000 - MARGIN
    during_lease = [c for c in run.calls if c.end < lease_alive_until]
    assert {c.proc for c in during_lease} == set(range(OTHER_PROCS)), "not all were calling"
    assert {c.outcome for c in during_lease} == {"rejected"}
    assert {c.retry_after for c in during_lease} == {0.0}

    probes = [c for c in run.calls if c.outcome == "ok" and c.body == PROBE_BODY]
    assert len(probes) == 1
    assert probes[0].end >= lease_alive_until
    while_out = run.samples.while_unanswered(1, PROBE_DELAY)
    assert while_out, "no count sample was taken while the new probe was unanswered"
    assert set(while_out) == {2}

    assert {c.outcome for c in run.calls} <= {"ok", "rejected"}
    assert [c.outcome for c in run.calls if c.phase == 3] == ["ok"] * OTHERS
    assert [s for r in run.reports for s in r.states] == ["CLOSED"] * OTHERS
    assert run.state_at_end == CLOSED
    assert server.count("/p") == 1 + sum(c.outcome == "ok" for c in run.calls)
    transitions = Counter(t for r in run.reports for t in r.transitions)
    assert transitions[("HALF_OPEN", "CLOSED")] == 1
    assert transitions[("CLOSED", "OPEN")] == transitions[("HALF_OPEN", "OPEN")] == 0


# == (c) Redis stopped and restarted mid-run ===================================================

OUTAGE_THREADS = 4
RETRY_INTERVAL = 0.2  # s between attempts to reach a Redis that is down


def _wait_for(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class StoreEvents:
    """A process-wide hook that keeps StoreUnavailable and StoreRecovered events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if isinstance(event, (StoreUnavailable, StoreRecovered)):
            with self.lock:
                self.events.append(event)

    def count(self, kind: type) -> int:
        with self.lock:
            return sum(isinstance(e, kind) for e in self.events)


class Callers:
    """Threads calling ``fetch("/ok")`` until stopped; every call is recorded."""

    def __init__(self, fetch: Callable[[requests.Session, str], str]) -> None:
        self.fetch = fetch
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True)
            for i in range(OUTAGE_THREADS)
        ]

    def _run(self, index: int) -> None:
        caller = Caller(self.fetch, 0, index)
        with caller.session:
            while not self.stop.is_set():
                c = caller.call("/ok", 0)
                with self.lock:
                    self.calls.append(c)
                time.sleep(0.001)

    def made(self) -> int:
        with self.lock:
            return len(self.calls)

    def keep_calling(self, what: str) -> None:
        """Wait until every thread has had about 10 more calls."""
        target = self.made() + 10 * OUTAGE_THREADS
        _wait_for(f"calls {what}", lambda: self.made() >= target)

    def __enter__(self) -> Callers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(WAIT)


@contextlib.contextmanager
def _client(url: str, timeout: float) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        yield client
    finally:
        client.close()


def _assert_shared_state_resumes(
    fetch: Any, other_client: redis.Redis, prefix: str, server: ScriptedServer
) -> None:
    """What one breaker object writes, a second one with the same name (and a client
    of its own) sees, and the other way round."""
    other = CircuitBreaker(
        CircuitBreakerConfig(
            failure_threshold=THRESHOLD,
            cooldown_ms=60_000,
            store=RedisStore(other_client, prefix=prefix),
        ),
        name=fetch.breaker.name,
    )
    assert other.state == CLOSED
    server.script("/down", *[Reply(503)] * THRESHOLD)
    with requests.Session() as session:
        for _ in range(THRESHOLD):
            with pytest.raises(requests.HTTPError):
                fetch(session, "/down")
        assert other.state == OPEN, "the second breaker does not see the first one's state"
        with pytest.raises(CircuitOpenError):
            fetch(session, "/ok")
        other.reset()
        assert fetch(session, "/ok") == OK_BODY, "the first does not see the second's reset"
    assert fetch.breaker.state == CLOSED


def test_redis_outage_never_reaches_callers_and_shared_state_resumes(
    server: ScriptedServer, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is stopped while 4 threads keep calling a healthy upstream, then restarted on
    the same port.  Every call returns its value (no exception at all reaches a caller,
    so never a Redis one; none is lost: the server saw one request per call), the calls
    go on during the outage, StoreUnavailable fires once and StoreRecovered once, one
    WARNING names the store by host:port and one INFO reports the recovery; once Redis is
    back the shared state is used again: a second breaker object with the same name, on
    its own client, sees the state the first one writes, and the other way round.
    """
    prefix, name = f"smoothapi-test-outage-{uuid.uuid4().hex[:12]}", "outage"
    port = redis_server.port
    events = StoreEvents()
    caplog.set_level(logging.INFO, logger="smoothapi")
    with _client(redis_server.url, 0.1) as client, _client(redis_server.url, 2.0) as other_client:
        store = RedisStore(client, prefix=prefix, retry_interval=RETRY_INTERVAL)
        config = ResilientConfig(
            backoff=BackoffConfig(max_retries=0),
            circuit_breaker=CircuitBreakerConfig(
                failure_threshold=THRESHOLD, cooldown_ms=60_000, store=store
            ),
        )

        @resilient_api(config, name=name)
        def fetch(session: requests.Session, path: str) -> str:
            response = session.get(server.url + path, timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            return response.text

        add_hook(events)
        try:
            with Callers(fetch) as callers:
                callers.keep_calling("with Redis up")
                stopped_at = time.monotonic()
                redis_server.stop()
                _wait_for("StoreUnavailable", lambda: events.count(StoreUnavailable) >= 1)
                callers.keep_calling("during the outage")
                restarted_at = time.monotonic()
                redis_server.start()
                _wait_for("StoreRecovered", lambda: events.count(StoreRecovered) >= 1)
                callers.keep_calling("after the restart")
        finally:
            remove_hook(events)

        _assert_shared_state_resumes(fetch, other_client, prefix, server)

    assert redis_server.port == port
    assert [type(e) for e in events.events] == [StoreUnavailable, StoreRecovered]
    recovered = events.events[1]
    assert isinstance(recovered, StoreRecovered)
    assert recovered.down_for > 0

    calls = callers.calls
    assert [c for c in calls if c.outcome != "ok"] == [], "an exception reached a caller"
    assert {c.body for c in calls} == {OK_BODY}
    assert server.count("/ok") == len(calls) + 1  # + the call after other.reset()
    outage = [c for c in calls if stopped_at < c.start and c.end < restarted_at]
    assert outage, "no call ran while Redis was down"

    logged = [r for r in caplog.records if r.name.split(".")[0] == "smoothapi"]
    # The store's own warnings (a breaker opening logs a WARNING too, with another tag).
    warnings = [
        r.getMessage() for r in logged if getattr(r, "smoothapi_event", None) == "store_unavailable"
    ]
    assert len(warnings) == 1, warnings
    assert f"127.0.0.1:{port}" in warnings[0]
    infos = [
        r.getMessage() for r in logged if getattr(r, "smoothapi_event", None) == "store_recovered"
    ]
    assert len(infos) == 1, infos
