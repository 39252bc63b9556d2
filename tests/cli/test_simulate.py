"""``smoothapi simulate``: the real engine on a virtual clock, checked by hand and end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitState,
    ConfigError,
    ResilientConfig,
    _runtime,
)
from smoothapi.cli import main
from smoothapi.cli.simulate import (
    NO_BREAKER_THRESHOLD,
    Scenario,
    build_config,
    builtin_configs,
    compare,
    format_report,
    load_config_file,
    parse_timeline,
    simulate,
)
from smoothapi.events import Event, StateChanged

ROOT = Path(__file__).resolve().parents[2]

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- the hand-checked case -------------------------------------------------------------------
#
# One client calls once a second at t = 0, 1, ..., 19 (fixed interval).  The upstream
# answers in exactly 50 ms, but is down during [5, 10): every request sent then gets a 503
# after exactly 10 ms.  Config: base_delay 0.1 s, 3 retries, no jitter (delays 0.1, 0.2,
# 0.4 s), breaker threshold 3, cooldown 2 s, no fallback.
#
# t=0..4   5 calls, 1 request each, all succeed in 50 ms.
# t=5      request at 5.00 -> 503 at 5.01 (failures 1), sleep 0.1
#          request at 5.11 -> 503 at 5.12 (failures 2), sleep 0.2
#          request at 5.32 -> 503 at 5.33 (failures 3): OPEN until 7.33; the call gives up
#          with the 503 (3 requests, 330 ms).
# t=6, 7   rejected without a request (6 and 7 < 7.33): 0 ms.
# t=8      cooldown over: HALF_OPEN, this call is the probe; request at 8.00 -> 503 at 8.01:
#          OPEN again until 10.01; the call gives up (1 request, 10 ms).
# t=9      rejected.
# t=10     the upstream is back, but 10.00 < 10.01: rejected.
# t=11     HALF_OPEN, the probe's request at 11.00 succeeds at 11.05: CLOSED.
# t=12..19 8 calls, 1 request each, all succeed.
#
# Requests: 5 + 3 + 1 + 1 + 8 = 18.  Per phase: healthy [0,5) 5 requests (load 1.0),
# down [5,10) 4 requests (load 0.8), healthy [10,20) 9 requests (load 0.9); successes
# 5/5, 0/5, 9/10.  Down phase latencies [0.33, 0, 0, 0.01, 0]: p50 0, p95 = p99 = 0.33.
# Recovered: the trailing one-second window holds the failed call of t=10 for t in
# [10, 11); from 11 on every window is 100%: recovered after 1.0 s.

HAND_SCENARIO = Scenario(
    timeline=parse_timeline("healthy:5,down:5,healthy:10"),
    clients=1,
    rate=1.0,
    arrivals="fixed",
    latency=0.05,
    latency_spread=0.0,
    error_latency=0.01,
)


def hand_config(events: list[Event] | None = None, *, threshold: int = 3) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(base_delay=0.1, max_delay=30.0, max_retries=3, jitter="none"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=2000),
        hooks=() if events is None else (events.append,),
    )


def test_hand_checked_case_matches_exactly() -> None:
    events: list[Event] = []
    result = simulate(hand_config(events), HAND_SCENARIO)

    assert result.calls == 20
    assert result.total_attempts == 18
    assert result.attempt_times == pytest.approx(
        [0, 1, 2, 3, 4, 5.0, 5.11, 5.32, 8.0, 11, 12, 13, 14, 15, 16, 17, 18, 19], abs=1e-9
    )
    transitions = [(e.old, e.new, e.at) for e in events if isinstance(e, StateChanged)]
    assert [(old, new) for old, new, _ in transitions] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    assert [at for _, _, at in transitions] == pytest.approx([5.33, 8.0, 8.01, 11.0, 11.05])
    assert result.breaker_opened == 2
    assert result.probes == 2

    healthy, down, back = result.phases()
    assert (healthy.calls, healthy.attempts, healthy.successes) == (5, 5, 5)
    assert (down.calls, down.attempts, down.successes) == (5, 4, 0)
    assert (back.calls, back.attempts, back.successes) == (10, 9, 9)
    assert (down.errors, down.rejected, down.fallbacks) == (5, 3, 0)
    assert (back.errors, back.rejected) == (1, 1)
    assert healthy.load == pytest.approx(1.0)
    assert down.load == pytest.approx(0.8)
    assert back.load == pytest.approx(0.9)
    assert back.success_rate == pytest.approx(0.9)
    assert (healthy.p50, healthy.p99) == pytest.approx((0.05, 0.05))
    assert down.p50 == pytest.approx(0.0)
    assert (down.p95, down.p99) == pytest.approx((0.33, 0.33))
    assert not healthy.after_outage
    assert not down.after_outage
    assert back.after_outage
    assert back.time_to_recover == pytest.approx(1.0)


def test_hand_checked_case_with_a_fallback() -> None:
    config = ResilientConfig(
        backoff=hand_config().backoff,
        circuit_breaker=hand_config().circuit_breaker,
        fallback="cached",
    )
    _, down, back = simulate(config, HAND_SCENARIO).phases()
    # The breaker opening mid-call (t=5), the rejections (6, 7, 9, 10) and the failed
    # probe (8) are all answered by the fallback.
    assert (down.fallbacks, down.errors, down.successes) == (5, 0, 0)
    assert (back.fallbacks, back.errors, back.successes) == (1, 0, 9)


def test_hand_checked_builtin_comparisons() -> None:
    # Without a breaker each call in [5, 10) makes 4 requests (at t, t+0.11, t+0.32,
    # t+0.73, all before 10): 20 requests in 5 s, 4x the healthy load.  Without retries:
    # one request per call, 1x.
    (_, storm), (_, bare) = builtin_configs(hand_config())
    assert storm.circuit_breaker.failure_threshold == NO_BREAKER_THRESHOLD
    assert storm.backoff.max_retries == 3
    assert bare.backoff.max_retries == 0
    storm_result, bare_result = compare([("storm", storm), ("bare", bare)], HAND_SCENARIO)
    _, down, back = storm_result.phases()
    assert (down.attempts, down.successes) == (20, 0)
    assert down.load == pytest.approx(4.0)
    assert down.p50 == pytest.approx(0.74)  # 0.73 s of sleeps and requests + the last 10 ms
    assert (back.attempts, back.successes, back.time_to_recover) == (10, 10, 0.0)
    _, down, back = bare_result.phases()
    assert down.attempts == 5
    assert down.load == pytest.approx(1.0)
    assert back.time_to_recover == 0.0
    assert storm_result.breaker_opened == bare_result.breaker_opened == 0


def test_a_deadline_cuts_the_attempt_short() -> None:
    # Timeouts of 1 s and a 0.5 s deadline: each call's one attempt is cut at 0.5 s by
    # the deadline (the transports' way), and never retried past it.
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=0.1, max_retries=3, jitter="full"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=NO_BREAKER_THRESHOLD),
        deadline=0.5,
    )
    scenario = Scenario(
        timeline=parse_timeline("down:10"), clients=20, failure="timeout", timeout=1.0, seed=4
    )
    result = simulate(config, scenario)
    assert max(result.latencies) <= 0.5 + 1e-9
    assert result.total_attempts == result.calls  # no time left for a retry


# -- determinism and the comparisons ---------------------------------------------------------


SMALL = ["simulate", "--clients", "40", "--duration", "15", "--compare", "--json"]


def test_same_seed_same_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, first, _ = run_main([*SMALL, "--seed", "7"], capsys)
    assert status == 0
    status, second, _ = run_main([*SMALL, "--seed", "7"], capsys)
    assert status == 0
    assert first == second
    status, other, _ = run_main([*SMALL, "--seed", "8"], capsys)
    assert status == 0
    assert other != first
    document = json.loads(first)
    assert [r["name"] for r in document["results"]] == [
        "default",
        "retries without breaker",
        "no retries",
    ]
    phases = document["results"][0]["phases"]
    assert [p["kind"] for p in phases] == ["healthy", "down", "healthy"]
    assert phases[2]["after_outage"] is True
    assert set(phases[0]["latency"]) == {"p50", "p95", "p99"}


def test_configs_compared_see_the_same_traffic() -> None:
    scenario = Scenario(clients=30, timeline=parse_timeline("healthy:4,down:4,healthy:4"))
    configs = [("default", ResilientConfig()), *builtin_configs(ResilientConfig())]
    results = compare(configs, scenario)
    assert len({tuple(r.starts) for r in results}) == 1


def test_retries_without_breaker_storm_the_upstream() -> None:
    scenario = Scenario(clients=200, timeline=parse_timeline("healthy:5,down:10,healthy:5"), seed=3)
    default, storm, bare = compare(
        [("default", ResilientConfig()), *builtin_configs(ResilientConfig())], scenario
    )
    outage = [r.phases()[1] for r in (default, storm, bare)]
    assert outage[1].load > 3.5  # up to 4 requests per call
    assert outage[1].load > 3 * outage[2].load
    assert outage[0].load < 0.5 < outage[2].load  # the breakers shed it
    assert default.breaker_opened >= 200


def test_shared_breaker_opens_once_for_everyone() -> None:
    scenario = Scenario(
        clients=100, timeline=parse_timeline("healthy:5,down:5,healthy:5"), shared_breaker=True
    )
    result = simulate(ResilientConfig(), scenario)
    assert result.breaker_opened == 1
    assert result.phases()[1].load < 0.05


def test_library_clock_is_restored() -> None:
    before = _runtime.clock
    simulate(ResilientConfig(), Scenario(clients=2, timeline=parse_timeline("down:3")))
    assert _runtime.clock is before


# -- the command line ------------------------------------------------------------------------


CLI_ARGS = ("--clients", "50", "--duration", "30", "--seed", "1")
SMALL_RUN = ("--clients", "3", "--duration", "3")
FLAGS = (
    *("--base-delay", "0.2", "--max-delay", "2", "--max-retries", "2", "--jitter", "equal"),
    *("--threshold", "4", "--cooldown-ms", "1500"),
)


def test_cli_prints_the_phase_table() -> None:
    started = time.perf_counter()
    proc = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "smoothapi", "simulate", *CLI_ARGS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "phase" in out
    assert "load" in out
    assert "success" in out
    assert "p99" in out
    for row in ("healthy 0-10 s", "down 10-20 s", "healthy 20-30 s"):
        assert row in out
    assert "after " in out  # the time to recover
    assert time.perf_counter() - started < 30


def test_cli_config_file_and_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "tight.toml"
    toml.write_text(
        'name = "tight"\nfallback = true\n[backoff]\nmax_retries = 1\njitter = "none"\n'
        "[circuit_breaker]\nfailure_threshold = 2\ncooldown_ms = 500\n"
    )
    js = tmp_path / "loose.json"
    js.write_text(json.dumps({"backoff": {"max_retries": 5}}))
    status, out, err = run_main(
        [
            *["simulate", "--clients", "5", "--duration", "6", "--json"],
            *("--config", str(toml), "--config", str(js)),
            *("--set", "circuit_breaker.cooldown_ms=750"),
        ],
        capsys,
    )
    assert status == 0, err
    results = json.loads(out)["results"]
    assert [r["name"] for r in results] == ["tight", "loose"]
    tight, loose = (r["config"] for r in results)
    assert tight["backoff"]["max_retries"] == 1
    assert tight["backoff"]["jitter"] == "none"
    assert tight["fallback"] == "fallback"
    assert tight["circuit_breaker"]["failure_threshold"] == 2
    assert tight["circuit_breaker"]["cooldown_ms"] == loose["circuit_breaker"]["cooldown_ms"] == 750
    assert loose["backoff"]["max_retries"] == 5


def test_cli_flags_build_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(
        ["simulate", *SMALL_RUN, *FLAGS, "--fallback", "--json"],
        capsys,
    )
    assert status == 0
    result = json.loads(out)["results"][0]
    assert result["name"] == "custom"
    backoff = {"base_delay": 0.2, "max_delay": 2.0, "max_retries": 2, "jitter": "equal"}
    assert result["config"]["backoff"] == backoff
    assert result["config"]["circuit_breaker"]["failure_threshold"] == 4
    assert result["config"]["circuit_breaker"]["cooldown_ms"] == 1500
    assert result["config"]["fallback"] == "fallback"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeline", "healthy:5,broken:5"], "kind must be one of"),
        (["--timeline", "degraded:5"], "degraded:SECONDS:FAILURE_RATE"),
        (["--timeline", "degraded:5:1.5"], "between 0 and 1"),
        (["--max-retries", "-1"], "max_retries"),
        (["--set", "backoff.nope=1"], "unknown setting 'nope'"),
        (["--set", "oops"], "KEY=VALUE"),
    ],
)
def test_cli_rejects_bad_settings(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_main(["simulate", "--clients", "2", *argv], capsys)
    assert status == 2
    assert message in err


def test_cli_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra (the test extra has it)")
    target = tmp_path / "outage.png"
    status, out, err = run_main(
        ["simulate", "--clients", "30", "--duration", "9", "--compare", "--plot", str(target)],
        capsys,
    )
    assert status == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {target}" in out


def test_cli_plot_without_matplotlib_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # blocked: import raises ImportError
    status, out, err = run_main(
        ["simulate", "--clients", "2", "--duration", "3", "--plot", str(tmp_path / "x.png")],
        capsys,
    )
    assert status == 2
    assert "--plot needs matplotlib" in err
    assert "pip install matplotlib" in err
    assert out == ""  # checked before simulating


# -- the pieces --------------------------------------------------------------------------------


def test_parse_timeline() -> None:
    phases = parse_timeline("healthy:20, down:20,degraded:10:30%,healthy:5")
    assert [(p.kind, p.start, p.end, p.failure_rate) for p in phases] == [
        ("healthy", 0, 20, 0.0),
        ("down", 20, 40, 1.0),
        ("degraded", 40, 50, 0.3),
        ("healthy", 50, 55, 0.0),
    ]
    cut = parse_timeline("healthy:20,down:20,healthy:20", duration=30)
    assert [(p.start, p.end) for p in cut] == [(0, 20), (20, 30)]
    stretched = parse_timeline("healthy:2,down:2", duration=10)
    assert stretched[-1].end == 10


def test_degraded_phase_fails_about_its_rate() -> None:
    bare = builtin_configs(ResilientConfig())[1][1]
    scenario = Scenario(clients=100, timeline=parse_timeline("degraded:10:0.25"), seed=5)
    (phase,) = simulate(bare, scenario).phases()
    assert phase.success_rate is not None
    assert 0.72 < phase.success_rate < 0.78


def test_build_config_and_files(tmp_path: Path) -> None:
    config = build_config(
        {"backoff": {"max_retries": 1}, "circuit_breaker": {"cooldown_ms": 10}, "fallback": False}
    )
    assert config.backoff.max_retries == 1
    assert config.circuit_breaker.cooldown_ms == 10
    assert config.fallback is None
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        build_config({"bogus": 1})
    with pytest.raises(ConfigError, match="takes a value, not a table"):
        build_config({"deadline": {"x": 1}})
    path = tmp_path / "bad.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a table"):
        load_config_file(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(path)


# -- the trip rules (issue 13) -----------------------------------------------------------------

RULE_FLAGS = (
    *("--failure-rate", "0.4", "--window-ms", "5000", "--minimum-calls", "7"),
    *("--slow-call-ms", "250", "--half-open-calls", "3"),
)
RULES = {
    "failure_rate": 0.4,
    "window_ms": 5000,
    "minimum_calls": 7,
    "slow_call_ms": 250,
    "half_open_calls": 3,
}


def test_cli_rule_flags_reach_the_breaker(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(["simulate", *SMALL_RUN, *RULE_FLAGS, "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)["results"][0]
    cb = result["config"]["circuit_breaker"]
    assert {key: cb[key] for key in RULES} == RULES
    assert "failure rate of 40% over 5 s (at least 7 calls)" in result["description"]
    assert "slower than 250 ms" in result["description"]
    assert "3 probes to close" in result["description"]


def test_cli_config_file_takes_the_rule_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "rate.toml"
    toml.write_text(
        "[circuit_breaker]\n" + "".join(f"{key} = {value}\n" for key, value in RULES.items())
    )
    status, out, err = run_main(["simulate", *SMALL_RUN, "--config", str(toml), "--json"], capsys)
    assert status == 0, err
    cb = json.loads(out)["results"][0]["config"]["circuit_breaker"]
    assert {key: cb[key] for key in RULES} == RULES


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--failure-rate", "50"], "failure_rate must be > 0 and <= 1"),
        (["--failure-rate", "0"], "failure_rate must be > 0 and <= 1"),
        (["--window-ms", "5"], "window_ms must be at least 10 ms"),
        (["--minimum-calls", "0"], "minimum_calls"),
        (["--slow-call-ms", "-1"], "slow_call_ms"),
        (["--half-open-calls", "0"], "half_open_calls"),
        (["--timeline", "slow:5"], "slow:SECONDS:LATENCY_MS"),
        (["--timeline", "slow:5:fast"], "positive number of milliseconds"),
        (["--timeline", "slow:5:0"], "positive number of milliseconds"),
    ],
)
def test_cli_rejects_bad_rule_settings(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_main(["simulate", "--clients", "2", *argv], capsys)
    assert status == 2
    assert message in err


def test_config_file_with_a_bad_rule_gives_the_configs_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[circuit_breaker]\nhalf_open_calls = 0\n")
    status, _, err = run_main(["simulate", "--clients", "2", "--config", str(toml)], capsys)
    assert status == 2
    with pytest.raises(ConfigError) as caught:
        CircuitBreakerConfig(half_open_calls=0)
    assert str(caught.value) in err


def test_slow_phase_parses_and_its_latency_shows(capsys: pytest.CaptureFixture[str]) -> None:
    healthy, slow = parse_timeline("healthy:2,slow:3:1500")
    assert (slow.kind, slow.start, slow.end, slow.failure_rate) == ("slow", 2, 5, 0.0)
    assert slow.latency == 1.5
    assert healthy.latency is None
    assert not slow.healthy  # an outage of its own: the phase after it measures recovery
    assert slow.label == "slow 1.50 s"
    bare = builtin_configs(ResilientConfig())[1][1]
    scenario = Scenario(clients=20, timeline=parse_timeline("healthy:2,slow:3:1500"), seed=2)
    before, during = simulate(bare, scenario).phases()
    assert (during.p50, during.p99) == pytest.approx((1.5, 1.5))  # a slow phase has no spread
    assert during.success_rate == 1.0  # slow answers are answers
    assert before.p99 is not None
    assert before.p99 < 0.08
    status, out, _ = run_main(
        ["simulate", "--clients", "5", "--timeline", "healthy:1,slow:2:300"], capsys
    )
    assert status == 0
    assert "slow 300 ms 1-3 s" in out
    assert "300 ms  300 ms  300 ms" in out  # p50, p95, p99


# The README's comparisons (issue 13, item 6), on one busy traffic: 10 clients, each making
# 100 calls a second, each with its own breaker.
BUSY = {"clients": 10, "rate": 100.0, "seed": 1}


def rule(**settings: Any) -> ResilientConfig:
    return ResilientConfig(circuit_breaker=CircuitBreakerConfig(**settings))


def test_degraded_upstream_the_consecutive_rule_flaps_the_rate_rule_does_not() -> None:
    scenario = Scenario(timeline=parse_timeline("healthy:5,degraded:20:0.1,healthy:5"), **BUSY)
    consecutive, rate = compare(
        [
            ("consecutive", rule(failure_threshold=3, cooldown_ms=5000)),
            ("rate", rule(failure_rate=0.5, cooldown_ms=5000)),
        ],
        scenario,
    )
    assert consecutive.breaker_opened > len(range(BUSY["clients"]))  # some open more than once
    assert consecutive.trip_reasons["consecutive failures"] > 0
    assert rate.breaker_opened == 0
    assert rate.trip_reasons == {}
    assert rate.phases()[1].success_rate == 1.0  # the retries absorb 10 %
    degraded = consecutive.phases()[1].success_rate
    assert degraded is not None
    assert degraded < 0.9


def test_slow_upstream_trips_only_with_slow_call_ms() -> None:
    scenario = Scenario(timeline=parse_timeline("healthy:5,slow:20:2000,healthy:15"), **BUSY)
    results = compare(
        [
            ("consecutive", rule()),
            ("rate", rule(failure_rate=0.5)),
            ("consecutive, slow", rule(slow_call_ms=1000)),
            ("rate, slow", rule(failure_rate=0.5, slow_call_ms=1000)),
        ],
        scenario,
    )
    plain, rate, slow, rate_slow = results
    assert plain.breaker_opened == rate.breaker_opened == 0
    assert slow.trip_reasons["slow calls"] == BUSY["clients"]  # every breaker, once
    assert rate_slow.trip_reasons["slow call rate"] == BUSY["clients"]
    assert "failure rate" not in rate_slow.trip_reasons
    for result in (slow, rate_slow):
        assert result.phases()[1].load < 0.5  # the breakers shed the slow upstream's load


# One client calling every 100 ms (exactly), max_retries 0, breaker threshold 3, cooldown
# 0.5 s; the upstream answers in exactly 50 ms, fails in 10 ms during [1, 2).
#   1.0, 1.1, 1.2 fail: OPEN at 1.21 until 1.71.  1.3 .. 1.7 rejected.
#   1.8: the probe, fails at 1.81: OPEN until 2.31.  1.9 .. 2.3 rejected.
#   half_open_calls=1: the probe at 2.4 succeeds at 2.45: CLOSED, 0.45 s after the outage.
#   half_open_calls=5: probes at 2.4, 2.5, 2.6, 2.7, 2.8 (each done before the next comes),
#   CLOSED when the fifth succeeds, at 2.85.
RECOVERY = Scenario(
    timeline=parse_timeline("healthy:1,down:1,healthy:2"),
    clients=1,
    rate=10.0,
    arrivals="fixed",
    latency=0.05,
    latency_spread=0.0,
    error_latency=0.01,
)


@pytest.mark.parametrize(("probes", "closed", "probe_calls"), [(1, 0.45, 2), (5, 0.85, 6)])
def test_recovery_closes_after_half_open_calls_successes(
    probes: int, closed: float, probe_calls: int
) -> None:
    events: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=3, cooldown_ms=500, half_open_calls=probes
        ),
        hooks=(events.append,),
    )
    result = simulate(config, RECOVERY)
    changes = [e for e in events if isinstance(e, StateChanged)]
    assert [e.new for e in changes] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]
    assert [e.at for e in changes] == pytest.approx([1.21, 1.8, 1.81, 2.4, 2 + closed])
    assert result.probe_calls == probe_calls
    assert result.trip_reasons == {"consecutive failures": 1, "probe failed": 1}
    back = result.phases()[2]
    assert back.breakers_closed == pytest.approx(closed)
    assert back.rejected == 4  # 2.0 .. 2.3; the probes' round rejects no one
    assert back.successes == 20 - 4


def test_report_shows_openings_by_reason_and_probes() -> None:
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=500),
    )
    report = format_report([simulate(config, RECOVERY, name="mine")], wall=False)
    assert (
        "breakers opened 2 times (consecutive failures 1, probe failed 1), 2 probes; "
        "every breaker closed: 0.45 s after its return"
    ) in report
