"""Benchmark fixtures: local keep-alive servers (the peers come from `nox -s benchmarks`)."""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smoothapi.cli.demo_server import FlakyServer

#: Calls per benchmark round: the harness's own per-call cost is divided by this.
BATCH = 1_000


@pytest.fixture(scope="session")
def healthy_server() -> Iterator[FlakyServer]:
    """A real HTTP/1.1 keep-alive server on 127.0.0.1 that answers 200."""
    with FlakyServer() as server:
        server.set_mode("healthy", phase="bench")
        yield server


@pytest.fixture
def outage_server() -> Iterator[FlakyServer]:
    """A real local server that answers 503 to everything and counts requests."""
    with FlakyServer() as server:
        server.set_mode("outage", phase="outage")
        yield server


def paired(
    benchmark: Any, contenders: dict[str, Callable[[], object]], *, batch: int, rounds: int = 25
) -> dict[str, float]:
    """Time contenders in interleaved, rotating rounds (ABC, BCA, CAB...): medians per call in µs.

    On a noisy 2-core machine, separate benchmarks drift with whatever else
    runs; interleaving exposes every contender to the same noise, so their
    ratios hold. The medians go to ``extra_info["paired"]`` for report.py.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}

    names = list(contenders)

    def run() -> None:
        for index in range(rounds):
            # Rotate who goes first, so no contender always follows the same neighbour.
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                call = contenders[name]
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) / batch * 1e6)

    for call in contenders.values():  # warm up every contender once
        call()
    benchmark.pedantic(run, rounds=1, iterations=1)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    benchmark.extra_info["paired"] = medians
    return medians


ROOT = Path(__file__).resolve().parent.parent


def extract_commit(rev: str, target: Path, name: str) -> Any:
    """smoothapi as of commit ``rev``, extracted with ``git archive`` under ``target`` and
    imported as the package ``name``, to run beside the working tree in the same run."""
    try:
        archive = subprocess.run(  # noqa: S603 - a fixed git command
            ["git", "archive", "--format=tar", rev, "smoothapi"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"needs a git clone with commit {rev} to compare against: {exc}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    (target / "smoothapi").rename(target / name)
    sys.path.insert(0, str(target))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(target))


def f(x: int) -> int:
    return x


async def af(x: int) -> int:
    return x


def passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The floor for any decorator: a plain pass-through wrapper."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def apassthrough(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """:func:`passthrough` for a coroutine function."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


class NullTransport(httpx.BaseTransport):
    """An inner transport that returns a ready response: the transport's own cost."""

    def __init__(self) -> None:
        self.response = httpx.Response(200, content=b"ok")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.response


class AsyncNullTransport(httpx.AsyncBaseTransport):
    """:class:`NullTransport` for the async transports."""

    def __init__(self) -> None:
        self.response = httpx.Response(200, content=b"ok")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.response
