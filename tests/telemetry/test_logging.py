"""The `smoothapi` logger: one line per retry (DEBUG), breaker moves (WARNING/INFO), nothing
per successful call, errors by type only, and no output unless the application asks."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ResilientConfig,
    StateChanged,
    resilient_api,
)
from smoothapi.events import RetriesExhausted, emit
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
        ("WARNING", "breaker users-api: CLOSED -> OPEN after 2 consecutive failures"),
        ("DEBUG", "users-api: giving up after 2 attempts (ConnectionError): breaker open"),
        ("DEBUG", "users-api: fallback served (ConnectionError)"),
        ("DEBUG", "users-api: call rejected, breaker open (probe in 10.000s)"),
        ("DEBUG", "users-api: fallback served (CircuitOpenError)"),
        ("INFO", "breaker users-api: OPEN -> HALF_OPEN: cooldown elapsed, probing"),
        ("INFO", "breaker users-api: HALF_OPEN -> CLOSED: probe succeeded"),
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


def test_each_breaker_move_says_its_own_reason(
    caplog: pytest.LogCaptureFixture, instant: FakeClock
) -> None:
    """A failed probe, a reset and a forced opening each say why the breaker moved; the
    cooldown's line does not quote the failures, which did not cause the probe."""
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1_000),
        fallback=0,
    )

    @resilient_api(config, name="orders")
    def call() -> int:
        raise ConnectionError

    caplog.set_level(logging.INFO, logger="smoothapi")
    call()  # CLOSED -> OPEN
    instant.advance(1)
    call()  # the probe fails
    instant.advance(10)
    call()  # the next probe: OPEN -> HALF_OPEN, then fails again
    call.breaker.reset()  # OPEN -> CLOSED, by hand
    call.breaker.force_open()  # CLOSED -> OPEN, by hand
    records = [r for r in caplog.records if r.name == "smoothapi"]
    assert [r.getMessage() for r in records] == [
        "breaker orders: CLOSED -> OPEN after 1 consecutive failure",
        "breaker orders: OPEN -> HALF_OPEN: cooldown elapsed, probing",
        "breaker orders: HALF_OPEN -> OPEN: probe failed",
        "breaker orders: OPEN -> HALF_OPEN: cooldown elapsed, probing",
        "breaker orders: HALF_OPEN -> OPEN: probe failed",
        "breaker orders: OPEN -> CLOSED: reset",
        "breaker orders: CLOSED -> OPEN: forced open",
    ]
    # The fields stay in extra=, with the reason alongside.
    assert [(r.old_state, r.new_state, r.reason) for r in records[-2:]] == [  # type: ignore[attr-defined]
        ("OPEN", "CLOSED", "reset"),
        ("CLOSED", "OPEN", "forced open"),
    ]
    assert [r.failures for r in records[:3]] == [1, 1, 2]  # type: ignore[attr-defined]


def test_no_message_repeats_the_logger_name(
    caplog: pytest.LogCaptureFixture, instant: FakeClock
) -> None:
    """Under a ``%(name)s: %(message)s`` format a line never reads ``smoothapi: smoothapi ...``:
    a raising hook (sync or async), a breaker move, a retry."""

    def broken_hook(event: object) -> None:
        raise RuntimeError("hook bug")

    async def broken_async_hook(event: object) -> None:
        raise RuntimeError("async hook bug")

    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=1, jitter="none"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        fallback=0,
        hooks=(broken_hook, broken_async_hook),
    )

    @resilient_api(config, name="billing")
    def call() -> int:
        raise ConnectionError

    caplog.set_level(logging.DEBUG, logger="smoothapi")
    call()
    formatter = logging.Formatter("%(name)s: %(message)s")
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("smoothapi")]
    raised = [line for line in lines if "hook" in line and " raised on " in line]
    assert len(raised) == 2 * 3  # two hooks, three events: a retry, the opening, the give-up
    assert lines
    for line in lines:
        assert not line.split("\n")[0].startswith("smoothapi: smoothapi"), line


def test_a_single_attempt_reads_in_the_singular(caplog: pytest.LogCaptureFixture) -> None:
    """'giving up after 1 attempt', not '1 attempts'."""
    caplog.set_level(logging.DEBUG, logger="smoothapi")
    emit(RetriesExhausted("users-api", 1, 503, None, "not safe to resend"))
    emit(RetriesExhausted("users-api", 2, 503, None, "retries exhausted"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "users-api: giving up after 1 attempt (status 503): not safe to resend",
        "users-api: giving up after 2 attempts (status 503): retries exhausted",
    ]


def test_a_hook_that_moves_the_breaker_does_not_reverse_the_log(
    caplog: pytest.LogCaptureFixture, instant: FakeClock
) -> None:
    """Each move is logged before its hooks run: a hook that forces the breaker open on the
    probe's claim logs after it, so the last line is the breaker's real state."""
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1_000), name="one"
    )

    def hook(event: object) -> None:
        if isinstance(event, StateChanged) and event.new == "HALF_OPEN":
            breaker.force_open()

    breaker.add_hook(hook)
    breaker.record_failure(breaker.acquire())
    instant.advance(1)
    caplog.set_level(logging.INFO, logger="smoothapi")
    caplog.clear()
    breaker.acquire()
    assert [r.getMessage() for r in caplog.records] == [
        "breaker one: OPEN -> HALF_OPEN: cooldown elapsed, probing",
        "breaker one: HALF_OPEN -> OPEN: forced open",
    ]
    assert breaker.state == "OPEN"
