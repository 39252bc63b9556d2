"""The pytest plugin shipped with smoothapi, used by a small sample suite in a subprocess,
as a user's project would: installed by the package's ``pytest11`` entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import smoothapi

SAMPLE = textwrap.dedent(
    """
    import time
    import pytest
    from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, resilient_api

    CONFIG = ResilientConfig(
        backoff=BackoffConfig(base_delay=5.0, max_delay=5.0, max_retries=2, jitter="none"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=60_000),
        fallback="cached",
    )
    calls = []

    @resilient_api(CONFIG, name="sample")
    def fetch():
        calls.append(1)
        if len(calls) <= 3:
            raise ConnectionError("down")
        return "fresh"

    def test_outage_and_recovery_without_waiting(smoothapi_clock):
        started = time.monotonic()
        assert fetch() == "cached"           # 3 attempts, 10 s of backoff skipped, opens
        assert fetch.breaker.state == "OPEN"
        smoothapi_clock.advance(60)          # the cooldown passes at once
        assert fetch() == "fresh"            # the probe
        assert fetch.breaker.state == "CLOSED"
        assert time.monotonic() - started < 5  # no real 5 s sleep happened

    def test_breakers_start_closed_again(smoothapi_clock):
        fetch.breaker.force_open()
        assert fetch.breaker.state == "OPEN"

    @pytest.mark.smoothapi
    def test_the_marker_resets_and_speeds_up():
        assert fetch.breaker.state == "CLOSED"   # reset after the previous test
    """
)


def test_sample_suite_passes_with_the_plugin(tmp_path: Path) -> None:
    """The fixture makes retries instant and moves cooldowns; the marker resets breakers."""
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_live_breakers_lists_and_reset_all_closes_them() -> None:
    """Introspection: every live breaker (decorators' included) is listed; reset_all closes."""

    @smoothapi.resilient_api(name="listed-breaker")
    def call() -> None:
        return None

    assert call.breaker in smoothapi.live_breakers()
    call.breaker.force_open()
    smoothapi.reset_all()
    assert call.breaker.state == "CLOSED"
