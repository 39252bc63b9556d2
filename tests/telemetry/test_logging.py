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
    CircuitState,
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


def _opening(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.name == "smoothapi" and r.levelname == "WARNING"]
    return record


@pytest.mark.parametrize(
    ("rule", "outcomes", "line", "kind", "failures"),
    [
        # failure_rate=0.5 over at least 4 calls: the 4th attempt reaches 2 of 4.
        ("rate", "ok ok fail fail", "CLOSED -> OPEN: failure rate 0.50 over 4 calls", "rate", 2),
        ("rate", "fail ok fail fail", "CLOSED -> OPEN: failure rate 0.75 over 4 calls", "rate", 3),
        # slow_call_ms=100: a success that took 0.5 s is a failure for the breaker.
        (
            "rate",
            "ok slow ok slow",
            "CLOSED -> OPEN: slow call rate 0.50 over 4 calls",
            "slow_rate",
            2,
        ),
        ("consecutive", "slow slow", "CLOSED -> OPEN after 2 consecutive slow calls", "slow", 2),
        (
            "consecutive",
            "slow fail",
            "CLOSED -> OPEN after 2 consecutive failures",
            "consecutive",
            2,
        ),
    ],
)
def test_an_opening_says_the_rule_that_tripped(
    caplog: pytest.LogCaptureFixture,
    instant: FakeClock,
    *,
    rule: str,
    outcomes: str,
    line: str,
    kind: str,
    failures: int,
) -> None:
    """The rate rules say their verdict with its numbers, the consecutive rule its count as it
    always did; ``extra`` carries the words and their bounded kind (the metrics' label)."""
    rates = {"failure_rate": 0.5, "minimum_calls": 4} if rule == "rate" else {}
    config = CircuitBreakerConfig(failure_threshold=2, slow_call_ms=100, **rates)  # type: ignore[arg-type]
    breaker = CircuitBreaker(config, name="rules")
    caplog.set_level(logging.INFO, logger="smoothapi")
    for outcome in outcomes.split():
        assert breaker.state == "CLOSED"
        ticket = breaker.acquire()
        if outcome == "fail":
            breaker.record_failure(ticket)
        else:
            breaker.record_success(ticket, elapsed=0.5 if outcome == "slow" else 0.01)
        instant.advance(0.1)
    assert breaker.state == "OPEN"
    record = _opening(caplog)
    assert record.getMessage() == f"breaker rules: {line}"
    assert record.reason_kind == kind  # type: ignore[attr-defined]
    assert record.failures == failures  # type: ignore[attr-defined]
    words = line.split(": ", 1)[1] if ": " in line else line.split("OPEN ", 1)[1]
    assert record.reason == words  # type: ignore[attr-defined]


def test_every_opening_carries_its_reason_kind(
    caplog: pytest.LogCaptureFixture, instant: FakeClock
) -> None:
    """Consecutive failures, a failed probe, a forced opening: each WARNING line names its kind;
    the other moves carry none."""
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1_000), name="kinds"
    )
    caplog.set_level(logging.INFO, logger="smoothapi")
    breaker.record_failure(breaker.acquire())  # CLOSED -> OPEN
    instant.advance(1)
    breaker.record_failure(breaker.acquire())  # the probe fails
    breaker.reset()
    breaker.force_open()
    records = [r for r in caplog.records if r.name == "smoothapi"]
    assert [(r.new_state, getattr(r, "reason_kind", None)) for r in records] == [  # type: ignore[attr-defined]
        ("OPEN", "consecutive"),
        ("HALF_OPEN", None),
        ("OPEN", "probe"),
        ("CLOSED", None),
        ("OPEN", "forced"),
    ]


@pytest.mark.parametrize(
    ("old", "failures", "cause", "line", "kind"),
    [
        ("CLOSED", 3, None, "CLOSED -> OPEN after 3 consecutive failures", "consecutive"),
        ("HALF_OPEN", 3, None, "HALF_OPEN -> OPEN: probe failed", "probe"),
        ("HALF_OPEN", 0, "forced open", "HALF_OPEN -> OPEN: forced open", "forced"),
        ("CLOSED", 0, "forced open", "CLOSED -> OPEN: forced open", "forced"),
    ],
)
def test_a_move_with_no_reason_reads_as_before(
    caplog: pytest.LogCaptureFixture,
    *,
    old: str,
    failures: int,
    cause: str | None,
    line: str,
    kind: str,
) -> None:
    """A breaker that sends no ``reason`` (a store that predates the trip rules) logs the
    lines it always did, and its kind is read from the move."""
    caplog.set_level(logging.INFO, logger="smoothapi")
    emit(StateChanged("plain", CircuitState(old), CircuitState.OPEN, failures, 0.0), cause=cause)
    record = _opening(caplog)
    assert record.getMessage() == f"breaker plain: {line}"
    assert record.reason_kind == kind  # type: ignore[attr-defined]
