"""Happy-path cost of a resilience decorator on `def f(x): return x`, smoothapi beside the peers.

Each round makes BATCH calls; `benchmarks/report.py` turns the medians into
overheads (contender minus bare) and ratios.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BATCH, af, apassthrough, f, paired, passthrough

from smoothapi import ResilientConfig, resilient_api

RANGE = range(BATCH)


Decorate = Callable[[Callable[..., Any]], Callable[..., Any]]


def _contenders(*, is_async: bool) -> dict[str, Decorate]:
    """Each library at its ordinary settings (4 attempts, breakers at defaults)."""
    contenders: dict[str, Decorate] = {
        "bare": lambda fn: fn,
        "passthrough": apassthrough if is_async else passthrough,
        "smoothapi": resilient_api(ResilientConfig()),
    }
    try:
        import tenacity

        contenders["tenacity"] = tenacity.retry(stop=tenacity.stop_after_attempt(4))
    except ImportError:
        pass
    try:
        import stamina

        contenders["stamina"] = stamina.retry(on=ConnectionError, attempts=4)
    except ImportError:
        pass
    try:
        import backoff

        contenders["backoff"] = backoff.on_exception(backoff.expo, ConnectionError, max_tries=4)
    except ImportError:
        pass
    if not is_async:  # pybreaker has no coroutine support
        try:
            import pybreaker

            contenders["pybreaker"] = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=10)
        except ImportError:
            pass
    try:
        import circuitbreaker

        contenders["circuitbreaker"] = circuitbreaker.CircuitBreaker(
            failure_threshold=3, recovery_timeout=10
        )
    except ImportError:
        pass
    return contenders


SYNC = _contenders(is_async=False)


@pytest.mark.benchmark(group="decorator-sync")
def test_sync_happy_path(benchmark: Any) -> None:
    """BATCH calls of a decorated `f(x)` that returns at once, contenders interleaved."""
    contenders: dict[str, Callable[[], object]] = {}
    for name, decorate in SYNC.items():
        fn = decorate(f)

        def run(fn: Callable[[int], int] = fn) -> None:
            for i in RANGE:
                fn(i)

        contenders[name] = run
    paired(benchmark, contenders, batch=BATCH, rounds=40)


@pytest.mark.benchmark(group="decorator-async")
def test_async_happy_path(benchmark: Any) -> None:
    """BATCH awaited calls of a decorated `async def` in one running event loop."""
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, decorate in _contenders(is_async=True).items():
        fn = decorate(af)

        async def batch(fn: Callable[[int], Awaitable[int]] = fn) -> None:
            for i in RANGE:
                await fn(i)

        contenders[name] = lambda batch=batch: loop.run_until_complete(batch())
    try:
        paired(benchmark, contenders, batch=BATCH, rounds=40)
    finally:
        loop.close()


THREADS = 8
# Enough calls per thread that starting the threads is noise, not the figure.
PER_THREAD = 5_000


@pytest.mark.benchmark(group="decorator-8-threads")
def test_threads_shared_breaker(benchmark: Any) -> None:
    """8 threads x PER_THREAD calls through ONE decorated function (one shared breaker)."""
    contenders: dict[str, Callable[[], object]] = {}
    for name, decorate in SYNC.items():
        fn = decorate(f)

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
    paired(benchmark, contenders, batch=THREADS * PER_THREAD, rounds=7)
