"""The shared breaker's Lua scripts against the machine: a differential property test.

The breaker's rules are written twice: as Python (:mod:`smoothapi.machine`,
which the in-memory :class:`~smoothapi.CircuitBreaker` applies) and as the
Lua scripts of :mod:`smoothapi.storage.lua` (which a real Redis applies for
a :class:`~smoothapi.SharedCircuitBreaker`).  Hypothesis drives one breaker
of each kind with the same random histories - admissions (concurrent probes
included), successes, failures with and without Retry-After, releases, of
any ticket ever handed out (stale ones from before a trip, a reset or a
forced opening; twice; out of order), ticket 0, ``reset()``,
``force_open()``, clock moves (onto a cooldown's end, just before it, far
past it) - over random configs (threshold, cooldown, the adaptive open
time's multiplier, cap and reset) and requires, after every step, the same
replies, the same state, failure count and ``retry_after``, the same
StateChanged transitions and reasons, the same ``reason`` and the same
failure-rate window counts.  The configs also draw the trip rules: the
failure-rate window (rates, windows, ``minimum_calls``), slow calls (a
``slow`` verdict is a success that took a second) and ``half_open_calls``
from 1 to 3.  The memory breaker is the reference.  Histories
that chance reaches only rarely are replayed as written beside it
(``test_histories_at_the_edges``).  500 derandomized examples: the same
histories on every run, and enough that a known slip (a released probe still
reporting) is caught whatever the seed.

How the two are made comparable:

* One clock.  The memory breaker reads a fake clock; the store runs the
  shipped scripts with only their clock prologue swapped, so that ``now``
  is that same fake clock instead of the server's TIME
  (:func:`smoothapi.storage.lua.caller_clock`, a test-only RedisStore
  subclass below).  New probe generations still come from TIME: they only
  need to be fresh.
* Exact times.  The store keeps whole milliseconds; the memory breaker keeps
  float seconds, in which a whole millisecond is not exact (0.1 + 0.2 !=
  0.3), so a clock landing exactly on a cooldown's end could read an ulp
  before it.  Every time and duration drawn here is a multiple of 125 ms
  (1/8 s, exact in a float), open times included (cooldowns and caps are
  multiples of 250 ms and the jitter draw is fixed at 0.5), so both sides
  compute the very same instants and "exactly onto a cooldown's end" means
  the same on both (one edge history leaves the grid on purpose, for the
  store's rounding up).  ``retry_after`` is compared within 1 ms all the same:
  a rejection's figure is the store's whole milliseconds minus the (real,
  microseconds) time since its reply.
* Tickets are paired by the order they were handed out: their numbers
  differ (the memory breaker counts, the store derives generations from
  the server's clock), their kind (ordinary, probe, rejected) must not.
* Batched successes.  With the rate rule the shared breaker sends the
  successes of ordinary calls with its next store call rather than one round
  trip each, and the store counts them at that call's time.  The checks
  after every step read the store (which sends them), before the clock
  moves, so here they are counted at the very time the memory breaker counts
  them: the batching is exercised, its one documented difference (a later
  bucket) is not.  Windows are 1, 2, 2.5 or 5 s, so that a bucket's number
  (``now * 10 / window``) is exact in the memory breaker's float seconds too.
* The probe's lease.  In memory a probe holds its lease until it reports or
  releases; the store's lease expires by itself (its prober may have died),
  after ``lease_ms``, at most the cooldown.  The test store's lease is far
  longer than any history's clock span (``LEASE_MS``), so that expiry -
  which no single process can reproduce - never happens here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from smoothapi import CircuitBreaker, CircuitBreakerConfig, CircuitState
from smoothapi.breaker import REJECTED
from smoothapi.events import Event, StateChanged
from smoothapi.storage import RedisStore, SharedCircuitBreaker

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

# Every time and duration is a multiple of this (1/8 s: exact in a float, see above).
GRID_MS = 125
# The histories' clock starts here (any multiple of GRID_MS: a server-like epoch).
START_MS = 1_700_000_000_000
# The test store's probe lease: far beyond any history's clock span (40 moves of < 1 min).
LEASE_MS = 10**9
# Whole milliseconds on the store's side, and real time between a rejection and its figure.
TOLERANCE = 0.001

SETTINGS = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,  # the same histories on every run, so CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Clock:
    """The one clock both breakers read: milliseconds for the store, seconds for memory."""

    def __init__(self) -> None:
        self.ms = START_MS

    def seconds(self) -> float:
        return self.ms / 1000.0


class ClockedStore(RedisStore):
    """A RedisStore whose scripts read ``clock`` instead of the server's TIME, with a lease
    that outlasts every history (tests only; see the module docstring)."""

    def __init__(self, client: Any, clock: Clock, *, prefix: str) -> None:
        self.clock = clock
        super().__init__(client, prefix=prefix, retry_interval=0.0)

    def _now_ms(self) -> int:  # type: ignore[override]  # RedisStore reads it if set
        return self.clock.ms

    def _acquire_args(
        self, threshold: int, cooldown_ms: int, rules: Any = None, batch: Any = None
    ) -> list[Any]:
        args = super()._acquire_args(threshold, cooldown_ms, rules, batch)
        args[2] = LEASE_MS  # a RedisStore caps it at the cooldown: not here (see above)
        return args


def grid(low: int, high: int) -> st.SearchStrategy[int]:
    """Milliseconds: multiples of GRID_MS from low to high (both in GRID_MS units)."""
    return st.integers(low, high).map(lambda k: k * GRID_MS)


@st.composite
def configs(draw: st.DrawFn) -> CircuitBreakerConfig:
    cooldown = draw(st.integers(0, 8)) * 2 * GRID_MS  # 0 to 2 s, multiples of 250 ms
    cap = draw(st.none() | st.integers(0, 8).map(lambda k: cooldown + k * 2 * GRID_MS))
    return CircuitBreakerConfig(
        failure_threshold=draw(st.integers(1, 3)),
        cooldown_ms=cooldown,
        cooldown_multiplier=draw(st.sampled_from([1.0, 2.0, 3.0])),
        max_cooldown_ms=cap,
        cooldown_reset_ms=draw(st.none() | grid(0, 64)),
        failure_rate=draw(st.none() | st.sampled_from([0.25, 0.5, 0.6, 1.0])),
        window_ms=draw(st.sampled_from([1000, 2000, 2500, 5000])),
        minimum_calls=draw(st.integers(1, 6)),
        slow_call_ms=draw(st.none() | st.just(SLOW_MS)),
        half_open_calls=draw(st.integers(1, 3)),
    )


# The slow-call threshold the configs draw, and how long a ``slow`` verdict's call took.
SLOW_MS = 500
SLOW_ELAPSED = 1.0


# A failure's Retry-After, in seconds (exact: multiples of 1/8 s), or none.
retry_afters = st.none() | grid(0, 80).map(lambda ms: ms / 1000.0)


# Failures and successes twice as likely as releases and slow calls, so that histories
# reach OPEN and HALF_OPEN often.
verdicts = st.sampled_from(["failure", "success", "failure", "release", "success", "slow"])


def report(
    breaker: CircuitBreaker, ticket: int, verdict: str, retry_after: float | None
) -> CircuitState:
    """The breaker's answer to a report: the state after it."""
    if verdict == "success":
        return breaker.record_success(ticket)
    if verdict == "slow":  # a slow call with slow_call_ms, else a plain success
        return breaker.record_success(ticket, SLOW_ELAPSED)
    if verdict == "failure":
        return breaker.record_failure(ticket, retry_after)
    return breaker.release(ticket)


