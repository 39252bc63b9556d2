"""A real, scripted HTTP/1.1 server for integration tests (standard library only).

Usage::

    with ScriptedServer() as server:
        server.script("/flaky", Reply(503), Drop(), Reply(200, b"finally"))
        requests.get(server.url + "/flaky")   # -> 503
        ...
        assert server.count("/flaky") == 3

Each request to a path pops the next queued action for that path (the query
string is ignored when matching); once the queue is empty, ``server.default``
applies.  Every request that reaches the handler is recorded in
``server.requests`` *before* its action runs, so dropped, truncated and delayed
requests are counted too.

The server listens on ``127.0.0.1`` on an ephemeral port in a daemon thread,
speaks HTTP/1.1 with keep-alive (every normal reply carries Content-Length),
never writes to stderr and tolerates clients that go away mid-request.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import socketserver
import struct
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

__all__ = [
    "Action",
    "BigBody",
    "Delay",
    "Drop",
    "Json",
    "Raw",
    "Recorded",
    "Reply",
    "ScriptedServer",
    "Trickle",
    "Truncate",
    "chunk_extension_trickle",
    "free_port",
    "gzip_header_trickle",
    "late_byte_then_stall",
    "refused_url",
]

_HOST = "127.0.0.1"
_CHUNK = 64 * 1024
_MAX_LINE = 65536


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Reply:
    """Send ``status`` with ``headers``, Content-Length and ``body``.

    An empty body becomes ``b"status <code>"`` (except for 1xx/204/304 and
    HEAD, which never carry a body).  Content-Type defaults to text/plain.
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Json:
    """Send ``obj`` as a JSON body with ``Content-Type: application/json``."""

    status: int
    obj: object
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drop:
    """Read the request, then close the connection without sending a byte."""


@dataclass(frozen=True)
class Truncate:
    """Send headers declaring ``declared`` body bytes, send only ``sent``, then close."""

    status: int = 200
    declared: int = 100
    sent: int = 10


@dataclass(frozen=True)
class Delay:
    """Sleep ``seconds`` (cut short by ``stop()``), then perform ``then``.

    ``then=None`` performs the server's ``default`` action.
    """

    seconds: float
    then: Action | None = None


@dataclass(frozen=True)
class BigBody:
    """Reply with a ``size``-byte body (Content-Length set), written in 64 KiB chunks.

    ``chunked=True``: no Content-Length, one HTTP chunk per 64 KiB instead.
    """

    status: int
    size: int
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


@dataclass(frozen=True)
class Trickle:
    """Reply with a ``size``-byte body sent one byte every ``interval`` seconds.

    The headers go out at once, declaring the whole length (Content-Length), or
    with ``chunked=True`` no length at all (one chunk per byte).  ``stop()``
    cuts the trickle short; a client that goes away ends it.
    """

    status: int
    size: int
    interval: float
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


@dataclass(frozen=True)
class Raw:
    """Send ``head`` (the status line and headers, as bytes) at once, then each ``(wait, data)``
    step: wait ``wait`` seconds (cut short by ``stop()``), send ``data``.  Then close.

    For what the other actions cannot say: a trickle inside a gzip header or a
    chunk-size line, a late byte then a stall.  See the helpers below.
    """

    head: bytes
    steps: tuple[tuple[float, bytes], ...] = ()


def _bytewise(data: bytes, interval: float) -> tuple[tuple[float, bytes], ...]:
    return tuple((interval, data[i : i + 1]) for i in range(len(data)))


def gzip_header_trickle(status: int, interval: float, comment: int = 40) -> Raw:
    """A gzip body whose header (with a ``comment``-byte comment) arrives a byte per ``interval``.

    Nothing decodes until the header is whole, so a client's decoding read
    gets no output meanwhile.  The rest of the body follows at once.
    """
    payload = b'{"ok": true}'
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = packer.compress(payload) + packer.flush()
    header = b"\x1f\x8b\x08\x10\0\0\0\0\x00\x03" + b"c" * comment + b"\0"
    body = header + deflated + struct.pack("<II", zlib.crc32(payload), len(payload))
    head = b"HTTP/1.1 %d X\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % (
        status,
        len(body),
    )
    return Raw(head, (*_bytewise(header, interval), (0.0, body[len(header) :])))


