"""Shared fixtures: a real scripted HTTP/1.1 server (see tests/httpserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpserver import ScriptedServer

from smoothapi.testing import FakeClock, set_testing


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A fresh, started ScriptedServer per test; stopped afterwards."""
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def shared_server() -> Iterator[ScriptedServer]:
    """One ScriptedServer for the whole session; call ``reset()`` before scripting."""
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Async tests (``@pytest.mark.anyio``) run under asyncio and under trio."""
    return str(request.param)


@pytest.fixture
def instant() -> Iterator[FakeClock]:
    """Backoff sleeps return at once and advance a fake clock that every breaker reads."""
    clock = FakeClock()
    with set_testing(clock=clock):
        yield clock