def kind(ticket: int) -> str:
    if ticket == REJECTED:
        return "rejected"
    return "probe" if ticket % 2 else "ordinary"


NAMES = itertools.count()  # a breaker of its own per history


class Differential(RuleBasedStateMachine):
    """One history: a memory breaker and a Redis breaker, fed the same steps.

    ``clock`` and ``store`` are set on a subclass per test (the ``machine`` fixture).
    """

    clock: Clock
    store: ClockedStore

    tickets: Bundle[tuple[int, int]] = Bundle("tickets")  # (memory's, store's), paired

    @initialize(config=configs())
    def build(self, config: CircuitBreakerConfig) -> None:
        self.clock.ms = START_MS
        self.latest: tuple[int, int] | None = None
        self.closed_ms: int | None = None  # when a probe last closed the breaker
        self.reset_ms = round(config.cooldown_reset * 1000)
        self.events: dict[str, list[Any]] = {"memory": [], "redis": [], "store": []}
        self.memory = CircuitBreaker(
            config,
            name="memory",
            clock=self.clock.seconds,
            rand=lambda: 0.5,
            hooks=(self._collect("memory"),),
        )
        self.shared = CircuitBreaker(
            config,
            name=f"differential-{next(NAMES)}",
            clock=self.clock.seconds,
            rand=lambda: 0.5,
            store=self.store,
            hooks=(self._collect("redis"),),
        )
        assert isinstance(self.shared, SharedCircuitBreaker)

    def _collect(self, side: str) -> Any:
        def hook(event: Event) -> None:  # (emit() logs what a hook raises: record only)
            if isinstance(event, StateChanged):
                self.events[side].append((event.old, event.new, event.reason))
                if side == "memory" and (event.old, event.new) == (HALF_OPEN, CLOSED):
                    self.closed_ms = self.clock.ms
            else:  # StoreUnavailable & co: the store must answer every call here
                self.events["store"].append(event)

        return hook

    # -- admissions ------------------------------------------------------------------

    def _admit(self) -> tuple[int, int] | None:
        mine, mine_wait = self.memory.admit()
        theirs, their_wait = self.shared.admit()
        assert theirs == REJECTED or theirs >= 0, f"a local fallback ticket: {theirs}"
        assert kind(theirs) == kind(mine), (mine, theirs)
        assert abs(their_wait - mine_wait) <= TOLERANCE, (mine_wait, their_wait)
        if mine == REJECTED:
            return None
        self.latest = (mine, theirs)
        return self.latest

    @rule(target=tickets)
    def admit(self) -> Any:
        pair = self._admit()
        return multiple() if pair is None else pair

    @rule(target=tickets)
    def admit_two_at_once(self) -> Any:
        """Two callers at once (two probes asked for in HALF_OPEN, say)."""
        pairs = [self._admit(), self._admit()]
        return multiple(*[p for p in pairs if p is not None])

    # -- reports, of any ticket ever handed out ------------------------------------------

    def _report(self, pair: tuple[int, int], verdict: str, retry_after: float | None) -> None:
        mine = report(self.memory, pair[0], verdict, retry_after)
        assert report(self.shared, pair[1], verdict, retry_after) == mine

    @rule(pair=tickets, verdict=verdicts, retry_after=retry_afters)
    def report(self, pair: tuple[int, int], verdict: str, retry_after: float | None) -> None:
        """Any ticket: stale, reported before, out of order."""
        self._report(pair, verdict, retry_after)

    @rule(verdict=verdicts, retry_after=retry_afters)
    def report_the_latest(self, verdict: str, retry_after: float | None) -> None:
        """The ticket handed out last (the common case: a call reports as it ends)."""
        if self.latest is not None:
            self._report(self.latest, verdict, retry_after)

    @rule(verdict=verdicts, retry_after=retry_afters)
    def report_ticket_zero(self, verdict: str, retry_after: float | None) -> None:
        """Ticket 0: an ordinary call of the current CLOSED period."""
        self._report((0, 0), verdict, retry_after)

    # -- manual control ----------------------------------------------------------------

    @rule(action=st.sampled_from(["reset", "force_open"]), cooldown_ms=st.none() | grid(0, 40))
    def manual(self, action: str, cooldown_ms: int | None) -> None:
        """``reset()``, or ``force_open(cooldown_ms)`` (None: the configured cooldown)."""
        if action == "reset":
            self.closed_ms = None  # a reset forgets the grown open time, and this with it
            self.memory.reset()
            self.shared.reset()
        else:
            self.memory.force_open(cooldown_ms)
            self.shared.force_open(cooldown_ms)

    # -- the clock ---------------------------------------------------------------------

    @rule(ms=grid(0, 16) | grid(0, 480))
    def wait(self, ms: int) -> None:
        self.clock.ms += ms

    @rule(before=st.booleans())
    def wait_for_the_cooldown(self, before: bool) -> None:
        """Onto the cooldown's end exactly (or one grid step before it)."""
        left = round(self.memory.retry_after * 1000)
        assert left % GRID_MS == 0, left  # every open time is on the grid
        self.clock.ms += max(0, left - GRID_MS) if before else left

    @rule(before=st.booleans())
    def wait_for_the_cooldown_reset(self, before: bool) -> None:
        """Onto the moment the breaker has been CLOSED ``cooldown_reset`` since a probe
        closed it (a trip from then on starts again from the plain cooldown), or one
        grid step before it."""
        if self.closed_ms is None:
            return
        left = self.closed_ms + self.reset_ms - self.clock.ms
        self.clock.ms += max(0, left - GRID_MS if before else left)

    # -- after every step --------------------------------------------------------------

    @invariant()
    def same_state(self) -> None:
        memory, shared = self.memory, self.shared
        snap = shared.snapshot()  # one read: sends the batched successes first
        assert snap.state == memory.state
        assert snap.failures == memory.failure_count
        assert abs(snap.retry_after - memory.retry_after) <= TOLERANCE
        assert shared.window == memory.window
        assert shared.reason == memory.reason
        assert self.events["redis"] == self.events["memory"]
        assert not self.events["store"], "the store failed: no comparison is possible"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def machine(redis_client: redis.Redis, redis_prefix: str) -> type[Differential]:
    """:class:`Differential` on a clock of its own and a store under this test's prefix."""
    clock = Clock()
    store = ClockedStore(redis_client, clock, prefix=redis_prefix)
    return type("Differential", (Differential,), {"clock": clock, "store": store})


