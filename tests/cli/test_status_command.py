"""``python -m smoothapi status``: the shared breakers of a Redis store, read from outside.

The breakers are real shared breakers (``CircuitBreakerConfig(store=RedisStore(...))``)
on the session's real Redis, each test under a key prefix of its own; the command runs
in-process (``main([...])``) and as a real subprocess.  Times are checked against the
cooldowns the tests set (an hour, a day), never against how fast anything ran.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from httpserver import free_port

from smoothapi import CircuitBreaker, CircuitBreakerConfig, CircuitState
from smoothapi.breaker import REJECTED
from smoothapi.cli import main
from smoothapi.storage import RedisStore
from smoothapi.storage.protocol import BreakerStatus

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
TIMEOUT = 5.0
ESC = "\x1b"

UNICODE_NAME = "注文 サービス ✓"  # wide characters, a space, a symbol
HOSTILE_NAME = f"users\n{ESC}[31mred"  # a newline and an ANSI colour code


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def store(client: redis.Redis, redis_prefix: str) -> RedisStore:
    """The store the fleet's breakers use: this test's own prefix on the session server."""
    return RedisStore(client, prefix=redis_prefix)


def shared(store: RedisStore, name: str, cooldown_ms: float = HOUR_MS) -> CircuitBreaker:
    """A fleet-shared breaker: threshold 3, built the way applications build one."""
    config = CircuitBreakerConfig(failure_threshold=3, cooldown_ms=cooldown_ms, store=store)
    return CircuitBreaker(config, name=name)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure(breaker.acquire())


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "smoothapi", "status", *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def table_rows(out: str) -> dict[str, list[str]]:
    """The table's rows by name: [state, failures, open for, window, reason] (columns are 2+
    spaces apart)."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    rows: dict[str, list[str]] = {}
    for line in lines[header + 1 :]:
        name, *rest = re.split(r" {2,}", line.strip())
        rows[name] = rest
    return rows


def seconds(text: str) -> float:
    """'9.8s more', '4m05s more', '23h59m more' -> seconds."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)? more", text)
    assert match is not None, text
    hours, minutes, secs = (float(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


def width(text: str) -> int:
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


@pytest.fixture
def fleet(store: RedisStore) -> RedisStore:
    """One OPEN breaker (tripped by 3 failures, open for a day), one CLOSED with 2 failures."""
    fail(shared(store, "payments api", cooldown_ms=DAY_MS), 3)
    fail(shared(store, "search"), 2)
    return store


# -- the table, in-process and from a real subprocess ----------------------------------------


def test_status_prints_names_states_failures_and_time_left(
    fleet: RedisStore, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` lists each breaker of the prefix once, sorted by name, with its state, its
    failure count and - for OPEN - the time left, at most the cooldown; exit 0."""
    status, out, err = run_main(["status", "--redis", redis_url, "--prefix", fleet.prefix], capsys)
    assert (status, err) == (0, "")
    assert f"2 breakers stored under prefix {fleet.prefix!r} on {fleet.label}:" in out
    rows = table_rows(out)
    assert list(rows) == ["payments api", "search"]
    state, failures, left, window, reason = rows["payments api"]
    assert (window, reason) == ("-", "consecutive failures")
    assert (state, failures) == ("OPEN", "3")
    assert 0 < seconds(left) <= DAY_MS / 1000
    assert rows["search"] == ["CLOSED", "2", "-", "-", "-"]


def test_status_as_a_subprocess_reads_what_the_fleet_wrote(
    fleet: RedisStore, redis_url: str
) -> None:
    """`python -m smoothapi status --redis URL --prefix P`, a process of its own, sees the
    state other processes' breakers left in Redis."""
    proc = run_cli("--redis", redis_url, "--prefix", fleet.prefix)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    rows = table_rows(proc.stdout)
    assert list(rows) == ["payments api", "search"]
    assert rows["payments api"][:2] == ["OPEN", "3"]
    assert 0 < seconds(rows["payments api"][2]) <= DAY_MS / 1000
    assert rows["search"] == ["CLOSED", "2", "-", "-", "-"]


