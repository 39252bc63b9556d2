"""A real Redis (or Valkey) server for integration tests (standard library only).

Usage::

    with RedisServer() as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        ...
        redis_server.stop()    # SIGTERM, wait: clients now get connection errors
        redis_server.start()   # the same port again, an empty data set

The server is a ``redis-server`` or ``valkey-server`` binary found on PATH
(:func:`find_binary`), started on ``127.0.0.1`` and a free port with
``--save '' --appendonly no`` (nothing is ever written to disk; its working
directory is a private temporary directory).  :meth:`RedisServer.start`
returns once the server answers ``PING``; its output and log are kept and
quoted if it does not come up.

Port 6379 is never used: the port is an ephemeral one picked by the kernel.
Readiness is checked with a raw ``PING`` on a socket, so this module does not
need redis-py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = [
    "BINARIES",
    "CLI_BINARIES",
    "ENV_URL",
    "RedisCluster",
    "RedisServer",
    "RedisServerError",
    "env_url",
    "find_binary",
    "ping",
]

#: Binaries looked up on PATH, in this order.
BINARIES = ("redis-server", "valkey-server")
#: The command-line clients, for creating a cluster (:class:`RedisCluster`).
CLI_BINARIES = ("redis-cli", "valkey-cli")
#: When set, the session uses this server instead of starting one.
ENV_URL = "SMOOTHAPI_REDIS_URL"

_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_RESERVED_PORT = 6379  # a developer's own Redis lives there: never touch it
_BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000


class RedisServerError(RuntimeError):
    """The server binary did not start (its log is in the message)."""


def find_binary() -> str | None:
    """The path of the first of :data:`BINARIES` found on PATH, or None."""
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def find_cli() -> str | None:
    """The path of the first of :data:`CLI_BINARIES` found on PATH, or None."""
    for name in CLI_BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port: int = sock.getsockname()[1]
        if port != _RESERVED_PORT:
            return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = _free_port()
        if port + _BUS_OFFSET <= 65535 and _bindable(port + _BUS_OFFSET):
            return port


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server on ``127.0.0.1:port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((_HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    return reply == b"+PONG\r\n"


class RedisServer:
    """One ``redis-server``/``valkey-server`` process on 127.0.0.1; see the module docstring.

    ``binary`` defaults to :func:`find_binary`.  The port is chosen at the first
    :meth:`start` and kept by every later :meth:`start`, so clients configured
    with :attr:`url` reconnect to the restarted server.
    """

    def __init__(
        self, binary: str | None = None, *, cluster: bool = False, port: int | None = None
    ) -> None:
        found = binary or find_binary()
        if found is None:
            raise RedisServerError(f"none of {', '.join(BINARIES)} is on PATH")
        self.binary = found
        self.cluster = cluster
        self.port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="smoothapi-redis-")
        self._log = Path(self._dir.name) / "server.log"
        self._console = Path(self._dir.name) / "console.log"

    # -- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start the server (on the same port as before, if it ran before) and wait for PING."""
        if self.running:
            raise RuntimeError("redis server already running")
        if self.port is not None:
            self._spawn(self.port)
            return self
        # A free port can be taken between the check and the bind: try a few.
        last: RedisServerError | None = None
        for _ in range(5):
            port = _free_port()
            try:
                self._spawn(port)
            except RedisServerError as exc:
                last = exc
                continue
            self.port = port
            return self
        assert last is not None
        raise last

    def _spawn(self, port: int) -> None:
        args = [
            self.binary,
            "--port",
            str(port),
            "--bind",
            _HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--logfile",
            str(self._log),
            "--daemonize",
            "no",
        ]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(Path(self._dir.name) / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        self._log.write_bytes(b"")
        with self._console.open("wb") as console:
            proc = subprocess.Popen(  # noqa: S603 - a fixed binary found on PATH, fixed arguments
                args, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
            )
        self._proc = proc
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if ping(port):
                return
            time.sleep(0.01)
        self._terminate(proc)
        self._proc = None
        output = self._console.read_text(errors="replace")[-2000:]
        log = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
        raise RedisServerError(
            f"{self.binary} did not answer PING on {_HOST}:{port} "
            f"(exit code {proc.returncode}); its output:\n{output}\nits log:\n{log}"
        )

    def stop(self) -> None:
        """Stop the server with SIGTERM and wait for it to exit (no-op if not running)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        with contextlib.suppress(OSError):
            self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- addresses

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        if self.port is None:
            raise RuntimeError("redis server never started")
        return f"redis://{_HOST}:{self.port}/0"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.binary} {_HOST}:{self.port} {state}>"


class RedisCluster:
    """A Redis Cluster of ``size`` primaries (no replicas) on 127.0.0.1, for tests.

    Each node is a :class:`RedisServer` started with ``--cluster-enabled yes``
    in a temporary directory of its own; ``redis-cli --cluster create`` joins
    them and assigns the slots, and :meth:`start` returns once every node
    reports ``cluster_state:ok``.  :meth:`stop` stops every node (clients then
    get connection errors); :meth:`close` also removes the directories.
    """

    def __init__(self, size: int = 3) -> None:
        cli = find_cli()
        if cli is None:
            raise RedisServerError(f"none of {', '.join(CLI_BINARIES)} is on PATH")
        self.cli = cli
        self.nodes: list[RedisServer] = []
        self.size = size

    def start(self) -> RedisCluster:
        """Start the nodes, create the cluster and wait for ``cluster_state:ok``."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        for _ in range(self.size):
            node = RedisServer(cluster=True, port=_cluster_port())
            self.nodes.append(node)
            node.start()
        addresses = [f"{_HOST}:{node.port}" for node in self.nodes]
        created = subprocess.run(  # noqa: S603 - a fixed binary found on PATH
            [
                self.cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RedisServerError(
                f"{self.cli} --cluster create failed (exit code {created.returncode}):\n"
                f"{created.stdout.decode(errors='replace')[-2000:]}"
                f"{created.stderr.decode(errors='replace')[-2000:]}"
            )
        deadline = time.monotonic() + 30
        while not all(self._ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RedisServerError("the cluster did not reach cluster_state:ok in 30 s")
            time.sleep(0.05)

    def _ok(self, node: RedisServer) -> bool:
        assert node.port is not None
        reply = subprocess.run(  # noqa: S603 - a fixed binary found on PATH
            [self.cli, "-h", _HOST, "-p", str(node.port), "cluster", "info"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        return b"cluster_state:ok" in reply.stdout

    def stop(self) -> None:
        """Stop every node (their data and cluster configuration stay until :meth:`close`)."""
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node and remove their temporary directories."""
        for node in self.nodes:
            node.close()

    @property
    def ports(self) -> list[int]:
        """The nodes' ports."""
        return [node.port for node in self.nodes if node.port is not None]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the first node (a cluster client finds the rest)."""
        return self.nodes[0].url

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def env_url() -> str | None:
    """The URL in ``SMOOTHAPI_REDIS_URL``, if set and not empty."""
    return os.environ.get(ENV_URL) or None
