"""Tests for the scripted test server itself, driven by real requests and httpx clients."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx
import pytest
import requests
from httpserver import (
    BigBody,
    Delay,
    Drop,
    Json,
    Recorded,
    Reply,
    ScriptedServer,
    Truncate,
    free_port,
    refused_url,
)


@dataclass
class Resp:
    status: int
    headers: Mapping[str, str]
    body: bytes


Body = bytes | Iterator[bytes] | None


def via_requests(method: str, url: str, body: Body = None, timeout: float = 5.0) -> Resp:
    r = requests.request(method, url, data=body, timeout=timeout)
    return Resp(r.status_code, r.headers, r.content)


def via_httpx(method: str, url: str, body: Body = None, timeout: float = 5.0) -> Resp:
    with httpx.Client(timeout=timeout) as client:
        r = client.request(method, url, content=body)
        return Resp(r.status_code, r.headers, r.content)


CLIENTS: dict[str, Callable[..., Resp]] = {"requests": via_requests, "httpx": via_httpx}

# What each client raises for each failure mode.
ERRORS: dict[str, dict[str, tuple[type[BaseException], ...]]] = {
    "drop": {
        "requests": (requests.ConnectionError,),
        "httpx": (httpx.RemoteProtocolError,),
    },
    "truncate": {
        "requests": (requests.exceptions.ChunkedEncodingError, requests.ConnectionError),
        "httpx": (httpx.RemoteProtocolError, httpx.ReadError),
    },
    "timeout": {
        "requests": (requests.exceptions.ReadTimeout,),
        "httpx": (httpx.ReadTimeout,),
    },
    "refused": {
        "requests": (requests.ConnectionError,),
        "httpx": (httpx.ConnectError,),
    },
}

clients = pytest.mark.parametrize("client", sorted(CLIENTS))


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


@clients
def test_scripted_statuses_in_order_then_default(server: ScriptedServer, client: str) -> None:
    send = CLIENTS[client]
    server.script("/a", Reply(503), Reply(429, headers={"Retry-After": "1"}), Reply(200, b"done"))

    got = [send("GET", server.url + "/a") for _ in range(5)]

    assert [(r.status, r.body) for r in got] == [
        (503, b"status 503"),
        (429, b"status 429"),
        (200, b"done"),
        (200, b"ok"),
        (200, b"ok"),
    ]
    assert got[1].headers["Retry-After"] == "1"
    assert got[0].headers["Content-Type"].startswith("text/plain")
    assert got[0].headers["Content-Length"] == str(len(b"status 503"))
    assert server.count("/a") == 5
    assert server.pending("/a") == 0
    assert server.errors == []


@clients
def test_default_is_settable_and_paths_ignore_query(server: ScriptedServer, client: str) -> None:
    send = CLIENTS[client]
    server.default = Reply(404, b"nope")
    server.script("/q", Reply(201))

    assert send("POST", server.url + "/q?x=1&y=2").status == 201
    assert send("GET", server.url + "/q").status == 404
    assert send("DELETE", server.url + "/other").body == b"nope"

    first = server.requests[0]
    assert (first.method, first.path, first.query) == ("POST", "/q", "x=1&y=2")
    assert server.count("/q") == 2
    assert server.count(method="delete") == 1
    assert server.count("/q", method="GET") == 1


@clients
def test_json_reply(server: ScriptedServer, client: str) -> None:
    server.script("/j", Json(400, {"error": "bad", "n": [1, 2]}))

    r = CLIENTS[client]("GET", server.url + "/j")

    assert r.status == 400
    assert r.headers["Content-Type"] == "application/json"
    assert json.loads(r.body) == {"error": "bad", "n": [1, 2]}


@clients
@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("drop", Drop()),
        ("truncate", Truncate()),
        ("truncate", Truncate(503, declared=5000, sent=0)),
    ],
)
def test_broken_connections_raise_client_errors(
    server: ScriptedServer, client: str, name: str, action: Drop | Truncate
) -> None:
    send = CLIENTS[client]
    server.script("/broken", action)

    with pytest.raises(ERRORS[name][client]):
        send("GET", server.url + "/broken")

    # The request was recorded, and the server keeps serving afterwards.
    assert server.count("/broken") == 1
    assert send("GET", server.url + "/broken").status == 200
    assert server.errors == []


@clients
def test_delay_then_read_timeout(server: ScriptedServer, client: str) -> None:
    send = CLIENTS[client]
    server.script("/slow", Delay(0.3, Reply(200)), Delay(0.01, Reply(202)))

    started = time.monotonic()
    with pytest.raises(ERRORS["timeout"][client]):
        send("GET", server.url + "/slow", timeout=0.1)
    assert time.monotonic() - started < 0.3

    r = send("GET", server.url + "/slow")
    assert r.status == 202
    assert server.count("/slow") == 2


@clients
def test_delay_then_defaults_to_server_default(server: ScriptedServer, client: str) -> None:
    server.default = Reply(418)
    server.script("/d", Delay(0.01))
    assert CLIENTS[client]("GET", server.url + "/d").status == 418


@clients
def test_big_body(server: ScriptedServer, client: str) -> None:
    size = 1_000_003
    server.script("/big", BigBody(500, size))

    r = CLIENTS[client]("GET", server.url + "/big")

    assert r.status == 500
    assert r.headers["Content-Length"] == str(size)
    assert len(r.body) == size


@clients
@pytest.mark.parametrize(
    ("make_body", "expected"),
    [
        (lambda: b"hello world", b"hello world"),
        (lambda: None, b""),
        (lambda: b"", b""),
        (lambda: chunks(b"ab", b"", b"cde", b"x" * 70_000), b"abcde" + b"x" * 70_000),
    ],
    ids=["content-length", "no-body", "empty", "chunked"],
)
def test_recorded_body(
    server: ScriptedServer, client: str, make_body: Callable[[], Body], expected: bytes
) -> None:
    # A generator body makes both clients use Transfer-Encoding: chunked.
    body = make_body()
    CLIENTS[client]("POST", server.url + "/up", body)

    (rec,) = server.requests
    assert rec.body == expected
    if body is not None and not isinstance(body, bytes):
        assert rec.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in rec.headers
    elif body:
        assert rec.headers["content-length"] == str(len(expected))


@clients
def test_recorded_headers_are_lower_cased(server: ScriptedServer, client: str) -> None:
    url = server.url + "/h"
    if client == "requests":
        requests.get(url, headers={"X-Request-Id": "abc"}, timeout=5)
    else:
        httpx.get(url, headers={"X-Request-Id": "abc"}, timeout=5)

    (rec,) = server.requests
    assert rec.headers["x-request-id"] == "abc"
    assert rec.headers["host"] == f"127.0.0.1:{server.port}"
    assert all(k == k.lower() for k in rec.headers)


def test_keep_alive_requests_session(server: ScriptedServer) -> None:
    server.script("/k", Reply(503), Reply(204), Reply(304))
    with requests.Session() as s:
        statuses = [s.get(server.url + "/k", timeout=5).status_code for _ in range(4)]
        s.head(server.url + "/k", timeout=5)

    assert statuses == [503, 204, 304, 200]
    ids = {r.connection_id for r in server.requests}
    assert len(ids) == 1
    assert server.connections == 1


def test_keep_alive_httpx_client(server: ScriptedServer) -> None:
    with httpx.Client() as c:
        c.get(server.url + "/k")
        c.post(server.url + "/k", content=chunks(b"a", b"b"))
        c.get(server.url + "/k")

    a, b, c_ = server.requests
    assert a.connection_id == b.connection_id == c_.connection_id
    assert server.connections == 1


def test_drop_and_truncate_close_the_connection(server: ScriptedServer) -> None:
    server.script("/x", Reply(200), Truncate(), Reply(200))
    with requests.Session() as s:
        s.get(server.url + "/x", timeout=5)
        with pytest.raises(ERRORS["truncate"]["requests"]):
            s.get(server.url + "/x", timeout=5)
        s.get(server.url + "/x", timeout=5)

    first, second, third = server.requests
    assert first.connection_id == second.connection_id != third.connection_id
    assert server.connections == 2


@clients
def test_refused_url(client: str) -> None:
    with pytest.raises(ERRORS["refused"][client]):
        CLIENTS[client]("GET", refused_url() + "/x", timeout=2)


def test_free_port_is_unbound() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert refused_url().startswith("http://127.0.0.1:")


def test_reset_and_addresses(server: ScriptedServer) -> None:
    server.script("/r", Reply(500), Reply(500))
    via_requests("GET", server.url + "/r")
    server.reset()

    assert server.requests == []
    assert server.pending("/r") == 0
    assert via_requests("GET", server.url + "/r").status == 200
    assert server.url == server.origin == f"http://127.0.0.1:{server.port}"
    assert isinstance(server.requests[0], Recorded)


def test_stop_is_prompt_with_open_connections_and_pending_delay() -> None:
    srv = ScriptedServer().start()
    url = srv.url
    session = requests.Session()
    try:
        session.get(url + "/", timeout=5)  # leaves a keep-alive connection open
        srv.script("/slow", Delay(30))
        client = httpx.Client(timeout=5)
        try:
            t = threading.Thread(target=lambda: _swallow(lambda: client.get(url + "/slow")))
            t.start()
            deadline = time.monotonic() + 2
            while srv.count("/slow") == 0 and time.monotonic() < deadline:
                time.sleep(0.005)

            started = time.monotonic()
            srv.stop()
            assert time.monotonic() - started < 1.0
            t.join(timeout=2)
            assert not t.is_alive()
        finally:
            client.close()
    finally:
        session.close()

    with pytest.raises(ERRORS["refused"]["requests"]):
        requests.get(url + "/", timeout=2)
    srv.stop()  # idempotent


def _swallow(fn: Callable[[], object]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        fn()
