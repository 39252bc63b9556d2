"""One breaker contract, two homes for its state: process memory and Redis.

DESIGN.md, "The breaker" and "Beyond one process"; issue 5.  The table-driven
scenarios run against ``CircuitBreaker(config)`` (on a FakeClock) and against
``CircuitBreaker(config, store=RedisStore(...))`` (on the Redis server's
clock, against the real server of the ``redis_url`` fixture).  Every Redis
test has a key prefix of its own.

Then what only the Redis store has: keys derived from names, NOSCRIPT
reloads, probe leases, one round trip per healthy call, and "never worse
than no Redis" - an unreachable server, an outage and a recovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import redis
import redis.asyncio
from httpserver import Reply, ScriptedServer, free_port
from redis.backoff import NoBackoff
from redis.retry import Retry
from redisserver import RedisServer

import smoothapi
from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    ConfigTypeError,
    Event,
    ResilientConfig,
    ResilientTransport,
    StateChanged,
    StoreRecovered,
    StoreUnavailable,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.storage import CLEAN, RedisStore, SharedCircuitBreaker, _watch
from smoothapi.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

LONG_MS = 10_000.0  # a cooldown no test waits out
SHORT_MS = 250.0  # a cooldown the Redis scenarios wait out on the server's clock
TIMEOUT = 2.0  # client timeouts against the shared test server
WAIT = 10.0  # bound on every polling loop; a passing run never comes near it
POLL = 0.005
EPSILON = 1e-9  # float noise of a FakeClock reading


def _ordinary(ticket: int) -> bool:
    """An ordinary call's ticket: its CLOSED period's even number, for both breakers."""
    return ticket >= 0 and ticket % 2 == 0


def _prefix() -> str:
    return f"t{uuid.uuid4().hex}"


def _client(url: str, timeout: float = TIMEOUT, **kwargs: Any) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, **kwargs
    )


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    """A sync RedisStore on the session server, with a key prefix of its own."""
    client = _client(redis_url)
    try:
        yield RedisStore(client, prefix=_prefix())
    finally:
        client.close()


# -- the subject: one breaker, its state in memory or in Redis -----------------------------


@dataclass
class Subject:
    """A breaker under test and how to let its cooldown pass."""

    breaker: CircuitBreaker
    cooldown_ms: float
    clock: FakeClock | None  # memory: time moves by hand; Redis: the server's clock runs

    def ordinary(self, ticket: int) -> bool:
        """Whether ``ticket`` admits an ordinary call (not the probe, not a rejection)."""
        return _ordinary(ticket)

    def probe(self, ticket: int) -> bool:
        """Whether ``ticket`` is the HALF_OPEN probe's."""
        return ticket > 0 and not self.ordinary(ticket)

    def cool(self, ms: float | None = None) -> None:
        """Let the cooldown (or ``ms``) pass, without claiming the probe."""
        if self.clock is not None:
            self.clock.advance((self.cooldown_ms if ms is None else ms) / 1000.0)
            return
        _until(lambda: self.breaker.retry_after == 0.0, "the cooldown")


Make = Callable[..., Subject]


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """Builds breakers for one test: in memory on a FakeClock, or in Redis (fresh prefix)."""
    clients: list[redis.Redis] = []

    def build(
        threshold: int = 3, cooldown_ms: float = LONG_MS, hooks: tuple[Any, ...] = ()
    ) -> Subject:
        config = CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=cooldown_ms)
        if request.param == "memory":
            clock = FakeClock(start=100.0)
            return Subject(
                CircuitBreaker(config, name="svc", clock=clock, hooks=hooks), cooldown_ms, clock
            )
        client = _client(request.getfixturevalue("redis_url"))
        clients.append(client)
        store = RedisStore(client, prefix=_prefix())
        breaker = CircuitBreaker(config, name="svc", hooks=hooks, store=store)
        assert isinstance(breaker, SharedCircuitBreaker)
        return Subject(breaker, cooldown_ms, None)

    try:
        yield build
    finally:
        for client in clients:
            client.close()


# -- table-driven contract ---------------------------------------------------------------------
#
# A scenario is a list of (action, expected state, expected failure_count or None = unpinned).
#   "fail" / "ok"        report the held ticket (0 unless a probe is held); a probe is consumed
#   "fail0" / "ok0"      report ticket 0 whatever is held (admitted before the breaker opened)
#   "acquire=call"       acquire() admits an ordinary call (an even ticket: its CLOSED period)
#   "acquire=probe"      acquire() returns a positive ticket, held from then on
#   "acquire=rejected"   acquire() returns REJECTED
#   "release"            release the held ticket
#   "stash"              keep the held probe ticket aside as a stale one; hold nothing
#   "stale-fail" / "stale-ok" / "stale-release"   report the stale ticket
#   "cool" / "cool=MS"   let the cooldown (or MS) pass; never claims the probe
#   "retry=full"         retry_after is in (cooldown/2, cooldown]
#   "retry=0"            retry_after is 0.0
#   "retry<MS"           retry_after is in (0, MS]
#   "read"               read .state, .failure_count, .retry_after and repr() five times
#   "reset" / "force_open" / "force_open=MS"

Step = tuple[str, CircuitState, "int | None"]


