"""Issue 11, the Redis items: what hostile URLs, odd servers, FLUSHALL and a fleet's
interleaved calls did to the shared breaker, held against a real redis-server.

* 8  - no message quotes anything between a URL's ``//`` and its host;
* 9  - a server that answers the handshake with nonsense falls back like an outage;
* 10 - a success resets the fleet's count as in memory; reports from an earlier CLOSED
  period are ignored;
* 11 - probe generations never repeat for a key, even after FLUSHALL;
* smaller: an open time the store cannot hold, log texts, a missing redis-py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.asyncio
from httpserver import free_port
from redisserver import RedisServer

import smoothapi
from smoothapi import (
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    ResilientConfig,
    resilient_api,
)
from smoothapi.breaker import REJECTED
from smoothapi.cli import main
from smoothapi.storage import RedisStore, SharedCircuitBreaker, _watch, outage

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
WAIT = 10.0  # bound on every polling loop; a passing run never comes near it


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        yield c
    finally:
        c.close()


def _store(client: redis.Redis) -> RedisStore:
    return RedisStore(client, prefix=f"t{uuid.uuid4().hex}")


# -- 8: nothing between // and the host in any message -----------------------------------------

#: Generated passwords (base64 and the like) with the characters a URL parser stops at.
PASSWORDS = ["Xk9/aQ7+Zr==", "Pq2#Lm8vTt", "Ab3?Cd4=Ef", "u/v#w?x@yZ", "Zz/0"]


def _pieces(secret: str) -> list[str]:
    """Every run of 3+ characters of ``secret``: none may appear in a message."""
    return [secret[i:j] for i in range(len(secret)) for j in range(i + 3, len(secret) + 1)]


def _assert_no_secret(text: str, secret: str) -> None:
    leaked = [piece for piece in _pieces(secret) if piece in text]
    assert not leaked, f"{leaked!r} of the credentials appears in: {text!r}"


def _urls(password: str, port: int) -> list[str]:
    return [
        f"redis://:{password}@127.0.0.1:{port}/0",
        f"redis://admin:{password}@127.0.0.1:{port}/0",
        f"rediss://default:{password}@127.0.0.1:{port}/3",
        f"redis://:{password}@127.0.0.1:notaport/0",
        f"redis://:{password}@127.0.0.1:{port}/notadb",
    ]


def _mistyped_urls(password: str, port: int) -> list[str]:
    """URLs a parser reads with the credentials in the path (no ``//``, backslashes, a
    third slash, a path that is not a database number): refused whatever the password."""
    return [
        f"redis:/jdoe:{password}@127.0.0.1:{port}/0",
        f"redis:/:{password}@127.0.0.1:{port}/0",
        f"redis:\\\\:{password}@127.0.0.1:{port}/0",
        f"redis:/\\/:{password}@127.0.0.1:{port}/0",
        f"redis:jdoe:{password}@127.0.0.1:{port}/0",
        f"rediss:/admin:{password}@127.0.0.1:{port}/0",
        f"unix:/:{password}@/tmp/smoothapi-no-such.sock",
        f"redis:///jdoe:{password}@127.0.0.1:{port}",
        f"redis://:{password}@127.0.0.1:{port}/0/extra",
    ]


def _credentials_part(url: str) -> str:
    """Between the scheme's ':' (and the slashes after it) and the last '@'."""
    return url[url.index(":") + 1 : url.rindex("@")].lstrip("/\\")


#: A password a parser reads without trouble: only the URL's shape is wrong.
PLAIN = "S3CRETpw"


