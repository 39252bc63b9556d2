"""Benchmark fixtures: local keep-alive servers (the peers come from `nox -s benchmarks`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smoothapi.demo_server import FlakyServer

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