@dataclass
class Driver:
    subject: Subject
    ticket: int = 0
    stale: int = 0
    seen: list[int] = field(default_factory=list)

    def do(self, action: str) -> None:  # noqa: PLR0915 - one branch per verb
        sub = self.subject
        br = sub.breaker
        verb, _, arg = action.partition("=")
        if verb.startswith("retry<"):
            verb, arg = "retry<", verb[len("retry<") :]
        if verb == "fail":
            br.record_failure(self.ticket)
            self.ticket = 0
        elif verb == "ok":
            br.record_success(self.ticket)
            self.ticket = 0
        elif verb == "fail0":
            br.record_failure(0)
        elif verb == "ok0":
            br.record_success(0)
        elif verb == "acquire":
            got = br.acquire()
            self.seen.append(got)
            if arg == "call":
                assert sub.ordinary(got), got
                self.ticket = got
            elif arg == "probe":
                assert sub.probe(got), got
                self.ticket = got
            else:
                assert got == REJECTED
        elif verb == "release":
            br.release(self.ticket)
            self.ticket = 0
        elif verb == "stash":
            assert self.ticket > 0
            self.stale, self.ticket = self.ticket, 0
        elif verb == "stale-fail":
            br.record_failure(self.stale)
        elif verb == "stale-ok":
            br.record_success(self.stale)
        elif verb == "stale-release":
            br.release(self.stale)
        elif verb == "cool":
            sub.cool(float(arg) if arg else None)
        elif verb == "retry":
            retry = br.retry_after
            if arg == "0":
                assert retry == 0.0
            else:
                full = sub.cooldown_ms / 1000.0
                assert full / 2 < retry <= full + EPSILON, retry
        elif verb == "retry<":
            assert 0.0 < br.retry_after <= float(arg) / 1000.0 + EPSILON
        elif verb == "read":
            for _ in range(5):
                _ = (br.state, br.failure_count, br.retry_after, repr(br))
        elif verb == "reset":
            br.reset()
        elif verb == "force_open":
            br.force_open(float(arg) if arg else None)
        else:  # pragma: no cover - a typo in a table
            raise AssertionError(f"unknown action {action!r}")


OPEN_IT: list[Step] = [("fail", CLOSED, 1), ("fail", CLOSED, 2), ("fail", OPEN, 3)]
TO_PROBE: list[Step] = [*OPEN_IT, ("cool", OPEN, 3), ("acquire=probe", HALF_OPEN, None)]

