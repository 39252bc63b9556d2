"""``@resilient_api`` against a real HTTP server, with requests, httpx.Client and httpx.AsyncClient.

DESIGN.md, "What counts as a failure (decorator)": a return is a success; an
HTTP error whose status is in ``retry_on`` is a failure, retried, and re-raised
unwrapped after the last try; any other HTTP error (400, 401, 404...) is a
success for the breaker and is re-raised at once (a probe ending so closes the
breaker); a transport error is a failure, retried, re-raised unwrapped;
anything else is re-raised at once with nothing recorded.  "If the breaker
opens while a call is still retrying ... it returns the fallback if one is
configured, otherwise it re-raises its last error unwrapped.  A call rejected
before its first attempt gets the fallback or CircuitOpenError."

Every test counts the requests that really reached the server
(``server.count(path)``) and the calls of the decorated function, and reads
the breaker's state and failure count afterwards.  The ``instant`` fixture
skips backoff sleeps and adds them to a FakeClock that every breaker reads.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
import requests
from httpserver import Action, Delay, Drop, Json, Reply, ScriptedServer, Truncate, refused_url

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    Event,
    ResilientConfig,
    RetryScheduled,
    resilient_api,
)
from smoothapi.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
COOLDOWN_MS = 10_000
COOLDOWN_S = COOLDOWN_MS / 1000
TIMEOUT = 5.0  # client timeout for every request that is not meant to time out
SHORT_TIMEOUT = 0.25  # client timeout of the read-timeout rows (the server waits far longer)
USER = "7"
PATH = f"/users/{USER}"
BODY = {"id": 7, "name": "Ada"}
FALLBACK = {"status": "degraded", "data": []}

Kind = Literal["requests", "httpx", "httpx_async"]
SYNC_KINDS: list[Kind] = ["requests", "httpx"]


# -- the decorated function under test ---------------------------------------------------------


@dataclass
class Recorder:
    """How often the decorated function ran and what it raised, in order."""

    calls: int = 0
    raised: list[BaseException] = field(default_factory=list)


def _finish(json_body: Callable[[], Any], after: str) -> Any:
    """What the function does with a 2xx response."""
    data = json_body()  # "json_decode" rows get a non-JSON body: this raises
    if after == "key_error":
        return data["missing"]
    if after == "value_error":
        raise ValueError(f"unexpected payload {data!r}")
    return data


def _recording(rec: Recorder) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Count calls of ``fn`` and keep every exception it raises (innermost decorator)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_recorded(*args: Any, **kwargs: Any) -> Any:
                rec.calls += 1
                try:
                    return await fn(*args, **kwargs)
                except BaseException as exc:
                    rec.raised.append(exc)
                    raise

            return async_recorded

        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            rec.calls += 1
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                rec.raised.append(exc)
                raise

        return recorded

    return decorate


def make_fetch(
    kind: Kind,
    config: ResilientConfig,
    base: str,
    rec: Recorder,
    *,
    client: httpx.Client | None = None,
    timeout: float = TIMEOUT,
    after: str = "json",
) -> Any:
    """``@resilient_api(config)`` on ``fetch(user_id)``: GET, raise_for_status(), ``.json()``."""
    if kind == "requests":

        @resilient_api(config)
        @_recording(rec)
        def fetch_requests(user_id: str) -> Any:
            res = requests.get(f"{base}/users/{user_id}", timeout=timeout)
            res.raise_for_status()
            return _finish(res.json, after)

        return fetch_requests

    if kind == "httpx":
        assert client is not None

        @resilient_api(config)
        @_recording(rec)
        def fetch_httpx(user_id: str) -> Any:
            res = client.get(f"{base}/users/{user_id}", timeout=timeout)
            res.raise_for_status()
            return _finish(res.json, after)

        return fetch_httpx

    @resilient_api(config)
    @_recording(rec)
    async def fetch_async(user_id: str) -> Any:
        async with httpx.AsyncClient(timeout=timeout) as aclient:
            res = await aclient.get(f"{base}/users/{user_id}")
            res.raise_for_status()
            return _finish(res.json, after)

    return fetch_async


def make_config(
    *,
    max_retries: int = 3,
    threshold: int = 100,
    fallback: Any = None,
    hooks: tuple[Callable[[Event], object], ...] = (),
) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(base_delay=0.1, max_delay=1.0, max_retries=max_retries),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=COOLDOWN_MS),
        fallback=fallback,
        hooks=hooks,
    )


@pytest.fixture
def hx() -> typing.Iterator[httpx.Client]:
    """One pooled httpx.Client per test (keep-alive connections are reused across attempts)."""
    with httpx.Client() as client:
        yield client


def _family(kind: Kind) -> str:
    return "requests" if kind == "requests" else "httpx"


# What each error row expects the client to raise (exact type).
ERRORS: dict[str, dict[str, type[BaseException]]] = {
    "http": {"requests": requests.HTTPError, "httpx": httpx.HTTPStatusError},
    "refused": {"requests": requests.ConnectionError, "httpx": httpx.ConnectError},
    "truncated": {
        "requests": requests.exceptions.ChunkedEncodingError,
        "httpx": httpx.RemoteProtocolError,
    },
    "dropped": {"requests": requests.ConnectionError, "httpx": httpx.RemoteProtocolError},
    "timeout": {"requests": requests.ReadTimeout, "httpx": httpx.ReadTimeout},
    "value": {"requests": ValueError, "httpx": ValueError},
    "key": {"requests": KeyError, "httpx": KeyError},
    "json": {"requests": requests.JSONDecodeError, "httpx": json.JSONDecodeError},
}


# -- the failure table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One row: what the server does, how the call is set up, and what must follow.

    ``actions`` are queued for PATH; ``default`` (if set) answers every request after
    them (an outage).  ``refused`` points the function at a port nobody listens on.
    ``prior_failures`` failed attempts are recorded on the breaker before the call;
    ``half_open`` starts from an OPEN breaker whose cooldown has elapsed (the call is
    the probe).  ``failures=None`` leaves the failure count unpinned (OPEN rows).
    """

    id: str
    rule: str
    actions: tuple[Action, ...] = ()
    default: Action | None = None
    refused: bool = False
    after: str = "json"
    timeout: float = TIMEOUT
    max_retries: int = 3
    threshold: int = 100
    fallback: Any = None
    prior_failures: int = 0
    half_open: bool = False
    value: Any = None
    error: str | None = None
    status: int | None = None
    requests: int = 0
    calls: int = 0
    state: CircuitState = CLOSED
    failures: int | None = 0


