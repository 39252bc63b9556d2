"""Adaptive open time: the breaker's cooldown grows while probes fail, on an injected clock.

Issue 6, part 3.  With ``cooldown_multiplier > 1`` the ``k``-th consecutive
failed probe re-opens the breaker for ``cooldown + rand() * (grown -
cooldown)`` seconds, ``grown = min(max_cooldown, cooldown * multiplier**k)``.
A trip from CLOSED opens for the plain cooldown when the breaker had stayed
CLOSED for at least ``cooldown_reset`` since it last closed; sooner, it keeps
the level it had reached.  ``reset()`` forgets the growth.  A failure that
opens the breaker and carries ``Retry-After`` holds it open at least that
long, capped at ``max_cooldown``.  Defaults (multiplier 1) are the plain
breaker, exactly.

Every sequence runs on a :class:`~smoothapi.testing.FakeClock` with ``rand``
fixed, so every open time is an exact figure.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    ConfigTypeError,
    Event,
    ResilientConfig,
    ResilientTransport,
    StateChanged,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.storage import Admission, Report, SharedCircuitBreaker, Snapshot
from smoothapi.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
NAN, INF = float("nan"), float("inf")
ONE_DAY_MS = 86_400_000

#: 1 s cooldown, doubling, capped at 8 s (so cooldown_reset defaults to 8 s).
GROWS: dict[str, Any] = {"cooldown_ms": 1000, "cooldown_multiplier": 2, "max_cooldown_ms": 8000}


def const(value: float) -> Callable[[], float]:
    """A rand() that always returns ``value``."""
    return lambda: value


def never() -> float:
    """A rand() that must not be called."""
    raise AssertionError("rand() was called although the open time cannot grow")


def make(
    rand: Callable[[], float] = never, threshold: int = 1, **config: Any
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock(start=1_000.0)
    cfg = CircuitBreakerConfig(failure_threshold=threshold, **config)
    return CircuitBreaker(cfg, name="svc", clock=clock, rand=rand), clock


# -- the sequence driver -----------------------------------------------------------------------
#
# Steps:
#   "trip" [ra=S]         failure_threshold failed ordinary calls (the last with Retry-After S):
#                         the breaker must open
#   "probe_fails" [ra=S]  wait out the open time, claim the probe, report its failure (with
#                         Retry-After S): the breaker must re-open
#   "probe_ok"            wait out the open time, claim the probe, report its success: CLOSED
#   "wait=S"              move the clock S seconds
#   "reset"               breaker.reset()
# Every step that opens the breaker records how long it is open (breaker.retry_after right
# after opening); the scenario lists those open times.


@dataclass
class Driver:
    breaker: CircuitBreaker
    clock: FakeClock
    opened: list[float] = field(default_factory=list)

    def run(self, steps: list[str]) -> list[float]:
        for step in steps:
            self.do(step)
        return self.opened

    def do(self, step: str) -> None:
        verb, _, rest = step.partition(" ")
        retry_after = float(rest.removeprefix("ra=")) if rest else None
        br = self.breaker
        if verb == "trip":
            assert br.state is CLOSED
            for n in range(br.config.failure_threshold):
                last = n == br.config.failure_threshold - 1
                br.record_failure(br.acquire(), retry_after if last else None)
            self._opened()
        elif verb == "probe_fails":
            br.record_failure(self._probe(), retry_after)
            self._opened()
        elif verb == "probe_ok":
            assert br.record_success(self._probe()) is CLOSED
        elif verb.startswith("wait="):
            self.clock.advance(float(verb.removeprefix("wait=")))
        elif verb == "reset":
            br.reset()
        else:  # pragma: no cover - a typo in a table
            raise AssertionError(f"unknown step {step!r}")

    def _probe(self) -> int:
        """Wait out the open time exactly, checking it is enforced, and claim the probe."""
        br = self.breaker
        open_for = br.retry_after
        self.clock.advance(open_for / 2)
        assert br.acquire() == REJECTED, "the breaker let a call through before its open time"
        self.clock.advance(open_for - open_for / 2)
        ticket = br.acquire()
        if ticket == REJECTED:  # float noise of clock + open time (random open times)
            assert br.retry_after < 1e-9
            self.clock.advance(1e-9)
            ticket = br.acquire()
        assert ticket > 0, "no probe once the open time had passed"
        assert ticket % 2 == 1
        assert br.state is HALF_OPEN
        return ticket

    def _opened(self) -> None:
        br = self.breaker
        assert br.state is OPEN
        open_for = br.retry_after
        # The rejection error carries the same figure the breaker holds.
        with pytest.raises(CircuitOpenError) as info:
            br.check()
        assert info.value.retry_after == open_for
        self.opened.append(open_for)


def run(steps: list[str], rand: Callable[[], float] = never, **config: Any) -> list[float]:
    breaker, clock = make(rand, **config)
    return Driver(breaker, clock).run(steps)


FAILING = ["trip", *["probe_fails"] * 5]

# (rule, config, rand, steps, open times in seconds)
GROWTH: list[tuple[str, dict[str, Any], Callable[[], float], list[str], list[float]]] = [
    (
        "rand=1.0: each failed probe multiplies the open time, up to max_cooldown",
        GROWS,
        const(1.0),
        FAILING,
        [1, 2, 4, 8, 8, 8],
    ),
    (
        "rand=0.0: full jitter never goes below the configured cooldown",
        GROWS,
        const(0.0),
        FAILING,
        [1, 1, 1, 1, 1, 1],
    ),
    (
        "rand=0.5: halfway between the cooldown and the grown bound",
        GROWS,
        const(0.5),
        FAILING,
        [1, 1.5, 2.5, 4.5, 4.5, 4.5],
    ),
    (
        "a fractional multiplier grows by powers of itself until the cap",
        {**GROWS, "cooldown_multiplier": 1.5},
        const(1.0),
        ["trip", *["probe_fails"] * 6],
        [1, 1.5, 2.25, 3.375, 5.0625, 7.59375, 8],
    ),
    (
        "max_cooldown_ms=None caps the growth at 16 x cooldown",
        {"cooldown_ms": 1000, "cooldown_multiplier": 3},
        const(1.0),
        FAILING,
        [1, 3, 9, 16, 16, 16],
    ),
    (
        "max_cooldown_ms equal to cooldown_ms means no growth at all",
        {"cooldown_ms": 1000, "cooldown_multiplier": 2, "max_cooldown_ms": 1000},
        never,
        FAILING,
        [1, 1, 1, 1, 1, 1],
    ),
    (
        "a rand() outside [0, 1) is clamped: never above the grown bound",
        GROWS,
        const(7.0),
        ["trip", "probe_fails", "probe_fails"],
        [1, 2, 4],
    ),
    (
        "a rand() outside [0, 1) is clamped: never below the cooldown",
        GROWS,
        const(-3.0),
        ["trip", "probe_fails", "probe_fails"],
        [1, 1, 1],
    ),
    (
        "a rand() that returns NaN reads as 0: the plain cooldown",
        GROWS,
        const(NAN),
        ["trip", "probe_fails"],
        [1, 1],
    ),
]

DECAY: list[tuple[str, dict[str, Any], Callable[[], float], list[str], list[float]]] = [
    (
        "CLOSED for cooldown_reset (default: max_cooldown, 8 s) decays back to the cooldown",
        GROWS,
        const(1.0),
        ["trip", "probe_fails", "probe_fails", "probe_ok", "wait=8", "trip", "probe_fails"],
        [1, 2, 4, 1, 2],
    ),
    (
        "CLOSED for longer than cooldown_reset decays back too",
        GROWS,
        const(1.0),
        ["trip", "probe_fails", "probe_fails", "probe_fails", "probe_ok", "wait=3600", "trip"],
        [1, 2, 4, 8, 1],
    ),
    (
        "re-tripping sooner than cooldown_reset keeps the level reached, and growth continues",
        GROWS,
        const(1.0),
        [
            "trip",
            "probe_fails",
            "probe_fails",
            "probe_ok",
            "wait=7.5",
            "trip",
            "probe_fails",
            "probe_ok",
            "trip",
        ],
        [1, 2, 4, 4, 8, 8],
    ),
    (
        "re-tripping at once after the probe's success keeps the level (rand=0.5)",
        GROWS,
        const(0.5),
        ["trip", "probe_fails", "probe_fails", "probe_ok", "trip", "probe_fails"],
        [1, 1.5, 2.5, 2.5, 4.5],
    ),
    (
        "an explicit cooldown_reset_ms: sooner keeps the level, that long CLOSED decays",
        {**GROWS, "cooldown_reset_ms": 2000},
        const(1.0),
        [
            "trip",
            "probe_fails",
            "probe_fails",
            "probe_ok",
            "wait=1.5",
            "trip",
            "probe_ok",
            "wait=2",
            "trip",
        ],
        [1, 2, 4, 4, 1],
    ),
    (
        "cooldown_reset_ms=0: every trip from CLOSED starts from the cooldown",
        {**GROWS, "cooldown_reset_ms": 0},
        const(1.0),
        ["trip", "probe_fails", "probe_fails", "probe_ok", "trip", "probe_fails"],
        [1, 2, 4, 1, 2],
    ),
    (
        "time spent OPEN or HALF_OPEN is not a healthy period (only CLOSED time counts)",
        GROWS,
        const(1.0),
        ["trip", "probe_fails", "probe_fails", "probe_fails", "probe_fails", "probe_ok", "trip"],
        [1, 2, 4, 8, 8, 8],
    ),
    (
        "reset() while OPEN forgets the growth",
        GROWS,
        const(1.0),
        ["trip", "probe_fails", "probe_fails", "reset", "trip", "probe_fails"],
        [1, 2, 4, 1, 2],
    ),
    (
        "reset() right after a probe's success forgets the growth: the next trip is plain",
        GROWS,
        const(1.0),
        ["trip", "probe_fails", "probe_fails", "probe_ok", "reset", "trip"],
        [1, 2, 4, 1],
    ),
]

HOLD: list[tuple[str, dict[str, Any], Callable[[], float], list[str], list[float]]] = [
    (
        "Retry-After on the failure that trips the breaker holds it open that long",
        {"cooldown_ms": 1000, "max_cooldown_ms": 30_000},
        never,
        ["trip ra=5"],
        [5],
    ),
    (
        "a Retry-After longer than max_cooldown is capped at max_cooldown",
        {"cooldown_ms": 1000, "max_cooldown_ms": 30_000},
        never,
        ["trip ra=100"],
        [30],
    ),
    (
        "Retry-After on a failed probe holds it open; the hold does not carry over",
        {"cooldown_ms": 1000, "max_cooldown_ms": 30_000},
        never,
        ["trip", "probe_fails ra=12", "probe_fails"],
        [1, 12, 1],
    ),
    (
        "a Retry-After shorter than the grown open time never shortens it",
        GROWS,
        const(1.0),
        ["trip ra=0.5", "probe_fails ra=0.5", "probe_fails ra=3"],
        [1, 2, 4],
    ),
    (
        "a Retry-After longer than the grown open time extends it, up to max_cooldown",
        GROWS,
        const(0.0),
        ["trip ra=3", "probe_fails ra=6", "probe_fails ra=60"],
        [3, 6, 8],
    ),
    (
        "with the multiplier and max_cooldown_ms=None the hold is capped at 16 x cooldown",
        {"cooldown_ms": 1000, "cooldown_multiplier": 2},
        const(0.0),
        ["trip ra=100", "probe_fails ra=3"],
        [16, 3],
    ),
    (
        "defaults: the cap is the plain cooldown, so Retry-After changes nothing",
        {"cooldown_ms": 1000},
        never,
        ["trip ra=60", "probe_fails ra=5"],
        [1, 1],
    ),
    (
        "a zero, negative or NaN Retry-After is ignored; an infinite one is capped",
        {"cooldown_ms": 1000, "max_cooldown_ms": 30_000},
        never,
        ["trip ra=0", "probe_fails ra=-5", "probe_fails ra=nan", "probe_fails ra=inf"],
        [1, 1, 1, 30],
    ),
]


F = TypeVar("F", bound=Callable[..., None])


def _table(
    rows: list[tuple[str, dict[str, Any], Callable[[], float], list[str], list[float]]],
) -> Callable[[F], F]:
    return pytest.mark.parametrize(
        ("config", "rand", "steps", "expected"),
        [row[1:] for row in rows],
        ids=[row[0] for row in rows],
    )


@_table(GROWTH)
def test_each_failed_probe_grows_the_next_open_time_with_full_jitter_up_to_the_cap(
    config: dict[str, Any], rand: Callable[[], float], steps: list[str], expected: list[float]
) -> None:
    """After k failed probes: cooldown + rand() * (min(max_cooldown, cooldown*m**k) - cooldown)."""
    assert run(steps, rand, **config) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@_table(DECAY)
def test_a_healthy_period_decays_the_growth_and_a_quick_re_trip_keeps_it(
    config: dict[str, Any], rand: Callable[[], float], steps: list[str], expected: list[float]
) -> None:
    """A trip after cooldown_reset CLOSED opens for the cooldown; sooner, at the level reached."""
    assert run(steps, rand, **config) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@_table(HOLD)
def test_retry_after_holds_the_breaker_open_at_least_that_long_capped_at_max_cooldown(
    config: dict[str, Any], rand: Callable[[], float], steps: list[str], expected: list[float]
) -> None:
    """A failure opening the breaker with Retry-After S opens it max(open time, min(S, cap))."""
    assert run(steps, rand, **config) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_retry_after_counts_only_on_the_failure_that_opens_the_breaker() -> None:
    """Retry-After on failures that do not open it (below threshold, stale, while OPEN): unused."""
    breaker, clock = make(threshold=3, cooldown_ms=1000, max_cooldown_ms=30_000)
    ticket = breaker.acquire()
    assert breaker.record_failure(ticket, 100) is CLOSED
    assert breaker.record_failure(ticket, 100) is CLOSED
    assert breaker.record_failure(ticket) is OPEN
    assert breaker.retry_after == 1.0
    # A straggler admitted before the breaker opened reports with a long Retry-After.
    assert breaker.record_failure(ticket, 100) is OPEN
    assert breaker.record_failure(0, 100) is OPEN
    assert breaker.retry_after == 1.0
    clock.advance(1.0)
    assert breaker.acquire() > 0


def test_rand_is_drawn_once_per_grown_opening_and_never_when_the_open_time_cannot_grow() -> None:
    """The jitter's source is called only when the grown bound exceeds the cooldown, once."""
    calls: list[int] = []

    def counting() -> float:
        calls.append(1)
        return 1.0

    breaker, clock = make(counting, **GROWS)
    Driver(breaker, clock).run(["trip", "probe_fails ra=30", "probe_fails", "probe_ok", "trip"])
    assert len(calls) == 3  # two failed probes, and the quick re-trip at the level reached
    breaker.reset()
    Driver(breaker, clock).run(["trip"])
    assert len(calls) == 3  # a plain trip draws nothing


