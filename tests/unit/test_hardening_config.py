"""Issue 11 (hardening), configuration items.

* Item 13: every configuration the seed allows is accepted.  The seed's delay is
  ``min(max_delay, base_delay * 2**n)``, well defined for ``base_delay > max_delay``
  (every delay is capped) and for a ``max_delay`` the schedule never reaches.
* ``idempotent_methods`` takes any RFC 9110 method token (``M-SEARCH``...).
* ``CircuitBreakerConfig(store="redis://...")`` says to use ``RedisStore.from_url(url)``
  and never echoes the URL.
"""

from __future__ import annotations

import fractions
import http
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer

from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    ConfigError,
    ConfigTypeError,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.backoff import next_delay
from smoothapi.events import Event, RetryScheduled
from smoothapi.testing import FakeClock

ALMOST_ONE = 0.999999
MODES = ["full", "equal", "none", "decorrelated"]


def const(value: float) -> Callable[[], float]:
    return lambda: value


# -- item 13: base_delay above max_delay is accepted and capped ----------------------------------

# rand -> delay for base_delay=5, max_delay=0.3: the cap is 0.3 for every n.
CAPPED = {
    "full": lambda r: r * 0.3,
    "equal": lambda r: 0.15 + r * 0.15,
    "none": lambda _r: 0.3,
    "decorrelated": lambda _r: 0.3,
}


@pytest.mark.parametrize("jitter", MODES)
@pytest.mark.parametrize("rand", [0.0, 0.5, ALMOST_ONE])
def test_base_delay_above_max_delay_is_accepted_and_every_delay_is_capped(
    jitter: str, rand: float
) -> None:
    """BackoffConfig(base_delay=5, max_delay=0.3) builds (it raised before) and every delay,
    in every jitter mode, is what min(max_delay, base_delay * 2**n) gives: capped at 0.3."""
    config = BackoffConfig(base_delay=5, max_delay=0.3, max_retries=10, jitter=jitter)
    previous: float | None = None
    for n in (0, 1, 2, 5, 64, 10_000):
        previous = next_delay(n, config, previous, rand=const(rand))
        assert previous == pytest.approx(CAPPED[jitter](rand))
        assert previous <= 0.3


@pytest.mark.parametrize("rand", [0.0, 0.5, ALMOST_ONE])
def test_decorrelated_with_a_base_delay_near_the_float_limit_stays_finite(rand: float) -> None:
    """base_delay * 3 overflows a float: the delay is still exactly max_delay, never inf/nan."""
    config = BackoffConfig(base_delay=1e308, max_delay=1.0, jitter="decorrelated")
    previous: float | None = None
    for n in range(5):
        previous = next_delay(n, config, previous, rand=const(rand))
        assert previous == 1.0


@pytest.mark.parametrize(("jitter", "expected"), [("none", 0.3), ("decorrelated", 0.3)])
def test_the_engine_sleeps_the_capped_delays(
    instant: FakeClock, jitter: str, expected: float
) -> None:
    """A decorated call under base_delay=5, max_delay=0.3 retries after 0.3 s each time."""
    events: list[Event] = []
    config = ResilientConfig(
        backoff=BackoffConfig(base_delay=5, max_delay=0.3, max_retries=3, jitter=jitter),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
        hooks=(events.append,),
    )

    @resilient_api(config)
    def refused() -> None:
        raise ConnectionRefusedError("refused")

    start = instant()
    with pytest.raises(ConnectionRefusedError):
        refused()
    delays = [e.delay for e in events if isinstance(e, RetryScheduled)]
    assert delays == [expected] * 3
    assert instant() - start == pytest.approx(3 * expected)


@pytest.mark.parametrize("jitter", MODES)
def test_deadline_fit_check_uses_the_capped_delays(jitter: str) -> None:
    """The deadline check's shortest schedule is capped too: 3 retries of at most 0.3 s fit
    in 1 s in every mode (decorrelated was counted as 3 x base_delay = 15 s)."""
    backoff = BackoffConfig(base_delay=5, max_delay=0.3, max_retries=3, jitter=jitter)
    assert ResilientConfig(backoff=backoff, deadline=1.0).deadline == 1.0


