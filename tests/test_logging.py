"""The `smoothapi` logger: one line per retry (DEBUG), breaker moves (WARNING/INFO), nothing
per successful call, errors by type only, and no output unless the application asks."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, resilient_api
from smoothapi.testing import FakeClock


def test_a_scripted_outage_logs_these_lines(
    caplog: pytest.LogCaptureFixture, instant: FakeClock
) -> None:
    """Golden lines for: two failed attempts and a retry, the breaker opening, a rejected
    call answered by the fallback, the cooldown, a successful probe."""
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=0.5, max_delay=0.5, max_retries=3, jitter="none"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=10_000),
        fallback="cached",
    )
    up = {"now": False}

    @resilient_api(config, name="users-api")
    def call() -> str:
        if not up["now"]:
            raise ConnectionError("refused: http://user:pw@host/?api_key=SECRET")
        return "fresh"

    caplog.set_level(logging.DEBUG, logger="smoothapi")
    assert call() == "cached"  # fails twice: opens; the fallback answers
    assert call() == "cached"  # rejected without I/O
    up["now"] = True
    instant.advance(10)
    assert call() == "fresh"  # the probe
    assert call() == "fresh"  # a plain success logs nothing
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "smoothapi"]
    assert lines == [
        ("DEBUG", "users-api: attempt 1 failed (ConnectionError); retry in 0.500s"),
        ("WARNING", "breaker users-api: CLOSED -> OPEN (2 consecutive failures)"),
        ("DEBUG", "users-api: giving up after 2 attempts (ConnectionError): breaker open"),
        ("DEBUG", "users-api: fallback served (ConnectionError)"),
        ("DEBUG", "users-api: call rejected, breaker open (probe in 10.000s)"),
        ("DEBUG", "users-api: fallback served (CircuitOpenError)"),
        ("INFO", "breaker users-api: OPEN -> HALF_OPEN (2 consecutive failures)"),
        ("INFO", "breaker users-api: HALF_OPEN -> CLOSED (0 consecutive failures)"),
    ]
    assert all("SECRET" not in message for _, message in lines)
    opened = next(r for r in caplog.records if r.levelname == "WARNING")
    assert opened.smoothapi_event == "state_changed"  # type: ignore[attr-defined]
    assert opened.new_state == "OPEN"  # type: ignore[attr-defined]


def test_the_library_prints_nothing_without_logging_configured() -> None:
    """No handler of the application's: a breaker opening writes nothing to stderr."""
    script = (
        "from smoothapi import *\n"
        "cfg = ResilientConfig(backoff=BackoffConfig(max_retries=0),"
        " circuit_breaker=CircuitBreakerConfig(failure_threshold=1), fallback=0)\n"
        "f = resilient_api(cfg)(lambda: (_ for _ in ()).throw(ConnectionError()))\n"
        "f(); f()\n"
        "assert f.breaker.state == 'OPEN'\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