def test_seeded_full_jitter_stays_between_the_cooldown_and_the_grown_bound() -> None:
    """With a real (seeded) random source every open time lies in [cooldown, grown bound]."""
    rng = random.Random(6)
    breaker, clock = make(rng.random, **GROWS)
    opened = Driver(breaker, clock).run(["trip", *["probe_fails"] * 40])
    bounds = [min(8.0, 2.0**k) for k in range(len(opened))]
    assert all(1.0 <= got <= bound for got, bound in zip(opened, bounds, strict=True))
    assert len(set(opened[3:])) > 1, "the jitter should spread the capped open times"


def test_the_growth_survives_a_huge_number_of_failed_probes_without_overflow() -> None:
    """multiplier**k past float range is the cap, not an OverflowError."""
    breaker, clock = make(const(1.0), cooldown_ms=1000, cooldown_multiplier=1e300)
    opened = Driver(breaker, clock).run(["trip", "probe_fails", "probe_fails", "probe_fails"])
    assert opened == [1, 16, 16, 16]


def test_a_zero_cooldown_never_grows() -> None:
    """The growth multiplies the cooldown: from 0 ms every failed probe re-opens for 0 s."""
    breaker, _ = make(never, cooldown_ms=0, cooldown_multiplier=2, max_cooldown_ms=8000)
    assert breaker.record_failure(breaker.acquire()) is OPEN
    for _ in range(3):
        assert breaker.retry_after == 0.0
        probe = breaker.acquire()
        assert probe > 0
        assert breaker.record_failure(probe) is OPEN
    assert breaker.retry_after == 0.0


