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
from conftest import BATCH

from smoothapi import CircuitBreakerConfig, ResilientConfig, resilient_api

RANGE = range(BATCH)


def f(x: int) -> int:
    return x


async def af(x: int) -> int:
    return x


def passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def apassthrough(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


def _sync_contenders() -> dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]]:
    contenders: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
        "bare": lambda fn: fn,
        "passthrough": passthrough,
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


SYNC = _sync_contenders()


@pytest.mark.benchmark(group="decorator-sync")
@pytest.mark.parametrize("name", list(SYNC))
def test_sync_happy_path(benchmark: Any, name: str) -> None:
    """BATCH calls of a decorated `f(x)` that returns at once."""
    fn = SYNC[name](f)
    benchmark.extra_info["batch"] = BATCH

    def run() -> None:
        for i in RANGE:
            fn(i)

    benchmark(run)


def _async_contenders() -> dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]]:
    contenders: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
        "bare": lambda fn: fn,
        "passthrough": apassthrough,
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
    try:
        import circuitbreaker

        contenders["circuitbreaker"] = circuitbreaker.CircuitBreaker(
            failure_threshold=3, recovery_timeout=10
        )
    except ImportError:
        pass
    return contenders


ASYNC = _async_contenders()


@pytest.mark.benchmark(group="decorator-async")
@pytest.mark.parametrize("name", list(ASYNC))
def test_async_happy_path(benchmark: Any, name: str) -> None:
    """BATCH awaited calls of a decorated `async def` in one running event loop."""
    fn = ASYNC[name](af)
    benchmark.extra_info["batch"] = BATCH
    loop = asyncio.new_event_loop()

    async def batch() -> None:
        for i in RANGE:
            await fn(i)

    try:
        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.close()


THREADS = 8


@pytest.mark.benchmark(group="decorator-8-threads")
@pytest.mark.parametrize("name", [n for n in SYNC if n != "bare"])
def test_threads_shared_breaker(benchmark: Any, name: str) -> None:
    """8 threads x BATCH calls through ONE decorated function (one shared breaker)."""
    config = ResilientConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3))
    fn = resilient_api(config)(f) if name == "smoothapi" else SYNC[name](f)

    benchmark.extra_info["batch"] = BATCH * THREADS

    def worker() -> None:
        for i in RANGE:
            fn(i)

    def run() -> None:
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    benchmark(run)