# name -> (failure_threshold, cooldown_ms, steps)
SCENARIOS: dict[str, tuple[int, float, list[Step]]] = {
    "consecutive failures open exactly at the threshold": (3, LONG_MS, OPEN_IT),
    "CLOSED admits ordinary calls": (
        3,
        LONG_MS,
        [("acquire=call", CLOSED, 0), ("fail", CLOSED, 1), ("acquire=call", CLOSED, 1)],
    ),
    "a success resets the count, so non-consecutive failures never open": (
        3,
        LONG_MS,
        [
            ("fail", CLOSED, 1),
            ("fail", CLOSED, 2),
            ("ok", CLOSED, 0),
            ("fail", CLOSED, 1),
            ("fail", CLOSED, 2),
            ("ok0", CLOSED, 0),
            ("ok", CLOSED, 0),
            *OPEN_IT,
        ],
    ),
    "OPEN rejects every call, with retry_after the time left of the cooldown": (
        3,
        LONG_MS,
        [
            *OPEN_IT,
            ("acquire=rejected", OPEN, 3),
            ("retry=full", OPEN, 3),
            ("acquire=rejected", OPEN, 3),
        ],
    ),
    "OPEN lets a probe through once the cooldown has passed": (
        3,
        SHORT_MS,
        [
            *OPEN_IT,
            ("acquire=rejected", OPEN, 3),
            ("cool", OPEN, 3),
            ("acquire=probe", HALF_OPEN, None),
        ],
    ),
    "reading state never claims the probe; acquire() does": (
        3,
        SHORT_MS,
        [
            *OPEN_IT,
            ("cool", OPEN, 3),
            ("read", OPEN, 3),
            ("read", OPEN, 3),
            ("retry=0", OPEN, 3),
            ("acquire=probe", HALF_OPEN, None),
        ],
    ),
    "exactly one probe: other callers are rejected while it is in flight": (
        3,
        SHORT_MS,
        [
            *TO_PROBE,
            ("acquire=rejected", HALF_OPEN, None),
            ("acquire=rejected", HALF_OPEN, None),
            ("retry=0", HALF_OPEN, None),
        ],
    ),
    "probe success closes the breaker and clears the count": (
        3,
        SHORT_MS,
        [*TO_PROBE, ("ok", CLOSED, 0), ("acquire=call", CLOSED, 0), ("fail", CLOSED, 1)],
    ),
    "probe failure re-opens the breaker with a fresh full cooldown": (
        3,
        SHORT_MS,
        [
            *TO_PROBE,
            ("fail", OPEN, None),
            ("retry=full", OPEN, None),
            ("acquire=rejected", OPEN, None),
            ("cool", OPEN, None),
            ("acquire=probe", HALF_OPEN, None),
            ("ok", CLOSED, 0),
        ],
    ),
    "release gives the probe permit back; the state stays HALF_OPEN": (
        3,
        SHORT_MS,
        [
            *TO_PROBE,
            ("release", HALF_OPEN, None),
            ("read", HALF_OPEN, None),
            ("acquire=probe", HALF_OPEN, None),
            ("acquire=rejected", HALF_OPEN, None),
            ("ok", CLOSED, 0),
        ],
    ),
    "ticket-0 reports while OPEN change nothing (admitted before it opened)": (
        3,
        LONG_MS,
        [
            *OPEN_IT,
            ("fail0", OPEN, 3),
            ("ok0", OPEN, 3),
            ("fail0", OPEN, 3),
            ("acquire=rejected", OPEN, 3),
        ],
    ),
    "ticket-0 reports while HALF_OPEN neither close nor re-open it": (
        3,
        SHORT_MS,
        [
            *TO_PROBE,
            ("ok0", HALF_OPEN, None),
            ("fail0", HALF_OPEN, None),
            ("acquire=rejected", HALF_OPEN, None),
            ("fail", OPEN, None),
        ],
    ),
    "a probe ticket from before reset() is ignored": (
        3,
        SHORT_MS,
        [
            *TO_PROBE,
            ("stash", HALF_OPEN, None),
            ("reset", CLOSED, 0),
            ("stale-fail", CLOSED, 0),
            ("stale-ok", CLOSED, 0),
            ("stale-release", CLOSED, 0),
        ],
    ),
    "a stale probe ticket neither settles nor frees a newer probe": (
        3,
        SHORT_MS,
        [
            *TO_PROBE,
            ("stash", HALF_OPEN, None),
            ("reset", CLOSED, 0),
            *OPEN_IT,
            ("cool", OPEN, 3),
            ("acquire=probe", HALF_OPEN, None),
            ("stale-fail", HALF_OPEN, None),
            ("stale-ok", HALF_OPEN, None),
            ("stale-release", HALF_OPEN, None),
            ("acquire=rejected", HALF_OPEN, None),
            ("ok", CLOSED, 0),
        ],
    ),
    "reset closes from OPEN and forgets every failure": (
        3,
        LONG_MS,
        [*OPEN_IT, ("reset", CLOSED, 0), ("acquire=call", CLOSED, 0), ("fail", CLOSED, 1)],
    ),
    "reset closes from HALF_OPEN": (
        3,
        SHORT_MS,
        [*TO_PROBE, ("reset", CLOSED, 0), ("acquire=call", CLOSED, 0)],
    ),
    "reset in CLOSED clears the count": (3, LONG_MS, [("fail", CLOSED, 1), ("reset", CLOSED, 0)]),
    "force_open opens a healthy breaker for the configured cooldown": (
        3,
        SHORT_MS,
        [
            ("force_open", OPEN, 0),
            ("acquire=rejected", OPEN, 0),
            ("retry=full", OPEN, 0),
            ("cool", OPEN, 0),
            ("acquire=probe", HALF_OPEN, None),
            ("ok", CLOSED, 0),
        ],
    ),
    "force_open(cooldown_ms) uses the given cooldown, not the configured one": (
        3,
        LONG_MS,
        [
            ("force_open=200", OPEN, 0),
            ("acquire=rejected", OPEN, 0),
            ("retry<200", OPEN, 0),
            ("cool=200", OPEN, 0),
            ("acquire=probe", HALF_OPEN, None),
        ],
    ),
    "force_open(0) makes the next caller the probe": (
        3,
        LONG_MS,
        [("force_open=0", OPEN, 0), ("acquire=probe", HALF_OPEN, None)],
    ),
    "force_open during a probe re-opens and invalidates the probe": (
        3,
        SHORT_MS,
        [
            *TO_PROBE,
            ("force_open=60000", OPEN, None),
            ("fail", OPEN, None),
            ("acquire=rejected", OPEN, None),
        ],
    ),
    "threshold 1 opens on the first failure": (1, LONG_MS, [("fail", OPEN, 1)]),
    "threshold 5 needs five consecutive failures": (
        5,
        LONG_MS,
        [
            *[("fail", CLOSED, i) for i in range(1, 5)],
            ("ok", CLOSED, 0),
            *[("fail", CLOSED, i) for i in range(1, 5)],
            ("fail", OPEN, 5),
        ],
    ),
    "cooldown 0 lets the probe through at once": (
        1,
        0,
        [
            ("fail", OPEN, 1),
            ("acquire=probe", HALF_OPEN, None),
            ("fail", OPEN, None),
            ("acquire=probe", HALF_OPEN, None),
            ("ok", CLOSED, 0),
        ],
    ),
}


@pytest.mark.parametrize(
    ("threshold", "cooldown_ms", "steps"), list(SCENARIOS.values()), ids=list(SCENARIOS)
)
def test_breaker_contract(
    make: Make, threshold: int, cooldown_ms: float, steps: list[Step]
) -> None:
    """Each scenario's name states the rule; every step pins the state (and failure count)."""
    driver = Driver(make(threshold=threshold, cooldown_ms=cooldown_ms))
    br = driver.subject.breaker
    for i, (action, state, failures) in enumerate(steps):
        driver.do(action)
        assert br.state is state, f"step {i} {action!r}: state {br.state}, expected {state}"
        if failures is not None:
            assert br.failure_count == failures, f"step {i} {action!r}"


def test_check_raises_circuit_open_error_with_name_and_seconds_left(make: Make) -> None:
    """OPEN: check() raises CircuitOpenError with the breaker's name and the cooldown left."""
    sub = make(threshold=1)
    br = sub.breaker
    assert sub.ordinary(br.check())
    br.record_failure(0)
    with pytest.raises(CircuitOpenError) as info:
        br.check()
    assert info.value.name == "svc"
    assert LONG_MS / 2000 < info.value.retry_after <= LONG_MS / 1000


