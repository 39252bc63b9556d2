"""Issue 15 review fixes: the percentile's rank, refused hedges and the throttle, and the
attempt a ``HedgeSent`` names."""

from __future__ import annotations

import asyncio

import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    Event,
    HedgeSent,
    HedgingConfig,
    ResilientConfig,
    ThrottleConfig,
    resilient_api,
)
from smoothapi.load import LoadControl, percentile


@pytest.mark.parametrize(
    ("share", "n", "expected"),
    [(7.0, 100, 7.0), (55.0, 100, 55.0), (28.0, 25, 7.0), (95.0, 20, 19.0), (50.0, 1, 1.0)],
)
def test_the_percentile_takes_the_nearest_rank(share: float, n: int, expected: float) -> None:
    # 7 / 100 * 100 is 7.000000000000001 in floats: its ceiling must not pick the rank above.
    assert percentile([float(v) for v in range(1, n + 1)], share) == expected


def test_a_hedge_the_throttle_refuses_is_not_counted() -> None:
    now = 1000.0
    load = LoadControl(
        ResilientConfig(throttle=ThrottleConfig(k=2.0)), "t", lambda: now, lambda: 0.0
    )
    assert load.throttle is not None
    for i in range(10):  # 10 attempts made, 4 accepted: p = (10 - 8) / 11
        load.throttle.count(now, accepted=i < 4)
    before = load.throttle.counts(now)
    for _ in range(20):
        assert load.try_enter() is None  # refused: nothing was sent
    assert load.throttle.counts(now) == before


def test_hedge_sent_names_the_attempt_it_joined() -> None:
    seen: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2, base_delay=0.01),
        circuit_breaker=CircuitBreakerConfig(failure_rate=0.5),  # stays clean after a failure
        hedging=HedgingConfig(delay=0.01),
        hooks=(seen.append,),
    )
    made: list[int] = []

    @resilient_api(config, name="hedged-retry")
    async def call() -> str:
        made.append(1)
        if len(made) == 1:
            raise ConnectionError("attempt 1 fails: retried")
        if len(made) == 2:
            await asyncio.sleep(5)  # attempt 2 is slow: hedged, then cancelled
        return "ok"

    assert asyncio.run(call()) == "ok"
    hedges = [e for e in seen if isinstance(e, HedgeSent)]
    assert [h.attempt for h in hedges] == [2]