def test_the_lua_scripts_decide_as_the_memory_breaker_does(machine: type[Differential]) -> None:
    run_state_machine_as_test(machine, settings=SETTINGS)


# -- the edges, replayed as written ---------------------------------------------------------

# Histories that random ones reach only rarely, replayed on the machine above with its
# checks after every step.  A step: "admit"; "success N", "failure N [retry_after]",
# "release N" (N: the ticket's place among those handed out); "reset"; "force_open";
# "slow N" (a success that took SLOW_ELAPSED); "wait MS"; "to the cooldown's end" /
# "before the cooldown's end" (one grid step before); "to the cooldown reset" / "before
# the cooldown reset".
ADAPTIVE = CircuitBreakerConfig(
    failure_threshold=1,
    cooldown_ms=1000,
    cooldown_multiplier=2.0,
    max_cooldown_ms=4000,
    cooldown_reset_ms=2000,
)
PLAIN = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1000)
RATE = CircuitBreakerConfig(failure_rate=0.5, window_ms=1000, minimum_calls=2, cooldown_ms=500)
PROBES = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=500, half_open_calls=3)
# A failed probe (growth 1: open 1.5 s), then a probe that closes the breaker.
GROWN_THEN_CLOSED = (
    "admit; failure 0; to the cooldown's end; admit; failure 1; to the cooldown's end; "
    "admit; success 2"
)
HISTORIES = {
    "a trip exactly cooldown_reset after the close starts from the plain cooldown": (
        ADAPTIVE,
        f"{GROWN_THEN_CLOSED}; to the cooldown reset; admit; failure 3",
    ),
    "a trip just before it keeps the grown open time": (
        ADAPTIVE,
        f"{GROWN_THEN_CLOSED}; before the cooldown reset; admit; failure 3",
    ),
    "a call exactly at the cooldown's end is the probe, one step before it is rejected": (
        PLAIN,
        "admit; failure 0; before the cooldown's end; admit; to the cooldown's end; admit; admit",
    ),
    "a probe that gave its lease back reports nothing (success)": (
        PLAIN,
        "admit; failure 0; to the cooldown's end; admit; release 1; success 1",
    ),
    "a probe that gave its lease back reports nothing (failure)": (
        PLAIN,
        "admit; failure 0; to the cooldown's end; admit; release 1; failure 1 4.0; admit",
    ),
    "tickets from before a forced opening and a reset report nothing": (
        CircuitBreakerConfig(failure_threshold=2, cooldown_ms=500),
        "admit; force_open; to the cooldown's end; admit; reset; success 1; failure 0; failure 1",
    ),
    # Off the grid on purpose: open 1.5 ms (1 + 0.5 * (2 - 1)), which the store keeps as
    # whole milliseconds - rounded up, so that it never admits a probe the machine would
    # reject (0.5 ms early).
    "a jittered open time in fractions of a millisecond is rounded up": (
        CircuitBreakerConfig(
            failure_threshold=1, cooldown_ms=1, cooldown_multiplier=2.0, max_cooldown_ms=100
        ),
        "admit; failure 0; wait 1; admit; failure 1; wait 1; admit; wait 1; admit",
    ),
    # The trip rules (windows of 1 s: buckets of 100 ms; the clock starts on a bucket's edge).
    "an old failure falls out of the window: no trip": (
        RATE,
        "admit; failure 0; wait 1000; admit; failure 1",
    ),
    "a failure still in the window trips": (
        RATE,
        "admit; failure 0; wait 875; admit; failure 1",
    ),
    "below minimum_calls no trip, exactly at the rate a trip": (
        CircuitBreakerConfig(failure_rate=0.5, window_ms=1000, minimum_calls=4, cooldown_ms=500),
        "admit; failure 0; admit; failure 1; admit; success 2; admit; success 3; admit; "
        "success 4; admit; failure 5",
    ),
    "a slow success is a failure (the consecutive rule)": (
        CircuitBreakerConfig(failure_threshold=2, slow_call_ms=SLOW_MS, cooldown_ms=500),
        "admit; slow 0; admit; success 1; admit; slow 2; admit; slow 3",
    ),
    "probes report out of order; one gives its permit back; three successes close": (
        PROBES,
        "admit; failure 0; to the cooldown's end; admit; admit; admit; admit; success 3; "
        "release 2; admit; success 1; success 4; success 2",
    ),
    "a failed probe re-opens; the other probes of its round report nothing": (
        PROBES,
        "admit; failure 0; to the cooldown's end; admit; admit; failure 2; success 1; admit",
    ),
    "a Retry-After hold stops at max_cooldown_ms": (
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=250, max_cooldown_ms=1000),
        "admit; failure 0 5.0; wait 875; admit; wait 125; admit",
    ),
}


