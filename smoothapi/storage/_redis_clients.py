"""RedisStore's clients: the scripts registered on each, the async client of each event
loop, copies of a client for another loop, and a client's printable address.

Imported by :mod:`smoothapi.storage.redis` once redis-py is known to be installed.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from .._runtime import at_fork_child
from ..errors import ConfigTypeError
from . import lua


class _Scripts:
    """The scripts registered on one client (no I/O: redis-py only hashes them).

    ``caller_clock`` (tests only): the variants that take ``now`` from the
    caller, as the last argument, instead of the server's TIME (see
    :func:`smoothapi.storage.lua.caller_clock`).
    """

    __slots__ = ("acquire", "client", "force_open", "record", "reset", "snapshot")

    def __init__(self, client: Any, *, caller_clock: bool = False) -> None:
        self.client = client
        source = lua.caller_clock if caller_clock else str
        # Script objects run EVALSHA and re-load the script on NOSCRIPT (a restarted
        # or flushed server), for the sync and the asyncio client alike.
        self.acquire = client.register_script(source(lua.ACQUIRE))
        self.record = client.register_script(source(lua.RECORD))
        self.reset = client.register_script(source(lua.RESET))
        self.force_open = client.register_script(source(lua.FORCE_OPEN))
        self.snapshot = client.register_script(source(lua.SNAPSHOT))


class _LoopClients:
    """The scripts on each running event loop's own async client.

    An asyncio connection, and the locks of a pool or a cluster client,
    belong to the loop that made them: a client shared by two loops
    running at once (two threads, each in ``asyncio.run``) hands one loop
    a future of the other, and the call waits for ever.  So each loop gets
    a client of its own: the one given serves one loop at a time (taken
    over, with its finished loop's connections forgotten, once that loop
    is closed or gone), and every other loop gets a client built from the
    same settings (``make``: :meth:`RedisStore.from_url`'s URL and options;
    else a copy of the given client's pool class and connection settings).
    A loop's client is forgotten once the loop is closed (when another loop
    next comes).
    """

    __slots__ = ("by_loop", "caller_clock", "given", "make", "owner")

    def __init__(self, given: _Scripts, *, caller_clock: bool = False) -> None:
        self.given = given
        self.caller_clock = caller_clock
        self.by_loop: weakref.WeakKeyDictionary[Any, _Scripts] = weakref.WeakKeyDictionary()
        self.owner: weakref.ReferenceType[Any] | None = None  # the loop using the given client
        self.make: Callable[[], Any] | None = None  # from_url: builds one more client

    def running(self) -> _Scripts:
        """The running loop's scripts (its own client, made or taken over if need be)."""
        import asyncio  # noqa: PLC0415 - only on the asyncio path

        loop = asyncio.get_running_loop()
        given = self.given
        with _loops_lock:
            mine = self.by_loop.get(loop)
            if mine is not None:
                return mine
            # A finished loop's client holds its loop (through its connections' streams),
            # so the weak key alone never lets go: drop closed loops' entries here.
            for finished in [other for other in self.by_loop if other.is_closed()]:
                gone = self.by_loop.pop(finished, None)
                if gone is not None and gone is not given:
                    _forget_connections(gone.client)
            owner = self.owner() if self.owner is not None else None
            if owner is None or owner.is_closed():
                # No running loop can use the given client any more: take it over, and
                # drop (without awaiting on the dead loop) what its last loop opened.
                if owner is not None:
                    self.by_loop.pop(owner, None)
                if self.owner is not None:
                    _forget_connections(given.client)
                self.owner = weakref.ref(loop)
                mine = given
            else:
                make = self.make or functools.partial(_clone_async, given.client)
                mine = _Scripts(make(), caller_clock=self.caller_clock)
            self.by_loop[loop] = mine
            return mine

    def forget_running(self, scripts: _Scripts) -> None:
        """The running loop is done with ``scripts`` (``aclose()``)."""
        import asyncio  # noqa: PLC0415 - only on the asyncio path

        loop = asyncio.get_running_loop()
        with _loops_lock:
            self.by_loop.pop(loop, None)
            if scripts is self.given:
                self.owner = None  # the next loop may take the given client again


