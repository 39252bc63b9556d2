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

import functools
import hashlib
import math
from collections.abc import Callable
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

from .._validate import number as _number
from ..errors import ConfigError, ConfigTypeError
from . import _watch
from ._redis_async import AsyncOperations
from ._redis_clients import _describe, _is_async_client, _is_cluster, _LoopClients, _Scripts
from ._redis_replies import (
    _acquire_args,
    _admission,
    _decode,
    _name_field,
    _record_args,
    _report,
    _snapshot,
    _snapshot_args,
    _ttl,
)
from ._redis_survey import survey as _survey
from ._redis_url import check_url, redact
from .protocol import (
    Admission,
    Batch,
    BreakerStatus,
    Op,
    Opening,
    Report,
    Snapshot,
    Survey,
    TripRules,
)

__all__ = ["RedisStore", "redact"]

T = TypeVar("T")

# The longest open time the scripts hold exactly (about 31 years): the server's clock
# plus it stays far inside the 2**53 of Lua's numbers, and ten times it (the key's
# expiry) inside PEXPIRE's range.
_MAX_OPEN_MS = 10**12
# ACQUIRE's arguments with the optional rules block (see smoothapi.storage.lua).
_ACQUIRE_ARGS = 10


class RedisStore(AsyncOperations):
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
    * ``sync_interval`` - the staleness bound (seconds, default 1.0) when the
      push channel is down.  A breaker that last heard CLOSED and clean calls
      without asking Redis while this process's watcher is subscribed to
      ``{prefix}:breaker-events`` (every state change is published there);
      while it is not (a dropped connection, a restart), a breaker answers from
      its last reply for at most ``sync_interval`` before asking again.  The
      watcher also PINGs every ``sync_interval`` to notice a silently dead
      connection.

    Authentication and TLS are whatever the clients are configured with;
    logs and events name the store by ``host:port/db`` only.
    """

    #: Grows the open time as the memory breaker does (see ``shared.Opening``).
    adaptive = True
    #: Applies the failure-rate window, slow calls and several probes fleet-wide (see
    #: ``protocol.TripRules`` and :mod:`smoothapi.storage.lua`).
    trip_rules = True
    #: The longest open time (``cooldown_ms``, ``max_cooldown_ms``, ``force_open``) the
    #: scripts hold exactly, about 31 years: a breaker asking for more is refused when
    #: it is built.
    max_open_ms = _MAX_OPEN_MS
    # Tests only (tests/storage/test_differential.py): a subclass that sets this runs the
    # scripts with `now` (milliseconds) from it instead of the server's TIME.
    _now_ms: Callable[[], int] | None = None

    def __init__(
        self,
        client: Any = None,
        *,
        async_client: Any = None,
        prefix: str = "smoothapi",
        retry_interval: float = 1.0,
        lease_ms: float | None = None,
        sync_interval: float = 1.0,
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
        sync_interval = _number("RedisStore", "sync_interval", sync_interval)
        if not 0 < sync_interval <= 60:
            raise ConfigError(
                f"RedisStore.sync_interval must be > 0 and <= 60 seconds, got {sync_interval!r}"
            )
        self.sync_interval = sync_interval
        clocked = self._now_ms is not None
        self._sync = None if sync_client is None else _Scripts(sync_client, caller_clock=clocked)
        # The async client for each running event loop: the one given serves one loop at
        # a time, the others get a client of their own.
        self._loops = None
        if async_client is not None:
            given = _Scripts(async_client, caller_clock=clocked)
            self._loops = _LoopClients(given, caller_clock=clocked)
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
        sync_interval: float = 1.0,
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
        check_url(url)
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
            sync_interval=sync_interval,
        )

        def another_async_client() -> Any:  # for an event loop other than the first one
            retry = redis.asyncio.retry.Retry(
                NoBackoff(), 1, supported_errors=(RedisConnectionError,)
            )
            return async_class.from_url(url, **{"retry": retry, **options})

        if store._loops is not None:
            store._loops.make = another_async_client
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._label!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        """Close the sync client's connections (e.g. a store built by :meth:`from_url`) and
        stop this process's watcher of the store's breaker events (its breakers then ask
        the store again, at most every ``sync_interval`` while their last reply was clean)."""
        if self.client is not None:
            _watch.stop(self)
            self.client.close()

    async def aclose(self) -> None:
        """Close the sync client's connections and the running event loop's async client's.

        Each event loop that uses the store has an async client of its own
        (see :meth:`_scripts_async`): call ``aclose()`` from each loop before
        it ends, or its connections are only collected, not closed.
        """
        self.close()
        if self._loops is None:
            return
        scripts = self._scripts_async()  # forgets connections a finished loop opened
        self._loops.forget_running(scripts)
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
    def events_channel(self) -> str:
        """Where the scripts publish breaker state changes (``{prefix}:breaker-events``)."""
        return f"{self.prefix}:breaker-events"

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

    def acquire(
        self,
        key: str,
        threshold: int,
        cooldown_ms: int,
        *,
        rules: TripRules | None = None,
        batch: Batch | None = None,
    ) -> Admission:
        """Run the ``acquire`` script."""
        script = self._scripts_sync().acquire
        reply = script(keys=[key], args=self._acquire_args(threshold, cooldown_ms, rules, batch))
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
        rules: TripRules | None = None,
        batch: Batch | None = None,
    ) -> Report:
        """Run the ``record`` script."""
        script = self._scripts_sync().record
        args = _record_args(
            op, ticket, threshold, cooldown_ms, name, opening=opening, rules=rules, batch=batch
        )
        reply = script(keys=[key], args=self._with_now(args))
        return _decode(reply, _report)

    def reset(self, key: str, name: str) -> Report:
        """Run the ``reset`` script."""
        reply = self._scripts_sync().reset(
            keys=[key], args=self._with_now([_ttl(0), _name_field(name)])
        )
        return _decode(reply, _report)

    def force_open(self, key: str, cooldown_ms: int, name: str) -> Report:
        """Run the ``force_open`` script."""
        script = self._scripts_sync().force_open
        reply = script(
            keys=[key], args=self._with_now([cooldown_ms, _ttl(cooldown_ms), _name_field(name)])
        )
        return _decode(reply, _report)

    def snapshot(
        self, key: str, *, rules: TripRules | None = None, batch: Batch | None = None
    ) -> Snapshot:
        """A script that reads the hash and the server's TIME (one round trip) and changes
        nothing but adding ``batch`` to the window."""
        args = self._with_now(_snapshot_args(rules, batch))
        reply = self._scripts_sync().snapshot(keys=[key], args=args)
        return _decode(reply, _snapshot)

    # -- internals --------------------------------------------------------------------

    def _acquire_args(
        self,
        threshold: int,
        cooldown_ms: int,
        rules: TripRules | None = None,
        batch: Batch | None = None,
    ) -> list[Any]:
        # "An expiry no longer than the cooldown", and never 0 (that would be no lease).
        lease = cooldown_ms if self.lease_ms is None else min(self.lease_ms, cooldown_ms)
        lease_ms = max(1, math.ceil(lease))
        args = _acquire_args(threshold, cooldown_ms, lease_ms, rules, batch)
        return self._with_now(args, _ACQUIRE_ARGS)

    def _with_now(self, args: list[Any], pad_to: int = 0) -> list[Any]:
        """``args``, then the caller's clock for a store that has one (tests only), after
        ``pad_to`` arguments so that it never stands where an optional one would."""
        if self._now_ms is not None:
            args += [""] * (pad_to - len(args))
            args.append(self._now_ms())
        return args

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
        """The scripts on the running event loop's own async client (see ``_LoopClients``)."""
        if self._loops is None:
            raise ConfigError(
                "this RedisStore has no async client; pass async_client= or use RedisStore.from_url"
            )
        return self._loops.running()

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
        return _survey(self._scripts_sync().client, self.prefix)