# Where some of them must end (state, reason), beside being the same on both sides.
ENDS = {
    "an old failure falls out of the window: no trip": (CLOSED, ""),
    "a failure still in the window trips": (OPEN, "failure rate 1.00 over 2 calls"),
    "below minimum_calls no trip, exactly at the rate a trip": (
        OPEN,
        "failure rate 0.50 over 6 calls",
    ),
    "a slow success is a failure (the consecutive rule)": (OPEN, "slow calls"),
    "probes report out of order; one gives its permit back; three successes close": (
        CLOSED,
        "",  # closed: the opening's reason goes with it
    ),
    "a failed probe re-opens; the other probes of its round report nothing": (
        OPEN,
        "probe failed",
    ),
}


def replay(state: Differential, steps: str) -> None:
    held: list[tuple[int, int]] = []
    for step in steps.split("; "):
        state.same_state()
        verb, *args = step.split(" ")
        if verb == "admit":
            pair = state._admit()
            if pair is not None:
                held.append(pair)
        elif verb in ("success", "failure", "release", "slow"):
            retry_after = float(args[1]) if len(args) > 1 else None
            state.report(held[int(args[0])], verb, retry_after)
        elif verb in ("reset", "force_open"):
            state.manual(verb, None)
        elif verb == "wait":
            state.wait(int(args[0]))
        elif step.endswith("cooldown's end"):
            state.wait_for_the_cooldown(before=verb == "before")
        else:
            assert step.endswith("cooldown reset"), step
            state.wait_for_the_cooldown_reset(before=verb == "before")
    state.same_state()


