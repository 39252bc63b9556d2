"""``Retry-After``: the parser, and how the transports honour it.

DESIGN.md, "Transports": "Retry-After (delta-seconds or HTTP-date) on a
retried response sets the wait (at least what the server asked). The cap
defaults to backoff.max_delay; a Retry-After longer than the cap is not
slept: the response is returned at once."  And "What never leaks": "Nothing
a server sends (a header, a body) can make the client sleep past its cap".

The integration tests run the sync cases through requests + ResilientAdapter
and httpx + ResilientTransport, and the async ones through
AsyncResilientTransport under asyncio and trio, against the real scripted
server.  ``instant`` makes every sleep instant and adds it to a FakeClock, so
"the client waited d seconds" is "the clock moved by d" and each
RetryScheduled event's ``delay``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreakerConfig,
    Event,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    RetriesExhausted,
    RetryScheduled,
)
from smoothapi.mounts._transport import parse_retry_after
from smoothapi.testing import FakeClock

NOW = 1_700_000_000.0  # an injected "now" (Unix time) for the HTTP-date cases
TIMEOUT = 5.0

# -- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("0", 0.0), ("1", 1.0), (" 7 ", 7.0), ("1.5", 1.5), ("0.25", 0.25)],
)
def test_delta_seconds_are_parsed(value: str, seconds: float) -> None:
    """delta-seconds (and a decimal such as "1.5") are that many seconds; whitespace is trimmed."""
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "fmt",
    [
        "%a, %d %b %Y %H:%M:%S GMT",  # IMF-fixdate, the preferred form
        "%A, %d-%b-%y %H:%M:%S GMT",  # obsolete RFC 850
        "%a %b %d %H:%M:%S %Y",  # obsolete asctime
    ],
    ids=["imf-fixdate", "rfc850", "asctime"],
)
def test_http_date_in_the_future_is_seconds_from_now(fmt: str) -> None:
    """An HTTP-date (all three RFC 9110 forms) means the seconds from the injected ``now``."""
    value = time.strftime(fmt, time.gmtime(NOW + 30))
    assert parse_retry_after(value, now=NOW) == pytest.approx(30.0)


def test_http_date_in_the_past_means_no_wait() -> None:
    """A date already gone means 0 seconds, never a negative wait."""
    assert parse_retry_after(formatdate(NOW - 3600, usegmt=True), now=NOW) == 0.0


def test_http_date_is_relative_to_the_injected_now() -> None:
    """The same header read at two different ``now`` values gives two different waits."""
    value = formatdate(NOW + 100, usegmt=True)
    assert parse_retry_after(value, now=NOW) == pytest.approx(100.0)
    assert parse_retry_after(value, now=NOW + 60) == pytest.approx(40.0)


@pytest.mark.parametrize("value", ["-5", "-0", "-1.5", "+5"])
def test_signed_values_are_none(value: str) -> None:
    """A negative (or signed) number is not delta-seconds: ignored."""
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "soon",
        "1.5.3",
        "0x10",
        "nan",
        "inf",
        "Infinity",
        "Tue, 31 Feb 2023 22:13:50 GMT",  # no such day
        "Tue, 14 Nov 99999 22:13:50 GMT",  # year out of range
        "\x00",
    ],
)
def test_garbage_is_none(value: str) -> None:
    """Anything that is neither delta-seconds nor an HTTP-date is ignored (None), never raised."""
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9", "\u00b3", "1\u00b2"])
def test_latin1_superscript_digits_are_garbage(value: str) -> None:
    """Superscript digits (valid Latin-1 header bytes 0xB2, 0xB9, 0xB3) are not DIGITs: None,
    not an "absurdly large" wait."""
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", [None, "", "   "])
def test_absent_or_empty_is_none(value: str | None) -> None:
    """No header, or an empty one, asks for nothing."""
    assert parse_retry_after(value, now=NOW) is None


def test_huge_delta_is_returned_for_the_caller_to_cap() -> None:
    """A huge delta ("9999999999") is returned as is, for the caller to compare with its cap."""
    result = parse_retry_after("9999999999", now=NOW)
    assert result is not None
    assert result >= 9_999_999_999


@pytest.mark.parametrize(
    "value", ["1" * 65, "9" * 400, "Tue, 14 Nov 2023 22:13:50 GMT" + " x" * 40]
)
def test_overlong_values_are_none(value: str) -> None:
    """A header longer than any sane number or date is not parsed at all."""
    assert parse_retry_after(value, now=NOW) is None


def test_default_now_is_the_wall_clock() -> None:
    """Without ``now``, an HTTP-date is measured against time.time()."""
    target = int(time.time()) + 60
    before = target - time.time()
    result = parse_retry_after(formatdate(target, usegmt=True))
    assert result is not None
    assert before - 5 <= result <= before + 0.01


# -- integration: the sync transports ---------------------------------------------------------


def cfg(events: list[Event], **backoff: Any) -> ResilientConfig:
    return ResilientConfig(
        backoff=BackoffConfig(**{"max_retries": 3, **backoff}),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
        hooks=(events.append,),
    )


Get = Callable[[str], tuple[int, int]]  # url -> (status, attempts)


@pytest.fixture(params=["requests", "httpx"])
def make_get(request: pytest.FixtureRequest) -> Iterator[Callable[[ResilientConfig], Get]]:
    """``make_get(config)(url) -> (status, attempts)`` through requests or httpx-sync."""
    closers: list[Callable[[], None]] = []

    def make(config: ResilientConfig) -> Get:
        if request.param == "requests":
            session = requests.Session()
            session.mount("http://", ResilientAdapter(config))
            closers.append(session.close)

            def get_requests(url: str) -> tuple[int, int]:
                response = session.get(url, timeout=TIMEOUT)
                return response.status_code, response.smoothapi_attempts

            return get_requests
        client = httpx.Client(transport=ResilientTransport(config), timeout=TIMEOUT)
        closers.append(client.close)

        def get_httpx(url: str) -> tuple[int, int]:
            response = client.get(url)
            return response.status_code, response.extensions["smoothapi_attempts"]

        return get_httpx

    yield make
    for close in closers:
        close()


def scheduled(events: list[Event]) -> list[RetryScheduled]:
    return [e for e in events if isinstance(e, RetryScheduled)]


def test_retry_after_seconds_sets_the_wait(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """503 with Retry-After: 1, then 200: the client waits at least 1 s (and at most the cap)
    before the second request."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": "1"}), Reply(200))
    get = make_get(cfg(events))
    start = instant.now
    assert get(server.url + "/x") == (200, 2)
    [event] = scheduled(events)
    assert 1.0 <= event.delay <= 30.0
    assert instant.now - start >= 1.0
    assert instant.now - start == pytest.approx(event.delay)