def test_state_changed_events_reach_hooks_in_order(make: Make) -> None:
    """Every transition sends one StateChanged(old, new) to the hooks, in order; none when
    force_open() finds it OPEN or reset() finds it CLOSED."""
    seen: list[StateChanged] = []
    sub = make(threshold=2, cooldown_ms=SHORT_MS, hooks=(seen.append,))
    br = sub.breaker
    br.record_failure(0)
    assert seen == []
    br.record_failure(0)  # CLOSED -> OPEN
    sub.cool()
    probe = br.acquire()  # OPEN -> HALF_OPEN
    br.record_failure(probe)  # HALF_OPEN -> OPEN
    sub.cool()
    probe = br.acquire()  # OPEN -> HALF_OPEN
    br.record_success(probe)  # HALF_OPEN -> CLOSED
    br.force_open()  # CLOSED -> OPEN
    br.force_open()  # already OPEN: no event
    br.reset()  # OPEN -> CLOSED
    br.reset()  # already CLOSED: no event
    assert [(e.old, e.new) for e in seen] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (CLOSED, OPEN),
        (OPEN, CLOSED),
    ]
    assert {e.name for e in seen} == {"svc"}
    assert seen[0].failures == 2


def test_add_hook_receives_later_transitions(make: Make) -> None:
    """add_hook() on a built breaker gets its transitions from then on."""
    seen: list[StateChanged] = []
    br = make(threshold=1).breaker
    br.add_hook(seen.append)
    br.record_failure(0)
    assert [(e.old, e.new) for e in seen] == [(CLOSED, OPEN)]


# -- construction and configuration -----------------------------------------------------


def test_a_store_on_the_config_or_the_breaker_builds_a_shared_breaker(store: RedisStore) -> None:
    """CircuitBreaker(config with store) and CircuitBreaker(config, store=) both return a
    SharedCircuitBreaker (which always routes calls through the engine); store= wins."""
    config = CircuitBreakerConfig(store=store)
    shared = CircuitBreaker(config, name="a")
    assert isinstance(shared, SharedCircuitBreaker)
    assert shared.clean_ticket == 0
    assert shared.store is store
    other = RedisStore(store.client, prefix=_prefix())
    assert CircuitBreaker(config, name="a", store=other).store is other
    plain = CircuitBreaker(CircuitBreakerConfig(), name="a", store=store)
    assert isinstance(plain, SharedCircuitBreaker)
    assert type(CircuitBreaker(CircuitBreakerConfig(), name="a")) is CircuitBreaker


def test_store_field_is_validated_and_left_out_of_equality(store: RedisStore) -> None:
    """CircuitBreakerConfig.store: None or a store; replace() keeps it; == and hash ignore it."""
    with pytest.raises(ConfigTypeError, match=r"CircuitBreakerConfig\.store"):
        CircuitBreakerConfig(store="redis://localhost:6379/0")  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match=r"CircuitBreaker\(store=\.\.\.\)"):
        CircuitBreaker(name="a", store=object())  # type: ignore[arg-type]
    config = CircuitBreakerConfig(failure_threshold=4, store=store)
    assert dataclasses.replace(config, cooldown_ms=5).store is store
    assert config == dataclasses.replace(config, store=None)
    assert hash(config) == hash(dataclasses.replace(config, store=None))
    with pytest.raises(ConfigError, match="needs a store"):
        SharedCircuitBreaker(CircuitBreakerConfig(), name="a")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "a{b}"}, "prefix"),
        ({"retry_interval": -1}, "retry_interval"),
        ({"lease_ms": 0}, "lease_ms"),
    ],
)
def test_redis_store_rejects_bad_settings(
    store: RedisStore, kwargs: dict[str, Any], match: str
) -> None:
    """Bad RedisStore settings fail at construction, naming the setting."""
    with pytest.raises(ConfigError, match=match):
        RedisStore(store.client, **kwargs)


def test_redis_store_needs_a_redis_client() -> None:
    """RedisStore(something else) says what it wants."""
    with pytest.raises(ConfigTypeError, match="redis-py client"):
        RedisStore("redis://localhost")
    with pytest.raises(ConfigError, match="needs a client"):
        RedisStore()


def test_from_url_never_echoes_the_url() -> None:
    """A bad URL is a ConfigError that does not repeat the URL (it may hold a password)."""
    with pytest.raises(ConfigError) as info:
        RedisStore.from_url("http://user:s3cret@host/0")
    assert "s3cret" not in str(info.value)


def test_from_url_refuses_a_database_that_is_not_a_number() -> None:
    """redis-py itself would read redis://host/abc as database 0, silently."""
    with pytest.raises(ConfigError, match="must be a number"):
        RedisStore.from_url("redis://user:s3cret@127.0.0.1:6379/abc")
    RedisStore.from_url("redis://127.0.0.1:6379/3").close()
    RedisStore.from_url("redis://127.0.0.1:6379").close()


def test_shared_breakers_are_live_breakers_and_reset_all_resets_the_store(
    store: RedisStore,
) -> None:
    """live_breakers() lists shared breakers (not their private local twins) and
    reset_all() closes them in the store, where the whole fleet sees it."""
    config = CircuitBreakerConfig(failure_threshold=3, store=store)
    breaker = CircuitBreaker(config, name="listed-shared")
    other_process = CircuitBreaker(config, name="listed-shared")
    breaker.record_failure(breaker.acquire())
    listed = {id(b) for b in smoothapi.live_breakers() if b.name == "listed-shared"}
    assert listed == {id(breaker), id(other_process)}  # the local twins are not listed
    breaker.force_open()
    assert other_process.state is OPEN
    smoothapi.reset_all()
    assert other_process.state is CLOSED
    assert other_process.failure_count == 0