@pytest.mark.parametrize("password", [*PASSWORDS, PLAIN])
def test_from_url_errors_never_quote_the_credentials(password: str) -> None:
    """A password with an unencoded '/', '#' or '?' (and an '@' too), or any password in a
    mistyped URL, is refused with a message that says what to do and holds no piece of it."""
    urls = _mistyped_urls(password, 6380)
    if password != PLAIN:
        urls += _urls(password, 6380)
    for url in urls:
        with pytest.raises(ConfigError) as info:
            RedisStore.from_url(url)
        message = str(info.value)
        _assert_no_secret(message, password)
        _assert_no_secret(message, _credentials_part(url))
        _assert_no_secret(repr(info.value), password)
        assert info.value.__cause__ is None  # a chained parser error could quote it
        assert any(
            hint in message
            for hint in ("Percent-encode", "could not use the URL", "must start with", "a number")
        ), message


@pytest.mark.parametrize("password", [*PASSWORDS, PLAIN])
def test_status_errors_never_quote_the_credentials(
    password: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m smoothapi status --redis URL``: exit 2, one line, no piece of the password."""
    port = free_port()
    encoded = quote(password, safe="")
    urls = [*_mistyped_urls(password, port), f"redis://:{encoded}@127.0.0.1:{port}/0"]
    if password != PLAIN:
        urls += _urls(password, port)
    for url in urls:
        assert main(["status", "--redis", url, "--timeout", "0.5"]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("smoothapi status: error: ")
        assert err.count("\n") == 1, err
        _assert_no_secret(err, _credentials_part(url))
        _assert_no_secret(err, password)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Xk9/aQ7+Zr==@h:1/0",
        "redis:/user:S3CRETpw@127.0.0.1:1/0",
        "redis:/:S3CRETpw@127.0.0.1:1/0",
        "redis:\\\\:S3CRETpw@127.0.0.1:1/0",
        "unix:///:S3CRETpw@/tmp/smoothapi-no-such.sock",
    ],
)
def test_status_in_a_subprocess_never_quotes_the_credentials(url: str) -> None:
    """The same from a shell: stderr holds no piece of the password, and no traceback."""
    proc = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "smoothapi", "status", "--timeout", "0.5", "--redis", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    _assert_no_secret(proc.stderr, _credentials_part(url))
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_a_percent_encoded_password_with_slash_hash_and_question_mark_works(
    redis_server: RedisServer,
) -> None:
    """The same password percent-encoded is read as the password: the store authenticates
    and a breaker works through it."""
    password = "u/v#w?x@yZ"  # noqa: S105 - a test value
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("requirepass", password)
    admin.close()
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:{redis_server.port}/0"
    store = RedisStore.from_url(url, timeout=2, prefix=f"t{uuid.uuid4().hex}")
    try:
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), name="a", store=store)
        breaker.record_failure(breaker.acquire())
        assert breaker.snapshot().state is OPEN
        assert "@" not in store.label
        assert "yZ" not in store.label
    finally:
        store.close()


# -- 9: a server that answers the handshake with nonsense -----------------------------------------


class OddServer:
    """A RESP server on 127.0.0.1 that answers HELLO with ``hello_reply`` and anything else
    with an error, counting the connections it accepted."""

    def __init__(self, hello_reply: bytes) -> None:
        self.hello_reply = hello_reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(self.hello_reply if b"HELLO" in data.upper() else b"-ERR no\r\n")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("reply", [b"_\r\n", b"*0\r\n", b":1\r\n"], ids=["null", "array", "int"])
def test_an_odd_handshake_falls_back_to_the_local_breaker(
    reply: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """HELLO answered with null, an empty array or a number makes redis-py raise an
    AttributeError: calls go on through the local breaker (which counts, opens and rejects),
    no store exception reaches a caller, and the outage is logged once."""
    caplog.set_level(logging.INFO, logger="smoothapi")
    server = OddServer(reply)
    client = redis.Redis(
        host="127.0.0.1", port=server.port, protocol=3, socket_timeout=1, socket_connect_timeout=1
    )
    store = RedisStore(client, prefix="odd", retry_interval=0.01)
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_ms=60_000, store=store),
    )
    outcomes: list[str] = []

    @resilient_api(config, name="odd handshake")
    def call(ok: bool) -> str:
        if not ok:
            raise ConnectionError("upstream down")
        return "fine"

    try:
        for ok in (True, True, False, False, True):
            time.sleep(0.02)  # past the retry interval: each call tries the store again
            try:
                outcomes.append(call(ok))
            except ConnectionError:
                outcomes.append("failed")
            except CircuitOpenError:
                outcomes.append("rejected")
        assert outcomes == ["fine", "fine", "failed", "failed", "rejected"]
        assert call.breaker.state is OPEN  # the local breaker's, read without an exception
        assert server.connections >= 2  # the store was tried again, and failed again
        warnings = [
            r for r in caplog.records if getattr(r, "smoothapi_event", "") == "store_unavailable"
        ]
        assert len(warnings) == 1
        assert "AttributeError" in warnings[0].getMessage()
    finally:
        client.close()
        server.close()


def test_an_odd_handshake_under_asyncio_falls_back_too() -> None:
    """The async client: the same fallback, no exception from the store."""
    server = OddServer(b"_\r\n")

    async def scenario() -> list[int]:
        client = redis.asyncio.Redis(
            host="127.0.0.1", port=server.port, protocol=3, socket_timeout=1
        )
        store = RedisStore(client, prefix="odd", retry_interval=0.0)
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), name="a", store=store)
        tickets = [await breaker.acquire_async()]
        await breaker.record_failure_async(tickets[0])
        tickets.append(await breaker.acquire_async())
        snap = await breaker.snapshot_async()
        await client.aclose()
        assert snap.state is OPEN
        return tickets

    try:
        tickets = asyncio.run(scenario())
    finally:
        server.close()
    assert tickets[0] <= -100  # the local breaker's ticket
    assert tickets[1] == REJECTED


# -- 10: a success resets the fleet's count; stale reports are ignored ---------------------------


def _run_interleaving(a: CircuitBreaker, b: CircuitBreaker) -> tuple[CircuitState, int]:
    """A admitted at count 0; B fails twice; A succeeds; B fails once more."""
    held = a.acquire()
    b.record_failure(b.acquire())
    b.record_failure(b.acquire())
    a.record_success(held)
    b.record_failure(b.acquire())
    return a.state, a.failure_count


def test_a_success_after_failures_resets_the_fleet_count_as_in_memory(
    client: redis.Redis, redis_url: str
) -> None:
    """Issue 11, item 10: with threshold 3, the interleaving leaves the memory breaker CLOSED
    with one failure; so it must leave the shared one - for two breaker objects on one store
    and for two stores (two clients, as two workers of one process have) alike."""
    config = CircuitBreakerConfig(failure_threshold=3, cooldown_ms=60_000)
    memory = CircuitBreaker(config, name="m")
    assert _run_interleaving(memory, memory) == (CLOSED, 1)

    store = _store(client)
    a = CircuitBreaker(config, name="svc", store=store)
    b = CircuitBreaker(config, name="svc", store=store)
    assert _run_interleaving(a, b) == (CLOSED, 1)

    other_client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        other = RedisStore(other_client, prefix=store.prefix)
        a = CircuitBreaker(config, name="two stores", store=store)
        b = CircuitBreaker(config, name="two stores", store=other)
        assert _run_interleaving(a, b) == (CLOSED, 1)
    finally:
        other_client.close()


def test_a_success_with_nothing_counted_costs_no_round_trip(client: redis.Redis) -> None:
    """The healthy path asks the store once, then answers from the last clean reply (the
    watcher's push, or the sync_interval fallback); after a failure the next call asks
    again and its success costs one more, which resets the count; then one acquire
    learns the clean period again, and the calls after it cost nothing."""
    commands: list[str] = []
    original = client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        commands.append(str(args[0]))
        return original(*args, **kwargs)

    client.execute_command = counting  # type: ignore[method-assign]
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=3), name="svc", store=_store(client)
    )
    breaker.record_success(breaker.acquire())  # loads the scripts, starts the watcher
    _until_subscribed(breaker)
    breaker.record_success(breaker.acquire())
    commands.clear()
    for _ in range(3):
        breaker.record_success(breaker.acquire())
    assert commands == []  # from the last clean reply, vouched for by the watcher
    breaker.record_failure(breaker.acquire())
    commands.clear()
    breaker.record_success(breaker.acquire())
    assert len(commands) == 2  # the acquire and the success that resets the count
    commands.clear()
    breaker.record_success(breaker.acquire())
    assert len(commands) == 1  # learns the clean period again
    commands.clear()
    breaker.record_success(breaker.acquire())
    assert commands == []


def _until_subscribed(breaker: CircuitBreaker) -> None:
    watcher = _watch.watch(breaker.store)  # type: ignore[attr-defined]
    deadline = time.monotonic() + WAIT
    while not watcher.subscribed:
        assert time.monotonic() < deadline, "the watcher never subscribed"
        time.sleep(0.01)


def _reopen_and_close(breaker: CircuitBreaker, threshold: int) -> None:
    for _ in range(threshold):
        breaker.record_failure(breaker.acquire())
    assert breaker.state is OPEN
    probe = REJECTED
    deadline = time.monotonic() + WAIT
    while probe == REJECTED:
        assert time.monotonic() < deadline
        time.sleep(0.01)
        probe = breaker.acquire()
    assert probe % 2 == 1
    assert breaker.record_success(probe) is CLOSED


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_reports_from_an_earlier_closed_period_are_ignored(kind: str, client: redis.Redis) -> None:
    """A call admitted before the breaker opened and closed again cannot count (or reset)
    anything in the new CLOSED period - in memory and in Redis alike."""
    config = CircuitBreakerConfig(failure_threshold=2, cooldown_ms=30)
    if kind == "memory":
        breaker = CircuitBreaker(config, name="svc")
    else:
        breaker = CircuitBreaker(config, name="svc", store=_store(client))
    stale_fail = breaker.acquire()
    stale_ok = breaker.acquire()
    assert stale_fail % 2 == 0
    assert stale_fail >= 0
    _reopen_and_close(breaker, 2)
    breaker.record_failure(breaker.acquire())
    assert breaker.failure_count == 1
    assert breaker.record_failure(stale_fail) is CLOSED  # would open it, were it counted
    breaker.record_success(stale_ok)  # would reset the count, were it counted
    assert (breaker.state, breaker.failure_count) == (CLOSED, 1)


# -- 11: generations never repeat, even after FLUSHALL -------------------------------------------


def test_a_probe_from_before_a_flushall_cannot_report_under_a_later_probe(
    redis_server: RedisServer,
) -> None:
    """Probe admitted, FLUSHALL, the breaker trips again and a new probe is admitted: the
    old probe's failure is ignored, the new probe's success closes the breaker."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        store = RedisStore(client, prefix="flush")
        config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=30)
        breaker = CircuitBreaker(config, name="svc", store=store)

        def probe() -> int:
            breaker.record_failure(breaker.acquire())
            held: list[int] = []
            _until(lambda: held.append(breaker.acquire()) or held[-1] != REJECTED, "a probe")
            assert held[-1] % 2 == 1
            return held[-1]

        old = probe()
        client.flushall()
        new = probe()
        assert new != old
        assert breaker.record_failure(old) is HALF_OPEN  # ignored: not the live probe
        assert breaker.acquire() == REJECTED  # the new probe still holds the lease
        assert breaker.record_success(new) is CLOSED
        assert breaker.state is CLOSED
    finally:
        client.close()


def test_generations_stay_exact_and_keep_growing_when_the_clock_steps_back(
    client: redis.Redis,
) -> None:
    """A generation is above the key's last one even if the stored one is ahead of the
    server's clock (a clock stepped back), and is stored without exponent notation."""
    store = _store(client)
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, cooldown_ms=0), name="svc", store=store
    )
    key = store.key("svc")
    ahead = 2**52 + 1  # far ahead of any clock, still exact in a double
    client.hset(key, mapping={"state": "OPEN", "open_until": 0, "gen": ahead, "failures": 1})
    ticket = breaker.acquire()
    assert ticket == ahead + 2
    assert client.hget(key, "gen") == str(ahead + 2).encode()
    assert breaker.record_success(ticket) is CLOSED
    assert client.hget(key, "period") == str(ahead + 3).encode()
    assert breaker.acquire() == ahead + 3


