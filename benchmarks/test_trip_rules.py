"""The happy path's cost under each trip rule (issue 13), in the same interleaved run.

Contenders of every group:

* `bare`: the undecorated function / the inner null transport;
* `passthrough` (decorator groups): the floor for any decorator;
* `before trip rules`: smoothapi as of ``BASELINE`` (the commit before issue 13's
  core), extracted with ``git archive`` and imported as ``smoothapi_before_trip_rules``,
  at its defaults (the consecutive rule, the only one it has);
* `consecutive`: this tree at its defaults;
* one contender per rule in ``RULES``, each its own breaker configured so.

Issue 13 asks: with the consecutive rule nothing changes (`consecutive` vs
`before trip rules`), and the rate rule's overhead stays within 2x of the
consecutive rule's.  ``python benchmarks/test_trip_rules.py run1.json [run2.json ...]``
prints those ratios from a run's JSON (``report.py`` prints the per-call table).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    BATCH,
    AsyncNullTransport,
    NullTransport,
    af,
    apassthrough,
    extract_commit,
    f,
    paired,
    passthrough,
)

from smoothapi import (
    AsyncResilientTransport,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)

#: The parent of 9b21261, issue 13's core: the consecutive rule before the trip rules.
BASELINE = "9b21261~1"
BEFORE = "before trip rules"
CONSECUTIVE = "consecutive"

#: The rules compared with `consecutive`, each on the happy path (nothing fails, nothing
#: is slow: 1 s is far above any call here).
RULES: dict[str, dict[str, Any]] = {
    "failure_rate=0.5": {"failure_rate": 0.5},
    "slow_call_ms=1000": {"slow_call_ms": 1000},
    "failure_rate=0.5+slow_call_ms=1000": {"failure_rate": 0.5, "slow_call_ms": 1000},
    "half_open_calls=5": {"half_open_calls": 5},
}
MOCK_BATCH = 200
THREADS = 8
PER_THREAD = 5_000


@pytest.fixture(scope="module")
def before(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """smoothapi as of BASELINE, imported beside this tree."""
    return extract_commit(
        BASELINE, tmp_path_factory.mktemp("before-trip-rules"), "smoothapi_before_trip_rules"
    )


def _configs() -> dict[str, ResilientConfig]:
    """This tree's contenders: the default (consecutive) rule, then each of RULES."""
    configs = {CONSECUTIVE: ResilientConfig()}
    for label, options in RULES.items():
        configs[label] = ResilientConfig(circuit_breaker=CircuitBreakerConfig(**options))
    return configs


def _decorated(before: Any, fn: Any, wrap: Any) -> dict[str, Any]:
    chosen: dict[str, Any] = {
        "bare": fn,
        "passthrough": wrap(fn),
        BEFORE: before.resilient_api()(fn),
    }
    for label, config in _configs().items():
        chosen[label] = resilient_api(config)(fn)
    return chosen


def _check_breakers(breakers: dict[str, CircuitBreaker]) -> None:
    """Every contender stayed on the happy path: CLOSED, nothing failed, and a rate
    breaker's window holds the successes (it counted them; some may be lost to races)."""
    for label, breaker in breakers.items():
        assert breaker.state is CircuitState.CLOSED, (label, breaker)
        window = breaker.window
        if breaker.config.failure_rate is None:
            assert window is None, label
            assert breaker.failure_count == 0, (label, breaker)
        else:
            assert window is not None, label
            assert window.calls > 0, (label, window)
            assert window.failures == 0, (label, window)


def _ours(chosen: dict[str, Any]) -> dict[str, CircuitBreaker]:
    return {label: chosen[label].breaker for label in (CONSECUTIVE, *RULES)}


@pytest.mark.benchmark(group="trip-rules-decorator-sync")
def test_trip_rules_decorator_sync(benchmark: Any, before: Any) -> None:
    """@resilient_api on `def f(x): return x` under each rule; the commit before; bare."""
    chosen = _decorated(before, f, passthrough)
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in chosen.items():

        def run(fn: Callable[[int], int] = fn) -> None:
            for i in range(BATCH):
                fn(i)

        contenders[name] = run
    paired(benchmark, contenders, batch=BATCH, rounds=150)
    _check_breakers(_ours(chosen))


@pytest.mark.benchmark(group="trip-rules-decorator-async")
def test_trip_rules_decorator_async(benchmark: Any, before: Any) -> None:
    """The same for an `async def`, awaited in one running event loop."""
    chosen = _decorated(before, af, apassthrough)
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in chosen.items():

        async def batch(fn: Callable[[int], Awaitable[int]] = fn) -> None:
            for i in range(BATCH):
                await fn(i)

        contenders[name] = lambda batch=batch: loop.run_until_complete(batch())
    try:
        paired(benchmark, contenders, batch=BATCH, rounds=150)
    finally:
        loop.close()
    _check_breakers(_ours(chosen))