@pytest.mark.parametrize("jitter", ["none", "decorrelated"])
def test_deadline_fit_check_still_rejects_a_capped_schedule_that_cannot_fit(jitter: str) -> None:
    """3 retries that each sleep exactly 0.3 s cannot fit 0.5 s: still rejected, saying why."""
    backoff = BackoffConfig(base_delay=5, max_delay=0.3, max_retries=3, jitter=jitter)
    with pytest.raises(ConfigError, match=r"cannot fit the retry schedule.*0\.9"):
        ResilientConfig(backoff=backoff, deadline=0.5)


# -- item 13: every other configuration the seed allows ------------------------------------------

SEED_VALID: list[tuple[str, Callable[[], object]]] = [
    (
        "the seed README's example",
        lambda: ResilientConfig(
            backoff=BackoffConfig(base_delay=0.1, max_delay=30.0, max_retries=3),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=10_000),
            fallback={"status": "degraded", "data": []},
            retry_on=[429, 500, 502, 503, 504],
        ),
    ),
    ("base_delay above max_delay", lambda: BackoffConfig(base_delay=5, max_delay=0.3)),
    ("base_delay over a day, capped", lambda: BackoffConfig(base_delay=100_000, max_delay=30)),
    ("max_delay as 'no cap'", lambda: BackoffConfig(max_delay=sys.maxsize)),
    ("max_delay of a week", lambda: BackoffConfig(max_delay=7 * 86_400.0)),
    ("huge delays, no retries", lambda: BackoffConfig(1e300, 1e300, max_retries=0)),
    ("zero delays", lambda: BackoffConfig(base_delay=0, max_delay=0)),
    ("zero base, positive cap", lambda: BackoffConfig(base_delay=0, max_delay=1)),
    ("many retries", lambda: BackoffConfig(max_retries=10_000)),
    ("float delays as Fraction", lambda: BackoffConfig(base_delay=fractions.Fraction(1, 10))),
    ("cooldown 0", lambda: CircuitBreakerConfig(cooldown_ms=0)),
    ("cooldown of a year", lambda: CircuitBreakerConfig(cooldown_ms=365 * 86_400_000)),
    ("cooldown as a float", lambda: CircuitBreakerConfig(cooldown_ms=2_500.5)),
    ("threshold 1", lambda: CircuitBreakerConfig(failure_threshold=1)),
    ("threshold 10**6", lambda: CircuitBreakerConfig(failure_threshold=10**6)),
    ("retry_on empty", lambda: ResilientConfig(retry_on=[])),
    ("retry_on a tuple", lambda: ResilientConfig(retry_on=(503,))),
    ("retry_on a set", lambda: ResilientConfig(retry_on={408, 425, 429})),
    (
        "retry_on HTTPStatus members",
        lambda: ResilientConfig(retry_on=[http.HTTPStatus.SERVICE_UNAVAILABLE]),
    ),
    ("fallback a callable", lambda: ResilientConfig(fallback=lambda _e: {})),
    ("fallback falsy", lambda: ResilientConfig(fallback=0)),
]


@pytest.mark.parametrize("build", [row[1] for row in SEED_VALID], ids=[r[0] for r in SEED_VALID])
def test_every_configuration_the_seed_allows_is_accepted(build: Callable[[], object]) -> None:
    """Configurations the seed's fields and formula allow build without error."""
    build()


