"""The three transport mount points against a real HTTP/1.1 server.

DESIGN.md, "Transports": statuses are read from responses; a retried response
goes back to the pool (bounded drain, or close for a large body); the last
response is returned as is when retries run out; only idempotent requests (or
ones with an ``Idempotency-Key``) are resent once they may have reached the
server, a connect error is retried for every method, a one-shot body gets one
attempt; an open breaker raises an error that is both ``CircuitOpenError`` and
the client's own request error; breakers are per origin; the fallback answers
only calls rejected up front.

The sync cases run twice, through ``requests`` + ``ResilientAdapter`` and
through ``httpx.Client`` + ``ResilientTransport`` (the ``make_client``
fixture); the async twins run ``httpx.AsyncClient`` + ``AsyncResilientTransport``
under asyncio and trio.  Every retrying test uses ``instant``: backoff sleeps
return at once and advance a FakeClock that the breakers read.
"""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import requests
from httpserver import BigBody, Drop, Reply, ScriptedServer, refused_url

import smoothapi
from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    Event,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    RetriesExhausted,
    RetryScheduled,
    resilient_api,
)
from smoothapi.testing import FakeClock

TIMEOUT = 5.0  # per-request socket timeout
GUARD = 10.0  # a hung pool fails the test after this long; passing tests take milliseconds

IDEMPOTENT = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
NON_IDEMPOTENT = ["POST", "PATCH"]


def cfg(
    *,
    max_retries: int = 3,
    threshold: int = 100,
    hooks: tuple[Callable[[Event], object], ...] = (),
    **kwargs: Any,
) -> ResilientConfig:
    """A config whose breaker stays CLOSED unless a test lowers ``threshold``."""
    return ResilientConfig(
        backoff=BackoffConfig(max_retries=max_retries),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=10_000),
        hooks=hooks,
        **kwargs,
    )


def guarded(fn: Callable[[], Any], timeout: float = GUARD) -> Any:
    """Run ``fn`` in a daemon thread; fail (instead of blocking forever) if it hangs."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the request hung for {timeout}s (a retried response kept its pool slot)")
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- one sync client interface over requests and httpx ------------------------------------------


class RequestsClient:
    """``requests.Session`` with ``ResilientAdapter`` mounted on ``http://``."""

    kind = "requests"
    open_error: type[Exception] = requests.exceptions.ConnectionError
    http_error: type[Exception] = requests.HTTPError

    def __init__(self, config: ResilientConfig | None, *, pool_of_one: bool, **kwargs: Any):
        if pool_of_one:
            kwargs.update(pool_maxsize=1, pool_block=True)
        self.mount = ResilientAdapter(config, **kwargs)
        self.session = requests.Session()
        self.session.mount("http://", self.mount)

    def request(self, method: str, url: str, *, body: Any = None, **kwargs: Any) -> Any:
        return self.session.request(method, url, data=body, timeout=TIMEOUT, **kwargs)

    @staticmethod
    def attempts(response: Any) -> int:
        return int(response.smoothapi_attempts)

    def sent_url(self, url: str) -> str:
        """The URL as the adapter's send() receives it (requests normalises it first)."""
        return str(self.session.prepare_request(requests.Request("GET", url)).url)

    @staticmethod
    def synthetic(request: Any, body: bytes) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response.reason = "OK"
        response._content = body
        response.request = request
        response.url = request.url
        return response

    def close(self) -> None:
        self.session.close()


class HTTPXClient:
    """``httpx.Client(transport=ResilientTransport(...))``."""

    kind = "httpx"
    open_error: type[Exception] = httpx.TransportError
    http_error: type[Exception] = httpx.HTTPStatusError

    def __init__(self, config: ResilientConfig | None, *, pool_of_one: bool, **kwargs: Any):
        if pool_of_one:
            kwargs.update(limits=httpx.Limits(max_connections=1))
        self.mount = ResilientTransport(config, **kwargs)
        self.client = httpx.Client(transport=self.mount, timeout=TIMEOUT)

    def request(self, method: str, url: str, *, body: Any = None, **kwargs: Any) -> Any:
        return self.client.request(method, url, content=body, **kwargs)

    @staticmethod
    def attempts(response: Any) -> int:
        return int(response.extensions["smoothapi_attempts"])

    def sent_url(self, url: str) -> str:
        """The URL as the transport's handle_request() receives it."""
        return str(self.client.build_request("GET", url).url)

    @staticmethod
    def synthetic(request: Any, body: bytes) -> httpx.Response:
        return httpx.Response(200, content=body, request=request)

    def close(self) -> None:
        self.client.close()


Client = RequestsClient | HTTPXClient