def test_store_label_names_host_port_and_db_but_never_credentials() -> None:
    """Logs and events name the store by host:port/db; never the password."""
    client = redis.Redis.from_url("redis://user:s3cret@127.0.0.1:1/3")
    store = RedisStore(client)
    assert store.label == "redis://127.0.0.1:1/3"
    assert "s3cret" not in repr(store)
    client.close()


# -- keys ------------------------------------------------------------------------------------

AWKWARD_NAMES = [
    "users api",
    "line\nbreak\r\n",
    "glob*?[x]",
    "{hash}tag}",
    "x" * 10_000,
    "https://api.example.com:443",
    "ünïcödé \u2603",
    "",
]


def test_keys_are_fixed_length_digests_that_never_hold_the_name(store: RedisStore) -> None:
    """Any name - spaces, newlines, glob characters, braces, 10 kB - gives a key of one fixed
    length: the prefix, then a 40-hex digest in a cluster hash tag.  Distinct names, distinct
    keys."""
    keys = [store.key(name) for name in AWKWARD_NAMES]
    pattern = re.compile(rf"{re.escape(store.prefix)}:breaker:\{{[0-9a-f]{{40}}\}}")
    assert all(pattern.fullmatch(key) for key in keys), keys
    assert len({len(key) for key in keys}) == 1
    assert len(set(keys)) == len(AWKWARD_NAMES)
    for name, key in zip(AWKWARD_NAMES, keys, strict=True):
        if len(name) > 3:
            assert name not in key


def test_state_is_written_under_the_derived_key_with_the_readable_name(
    store: RedisStore,
) -> None:
    """Breakers with awkward names write exactly their derived keys, and keep the readable
    name (up to 1024 characters) in the hash's `name` field."""
    for name in AWKWARD_NAMES:
        CircuitBreaker(name=name, store=store).record_failure(0)
    client = store.client
    found = set(client.scan_iter(match=f"{store.prefix}:*", count=1000))
    assert found == {store.key(name).encode() for name in AWKWARD_NAMES}
    for name in AWKWARD_NAMES:
        stored = client.hget(store.key(name), "name")
        assert stored is not None
        assert stored.decode() == name[:1024]
        assert client.pttl(store.key(name)) >= 23 * 3600 * 1000  # abandoned keys expire


# -- Redis specifics: scripts, leases, generations, round trips ------------------------------


def test_scripts_are_reloaded_after_script_flush(store: RedisStore) -> None:
    """SCRIPT FLUSH (or a restarted server) loses the scripts: the next call re-loads them
    and goes on with the shared state, without falling back."""
    events: list[Event] = []
    br = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=2),
        name="noscript",
        store=store,
        hooks=(events.append,),
    )
    br.record_failure(br.acquire())
    store.client.script_flush()
    assert _ordinary(br.acquire())
    store.client.script_flush()
    assert br.record_failure(0) is OPEN
    store.client.script_flush()
    br.reset()
    assert br.state is CLOSED
    assert not [e for e in events if isinstance(e, (StoreUnavailable, StoreRecovered))]


def test_clean_ticket_only_when_closed_with_no_failure_counted(store: RedisStore) -> None:
    """An ordinary ticket's success resets a counted failure; CLEAN (the old ticket of a call
    admitted with nothing counted) still reads as an ordinary call of the current period."""
    br = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3), name="clean", store=store)
    ticket = br.acquire()
    assert _ordinary(ticket)
    assert br.record_success(ticket) is CLOSED
    assert br.release(ticket) is CLOSED
    assert br.record_success(CLEAN) is CLOSED
    assert br.release(CLEAN) is CLOSED
    assert br.record_failure(br.acquire()) is CLOSED
    assert br.failure_count == 1
    br.record_success(br.acquire())
    assert br.failure_count == 0
    assert br.record_failure(CLEAN) is CLOSED
    assert br.failure_count == 1


def test_a_crashed_probers_lease_expires_and_its_late_report_is_ignored(
    store: RedisStore,
) -> None:
    """A probe that never reports blocks other callers only until its lease (the cooldown)
    runs out; then the next caller probes under a new generation, and the old probe's late
    report changes nothing."""
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=SHORT_MS)
    crashed = CircuitBreaker(config, name="lease", store=store)
    survivor = CircuitBreaker(
        config, name="lease", store=RedisStore(store.client, prefix=store.prefix)
    )
    crashed.force_open(cooldown_ms=0)
    old = crashed.acquire()
    assert old > 0
    assert survivor.acquire() == REJECTED
    tickets: list[int] = []
    _until(lambda: tickets.append(survivor.acquire()) or tickets[-1] > 0, "the lease to expire")
    new = tickets[-1]
    assert new > old
    assert crashed.record_success(old) is HALF_OPEN  # stale: ignored
    assert crashed.record_failure(old) is HALF_OPEN
    assert survivor.record_success(new) is CLOSED


def test_the_lease_is_never_longer_than_the_cooldown(store: RedisStore) -> None:
    """lease_ms longer than the cooldown is cut to the cooldown; a shorter one is used."""
    long_lease = RedisStore(store.client, prefix=store.prefix, lease_ms=60_000)
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=SHORT_MS)
    br = CircuitBreaker(config, name="capped", store=long_lease)
    br.force_open(cooldown_ms=0)
    assert br.acquire() > 0
    start = time.monotonic()
    _until(lambda: br.acquire() > 0, "the capped lease to expire")
    assert time.monotonic() - start < 5.0

    short_lease = RedisStore(store.client, prefix=store.prefix, lease_ms=20)
    br = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=LONG_MS),
        name="short",
        store=short_lease,
    )
    br.force_open(cooldown_ms=0)
    assert br.acquire() > 0
    _until(lambda: br.acquire() > 0, "the 20 ms lease to expire")