NOT_JSON = Reply(200, b"<html>not json</html>", {"Content-Type": "application/json"})

CASES = [
    Case(
        "200",
        "a return is a success: value returned after 1 request",
        actions=(Json(200, BODY),),
        value=BODY,
        requests=1,
        calls=1,
    ),
    Case(
        "200-resets-count",
        "a success resets the consecutive failure count",
        actions=(Json(200, BODY),),
        prior_failures=2,
        value=BODY,
        requests=1,
        calls=1,
    ),
    Case(
        "503-503-200",
        "a status in retry_on is retried; the value comes back after 3 requests",
        actions=(Reply(503), Reply(503), Json(200, BODY)),
        value=BODY,
        requests=3,
        calls=3,
    ),
    Case(
        "each-retry_on-status",
        "every default retry_on status (429, 500, 502, 503, 504) is retried",
        actions=(Reply(429), Reply(500), Reply(502), Reply(503), Reply(504), Json(200, BODY)),
        max_retries=5,
        value=BODY,
        requests=6,
        calls=6,
    ),
    Case(
        "503-forever",
        "retries run out after max_retries+1 attempts; the last HTTP error is re-raised unwrapped",
        default=Reply(503),
        max_retries=3,
        error="http",
        status=503,
        requests=4,
        calls=4,
        failures=4,
    ),
    Case(
        "404",
        "a status outside retry_on is re-raised at once (1 request) and is a success",
        actions=(Reply(404),),
        error="http",
        status=404,
        requests=1,
        calls=1,
    ),
    Case(
        "404-resets-count",
        "a 404 is a success for the breaker: it resets the failure count to 0",
        actions=(Reply(404),),
        prior_failures=2,
        error="http",
        status=404,
        requests=1,
        calls=1,
    ),
    Case(
        "401-resets-count",
        "a 401 is re-raised at once and resets the failure count",
        actions=(Reply(401),),
        prior_failures=1,
        error="http",
        status=401,
        requests=1,
        calls=1,
    ),
    Case(
        "503-then-400",
        "a 400 after a retried 503 ends the call at once and resets the count",
        actions=(Reply(503), Reply(400)),
        error="http",
        status=400,
        requests=2,
        calls=2,
    ),
    Case(
        "half-open-404-probe",
        "a HALF_OPEN probe answered with 404 closes the breaker (the service answered)",
        actions=(Reply(404),),
        half_open=True,
        error="http",
        status=404,
        requests=1,
        calls=1,
    ),
    Case(
        "half-open-200-probe",
        "a HALF_OPEN probe that succeeds closes the breaker",
        actions=(Json(200, BODY),),
        half_open=True,
        value=BODY,
        requests=1,
        calls=1,
    ),
    Case(
        "half-open-503-probe",
        "a failed probe re-opens the breaker and is not retried; its error is re-raised",
        default=Reply(503),
        half_open=True,
        error="http",
        status=503,
        requests=1,
        calls=1,
        state=OPEN,
        failures=None,
    ),
    Case(
        "refused",
        "connection refused is a transport error: max_retries+1 tries, then re-raised unwrapped",
        refused=True,
        max_retries=3,
        error="refused",
        calls=4,
        failures=4,
    ),
    Case(
        "truncated-then-200",
        "a connection closed mid-response is a transport error and is retried",
        actions=(Truncate(), Json(200, BODY)),
        value=BODY,
        requests=2,
        calls=2,
    ),
    Case(
        "truncated-forever",
        "a response truncated every time is retried to the end, then re-raised unwrapped",
        default=Truncate(),
        max_retries=2,
        error="truncated",
        requests=3,
        calls=3,
        failures=3,
    ),
    Case(
        "dropped-then-200",
        "a connection dropped without a response is a transport error and is retried",
        actions=(Drop(), Json(200, BODY)),
        value=BODY,
        requests=2,
        calls=2,
    ),
    Case(
        "dropped-forever",
        "a connection dropped every time is retried to the end, then re-raised unwrapped",
        default=Drop(),
        max_retries=2,
        error="dropped",
        requests=3,
        calls=3,
        failures=3,
    ),
    Case(
        "read-timeout-then-200",
        "a read timeout is a transport error and is retried",
        actions=(Delay(30.0, Json(200, BODY)), Json(200, BODY)),
        timeout=SHORT_TIMEOUT,
        value=BODY,
        requests=2,
        calls=2,
    ),
    Case(
        "read-timeout-forever",
        "read timeouts every time are retried to the end, then re-raised unwrapped",
        default=Delay(30.0, Json(200, BODY)),
        timeout=SHORT_TIMEOUT,
        max_retries=1,
        error="timeout",
        requests=2,
        calls=2,
        failures=2,
    ),
    Case(
        "value-error",
        "a ValueError after a 200 is re-raised at once with nothing recorded",
        actions=(Json(200, BODY),),
        after="value_error",
        prior_failures=1,
        error="value",
        requests=1,
        calls=1,
        failures=1,
    ),
    Case(
        "value-error-healthy",
        "a ValueError on a healthy breaker is re-raised at once and counts as nothing",
        actions=(Json(200, BODY),),
        after="value_error",
        error="value",
        requests=1,
        calls=1,
    ),
    Case(
        "key-error",
        "a KeyError after a 200 is re-raised at once with nothing recorded",
        actions=(Json(200, BODY),),
        after="key_error",
        prior_failures=1,
        error="key",
        requests=1,
        calls=1,
        failures=1,
    ),
    Case(
        "json-decode-error",
        "a JSON decode error after a 200 is re-raised at once with nothing recorded",
        actions=(NOT_JSON,),
        prior_failures=1,
        error="json",
        requests=1,
        calls=1,
        failures=1,
    ),
    Case(
        "opens-mid-retry-no-fallback",
        "the breaker opening mid-retry stops the call: its last 503 is re-raised unwrapped",
        default=Reply(503),
        max_retries=5,
        threshold=2,
        error="http",
        status=503,
        requests=2,
        calls=2,
        state=OPEN,
        failures=None,
    ),
    Case(
        "opens-mid-retry-fallback",
        "the breaker opening mid-retry stops the call: the configured fallback is returned",
        default=Reply(503),
        max_retries=5,
        threshold=2,
        fallback=FALLBACK,
        value=FALLBACK,
        requests=2,
        calls=2,
        state=OPEN,
        failures=None,
    ),
    Case(
        "opens-mid-retry-earlier-failures",
        "failures counted before the call count toward opening: 1 request opens it",
        default=Reply(503),
        max_retries=5,
        threshold=3,
        prior_failures=2,
        error="http",
        status=503,
        requests=1,
        calls=1,
        state=OPEN,
        failures=None,
    ),
    Case(
        "opens-mid-retry-refused",
        "refused connections open the breaker mid-retry too; the last one is re-raised",
        refused=True,
        max_retries=5,
        threshold=2,
        error="refused",
        calls=2,
        state=OPEN,
        failures=None,
    ),
]


