"""``smoothapi simulate`` with load control: the stages, hedging and the new upstreams.

The simulator drives ``retry_flow``'s ``Gate`` and ``Leave`` decisions and the
async driver's hedging on its virtual clock.  Hand-checked cases pin the
bulkhead's queue, the token bucket's waits and the hedge race to the event;
seeded runs of the README's comparisons (the ``examples/load-*.toml`` files)
check that each stage moves the figures the way it should; and a config
without stages prints exactly what it printed before load control existed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from smoothapi import (
    BackoffConfig,
    BulkheadConfig,
    CircuitBreakerConfig,
    ConfigError,
    HedgingConfig,
    RateLimitConfig,
    ResilientConfig,
    RetryBudgetConfig,
)
from smoothapi.cli import main
from smoothapi.cli import simulate as simulate_module
from smoothapi.cli._simulate_load import VirtualLoad
from smoothapi.cli.simulate import (
    NO_BREAKER_THRESHOLD,
    Scenario,
    SimulationResult,
    build_config,
    describe_config,
    format_report,
    load_config_file,
    parse_timeline,
    simulate,
)
from smoothapi.events import CallShed, Event, HedgeSent

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NO_BREAKER = CircuitBreakerConfig(failure_threshold=NO_BREAKER_THRESHOLD)
WALL = re.compile(r"simulated in [\d.]+ s of wall time")


def example(name: str) -> tuple[str, ResilientConfig]:
    """``examples/load-NAME.toml``, as ``--config`` reads it."""
    label, spec = load_config_file(EXAMPLES / f"load-{name}.toml")
    return label, build_config(spec, where=label)


def run(name: str, scenario: Scenario, **changes: Any) -> SimulationResult:
    label, config = example(name)
    if changes:
        config = ResilientConfig(**{**_fields(config), **changes})
    return simulate(config, scenario, name=label)


def _fields(config: ResilientConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def one_phase(result: SimulationResult) -> Any:
    (phase,) = result.phases()
    return phase


# -- a config without stages prints what it printed before -------------------------------------
#
# Both outputs were printed by the simulator before issue 15 (commit c9ced30): the text of
# a --compare run with --retry-after and a fallback, and the JSON of a run with a capacity,
# timeouts, a deadline and every phase kind.

BEFORE_TEXT = """\
smoothapi simulate: 5 clients x 20 call/s each (Poisson arrivals), each client with its own breaker; 12 s of virtual time, seed 3
upstream: healthy 0-4 s | down 4-8 s | healthy 8-12 s
  answers in 50 ms (+-50%), fails with a 503 in 5 ms (Retry-After: 0.5)
load = requests reaching the upstream per second / 100 per second (the calls made: its load when healthy)

phase           config                   calls   load  success  fallbacks     p50     p95     p99  recovered
--------------  -----------------------  -----  -----  -------  ---------  ------  ------  ------  ------------
healthy 0-4 s   custom                     410  1.02x   100.0%          0   50 ms   73 ms   75 ms  -
                retries without breaker    410  1.02x   100.0%          0   50 ms   73 ms   75 ms  -
                no retries                 410  1.02x   100.0%          0   50 ms   73 ms   75 ms  -

down 4-8 s      custom                     391  0.04x     0.0%        391    0 ms    0 ms  537 ms  -
                retries without breaker    391  3.16x    38.4%          0  1.58 s  1.65 s  1.67 s  -
                no retries                 391  0.98x     0.0%          0    5 ms    7 ms    7 ms  -

healthy 8-12 s  custom                     437  0.00x     0.0%        437    0 ms    0 ms    0 ms  not yet
                retries without breaker    437  1.47x   100.0%          0   46 ms   72 ms   74 ms  after 0.00 s
                no retries                 437  1.09x   100.0%          0   52 ms   73 ms   75 ms  after 0.00 s

recovered: time from the upstream's return until the success rate of the calls started in the last second stays >= 99%
configs:
  custom: 3 retries (backoff 0.1-30 s, full jitter), breaker opens after 3 failures for 10 s, fallback; 425 requests for 1238 calls, breakers opened 5 times (consecutive failures 5), 0 probes; every breaker closed: not yet
  retries without breaker: 3 retries (backoff 0.1-30 s, full jitter), no breaker, fallback; 2262 requests for 1238 calls, breakers opened 0 times, 0 probes; every breaker closed: 0.00 s after its return
  no retries: no retries, no breaker, fallback; 1238 requests for 1238 calls, breakers opened 0 times, 0 probes; every breaker closed: 0.00 s after its return