def test_retry_after_on_429_sets_the_wait(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """429 Too Many Requests with Retry-After: 5 is retried after at least 5 s."""
    events: list[Event] = []
    server.script("/x", Reply(429, headers={"Retry-After": "5"}), Reply(200))
    get = make_get(cfg(events))
    assert get(server.url + "/x") == (200, 2)
    [event] = scheduled(events)
    assert 5.0 <= event.delay <= 30.0


def test_retry_after_over_the_default_cap_returns_the_response_at_once(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """Retry-After: 3600 with the default cap (max_delay 30 s): no sleep, the 503 is returned
    after one request."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": "3600"}), Reply(200))
    get = make_get(cfg(events))
    start = instant.now
    assert get(server.url + "/x") == (503, 1)
    assert server.count("/x") == 1
    assert instant.now == start
    assert scheduled(events) == []
    assert [e.attempts for e in events if isinstance(e, RetriesExhausted)] == [1]


def test_huge_retry_after_returns_the_response_at_once(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """Retry-After: 9999999999 is over any cap: one request, no sleep."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": "9999999999"}), Reply(200))
    get = make_get(cfg(events))
    start = instant.now
    assert get(server.url + "/x") == (503, 1)
    assert instant.now == start


def test_the_cap_follows_max_delay(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """With max_delay=60 a Retry-After of 45 is under the cap and is slept."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": "45"}), Reply(200))
    get = make_get(cfg(events, max_delay=60.0))
    assert get(server.url + "/x") == (200, 2)
    [event] = scheduled(events)
    assert 45.0 <= event.delay <= 60.0


def test_retry_after_just_under_the_cap_never_sleeps_past_it(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """Retry-After: 29.9 with a 30 s cap: the wait (jitter included) stays within the cap."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": "29.9"}), Reply(200))
    get = make_get(cfg(events))
    assert get(server.url + "/x") == (200, 2)
    [event] = scheduled(events)
    assert 29.9 <= event.delay <= 30.0