# Guards every store's loop -> client map (held for dict updates only, never across I/O).
_loops_lock = threading.Lock()


@at_fork_child
def _after_fork_in_child() -> None:
    global _loops_lock  # another thread may have held it at the fork
    _loops_lock = threading.Lock()


def _forget_connections(client: Any) -> None:
    """Drop a finished event loop's connections without awaiting (they cannot be closed
    from another loop; the collector closes their sockets)."""
    reset = getattr(getattr(client, "connection_pool", None), "reset", None)
    if callable(reset):
        reset()


def _clone_async(client: Any) -> Any:
    """A new async client with ``client``'s settings, for another event loop.

    A plain client: its pool's class, size and connection settings (host, port,
    database, credentials, TLS, timeouts, retry...).  A cluster client: its
    startup nodes and the constructor settings it keeps.
    """
    if _is_cluster(client):
        return _clone_async_cluster(client)
    pool = client.connection_pool
    settings = {k: v for k, v in pool.connection_kwargs.items() if k not in _PER_POOL}
    if "retry" in settings:
        settings["retry"] = copy.deepcopy(settings["retry"])
    if "max_connections" in inspect.signature(type(pool)).parameters:
        settings["max_connections"] = pool.max_connections
    if isinstance(pool, redis.asyncio.BlockingConnectionPool):
        settings["timeout"] = pool.timeout
    clone = redis.asyncio.Redis(
        connection_pool=type(pool)(connection_class=pool.connection_class, **settings),
        single_connection_client=getattr(client, "single_connection_client", False),
    )
    clone.auto_close_connection_pool = True  # ours: aclose() closes it too
    return clone


# Per-pool state a pool's connection settings carry, which a new pool builds afresh.
_PER_POOL = frozenset({"himport_registry", "max_connections"})


def _clone_async_cluster(client: Any) -> Any:
    cls = redis.asyncio.cluster.RedisCluster
    accepted = inspect.signature(cls).parameters
    settings = {
        k: v
        for k, v in client.connection_kwargs.items()
        if k in accepted and k not in ("connection_class", "retry")
    }
    if "SSL" in getattr(client.connection_kwargs.get("connection_class"), "__name__", ""):
        settings["ssl"] = True
    manager = client.nodes_manager
    for name, value in (
        ("require_full_coverage", getattr(manager, "require_full_coverage", None)),
        ("address_remap", getattr(manager, "address_remap", None)),
        # read_from_replicas is deprecated in favour of a strategy: pass it only if set.
        ("read_from_replicas", getattr(client, "read_from_replicas", None) or None),
        ("load_balancing_strategy", getattr(client, "load_balancing_strategy", None)),
        ("reinitialize_steps", getattr(client, "reinitialize_steps", None)),
    ):
        if value is not None and name in accepted:
            settings[name] = value
    nodes = [redis.asyncio.cluster.ClusterNode(n.host, n.port) for n in client.startup_nodes]
    return cls(startup_nodes=nodes, retry=copy.deepcopy(client.retry), **settings)


def _is_async_client(client: object, where: str) -> bool:
    if not callable(getattr(client, "register_script", None)):
        raise ConfigTypeError(
            f"{where} must be a redis-py client (redis.Redis or redis.asyncio.Redis), "
            f"got {type(client).__name__}"
        )
    return inspect.iscoroutinefunction(getattr(client, "execute_command", None))


def _describe(client: Any) -> str:
    """``redis://host:port/db`` from the client's connection settings - never credentials."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict):  # a cluster client: name a node it starts from
        node = getattr(client, "get_default_node", lambda: None)()
        host, port = getattr(node, "host", "?"), getattr(node, "port", "?")
        return f"redis-cluster://{_host(host)}:{port}"
    db = kwargs.get("db", 0)
    path = kwargs.get("path")
    if path:
        return f"unix://{path}?db={db}"
    tls = "SSL" in getattr(getattr(pool, "connection_class", None), "__name__", "")
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{_host(kwargs.get('host', 'localhost'))}:{kwargs.get('port', 6379)}/{db}"


def _host(host: object) -> str:
    text = str(host)
    return f"[{text}]" if ":" in text and not text.startswith("[") else text


def _is_cluster(client: Any) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))