@pytest.mark.parametrize("history", list(HISTORIES))
def test_histories_at_the_edges(machine: type[Differential], history: str) -> None:
    config, steps = HISTORIES[history]
    state = machine()
    state.build(config)
    replay(state, steps)
    if history in ENDS:
        assert (state.shared.state, state.shared.reason) == ENDS[history]
    state.teardown()


# -- the local cache in the loop (issue 14) ---------------------------------------------------


def test_the_local_cache_answers_as_the_memory_breaker_does(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    """The same property, counting how often the shared breaker's ``admit`` was answered
    from its last clean reply (the watcher's clean ticket or the sync_interval fallback)
    rather than by the store: the comparison holds with the cache deciding, and it did."""
    clock = Clock()
    asked = [0, 0]  # store acquires, shared admits

    class CountingStore(ClockedStore):
        def acquire(self, *args: Any, **kwargs: Any) -> Any:
            asked[0] += 1
            return super().acquire(*args, **kwargs)

    class Counted(Differential):
        def _admit(self) -> tuple[int, int] | None:
            asked[1] += 1
            return super()._admit()

    Counted.clock = clock
    Counted.store = CountingStore(redis_client, clock, prefix=redis_prefix)
    few = settings(SETTINGS, max_examples=100)
    run_state_machine_as_test(Counted, settings=few)
    assert asked[0] < asked[1], asked  # some admissions never reached the store