def test_events_report_every_grown_opening() -> None:
    """Each failed probe emits HALF_OPEN -> OPEN as before; the growth adds no event."""
    events: list[Event] = []
    clock = FakeClock(start=1_000.0)
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, **GROWS),
        name="svc",
        clock=clock,
        hooks=(events.append,),
        rand=const(1.0),
    )
    Driver(breaker, clock).run(["trip", "probe_fails", "probe_fails"])
    assert all(isinstance(e, StateChanged) for e in events)
    assert [(e.old, e.new) for e in events if isinstance(e, StateChanged)] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
    ]


# -- defaults: today's breaker, exactly ----------------------------------------------------------


def test_defaults_are_todays_breaker_every_opening_is_the_plain_cooldown() -> None:
    """multiplier 1 (default): trip, failed probes and quick re-trips all open for cooldown_ms."""
    breaker, clock = make(never, threshold=3)  # never() fails the test if rand is drawn
    steps = ["trip", "probe_fails", "probe_fails", "probe_ok", "trip", "probe_fails ra=60"]
    assert Driver(breaker, clock).run(steps) == [10.0] * 5
    breaker.reset()
    assert Driver(breaker, clock).run(["trip ra=3600"]) == [10.0]


def test_default_config_fields_keep_the_plain_cooldown() -> None:
    """The new fields default to off: no growth, cap and reset period equal to the cooldown."""
    cfg = CircuitBreakerConfig()
    assert (cfg.cooldown_multiplier, cfg.max_cooldown_ms, cfg.cooldown_reset_ms) == (
        1.0,
        None,
        None,
    )
    assert cfg.max_cooldown == cfg.cooldown_reset == cfg.cooldown == 10.0
    assert cfg == CircuitBreakerConfig(failure_threshold=3, cooldown_ms=10_000)
    assert CircuitBreaker().config == cfg


