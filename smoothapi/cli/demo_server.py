"""A flaky upstream for ``python -m smoothapi demo``: a real HTTP/1.1 server, stdlib only.

::

    with FlakyServer() as server:              # 127.0.0.1, an ephemeral port
        server.set_mode("healthy", phase="warm-up")
        requests.get(server.url + "/users/1")  # -> 200 {"user": 1, "ok": true}
        server.set_mode("outage")
        requests.get(server.url + "/users/2")  # -> 503
        server.count("outage")                 # -> 1

Modes (switch any time with :meth:`FlakyServer.set_mode`):

* ``"healthy"`` - ``200 {"user": <id>, "ok": true}``;
* ``"outage"`` - ``503`` with a small JSON body, for every request;
* ``"flaky"`` - answers from a script of status codes (``503, 503, 200`` by
  default), one per request, then behaves as healthy;
* ``"recovering"`` - answers 503 until ``ready_in`` seconds after the switch,
  then behaves as healthy (a service coming back while its callers wait).

Every request that reaches the handler is counted, under a lock, *before*
it is answered: in total, per mode and per phase label.  So a client that
has received a response can rely on the count already including it.

The server speaks HTTP/1.1 with keep-alive, sends Content-Length on every
reply, never writes to stderr, and serves from daemon threads so a client
that keeps a connection open cannot hold the process.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Literal, get_args

__all__ = ["FlakyServer", "Mode"]

Mode = Literal["healthy", "outage", "flaky", "recovering"]
MODES: tuple[Mode, ...] = get_args(Mode)

_HOST = "127.0.0.1"
_USER_PATH = re.compile(r"/users/([0-9]{1,18})")


class _Reply:
    __slots__ = ("body", "status")

    def __init__(self, status: int, obj: object) -> None:
        self.status = status
        self.body = json.dumps(obj, separators=(",", ":")).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smoothapi-demo"
    sys_version = ""
    # An idle keep-alive connection is dropped after this many seconds.
    timeout = 10.0
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm
    # meets the client's delayed ACK and every keep-alive reply waits ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._answer(self.server.owner.respond(self.path))

    def do_HEAD(self) -> None:
        self._answer(self.server.owner.respond(self.path), body=False)

    def _answer(self, reply: _Reply, *, body: bool = True) -> None:
        # A client that sends a body with GET gets it drained, so keep-alive stays in sync.
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > 0:
            self.rfile.read(min(int(length), 1 << 20))
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        if reply.status == 503:
            self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        """Silenced: the demo prints its own timeline."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: FlakyServer, port: int) -> None:
        self.owner = owner
        super().__init__((_HOST, port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Silenced: a client that resets its keep-alive connection is not news."""


class FlakyServer:
    """A switchable, counting HTTP/1.1 server on 127.0.0.1, run in a background thread.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`).
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._mode: Mode = "healthy"
        self._phase = "healthy"
        self._script: list[int] = []
        self._ready_at = 0.0
        self._total = 0
        self._by_mode: Counter[str] = Counter()
        self._by_phase: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FlakyServer:
        """Bind and start serving in a daemon thread (idempotent)."""
        if self._server is None:
            server = _Server(self, self._port)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="smoothapi-demo-server",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FlakyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; the server must be started."""
        if self._server is None:
            raise RuntimeError("FlakyServer is not running; use it as a context manager")
        return f"http://{_HOST}:{self._server.server_address[1]}"

    # -- control -----------------------------------------------------------

    def set_mode(
        self,
        mode: Mode,
        *,
        phase: str | None = None,
        script: Iterable[int] = (503, 503, 200),
        ready_in: float = 0.0,
    ) -> None:
        """Switch the mode; requests are counted under ``phase`` (default: the mode's name).

        ``script`` is used by ``"flaky"`` (one status per request, then
        healthy); ``ready_in`` by ``"recovering"`` (seconds of 503 from now).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        statuses = list(script)
        for status in statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ValueError(f"script holds {status!r}, which is not a final HTTP status")
        if ready_in < 0:
            raise ValueError(f"ready_in must be >= 0, got {ready_in!r}")
        with self._lock:
            self._mode = mode
            self._phase = mode if phase is None else phase
            self._script = statuses if mode == "flaky" else []
            self._ready_at = time.monotonic() + ready_in

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def phase(self) -> str:
        return self._phase

    # -- counters ----------------------------------------------------------

    @property
    def total(self) -> int:
        """Requests that reached the server since it was created."""
        return self._total

    def count(self, phase_or_mode: str) -> int:
        """Requests counted under a phase label, or else under a mode name."""
        with self._lock:
            if phase_or_mode in self._by_phase:
                return self._by_phase[phase_or_mode]
            return self._by_mode[phase_or_mode]

    def counts(self) -> dict[str, int]:
        """A snapshot of the per-phase counts."""
        with self._lock:
            return dict(self._by_phase)

    def counts_by_mode(self) -> dict[str, int]:
        """A snapshot of the per-mode counts."""
        with self._lock:
            return dict(self._by_mode)

    # -- the handler's side --------------------------------------------------

    def respond(self, path: str) -> _Reply:
        """Count one request and decide its reply (called from handler threads)."""
        with self._lock:
            self._total += 1
            self._by_mode[self._mode] += 1
            self._by_phase[self._phase] += 1
            mode = self._mode
            status = 200
            if mode == "outage":
                status = 503
            elif mode == "flaky" and self._script:
                status = self._script.pop(0)
            elif mode == "recovering" and time.monotonic() < self._ready_at:
                status = 503
        match = _USER_PATH.fullmatch(path.split("?", 1)[0])
        if match is None:
            return _Reply(404, {"error": "not found", "path": path.split("?", 1)[0][:100]})
        if status == 200:
            return _Reply(200, {"user": int(match.group(1)), "ok": True})
        if status == 503:
            return _Reply(503, {"error": "service unavailable"})
        return _Reply(status, {"error": f"status {status}"})
