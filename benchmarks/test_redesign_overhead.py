"""The happy path before the redesign (issue 12) beside the working tree, in the same run.

* `bare`: the undecorated function / the inner transport;
* `passthrough` (decorator groups): the floor for any decorator;
* `before redesign`: smoothapi as of ``BASELINE`` (the commit before issue 12's
  happy-path and call-builder work), extracted with ``git archive`` and imported
  as ``smoothapi_before_redesign``;
* `smoothapi`: this working tree.

``SMOOTHAPI_BENCH_ALSO=<rev>[,<rev>...]`` adds more commits as contenders (each
``at <rev>``), to tell one change's cost from the rest.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
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

from smoothapi import AsyncResilientTransport, ResilientTransport, resilient_api

#: The commit before issue 12 reshaped the happy path and the mount points.
BASELINE = "b22768b"
MOCK_BATCH = 200
THREADS = 8
PER_THREAD = 5_000


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each compared version's package, by contender name (this tree last)."""
    import smoothapi

    revs = [BASELINE] + [
        rev.strip() for rev in os.environ.get("SMOOTHAPI_BENCH_ALSO", "").split(",") if rev.strip()
    ]
    found: dict[str, Any] = {}
    for rev in revs:
        label = "before redesign" if rev == BASELINE else f"at {rev}"
        name = "smoothapi_before_redesign" if rev == BASELINE else f"smoothapi_at_{rev}"
        found[label] = extract_commit(rev, tmp_path_factory.mktemp(f"rev-{rev}"), name)
    found["smoothapi"] = smoothapi
    return found


def _decorated(versions: dict[str, Any], fn: Any, passthrough: Any) -> dict[str, Any]:
    chosen: dict[str, Any] = {"bare": fn, "passthrough": passthrough(fn)}
    for label, package in versions.items():
        chosen[label] = package.resilient_api()(fn)
    return chosen


@pytest.mark.benchmark(group="redesign-decorator-sync")
def test_redesign_decorator_sync(benchmark: Any, versions: dict[str, Any]) -> None:
    """@resilient_api on `def f(x): return x`: before the redesign, now; bare and passthrough."""
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in _decorated(versions, f, passthrough).items():

        def run(fn: Callable[[int], int] = fn) -> None:
            for i in range(BATCH):
                fn(i)

        contenders[name] = run
    paired(benchmark, contenders, batch=BATCH, rounds=60)


@pytest.mark.benchmark(group="redesign-decorator-async")
def test_redesign_decorator_async(benchmark: Any, versions: dict[str, Any]) -> None:
    """The same for an `async def`, awaited in one running event loop."""
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in _decorated(versions, af, apassthrough).items():

        async def batch(fn: Callable[[int], Awaitable[int]] = fn) -> None:
            for i in range(BATCH):
                await fn(i)

        contenders[name] = lambda batch=batch: loop.run_until_complete(batch())
    try:
        paired(benchmark, contenders, batch=BATCH, rounds=60)
    finally:
        loop.close()


@pytest.mark.benchmark(group="redesign-decorator-8-threads")
def test_redesign_threads(benchmark: Any, versions: dict[str, Any]) -> None:
    """8 threads x PER_THREAD calls through ONE decorated function (one breaker)."""
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in _decorated(versions, f, passthrough).items():

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
    paired(benchmark, contenders, batch=THREADS * PER_THREAD, rounds=9)


@pytest.mark.benchmark(group="redesign-transport-null-sync")
def test_redesign_transport_sync(benchmark: Any, versions: dict[str, Any]) -> None:
    """handle_request over a null inner transport: before the redesign, now; bare."""
    request = httpx.Request("GET", "http://upstream.test/x")
    transports: dict[str, httpx.BaseTransport] = {"bare": NullTransport()}
    for label, package in versions.items():
        transports[label] = package.ResilientTransport(transport=NullTransport())
    assert isinstance(transports["smoothapi"], ResilientTransport)
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in transports.items():

        def batch(t: httpx.BaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                t.handle_request(request)

        contenders[name] = batch
    paired(benchmark, contenders, batch=MOCK_BATCH, rounds=80)


@pytest.mark.benchmark(group="redesign-transport-null-async")
def test_redesign_transport_async(benchmark: Any, versions: dict[str, Any]) -> None:
    """handle_async_request over a null inner transport: before the redesign, now; bare."""
    request = httpx.Request("GET", "http://upstream.test/x")
    transports: dict[str, httpx.AsyncBaseTransport] = {"bare": AsyncNullTransport()}
    for label, package in versions.items():
        transports[label] = package.AsyncResilientTransport(transport=AsyncNullTransport())
    assert isinstance(transports["smoothapi"], AsyncResilientTransport)
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in transports.items():

        async def many(t: httpx.AsyncBaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                await t.handle_async_request(request)

        contenders[name] = lambda many=many: loop.run_until_complete(many())
    try:
        paired(benchmark, contenders, batch=MOCK_BATCH, rounds=80)
    finally:
        loop.close()


def test_versions_are_distinct(versions: dict[str, Any]) -> None:
    """Each contender runs its own copy of the code (not this tree under another name)."""
    files = {label: package.__file__ for label, package in versions.items()}
    assert len(set(files.values())) == len(files), files
    assert resilient_api.__module__.startswith("smoothapi.")
