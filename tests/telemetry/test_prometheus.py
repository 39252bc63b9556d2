"""Prometheus metrics through prometheus_client, read back from a registry's exposition."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import httpx
import pytest
from httpserver import Reply, ScriptedServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter

import smoothapi.prometheus
from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.events import REASON_KINDS
from smoothapi.testing import FakeClock


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    smoothapi.prometheus.instrument(registry)
    try:
        yield registry
    finally:
        smoothapi.prometheus.uninstrument()


def test_an_outage_shows_in_counters_and_breaker_gauges(
    registry: CollectorRegistry, instant: FakeClock
) -> None:
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=45_000),
        fallback="cached",
    )

    @resilient_api(config, name="prom-outage")
    def fetch() -> str:
        raise TimeoutError("slow")

    assert fetch() == "cached"
    assert fetch() == "cached"
    b = {"breaker": "prom-outage"}
    value = registry.get_sample_value
    assert value("smoothapi_retries_total", {**b, "cause": "TimeoutError"}) == 2
    assert value("smoothapi_gave_up_total", {**b, "reason": "breaker open"}) == 1
    assert value("smoothapi_rejected_total", b) == 1
    assert value("smoothapi_fallbacks_total", b) == 2
    transition = {**b, "from_state": "CLOSED", "to_state": "OPEN"}
    assert value("smoothapi_breaker_transitions_total", transition) == 1
    assert value("smoothapi_breaker_state", {**b, "state": "OPEN"}) == 1
    assert value("smoothapi_breaker_state", {**b, "state": "CLOSED"}) == 0
    assert value("smoothapi_breaker_failures", b) == 3
    assert value("smoothapi_breaker_open_remaining_seconds", b) == pytest.approx(45.0)

    instant.advance(45)  # cooled down: the next call is the probe
    assert value("smoothapi_breaker_open_remaining_seconds", b) == 0
    fetch.breaker.reset()
    assert value("smoothapi_breaker_state", {**b, "state": "CLOSED"}) == 1

    text = generate_latest(registry).decode()
    assert "# TYPE smoothapi_retries_total counter" in text
    assert "# TYPE smoothapi_breaker_state gauge" in text


def test_transport_breakers_are_labelled_by_origin(
    registry: CollectorRegistry, server: ScriptedServer, instant: FakeClock
) -> None:
    server.script("/p", Reply(503), Reply(503), Reply(200))
    config = ResilientConfig(backoff=BackoffConfig(max_retries=3))
    with httpx.Client(transport=ResilientTransport(config), timeout=5.0) as client:
        assert client.get(server.url + "/p?key=SECRET").status_code == 200
    labels = {"breaker": server.origin, "cause": "503"}
    assert registry.get_sample_value("smoothapi_retries_total", labels) == 2
    assert (
        registry.get_sample_value(
            "smoothapi_breaker_state", {"breaker": server.origin, "state": "CLOSED"}
        )
        == 1
    )
    assert "SECRET" not in generate_latest(registry).decode()


def test_instrument_twice_replaces_and_uninstrument_unregisters(instant: FakeClock) -> None:
    registry = CollectorRegistry()
    smoothapi.prometheus.instrument(registry)
    smoothapi.prometheus.instrument(registry)  # no "Duplicated timeseries" error
    smoothapi.prometheus.uninstrument()
    assert "smoothapi_" not in generate_latest(registry).decode()

    @resilient_api(ResilientConfig(backoff=BackoffConfig(max_retries=1)), name="prom-off")
    def fails() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        fails()
    assert "smoothapi_" not in generate_latest(registry).decode()


def _run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


_FAILING_CALL = """
    import sys
    from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, resilient_api
    from smoothapi.testing import set_testing

    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
    )

    @resilient_api(config, name="auto")
    def down():
        raise ConnectionError("refused")

    @resilient_api(name="fine")
    def fine():
        return 1

    fine()
    print("loaded before the first event:", "prometheus_client" in sys.modules)
    with set_testing():
        try:
            down()
        except ConnectionError:
            pass
    print("loaded after:", "prometheus_client" in sys.modules)