def test_the_default_rand_is_random_random() -> None:
    """Without rand=, a growing breaker draws from random.random (in [cooldown, grown])."""
    clock = FakeClock()
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, **GROWS), clock=clock)
    opened = Driver(breaker, clock).run(["trip", "probe_fails", "probe_fails"])
    assert opened[0] == 1.0
    assert 1.0 <= opened[1] <= 2.0
    assert 1.0 <= opened[2] <= 4.0


def test_rand_must_be_callable() -> None:
    """rand= that is not callable fails at construction with ConfigTypeError naming it."""
    with pytest.raises(ConfigTypeError, match=r"rand=\.\.\..*0\.5"):
        CircuitBreaker(rand=0.5)  # type: ignore[arg-type]


# -- the open time reaches the caller ------------------------------------------------------------


def test_a_rejected_decorated_call_carries_the_grown_open_time() -> None:
    """A decorated call's CircuitOpenError.retry_after is the grown open time, not cooldown_ms."""
    breaker, clock = make(const(1.0), **GROWS)
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=breaker.config,
    )

    @resilient_api(config, breaker=breaker)
    def call() -> str:
        raise ConnectionError("down")

    Driver(breaker, clock).run(["trip", "probe_fails", "probe_fails"])
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError) as info:
        call()
    assert info.value.retry_after == pytest.approx(3.0)