def test_a_max_delay_the_schedule_never_reaches_caps_retry_after_at_one_day() -> None:
    """max_delay=sys.maxsize is accepted (the schedule never reaches it), and a server's
    Retry-After still cannot make a call sleep more than a day."""
    config = ResilientConfig(backoff=BackoffConfig(max_delay=sys.maxsize))
    assert config.backoff.max_delay == float(sys.maxsize)
    assert config.sleep_cap == 86_400.0
    assert ResilientConfig(backoff=BackoffConfig(max_delay=5)).sleep_cap == 5.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_delay": 3_600, "max_delay": 2 * 86_400, "max_retries": 10},
        {"base_delay": 1e10, "max_delay": 1e10},
        {"base_delay": 40_000, "max_delay": 1e9, "max_retries": 2, "jitter": "decorrelated"},
    ],
)
def test_a_schedule_that_would_wait_over_a_day_is_rejected_naming_the_fields(
    kwargs: dict[str, Any],
) -> None:
    """Only a wait the schedule can really ask for is bounded (one day: a unit mistake, and
    the OS sleep overflows past ~292 years); the message names the fields and the wait."""
    with pytest.raises(ConfigError) as info:
        BackoffConfig(**kwargs)
    message = str(info.value)
    assert "BackoffConfig.max_delay" in message
    assert "BackoffConfig.base_delay" in message
    assert "one day" in message


def test_exotic_real_and_integral_numbers_are_accepted_and_normalised() -> None:
    """numbers.Real / numbers.Integral values (Fraction, numpy's) are numbers too: stored as
    float / int.  bool stays rejected."""
    cfg = BackoffConfig(base_delay=fractions.Fraction(1, 4), max_delay=fractions.Fraction(3))
    assert (cfg.base_delay, cfg.max_delay) == (0.25, 3.0)
    assert type(cfg.base_delay) is float
    breaker = CircuitBreakerConfig(cooldown_ms=fractions.Fraction(1, 2))
    assert breaker.cooldown_ms == 0.5
    assert type(breaker.cooldown_ms) is float
    with pytest.raises(ConfigTypeError):
        BackoffConfig(max_retries=True)


def test_numpy_integers_and_floats_are_accepted() -> None:
    """numpy.int64 counts and codes, numpy.float32 delays: accepted as plain int / float."""
    np = pytest.importorskip("numpy")
    cfg = BackoffConfig(
        base_delay=np.float32(0.5), max_delay=np.float32(2), max_retries=np.int64(2)
    )
    assert (cfg.base_delay, cfg.max_delay, cfg.max_retries) == (0.5, 2.0, 2)
    assert type(cfg.max_retries) is int
    breaker = CircuitBreakerConfig(failure_threshold=np.int64(4))
    assert type(breaker.failure_threshold) is int
    assert ResilientConfig(retry_on=[np.int64(503)]).retry_on == frozenset({503})


# -- idempotent_methods: any RFC 9110 token ------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    ["M-SEARCH", "PROPFIND", "m-search", "BREW", "X_CUSTOM.V2", "A!#$%&'*+-.^_`|~9"],
)
def test_idempotent_methods_accept_any_rfc_9110_token(method: str) -> None:
    """Extension methods (M-SEARCH, WebDAV's PROPFIND...) are tokens: accepted, upper-cased as
    requests and httpx send them."""
    config = ResilientConfig(idempotent_methods=["GET", method])
    assert config.idempotent_methods == frozenset({"GET", method.upper()})


@pytest.mark.parametrize(
    "method", ["", "GET POST", "GET\r\n", "G\u00c9T", "(GET)", "A/B", "A:B", "A,B", 5, b"GET", None]
)
def test_idempotent_methods_reject_what_is_not_a_token(method: object) -> None:
    """Empty, spaces, controls, non-ASCII letters, separators and non-strings are refused,
    naming the value."""
    with pytest.raises(ConfigError, match="idempotent_methods") as info:
        ResilientConfig(idempotent_methods=[method])
    assert repr(method) in str(info.value)