"""


def test_installed_prometheus_client_counts_from_the_first_event_with_no_glue() -> None:
    """As in stamina: nothing to call. The first event (here the first retry) registers the
    metrics with the global registry, and is itself counted."""
    result = _run(
        _FAILING_CALL
        + """
    from prometheus_client import REGISTRY
    print(REGISTRY.get_sample_value(
        "smoothapi_retries_total", {"breaker": "auto", "cause": "ConnectionError"}))
    print(REGISTRY.get_sample_value(
        "smoothapi_gave_up_total", {"breaker": "auto", "reason": "retries exhausted"}))
    print(REGISTRY.get_sample_value(
        "smoothapi_breaker_state", {"breaker": "fine", "state": "CLOSED"}))
    """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == [
        "loaded before the first event: False",
        "loaded after: True",
        "2.0",
        "1.0",
        "1.0",
    ]


@pytest.mark.parametrize("how", ["env", "uninstrument"])
def test_the_automatic_registration_can_be_refused(how: str) -> None:
    prologue = (
        ""
        if how == "env"
        else "\n    import smoothapi.prometheus; smoothapi.prometheus.uninstrument()"
    )
    env = {"SMOOTHAPI_PROMETHEUS": "0"} if how == "env" else {}
    result = _run(
        prologue
        + _FAILING_CALL
        + """
    if "prometheus_client" in sys.modules:
        from prometheus_client import REGISTRY
        labels = {"breaker": "auto", "cause": "ConnectionError"}
        assert REGISTRY.get_sample_value("smoothapi_retries_total", labels) is None
    print("ok")
    """,
        **env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[-2] == "ok"
    if how == "env":
        assert lines[1] == "loaded after: False"


def test_a_name_clash_is_a_clear_error_and_registers_nothing_half_way() -> None:
    registry = CollectorRegistry()
    PromCounter("smoothapi_rejected", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="clash with metrics already in"):
        smoothapi.prometheus.instrument(registry)
    text = generate_latest(registry).decode()
    assert "smoothapi_retries_total" not in text
    assert "someone else's" in text
    smoothapi.prometheus.uninstrument()


def test_breakers_sharing_a_name_report_the_worst_state(registry: CollectorRegistry) -> None:
    """A sync and an async transport to one origin keep a breaker each, under one name: the
    gauge shows OPEN if either is open (one value per label set)."""
    closed = ResilientTransport().breaker_for("https://api.example.com/")
    opened = ResilientTransport().breaker_for("https://api.example.com/")
    assert closed is not opened
    assert closed.name == opened.name
    opened.force_open()
    labels = {"breaker": opened.name}
    assert registry.get_sample_value("smoothapi_breaker_state", {**labels, "state": "OPEN"}) == 1
    assert registry.get_sample_value("smoothapi_breaker_state", {**labels, "state": "CLOSED"}) == 0


def _run_outcomes(breaker: CircuitBreaker, clock: FakeClock, outcomes: str) -> None:
    """Report one attempt per word (ok, fail, slow: a success that took 0.5 s), 0.1 s apart."""
    for outcome in outcomes.split():
        ticket = breaker.acquire()
        if outcome == "fail":
            breaker.record_failure(ticket)
        else:
            breaker.record_success(ticket, elapsed=0.5 if outcome == "slow" else 0.01)
        clock.advance(0.1)


RATE = CircuitBreakerConfig(
    failure_rate=0.5, minimum_calls=4, window_ms=10_000, slow_call_ms=100, cooldown_ms=1_000
)


def test_openings_are_counted_by_the_kind_of_rule_never_its_numbers(
    registry: CollectorRegistry, instant: FakeClock
) -> None:
    """Each rule's opening under its kind; the words with their numbers ("failure rate 0.75
    over 4 calls") never become a label value, so the series stay a fixed few per breaker."""
    rate = CircuitBreaker(RATE, name="prom-rate")
    _run_outcomes(rate, instant, "fail ok fail fail")  # failure rate 0.75 over 4 calls
    instant.advance(1)
    _run_outcomes(rate, instant, "fail")  # the probe fails
    slow_rate = CircuitBreaker(RATE, name="prom-slow-rate")
    _run_outcomes(slow_rate, instant, "ok slow ok slow")
    slow = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=2, slow_call_ms=100), name="prom-slow"
    )
    _run_outcomes(slow, instant, "slow slow")
    plain = CircuitBreaker(CircuitBreakerConfig(failure_threshold=2), name="prom-plain")
    _run_outcomes(plain, instant, "fail slow fail fail")  # no slow_call_ms: a success
    plain.force_open()  # already OPEN: no move, nothing counted
    plain.reset()
    plain.force_open()
    assert rate.reason == "probe failed"
    assert slow_rate.reason == "slow call rate 0.50 over 4 calls"

    opened: dict[tuple[str, str], float] = {}
    for family in registry.collect():
        if family.name == "smoothapi_breaker_openings":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["breaker"], sample.labels["reason"])
                    opened[key] = sample.value
    assert opened == {
        ("prom-rate", "rate"): 1,
        ("prom-rate", "probe"): 1,
        ("prom-slow-rate", "slow_rate"): 1,
        ("prom-slow", "slow"): 1,
        ("prom-plain", "consecutive"): 1,
        ("prom-plain", "forced"): 1,
    }
    assert {reason for _, reason in opened} <= set(REASON_KINDS)
    # The transitions counter is unchanged: from and to, no reason.
    moved = {"breaker": "prom-rate", "from_state": "HALF_OPEN", "to_state": "OPEN"}
    assert registry.get_sample_value("smoothapi_breaker_transitions_total", moved) == 1