def test_redis_url_defaults_to_the_environment(fleet: RedisStore, redis_url: str) -> None:
    """Without --redis, the URL comes from SMOOTHAPI_REDIS_URL."""
    env = {**os.environ, "SMOOTHAPI_REDIS_URL": redis_url}
    proc = run_cli("--prefix", fleet.prefix, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [b["name"] for b in json.loads(proc.stdout)] == ["payments api", "search"]


def test_json_is_one_object_per_breaker_sorted_by_name(
    fleet: RedisStore, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints a JSON list of objects with every field of the record."""
    status, out, _ = run_main(
        ["status", "--redis", redis_url, "--prefix", fleet.prefix, "--json"], capsys
    )
    assert status == 0
    records = json.loads(out)
    assert [r["name"] for r in records] == ["payments api", "search"]
    opened, closed = records
    assert opened["key"] == fleet.key("payments api")
    assert (opened["state"], opened["failures"]) == ("OPEN", 3)
    assert 0 < opened["retry_after"] <= DAY_MS / 1000
    assert (opened["probe_due"], opened["probe_in_flight"]) == (False, False)
    assert (opened["reason"], opened["window"]) == ("consecutive failures", None)
    assert closed == {
        "name": "search",
        "key": fleet.key("search"),
        "state": "CLOSED",
        "failures": 2,
        "retry_after": 0.0,
        "probe_due": False,
        "probe_in_flight": False,
        "probes": 0,
        "reason": "",
        "window": None,
    }


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_an_empty_prefix_says_so_and_exits_0(
    redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    """No breaker under the prefix: a line saying so (`[]` with --json), exit 0."""
    argv = ["status", "--redis", redis_url, "--prefix", redis_prefix]
    status, out, err = run_main([*argv, "--json"] if as_json else argv, capsys)
    assert (status, err) == (0, "")
    if as_json:
        assert json.loads(out) == []
    else:
        assert out.startswith(f"No breakers are stored under prefix {redis_prefix!r} on redis")
        assert out.endswith(".\n")
        assert out.count("\n") == 1


# -- what each state means for the next call --------------------------------------------------

Drive = Callable[[CircuitBreaker], Any]


def _probe(br: CircuitBreaker) -> None:
    br.force_open(cooldown_ms=0)
    assert br.acquire() > 0  # this caller holds the probe (and never reports)


def _released_probe(br: CircuitBreaker) -> None:
    br.force_open(cooldown_ms=0)
    br.release(br.acquire())


#: name -> (what the fleet did, state, failures, open, probe_due, probe_in_flight, label)
STATES: dict[str, tuple[Drive, CircuitState, int, bool, bool, bool, str]] = {
    "closed, failures counted": (
        lambda br: fail(br, 2),
        CLOSED, 2, False, False, False, "CLOSED",
    ),
    "tripped by failures, cooldown running": (
        lambda br: fail(br, 3),
        OPEN, 3, True, False, False, "OPEN",
    ),
    "forced open, cooldown running": (
        lambda br: br.force_open(),
        OPEN, 0, True, False, False, "OPEN",
    ),
    "open, cooldown over: the next call probes": (
        lambda br: br.force_open(cooldown_ms=0),
        OPEN, 0, False, True, False, "OPEN (probe due)",
    ),
    "half-open, a probe holds the lease": (
        _probe,
        HALF_OPEN, 0, False, False, True, "HALF_OPEN (probe in flight)",
    ),
    "half-open, the probe was given back": (
        _released_probe,
        HALF_OPEN, 0, False, True, False, "HALF_OPEN (probe due)",
    ),
    "reset after failures": (
        lambda br: (fail(br, 3), br.reset()),
        CLOSED, 0, False, False, False, "CLOSED",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(STATES))
def test_each_state_reads_as_the_next_call_will_find_it(
    store: RedisStore, redis_url: str, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """breakers() reports the stored state, failures and time left; probe_due means the
    next call is admitted as the probe, probe_in_flight that it is rejected.  The command
    shows the same as its STATE column."""
    drive, state, failures, is_open, due, in_flight, label = STATES[case]
    drive(shared(store, case))
    [found] = store.breakers()
    assert (found.name, found.key) == (case, store.key(case))
    assert (found.state, found.failures) == (state, failures)
    assert (found.probe_due, found.probe_in_flight) == (due, in_flight)
    if is_open:
        assert 0 < found.retry_after <= HOUR_MS / 1000
    else:
        assert found.retry_after == 0.0

    status, out, _ = run_main(["status", "--redis", redis_url, "--prefix", store.prefix], capsys)
    assert status == 0
    assert table_rows(out)[case][:2] == [label, str(failures)]

    # What the flags promise, checked with another process's view of the same breaker.
    other = shared(RedisStore(store.client, prefix=store.prefix), case)
    ticket = other.acquire()
    if due:
        assert ticket > 0
        assert ticket % 2 == 1
    elif in_flight or is_open:
        assert ticket == REJECTED
    else:
        assert ticket >= 0
        assert ticket % 2 == 0


# -- names ------------------------------------------------------------------------------------


def test_unicode_and_hostile_names_show_readably_and_stay_aligned(
    store: RedisStore, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spaces and wide characters print as they are, with the columns aligned on screen;
    control characters print escaped (no raw newline or escape code reaches the terminal);
    --json keeps every name exactly."""
    names = ["a b", UNICODE_NAME, HOSTILE_NAME, ""]
    for name in names:
        fail(shared(store, name), 1)
    status, out, _ = run_main(["status", "--redis", redis_url, "--prefix", store.prefix], capsys)
    assert status == 0
    assert ESC not in out
    rows = table_rows(out)
    assert set(rows) == {"a b", UNICODE_NAME, r"users\n\x1b[31mred", "(empty name)"}
    assert all(row == ["CLOSED", "1", "-", "-", "-"] for row in rows.values())
    lines = out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("NAME ")) :]
    state_column = {width(line[: line.index(cells[0])]) for line, cells in _cells(table)}
    assert len(state_column) == 1, table

    status, out, _ = run_main(
        ["status", "--redis", redis_url, "--prefix", store.prefix, "--json"], capsys
    )
    assert status == 0
    assert sorted(r["name"] for r in json.loads(out)) == sorted(names)