simulated in 0.06 s of wall time
"""  # noqa: E501 - the command's own lines

BEFORE_JSON_SHA256 = "23ac1139166dbe8d285db1e7465f6dc54772c100741f9bcb08bd790eb44db909"


def test_a_config_without_stages_prints_what_it_printed_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["simulate", "--clients", "5", "--rate", "20", "--seed", "3", "--compare"]
    argv += ["--timeline", "healthy:4,down:4,healthy:4", "--retry-after", "0.5", "--fallback"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert WALL.sub("", printed) == WALL.sub("", BEFORE_TEXT)

    argv = ["simulate", "--clients", "4", "--rate", "30", "--seed", "5", "--json"]
    argv += ["--timeline", "healthy:3,degraded:3:0.3,slow:3:300,healthy:3", "--capacity", "1.1"]
    argv += ["--failure", "timeout", "--timeout", "0.5", "--set", "deadline=2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert hashlib.sha256(printed.encode()).hexdigest() == BEFORE_JSON_SHA256


# -- hand-checked cases -----------------------------------------------------------------------


def hand_scenario(timeline: str, rate: float, latency: float) -> Scenario:
    """One client, a call every ``1 / rate`` s from t=0, every answer in exactly ``latency``."""
    return Scenario(
        timeline=parse_timeline(timeline),
        clients=1,
        rate=rate,
        arrivals="fixed",
        latency=latency,
        latency_spread=0.0,
    )


def test_bulkhead_queue_by_hand() -> None:
    # One permit, a queue of one, a wait of at most 0.25 s; a call every 0.2 s (t = 0,
    # 0.2, ..., 0.8), each answered in 0.35 s.
    # t=0.0  c0 takes the permit: request at 0, answered at 0.35.
    # t=0.2  c1 queues (its wait runs out at 0.45).
    # t=0.35 c0 done: the permit goes straight to c1 - request at 0.35, answered at 0.7.
    # t=0.4  c2 queues (the permit is taken), until 0.65 at most.
    # t=0.6  c3: the queue is full - shed at once (0 ms).
    # t=0.65 c2's wait runs out: shed after 0.25 s.
    # t=0.7  c1 done: nobody waits, the permit goes back.
    # t=0.8  c4 takes it: request at 0.8, answered at 1.15.
    config = ResilientConfig(
        circuit_breaker=NO_BREAKER,
        bulkhead=BulkheadConfig(max_concurrent=1, max_queue=1, max_wait=0.25),
    )
    result = simulate(config, hand_scenario("healthy:1", 5.0, 0.35))
    assert result.attempt_times == pytest.approx([0.0, 0.35, 0.8])
    assert result.latencies == pytest.approx([0.35, 0.5, 0.25, 0.0, 0.35])
    assert list(result.shed) == [0, 0, 3, 3, 0]  # c2 and c3, by the bulkhead
    assert result.shed_by_stage == {"throttle": 0, "rate_limit": 0, "bulkhead": 2}
    phase = one_phase(result)
    assert (phase.successes, phase.errors, phase.shed) == (3, 2, 2)


def test_rate_limit_waits_by_hand() -> None:
    # 5 tokens a second, a burst of 1, a wait of at most 0.45 s; a call every 0.1 s.
    # The n-th reservation waits n tokens' time (0.2 s each) in arrival order, until the
    # wait would pass 0.45 s: those calls are shed without taking a token.
    # call at   0    0.1  0.2  0.3  0.4  0.5   0.6  0.7   0.8  0.9
    # tokens    1    0.5  0    -0.5 -1   -1.5  -1   -1.5  -1   -1.5   (before reserving)
    # request   0    0.2  0.4  0.6  0.8  shed  1.0  shed  1.2  shed
    config = ResilientConfig(
        circuit_breaker=NO_BREAKER,
        rate_limit=RateLimitConfig(rate=5, burst=1, max_wait=0.45),
    )
    result = simulate(config, hand_scenario("healthy:1", 10.0, 0.01))
    assert result.attempt_times == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2])
    assert list(result.shed) == [0, 0, 0, 0, 0, 2, 0, 2, 0, 2]
    pairs = zip(result.latencies, result.shed, strict=True)
    waits = [round(latency - 0.01, 6) for latency, shed in pairs if not shed]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_hedging_by_hand() -> None:
    # A hedge after 100 ms; a call a second.  The upstream answers in exactly 500 ms until
    # t=4.05, in 50 ms after.  Calls 0-3: the hedge goes out at t+0.1 and would answer at
    # t+0.6, so the first request wins at t+0.5 (the hedge's answer is dropped).  Call 4:
    # its request (t=4.0) answers at 4.5, its hedge (t=4.1, after the change) at 4.15 and
    # wins.  Calls 5-9 are answered in 50 ms: no hedge.
    config = ResilientConfig(hedging=HedgingConfig(delay=0.1))
    result = simulate(config, hand_scenario("slow:4.05:500,healthy:5.95", 1.0, 0.05))
    assert result.hedge_times == pytest.approx([0.1, 1.1, 2.1, 3.1, 4.1])
    assert result.hedges_won == 1
    assert result.total_attempts == 15
    assert result.latencies == pytest.approx([0.5] * 4 + [0.15] + [0.05] * 5)
    slow, healthy = result.phases()
    assert (slow.hedges, healthy.hedges) == (4, 1)  # each counted in the phase it was sent


def test_a_hedge_passes_the_stages_without_waiting() -> None:
    # The same traffic with a bulkhead of one permit: the first request holds it, so no
    # hedge is ever admitted (it would have to wait), and the latencies are the requests'.
    config = ResilientConfig(
        hedging=HedgingConfig(delay=0.1), bulkhead=BulkheadConfig(max_concurrent=1)
    )
    result = simulate(config, hand_scenario("slow:4.05:500,healthy:5.95", 1.0, 0.05))
    assert result.hedge_times == []
    assert result.total_attempts == 10
    assert result.latencies == pytest.approx([0.5] * 5 + [0.05] * 5)


def test_no_hedge_while_the_breaker_counts_a_failure() -> None:
    # Call 0 fails (a 503 at t=0): the breaker counts a failure, so call 1 (t=1, 500 ms)
    # gets no hedge; its success clears the count, and calls 2 and 3 are hedged again.
    config = ResilientConfig(backoff=BackoffConfig(max_retries=0), hedging=HedgingConfig(delay=0.1))
    result = simulate(config, hand_scenario("down:1,slow:3:500", 1.0, 0.05))
    assert result.hedge_times == pytest.approx([2.1, 3.1])
    assert result.attempt_times == pytest.approx([0.0, 1.0, 2.0, 2.1, 3.0, 3.1])


def test_hedges_spend_the_retry_budget() -> None:
    # A budget of 2 tokens that earns 0.01 per success: two hedges, then none.
    config = ResilientConfig(
        hedging=HedgingConfig(delay=0.1),
        retry_budget=RetryBudgetConfig(max_tokens=2, token_ratio=0.01),
    )
    result = simulate(config, hand_scenario("slow:5:500", 1.0, 0.05))
    assert len(result.hedge_times) == 2


# -- the README's comparisons: each stage moves the figures its way ---------------------------

QUOTA = Scenario(timeline=parse_timeline("healthy:8:quota=800"), clients=10, rate=100, seed=1)


def test_rate_limit_keeps_the_upstream_within_its_quota() -> None:
    none = one_phase(run("none", QUOTA))
    limited = one_phase(run("rate-limit", QUOTA))
    # Without a limit the fleet sends its 1000/s and gets 429s over the quota of 800.
    assert none.peak > 800
    assert none.rate_limited > 0
    # 10 clients x (75/s + a burst of 5): never more than 800 in any second, no 429.
    assert limited.peak <= 800
    assert limited.rate_limited == 0
    assert limited.shed > 0  # the calls over the limit were shed without a request
    assert limited.success_rate > none.success_rate  # no breaker tripped by 429s


def test_following_the_server_alone_cuts_the_429s() -> None:
    # Without a breaker (the 429s would trip it): a bucket too big to limit anything
    # changes nothing unless it follows the server's Retry-After and RateLimit.
    deaf = one_phase(
        run(
            "follow-server",
            QUOTA,
            circuit_breaker=NO_BREAKER,
            rate_limit=RateLimitConfig(rate=1000, follow_server=False),
        )
    )
    none = one_phase(run("none", QUOTA, circuit_breaker=NO_BREAKER))
    follows = one_phase(run("follow-server", QUOTA, circuit_breaker=NO_BREAKER))
    assert (deaf.attempts, deaf.rate_limited) == (none.attempts, none.rate_limited)
    assert follows.rate_limited < 0.8 * none.rate_limited
    assert follows.attempts < none.attempts
    assert follows.success_rate > none.success_rate


TAIL = Scenario(
    timeline=parse_timeline("healthy:10:tail=3%:tail_ms=2000"), clients=10, rate=100, seed=1
)


def test_hedging_cuts_the_slow_tail() -> None:
    none = run("none", TAIL)
    hedged = run("hedging", TAIL)
    at_p95 = run("hedging-p95", TAIL)
    before = one_phase(none)
    assert before.p99 == pytest.approx(2.0)  # 3% of the answers take 2 s
    for result in (hedged, at_p95):
        phase = one_phase(result)
        assert phase.p99 < 0.5
        assert phase.p50 == pytest.approx(before.p50, abs=0.005)
        assert result.hedges_won > 0
        # No failure: every request is a call's first or a hedge.
        assert result.total_attempts == result.calls + len(result.hedge_times)
    # The fixed delay hedges only the tail (healthy answers take at most 75 ms); the p95
    # hedges about 5% of the requests.
    assert 0.02 * none.calls < len(hedged.hedge_times) < 0.04 * none.calls
    assert len(at_p95.hedge_times) > len(hedged.hedge_times)


OVERLOAD = Scenario(
    timeline=parse_timeline("healthy:8"), clients=10, rate=100, capacity=0.5, seed=1
)


def test_throttling_follows_a_partial_overload() -> None:
    none = run("no-breaker", OVERLOAD)
    breaker = run("breaker", OVERLOAD)
    throttle = run("throttle", OVERLOAD)
    n, b, t = (one_phase(r) for r in (none, breaker, throttle))
    # The upstream serves half its load.  Retries without a breaker triple the load; the
    # breakers trip and stop nearly everything; the throttle sends about k=2 times what is
    # accepted - about the healthy load - and keeps the success rate.
    assert n.load > 2.5
    assert throttle.total_attempts < none.total_attempts / 2
    assert 0.8 < t.load < 1.3
    assert t.success_rate > n.success_rate - 0.05
    assert b.success_rate < t.success_rate / 2
    assert t.shed > 0
    assert throttle.shed_by_stage["throttle"] == t.shed


def test_bulkhead_bounds_the_requests_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    # One breaker (so one bulkhead) for 10 clients x 100 calls/s against answers of 200 ms:
    # about 200 requests would be in flight; the bulkhead allows 20.
    scenario = Scenario(
        timeline=parse_timeline("slow:3:200"), clients=10, rate=100, shared_breaker=True, seed=2
    )
    bulkhead = BulkheadConfig(max_concurrent=20, max_queue=50, max_wait=0.1)

    def in_flight(config: ResilientConfig) -> tuple[int, SimulationResult]:
        spans: list[tuple[float, float]] = []
        original = simulate_module._Upstream.request

        def request(self: Any, now: float) -> Any:
            outcome, latency = original(self, now)
            spans.append((now, now + latency))
            return outcome, latency

        with monkeypatch.context() as patch:
            patch.setattr(simulate_module._Upstream, "request", request)
            result = simulate(config, scenario)
        moments = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        peak = level = 0
        for _, step in moments:  # an answer at the moment of a send frees its place first
            level += step
            peak = max(peak, level)
        return peak, result

    unbounded, _ = in_flight(ResilientConfig())
    bounded, result = in_flight(ResilientConfig(bulkhead=bulkhead))
    assert unbounded > 100
    assert bounded == 20
    assert result.shed_by_stage["bulkhead"] > 0


# -- the events, the permits, determinism -------------------------------------------------------


# Every stage at work: a slow second fills the bulkhead, a degraded phase has the throttle
# shed, the rate limit sheds throughout (8 clients x 80/s for 60/s each), and a last phase
# with a slow tail and a quota gets hedges and 429s.
ALL_STAGES = ResilientConfig(
    backoff=BackoffConfig(max_retries=2),
    circuit_breaker=NO_BREAKER,
    bulkhead=BulkheadConfig(max_concurrent=8, max_queue=4, max_wait=0.05),
    rate_limit=RateLimitConfig(rate=60, burst=5, max_wait=0.2),
    hedging=HedgingConfig(delay=0.08),
    throttle=build_config({"throttle": {"window_ms": 5000}}).throttle,
)
BUSY = Scenario(
    timeline=parse_timeline("slow:1:400,degraded:3:0.7,healthy:3:tail=10%:tail_ms=500:quota=300"),
    clients=8,
    rate=80,
    capacity=0.9,
    retry_after=0.2,
    seed=11,
)


def test_events_and_figures_agree_and_no_permit_is_stranded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[Event] = []
    stages: list[VirtualLoad] = []

    class Recorded(VirtualLoad):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            stages.append(self)

    monkeypatch.setattr(simulate_module, "VirtualLoad", Recorded)
    config = ResilientConfig(**{**_fields(ALL_STAGES), "hooks": (events.append,)})
    result = simulate(config, BUSY)
    shed = [e for e in events if isinstance(e, CallShed)]
    hedges = [e for e in events if isinstance(e, HedgeSent)]
    assert len(shed) == sum(result.shed_by_stage.values()) == sum(map(bool, result.shed))
    assert {e.stage for e in shed} == {"throttle", "rate_limit", "bulkhead"}
    assert len(hedges) == len(result.hedge_times) > 0
    assert result.limited_times
    assert len(stages) == BUSY.clients
    for stage in stages:  # every call is over: every permit back, nobody queued
        assert stage.active == 0
        assert not stage.queue


def test_same_seed_same_report() -> None:
    first = format_report([simulate(ALL_STAGES, BUSY)], wall=False)
    again = format_report([simulate(ALL_STAGES, BUSY)], wall=False)
    assert first == again
    other = Scenario(**{**{f: getattr(BUSY, f) for f in BUSY.__dataclass_fields__}, "seed": 12})
    assert format_report([simulate(ALL_STAGES, other)], wall=False) != first
    for column in ("max/s", "429s", "shed", "hedges"):
        assert column in first
    assert "shed by throttle" in first
    assert "hedges sent" in first


# -- the command line and the files ------------------------------------------------------------


def test_examples_build_and_say_what_they_set() -> None:
    found = sorted(path.stem for path in EXAMPLES.glob("load-*.toml"))
    assert found == [
        "load-breaker",
        "load-follow-server",
        "load-hedging",
        "load-hedging-p95",
        "load-no-breaker",
        "load-none",
        "load-rate-limit",
        "load-throttle",
    ]
    words = {
        "rate-limit": "rate limit 75/s (burst 5, waits up to 100 ms, follows the server)",
        "follow-server": "rate limit 1000/s (burst 1000, waits up to 1 s, follows the server)",
        "hedging": "1 hedge after 100 ms",
        "hedging-p95": "1 hedge after the p95 of recent attempts",
        "throttle": "adaptive throttling (k=2 over 10 s)",
        "no-breaker": "no breaker",
    }
    for name, text in words.items():
        assert text in describe_config(example(name)[1]), name


def test_cli_reads_stage_tables_from_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stages.toml"
    path.write_text(
        'name = "staged"\n[bulkhead]\nmax_concurrent = 3\n[rate_limit]\nrate = 40\n'
        "[hedging]\ndelay = 0.2\n[throttle]\nk = 1.5\n"
    )
    argv = ["simulate", "--clients", "2", "--rate", "50", "--seed", "4", "--json"]
    argv += ["--timeline", "healthy:2:quota=60", "--config", str(path)]
    assert main(argv) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    config = result["config"]
    assert config["bulkhead"]["max_concurrent"] == 3
    assert config["rate_limit"]["rate"] == 40.0
    assert config["hedging"]["delay"] == 0.2
    assert config["throttle"]["k"] == 1.5
    assert set(result["shed"]) == {"throttle", "rate_limit", "bulkhead"}
    assert set(result["hedges"]) == {"sent", "won"}
    phase = result["phases"][0]
    assert {"shed", "hedges", "rate_limited", "peak_per_second"} <= set(phase)


def test_timeline_options() -> None:
    tail, quota, both = parse_timeline(
        "healthy:5:tail=5%:tail_ms=2000,degraded:5:0.1:quota=800,slow:5:300:quota=9:tail=0.5:tail_ms=900"
    )
    assert (tail.tail, tail.tail_latency, tail.quota) == (0.05, 2.0, None)
    assert (quota.failure_rate, quota.quota, quota.tail) == (0.1, 800, 0.0)
    assert (both.latency, both.quota, both.tail, both.tail_latency) == (0.3, 9, 0.5, 0.9)
    assert tail.label == "healthy (5% in 2.00 s)"
    assert quota.label == "degraded 10% (quota 800/s)"
    assert both.label == "slow 300 ms (50% in 900 ms, quota 9/s)"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("healthy:5:tail=5%", "needs both tail=SHARE and tail_ms=MS"),
        ("healthy:5:tail_ms=100", "needs both"),
        ("healthy:5:tail=2:tail_ms=100", "between 0 and 1"),
        ("healthy:5:tail=0.1:tail_ms=-3", "positive number of milliseconds"),
        ("healthy:5:quota=0", "whole number of requests per second >= 1"),
        ("healthy:5:quota=2.5", "whole number"),
        ("healthy:5:quota=1:quota=2", "given twice"),
        ("healthy:5:burst=3", "unknown option 'burst'"),
        ("degraded:5:quota=3", "degraded:SECONDS:FAILURE_RATE"),
    ],
)
def test_timeline_options_are_checked(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_timeline(spec)
