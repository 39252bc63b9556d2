"""Shared fixtures: a real scripted HTTP/1.1 server (see tests/httpserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpserver import ScriptedServer


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