def _cells(table: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Each table line with its cells after the name (STATE first)."""
    for line in table:
        yield line, re.split(r" {2,}", line.strip())[1:]


# -- the store's contents: paging, foreign keys, escaping ------------------------------------


def test_breakers_pages_through_scan_and_lists_each_breaker_once(store: RedisStore) -> None:
    """More breakers than one SCAN page and one pipeline hold: every one is listed, once,
    sorted by name."""
    names = [f"svc-{i:04d}" for i in range(1234)]
    pipe = store.client.pipeline(transaction=False)
    for name in names:
        pipe.hset(store.key(name), mapping={"state": "CLOSED", "failures": 1, "name": name})
    pipe.execute()
    found = store.breakers()
    assert [b.name for b in found] == names
    assert {b.failures for b in found} == {1}


def test_keys_that_hold_no_breaker_are_skipped_and_missing_fields_read_fresh(
    store: RedisStore, client: redis.Redis
) -> None:
    """Under the prefix, a string at a breaker-shaped key and hashes at other keys are not
    breakers; a breaker hash with missing fields reads as the scripts read it."""
    digest = "0" * 40
    client.set(f"{store.prefix}:breaker:{{{digest}}}", "not a hash")
    client.hset(f"{store.prefix}:breaker:other", "state", "OPEN")
    client.hset(f"{store.prefix}:elsewhere", "state", "OPEN")
    bare = f"{store.prefix}:breaker:{{{'1' * 40}}}"
    client.hset(bare, "gen", 3)  # no state, no failures, no name
    opened = f"{store.prefix}:breaker:{{{'2' * 40}}}"
    client.hset(opened, "state", "OPEN")  # no open_until: the next call probes
    assert store.breakers() == [
        BreakerStatus(None, bare, CLOSED, 0, 0.0, probe_due=False, probe_in_flight=False),
        BreakerStatus(None, opened, OPEN, 0, 0.0, probe_due=True, probe_in_flight=False),
    ]


def test_glob_characters_in_the_prefix_match_only_themselves(
    client: redis.Redis, redis_prefix: str
) -> None:
    """A prefix with *, ? and [] lists its own breakers only, not those of prefixes its
    characters would match as a SCAN pattern."""
    mine = RedisStore(client, prefix=f"{redis_prefix}:a*[1]?")
    lookalike = RedisStore(client, prefix=f"{redis_prefix}:ab1x")
    fail(shared(mine, "mine"), 1)
    fail(shared(lookalike, "lookalike"), 1)
    assert [b.name for b in mine.breakers()] == ["mine"]
    assert [b.name for b in lookalike.breakers()] == ["lookalike"]


def test_a_corrupt_breaker_is_reported_and_the_others_are_listed(
    store: RedisStore, client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A breaker hash with a state no script writes is reported as malformed, naming its key
    and what is wrong; every other breaker is still listed (exit 1: read, with problems)."""
    fail(shared(store, "healthy"), 1)
    key = store.key("corrupt")
    client.hset(key, mapping={"state": "AJAR", "name": "corrupt"})
    bad_count = store.key("bad count")
    client.hset(bad_count, mapping={"state": "CLOSED", "failures": "many", "name": "bad count"})
    survey = store.survey()
    assert [b.name for b in survey.breakers] == ["healthy"]
    assert store.breakers() == survey.breakers
    assert [(m.name, m.key) for m in survey.malformed] == [
        ("bad count", bad_count),
        ("corrupt", key),
    ]
    assert "AJAR" in survey.malformed[1].problem
    assert "state" in survey.malformed[1].problem
    assert "'failures'" in survey.malformed[0].problem

    status, out, err = run_main(["status", "--redis", redis_url, "--prefix", store.prefix], capsys)
    assert status == 1
    rows = table_rows(out)
    assert rows["healthy"] == ["CLOSED", "1", "-", "-", "-"]
    assert "1 breaker and 2 malformed entries stored" in out
    flagged = [line.split("  ")[0] for line in out.splitlines() if "MALFORMED" in line]
    assert flagged == [f"bad count ({bad_count})", f"corrupt ({key})"]
    assert err.count("\n") == 2
    assert key in err
    assert bad_count in err
    assert "AJAR" in err

    status, out, err = run_main(
        ["status", "--redis", redis_url, "--prefix", store.prefix, "--json"], capsys
    )
    assert status == 1
    assert [r["name"] for r in json.loads(out)] == ["healthy"]
    assert key in err


# -- errors: exit 2, one line, no traceback --------------------------------------------------


def test_an_unreachable_redis_exits_2_with_one_clear_line() -> None:
    """Nothing listens on the port: exit 2, one line on stderr naming the server, nothing on
    stdout, no traceback."""
    port = free_port()
    proc = run_cli("--redis", f"redis://127.0.0.1:{port}/0")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("smoothapi status: error: cannot read the breakers")
    assert f"127.0.0.1:{port}" in proc.stderr
    assert "Connection refused" in proc.stderr or "ConnectionError" in proc.stderr


BAD_INVOCATIONS = {
    "malformed URL": (["--redis", "http://example.com"], "could not use the URL"),
    "bad port": (["--redis", "redis://127.0.0.1:notaport/0"], "could not use the URL"),
    "database not a number": (["--redis", "redis://127.0.0.1:1/abc"], "must be a number"),
    "prefix with a brace": (["--redis", "redis://127.0.0.1:1/0", "--prefix", "a{b"], "prefix"),
    "no URL anywhere": ([], "pass --redis URL or set SMOOTHAPI_REDIS_URL"),
    "zero timeout": (["--redis", "redis://127.0.0.1:1/0", "--timeout", "0"], "timeout"),
}


@pytest.mark.parametrize("case", list(BAD_INVOCATIONS))
def test_bad_invocations_exit_2_with_one_line(
    case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL, prefix or timeout RedisStore refuses, or no URL at all: exit 2 and one line on
    stderr that says what is wrong (the URL itself is never echoed)."""
    monkeypatch.delenv("SMOOTHAPI_REDIS_URL", raising=False)
    argv, message = BAD_INVOCATIONS[case]
    status, out, err = run_main(["status", *argv], capsys)
    assert (status, out) == (2, "")
    assert err.startswith("smoothapi status: error: ")
    assert message in err
    assert err.count("\n") == 1, err
    assert "example.com" not in err


def test_a_non_ascii_prefix_finds_its_breakers(
    client: redis.Redis, redis_prefix: str, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    """redis-py writes str keys as UTF-8: a prefix such as 'café' must read back the same."""
    store = RedisStore(client, prefix=f"{redis_prefix}-café")
    fail(shared(store, "search"), 2)
    assert [(b.name, b.failures) for b in store.breakers()] == [("search", 2)]
    status, out, _ = run_main(["status", "--redis", redis_url, "--prefix", store.prefix], capsys)
    assert status == 0
    assert table_rows(out)["search"] == ["CLOSED", "2", "-", "-", "-"]


# -- the trip rules: the last opening's reason, a rate breaker's window, several probes -----


def test_status_shows_the_reason_and_a_rate_breakers_window(
    store: RedisStore, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CLOSED rate breaker shows its fleet window (failed/calls, slow); a tripped one the
    words of its trip; the consecutive rule shows no window.  Table and JSON agree."""
    rate = {"failure_rate": 0.5, "minimum_calls": 4, "window_ms": HOUR_MS, "cooldown_ms": DAY_MS}
    healthy = CircuitBreaker(
        CircuitBreakerConfig(slow_call_ms=100, store=store, **rate), name="orders"
    )
    for elapsed in (0.01, 0.01, 0.5):
        healthy.record_success(healthy.acquire(), elapsed=elapsed)
    healthy.record_success(healthy.acquire())  # batched: sent with the read below
    assert healthy.window is not None
    tripped = CircuitBreaker(CircuitBreakerConfig(store=store, **rate), name="payments")
    for _ in range(4):
        tripped.record_failure(tripped.acquire())
    fail(shared(store, "search"), 3)

    status, out, err = run_main(["status", "--redis", redis_url, "--prefix", store.prefix], capsys)
    assert (status, err) == (0, "")
    rows = table_rows(out)
    assert rows["orders"] == ["CLOSED", "1", "-", "1/4 failed, 1 slow", "-"]
    assert rows["payments"][0] == "OPEN"
    # The window restarts when the breaker closes: empty while it is open.
    assert rows["payments"][3:] == ["0/0 failed", "failure rate 1.00 over 4 calls"]
    assert rows["search"][3:] == ["-", "consecutive failures"]

    _, out, _ = run_main(
        ["status", "--redis", redis_url, "--prefix", store.prefix, "--json"], capsys
    )
    records = {r["name"]: r for r in json.loads(out)}
    assert records["orders"]["window"] == {"calls": 4, "failures": 1, "slow": 1}
    assert records["payments"]["window"] == {"calls": 0, "failures": 0, "slow": 0}
    assert records["payments"]["reason"] == "failure rate 1.00 over 4 calls"
    assert records["search"]["window"] is None


def test_status_counts_the_probes_in_flight(
    store: RedisStore, client: redis.Redis, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    """``half_open_calls=3``: two probes running leave a permit free (probe due); a
    HALF_OPEN hash written by a smoothapi before the trip rules (``lease_until`` and no
    ``probes``) reads as its one probe in flight."""
    config = CircuitBreakerConfig(half_open_calls=3, cooldown_ms=HOUR_MS, store=store)
    breaker = CircuitBreaker(config, name="probing")
    breaker.force_open(cooldown_ms=0)
    assert breaker.acquire() % 2 == 1
    assert breaker.acquire() % 2 == 1
    older = store.key("older")
    client.hset(
        older,
        mapping={"state": "HALF_OPEN", "gen": 7, "lease_until": 2**52, "name": "older"},
    )
    survey = {b.name: b for b in store.breakers()}
    assert (survey["probing"].probes, survey["probing"].probe_due) == (2, True)
    assert survey["probing"].reason == "forced open"
    assert (survey["older"].probes, survey["older"].probe_due) == (1, False)
    status, out, _ = run_main(["status", "--redis", redis_url, "--prefix", store.prefix], capsys)
    assert status == 0
    rows = table_rows(out)
    assert rows["probing"][0] == "HALF_OPEN (2 probes in flight, probe due)"
    assert rows["older"][0] == "HALF_OPEN (probe in flight)"