@pytest.mark.parametrize("mount", ["requests", "httpx"])
@pytest.mark.parametrize(("listed", "requests_seen"), [(True, 3), (False, 1)])
def test_an_extension_method_listed_as_idempotent_is_retried(
    server: ScriptedServer, instant: FakeClock, mount: str, listed: bool, requests_seen: int
) -> None:
    """M-SEARCH listed in idempotent_methods is resent after a 503, against a real server;
    unlisted, it gets one attempt."""
    methods = {"GET", "M-SEARCH"} if listed else {"GET"}
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
        idempotent_methods=methods,
    )
    server.script("/ssdp", Reply(503), Reply(503), Reply(200))
    url = server.url + "/ssdp"
    status: int
    if mount == "requests":
        with requests.Session() as session:
            session.mount("http://", ResilientAdapter(config))
            status = session.request("M-SEARCH", url).status_code
    else:
        with httpx.Client(transport=ResilientTransport(config)) as client:
            status = client.request("M-SEARCH", url).status_code
    assert status == (200 if listed else 503)
    assert server.count("/ssdp", method="M-SEARCH") == requests_seen


# -- store=: a URL or a client instead of a store ------------------------------------------------

SECRET_URL = "redis://default:s3cr/t#pw?x@cache.internal:6379/0"  # noqa: S105 - a fake


@pytest.mark.parametrize("store", [SECRET_URL, SECRET_URL.encode()])
def test_a_url_as_store_points_to_from_url_and_never_echoes_it(store: object) -> None:
    """store="redis://..." raises ConfigTypeError naming RedisStore.from_url(url), without any
    part of the URL (it may hold a password) and without a list of missing methods."""
    with pytest.raises(ConfigTypeError) as info:
        CircuitBreakerConfig(store=store)  # type: ignore[arg-type]
    message = str(info.value)
    assert "CircuitBreakerConfig.store" in message
    assert "RedisStore.from_url(url)" in message
    for fragment in ("s3cr", "pw", "cache.internal", "default", "acquire_async"):
        assert fragment not in message


def test_a_redis_client_as_store_points_to_redis_store() -> None:
    """A redis.Redis client (not a store) is named as such, with the way to wrap it."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=1, password="hunter2")  # noqa: S106 - never connects
    try:
        with pytest.raises(ConfigTypeError) as info:
            CircuitBreakerConfig(store=client)
    finally:
        client.close()
    message = str(info.value)
    assert "RedisStore(client)" in message
    assert "hunter2" not in message
    assert "acquire_async" not in message


def test_a_redis_connection_pool_as_store_says_to_build_a_client_on_it() -> None:
    """A pool is not a client: the message shows how to build one on it, never its password."""
    redis = pytest.importorskip("redis")
    pool = redis.ConnectionPool(host="127.0.0.1", port=1, password="hunter2")  # noqa: S106
    try:
        with pytest.raises(ConfigTypeError) as info:
            CircuitBreakerConfig(store=pool)
    finally:
        pool.disconnect()
    message = str(info.value)
    assert "connection pool" in message
    assert "redis.Redis(connection_pool=pool)" in message
    assert "hunter2" not in message


def test_an_unrelated_object_as_store_is_named_by_type_without_eleven_method_names() -> None:
    """An object with none of the store methods: its type and the way to build a store."""
    with pytest.raises(ConfigTypeError) as info:
        CircuitBreakerConfig(store={"url": "redis://x"})  # type: ignore[arg-type]
    message = str(info.value)
    assert "builtins.dict" in message
    assert "RedisStore.from_url(url)" in message
    assert "acquire_async" not in message
    assert "redis://x" not in message


def test_a_partial_store_lists_what_it_lacks() -> None:
    """An object that implements part of BreakerStore is told which methods are missing."""

    class HalfStore:
        def key(self, name: str) -> str:
            return name

        def acquire(self) -> None:
            return None

    with pytest.raises(ConfigTypeError) as info:
        CircuitBreakerConfig(store=HalfStore())  # type: ignore[arg-type]
    message = str(info.value)
    assert "HalfStore" in message
    assert "record_async" in message
    assert "acquire," not in message
