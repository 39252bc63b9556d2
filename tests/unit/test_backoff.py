"""Backoff arithmetic: next_delay per jitter mode, with an injected random source.

DESIGN.md: "Delay before retry n (n = 0, 1, ...) with full jitter:
uniform(0, min(max_delay, base_delay * 2**n)). Other jitter modes (equal,
decorrelated, none) are options, full is the default."

Tables in the style of urllib3's test_retry.py: one (n, expected) chain per
mode, with ``rand`` pinned to 0.0, 0.5 and 0.999999.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

import smoothapi.flow
from smoothapi import BackoffConfig, CircuitBreakerConfig, Jitter, ResilientConfig, resilient_api
from smoothapi.backoff import capped_exponential, next_delay
from smoothapi.events import RetryScheduled
from smoothapi.testing import FakeClock, set_testing

ALMOST_ONE = 0.999999


def const(value: float) -> Callable[[], float]:
    return lambda: value


def cfg(jitter: str, base: float = 1.0, cap: float = 30.0) -> BackoffConfig:
    return BackoffConfig(base_delay=base, max_delay=cap, max_retries=10, jitter=jitter)


# cap(n) = min(30, 1 * 2**n): 1, 2, 4, 8, 16, 30 (not 32), 30, ...
CAPS = [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (6, 30.0), (20, 30.0)]


@pytest.mark.parametrize(("n", "expected"), CAPS)
def test_capped_exponential_is_min_of_max_delay_and_base_times_two_to_the_n(
    n: int, expected: float
) -> None:
    """capped_exponential(n) == min(max_delay, base_delay * 2**n)."""
    assert capped_exponential(n, 1.0, 30.0) == expected


# -- full jitter (the default): rand * cap(n) --------------------------------------------------

FULL_TABLE = [
    # rand, [(n, expected), ...]
    (0.0, [(0, 0.0), (1, 0.0), (5, 0.0), (50, 0.0)]),
    (
        0.5,
        [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 15.0), (6, 15.0), (30, 15.0)],
    ),
    (
        ALMOST_ONE,
        [
            (0, 1.0 * ALMOST_ONE),
            (1, 2.0 * ALMOST_ONE),
            (2, 4.0 * ALMOST_ONE),
            (3, 8.0 * ALMOST_ONE),
            (4, 16.0 * ALMOST_ONE),
            (5, 30.0 * ALMOST_ONE),
            (9, 30.0 * ALMOST_ONE),
        ],
    ),
]


@pytest.mark.parametrize(
    ("rand", "n", "expected"),
    [(r, n, e) for r, chain in FULL_TABLE for n, e in chain],
)
def test_full_jitter_is_rand_times_capped_exponential(rand: float, n: int, expected: float) -> None:
    """Full jitter: delay(n) = rand * min(max_delay, base_delay * 2**n)."""
    assert next_delay(n, cfg("full"), rand=const(rand)) == pytest.approx(expected, rel=1e-12)


def test_full_jitter_applies_the_cap_before_the_jitter() -> None:
    """The cap applies BEFORE the jitter: rand 0.5 at n=5 gives 0.5 * 30 = 15, not min(30, 16)."""
    delay = next_delay(5, cfg("full"), rand=const(0.5))
    assert delay == pytest.approx(15.0)
    assert delay != pytest.approx(min(30.0, 0.5 * 32.0))


def test_full_jitter_is_the_default_mode() -> None:
    """A BackoffConfig without jitter= uses full jitter (rand 0 gives a zero delay)."""
    config = BackoffConfig(base_delay=1.0, max_delay=30.0)
    assert next_delay(3, config, rand=const(0.0)) == 0.0
    assert next_delay(3, config, rand=const(0.5)) == pytest.approx(4.0)


def test_full_jitter_with_the_real_random_source_stays_in_zero_to_cap() -> None:
    """With the default random source every full-jitter delay lies in [0, cap(n)]."""
    config = cfg("full")
    for n in range(12):
        cap = min(30.0, 2.0**n)
        draws = [next_delay(n, config) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert len(set(draws)) > 1, "the default source must actually be random"


# -- equal jitter: cap/2 + rand * cap/2 --------------------------------------------------------

EQUAL_TABLE = [
    (0.0, [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 15.0), (12, 15.0)]),
    (0.5, [(0, 0.75), (1, 1.5), (2, 3.0), (3, 6.0), (4, 12.0), (5, 22.5), (12, 22.5)]),
    (
        ALMOST_ONE,
        [(0, 0.9999995), (1, 1.999999), (4, 15.999992), (5, 29.999985), (12, 29.999985)],
    ),
]


@pytest.mark.parametrize(
    ("rand", "n", "expected"),
    [(r, n, e) for r, chain in EQUAL_TABLE for n, e in chain],
)
def test_equal_jitter_is_half_the_cap_plus_rand_times_half_the_cap(
    rand: float, n: int, expected: float
) -> None:
    """Equal jitter: delay(n) = cap(n)/2 + rand * cap(n)/2, so never below half the cap."""
    assert next_delay(n, cfg("equal"), rand=const(rand)) == pytest.approx(expected, rel=1e-9)


# -- none: the capped exponential itself -------------------------------------------------------

SEED_DEFAULT_CHAIN = [
    (0, 0.1),
    (1, 0.2),
    (2, 0.4),
    (3, 0.8),
    (4, 1.6),
    (5, 3.2),
    (6, 6.4),
    (7, 12.8),
    (8, 25.6),
    (9, 30.0),
    (10, 30.0),
]


@pytest.mark.parametrize(("n", "expected"), SEED_DEFAULT_CHAIN)
@pytest.mark.parametrize("rand", [0.0, 0.5, ALMOST_ONE])
def test_no_jitter_is_the_capped_exponential_whatever_rand_returns(
    rand: float, n: int, expected: float
) -> None:
    """jitter="none" with the seed's 0.1 s / 30 s: 0.1, 0.2, 0.4, ... 25.6, 30, 30."""
    config = BackoffConfig(jitter="none")
    assert next_delay(n, config, rand=const(rand)) == pytest.approx(expected, rel=1e-12)