def test_a_rate_breakers_window_is_read_at_each_scrape(
    registry: CollectorRegistry, instant: FakeClock
) -> None:
    """calls, failures (slow ones included) and slow calls of the window now: they follow the
    window as it slides, a consecutive-rule breaker reports none, and a breaker its owner
    dropped stops being reported (the breakers are held weakly)."""
    rate: CircuitBreaker | None = CircuitBreaker(RATE, name="prom-window")
    plain = CircuitBreaker(CircuitBreakerConfig(), name="prom-no-window")
    assert rate is not None
    _run_outcomes(rate, instant, "ok ok ok fail slow ok ok")  # 2 of 7 failed: stays CLOSED
    assert rate.state == "CLOSED"
    _run_outcomes(plain, instant, "fail")

    def window(name: str) -> tuple[float | None, ...]:
        return tuple(
            registry.get_sample_value(f"smoothapi_breaker_window_{count}", {"breaker": name})
            for count in ("calls", "failures", "slow_calls")
        )

    assert window("prom-window") == (7, 2, 1)
    assert tuple(rate.window or ()) == (7, 2, 1)
    assert window("prom-no-window") == (None, None, None)
    assert registry.get_sample_value("smoothapi_breaker_failures", {"breaker": "prom-window"}) == 2
    instant.advance(10)  # every attempt has left the 10 s window
    assert window("prom-window") == (0, 0, 0)
    text = generate_latest(registry).decode()
    assert "# TYPE smoothapi_breaker_window_calls gauge" in text
    rate = None
    gc.collect()
    assert window("prom-window") == (None, None, None)


def test_a_shared_breaker_reports_the_fleets_window_and_opening(
    registry: CollectorRegistry, redis_url: str, redis_prefix: str
) -> None:
    """Two breakers sharing one Redis window (as two processes would): the gauges show the
    fleet's counts, read from the store's snapshot, and the opening counts under its kind."""
    import redis  # noqa: PLC0415 - the redis extra, only for this test

    from smoothapi.storage import RedisStore  # noqa: PLC0415

    config = CircuitBreakerConfig(
        failure_rate=0.5, minimum_calls=4, slow_call_ms=50, window_ms=60_000, cooldown_ms=60_000
    )
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        store = RedisStore(client, prefix=redis_prefix)
        one = CircuitBreaker(config, name="prom-fleet", store=store)
        other = CircuitBreaker(config, name="prom-fleet", store=store)
        one.record_success(one.acquire(), elapsed=0.01)
        other.record_success(other.acquire(), elapsed=0.01)
        one.record_success(one.acquire(), elapsed=0.2)  # slow
        labels = {"breaker": "prom-fleet"}
        value = registry.get_sample_value
        assert [
            value(f"smoothapi_breaker_window_{count}", labels)
            for count in ("calls", "failures", "slow_calls")
        ] == [3, 1, 1]
        other.record_success(other.acquire(), elapsed=0.2)  # slow: 2 of 4
        assert one.state == "OPEN"
        opened = {**labels, "reason": "slow_rate"}
        assert value("smoothapi_breaker_openings_total", opened) == 1
        assert value("smoothapi_breaker_state", {**labels, "state": "OPEN"}) == 1
    finally:
        client.close()
