"""The upstream the documentation's code blocks talk to (standard library only).

The docs write ``https://api.example.com/...``; the block runner rewrites that
to ``http://127.0.0.1:<port>`` of this server, whose behaviour is chosen by
the path, so a page can show a retry, an outage or a rate limit with nothing
but a URL:

=============================  =====================================================
path                           answer
=============================  =====================================================
``/users/<id>``                200, JSON ``{"id": "<id>", "name": "User <id>"}``
``/flaky/<key>``               503 to the first two requests per ``<key>``, then 200
                               JSON ``{"key": "<key>", "attempt": n}``
``/down/...``                  always 503 (``{"error": "down"}``)
``/slow/<ms>/...``             waits ``<ms>`` milliseconds (at most 10 s), then 200
``/ratelimited/<key>``         429 with ``Retry-After: 1`` and ``RateLimit`` headers to
                               the first request per ``<key>``, then 200
``/status/<code>/...``         that status code (100-599; 1xx and 204/304 with no body)
``/echo/...``                  200, JSON of the request: ``method``, ``path``,
                               ``headers``, ``body`` (text)
``/hang/...``                  never answers in time (waits 30 s): for timeouts
anything else                  404 JSON ``{"error": "not found"}``
=============================  =====================================================

Every request is counted per path (``server.count(path)``; the query string is
ignored).  Every method is accepted (GET, POST, PUT, PATCH, DELETE, HEAD,
OPTIONS).  HTTP/1.1 with keep-alive; every reply has a ``Content-Length``;
nothing is written to stderr (a client going away is not an error here).

Run it by hand (``python tests/docs/docs_server.py [PORT]``) to try a page's
blocks against it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socketserver
import sys
import threading
import time
from collections import Counter
from types import TracebackType

__all__ = ["DocsServer"]

_HOST = "127.0.0.1"
_MAX_SLOW_MS = 10_000
_HANG_S = 30.0
_FLAKY_FAILURES = 2


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    docs: DocsServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client that goes away mid-request (a cancelled or timed-out call in
        the docs' code) is normal here, not a traceback on stderr."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the docs' output must not be mixed with access logs."""

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size) if size else b""
                self.rfile.readline()
                if not size:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        return b""

    def _send(
        self, status: int, payload: object = None, headers: dict[str, str] | None = None
    ) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        no_body = status < 200 or status in (204, 304)
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if not no_body:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        path = self.path.split("?", 1)[0]
        docs = self.server.docs
        count = docs.record(path)
        parts = [part for part in path.split("/") if part]
        kind = parts[0] if parts else ""
        key = "/".join(parts[1:])
        if kind == "users" and key:
            self._send(200, {"id": key, "name": f"User {key}"})
        elif kind == "flaky" and key:
            if count <= _FLAKY_FAILURES:
                self._send(503, {"error": "flaky", "attempt": count})
            else:
                self._send(200, {"key": key, "attempt": count})
        elif kind == "down":
            self._send(503, {"error": "down"})
        elif kind == "slow" and parts[1:] and parts[1].isdigit():
            time.sleep(min(int(parts[1]), _MAX_SLOW_MS) / 1000)
            self._send(200, {"slept_ms": int(parts[1])})
        elif kind == "ratelimited" and key:
            if count == 1:
                limit = {"Retry-After": "1", "RateLimit": "limit=1, remaining=0, reset=1"}
                self._send(429, {"error": "rate limited"}, limit)
            else:
                self._send(200, {"key": key, "attempt": count})
        elif kind == "status" and parts[1:] and parts[1].isdigit() and 100 <= int(parts[1]) < 600:
            self._send(int(parts[1]), {"status": int(parts[1])})
        elif kind == "echo":
            self._send(
                200,
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": body.decode("utf-8", "replace"),
                },
            )
        elif kind == "hang":
            time.sleep(_HANG_S)
            self._send(200, {"error": "too late"})
        else:
            self._send(404, {"error": "not found"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class DocsServer:
    """The docs' upstream on 127.0.0.1, in a daemon thread; a context manager."""

    def __init__(self, port: int = 0) -> None:
        self._httpd = _Server((_HOST, port), _Handler)
        self._httpd.docs = self
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="docs-server", daemon=True
        )

    def record(self, path: str) -> int:
        """Count a request to ``path``; returns how many reached it so far."""
        with self._lock:
            self._counts[path] += 1
            return self._counts[path]

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.port}"

    def start(self) -> DocsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> DocsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":  # pragma: no cover - a developer's tool
    with DocsServer(int(sys.argv[1]) if sys.argv[1:] else 0) as running:
        print(f"docs server on {running.url} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