@pytest.mark.parametrize("value", ["soon", "-3", "Tue, 31 Feb 2023 22:13:50 GMT", "\u00b2"])
def test_garbage_retry_after_is_ignored_and_normal_backoff_applies(
    make_get: Callable[[ResilientConfig], Get],
    server: ScriptedServer,
    instant: FakeClock,
    value: str,
) -> None:
    """An unparseable Retry-After is ignored: the request is retried after the normal backoff
    (full jitter, retry 0: at most base_delay)."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": value}), Reply(200))
    get = make_get(cfg(events, base_delay=0.1))
    assert get(server.url + "/x") == (200, 2)
    [event] = scheduled(events)
    assert 0.0 <= event.delay <= 0.1


def test_http_date_retry_after_sets_the_wait(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """Retry-After as an HTTP-date 5 s ahead: the wait is at least the time left until then."""
    events: list[Event] = []
    target = int(time.time()) + 5
    server.script("/x", Reply(503, headers={"Retry-After": formatdate(target, usegmt=True)}))
    get = make_get(cfg(events))
    assert get(server.url + "/x") == (200, 2)
    left = target - time.time()  # parsed before now, so it asked for at least this much
    [event] = scheduled(events)
    assert left <= event.delay <= 30.0
    assert event.delay >= 3.0


def test_http_date_in_the_past_retries_without_a_long_wait(
    make_get: Callable[[ResilientConfig], Get], server: ScriptedServer, instant: FakeClock
) -> None:
    """A Retry-After date already gone asks for no wait: retried after about the backoff."""
    events: list[Event] = []
    past = formatdate(time.time() - 3600, usegmt=True)
    server.script("/x", Reply(503, headers={"Retry-After": past}), Reply(200))
    get = make_get(cfg(events, base_delay=0.1))
    assert get(server.url + "/x") == (200, 2)
    [event] = scheduled(events)
    assert event.delay <= 0.1


# -- integration: the async transport (asyncio and trio) ------------------------------------


@pytest.mark.anyio
async def test_async_retry_after_seconds_sets_the_wait(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: Retry-After: 1 makes the client wait at least 1 s before retrying."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": "1"}), Reply(200))
    start = instant.now
    transport = AsyncResilientTransport(cfg(events))
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        response = await client.get(server.url + "/x")
    assert response.status_code == 200
    assert server.count("/x") == 2
    [event] = scheduled(events)
    assert 1.0 <= event.delay <= 30.0
    assert instant.now - start >= 1.0


@pytest.mark.anyio
async def test_async_retry_after_over_the_cap_returns_the_response_at_once(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: Retry-After: 3600 over the 30 s cap: the 503 is returned after one request."""
    events: list[Event] = []
    server.script("/x", Reply(503, headers={"Retry-After": "3600"}), Reply(200))
    start = instant.now
    transport = AsyncResilientTransport(cfg(events))
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        response = await client.get(server.url + "/x")
    assert response.status_code == 503
    assert server.count("/x") == 1
    assert instant.now == start