# -- decorrelated: min(max, uniform(base, 3 * previous)), previous starts at base --------------

DECORRELATED_TABLE = [
    (0.0, [1.0, 1.0, 1.0, 1.0]),
    (0.5, [2.0, 3.5, 5.75, 9.125, 14.1875, 21.78125, 30.0, 30.0]),
    (ALMOST_ONE, [3.0, 9.0, 27.0, 30.0, 30.0]),
]


@pytest.mark.parametrize(("rand", "chain"), DECORRELATED_TABLE)
def test_decorrelated_jitter_chains_on_the_previous_delay(rand: float, chain: list[float]) -> None:
    """Decorrelated: d(k) = min(max, base + rand * (3 * d(k-1) - base)), d(-1) = base."""
    config = cfg("decorrelated")
    previous: float | None = None
    got = []
    for n in range(len(chain)):
        previous = next_delay(n, config, previous, rand=const(rand))
        got.append(previous)
    assert got == pytest.approx(chain, rel=1e-5)


def test_decorrelated_jitter_depends_on_previous_not_on_n() -> None:
    """Decorrelated mode reads previous (not n): same previous gives the same delay at any n."""
    config = cfg("decorrelated")
    at_0 = next_delay(0, config, 4.0, rand=const(0.5))
    at_9 = next_delay(9, config, 4.0, rand=const(0.5))
    assert at_0 == at_9 == pytest.approx(1.0 + 0.5 * (12.0 - 1.0))


def test_decorrelated_jitter_stays_between_base_and_max() -> None:
    """Decorrelated delays never drop below base_delay nor exceed max_delay."""
    config = cfg("decorrelated", base=0.5, cap=10.0)
    rng = random.Random(1234)
    previous: float | None = None
    for n in range(500):
        previous = next_delay(n, config, previous, rand=rng.random)
        assert 0.5 <= previous <= 10.0


# -- huge attempt numbers and extreme configs --------------------------------------------------

HUGE_N = [
    ("full", 0.5, 15.0),
    ("equal", 0.0, 15.0),
    ("none", 0.5, 30.0),
    ("decorrelated", 0.0, 1.0),
]


@pytest.mark.parametrize("n", [64, 65, 1024, 10_000, 10**9])
@pytest.mark.parametrize(("jitter", "rand", "expected"), HUGE_N)
def test_huge_attempt_number_does_not_overflow(
    n: int, jitter: str, rand: float, expected: float
) -> None:
    """n = 10_000 (or 10**9) gives the capped value, finite, with no OverflowError."""
    delay = next_delay(n, cfg(jitter), rand=const(rand))
    assert math.isfinite(delay)
    assert delay == pytest.approx(expected)


