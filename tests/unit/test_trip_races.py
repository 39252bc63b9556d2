"""Reports racing a trip and a close, and the window's bucket edges (found in review).

A success of an earlier period must not be counted in the next period's window, even
when the other thread trips and closes the breaker at the worst moment: between the
lock-free path's ticket check and its increment nothing callable runs (a call is where
CPython may switch threads).  Each test stands for that switch with a clock (or a clock
reading) that runs the other thread's calls when it is read (or multiplied).

Buckets are numbered ``floor(now * 10 / window)`` in that order, as the Lua twin does:
an attempt that ended exactly ``window_ms`` ago has left the window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smoothapi import CircuitBreaker, CircuitBreakerConfig, CircuitState


def test_a_stale_success_is_not_counted_in_the_next_period() -> None:
    now = [100.0]
    interleave: list[Callable[[], None]] = []

    def clock() -> float:
        if interleave:
            interleave.pop()()
        return now[0]

    config = CircuitBreakerConfig(
        failure_rate=0.5, window_ms=10_000, minimum_calls=2, cooldown_ms=100
    )
    breaker = CircuitBreaker(config, name="race", clock=clock)
    breaker.record_success(breaker.acquire())  # opens the current bucket
    old = breaker.acquire()  # a call of period 2, still running

    def other_thread() -> None:
        for _ in range(3):
            breaker.record_failure(breaker.acquire())
        assert breaker.state.value == "OPEN"
        now[0] += 0.2  # past the cooldown, same 1 s bucket
        probe = breaker.acquire()
        breaker.record_success(probe)
        assert breaker.state is CircuitState.CLOSED
        breaker.record_success(breaker.acquire())  # one fresh success in the new period

    interleave.append(other_thread)
    breaker.record_success(old)  # the stalled report of the old period's call

    window = breaker.window
    assert window is not None
    assert window.calls == 1, f"the new period's window holds {window} (1 real call)"


class _Reading(float):
    """A clock reading; multiplying it (settle's bucket number) lets the other thread run."""

    run: Callable[[], None] | None

    def __mul__(self, other: Any) -> float:
        run = getattr(self, "run", None)
        if run is not None:
            self.run = None
            run()
        return float(self) * float(other)


def test_settle_does_not_count_a_stale_success_in_the_next_period() -> None:
    now = [100.0]
    stalled: list[Callable[[], None]] = []

    def clock() -> float:
        if stalled:
            reading = _Reading(now[0])
            reading.run = stalled.pop()
            return reading
        return now[0]

    config = CircuitBreakerConfig(
        failure_rate=0.5, window_ms=10_000, minimum_calls=2, cooldown_ms=100
    )
    breaker = CircuitBreaker(config, name="race", clock=clock)
    breaker.settle(breaker.acquire())  # opens the current bucket (the happy path)
    old = breaker.acquire()

    def other_thread() -> None:
        for _ in range(3):
            breaker.record_failure(breaker.acquire())
        now[0] += 0.2
        breaker.record_success(breaker.acquire())  # the probe closes: a new period
        assert breaker.state is CircuitState.CLOSED
        breaker.settle(breaker.acquire())  # one fresh success in the new period

    stalled.append(other_thread)
    breaker.settle(old)  # the stalled happy-path success of the old period

    window = breaker.window
    assert window is not None
    assert window.calls == 1, f"the new period's window holds {window} (1 real call)"


def test_an_attempt_exactly_window_ms_old_has_left_the_window() -> None:
    now = [0.0]
    config = CircuitBreakerConfig(failure_rate=0.5, window_ms=37, minimum_calls=2, cooldown_ms=1000)
    breaker = CircuitBreaker(config, name="edge", clock=lambda: now[0])
    breaker.record_failure(breaker.acquire())  # t = 0
    now[0] = 0.037  # exactly window_ms later: the first failure has left
    breaker.record_failure(breaker.acquire())
    assert breaker.state is CircuitState.CLOSED, breaker.reason
    assert breaker.window == (1, 1, 0)