# -- smaller ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cooldown_ms", [1e13, 1e300])
def test_an_open_time_redis_cannot_hold_is_refused_when_the_breaker_is_built(
    cooldown_ms: float, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: PEXPIRE refused the expiry and every call logged a store outage.  Now the
    breaker (or the decorated function) is refused at once, naming the field and the limit.
    (max_cooldown_ms is at most one day already.)"""
    store = _store(client)
    config = CircuitBreakerConfig(failure_threshold=1, store=store, cooldown_ms=cooldown_ms)
    with pytest.raises(ConfigError, match="cooldown_ms") as info:
        CircuitBreaker(config, name="svc")
    assert f"{RedisStore.max_open_ms:g} ms" in str(info.value)
    with pytest.raises(ConfigError, match="cooldown_ms"):
        resilient_api(ResilientConfig(circuit_breaker=config), name="svc")(lambda: None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_force_open_for_longer_than_redis_can_hold_is_refused(client: redis.Redis) -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(), name="svc", store=_store(client))
    with pytest.raises(ConfigError, match="force_open"):
        breaker.force_open(1e13)
    breaker.force_open(RedisStore.max_open_ms)  # the limit itself is fine
    assert breaker.state is OPEN


def test_store_log_lines_do_not_repeat_the_loggers_name(caplog: pytest.LogCaptureFixture) -> None:
    """The logger is named smoothapi: its messages must not start with 'smoothapi: '."""
    caplog.set_level(logging.DEBUG, logger="smoothapi")
    client = redis.Redis(port=free_port(), socket_timeout=0.05, socket_connect_timeout=0.05)
    store = RedisStore(client, prefix="logs", retry_interval=0.0)
    breaker = CircuitBreaker(CircuitBreakerConfig(), name="svc", store=store)
    for _ in range(2):
        breaker.record_failure(breaker.acquire())
    client.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "smoothapi"]
    assert any("is unreachable" in m for m in messages)
    assert any("still unreachable" in m for m in messages)
    assert not [m for m in messages if m.startswith("smoothapi")]


@pytest.mark.parametrize(
    "statement",
    [
        "from smoothapi.storage import RedisStore",
        "import smoothapi.storage.redis",
        "import smoothapi; smoothapi.RedisStore",
        "from smoothapi import RedisStore",
    ],
)
def test_a_missing_redis_py_names_the_extra_to_install(statement: str) -> None:
    code = f"import sys; sys.modules['redis'] = None\n{statement}"
    proc = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "ModuleNotFoundError" in proc.stderr
    assert "'redis' extra" in proc.stderr
    assert "pip install redis" in proc.stderr


def test_a_url_string_as_the_store_points_to_from_url() -> None:
    with pytest.raises(ConfigError, match=r"RedisStore\.from_url\(url\)") as info:
        CircuitBreakerConfig(store="redis://:secret@h:6379/0")  # type: ignore[arg-type]
    assert "secret" not in str(info.value)
    assert isinstance(CircuitBreaker(CircuitBreakerConfig()), CircuitBreaker)
    assert not isinstance(CircuitBreaker(CircuitBreakerConfig()), SharedCircuitBreaker)


def test_what_a_process_remembers_of_failure_counts_is_bounded(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-breaker memory of "a failure is counted" never grows without bound (many
    abandoned failing breakers); forgetting one only skips a success's reset report."""
    monkeypatch.setattr(outage, "_COUNTED_MAX", 5)
    store = _store(client)
    config = CircuitBreakerConfig(failure_threshold=3)
    for i in range(20):
        breaker = CircuitBreaker(config, name=f"svc-{i}", store=store)
        breaker.record_failure(breaker.acquire())
    assert len(outage._counted) <= 5


# -- 1 (shared): a hook interrupting the probe's claim gives the lease back at once ------------


def _tripped_shared(client: redis.Redis, hook: Callable[[Any], None]) -> CircuitBreaker:
    """A shared breaker with a long lease, tripped, whose cooldown (30 ms) has passed."""
    store = RedisStore(client, prefix=f"t{uuid.uuid4().hex}", lease_ms=60_000)
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=30)
    breaker = CircuitBreaker(config, name="svc", store=store, hooks=(hook,))
    assert breaker.record_failure(breaker.acquire()) is OPEN
    time.sleep(0.05)  # the cooldown is on Redis's clock: no fake clock reaches it
    return breaker