class Factory:
    """``make_client(config, pool_of_one=False, **mount_kwargs)``; closes what it made."""

    def __init__(self, kind: str) -> None:
        self.cls: type[RequestsClient] | type[HTTPXClient] = (
            RequestsClient if kind == "requests" else HTTPXClient
        )
        self.kind = kind
        self.made: list[Client] = []

    def __call__(
        self, config: ResilientConfig | None = None, *, pool_of_one: bool = False, **kwargs: Any
    ) -> Client:
        client = self.cls(config, pool_of_one=pool_of_one, **kwargs)
        self.made.append(client)
        return client

    def synthetic(self, request: Any, body: bytes) -> Any:
        return self.cls.synthetic(request, body)


@pytest.fixture(params=["requests", "httpx"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Sync clients through requests+ResilientAdapter and httpx+ResilientTransport."""
    factory = Factory(str(request.param))
    yield factory
    for client in factory.made:
        client.close()


def bodies(server: ScriptedServer, path: str) -> list[bytes]:
    return [r.body for r in server.requests if r.path == path]


# -- statuses come from responses -------------------------------------------------------------


def test_503_503_200_returns_the_200_after_three_requests(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A status in retry_on is a failure and is retried; the final 200 is what the caller gets."""
    server.script("/flaky", Reply(503), Reply(503), Reply(200, b"finally"))
    client = make_client(cfg())
    response = client.request("GET", server.url + "/flaky")
    assert response.status_code == 200
    assert response.content == b"finally"
    assert client.attempts(response) == 3
    assert server.count("/flaky") == 3


def test_a_plain_200_takes_one_attempt(make_client: Factory, server: ScriptedServer) -> None:
    """The happy path makes one request and says so in its attempts count."""
    client = make_client(cfg())
    response = client.request("GET", server.url + "/ok")
    assert response.status_code == 200
    assert client.attempts(response) == 1
    assert server.count("/ok") == 1


def test_a_status_outside_retry_on_is_returned_at_once(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A 404 is the service answering: one request, returned as is, the breaker not counting it."""
    server.script("/missing", Reply(404, b"nope"))
    client = make_client(cfg(threshold=1))
    response = client.request("GET", server.url + "/missing")
    assert response.status_code == 404
    assert client.attempts(response) == 1
    assert server.count("/missing") == 1
    assert client.mount.breaker_for(server.url).state is CircuitState.CLOSED


def test_retries_exhausted_return_the_last_503_as_is(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """max_retries=3 against 503 x10 makes 4 requests and returns the last 503, readable."""
    events: list[Event] = []
    server.script("/down", *[Reply(503, f"attempt {n}".encode()) for n in range(1, 11)])
    client = make_client(cfg(max_retries=3, hooks=(events.append,)))
    response = client.request("GET", server.url + "/down")
    assert server.count("/down") == 4
    assert response.status_code == 503
    assert response.content == b"attempt 4"  # the last one, not an earlier drained one
    assert client.attempts(response) == 4
    with pytest.raises(client.http_error):
        response.raise_for_status()
    assert [type(e) for e in events if isinstance(e, RetryScheduled)] == [RetryScheduled] * 3
    [exhausted] = [e for e in events if isinstance(e, RetriesExhausted)]
    assert exhausted.attempts == 4
    assert exhausted.status == 503


# -- a retried response gives its connection back --------------------------------------------


def test_pool_of_one_retries_on_one_keepalive_connection(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A bounded drain returns the retried response's connection to a pool of one: no hang, and
    all three requests travel on the same keep-alive connection."""
    server.script("/flaky", Reply(503), Reply(503), Reply(200, b"ok"))
    client = make_client(cfg(), pool_of_one=True)
    response = guarded(lambda: client.request("GET", server.url + "/flaky"))
    assert response.status_code == 200
    assert client.attempts(response) == 3
    ids = [r.connection_id for r in server.requests]
    assert len(ids) == 3
    assert len(set(ids)) == 1, f"keep-alive lost between retries: connection ids {ids}"


def test_pool_of_one_large_error_body_is_closed_not_read_and_still_completes(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A 1 MB 503 body is over the drain limit: its connection is closed (a second connection
    appears) rather than read, and the pool slot is freed so the retry completes."""
    server.script("/big", BigBody(503, 1024 * 1024), Reply(200, b"small"))
    client = make_client(cfg(), pool_of_one=True)
    response = guarded(lambda: client.request("GET", server.url + "/big"))
    assert response.status_code == 200
    assert response.content == b"small"
    assert server.count("/big") == 2
    first, second = (r.connection_id for r in server.requests)
    assert first != second


# -- the body is resent identically, or not at all -----------------------------------------


def test_put_bytes_body_is_resent_identically(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A replayable (bytes) body reaches the server byte-for-byte on every attempt."""
    payload = bytes(range(256)) * 40
    server.script("/item", Reply(503), Reply(503), Reply(200))
    client = make_client(cfg())
    response = client.request("PUT", server.url + "/item", body=payload)
    assert response.status_code == 200
    assert bodies(server, "/item") == [payload] * 3


def test_multipart_upload_is_resent_identically(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A multipart body with a file is re-rendered (file rewound) for each attempt."""
    server.script("/upload", Reply(503), Reply(503), Reply(200))
    client = make_client(cfg())
    response = client.request(
        "POST",
        server.url + "/upload",
        files={"f": ("f.bin", io.BytesIO(b"file-content-" * 100))},
        headers={"Idempotency-Key": "upload-1"},
    )
    assert response.status_code == 200
    sent = bodies(server, "/upload")
    assert len(sent) == 3
    assert sent[0] == sent[1] == sent[2]
    assert b"file-content-" * 100 in sent[0]


def test_one_shot_generator_body_gets_exactly_one_attempt(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A generator body cannot be replayed: one request, and its 503 is returned (never resent
    truncated), even for an idempotent method."""
    server.script("/stream", Reply(503), Reply(200))
    client = make_client(cfg())
    response = client.request("PUT", server.url + "/stream", body=(c for c in [b"a", b"b"]))
    assert response.status_code == 503
    assert client.attempts(response) == 1
    assert bodies(server, "/stream") == [b"ab"]


def test_requests_file_body_is_rewound_and_resent_identically(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """requests records a file body's start; the adapter rewinds it: each attempt sends it all."""
    server.script("/file", Reply(503), Reply(503), Reply(200))
    with requests.Session() as session:
        session.mount("http://", ResilientAdapter(cfg()))
        response = session.put(server.url + "/file", data=io.BytesIO(b"0123456789" * 10))
    assert response.status_code == 200
    assert bodies(server, "/file") == [b"0123456789" * 10] * 3


# -- idempotency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", NON_IDEMPOTENT)
def test_non_idempotent_503_is_not_retried(
    make_client: Factory, server: ScriptedServer, instant: FakeClock, method: str
) -> None:
    """POST/PATCH may have had an effect: a 503 is returned after one request."""
    server.script("/orders", Reply(503), Reply(200))
    client = make_client(cfg())
    response = client.request(method, server.url + "/orders", body=b"{}")
    assert response.status_code == 503
    assert client.attempts(response) == 1
    assert server.count("/orders") == 1


@pytest.mark.parametrize("method", NON_IDEMPOTENT)
def test_non_idempotent_with_idempotency_key_is_retried(
    make_client: Factory, server: ScriptedServer, instant: FakeClock, method: str
) -> None:
    """An Idempotency-Key header makes POST/PATCH safe to resend."""
    server.script("/orders", Reply(503), Reply(503), Reply(201))
    client = make_client(cfg())
    response = client.request(
        method, server.url + "/orders", body=b"{}", headers={"Idempotency-Key": "k-1"}
    )
    assert response.status_code == 201
    assert server.count("/orders") == 3
    assert {r.headers["idempotency-key"] for r in server.requests} == {"k-1"}


def test_post_is_retried_when_the_config_allows_it(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """ResilientConfig(retry_non_idempotent=True) resends POST."""
    server.script("/orders", Reply(503), Reply(503), Reply(201))
    client = make_client(cfg(retry_non_idempotent=True))
    response = client.request("POST", server.url + "/orders", body=b"{}")
    assert response.status_code == 201
    assert server.count("/orders") == 3


@pytest.mark.parametrize("method", IDEMPOTENT)
def test_idempotent_methods_are_retried(
    make_client: Factory, server: ScriptedServer, instant: FakeClock, method: str
) -> None:
    """GET, HEAD, OPTIONS, PUT, DELETE are resent after a 503."""
    server.script("/res", Reply(503), Reply(503), Reply(200))
    client = make_client(cfg())
    response = client.request(method, server.url + "/res")
    assert response.status_code == 200
    assert server.count("/res", method=method) == 3


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PUT", "DELETE"])
def test_refused_connection_is_retried_for_every_method(
    make_client: Factory, instant: FakeClock, method: str
) -> None:
    """A connect error means nothing was sent: every method, POST included, is retried until
    max_retries runs out; then the client's own connection error is raised, unwrapped."""
    events: list[Event] = []
    client = make_client(cfg(max_retries=3, hooks=(events.append,)))
    url = refused_url()
    with pytest.raises(client.open_error) as info:
        client.request(method, url + "/x", body=b"payload")
    assert not isinstance(info.value, CircuitOpenError)
    assert sum(isinstance(e, RetryScheduled) for e in events) == 3
    assert client.mount.breaker_for(url).failure_count == 4


def test_post_dropped_after_sending_is_not_retried(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """A POST whose connection drops after it was sent may have had an effect: one request,
    the error raised."""
    server.script("/pay", Drop(), Reply(200))
    client = make_client(cfg())
    with pytest.raises(client.open_error) as info:
        client.request("POST", server.url + "/pay", body=b"amount=1")
    assert not isinstance(info.value, CircuitOpenError)
    assert server.count("/pay") == 1


def test_get_dropped_after_sending_is_retried(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """The same dropped connection on an idempotent GET is a transport failure and is retried."""
    server.script("/read", Drop(), Reply(200, b"ok"))
    client = make_client(cfg())
    response = client.request("GET", server.url + "/read")
    assert response.status_code == 200
    assert client.attempts(response) == 2
    assert server.count("/read") == 2


def test_urllib3_never_retries_on_its_own(server: ScriptedServer, instant: FakeClock) -> None:
    """With max_retries=0 the adapter makes exactly one request: urllib3's own retries are 0."""
    server.script("/read", Drop(), Drop(), Reply(200))
    with requests.Session() as session:
        session.mount("http://", ResilientAdapter(cfg(max_retries=0)))
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(server.url + "/read", timeout=TIMEOUT)
    assert server.count("/read") == 1


# -- breakers per origin ----------------------------------------------------------------------


def open_breaker(client: Client, url: str) -> None:
    """Two 503 attempts against a threshold of 2 open the breaker of ``url``'s origin."""
    response = client.request("GET", url)
    assert response.status_code == 503


def test_open_breaker_rejects_its_origin_only(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """The failing origin's open breaker rejects without I/O, with an error that is both
    CircuitOpenError and the client's request error; the healthy origin is never rejected."""
    server.default = Reply(503)
    client = make_client(cfg(max_retries=1, threshold=2))
    with ScriptedServer() as healthy:
        open_breaker(client, server.url + "/x")
        assert server.count() == 2
        assert client.mount.breaker_for(server.url).state is CircuitState.OPEN
        for _ in range(3):
            assert client.request("GET", healthy.url + "/y").status_code == 200
            with pytest.raises(CircuitOpenError) as info:
                client.request("GET", server.url + "/x")
            error = info.value
            assert isinstance(error, client.open_error)
            assert error.retry_after > 0
            assert error.name == server.origin
        assert server.count() == 2  # nothing reached the failing origin once open
        assert healthy.count() == 3
        assert client.mount.breaker_for(healthy.url).state is CircuitState.CLOSED


def test_rejection_error_names_the_origin_never_userinfo_or_query(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """The error, its name and every breaker name say http://127.0.0.1:PORT and never carry the
    URL's userinfo or query string (API keys live there)."""
    events: list[Event] = []
    secret_url = f"http://user:secret@127.0.0.1:{server.port}/x?api_key=SECRET"
    server.default = Reply(503)
    client = make_client(cfg(max_retries=1, threshold=2, hooks=(events.append,)))
    open_breaker(client, secret_url)
    with pytest.raises(CircuitOpenError) as info:
        client.request("GET", secret_url)
    error = info.value
    assert f"http://127.0.0.1:{server.port}" in str(error)
    assert error.name == f"http://127.0.0.1:{server.port}"
    texts = [str(error), repr(error), error.name, *client.mount.breakers]
    texts += [b.name for b in client.mount.breakers.values()]
    texts += [e.name for e in events]
    for text in texts:
        assert "secret" not in text.lower(), text
        assert "api_key" not in text, text
        assert "user:" not in text, text


@pytest.mark.parametrize("opened_via", ["plain", "userinfo"])
def test_one_breaker_per_origin_whatever_the_userinfo_path_or_query(
    make_client: Factory, server: ScriptedServer, instant: FakeClock, opened_via: str
) -> None:
    """Breakers are keyed by (scheme, host, port): a breaker opened through one URL of an origin
    rejects every other URL of it, with or without userinfo, path or query."""
    plain = server.url + "/a"
    secret = f"http://user:secret@127.0.0.1:{server.port}/b?api_key=SECRET"
    first, other = (plain, secret) if opened_via == "plain" else (secret, plain)
    server.default = Reply(503)
    client = make_client(cfg(max_retries=1, threshold=2))
    open_breaker(client, first)
    assert server.count() == 2
    with pytest.raises(CircuitOpenError):
        client.request("GET", other)
    assert server.count() == 2, "the same origin got a second, CLOSED breaker"


def test_every_spelling_of_one_origin_maps_to_one_breaker(make_client: Factory) -> None:
    """(scheme, host, port) is the key: an explicit default port, userinfo, path, query and the
    case of scheme and host do not make a second breaker for the same origin."""
    client = make_client(cfg())
    spellings = [
        "http://127.0.0.1/x",
        "http://127.0.0.1:80/y?api_key=SECRET",
        "http://user:secret@127.0.0.1/z",
        "HTTP://127.0.0.1:80/",
    ]
    found = {u: client.mount.breaker_for(client.sent_url(u)) for u in spellings}
    assert len({id(b) for b in found.values()}) == 1, {u: id(b) for u, b in found.items()}
    assert {b.name for b in found.values()} == {"http://127.0.0.1:80"}


def test_breaker_opening_during_retries_returns_the_last_response(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """Threshold 2, max_retries 5, always 503: the call stops after 2 requests and returns the
    last 503 as is - not the fallback, not an exception."""
    fallback_calls: list[BaseException] = []

    def fallback(request: Any, error: BaseException) -> Any:
        fallback_calls.append(error)
        return make_client.synthetic(request, b"fallback")

    server.script("/x", Reply(503, b"first"), Reply(503, b"second"))
    server.default = Reply(503)
    client = make_client(cfg(max_retries=5, threshold=2), fallback=fallback)
    response = client.request("GET", server.url + "/x")
    assert server.count("/x") == 2
    assert response.status_code == 503
    assert response.content == b"second"
    assert client.attempts(response) == 2
    assert fallback_calls == []
    assert client.mount.breaker_for(server.url).state is CircuitState.OPEN


def test_fallback_answers_a_request_rejected_up_front(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """With the breaker open, fallback(request, error) builds the response; nothing is sent."""
    calls: list[tuple[Any, BaseException]] = []

    def fallback(request: Any, error: BaseException) -> Any:
        calls.append((request, error))
        return make_client.synthetic(request, b'{"cached": true}')

    server.default = Reply(503)
    client = make_client(cfg(max_retries=1, threshold=2), fallback=fallback)
    open_breaker(client, server.url + "/users")
    assert calls == []  # opened mid-call: that call got its last 503, not the fallback
    response = client.request("GET", server.url + "/users?page=2")
    assert response.status_code == 200
    assert response.content == b'{"cached": true}'
    assert server.count() == 2
    [(request, error)] = calls
    assert str(request.url).endswith("/users?page=2")
    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, client.open_error)
    assert error.retry_after > 0


def test_one_breaker_shared_by_a_decorated_function_and_a_transport(
    make_client: Factory, server: ScriptedServer, instant: FakeClock
) -> None:
    """breaker= on both: 2 failed attempts through the transport plus 1 through the decorator
    reach failure_threshold=3 together; then both are rejected."""
    br = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3), name="users-api")
    config = ResilientConfig(backoff=BackoffConfig(max_retries=1), circuit_breaker=br.config)
    server.default = Reply(503)
    client = make_client(config, breaker=br)

    with httpx.Client(timeout=TIMEOUT) as plain:

        @resilient_api(config, breaker=br)
        def fetch_user() -> Any:
            response = plain.get(server.url + "/users/1")
            response.raise_for_status()
            return response.json()

        response = client.request("GET", server.url + "/users/1")
        assert response.status_code == 503
        assert server.count() == 2
        assert br.state is CircuitState.CLOSED
        assert br.failure_count == 2

        with pytest.raises(httpx.HTTPStatusError):
            fetch_user()
        assert server.count() == 3
        assert br.state is CircuitState.OPEN

        with pytest.raises(CircuitOpenError):
            fetch_user()
        with pytest.raises(CircuitOpenError) as info:
            client.request("GET", server.url + "/users/1")
        assert isinstance(info.value, client.open_error)
        assert info.value.name == "users-api"
    assert server.count() == 3
    assert client.mount.breakers == {"users-api": br}


# -- construction --------------------------------------------------------------------------------


def test_adapter_passes_pool_options_to_httpadapter() -> None:
    """ResilientAdapter(config, **kwargs) hands pool_connections/pool_maxsize/pool_block on."""
    adapter = ResilientAdapter(cfg(), pool_connections=2, pool_maxsize=3, pool_block=True)
    try:
        assert isinstance(adapter, requests.adapters.HTTPAdapter)
        assert adapter._pool_connections == 2
        assert adapter._pool_maxsize == 3
        assert adapter._pool_block is True
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == 3
        assert adapter.poolmanager.connection_pool_kw["block"] is True
    finally:
        adapter.close()


@pytest.mark.parametrize("value", [0, 3])
def test_adapter_refuses_max_retries(value: int) -> None:
    """urllib3 retries would stack on ours: max_retries= is a ConfigError naming max_retries."""
    with pytest.raises(ConfigError, match="max_retries"):
        ResilientAdapter(cfg(), max_retries=value)


def test_adapter_keeps_urllib3_retries_at_zero() -> None:
    """The HTTPAdapter underneath never retries by itself."""
    adapter = ResilientAdapter(cfg())
    try:
        assert adapter.max_retries.total == 0
    finally:
        adapter.close()


def test_mount_classes_are_exported_lazily_from_smoothapi() -> None:
    """from smoothapi import ResilientAdapter, ResilientTransport, AsyncResilientTransport."""
    assert smoothapi.ResilientAdapter is ResilientAdapter
    assert smoothapi.ResilientTransport is ResilientTransport
    assert smoothapi.AsyncResilientTransport is AsyncResilientTransport


class SpyTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, text="inner")

    def close(self) -> None:
        self.closed = True


class AsyncSpyTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, text="inner")

    async def aclose(self) -> None:
        self.closed = True


def test_transport_wraps_the_inner_transport_and_closes_it() -> None:
    """ResilientTransport(config, transport=inner) sends through inner; close() closes inner."""
    inner = SpyTransport()
    transport = ResilientTransport(cfg(), transport=inner)
    assert transport.transport is inner
    with httpx.Client(transport=transport) as client:
        assert client.get("http://example.invalid/x").text == "inner"
    assert len(inner.seen) == 1
    assert inner.closed  # Client.close() -> ResilientTransport.close() -> inner.close()

    other = SpyTransport()
    ResilientTransport(cfg(), transport=other).close()
    assert other.closed


def test_transport_builds_an_httptransport_from_kwargs() -> None:
    """ResilientTransport(config, limits=...) builds httpx.HTTPTransport(limits=...)."""
    transport = ResilientTransport(cfg(), limits=httpx.Limits(max_connections=1))
    try:
        assert isinstance(transport.transport, httpx.HTTPTransport)
        assert transport.transport._pool._max_connections == 1
    finally:
        transport.close()
    default = ResilientTransport()
    try:
        assert isinstance(default.transport, httpx.HTTPTransport)
    finally:
        default.close()


def test_transport_refuses_both_transport_and_options() -> None:
    """transport= and HTTPTransport options together are ambiguous: ConfigError."""
    with pytest.raises(ConfigError):
        ResilientTransport(cfg(), transport=SpyTransport(), limits=httpx.Limits(max_connections=1))
    with pytest.raises(ConfigError):
        AsyncResilientTransport(cfg(), transport=AsyncSpyTransport(), verify=False)


@pytest.mark.anyio
async def test_async_transport_wraps_the_inner_transport_and_acloses_it() -> None:
    """AsyncResilientTransport(config, transport=inner): sends through inner; aclose() closes it."""
    inner = AsyncSpyTransport()
    transport = AsyncResilientTransport(cfg(), transport=inner)
    assert transport.transport is inner
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://example.invalid/x")).text == "inner"
    assert len(inner.seen) == 1
    assert inner.closed

    other = AsyncSpyTransport()
    await AsyncResilientTransport(cfg(), transport=other).aclose()
    assert other.closed


@pytest.mark.anyio
async def test_async_transport_builds_an_asynchttptransport_from_kwargs() -> None:
    """AsyncResilientTransport(config, limits=...) builds httpx.AsyncHTTPTransport(limits=...)."""
    transport = AsyncResilientTransport(cfg(), limits=httpx.Limits(max_connections=1))
    try:
        assert isinstance(transport.transport, httpx.AsyncHTTPTransport)
        assert transport.transport._pool._max_connections == 1
    finally:
        await transport.aclose()


# -- the async twin: httpx.AsyncClient + AsyncResilientTransport (asyncio and trio) ------------


def async_client(config: ResilientConfig | None = None, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncResilientTransport(config, **kwargs), timeout=TIMEOUT)


def mount_of(client: httpx.AsyncClient) -> AsyncResilientTransport:
    transport = client._transport
    assert isinstance(transport, AsyncResilientTransport)
    return transport


@pytest.mark.anyio
async def test_async_503_503_200_returns_the_200_after_three_requests(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: a status in retry_on is retried; the 200 is returned with attempts == 3."""
    server.script("/flaky", Reply(503), Reply(503), Reply(200, b"finally"))
    async with async_client(cfg()) as client:
        response = await client.get(server.url + "/flaky")
        plain = await client.get(server.url + "/ok")
    assert response.status_code == 200
    assert response.content == b"finally"
    assert response.extensions["smoothapi_attempts"] == 3
    assert plain.extensions["smoothapi_attempts"] == 1
    assert server.count("/flaky") == 3
    assert server.count("/ok") == 1


@pytest.mark.anyio
async def test_async_retries_exhausted_return_the_last_503_as_is(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: 4 requests for max_retries=3; the last 503 is returned and raise_for_status raises."""
    server.script("/down", *[Reply(503, f"attempt {n}".encode()) for n in range(1, 11)])
    async with async_client(cfg(max_retries=3)) as client:
        response = await client.get(server.url + "/down")
    assert server.count("/down") == 4
    assert response.status_code == 503
    assert response.content == b"attempt 4"
    assert response.extensions["smoothapi_attempts"] == 4
    with pytest.raises(httpx.HTTPStatusError):
        response.raise_for_status()


@pytest.mark.anyio
async def test_async_pool_of_one_retries_on_one_keepalive_connection(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: the drained 503s give their connection back; one connection carries all three."""
    server.script("/flaky", Reply(503), Reply(503), Reply(200))
    async with async_client(cfg(), limits=httpx.Limits(max_connections=1)) as client:
        with anyio.fail_after(GUARD):
            response = await client.get(server.url + "/flaky")
    assert response.status_code == 200
    ids = [r.connection_id for r in server.requests]
    assert len(ids) == 3
    assert len(set(ids)) == 1, f"keep-alive lost between retries: connection ids {ids}"


@pytest.mark.anyio
async def test_async_pool_of_one_large_error_body_is_closed_and_still_completes(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: a 1 MB 503 body is closed instead of drained; the retry completes on a new
    connection."""
    server.script("/big", BigBody(503, 1024 * 1024), Reply(200, b"small"))
    async with async_client(cfg(), limits=httpx.Limits(max_connections=1)) as client:
        with anyio.fail_after(GUARD):
            response = await client.get(server.url + "/big")
    assert response.status_code == 200
    assert response.content == b"small"
    first, second = (r.connection_id for r in server.requests)
    assert first != second


@pytest.mark.anyio
async def test_async_put_bytes_body_is_resent_identically(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: a bytes body reaches the server byte-for-byte on every attempt."""
    payload = bytes(range(256)) * 40
    server.script("/item", Reply(503), Reply(503), Reply(200))
    async with async_client(cfg()) as client:
        response = await client.put(server.url + "/item", content=payload)
    assert response.status_code == 200
    assert bodies(server, "/item") == [payload] * 3


@pytest.mark.anyio
async def test_async_one_shot_async_generator_body_gets_exactly_one_attempt(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: an async-generator body cannot be replayed: one request, its 503 returned."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    server.script("/stream", Reply(503), Reply(200))
    async with async_client(cfg()) as client:
        response = await client.put(server.url + "/stream", content=chunks())
    assert response.status_code == 503
    assert response.extensions["smoothapi_attempts"] == 1
    assert bodies(server, "/stream") == [b"ab"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "case",
    [
        ("POST", {}, cfg(), 1),
        ("PATCH", {}, cfg(), 1),
        ("POST", {"Idempotency-Key": "k-1"}, cfg(), 3),
        ("POST", {}, cfg(retry_non_idempotent=True), 3),
        ("GET", {}, cfg(), 3),
        ("PUT", {}, cfg(), 3),
        ("DELETE", {}, cfg(), 3),
    ],
    ids=["post", "patch", "post-key", "post-allowed", "get", "put", "delete"],
)
async def test_async_idempotency_decides_what_is_resent(
    server: ScriptedServer,
    instant: FakeClock,
    case: tuple[str, dict[str, str], ResilientConfig, int],
) -> None:
    """Async: POST/PATCH are not resent after a 503 unless keyed or allowed; idempotent methods
    are."""
    method, headers, config, expected = case
    server.script("/res", Reply(503), Reply(503), Reply(200))
    async with async_client(config) as client:
        response = await client.request(method, server.url + "/res", content=b"{}", headers=headers)
    assert server.count("/res") == expected
    assert response.status_code == (503 if expected == 1 else 200)


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
async def test_async_refused_connection_is_retried_for_every_method(
    instant: FakeClock, method: str
) -> None:
    """Async: a connect error is retried for every method; then httpx's ConnectError is raised."""
    events: list[Event] = []
    url = refused_url()
    async with async_client(cfg(max_retries=3, hooks=(events.append,))) as client:
        with pytest.raises(httpx.ConnectError):
            await client.request(method, url + "/x", content=b"payload")
        assert mount_of(client).breaker_for(url).failure_count == 4
    assert sum(isinstance(e, RetryScheduled) for e in events) == 3


@pytest.mark.anyio
async def test_async_post_dropped_after_sending_is_not_retried(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: a POST whose connection drops after sending gets one request; the error is raised."""
    server.script("/pay", Drop(), Reply(200))
    async with async_client(cfg()) as client:
        with pytest.raises(httpx.TransportError) as info:
            await client.post(server.url + "/pay", content=b"amount=1")
    assert not isinstance(info.value, CircuitOpenError)
    assert server.count("/pay") == 1


@pytest.mark.anyio
async def test_async_open_breaker_rejects_its_origin_only_and_hides_secrets(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: the open origin is rejected (CircuitOpenError and httpx.TransportError,
    retry_after > 0, no I/O), the healthy one never; the error names only the origin."""
    secret_url = f"http://user:secret@127.0.0.1:{server.port}/x?api_key=SECRET"
    server.default = Reply(503)
    async with async_client(cfg(max_retries=1, threshold=2)) as client:
        with ScriptedServer() as healthy:
            assert (await client.get(secret_url)).status_code == 503
            assert server.count() == 2
            for _ in range(3):
                assert (await client.get(healthy.url + "/y")).status_code == 200
                with pytest.raises(CircuitOpenError) as info:
                    await client.get(secret_url)
                error = info.value
                assert isinstance(error, httpx.TransportError)
                assert error.retry_after > 0
            assert healthy.count() == 3
        names = list(mount_of(client).breakers)
    assert server.count() == 2
    assert f"http://127.0.0.1:{server.port}" in str(error)
    for text in [str(error), repr(error), error.name, *names]:
        assert "secret" not in text.lower(), text
        assert "api_key" not in text, text


@pytest.mark.anyio
async def test_async_breaker_opening_during_retries_returns_the_last_response(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: threshold 2, max_retries 5: 2 requests, the last 503 returned, no fallback."""
    fallback_calls: list[BaseException] = []

    async def fallback(request: httpx.Request, error: BaseException) -> httpx.Response:
        fallback_calls.append(error)
        return httpx.Response(200, json={"fallback": True}, request=request)

    server.script("/x", Reply(503, b"first"), Reply(503, b"second"))
    server.default = Reply(503)
    async with async_client(cfg(max_retries=5, threshold=2), fallback=fallback) as client:
        response = await client.get(server.url + "/x")
    assert server.count("/x") == 2
    assert response.status_code == 503
    assert response.content == b"second"
    assert fallback_calls == []


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_async_fallback_answers_a_request_rejected_up_front(
    server: ScriptedServer, instant: FakeClock, kind: str
) -> None:
    """Async: an async (or plain) fallback(request, error) answers while the breaker is open."""
    calls: list[BaseException] = []

    def build(request: httpx.Request, error: BaseException) -> httpx.Response:
        calls.append(error)
        return httpx.Response(200, json={"cached": True}, request=request)

    async def async_build(request: httpx.Request, error: BaseException) -> httpx.Response:
        await anyio.lowlevel.checkpoint()
        return build(request, error)

    fallback = async_build if kind == "async" else build
    server.default = Reply(503)
    async with async_client(cfg(max_retries=1, threshold=2), fallback=fallback) as client:
        assert (await client.get(server.url + "/users")).status_code == 503
        response = await client.get(server.url + "/users")
    assert response.status_code == 200
    assert response.json() == {"cached": True}
    assert server.count() == 2
    [error] = calls
    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, httpx.TransportError)


@pytest.mark.anyio
async def test_async_one_breaker_shared_by_a_decorated_function_and_a_transport(
    server: ScriptedServer, instant: FakeClock
) -> None:
    """Async: failures through an async decorated function and the async transport add up in
    one breaker=; once open both are rejected."""
    br = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3), name="users-api")
    config = ResilientConfig(backoff=BackoffConfig(max_retries=1), circuit_breaker=br.config)
    server.default = Reply(503)
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as plain,
        async_client(config, breaker=br) as client,
    ):

        @resilient_api(config, breaker=br)
        async def fetch_user() -> Any:
            response = await plain.get(server.url + "/users/1")
            response.raise_for_status()
            return response.json()

        assert (await client.get(server.url + "/users/1")).status_code == 503
        assert br.failure_count == 2
        with pytest.raises(httpx.HTTPStatusError):
            await fetch_user()
        assert br.state is CircuitState.OPEN
        with pytest.raises(CircuitOpenError):
            await fetch_user()
        with pytest.raises(CircuitOpenError) as info:
            await client.get(server.url + "/users/1")
        assert isinstance(info.value, httpx.TransportError)
    assert server.count() == 3


# -- the breaker opens during the backoff sleep: the last response comes back whole ---------


class _OpenDuringSleep:
    """A hook that opens the origin's breaker as soon as a retry is scheduled (as another
    caller's failures would, while this call sleeps)."""

    def __init__(self) -> None:
        self.mount: Any = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RetryScheduled):
            self.mount.breakers[event.name].force_open()


@pytest.mark.parametrize("size", [12, 70_000], ids=["small-body", "body-over-drain-limit"])
def test_breaker_opening_during_the_sleep_returns_the_last_response_whole(
    make_client: Factory, server: ScriptedServer, instant: FakeClock, size: int
) -> None:
    """DESIGN.md: if the breaker opens during the retries, the last response is returned as
    it is - readable, with its whole body, whether its connection was freed for the sleep
    (small body, read into memory) or kept (large body); never a closed stream or an
    emptied body."""
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    server.script("/opens", Reply(503, body), Reply(200, b"never sent"))
    hook = _OpenDuringSleep()
    client = make_client(cfg(threshold=10, hooks=(hook,)))
    hook.mount = client.mount
    response = client.request("GET", server.url + "/opens")
    assert server.count("/opens") == 1
    assert response.status_code == 503
    assert response.content == body
    assert client.attempts(response) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("size", [12, 70_000], ids=["small-body", "body-over-drain-limit"])
async def test_async_breaker_opening_during_the_sleep_returns_the_last_response_whole(
    server: ScriptedServer, instant: FakeClock, size: int
) -> None:
    """The async transport hands back the last response whole too (asyncio and trio)."""
    body = b"y" * size
    server.script("/opens", Reply(503, body), Reply(200, b"never sent"))
    hook = _OpenDuringSleep()
    transport = AsyncResilientTransport(cfg(threshold=10, hooks=(hook,)))
    hook.mount = transport
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(server.url + "/opens")
    assert server.count("/opens") == 1
    assert response.status_code == 503
    assert response.content == body
    assert response.extensions["smoothapi_attempts"] == 1
