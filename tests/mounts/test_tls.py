"""A TLS failure is not retried: the next try would fail the same way (README, DESIGN.md).

A real HTTPS server on 127.0.0.1 with a certificate from a CA the client does
not trust (made by trustme): requests raises ``SSLError``; httpx raises
``ConnectError`` from an ``ssl.SSLError``. Both mount points and the
decorator must make one attempt and leave the breaker untouched.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator

import httpx
import pytest
import requests
import trustme

from smoothapi import ResilientAdapter, ResilientConfig, ResilientTransport, resilient_api


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        """Silenced."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    handshakes = 0

    def get_request(self):  # type: ignore[no-untyped-def]
        self.handshakes += 1  # every accepted connection is one TLS handshake attempt
        return super().get_request()

    def handle_error(self, request: object, client_address: object) -> None:
        """Silenced: the failed handshakes are the point."""


@pytest.fixture
def untrusted_https() -> Iterator[_Server]:
    """An HTTPS server whose certificate no client here trusts."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = _Server(("127.0.0.1", 0), _Quiet)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: _Server) -> str:
    return f"https://127.0.0.1:{server.server_address[1]}/"


def test_requests_adapter_does_not_retry_a_certificate_failure(untrusted_https: _Server) -> None:
    """ResilientAdapter: one handshake, SSLError raised, breaker not counting it."""
    adapter = ResilientAdapter(ResilientConfig())
    with requests.Session() as session:
        session.mount("https://", adapter)
        with pytest.raises(requests.exceptions.SSLError):
            session.get(_url(untrusted_https), timeout=5)
    assert untrusted_https.handshakes == 1
    assert adapter.breaker_for(_url(untrusted_https)).failure_count == 0


def test_httpx_transport_does_not_retry_a_certificate_failure(untrusted_https: _Server) -> None:
    """ResilientTransport: httpx wraps the ssl error in ConnectError; still one attempt."""
    transport = ResilientTransport(ResilientConfig())
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get(_url(untrusted_https))
    assert untrusted_https.handshakes == 1
    assert transport.breaker_for(_url(untrusted_https)).failure_count == 0


@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_decorator_does_not_retry_a_certificate_failure(
    untrusted_https: _Server, library: str
) -> None:
    """@resilient_api: the TLS error is re-raised at once and recorded as nothing."""

    @resilient_api(ResilientConfig())
    def fetch(url: str) -> int:
        if library == "requests":
            return requests.get(url, timeout=5).status_code
        with httpx.Client() as client:
            return client.get(url).status_code

    with pytest.raises((requests.exceptions.SSLError, httpx.ConnectError)):
        fetch(_url(untrusted_https))
    assert untrusted_https.handshakes == 1
    assert fetch.breaker.failure_count == 0