def chunk_extension_trickle(status: int, interval: float, extension: int = 40) -> Raw:
    """A chunked body whose first chunk-size line (with an ``extension``-byte chunk
    extension) arrives a byte per ``interval``; the rest follows at once."""
    line = b"5;ext=" + b"e" * extension + b"\r\n"
    head = b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status
    return Raw(head, (*_bytewise(line, interval), (0.0, b"hello\r\n0\r\n\r\n")))


def late_byte_then_stall(status: int, at: float, stall: float, size: int = 10) -> Raw:
    """Declares ``size`` bytes; sends one after ``at`` seconds, the rest ``stall`` seconds later."""
    head = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, size)
    return Raw(head, ((at, b"a"), (stall, b"b" * (size - 1))))


Action = Reply | Json | Drop | Truncate | Delay | BigBody | Trickle | Raw


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it.  Header names are lower-cased."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    connection_id: int


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing is listening on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def refused_url() -> str:
    """An ``http://`` URL whose connection attempt is refused."""
    return f"http://{_HOST}:{free_port()}"


def _no_body(status: int, method: str) -> bool:
    return method == "HEAD" or 100 <= status < 200 or status in (204, 304)


# --------------------------------------------------------------------------- server


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner
        super().__init__((_HOST, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can take seconds on a badly configured host: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        # Never print tracebacks to stderr; the handler records what matters.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    connection_id: int

    # -- connection lifecycle

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_id = self.server.owner._accepted(self.connection)

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # client went away, or stop() shut the socket
            self.close_connection = True
        except Exception as exc:  # a bug in this module: keep it for inspection
            self.close_connection = True
            self.server.owner._record_error(exc)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._released(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- one request

    def handle_one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
        if len(self.raw_requestline) > _MAX_LINE:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        body = self._read_body()
        if body is None:
            self.close_connection = True
            return
        owner = self.server.owner
        path, _, query = self.path.partition("?")
        owner._record(
            Recorded(
                method=self.command,
                path=path,
                query=query,
                headers={k.lower(): v for k, v in self._header_items()},
                body=body,
                connection_id=self.connection_id,
            )
        )
        self._perform(owner._next_action(path))

    def _header_items(self) -> list[tuple[str, str]]:
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return list(merged.items())

    def _read_body(self) -> bytes | None:
        """The decoded request body, or None if the client hung up mid-body."""
        encoding = self.headers.get("Transfer-Encoding", "")
        if "chunked" in encoding.lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        data = self.rfile.read(size)
        return data if len(data) == size else None

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line.endswith(b"\n"):
                return None
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n"):
                return None
            parts.append(chunk)
        while True:  # trailers, up to the blank line
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line.endswith(b"\n"):
                return None
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)

    # -- actions

    def _perform(self, action: Action) -> None:
        if isinstance(action, Reply):
            self._reply(action.status, action.body, action.headers)
        elif isinstance(action, Json):
            headers = {"Content-Type": "application/json", **action.headers}
            self._reply(action.status, json.dumps(action.obj).encode(), headers)
        elif isinstance(action, Drop):
            self.close_connection = True
        elif isinstance(action, Truncate):
            self._head(action.status, {}, action.declared)
            if self.command != "HEAD":
                self.wfile.write(b"x" * action.sent)
            self.close_connection = True
        elif isinstance(action, Delay):
            owner = self.server.owner
            if owner._stopping.wait(action.seconds):
                self.close_connection = True
                return
            self._perform(action.then if action.then is not None else owner.default)
        elif isinstance(action, BigBody):
            if action.chunked:
                self._chunked_head(action.status, action.headers)
            else:
                self._head(action.status, action.headers, action.size)
            if not _no_body(action.status, self.command):
                remaining = action.size
                block = b"x" * min(_CHUNK, max(remaining, 0))
                while remaining > 0:
                    piece = block if remaining >= len(block) else block[:remaining]
                    if action.chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        self.wfile.write(piece)
                    remaining -= len(piece)
                if action.chunked:
                    self.wfile.write(b"0\r\n\r\n")
        elif isinstance(action, Trickle):
            self._trickle(action)
        elif isinstance(action, Raw):
            self._raw(action)
        else:  # pragma: no cover - guarded by the type checker
            raise TypeError(f"unknown action {action!r}")

    def _chunked_head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _trickle(self, action: Trickle) -> None:
        if action.chunked:
            self._chunked_head(action.status, action.headers)
        else:
            self._head(action.status, action.headers, action.size)
        self.wfile.flush()
        stopping = self.server.owner._stopping
        for _ in range(action.size):
            if stopping.wait(action.interval):
                self.close_connection = True
                return
            self.wfile.write(b"1\r\nx\r\n" if action.chunked else b"x")
            self.wfile.flush()
        if action.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _raw(self, action: Raw) -> None:
        self.close_connection = True  # the steps may leave the body unfinished
        self.wfile.write(action.head)
        self.wfile.flush()
        stopping = self.server.owner._stopping
        for wait, data in action.steps:
            if wait > 0 and stopping.wait(wait):
                return
            self.wfile.write(data)
            self.wfile.flush()

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if _no_body(status, "GET"):
            body = b""
        elif not body:
            body = f"status {status}".encode()
        self._head(status, headers, len(body))
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _head(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        names = {name.lower() for name in headers}
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        if not _no_body(status, "GET"):  # 1xx, 204 and 304 carry no Content-Length
            self.send_header("Content-Length", str(length))
        self.end_headers()


class ScriptedServer:
    """A scripted HTTP/1.1 server on 127.0.0.1; see the module docstring."""

    def __init__(self) -> None:
        self.default: Action = Reply(200, b"ok")
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Action]] = {}
        self._requests: list[Recorded] = []
        self._errors: list[BaseException] = []
        self._connections = 0
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> ScriptedServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ScriptedServer:{self._httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections (and pending Delays), close the socket."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{_HOST}:{self.port}"

    @property
    def origin(self) -> str:
        """The origin (scheme://host:port), as smoothapi names per-origin breakers."""
        return self.url

    # -- scripting

    def script(self, path: str, *actions: Action) -> None:
        """Queue ``actions`` for requests to ``path`` (query string ignored)."""
        path = path.partition("?")[0]
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(actions)

    def pending(self, path: str) -> int:
        """How many scripted actions are still queued for ``path``."""
        with self._lock:
            return len(self._scripts.get(path.partition("?")[0], ()))

    def reset(self) -> None:
        """Forget scripts and recorded requests (``default`` and counters stay)."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()

    # -- inspection

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every recorded request, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """How many TCP connections the server has accepted."""
        with self._lock:
            return self._connections

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised inside the handler (should stay empty)."""
        with self._lock:
            return list(self._errors)

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Number of recorded requests matching ``path`` and/or ``method``."""
        wanted = method.upper() if method is not None else None
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (path is None or r.path == path) and (wanted is None or r.method == wanted)
            )

    # -- handler callbacks

    def _accepted(self, sock: socket.socket) -> int:
        with self._lock:
            self._connections += 1
            self._open.add(sock)
            return self._connections

    def _released(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _record(self, request: Recorded) -> None:
        with self._lock:
            self._requests.append(request)

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _next_action(self, path: str) -> Action:
        with self._lock:
            queue = self._scripts.get(path)
            if queue:
                return queue.popleft()
            return self.default