@dataclass
class Run:
    """What a table-driven call left behind."""

    value: Any = None
    error: BaseException | None = None
    events: list[Event] = field(default_factory=list)
    rec: Recorder = field(default_factory=Recorder)
    clock_moved: float = 0.0


def _prepare(case: Case, server: ScriptedServer, run: Run) -> tuple[ResilientConfig, str]:
    if case.actions:
        server.script(PATH, *case.actions)
    if case.default is not None:
        server.default = case.default
    config = make_config(
        max_retries=case.max_retries,
        threshold=case.threshold,
        fallback=case.fallback,
        hooks=(run.events.append,),
    )
    return config, refused_url() if case.refused else server.url


def _arrange_breaker(case: Case, fetch: Any, clock: FakeClock) -> None:
    breaker = fetch.breaker
    for _ in range(case.prior_failures):
        breaker.record_failure(0)
    assert breaker.failure_count == case.prior_failures
    if case.half_open:
        breaker.force_open()
        clock.advance(COOLDOWN_S + 1)


def _check(case: Case, kind: Kind, run: Run, fetch: Any, server: ScriptedServer) -> None:
    if case.error is None:
        assert run.error is None, f"expected {case.value!r}, got {run.error!r}"
        assert run.value == case.value
    else:
        expected = ERRORS[case.error][_family(kind)]
        assert type(run.error) is expected, f"expected {expected}, got {run.error!r}"
        # Unwrapped: the very exception the last attempt raised, not a wrapper or a copy.
        assert run.rec.raised, "the function never raised"
        assert run.error is run.rec.raised[-1]
        if case.status is not None:
            response = getattr(run.error, "response", None)
            assert response is not None
            assert response.status_code == case.status
    assert server.count(PATH) == case.requests
    assert server.count() == case.requests  # nothing went anywhere else
    assert run.rec.calls == case.calls
    breaker = fetch.breaker
    assert breaker.state is case.state
    if case.failures is not None:
        assert breaker.failure_count == case.failures
    # The backoff slept (on the fake clock) exactly what the RetryScheduled events announced,
    # and one retry was scheduled per extra attempt.
    delays = [e.delay for e in run.events if isinstance(e, RetryScheduled)]
    assert len(delays) == case.calls - 1
    assert run.clock_moved == pytest.approx(sum(delays))
    assert server.errors == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_failure_table_sync(
    case: Case, kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """DESIGN.md failure table, sync clients (each row's rule is its ``Case.rule``)."""
    run = Run()
    config, base = _prepare(case, server, run)
    fetch = make_fetch(
        kind, config, base, run.rec, client=hx, timeout=case.timeout, after=case.after
    )
    _arrange_breaker(case, fetch, instant)
    start = instant.now
    try:
        run.value = fetch(USER)
    except Exception as exc:
        run.error = exc
    run.clock_moved = instant.now - start
    _check(case, kind, run, fetch, server)


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_failure_table_async(case: Case, server: ScriptedServer, instant: FakeClock) -> None:
    """DESIGN.md failure table, ``async def`` with httpx.AsyncClient, under asyncio and trio."""
    run = Run()
    config, base = _prepare(case, server, run)
    fetch = make_fetch("httpx_async", config, base, run.rec, timeout=case.timeout, after=case.after)
    assert inspect.iscoroutinefunction(fetch)
    _arrange_breaker(case, fetch, instant)
    start = instant.now
    try:
        run.value = await fetch(USER)
    except Exception as exc:
        run.error = exc
    run.clock_moved = instant.now - start
    _check(case, "httpx_async", run, fetch, server)


# -- the table's special rows ----------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [requests.HTTPError("no response attached"), requests.HTTPError("boom", response=None)],
    ids=["message-only", "response=None"],
)
def test_http_error_without_response_is_reraised_once_and_records_nothing(
    error: requests.HTTPError, server: ScriptedServer, instant: FakeClock
) -> None:
    """A requests.HTTPError that carries no response has no status: re-raised at once, 1 call."""
    server.script(PATH, Json(200, BODY))
    calls = 0

    @resilient_api(make_config(max_retries=3, threshold=2))
    def fetch(user_id: str) -> Any:
        nonlocal calls
        calls += 1
        res = requests.get(f"{server.url}/users/{user_id}", timeout=TIMEOUT)
        res.raise_for_status()
        raise error

    fetch.breaker.record_failure(0)
    with pytest.raises(requests.HTTPError) as info:
        fetch(USER)
    assert info.value is error
    assert calls == 1
    assert server.count(PATH) == 1
    assert fetch.breaker.state is CLOSED
    assert fetch.breaker.failure_count == 1  # neither a success nor a failure


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_value_error_from_half_open_probe_gives_the_permit_back(
    kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """A probe ending in a ValueError gives its permit back: the next caller probes and closes."""
    rec = Recorder()
    config = make_config()
    buggy = make_fetch(kind, config, server.url, rec, client=hx, after="value_error")
    server.script(PATH, Json(200, BODY), Json(200, BODY))
    # Share one breaker: a correct function probes after the buggy one.
    good = resilient_api(config, breaker=buggy.breaker)(
        make_fetch(kind, config, server.url, Recorder(), client=hx).__wrapped__
    )
    buggy.breaker.force_open()
    instant.advance(COOLDOWN_S + 1)

    with pytest.raises(ValueError, match="unexpected payload"):
        buggy(USER)
    assert buggy.breaker.state is not CLOSED  # the ValueError proved nothing
    assert good(USER) == BODY  # admitted as the next probe, not rejected
    assert buggy.breaker.state is CLOSED
    assert server.count(PATH) == 2


# -- the breaker opening mid-retry, and rejections ----------------------------------------------


@pytest.mark.parametrize("with_fallback", [True, False], ids=["fallback", "no-fallback"])
def test_breaker_opened_by_another_caller_during_backoff_stops_the_retrying_call(
    with_fallback: bool, server: ScriptedServer, instant: FakeClock
) -> None:
    """Someone else opens the breaker while a call sleeps: no further attempt; fallback or error."""
    server.default = Reply(503)
    holder: list[Any] = []

    def open_it(event: Event) -> None:
        if isinstance(event, RetryScheduled):
            holder[0].breaker.force_open()  # "another caller" trips it during our backoff

    config = make_config(
        max_retries=5, threshold=100, fallback=FALLBACK if with_fallback else None, hooks=(open_it,)
    )
    rec = Recorder()
    fetch = make_fetch("requests", config, server.url, rec)
    holder.append(fetch)
    if with_fallback:
        assert fetch(USER) == FALLBACK
    else:
        with pytest.raises(requests.HTTPError) as info:
            fetch(USER)
        assert type(info.value) is requests.HTTPError
        assert info.value is rec.raised[-1]
        assert info.value.response.status_code == 503
    assert server.count(PATH) == 1
    assert rec.calls == 1
    assert fetch.breaker.state is OPEN


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_rejected_before_first_attempt_returns_fallback_without_io(
    kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """An OPEN breaker answers with the configured fallback: 0 requests, the function not called."""
    rec = Recorder()
    fetch = make_fetch(kind, make_config(fallback=FALLBACK), server.url, rec, client=hx)
    fetch.breaker.force_open()
    assert fetch(USER) == FALLBACK
    assert fetch(USER) == FALLBACK
    assert server.count() == 0
    assert rec.calls == 0
    assert fetch.breaker.state is OPEN


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_rejected_before_first_attempt_without_fallback_raises_circuit_open_error(
    kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """No fallback: CircuitOpenError (a RuntimeError) naming the breaker, with retry_after."""
    rec = Recorder()
    fetch = make_fetch(kind, make_config(), server.url, rec, client=hx)
    fetch.breaker.force_open()
    instant.advance(4.0)
    with pytest.raises(CircuitOpenError) as info:
        fetch(USER)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert "Circuit breaker is OPEN for:" in str(err)
    assert fetch.breaker.name in str(err)
    assert err.name == fetch.breaker.name
    assert err.retry_after == pytest.approx(COOLDOWN_S - 4.0)
    assert server.count() == 0
    assert rec.calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize("with_fallback", [True, False], ids=["fallback", "no-fallback"])
async def test_async_rejected_before_first_attempt(
    with_fallback: bool, server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: an OPEN breaker gives the fallback or CircuitOpenError, with 0 requests."""
    rec = Recorder()
    config = make_config(fallback=FALLBACK if with_fallback else None)
    fetch = make_fetch("httpx_async", config, server.url, rec)
    fetch.breaker.force_open()
    if with_fallback:
        assert await fetch(USER) == FALLBACK
    else:
        with pytest.raises(CircuitOpenError, match="Circuit breaker is OPEN for:"):
            await fetch(USER)
    assert server.count() == 0
    assert rec.calls == 0


# -- fallbacks -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_per_call_fallback_overrides_the_configured_one(
    kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """``fallback=`` per call replaces the configured fallback for that call only."""
    rec = Recorder()
    fetch = make_fetch(kind, make_config(fallback=FALLBACK), server.url, rec, client=hx)
    fetch.breaker.force_open()
    assert fetch(USER, fallback={"status": "override"}) == {"status": "override"}
    assert fetch(USER) == FALLBACK
    assert server.count() == 0
    assert rec.calls == 0


@pytest.mark.parametrize("prior_failures", [0, 1], ids=["healthy", "after-a-failure"])
@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_per_call_fallback_is_not_passed_to_the_function(
    kind: Kind, prior_failures: int, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """The per-call ``fallback=`` keyword is consumed by the wrapper, never passed to fn."""
    server.script(PATH, Json(200, BODY))
    rec = Recorder()
    fetch = make_fetch(kind, make_config(fallback=FALLBACK), server.url, rec, client=hx)
    for _ in range(prior_failures):
        fetch.breaker.record_failure(0)
    assert fetch(USER, fallback={"status": "override"}) == BODY
    assert rec.raised == []  # a TypeError here would mean the keyword leaked through
    assert server.count(PATH) == 1
    assert fetch.breaker.failure_count == 0


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_per_call_fallback_none_means_no_fallback_when_rejected(
    kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """``fallback=None`` per call disables the configured fallback: CircuitOpenError, no I/O."""
    fetch = make_fetch(kind, make_config(fallback=FALLBACK), server.url, Recorder(), client=hx)
    fetch.breaker.force_open()
    with pytest.raises(CircuitOpenError):
        fetch(USER, fallback=None)
    assert server.count() == 0


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_per_call_fallback_none_reraises_last_error_when_breaker_opens_mid_retry(
    kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """``fallback=None`` per call: a breaker opening mid-retry re-raises the last 503, unwrapped."""
    server.default = Reply(503)
    rec = Recorder()
    config = make_config(max_retries=5, threshold=2, fallback=FALLBACK)
    fetch = make_fetch(kind, config, server.url, rec, client=hx)
    with pytest.raises((requests.HTTPError, httpx.HTTPStatusError)) as info:
        fetch(USER, fallback=None)
    assert info.value is rec.raised[-1]
    assert info.value.response.status_code == 503
    assert server.count(PATH) == 2
    assert fetch.breaker.state is OPEN


@dataclass(frozen=True)
class FallbackScenario:
    id: str
    refused: bool
    force_open: bool
    requests: int
    calls: int


FALLBACK_SCENARIOS = [
    FallbackScenario("rejected-up-front", refused=False, force_open=True, requests=0, calls=0),
    FallbackScenario("opened-by-503s", refused=False, force_open=False, requests=2, calls=2),
    FallbackScenario("opened-by-refusals", refused=True, force_open=False, requests=0, calls=2),
]


def _expected_fallback_error(scenario: FallbackScenario, kind: Kind) -> type[BaseException]:
    if scenario.force_open:
        return CircuitOpenError
    return ERRORS["refused" if scenario.refused else "http"][_family(kind)]


@pytest.mark.parametrize("per_call", [False, True], ids=["configured", "per-call"])
@pytest.mark.parametrize("scenario", FALLBACK_SCENARIOS, ids=[s.id for s in FALLBACK_SCENARIOS])
@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_callable_fallback_receives_the_error(  # noqa: PLR0917
    kind: Kind,
    scenario: FallbackScenario,
    per_call: bool,
    server: ScriptedServer,
    instant: FakeClock,
    hx: httpx.Client,
) -> None:
    """A callable fallback gets the error: CircuitOpenError up front, else the last error."""
    received: list[BaseException] = []

    def fallback(error: BaseException) -> dict[str, str]:
        received.append(error)
        return {"fallback_for": type(error).__name__}

    server.default = Reply(503)
    rec = Recorder()
    config = make_config(max_retries=5, threshold=2, fallback=None if per_call else fallback)
    base = refused_url() if scenario.refused else server.url
    fetch = make_fetch(kind, config, base, rec, client=hx)
    if scenario.force_open:
        fetch.breaker.force_open()
    result = fetch(USER, fallback=fallback) if per_call else fetch(USER)

    expected = _expected_fallback_error(scenario, kind)
    assert len(received) == 1
    assert type(received[0]) is expected
    assert result == {"fallback_for": expected.__name__}
    if not scenario.force_open:
        assert received[0] is rec.raised[-1]  # the call's own last error, unwrapped
    assert server.count() == scenario.requests
    assert rec.calls == scenario.calls
    assert fetch.breaker.state is OPEN


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", FALLBACK_SCENARIOS, ids=[s.id for s in FALLBACK_SCENARIOS])
async def test_async_callable_fallback_is_awaited(
    scenario: FallbackScenario, server: ScriptedServer, instant: FakeClock
) -> None:
    """An ``async def`` fallback of an ``async def`` function is awaited; it gets the error."""
    received: list[BaseException] = []

    async def fallback(error: BaseException) -> dict[str, str]:
        await anyio.lowlevel.checkpoint()
        received.append(error)
        return {"fallback_for": type(error).__name__}

    server.default = Reply(503)
    rec = Recorder()
    config = make_config(max_retries=5, threshold=2, fallback=fallback)
    base = refused_url() if scenario.refused else server.url
    fetch = make_fetch("httpx_async", config, base, rec)
    if scenario.force_open:
        fetch.breaker.force_open()
    result = await fetch(USER)

    expected = _expected_fallback_error(scenario, "httpx_async")
    assert result == {"fallback_for": expected.__name__}  # a dict, not a coroutine
    assert len(received) == 1
    assert type(received[0]) is expected
    assert server.count() == scenario.requests
    assert rec.calls == scenario.calls


@pytest.mark.anyio
async def test_async_per_call_async_fallback_is_awaited(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A per-call ``fallback=`` async callable overrides the configured one and is awaited."""

    async def fallback(error: BaseException) -> str:
        await anyio.lowlevel.checkpoint()
        return f"per-call:{type(error).__name__}"

    fetch = make_fetch("httpx_async", make_config(fallback=FALLBACK), server.url, Recorder())
    fetch.breaker.force_open()
    assert await fetch(USER, fallback=fallback) == "per-call:CircuitOpenError"
    assert await fetch(USER) == FALLBACK
    assert server.count() == 0


@pytest.mark.parametrize("keyword_only", [False, True], ids=["positional-or-keyword", "kw-only"])
def test_function_declaring_fallback_parameter_receives_the_keyword(
    keyword_only: bool, server: ScriptedServer, instant: FakeClock
) -> None:
    """A function with its own ``fallback`` parameter gets the keyword; the wrapper leaves it be."""
    server.script(PATH, Json(200, BODY), Json(200, BODY))
    config = make_config(fallback=FALLBACK)

    def body(user_id: str, fallback: Any) -> dict[str, Any]:
        res = requests.get(f"{server.url}/users/{user_id}", timeout=TIMEOUT)
        res.raise_for_status()
        return {"fallback_seen": fallback, **res.json()}

    if keyword_only:

        @resilient_api(config)
        def fetch(user_id: str, *, fallback: Any = "default") -> dict[str, Any]:
            return body(user_id, fallback)

    else:

        @resilient_api(config)
        def fetch(user_id: str, fallback: Any = "default") -> dict[str, Any]:
            return body(user_id, fallback)

    assert fetch(USER, fallback="mine") == {"fallback_seen": "mine", **BODY}
    assert fetch(USER) == {"fallback_seen": "default", **BODY}
    assert server.count(PATH) == 2


@pytest.mark.anyio
async def test_async_function_declaring_fallback_parameter_receives_the_keyword(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """An ``async def`` with its own ``fallback`` parameter gets the keyword too."""
    server.script(PATH, Json(200, BODY))

    @resilient_api(make_config(fallback=FALLBACK))
    async def fetch(user_id: str, fallback: Any = None) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            res = await client.get(f"{server.url}/users/{user_id}")
            res.raise_for_status()
            return {"fallback_seen": fallback, **res.json()}

    assert await fetch(USER, fallback="mine") == {"fallback_seen": "mine", **BODY}
    assert server.count(PATH) == 1


# -- backoff on the fake clock --------------------------------------------------------------


def _check_delays(events: list[Event], base: float, cap: float, retries: int) -> list[float]:
    delays = [e for e in events if isinstance(e, RetryScheduled)]
    assert [e.attempt for e in delays] == list(range(1, retries + 1))
    assert all(e.status == 503 for e in delays)
    for n, event in enumerate(delays):
        assert 0.0 <= event.delay <= min(cap, base * 2**n)  # full jitter
    return [e.delay for e in delays]


@pytest.mark.parametrize("kind", SYNC_KINDS)
def test_backoff_sleeps_exactly_the_announced_delays_sync(
    kind: Kind, server: ScriptedServer, instant: FakeClock, hx: httpx.Client
) -> None:
    """The sync driver sleeps each announced delay (full jitter, capped): clock moves by the sum."""
    server.default = Reply(503)
    events: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=2.0, max_delay=5.0, max_retries=4),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
        hooks=(events.append,),
    )
    fetch = make_fetch(kind, config, server.url, Recorder(), client=hx)
    start = instant.now
    with pytest.raises((requests.HTTPError, httpx.HTTPStatusError)):
        fetch(USER)
    delays = _check_delays(events, 2.0, 5.0, 4)
    assert instant.now - start == pytest.approx(sum(delays))
    assert sum(delays) > 0.0  # four uniform draws are not all exactly zero
    assert server.count(PATH) == 5


@pytest.mark.anyio
async def test_backoff_sleeps_exactly_the_announced_delays_async(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """The async driver sleeps each RetryScheduled delay: the fake clock moves by their sum."""
    server.default = Reply(503)
    events: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=2.0, max_delay=5.0, max_retries=4),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
        hooks=(events.append,),
    )
    fetch = make_fetch("httpx_async", config, server.url, Recorder())
    start = instant.now
    with pytest.raises(httpx.HTTPStatusError):
        await fetch(USER)
    delays = _check_delays(events, 2.0, 5.0, 4)
    assert instant.now - start == pytest.approx(sum(delays))
    assert sum(delays) > 0.0
    assert server.count(PATH) == 5


# -- breakers: one per function, named module.qualname -------------------------------------------

MODULE_CONFIG = make_config(max_retries=0, threshold=1)


@resilient_api(MODULE_CONFIG)
def get_profile(base: str, user_id: str) -> Any:
    """Fetch a profile."""
    res = requests.get(f"{base}/users/{user_id}", timeout=TIMEOUT)
    res.raise_for_status()
    return res.json()


@resilient_api(MODULE_CONFIG)
def get_orders(base: str, user_id: str) -> Any:
    """Fetch orders."""
    res = requests.get(f"{base}/orders/{user_id}", timeout=TIMEOUT)
    res.raise_for_status()
    return res.json()


def test_breaker_is_named_module_dot_qualname() -> None:
    """``decorated.breaker.name == f"{fn.__module__}.{fn.__qualname__}"``."""
    assert get_profile.breaker.name == f"{__name__}.get_profile"
    assert get_orders.breaker.name == f"{__name__}.get_orders"

    def local() -> None: ...

    decorated = resilient_api(MODULE_CONFIG)(local)
    expected = f"{__name__}.test_breaker_is_named_module_dot_qualname.<locals>.local"
    assert decorated.breaker.name == expected


def test_breakers_of_two_functions_are_independent(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Opening one function's breaker leaves another's CLOSED: its calls still reach the server."""
    get_profile.breaker.reset()
    get_orders.breaker.reset()
    server.script(PATH, Reply(503))
    server.script(f"/orders/{USER}", Json(200, [1, 2]))
    try:
        assert get_profile.breaker is not get_orders.breaker
        with pytest.raises(requests.HTTPError):
            get_profile(server.url, USER)
        assert get_profile.breaker.state is OPEN
        assert get_orders.breaker.state is CLOSED
        assert get_orders(server.url, USER) == [1, 2]
        assert server.count(f"/orders/{USER}") == 1
        with pytest.raises(CircuitOpenError):
            get_profile(server.url, USER)
        assert server.count(PATH) == 1
    finally:
        get_profile.breaker.reset()
        get_orders.breaker.reset()


def test_decorated_method_shares_one_breaker_across_instances(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """A decorated method has one breaker for all instances, named module.Class.method."""

    class UserAPI:
        def __init__(self, base: str) -> None:
            self.base = base

        @resilient_api(make_config(max_retries=0, threshold=2))
        def fetch(self, user_id: str) -> Any:
            """Fetch one user."""
            res = requests.get(f"{self.base}/users/{user_id}", timeout=TIMEOUT)
            res.raise_for_status()
            return res.json()

    a, b = UserAPI(server.url), UserAPI(f"{server.url}/v2")
    server.script(PATH, Json(200, BODY), Reply(503))
    server.script(f"/v2{PATH}", Reply(503))

    expected = f"{__name__}.test_decorated_method_shares_one_breaker_across_instances.<locals>"
    assert UserAPI.fetch.breaker.name == f"{expected}.UserAPI.fetch"
    assert a.fetch.breaker is b.fetch.breaker is UserAPI.fetch.breaker
    assert a.fetch.__doc__ == "Fetch one user."

    assert a.fetch(USER) == BODY  # `self` is bound: a's base URL
    with pytest.raises(requests.HTTPError):
        a.fetch(USER)
    with pytest.raises(requests.HTTPError):
        b.fetch(USER)  # b's base URL; its failure adds to a's: threshold 2 reached
    assert UserAPI.fetch.breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        a.fetch(USER)
    assert server.count(PATH) == 2
    assert server.count(f"/v2{PATH}") == 1


@pytest.mark.anyio
async def test_decorated_async_method_binds_self(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """An ``async def`` method keeps ``self`` and retries like a function."""

    class UserAPI:
        def __init__(self, base: str) -> None:
            self.base = base

        @resilient_api(make_config(max_retries=2))
        async def fetch(self, user_id: str) -> Any:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                res = await client.get(f"{self.base}/users/{user_id}")
                res.raise_for_status()
                return res.json()

    server.script(PATH, Reply(502), Json(200, BODY))
    assert await UserAPI(server.url).fetch(USER) == BODY
    assert server.count(PATH) == 2
    assert UserAPI.fetch.breaker.name.endswith("<locals>.UserAPI.fetch")


# -- the wrapper keeps the function's metadata ----------------------------------------------------


def _plain(user_id: str, *, verbose: bool = False, retries: int = 1) -> dict[str, Any]:
    """Fetch a user (sync)."""
    return {"user_id": user_id, "verbose": verbose, "retries": retries}


async def _coro(user_id: str, *, verbose: bool = False) -> list[int]:
    """Fetch a user (async)."""
    return [len(user_id), int(verbose)]


@pytest.mark.parametrize("fn", [_plain, _coro], ids=["sync", "async"])
def test_wrapper_keeps_name_doc_signature_annotations_and_coroutine_nature(
    fn: Callable[..., Any],
) -> None:
    """functools metadata survives: name, qualname, doc, signature, type hints, async-ness."""
    decorated = resilient_api(make_config())(fn)
    assert decorated.__name__ == fn.__name__
    assert decorated.__qualname__ == fn.__qualname__
    assert decorated.__module__ == fn.__module__
    assert decorated.__doc__ == fn.__doc__
    assert decorated.__wrapped__ is fn
    assert inspect.signature(decorated) == inspect.signature(fn)
    assert typing.get_type_hints(decorated) == typing.get_type_hints(fn)
    assert inspect.iscoroutinefunction(decorated) is inspect.iscoroutinefunction(fn)


def test_async_wrapper_returns_a_coroutine_and_sync_wrapper_does_not() -> None:
    """An ``async def`` stays awaitable; a sync function is called directly."""
    sync = resilient_api(make_config())(_plain)
    assert sync("ab", verbose=True) == {"user_id": "ab", "verbose": True, "retries": 1}
    coro = resilient_api(make_config())(_coro)("ab")
    assert inspect.iscoroutine(coro)
    with pytest.raises(StopIteration) as info:
        coro.send(None)
    assert info.value.value == [2, 0]