@pytest.mark.parametrize(("header", "expected"), [("20", 20.0), ("3600", 60.0)])
def test_a_503_with_retry_after_through_a_transport_holds_the_breaker_open(
    header: str, expected: float
) -> None:
    """The engine hands the response's Retry-After to the breaker it opens (capped at the max)."""
    clock = FakeClock()
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=1, cooldown_ms=1000, max_cooldown_ms=60_000
        ),
    )
    breaker = CircuitBreaker(config.circuit_breaker, name="origin", clock=clock, rand=never)
    upstream = httpx.MockTransport(
        lambda request: httpx.Response(503, headers={"Retry-After": header})
    )
    transport = ResilientTransport(config, transport=upstream, breaker=breaker)
    with httpx.Client(transport=transport) as client:
        assert client.get("http://upstream.test/").status_code == 503
    assert breaker.state is OPEN
    assert breaker.retry_after == expected


@pytest.mark.anyio
async def test_record_failure_async_takes_retry_after_too() -> None:
    """record_failure_async(ticket, retry_after) holds the breaker open like the sync method."""
    breaker, _ = make(cooldown_ms=1000, max_cooldown_ms=30_000)
    ticket = await breaker.acquire_async()
    assert await breaker.record_failure_async(ticket, retry_after=7.0) is OPEN
    assert breaker.retry_after == 7.0