def test_huge_attempt_number_with_the_largest_allowed_cap_reaches_the_cap() -> None:
    """max_delay = one day (the largest a config takes) at n = 10_000: 2**10000 overflows a
    float, yet the delay is exactly the cap, and finite."""
    config = BackoffConfig(base_delay=1.0, max_delay=86_400.0, jitter="none")
    delay = next_delay(10_000, config, rand=const(0.5))
    assert math.isfinite(delay)
    assert delay == config.max_delay


def test_capped_exponential_is_exact_even_where_the_power_overflows() -> None:
    """The pure function itself handles caps beyond any config: min(cap, base * 2**n)."""
    assert capped_exponential(10_000, 1.0, 1.7976931348623157e308) == 1.7976931348623157e308


@pytest.mark.parametrize(("n", "expected"), [(100, 30.0), (80, 30.0), (70, 11.805916207174113)])
def test_tiny_base_delay_still_reaches_the_cap(n: int, expected: float) -> None:
    """base 1e-20 s, max 30 s: base * 2**n passes 30 at n = 71, so n = 100 gives exactly 30."""
    config = BackoffConfig(base_delay=1e-20, max_delay=30.0, jitter="none")
    assert next_delay(n, config, rand=const(0.5)) == pytest.approx(expected)


@pytest.mark.parametrize("jitter", ["full", "equal", "none", "decorrelated"])
def test_zero_delays_give_zero_for_every_mode(jitter: str) -> None:
    """base_delay = max_delay = 0 means no waiting at all, in every mode."""
    config = cfg(jitter, base=0.0, cap=0.0)
    previous: float | None = None
    for n in (0, 1, 10, 10_000):
        previous = next_delay(n, config, previous, rand=const(ALMOST_ONE))
        assert previous == 0.0


def test_next_delay_accepts_jitter_given_as_a_string_any_case() -> None:
    """A config built with jitter="NONE" behaves exactly like Jitter.NONE."""
    assert next_delay(3, cfg("NONE"), rand=const(0.5)) == 8.0
    assert next_delay(3, cfg(Jitter.NONE), rand=const(0.5)) == 8.0


# -- the engine asks for retry n = 0, 1, 2, ... and chains previous ----------------------------


def _failing_decorated(jitter: str, retries: int, hooks: tuple[Any, ...]) -> Any:
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=1.0, max_delay=30.0, max_retries=retries, jitter=jitter),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1000),
        hooks=hooks,
    )

    @resilient_api(config)
    def always_refused() -> None:
        raise ConnectionRefusedError("refused")

    return always_refused


def test_engine_sleeps_the_no_jitter_chain_starting_at_n_zero() -> None:
    """The decorator's retries wait delay(0), delay(1), ...: 1, 2, 4, 8, 16, 30 s (instant here)."""
    events: list[RetryScheduled] = []
    fn = _failing_decorated(
        "none", 6, (lambda e: events.append(e) if isinstance(e, RetryScheduled) else None,)
    )
    clock = FakeClock(start=0.0)
    with set_testing(clock=clock), pytest.raises(ConnectionRefusedError):
        fn()
    assert [e.delay for e in events] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert [e.attempt for e in events] == [1, 2, 3, 4, 5, 6]
    assert clock.now == pytest.approx(61.0)  # the skipped sleeps moved the fake clock


def test_engine_passes_the_previous_delay_to_next_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine calls next_delay with n = 0, 1, 2, ... and previous = the delay it just used."""
    calls: list[tuple[int, float | None, float]] = []
    real = smoothapi.flow.next_delay

    def spy(n: int, config: BackoffConfig, previous: float | None, rand: Any) -> float:
        delay = real(n, config, previous, rand)
        calls.append((n, previous, delay))
        return delay

    monkeypatch.setattr(smoothapi.flow, "next_delay", spy)
    fn = _failing_decorated("decorrelated", 4, ())
    with set_testing(clock=FakeClock()), pytest.raises(ConnectionRefusedError):
        fn()
    assert [n for n, _, _ in calls] == [0, 1, 2, 3]
    assert calls[0][1] is None
    for (_, _, before), (_, previous, _) in itertools.pairwise(calls):
        assert previous == before