class _Interrupt(BaseException):
    """Like KeyboardInterrupt, a BaseException that emit() lets through; unlike it, asyncio
    hands it to the awaiting coroutine instead of stopping the event loop."""


def _interrupting_hook(
    error: type[BaseException] = KeyboardInterrupt,
) -> tuple[Callable[[Any], None], list[bool]]:
    armed = [True]

    def hook(event: Any) -> None:
        if armed[0] and getattr(event, "new", None) is HALF_OPEN:
            raise error

    return hook, armed


def test_a_hook_interrupting_a_shared_probe_claim_gives_the_lease_back(
    client: redis.Redis,
) -> None:
    """The lease lasts a minute, so only a release lets the next caller probe at once."""
    hook, armed = _interrupting_hook()
    breaker = _tripped_shared(client, hook)
    with pytest.raises(KeyboardInterrupt):
        breaker.acquire()
    armed[0] = False
    ticket = breaker.acquire()
    assert ticket != REJECTED
    assert ticket % 2 == 1
    assert breaker.record_success(ticket) is CLOSED


def test_a_hook_interrupting_a_shared_probe_claim_under_asyncio_gives_the_lease_back(
    redis_url: str,
) -> None:
    async def scenario() -> None:
        sync_client = redis.Redis.from_url(redis_url, socket_timeout=2)
        async_client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=2)
        try:
            hook, armed = _interrupting_hook(_Interrupt)
            store = RedisStore(
                sync_client,
                async_client=async_client,
                prefix=f"t{uuid.uuid4().hex}",
                lease_ms=60_000,
            )
            config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=30)
            breaker = CircuitBreaker(config, name="svc", store=store, hooks=(hook,))
            assert await breaker.record_failure_async(await breaker.acquire_async()) is OPEN
            await asyncio.sleep(0.05)
            with pytest.raises(_Interrupt):
                await breaker.acquire_async()
            armed[0] = False
            ticket = await breaker.acquire_async()
            assert ticket != REJECTED
            assert ticket % 2 == 1
            assert await breaker.record_success_async(ticket) is CLOSED
        finally:
            sync_client.close()
            await async_client.aclose()

    asyncio.run(scenario())


