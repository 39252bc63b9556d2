"""Benchmark fixtures: local keep-alive servers (the peers come from `nox -s benchmarks`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

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
