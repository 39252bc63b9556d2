"""RedisStore: shared breaker state in Redis or Valkey, one script round trip per decision.

Imported only when :class:`RedisStore` is first used, so ``import smoothapi``
never imports redis.  The Lua scripts and the layout of the state are in
:mod:`smoothapi.storage.lua`.

The timeout is the client's: a hung Redis holds a call for as long as the
client's ``socket_timeout`` / ``socket_connect_timeout`` (and its retries)
allow.  :meth:`RedisStore.from_url` builds clients with ``timeout=0.1`` and
at most one immediate retry of a dropped connection; if you pass your own
client, give it short timeouts too (redis-py's default is 5 s, with 3 or
more retries).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import math
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.cluster
    import redis.retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    if exc.name is None or exc.name.partition(".")[0] != "redis":
        raise
    raise ModuleNotFoundError(
        f"smoothapi.RedisStore needs the 'redis' extra: redis-py is not installed ({exc}): "
        "pip install redis",
        name=exc.name,
    ) from exc

from .._runtime import at_fork_child
from .._runtime import running_trio as _running_trio
from ..breaker import CircuitState
from ..config import _number
from ..errors import ConfigError, ConfigTypeError
from . import lua
from .protocol import (
    Admission,
    BreakerStatus,
    MalformedBreaker,
    MalformedState,
    Op,
    Opening,
    Report,
    Snapshot,
    Survey,
)

__all__ = ["RedisStore"]

T = TypeVar("T")

# An abandoned breaker's key lives at least a day after its last write.
_MIN_TTL_MS = 24 * 60 * 60 * 1000
# The readable name kept beside the state is for humans; the key never holds it.
_NAME_FIELD_CHARS = 1024
# The longest open time the scripts hold exactly (about 31 years): the server's clock
# plus it stays far inside the 2**53 of Lua's numbers, and ten times it (the key's
# expiry) inside PEXPIRE's range.
_MAX_OPEN_MS = 10**12


class _Scripts:
    """The four scripts registered on one client (no I/O: redis-py only hashes them)."""

    __slots__ = ("acquire", "client", "force_open", "record", "reset", "snapshot")

    def __init__(self, client: Any) -> None:
        self.client = client
        # Script objects run EVALSHA and re-load the script on NOSCRIPT (a restarted
        # or flushed server), for the sync and the asyncio client alike.
        self.acquire = client.register_script(lua.ACQUIRE)
        self.record = client.register_script(lua.RECORD)
        self.reset = client.register_script(lua.RESET)
        self.force_open = client.register_script(lua.FORCE_OPEN)
        self.snapshot = client.register_script(lua.SNAPSHOT)


class RedisStore:
    """Breaker state in Redis (or Valkey), shared by every process that uses the same server.

    ``client`` is a ``redis.Redis`` (sync) or ``redis.asyncio.Redis`` (async)
    - or a Redis Cluster client (``redis.cluster.RedisCluster``,
    ``redis.asyncio.cluster.RedisCluster``); ``async_client`` adds the async
    flavour to a sync client.  In a cluster each breaker's key carries a hash
    tag, so every script touches one slot and runs on the node that holds it.
    Sync breakers need a sync client; async calls need an async
    client under asyncio, and a sync client under trio (redis.asyncio runs
    only under asyncio, so under trio the calls run the sync client in a
    worker thread).  A missing flavour raises :class:`ConfigError` at first
    use, before any I/O.

    Each asyncio event loop that uses the store gets an async client of its
    own (two threads each running ``asyncio.run`` may share one store): the
    given one serves one loop at a time, and any other loop running at the
    same time uses a copy of it (same pool class and connection settings; for
    a cluster client, the same startup nodes and settings).  ``aclose()``
    closes the running loop's.

    * ``prefix`` - namespaces the keys: ``{prefix}:breaker:{<digest of the name>}``.
    * ``retry_interval`` - seconds after an error during which breakers
      use their local state without trying Redis at all.
    * ``lease_ms`` - how long a HALF_OPEN probe may run before another
      process may probe instead; never longer than the breaker's cooldown
      (the default).

    Authentication and TLS are whatever the clients are configured with;
    logs and events name the store by ``host:port/db`` only.
    """

    #: Grows the open time as the memory breaker does (see ``shared.Opening``).
    adaptive = True
    #: The longest open time (``cooldown_ms``, ``max_cooldown_ms``, ``force_open``) the
    #: scripts hold exactly, about 31 years: a breaker asking for more is refused when
    #: it is built.
    max_open_ms = _MAX_OPEN_MS

    def __init__(
        self,
        client: Any = None,
        *,
        async_client: Any = None,
        prefix: str = "smoothapi",
        retry_interval: float = 1.0,
        lease_ms: float | None = None,
    ) -> None:
        sync_client: Any = None
        if client is not None:
            if _is_async_client(client, "RedisStore(client)"):
                if async_client is not None:
                    raise ConfigError(
                        "RedisStore got two async clients: pass the redis.Redis (sync) client "
                        "first and the redis.asyncio.Redis client as async_client="
                    )
                async_client = client
            else:
                sync_client = client
        if async_client is not None and not _is_async_client(async_client, "async_client"):
            raise ConfigTypeError(
                f"RedisStore(async_client=...) must be a redis.asyncio.Redis, got "
                f"{type(async_client).__name__}; pass a sync client as the first argument"
            )
        if sync_client is None and async_client is None:
            raise ConfigError(
                "RedisStore needs a client: RedisStore(redis.Redis(...)), "
                "RedisStore(redis.asyncio.Redis(...)) or RedisStore.from_url(url)"
            )
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ConfigError(
                f"RedisStore.prefix must be a non-empty string without braces (they would "
                f"break the key's cluster hash tag), got {prefix!r}"
            )
        self.client = sync_client
        self.async_client = async_client
        self.prefix = prefix
        self._retry_interval = _number("RedisStore", "retry_interval", retry_interval)
        if lease_ms is not None:
            lease_ms = _number("RedisStore", "lease_ms", lease_ms)
            if lease_ms <= 0:
                raise ConfigError(f"RedisStore.lease_ms must be > 0 (or None), got {lease_ms!r}")
        self.lease_ms = lease_ms
        self._sync = None if sync_client is None else _Scripts(sync_client)
        self._async = None if async_client is None else _Scripts(async_client)
        # The async client for each running event loop (see _scripts_async): the one
        # given serves one loop at a time, the others get a client of their own.
        self._by_loop: weakref.WeakKeyDictionary[Any, _Scripts] = weakref.WeakKeyDictionary()
        self._owner: weakref.ReferenceType[Any] | None = None  # the loop using self._async
        self._make_async: Callable[[], Any] | None = None  # from_url: builds one more
        self._label = _describe(sync_client if sync_client is not None else async_client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.1,
        prefix: str = "smoothapi",
        retry_interval: float = 1.0,
        lease_ms: float | None = None,
        cluster: bool = False,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store with a sync and an async client for ``url`` (``redis://``, ``rediss://``, ``unix://``).

        ``timeout`` (seconds) bounds connecting and every command, so a hung
        server holds a call at most about that long.  A dropped connection
        (a restarted server) is retried once at once; a timeout is not
        retried, since a script that timed out may have run.  Other keyword
        arguments go to both ``from_url`` calls (``password=``,
        ``ssl_ca_certs=``...).  ``cluster=True``: the URL names one node of a
        Redis Cluster, and the clients are cluster clients.

        No error message quotes the URL's user name or password: everything
        between the scheme's ``:`` and the last ``@`` stays out of every
        message, even when it holds ``/``, ``?`` or ``#`` (which must be
        percent-encoded there: such a URL is refused, since it cannot be read
        unambiguously), and a URL without ``//`` after its scheme
        (``redis:/user:pw@host``) is refused without quoting it.  A database
        path that is not a number is refused without quoting it either.
        """
        seconds = _number("RedisStore.from_url", "timeout", timeout)
        if seconds <= 0:
            raise ConfigError(f"RedisStore.from_url timeout must be > 0 seconds, got {timeout!r}")
        if not isinstance(url, str):
            # Never the value: it may be a URL (bytes, say) that holds a password.
            raise ConfigTypeError(
                f"RedisStore.from_url needs a URL string, got a {type(url).__name__}"
            )
        _check_credentials(url)
        _check_db_path(url)
        options = {"socket_timeout": seconds, "socket_connect_timeout": seconds, **client_kwargs}
        sync_retry = redis.retry.Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        async_retry = redis.asyncio.retry.Retry(
            NoBackoff(), 1, supported_errors=(RedisConnectionError,)
        )
        if cluster:
            sync_class: Any = redis.cluster.RedisCluster
            async_class: Any = redis.asyncio.cluster.RedisCluster
        else:
            sync_class, async_class = redis.Redis, redis.asyncio.Redis
        try:
            sync_client = sync_class.from_url(url, **{"retry": sync_retry, **options})
            async_client = async_class.from_url(url, **{"retry": async_retry, **options})
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"RedisStore.from_url could not use the URL: {redact(str(exc), url)}"
            ) from None  # the original may quote the URL: never chained
        except RedisError as exc:  # a cluster client asks a node for the slots at once
            raise ConfigError(
                f"RedisStore.from_url could not reach the cluster: "
                f"{type(exc).__name__}: {redact(str(exc), url)}"
            ) from None
        store = cls(
            sync_client,
            async_client=async_client,
            prefix=prefix,
            retry_interval=retry_interval,
            lease_ms=lease_ms,
        )

        def another_async_client() -> Any:  # for an event loop other than the first one
            retry = redis.asyncio.retry.Retry(
                NoBackoff(), 1, supported_errors=(RedisConnectionError,)
            )
            return async_class.from_url(url, **{"retry": retry, **options})

        store._make_async = another_async_client
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._label!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        """Close the sync client's connections (e.g. a store built by :meth:`from_url`)."""
        if self.client is not None:
            self.client.close()

    async def aclose(self) -> None:
        """Close the sync client's connections and the running event loop's async client's.

        Each event loop that uses the store has an async client of its own
        (see :meth:`_scripts_async`): call ``aclose()`` from each loop before
        it ends, or its connections are only collected, not closed.
        """
        self.close()
        if self.async_client is None:
            return
        scripts = self._scripts_async()  # forgets connections a finished loop opened
        import asyncio  # noqa: PLC0415 - only on the asyncio path

        loop = asyncio.get_running_loop()
        with _loops_lock:
            self._by_loop.pop(loop, None)
            if scripts is self._async:
                self._owner = None  # the next loop may take the given client again
        await scripts.client.aclose()

    # -- what SharedCircuitBreaker reads ---------------------------------------------

    @property
    def label(self) -> str:
        """The server, as ``redis://host:port/db`` (never a password)."""
        return self._label

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Errors that mean Redis cannot answer: any ``Exception`` but :class:`ConfigError`.

        redis-py raises more than its own ``RedisError`` and ``OSError``: a
        cluster client's ``RedisClusterException``, ``RuntimeError`` for an
        async client on a closed loop, an ``AttributeError`` for a server that
        answers the handshake with something that is not a map.  A breaker
        must never fail a call because of its store, so all of them mean
        "unavailable" (SharedCircuitBreaker treats any Exception so anyway).
        """
        return (Exception,)

    @property
    def is_cluster(self) -> bool:
        """True when the clients are Redis Cluster clients."""
        return _is_cluster(self.client if self.client is not None else self.async_client)

    @property
    def retry_interval(self) -> float:
        """Seconds without Redis calls after an error."""
        return self._retry_interval

    @property
    def supports_sync(self) -> bool:
        """True when the store has a sync client."""
        return self._sync is not None

    def key(self, name: str) -> str:
        """``{prefix}:breaker:{digest}``: a fixed-length key that never holds the raw name.

        Any name (a hostname, a function name, spaces, newlines, ``*``,
        braces, 10 kB of it) gives a safe key; the braces make the digest
        the Redis Cluster hash tag.
        """
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return f"{self.prefix}:breaker:{{{digest}}}"

    # -- sync operations --------------------------------------------------------------

    def acquire(self, key: str, threshold: int, cooldown_ms: int) -> Admission:
        """Run the ``acquire`` script."""
        script = self._scripts_sync().acquire
        reply = script(keys=[key], args=self._acquire_args(threshold, cooldown_ms))
        return _decode(reply, _admission)

    def record(
        self,
        key: str,
        op: Op,
        ticket: int,
        *,
        threshold: int,
        cooldown_ms: int,
        name: str,
        opening: Opening | None = None,
    ) -> Report:
        """Run the ``record`` script."""
        script = self._scripts_sync().record
        args = _record_args(op, ticket, threshold, cooldown_ms, name, opening=opening)
        reply = script(keys=[key], args=args)
        return _decode(reply, _report)

    def reset(self, key: str, name: str) -> Report:
        """Run the ``reset`` script."""
        reply = self._scripts_sync().reset(keys=[key], args=[_ttl(0), _name_field(name)])
        return _decode(reply, _report)

    def force_open(self, key: str, cooldown_ms: int, name: str) -> Report:
        """Run the ``force_open`` script."""
        script = self._scripts_sync().force_open
        reply = script(keys=[key], args=[cooldown_ms, _ttl(cooldown_ms), _name_field(name)])
        return _decode(reply, _report)

    def snapshot(self, key: str) -> Snapshot:
        """A read-only script (the hash and the server's TIME): one round trip, no change."""
        return _decode(self._scripts_sync().snapshot(keys=[key]), _snapshot)

    # -- async operations -------------------------------------------------------------

    async def acquire_async(self, key: str, threshold: int, cooldown_ms: int) -> Admission:
        """:meth:`acquire` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(self.acquire, key, threshold, cooldown_ms)
        script = self._scripts_async().acquire
        reply = await script(keys=[key], args=self._acquire_args(threshold, cooldown_ms))
        return _decode(reply, _admission)

    async def record_async(
        self,
        key: str,
        op: Op,
        ticket: int,
        *,
        threshold: int,
        cooldown_ms: int,
        name: str,
        opening: Opening | None = None,
    ) -> Report:
        """:meth:`record` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(
                functools.partial(
                    self.record,
                    threshold=threshold,
                    cooldown_ms=cooldown_ms,
                    name=name,
                    opening=opening,
                ),
                key,
                op,
                ticket,
            )
        script = self._scripts_async().record
        reply = await script(
            keys=[key], args=_record_args(op, ticket, threshold, cooldown_ms, name, opening=opening)
        )
        return _decode(reply, _report)

    async def reset_async(self, key: str, name: str) -> Report:
        """:meth:`reset` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(self.reset, key, name)
        script = self._scripts_async().reset
        reply = await script(keys=[key], args=[_ttl(0), _name_field(name)])
        return _decode(reply, _report)

    async def force_open_async(self, key: str, cooldown_ms: int, name: str) -> Report:
        """:meth:`force_open` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(self.force_open, key, cooldown_ms, name)
        script = self._scripts_async().force_open
        reply = await script(keys=[key], args=[cooldown_ms, _ttl(cooldown_ms), _name_field(name)])
        return _decode(reply, _report)

    async def snapshot_async(self, key: str) -> Snapshot:
        """:meth:`snapshot` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(self.snapshot, key)
        reply = await self._scripts_async().snapshot(keys=[key])
        return _decode(reply, _snapshot)

    # -- internals --------------------------------------------------------------------

    def _acquire_args(self, threshold: int, cooldown_ms: int) -> list[int]:
        # "An expiry no longer than the cooldown", and never 0 (that would be no lease).
        lease = cooldown_ms if self.lease_ms is None else min(self.lease_ms, cooldown_ms)
        return [threshold, cooldown_ms, max(1, math.ceil(lease)), _ttl(cooldown_ms)]

    def _scripts_sync(self) -> _Scripts:
        scripts = self._sync
        if scripts is None:
            raise ConfigError(
                "this RedisStore has no sync client, and a sync call (or a call under trio, "
                "where redis.asyncio cannot run) needs one: pass a redis.Redis as the first "
                "argument or use RedisStore.from_url"
            )
        return scripts

    def _scripts_async(self) -> _Scripts:
        """The scripts on the running event loop's own async client.

        An asyncio connection, and the locks of a pool or a cluster client,
        belong to the loop that made them: a client shared by two loops
        running at once (two threads, each in ``asyncio.run``) hands one loop
        a future of the other, and the call waits for ever.  So each loop gets
        a client of its own: the one given serves one loop at a time (taken
        over, with its finished loop's connections forgotten, once that loop
        is closed or gone), and every other loop gets a client built from the
        same settings (:meth:`from_url`'s URL and options, or a copy of the
        given client's pool class and connection settings).  A loop's client
        is forgotten once the loop is closed (when another loop next comes).
        """
        scripts = self._async
        if scripts is None:
            raise ConfigError(
                "this RedisStore has no async client; pass async_client= or use RedisStore.from_url"
            )
        import asyncio  # noqa: PLC0415 - only on the asyncio path

        loop = asyncio.get_running_loop()
        with _loops_lock:
            mine = self._by_loop.get(loop)
            if mine is not None:
                return mine
            # A finished loop's client holds its loop (through its connections' streams),
            # so the weak key alone never lets go: drop closed loops' entries here.
            for finished in [other for other in self._by_loop if other.is_closed()]:
                gone = self._by_loop.pop(finished, None)
                if gone is not None and gone is not scripts:
                    _forget_connections(gone.client)
            owner = self._owner() if self._owner is not None else None
            if owner is None or owner.is_closed():
                # No running loop can use the given client any more: take it over, and
                # drop (without awaiting on the dead loop) what its last loop opened.
                if owner is not None:
                    self._by_loop.pop(owner, None)
                if self._owner is not None:
                    _forget_connections(scripts.client)
                self._owner = weakref.ref(loop)
                mine = scripts
            else:
                make = self._make_async or functools.partial(_clone_async, scripts.client)
                mine = _Scripts(make())
            self._by_loop[loop] = mine
            return mine

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        self._scripts_sync()  # fail with the ConfigError before starting a thread
        import trio  # noqa: PLC0415 - only under trio

        return await trio.to_thread.run_sync(functools.partial(fn, *args))

    # -- every breaker under the prefix (``python -m smoothapi status``) ---------------

    def breakers(self) -> list[BreakerStatus]:
        """Every breaker stored under this prefix, sorted by name; changes nothing.

        :meth:`survey` without the malformed entries (which it skips).
        """
        return self.survey().breakers

    def survey(self) -> Survey:
        """Every breaker stored under this prefix, sorted by name, and the malformed
        entries found beside them; changes nothing.

        For looking from outside the processes that use the breakers (their
        memory is out of reach there).  The keys are found with SCAN, never
        KEYS (which blocks the server while it walks the whole key space),
        page by page - in a Redis Cluster, on every primary; each page costs
        one pipelined round trip (per node in a cluster) in which a small
        read-only script per key reads the hash and the server's TIME
        together, so the time left open is measured on the clock the breaker
        itself runs on (in a cluster, that of the node holding the key).

        Each :class:`~smoothapi.storage.shared.BreakerStatus` holds the
        stored state, which is what the next call finds.  An OPEN breaker
        whose cooldown has passed still reads OPEN, with ``retry_after`` 0.0
        and ``probe_due`` set: its next call is admitted as the probe and
        moves it to HALF_OPEN.  A HALF_OPEN breaker has ``probe_in_flight``
        while a probe's lease is live, else ``probe_due``.  Missing fields
        read as the scripts read them (a fresh CLOSED breaker).  A breaker
        hash that holds nonsense (a state no script writes, a count that is
        not a number) is listed in ``malformed``, with what is wrong, and the
        others are read as usual.

        Like any SCAN, this is a survey rather than an atomic picture of the
        store: a breaker created or expired meanwhile may or may not be
        listed.  Keys under the prefix that are not breaker hashes are
        skipped.  Raises a ``redis.exceptions.RedisError`` (or ``OSError``)
        when the server cannot be read, and :class:`ConfigError` for a store
        with no sync client.
        """
        client = self._scripts_sync().client
        shape = re.compile(rf"{re.escape(self.prefix)}:breaker:\{{[0-9a-f]{{40}}\}}")
        match = f"{_glob_escape(self.prefix)}:breaker:*"
        seen: set[str] = set()  # SCAN may return a key twice
        page: list[str] = []
        found: list[BreakerStatus] = []
        malformed: list[MalformedBreaker] = []
        for raw in client.scan_iter(match=match, count=_SCAN_PAGE):
            key = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
            if key in seen or not shape.fullmatch(key):
                continue
            seen.add(key)
            page.append(key)
            if len(page) == _SCAN_PAGE:
                _read_breakers(client, page, found, malformed)
                page = []
        if page:
            _read_breakers(client, page, found, malformed)
        return Survey(
            sorted(found, key=_by_name), sorted(malformed, key=lambda m: (m.name or "", m.key))
        )


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


def _ttl(cooldown_ms: float) -> int:
    return max(_MIN_TTL_MS, math.ceil(10 * cooldown_ms))


def _name_field(name: str) -> bytes:
    return name[:_NAME_FIELD_CHARS].encode("utf-8", "backslashreplace")


def _record_args(
    op: Op, ticket: int, threshold: int, cooldown_ms: int, name: str, *, opening: Opening | None
) -> list[int | float | str | bytes]:
    if opening is None:
        return [op, ticket, threshold, cooldown_ms, _ttl(cooldown_ms), _name_field(name)]
    longest = max(cooldown_ms, opening.max_cooldown_ms)
    return [
        op,
        ticket,
        threshold,
        cooldown_ms,
        _ttl(longest),
        _name_field(name),
        repr(float(opening.multiplier)),
        opening.max_cooldown_ms,
        opening.reset_ms,
        repr(float(opening.rand)),
        -1 if opening.retry_after_ms is None else opening.retry_after_ms,
    ]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _admission(reply: Sequence[Any]) -> Admission:
    ticket, retry_ms, failures, state, changed = reply
    return Admission(
        int(ticket), int(retry_ms) / 1000.0, int(failures), CircuitState(_text(state)), changed == 1
    )


def _report(reply: Sequence[Any]) -> Report:
    state, old, failures = reply
    return Report(CircuitState(_text(state)), CircuitState(_text(old)), int(failures))


def _snapshot(reply: Sequence[Any]) -> Snapshot:
    now_ms, state, failures, open_until = reply
    current = CircuitState(_text(state))
    retry = 0.0
    if current is CircuitState.OPEN:
        retry = max(0.0, (float(_text(open_until)) - int(now_ms)) / 1000.0)
    return Snapshot(current, int(_text(failures)), retry)


def _decode(reply: Any, build: Callable[[Any], T]) -> T:
    try:
        return build(reply)
    except (ValueError, TypeError, IndexError) as exc:
        # Something else wrote the key (or a proxy mangled the reply): that one breaker
        # falls back to its in-process state; the store is not down for the others.
        raise MalformedState(f"unexpected reply from Redis for a breaker: {reply!r:.200}") from exc


# -- reading every breaker (RedisStore.breakers) -------------------------------------------

# Keys asked of SCAN per call (a hint), and read per pipelined round trip.
_SCAN_PAGE = 500

#: KEYS: one breaker -> {} when the key is gone or is not a hash, else
#: {now_ms, state, failures, open_until, lease_until, has_name, name}, with the defaults
#: ACQUIRE applies to missing fields (has_name 0 and name '' when there is none: a Lua nil
#: would end the array, and RESP3 would turn false into a boolean).  Read-only, one key
#: (so cluster-safe).
_READ_BREAKER = (
    """
local key = KEYS[1]
if redis.call('TYPE', key).ok ~= 'hash' then
  return {}
end
"""
    + lua._NOW
    + """
local h = redis.call('HMGET', key, 'state', 'failures', 'open_until', 'lease_until', 'name')
return {now, h[1] or 'CLOSED', h[2] or '0', h[3] or '0', h[4] or '0',
        h[5] and 1 or 0, h[5] or ''}
"""
)


def _read_breakers(
    client: Any, keys: list[str], found: list[BreakerStatus], malformed: list[MalformedBreaker]
) -> None:
    """The script above for each key: one pipelined round trip (one per node in a cluster)."""
    replies: dict[str, Any] = {}
    if _is_cluster(client):
        # A cluster client's pipeline cannot run scripts: pipeline on each node's own
        # connection instead, and ask the cluster client (which follows MOVED and ASK)
        # for the keys a node no longer holds (slots moving meanwhile).
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for key in keys:
            node = client.get_node_from_key(key)
            by_node.setdefault(node.name, (node, []))[1].append(key)
        for node, node_keys in by_node.values():
            pipe = client.get_redis_connection(node).pipeline(transaction=False)
            for key in node_keys:
                pipe.eval(_READ_BREAKER, 1, key)
            for key, answer in zip(node_keys, pipe.execute(raise_on_error=False), strict=True):
                moved = isinstance(answer, redis.exceptions.ResponseError)
                replies[key] = client.eval(_READ_BREAKER, 1, key) if moved else answer
    else:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(_READ_BREAKER, 1, key)
        replies = dict(zip(keys, pipe.execute(), strict=True))
    for key, reply in replies.items():
        if not reply:  # the key expired since SCAN saw it, or it is not a hash
            continue
        try:
            found.append(_breaker_status(key, reply))
        except (ValueError, TypeError, IndexError) as exc:
            malformed.append(MalformedBreaker(key, _stored_name(reply), str(exc)))


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _stored_name(reply: Sequence[Any]) -> str | None:
    try:
        has_name, name = reply[5], reply[6]
        if not int(has_name):
            return None
    except (ValueError, TypeError, IndexError):
        return None
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _field(name: str, value: Any, read: Callable[[str], T]) -> T:
    """``read(value)``, or a ValueError saying which field holds what."""
    text = _text(value)
    try:
        return read(text)
    except (ValueError, TypeError, OverflowError):
        shown = text[:40].encode("unicode_escape").decode("ascii")
        raise ValueError(f"field {name!r} holds {shown!r}, which no script writes") from None


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _breaker_status(key: str, reply: Sequence[Any]) -> BreakerStatus:
    now_ms, state, failures, open_until, lease_until, has_name, _ = reply
    now = int(now_ms)
    current = _field("state", state, CircuitState)
    count = _field("failures", failures, int)
    if count < 0:
        raise ValueError(f"field 'failures' holds {count}, which no script writes")
    retry_after, probe_due, probe_in_flight = 0.0, False, False
    if current is CircuitState.OPEN:
        left_ms = _field("open_until", open_until, _finite) - now
        retry_after = max(0.0, left_ms / 1000.0)
        probe_due = left_ms <= 0  # ACQUIRE rejects while now < open_until
    elif current is CircuitState.HALF_OPEN:
        probe_in_flight = _field("lease_until", lease_until, _finite) > now
        probe_due = not probe_in_flight
    return BreakerStatus(
        name=_stored_name(reply) if int(has_name) else None,
        key=key,
        state=current,
        failures=count,
        retry_after=retry_after,
        probe_due=probe_due,
        probe_in_flight=probe_in_flight,
    )


def _by_name(status: BreakerStatus) -> tuple[bool, str, str]:
    return (status.name is None, status.name or "", status.key)


def _check_db_path(url: str) -> None:
    """redis-py reads ``redis://host/abc`` as database 0 without a word: refuse it."""
    from urllib.parse import urlsplit  # noqa: PLC0415 - once per store

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # never echo the URL: it may hold a password
        raise ConfigError(
            f"RedisStore.from_url could not parse the URL: {redact(str(exc), url)}"
        ) from None
    if parts.scheme not in ("redis", "rediss"):
        return  # unix:// takes the database as ?db=
    path = parts.path.strip("/")
    if path and not path.isdigit():
        # Never the path itself: in a mistyped URL it may hold the password.
        raise ConfigError(
            "RedisStore.from_url: the URL's path names the database and must be a number, "
            "as in redis://host:6379/0 (the path is not shown: it may hold a password)"
        )


#: The schemes redis-py reads; each must be followed by ``//``.
_SCHEMES = ("redis", "rediss", "unix")
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*):")


def _check_scheme(url: str) -> None:
    """Refuse ``redis:/user:pw@host`` and the like: without ``//`` a parser reads the
    credentials as a path, which would reach messages and labels."""
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(1).lower() in _SCHEMES and not url.startswith("//", scheme.end()):
        raise ConfigError(
            f"RedisStore.from_url: the URL must start with {scheme.group(1).lower()}:// "
            "(two slashes after the scheme's ':'; the URL is not shown: it may hold a "
            "password)"
        )


def _credentials(url: str) -> str:
    """The part of ``url`` that may hold a user name and password, however mistyped:
    everything between the scheme's ``://`` (or its ``:`` and whatever slashes or
    backslashes follow it) and the last ``@``; from the start when the URL has no known
    scheme; ``''`` with no ``@``."""
    at = url.rfind("@")
    if at < 0:
        return ""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme and scheme.group(1).lower() in _SCHEMES else 0
    if at <= start:
        return ""
    if url.startswith("//", start):  # a third slash stays: it is refused as a '/' in there
        return url[start + 2 : at]
    return url[start:at].lstrip("/\\ \t")  # mistyped (refused by _check_scheme)


def redact(text: str, url: str) -> str:
    """``text`` with ``url``'s credentials part taken out.

    The credentials part (everything between the scheme's ``:`` and the last
    ``@``, with or without ``//``), and the user name and password in it, raw
    and percent-decoded, are replaced by ``***`` (a piece shorter than three
    characters only where it stands alone).  :func:`_check_credentials`
    has refused any URL whose credentials a parser could split in the wrong
    place, so these are the only pieces of them a parser's message can quote.
    """
    from urllib.parse import unquote  # noqa: PLC0415 - only on error paths

    secret = _credentials(url)
    if not secret:
        return text
    pieces = {secret, unquote(secret)}
    for raw in secret.split(":", 1):
        part = raw.strip("/\\")  # a separator alone is no secret
        pieces |= {part, unquote(part)}
    for piece in sorted((p for p in pieces if p), key=len, reverse=True):
        if len(piece) < 3:  # a user name "u": not the u of every "under" in the message
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(piece)}(?![A-Za-z0-9])", "***", text)
        else:
            text = text.replace(piece, "***")
    return text


def _check_credentials(url: str) -> None:
    """Refuse a ``redis``/``rediss``/``unix`` URL without ``//`` after its scheme, or
    whose credentials part holds an unencoded ``/``, ``?`` or ``#``.

    A URL parser ends the host at the first of them, so such a URL would be
    read with part of the password as the host, the path or the fragment: a
    wrong host, a database "number" that is a piece of the password - or, for
    ``#``, a connection to localhost with half the password.
    """
    _check_scheme(url)
    scheme = _SCHEME.match(url)
    if not scheme or scheme.group(1).lower() not in _SCHEMES:
        return  # refused by redis-py, whose message does not quote the URL
    if any(ch in _credentials(url) for ch in "/?#"):
        raise ConfigError(
            "RedisStore.from_url: the URL's user name or password holds a '/', '?' or '#' "
            "that is not percent-encoded, so the URL cannot be read unambiguously (the URL "
            "is not shown: it may hold a password). Percent-encode the password, e.g. "
            "urllib.parse.quote(password, safe=''), or pass it as password=...; if the '@' "
            "belongs to the path or the query, write it as %40."
        )


def _is_cluster(client: Any) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))