def test_only_the_process_that_made_a_transition_reports_it(store: RedisStore) -> None:
    """Two breaker objects (two processes, as far as Redis knows) on one key: each one's
    hooks hear the transitions its own calls made, and only those."""
    config = CircuitBreakerConfig(failure_threshold=2, cooldown_ms=LONG_MS)
    heard_a: list[tuple[str, str]] = []
    heard_b: list[tuple[str, str]] = []

    def hook(into: list[tuple[str, str]]) -> Callable[[Event], None]:
        return lambda e: into.append((e.old, e.new)) if isinstance(e, StateChanged) else None

    a = CircuitBreaker(config, name="two", store=store, hooks=(hook(heard_a),))
    b = CircuitBreaker(
        config,
        name="two",
        store=RedisStore(store.client, prefix=store.prefix),
        hooks=(hook(heard_b),),
    )
    a.record_failure(0)
    b.record_failure(0)  # b's failure trips it
    assert a.state is OPEN
    a.force_open(cooldown_ms=0)  # already OPEN: nobody hears anything
    probe = a.acquire()  # a claims the probe
    assert b.acquire() == REJECTED
    b.reset()
    assert a.record_success(probe) is CLOSED  # stale after b's reset
    assert heard_a == [(OPEN, HALF_OPEN)]
    assert heard_b == [(CLOSED, OPEN), (HALF_OPEN, CLOSED)]


class _Counting:
    """Wraps a client's execute_command and records each command's name."""

    def __init__(self, client: Any) -> None:
        self.commands: list[str] = []
        inner = client.execute_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.commands.append(str(args[0]).upper())
            return inner(*args, **kwargs)

        client.execute_command = counted


def test_a_healthy_call_costs_no_round_trip_and_a_rejected_one_one(
    store: RedisStore,
) -> None:
    """Happy path, once the watcher listens and one call learnt the clean period: no
    command at all.  A call rejected by an OPEN breaker: one EVALSHA (its retry_after
    came with the answer)."""
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_ms=LONG_MS, store=store),
    )

    @resilient_api(config, name="cost")
    def ok(x: int) -> int:
        return x + 1

    assert ok(0) == 1  # loads the scripts, starts the watcher
    watcher = _watch.watch(store)
    deadline = time.monotonic() + 10
    while not watcher.subscribed:
        assert time.monotonic() < deadline, "the watcher never subscribed"
        time.sleep(0.01)
    seq = watcher.seq
    ok.breaker.reset()  # forget what was learnt before the watcher listened
    while watcher.seq == seq:  # the reset's own message comes back to this process too
        assert time.monotonic() < deadline, "the reset was never heard"
        time.sleep(0.01)
    assert ok(0) == 1  # learns the clean period
    counter = _Counting(store.client)
    assert [ok(i) for i in range(20)] == list(range(1, 21))
    assert counter.commands == []

    ok.breaker.force_open()
    counter.commands.clear()
    with pytest.raises(CircuitOpenError) as info:
        ok(1)
    assert counter.commands == ["EVALSHA"]
    assert LONG_MS / 2000 < info.value.retry_after <= LONG_MS / 1000


def test_a_healthy_async_call_costs_one_round_trip(redis_url: str) -> None:
    """The same under asyncio, with the redis.asyncio client."""

    async def main() -> list[str]:
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
        try:
            store = RedisStore(client, prefix=_prefix())
            config = ResilientConfig(circuit_breaker=CircuitBreakerConfig(store=store))

            @resilient_api(config, name="async-cost")
            async def ok(x: int) -> int:
                return x + 1

            assert await ok(0) == 1
            commands: list[str] = []
            inner = client.execute_command

            async def counted(*args: Any, **kwargs: Any) -> Any:
                commands.append(str(args[0]).upper())
                return await inner(*args, **kwargs)

            client.execute_command = counted  # type: ignore[method-assign]
            assert [await ok(i) for i in range(10)] == list(range(1, 11))
            return commands
        finally:
            await client.aclose()

    assert asyncio.run(main()) == ["EVALSHA"] * 10


def test_a_missing_client_flavour_is_a_config_error_before_any_io(redis_url: str) -> None:
    """A sync-only store used from async code (and an async-only store from sync code)
    raises ConfigError saying what to pass - and sends nothing to Redis."""
    sync_client = _client(redis_url)
    counter = _Counting(sync_client)
    br = CircuitBreaker(name="flavour", store=RedisStore(sync_client, prefix=_prefix()))
    with pytest.raises(ConfigError, match="no async client"):
        asyncio.run(br.acquire_async())
    assert counter.commands == []
    sync_client.close()

    async_client = redis.asyncio.Redis.from_url(redis_url)  # never connects: nothing to close
    only_async = CircuitBreaker(name="flavour", store=RedisStore(async_client, prefix=_prefix()))
    with pytest.raises(ConfigError, match="no sync client"):
        only_async.acquire()
    with pytest.raises(ConfigError, match="no sync client"):
        only_async.reset()
    assert only_async.state is CLOSED  # reads answer from the last reply seen: no I/O