# -- the Redis-shared breaker accepts the same arguments ----------------------------------------


class _DownStore:
    """A breaker store that is always unreachable: the shared breaker runs on its local one."""

    label = "down://test"
    errors: tuple[type[BaseException], ...] = (OSError,)
    retry_interval = 3600.0
    supports_sync = True

    def key(self, name: str) -> str:
        return f"down:{name}"

    def _down(self, *args: object, **kwargs: object) -> Any:
        raise OSError("store unreachable")

    async def _down_async(self, *args: object, **kwargs: object) -> Any:
        raise OSError("store unreachable")

    def acquire(self, key: str, threshold: int, cooldown_ms: int) -> Admission:
        return self._down()  # type: ignore[no-any-return]

    def record(self, *args: object, **kwargs: object) -> Report:
        return self._down()  # type: ignore[no-any-return]

    def reset(self, key: str, name: str) -> Report:
        return self._down()  # type: ignore[no-any-return]

    def force_open(self, key: str, cooldown_ms: int, name: str) -> Report:
        return self._down()  # type: ignore[no-any-return]

    def snapshot(self, key: str) -> Snapshot:
        return self._down()  # type: ignore[no-any-return]

    acquire_async = _down_async
    record_async = _down_async
    reset_async = _down_async
    force_open_async = _down_async
    snapshot_async = _down_async


@pytest.fixture
def quiet_store_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="smoothapi")