def test_a_shared_breaker_reset_or_forced_open_says_so_in_its_log_line(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """From HALF_OPEN a reset reads 'reset', not 'probe succeeded'; a forced open reads
    'forced open', not 'probe failed'."""
    hook, armed = _interrupting_hook()
    armed[0] = False
    breaker = _tripped_shared(client, hook)
    assert breaker.acquire() % 2 == 1  # HALF_OPEN, probe in flight
    caplog.set_level(logging.INFO, logger="smoothapi")
    breaker.reset()
    assert breaker.record_failure(breaker.acquire()) is OPEN
    time.sleep(0.05)
    assert breaker.acquire() % 2 == 1
    breaker.force_open()
    lines = [r.getMessage() for r in caplog.records if "HALF_OPEN ->" in r.getMessage()]
    assert lines == [
        "breaker svc: HALF_OPEN -> CLOSED: reset",
        "breaker svc: HALF_OPEN -> OPEN: forced open",
    ]


def test_the_breakers_in_use_stay_remembered_past_the_bound(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of item 10: the memory of counted failures is least recently used first out.
    Before, it forgot the breaker inserted first even while a call held it (the front of a
    dict updated in place): that call's success no longer reset the fleet's count.  Now a
    breaker a call has just acquired stays, however many others count failures meanwhile
    (as long as they are fewer than the bound)."""
    cap = 5
    monkeypatch.setattr(outage, "_COUNTED_MAX", cap)
    monkeypatch.setattr(outage, "_counted", {})  # none of the other tests' breakers
    store = _store(client)
    config = CircuitBreakerConfig(failure_threshold=1000)
    hot = CircuitBreaker(config, name="hot", store=store)
    hot.record_failure(hot.acquire())  # remembered first: the front of the memory
    others = iter(range(10**6))

    def another_fails() -> None:
        other = CircuitBreaker(config, name=f"cold-{next(others)}", store=store)
        other.record_failure(other.acquire())

    for _ in range(cap - 1):  # the memory is full
        another_fails()
    assert len(outage._counted) == cap
    for _ in range(20):
        held = hot.acquire()  # in use: the most recently used now
        for _ in range(cap - 1):
            another_fails()
            assert len(outage._counted) <= cap
        hot.record_success(held)  # must reach the store and reset the count
        assert int(client.hget(store.key("hot"), "failures") or b"0") == 0
        hot.record_failure(hot.acquire())  # counted again for the next round
        assert int(client.hget(store.key("hot"), "failures") or b"0") == 1


def test_reset_all_skips_a_breaker_whose_store_is_async_only_and_resets_the_rest(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """reset_all() (the pytest plugin calls it between tests) cannot reach an async-only store
    from sync code: it says so in a WARNING and still resets every other breaker."""
    async_client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=2)
    store = RedisStore(async_client, prefix=f"t{uuid.uuid4().hex}")
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
    shared_one = CircuitBreaker(config, name="async-only", store=store)
    memory = CircuitBreaker(config, name="in-memory")
    memory.force_open()
    caplog.set_level(logging.WARNING, logger="smoothapi")
    smoothapi.reset_all()
    assert memory.state is CLOSED
    warnings = [r.getMessage() for r in caplog.records if "reset_all() skipped" in r.getMessage()]
    assert len(warnings) == 1
    assert "'async-only'" in warnings[0]
    assert "reset_async" in warnings[0]
    del shared_one


def test_one_malformed_entry_does_not_take_the_store_down_for_the_others(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11 review: a reply that cannot be decoded (here a state 'AJAR' in one breaker's
    hash) made the whole store count as down, so a breaker OPEN for the fleet let calls
    through on its in-process state.  Now only the malformed breaker goes local (one
    WARNING naming it); the other still rejects, and no outage is reported."""
    store = _store(client)
    config = CircuitBreakerConfig(failure_threshold=1, cooldown_ms=60_000)
    payments = CircuitBreaker(config, name="payments", store=store)
    other = CircuitBreaker(config, name="other", store=store)
    payments.force_open()
    other.record_failure(other.acquire())  # its entry exists
    client.hset(store.key("other"), "state", "AJAR")
    caplog.set_level(logging.WARNING, logger="smoothapi")
    assert other.acquire() != REJECTED  # its own in-process state: CLOSED
    other.acquire()
    assert payments.acquire() == REJECTED  # still the fleet's OPEN
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "unreachable" in m]
    malformed = [m for m in messages if "malformed" in m]
    assert len(malformed) == 1  # once per breaker
    assert "breaker other" in malformed[0]
