"""An asyncio HTTP/1.1 server for the load-control tests: quotas, holds, concurrency counts.

Usage::

    with LoadServer(Quota(limit=5, window=1.0, style="ietf")) as server:
        httpx.get(server.url + "/a")
        server.statuses("/a")        # Counter({200: 1})
        server.peak                  # most requests in flight at once

One event loop in a daemon thread serves every connection (thousands at once
cost a socket each, no thread), with keep-alive.  ``respond(path)`` - a
:class:`Quota`, :class:`Failing`, :class:`Fixed` or any callable - picks each
answer when its request arrives.  A request is in flight from its head's
arrival until just before its answer is written (so the client cannot see the
answer before the server counted the request done); meanwhile it waits for
the gate (``LoadServer(gated=True)`` holds every request until
:meth:`LoadServer.release`) and ``hold`` seconds.  Counts and statuses are
recorded per path, query string ignored.  Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["STYLES", "Answer", "Failing", "Fixed", "LoadServer", "Quota"]

_HOST = "127.0.0.1"
_MAX_HEAD = 256 * 1024  # hostile tests send 10 KB header values; requests stay small
_REASONS = {200: "OK", 429: "Too Many Requests", 503: "Service Unavailable"}

#: The rate-limit header styles :class:`Quota` speaks.
STYLES = ("ietf", "x-ratelimit", "retry-after")


@dataclass(frozen=True)
class Answer:
    """A status and headers (a short body is added)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fixed:
    """Every request gets the same answer."""

    answer: Answer

    def __call__(self, path: str) -> Answer:
        return self.answer


@dataclass
class Failing:
    """``failures`` of every ``out_of`` requests get ``status`` (the first ones), in a cycle."""

    failures: int
    out_of: int = 10
    status: int = 503
    seen: int = 0

    def __call__(self, path: str) -> Answer:
        turn = self.seen % self.out_of
        self.seen += 1
        return Answer(self.status if turn < self.failures else 200)


@dataclass
class Quota:
    """``limit`` requests per path in each fixed ``window`` of the Unix clock, 429 beyond.

    Windows are aligned on the clock (``window=1.0``: each whole second), so a
    reset is a whole number of seconds after the epoch.  Every answer carries
    the headers of ``style``:

    * ``"ietf"`` - ``RateLimit-Policy: "default";q=<limit>;w=<window>`` and
      ``RateLimit: "default";r=<remaining>;t=<seconds to the reset, rounded up>``;
    * ``"x-ratelimit"`` - ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset``
      (the reset as Unix epoch seconds);
    * ``"retry-after"`` - nothing but ``Retry-After`` on a 429.

    A 429 always carries ``Retry-After`` (seconds to the reset, rounded up).
    """

    limit: int
    window: float = 1.0
    style: str = "ietf"
    clock: Callable[[], float] = time.time
    _windows: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")

    def __call__(self, path: str) -> Answer:
        now = self.clock()
        index = math.floor(now / self.window)
        seen_index, used = self._windows.get(path, (index, 0))
        if seen_index != index:
            used = 0
        reset_at = (index + 1) * self.window
        delta = max(1, math.ceil(reset_at - now))
        allowed = used < self.limit
        if allowed:
            used += 1
        self._windows[path] = (index, used)
        remaining = self.limit - used
        headers: dict[str, str] = {}
        if self.style == "ietf":
            headers["RateLimit-Policy"] = f'"default";q={self.limit};w={math.ceil(self.window)}'
            headers["RateLimit"] = f'"default";r={remaining};t={delta}'
        elif self.style == "x-ratelimit":
            headers["X-RateLimit-Limit"] = str(self.limit)
            headers["X-RateLimit-Remaining"] = str(remaining)
            headers["X-RateLimit-Reset"] = str(math.ceil(reset_at))
        if allowed:
            return Answer(200, headers)
        headers["Retry-After"] = str(delta)
        return Answer(429, headers)


class LoadServer:
    """See the module docstring."""

    def __init__(
        self,
        respond: Callable[[str], Answer] | None = None,
        *,
        hold: float = 0.0,
        gated: bool = False,
    ) -> None:
        self.respond = respond if respond is not None else Fixed(Answer(200))
        self.hold = hold
        self._gated = gated
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._statuses: dict[str, Counter[int]] = {}
        self._in_flight = 0
        self._peak = 0
        self._connections = 0
        self._errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._gate: asyncio.Event | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle

    def start(self) -> LoadServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="LoadServer", daemon=True
        )
        self._thread.start()
        if not ready.wait(20) or self._server is None:
            raise RuntimeError("LoadServer did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def listen() -> None:
            self._gate = asyncio.Event()
            if not self._gated:
                self._gate.set()
            self._server = await asyncio.start_server(
                self._serve, _HOST, 0, backlog=4096, limit=_MAX_HEAD
            )
            self._port = self._server.sockets[0].getsockname()[1]

        try:
            loop.run_until_complete(listen())
        finally:
            ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            server = self._server
            if server is not None:
                server.close()
            gate = self._gate
            if gate is not None:
                gate.set()  # held requests finish
            me = asyncio.current_task()
            for _ in range(3):  # a connection accepted meanwhile gets its turn too
                for writer in list(self._writers):
                    writer.transport.abort()  # idle keep-alive connections end
                tasks = [task for task in asyncio.all_tasks() if task is not me]
                if not tasks:
                    return
                _, pending = await asyncio.wait(tasks, timeout=5)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=5)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
        self._loop = self._thread = None

    def __enter__(self) -> LoadServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def release(self) -> None:
        """Open the gate: every held request (and every later one) goes on."""
        loop, gate = self._loop, self._gate
        assert loop is not None
        assert gate is not None
        loop.call_soon_threadsafe(gate.set)

    # -- inspection

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self._port}"

    def count(self, path: str | None = None) -> int:
        """Requests that reached the server (for ``path``, or all)."""
        with self._lock:
            return self._counts[path] if path is not None else sum(self._counts.values())

    def statuses(self, path: str | None = None) -> Counter[int]:
        """How often each status was answered (for ``path``, or all)."""
        with self._lock:
            if path is not None:
                return Counter(self._statuses.get(path, Counter()))
            total: Counter[int] = Counter()
            for counts in self._statuses.values():
                total.update(counts)
            return total

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def peak(self) -> int:
        """The most requests in flight at once since the start."""
        with self._lock:
            return self._peak

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the server (should stay empty)."""
        with self._lock:
            return list(self._errors)

    # -- serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent garbage
        except asyncio.CancelledError:
            pass  # stop(): end quietly (the server's own tasks, nobody awaits them)
        except Exception as exc:  # a bug here: keep it for the test to see
            with self._lock:
                self._errors.append(exc)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is done."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        _method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length:
            await reader.readexactly(length)
        path = target.partition("?")[0]
        answer = self.respond(path)
        with self._lock:
            self._counts[path] += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            gate = self._gate
            assert gate is not None
            await gate.wait()
            if self.hold > 0:
                await asyncio.sleep(self.hold)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._statuses.setdefault(path, Counter())[answer.status] += 1
        body = f"status {answer.status}".encode()
        out = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'X')}"]
        out.extend(f"{name}: {value}" for name, value in answer.headers.items())
        out.append(f"Content-Length: {len(body)}")
        out.append("Content-Type: text/plain")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return headers.get("connection", "").lower() != "close"