@pytest.mark.usefixtures("quiet_store_logs")
def test_shared_breaker_passes_rand_and_retry_after_to_its_local_fallback() -> None:
    """With its store down, a SharedCircuitBreaker's local breaker grows and holds as in memory."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, **GROWS),
        name="svc",
        clock=clock,
        store=_DownStore(),
        rand=const(1.0),
    )
    assert isinstance(breaker, SharedCircuitBreaker)
    assert breaker.record_failure(breaker.acquire(), retry_after=5.0) is OPEN
    assert breaker.retry_after == 5.0
    clock.advance(5.0)
    assert breaker.record_failure(breaker.acquire()) is OPEN
    assert breaker.retry_after == 2.0  # grown by the injected rand


@pytest.mark.anyio
@pytest.mark.usefixtures("quiet_store_logs")
async def test_shared_breaker_record_failure_async_takes_retry_after() -> None:
    """SharedCircuitBreaker.record_failure_async(ticket, retry_after) reaches the local breaker."""
    breaker = SharedCircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1000, max_cooldown_ms=30_000),
        clock=FakeClock(),
        store=_DownStore(),
    )
    ticket = await breaker.acquire_async()
    assert await breaker.record_failure_async(ticket, retry_after=9.0) is OPEN
    assert breaker.retry_after == 9.0


# -- configuration ------------------------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], type[Exception], str, object]] = [
    (
        "multiplier bool",
        {"cooldown_multiplier": True},
        ConfigTypeError,
        "cooldown_multiplier",
        True,
    ),
    ("multiplier str", {"cooldown_multiplier": "2"}, ConfigTypeError, "cooldown_multiplier", "2"),
    (
        "multiplier None",
        {"cooldown_multiplier": None},
        ConfigTypeError,
        "cooldown_multiplier",
        None,
    ),
    ("multiplier < 1", {"cooldown_multiplier": 0.5}, ConfigError, "cooldown_multiplier", 0.5),
    ("multiplier 0", {"cooldown_multiplier": 0}, ConfigError, "cooldown_multiplier", 0),
    ("multiplier negative", {"cooldown_multiplier": -2}, ConfigError, "cooldown_multiplier", -2),
    ("multiplier nan", {"cooldown_multiplier": NAN}, ConfigError, "cooldown_multiplier", NAN),
    ("multiplier inf", {"cooldown_multiplier": INF}, ConfigError, "cooldown_multiplier", INF),
    (
        "multiplier int beyond float",
        {"cooldown_multiplier": 10**400},
        ConfigError,
        "cooldown_multiplier",
        10**400,
    ),
    ("max bool", {"max_cooldown_ms": False}, ConfigTypeError, "max_cooldown_ms", False),
    ("max str", {"max_cooldown_ms": "60000"}, ConfigTypeError, "max_cooldown_ms", "60000"),
    ("max negative", {"max_cooldown_ms": -1}, ConfigError, "max_cooldown_ms", -1),
    ("max nan", {"max_cooldown_ms": NAN}, ConfigError, "max_cooldown_ms", NAN),
    ("max inf", {"max_cooldown_ms": INF}, ConfigError, "max_cooldown_ms", INF),
    (
        "max over one day",
        {"max_cooldown_ms": ONE_DAY_MS + 1},
        ConfigError,
        "max_cooldown_ms",
        ONE_DAY_MS + 1,
    ),
    (
        "max below cooldown_ms",
        {"cooldown_ms": 10_000, "max_cooldown_ms": 9_999},
        ConfigError,
        "max_cooldown_ms",
        9_999,
    ),
    ("reset bool", {"cooldown_reset_ms": True}, ConfigTypeError, "cooldown_reset_ms", True),
    ("reset str", {"cooldown_reset_ms": "1"}, ConfigTypeError, "cooldown_reset_ms", "1"),
    ("reset negative", {"cooldown_reset_ms": -0.5}, ConfigError, "cooldown_reset_ms", -0.5),
    ("reset nan", {"cooldown_reset_ms": NAN}, ConfigError, "cooldown_reset_ms", NAN),
    ("reset inf", {"cooldown_reset_ms": INF}, ConfigError, "cooldown_reset_ms", INF),
    (
        "reset over one day",
        {"cooldown_reset_ms": ONE_DAY_MS + 1},
        ConfigError,
        "cooldown_reset_ms",
        ONE_DAY_MS + 1,
    ),
    (
        "reset int beyond float",
        {"cooldown_reset_ms": 10**400},
        ConfigError,
        "cooldown_reset_ms",
        10**400,
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "name", "value"),
    [row[1:] for row in BAD],
    ids=[row[0] for row in BAD],
)
def test_a_bad_adaptive_value_fails_at_construction_naming_the_field_and_the_value(
    kwargs: dict[str, Any], error: type[Exception], name: str, value: object
) -> None:
    """Each bad value raises ConfigError (ValueError) or ConfigTypeError (TypeError) naming both."""
    with pytest.raises(error) as info:
        CircuitBreakerConfig(**kwargs)
    assert type(info.value) is error
    message = str(info.value)
    assert f"CircuitBreakerConfig.{name}" in message
    assert repr(value) in message


def test_max_below_cooldown_names_both_fields_and_values() -> None:
    """max_cooldown_ms < cooldown_ms shows both fields and both values."""
    with pytest.raises(ConfigError) as info:
        CircuitBreakerConfig(cooldown_ms=10_000, max_cooldown_ms=9_999)
    message = str(info.value)
    assert "max_cooldown_ms (9999)" in message
    assert "cooldown_ms (10000)" in message


def test_a_bad_value_fails_through_dataclasses_replace_too() -> None:
    """dataclasses.replace() re-validates the new fields."""
    import dataclasses  # noqa: PLC0415 - only here

    cfg = CircuitBreakerConfig(**GROWS)
    with pytest.raises(ConfigError, match="cooldown_multiplier"):
        dataclasses.replace(cfg, cooldown_multiplier=0.9)
    with pytest.raises(ConfigError, match="max_cooldown_ms"):
        dataclasses.replace(cfg, cooldown_ms=9_000)


# (rule, config, (cooldown_multiplier, max_cooldown s, cooldown_reset s))
ACCEPTED: list[tuple[str, dict[str, Any], tuple[float, float, float]]] = [
    ("int multiplier becomes a float", {"cooldown_multiplier": 2}, (2.0, 160.0, 160.0)),
    ("multiplier exactly 1 is no growth", {"cooldown_multiplier": 1}, (1.0, 10.0, 10.0)),
    (
        "max_cooldown_ms may equal cooldown_ms",
        {"cooldown_multiplier": 2, "max_cooldown_ms": 10_000},
        (2.0, 10.0, 10.0),
    ),
    (
        "max_cooldown_ms may be one day",
        {"cooldown_multiplier": 2, "max_cooldown_ms": ONE_DAY_MS},
        (2.0, 86_400.0, 86_400.0),
    ),
    (
        "max_cooldown_ms without growth caps only the Retry-After hold",
        {"max_cooldown_ms": 60_000},
        (1.0, 60.0, 60.0),
    ),
    (
        "cooldown_reset_ms may be 0",
        {"cooldown_multiplier": 2, "cooldown_reset_ms": 0},
        (2.0, 160.0, 0.0),
    ),
    (
        "cooldown_reset_ms may be one day",
        {"cooldown_multiplier": 2, "cooldown_reset_ms": ONE_DAY_MS},
        (2.0, 160.0, 86_400.0),
    ),
    (
        "the default 16x cap never passes one day",
        {"cooldown_ms": 7_200_000, "cooldown_multiplier": 2},
        (2.0, 86_400.0, 86_400.0),
    ),
    (
        "the default cap is never below a cooldown longer than a day",
        {"cooldown_ms": 2 * ONE_DAY_MS, "cooldown_multiplier": 2},
        (2.0, 172_800.0, 172_800.0),
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [row[1:] for row in ACCEPTED],
    ids=[row[0] for row in ACCEPTED],
)
def test_accepted_values_and_the_derived_cap_and_reset_period(
    kwargs: dict[str, Any], expected: tuple[float, float, float]
) -> None:
    """Boundary values are valid; max_cooldown and cooldown_reset (seconds) follow the defaults."""
    cfg = CircuitBreakerConfig(**kwargs)
    assert (cfg.cooldown_multiplier, cfg.max_cooldown, cfg.cooldown_reset) == expected
    assert type(cfg.cooldown_multiplier) is float
    assert cfg.max_cooldown_ms is None or type(cfg.max_cooldown_ms) is float
    assert cfg.cooldown_reset_ms is None or type(cfg.cooldown_reset_ms) is float
    assert math.isfinite(cfg.max_cooldown)