def test_an_async_only_store_is_a_config_error_under_trio(redis_url: str) -> None:
    """redis.asyncio cannot run under trio, where the store runs its sync client in a
    thread: with no sync client that is a ConfigError, before any I/O."""
    async_client = redis.asyncio.Redis.from_url(redis_url)
    br = CircuitBreaker(name="trio", store=RedisStore(async_client, prefix=_prefix()))

    async def main() -> None:
        with pytest.raises(ConfigError, match="no sync client"):
            await br.acquire_async()

    anyio.run(main, backend="trio")


def test_import_smoothapi_imports_no_redis() -> None:
    """`import smoothapi` (and smoothapi.storage, and a config) import neither redis nor
    asyncio; asking for RedisStore imports redis."""
    code = (
        "import sys, smoothapi, smoothapi.storage\n"
        "from smoothapi import CircuitBreakerConfig, StoreUnavailable, StoreRecovered\n"
        "smoothapi.SharedCircuitBreaker, smoothapi.BreakerStore\n"
        "print(sorted(m for m in ('redis', 'asyncio') if m in sys.modules))\n"
        "smoothapi.RedisStore\n"
        "print('redis' in sys.modules)\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"]


# -- end to end: decorator and transport ---------------------------------------------------


def _failing_config(store: RedisStore) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=LONG_MS, store=store),
    )


def test_decorated_functions_with_the_same_name_share_one_breaker(
    server: ScriptedServer, store: RedisStore
) -> None:
    """A function decorated with a Redis-backed config opens the shared breaker on a failing
    server; a second function object built with the same name sees it OPEN and is rejected
    without a request."""
    server.default = Reply(503)
    config = _failing_config(store)

    def build() -> Any:
        @resilient_api(config, name="users")
        def get_user() -> str:
            response = httpx.get(server.url + "/users/1")
            response.raise_for_status()
            return response.text

        return get_user

    first, second = build(), build()
    assert first.breaker is not second.breaker
    for _ in range(2):
        with pytest.raises(httpx.HTTPStatusError):
            first()
    assert second.breaker.state is OPEN
    with pytest.raises(CircuitOpenError) as info:
        second()
    assert info.value.name == "users"
    assert server.count("/users/1") == 2


def test_transports_share_their_per_origin_breaker_through_the_store(
    server: ScriptedServer, store: RedisStore
) -> None:
    """Two httpx clients with their own ResilientTransport and a Redis-backed config: the
    first one's failures open the origin's breaker for the second one too."""
    server.default = Reply(503)
    config = _failing_config(store)
    with (
        httpx.Client(transport=ResilientTransport(config)) as a,
        httpx.Client(transport=ResilientTransport(config)) as b,
    ):
        assert [a.get(server.url + "/x").status_code for _ in range(2)] == [503, 503]
        with pytest.raises(CircuitOpenError):
            b.get(server.url + "/x")
        breaker = b._transport.breaker_for(server.url)  # type: ignore[attr-defined]
        assert isinstance(breaker, SharedCircuitBreaker)
        assert breaker.state is OPEN
    assert server.count("/x") == 2


# -- never worse than no Redis ---------------------------------------------------------------


@dataclass
class Heard:
    events: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # The store's warnings (a breaker opening logs a WARNING too, with another tag).
    return [
        r
        for r in caplog.records
        if r.name == "smoothapi"
        and r.levelno >= logging.WARNING
        and getattr(r, "smoothapi_event", None) == "store_unavailable"
    ]