@pytest.mark.benchmark(group="trip-rules-8-threads")
def test_trip_rules_threads(benchmark: Any, before: Any) -> None:
    """8 threads x PER_THREAD calls through ONE decorated function (one breaker) per
    rule: the rate rule counts every success without a lock, the consecutive rule
    reads one attribute."""
    chosen = _decorated(before, f, passthrough)
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in chosen.items():

        def run(fn: Callable[[int], int] = fn) -> None:
            def worker() -> None:
                for i in range(PER_THREAD):
                    fn(i)

            threads = [threading.Thread(target=worker) for _ in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        contenders[name] = run
    paired(benchmark, contenders, batch=THREADS * PER_THREAD, rounds=25)
    _check_breakers(_ours(chosen))


URL = "http://upstream.test/x"


@pytest.mark.benchmark(group="trip-rules-transport-null-sync")
def test_trip_rules_transport_sync(benchmark: Any, before: Any) -> None:
    """ResilientTransport.handle_request over a null inner transport under each rule."""
    request = httpx.Request("GET", URL)
    transports: dict[str, httpx.BaseTransport] = {
        "bare": NullTransport(),
        BEFORE: before.ResilientTransport(transport=NullTransport()),
    }
    ours: dict[str, ResilientTransport] = {
        label: ResilientTransport(config, transport=NullTransport())
        for label, config in _configs().items()
    }
    transports.update(ours)
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in transports.items():

        def batch(t: httpx.BaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                t.handle_request(request)

        contenders[name] = batch
    paired(benchmark, contenders, batch=MOCK_BATCH, rounds=200)
    _check_breakers({label: t.breaker_for(URL) for label, t in ours.items()})


@pytest.mark.benchmark(group="trip-rules-transport-null-async")
def test_trip_rules_transport_async(benchmark: Any, before: Any) -> None:
    """AsyncResilientTransport.handle_async_request over a null inner transport."""
    request = httpx.Request("GET", URL)
    transports: dict[str, httpx.AsyncBaseTransport] = {
        "bare": AsyncNullTransport(),
        BEFORE: before.AsyncResilientTransport(transport=AsyncNullTransport()),
    }
    ours: dict[str, AsyncResilientTransport] = {
        label: AsyncResilientTransport(config, transport=AsyncNullTransport())
        for label, config in _configs().items()
    }
    transports.update(ours)
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in transports.items():

        async def many(t: httpx.AsyncBaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                await t.handle_async_request(request)

        contenders[name] = lambda many=many: loop.run_until_complete(many())
    try:
        paired(benchmark, contenders, batch=MOCK_BATCH, rounds=200)
    finally:
        loop.close()
    _check_breakers({label: t.breaker_for(URL) for label, t in ours.items()})


def test_baseline_is_the_commit_before(before: Any) -> None:
    """`before trip rules` runs its own copy of the code, which has no trip rules."""
    import smoothapi

    assert before.__file__ != smoothapi.__file__
    assert not hasattr(before.CircuitBreakerConfig(), "failure_rate")
    assert CircuitBreakerConfig().failure_rate is None


GROUPS = {
    "trip-rules-decorator-sync": "decorator sync",
    "trip-rules-decorator-async": "decorator async",
    "trip-rules-8-threads": "decorator, 8 threads, one breaker",
    "trip-rules-transport-null-sync": "ResilientTransport, null transport",
    "trip-rules-transport-null-async": "AsyncResilientTransport, null transport",
}


def ratios(runs: list[dict[str, Any]]) -> str:
    """Markdown, one row per group, one figure per run (``a / b / c``): `consecutive`'s
    overhead over bare, its time ÷ `before trip rules`' (1.00: nothing changed), and each
    rule's overhead over bare ÷ `consecutive`'s (the issue's bound for the rate rule: 2)."""
    lines = [
        "| group | consecutive: overhead over bare (µs) | consecutive: time ÷ before's | "
        + " | ".join(f"{rule} ÷ consecutive" for rule in RULES)
        + " |",
        "|---" * (3 + len(RULES)) + "|",
    ]
    medians = [
        {b["group"]: b["extra_info"]["paired"] for b in run["benchmarks"] if b["group"] in GROUPS}
        for run in runs
    ]
    for group, label in GROUPS.items():
        found = [m[group] for m in medians if group in m]
        if not found:
            continue
        cells = [
            " / ".join(f"{m[CONSECUTIVE] - m['bare']:.3f}" for m in found),
            " / ".join(f"{m[CONSECUTIVE] / m[BEFORE]:.3f}" for m in found),
        ]
        for rule in RULES:
            cells.append(
                " / ".join(
                    f"{(m[rule] - m['bare']) / (m[CONSECUTIVE] - m['bare']):.2f}" for m in found
                )
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(ratios([json.loads(Path(name).read_text()) for name in sys.argv[1:]]))