def test_unreachable_redis_calls_go_on_with_the_local_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis at a closed port (0.05 s timeouts): calls go on, counted by a local breaker
    that opens and rejects as usual; no Redis exception reaches a caller; one WARNING naming
    the store and one StoreUnavailable event for the whole outage, however many calls and
    retries of the store; no store call at all while the store is known to be down."""
    caplog.set_level(logging.INFO, logger="smoothapi")
    port = free_port()
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=0.05,
        socket_connect_timeout=0.05,
        retry=Retry(NoBackoff(), 0),
    )
    attempts = _Counting(client)
    store = RedisStore(client, prefix=_prefix(), retry_interval=0.05)
    heard = Heard()
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=60_000, store=store),
        hooks=(heard,),
    )
    calls = 0

    @resilient_api(config, name="users")
    def call() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("upstream down")

    raised: list[BaseException] = []
    start = time.monotonic()
    for i in range(12):
        if i in (5, 9):
            time.sleep(0.06)  # the retry interval passes: one call tries the store again
        try:
            call()
        except BaseException as exc:  # whatever it is, it is checked below
            raised.append(exc)
    elapsed = time.monotonic() - start

    assert not [e for e in raised if isinstance(e, redis.RedisError)]
    assert [type(e) for e in raised] == [ConnectionError] * 3 + [CircuitOpenError] * 9
    assert calls == 3
    assert call.breaker.state is OPEN  # the local breaker's state, while the store is down
    assert attempts.commands == ["EVALSHA"] * 3  # the first call, then one per interval
    assert elapsed < 3.0
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert f"127.0.0.1:{port}" in warnings[0].getMessage()
    unavailable = heard.of(StoreUnavailable)
    assert len(unavailable) == 1
    assert unavailable[0].store == store.label
    assert isinstance(unavailable[0].error, redis.ConnectionError)
    assert heard.of(StoreRecovered) == []
    client.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_unreachable_redis_from_async_code(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    """The async twins fall back the same way (the asyncio client, or the sync client in a
    thread under trio): no Redis exception, one warning, the local breaker opens."""
    caplog.set_level(logging.WARNING, logger="smoothapi")
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", timeout=0.05, prefix=_prefix(), retry_interval=60
    )
    heard = Heard()
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000, store=store),
        hooks=(heard,),
    )

    @resilient_api(config, name="async-users")
    async def call() -> None:
        raise TimeoutError("upstream slow")

    async def main() -> list[type[BaseException]]:
        kinds: list[type[BaseException]] = []
        for _ in range(5):
            try:
                await call()
            except BaseException as exc:  # checked below
                kinds.append(type(exc))
        return kinds

    try:
        kinds = anyio.run(main, backend=backend)
    finally:
        assert store.client is not None
        store.client.close()
    assert kinds == [
        TimeoutError,
        TimeoutError,
        CircuitOpenError,
        CircuitOpenError,
        CircuitOpenError,
    ]
    assert len(_warnings(caplog)) == 1
    assert len(heard.of(StoreUnavailable)) == 1


def test_outage_then_recovery_resumes_the_shared_state(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops mid-run: no exception reaches the caller, the local breaker takes over
    (its tickets are told apart from Redis's), one StoreUnavailable.  Redis starts again:
    after the retry interval one StoreRecovered, the shared state is used again (another
    process's force_open() is seen), and a local ticket handed out during the outage still
    reports to the local breaker."""
    caplog.set_level(logging.INFO, logger="smoothapi")
    url = redis_server.url
    client = _client(url, timeout=0.2, retry=Retry(NoBackoff(), 0))
    other_client = _client(url)
    prefix = _prefix()
    store = RedisStore(client, prefix=prefix, retry_interval=0.05)
    heard = Heard()
    config = CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000)
    br = CircuitBreaker(config, name="users", store=store, hooks=(heard,))
    other = CircuitBreaker(config, name="users", store=RedisStore(other_client, prefix=prefix))
    try:
        assert br.record_failure(br.acquire()) is CLOSED
        assert other.failure_count == 1  # shared

        redis_server.stop()
        held = br.acquire()  # from the local breaker, which starts CLOSED
        assert held <= -100
        assert br.record_failure(br.acquire()) is CLOSED
        assert br.record_failure(br.acquire()) is OPEN  # the local breaker opened
        assert br.acquire() == REJECTED
        assert br.state is OPEN
        assert len(heard.of(StoreUnavailable)) == 1

        redis_server.start()  # same port, empty data set
        _until(lambda: _ordinary(br.acquire()), "the store to be used again")
        assert len(heard.of(StoreRecovered)) == 1
        assert heard.of(StoreRecovered)[0].down_for > 0
        assert len(heard.of(StoreUnavailable)) == 1
        assert other.state is CLOSED

        br.record_failure(held)  # an outage ticket: counted by the local breaker, not Redis
        assert other.failure_count == 0

        other.force_open()
        # Pushed, or within sync_interval while the watcher resubscribes after the restart.
        _until(lambda: br.acquire() == REJECTED, "the forced opening to be seen")
        assert br.state is OPEN
        other.reset()
        assert _ordinary(br.acquire())
    finally:
        client.close()
        other_client.close()
    assert len(_warnings(caplog)) == 1
    assert [r for r in caplog.records if "answers again" in r.getMessage()]


class _SlowAcquire:
    """A store that holds every acquire_async until ``go`` is set (a slow Redis answer),
    and otherwise is the RedisStore it wraps: any object with the store's methods is a
    store."""

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.go = asyncio.Event()
        self.waiting = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def acquire_async(self, key: str, threshold: int, cooldown_ms: int) -> Any:
        self.waiting.set()
        await self.go.wait()
        return await self.inner.acquire_async(key, threshold, cooldown_ms)


def test_a_probe_claimed_for_a_cancelled_asyncio_caller_is_given_back(redis_url: str) -> None:
    """Under asyncio, a caller cancelled while Redis is still answering its acquire: the
    script runs to the end (the connection stays usable), and if it claimed the probe, the
    probe is released at once - the next caller probes without waiting for the lease (here
    the 60 s cooldown)."""
    sync_client = _client(redis_url)

    async def main() -> tuple[int, CircuitState]:
        async_client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
        try:
            prefix = _prefix()
            slow = _SlowAcquire(RedisStore(sync_client, async_client=async_client, prefix=prefix))
            config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
            doomed = CircuitBreaker(config, name="orphan", store=slow)  # type: ignore[arg-type]
            other = CircuitBreaker(
                config, name="orphan", store=RedisStore(sync_client, prefix=prefix)
            )
            other.force_open(cooldown_ms=0)
            task = asyncio.ensure_future(doomed.acquire_async())
            await slow.waiting.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            slow.go.set()  # Redis answers now: the doomed caller's ticket is the probe
            key = slow.key("orphan")
            for _ in range(int(WAIT / POLL)):  # until the doomed acquire has run on the server
                if sync_client.hget(key, "state") == b"HALF_OPEN":
                    break
                await asyncio.sleep(POLL)
            for _ in range(int(2.0 / POLL)):  # until its probe is given back
                if sync_client.hget(key, "lease_until") == b"0":
                    break
                await asyncio.sleep(POLL)
            return other.acquire(), other.state
        finally:
            await async_client.aclose()

    try:
        ticket, state = asyncio.run(main())
    finally:
        sync_client.close()
    assert ticket > 0, "the orphaned probe was not released"
    assert state is HALF_OPEN
