"""The push half of a shared breaker's happy path: one watcher per store and process.

A :class:`~smoothapi.storage.shared.SharedCircuitBreaker` whose last store reply
said CLOSED and clean hands out its CLOSED period's ticket as ``clean_ticket``, and
the mount points then call without asking the store at all.  That is only safe while
someone tells the process when the breaker stops being clean.  The store's scripts
PUBLISH every such change on ``<prefix>:breaker-events`` (see
:mod:`smoothapi.storage.lua`); the :class:`Watcher` of that store in this process
listens, and zeroes the clean ticket of every live breaker of the key it hears
about, so their next call asks the store again.

* One daemon thread per store and process, started by the first shared breaker that
  asks for it, with its own connection (redis-py's PubSub takes one from the sync
  client's pool; in a cluster, from one node: PUBLISH reaches every node).
* ``subscribed`` is True only between the server's confirmation of the subscription
  and the first sign of trouble.  A breaker hands out a clean ticket only while it is
  True, and only if no message and no disconnect came (``seq`` moved) between the
  store call it learnt from and the moment it sets the ticket.
* A dropped connection (a Redis restart, ``CLIENT KILL TYPE pubsub``, a network
  error) zeroes every clean ticket of the store, then the watcher reconnects with
  backoff; a PubSub that reconnected by itself (redis-py's retry) is noticed by the
  second confirmation and handled the same way, since messages sent meanwhile were
  lost.  A silent dead connection is noticed by a PING every ``sync_interval``
  whose answer does not come back by the next one.  While the watcher is not
  subscribed, breakers use the bounded-staleness fallback (``sync_interval``); each
  (re)subscription ends every breaker's fallback, since what was published before it
  may have been lost.
* A forked child starts with no watcher and every clean ticket 0 (the thread did
  not survive the fork); its breakers start a new one at their next call.
* A store with no sync client (async-only) gets no watcher: its breakers keep
  one store round trip per call.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Any, Protocol

from .._runtime import at_fork_child
from ..events import logger as smoothapi_logger

__all__ = ["NO_WATCH", "Watcher", "stop", "watch"]

_log = smoothapi_logger()  # the library's logger, with its NullHandler


class _Clean(Protocol):
    """What the watcher zeroes: a shared breaker's happy-path state."""

    clean_ticket: int
    _fresh_until: float
    _key: str


class Watcher:
    """Listens to one store's breaker events for this process (see the module docstring)."""

    __slots__ = (
        "__weakref__",
        "_by_key",
        "_lock",
        "_stop",
        "_thread",
        "channel",
        "client",
        "interval",
        "seq",
        "store",
        "subscribed",
    )

    def __init__(self, store: object, client: Any, channel: str, interval: float) -> None:
        # Weakly: a store nobody holds any more stops its watcher (see _run).
        self.store = weakref.ref(store)
        self.client = client
        self.channel = channel
        self.interval = interval
        self.subscribed = False
        # Moves on every message and every disconnect: a breaker that saw it move while
        # its store call ran does not hand out a clean ticket from that reply.
        self.seq = 0
        self._by_key: dict[str, weakref.WeakSet[Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, breaker: _Clean) -> None:
        """Zero ``breaker``'s clean ticket whenever its key changes; starts the thread."""
        with self._lock:
            self._by_key.setdefault(breaker._key, weakref.WeakSet()).add(breaker)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"smoothapi-watch {self.channel}", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Stop listening (tests; a store's watcher otherwise lives as long as the process)."""
        self._stop.set()
        self._lost()

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        warned = False  # about a missing channel permission, once per watcher
        while not self._stop.is_set() and self.store() is not None:
            try:
                self._listen()
                backoff = 0.05
            except Exception as exc:  # any client error: the channel is down
                refused = type(exc).__name__ == "NoPermissionError" or "NOPERM" in str(exc)
                if refused and not warned:
                    warned = True
                    _log.warning(
                        "cannot subscribe to %s (%s: the Redis user needs access "
                        "to that channel); meanwhile shared breakers ask Redis at least every "
                        "%gs",
                        self.channel,
                        type(exc).__name__,
                        self.interval,
                    )
                else:
                    _log.debug("breaker events channel %s down: %r", self.channel, exc)
            self._lost()
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, max(0.05, self.interval))

    def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            confirmed = 0
            ping_at = time.monotonic() + self.interval
            pongs_due = 0
            while not self._stop.is_set() and self.store() is not None:
                message = pubsub.get_message(timeout=min(0.25, self.interval / 2))
                now = time.monotonic()
                if message is not None:
                    kind = message.get("type")
                    if kind == "subscribe":
                        confirmed += 1
                        if confirmed > 1:  # redis-py reconnected by itself: we missed some
                            return
                        # What was published while nobody listened is lost: the
                        # breakers that answered from the fallback ask again now.
                        self._zero_all()
                        self.subscribed = True
                    elif kind == "message":
                        self._heard(message.get("data"))
                    elif kind == "pong":
                        pongs_due = 0
                if now >= ping_at:
                    if pongs_due:  # the last PING was never answered: a dead connection
                        return
                    pubsub.ping()
                    pongs_due = 1
                    ping_at = now + self.interval
        finally:
            self.subscribed = False
            with contextlib.suppress(Exception):  # closing a broken connection may fail
                pubsub.close()

    def _heard(self, data: Any) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        key = str(data).partition(" ")[0]
        self.seq += 1
        with self._lock:
            breakers = list(self._by_key.get(key, ()))
        for breaker in breakers:
            breaker.clean_ticket = 0
            breaker._fresh_until = 0.0

    def _lost(self) -> None:
        """Not subscribed (any more): every breaker of the store asks at its next call."""
        self.subscribed = False
        self._zero_all()

    def _zero_all(self) -> None:
        self.seq += 1
        with self._lock:
            groups = [list(group) for group in self._by_key.values()]
            self._by_key = {key: group for key, group in self._by_key.items() if group}
        for group in groups:
            for breaker in group:
                breaker.clean_ticket = 0
                breaker._fresh_until = 0.0


class _NoWatch:
    """A store without push (no sync client, or not a RedisStore): never subscribed."""

    __slots__ = ()
    subscribed = False
    seq = 0
    interval = 0.0

    def add(self, breaker: _Clean) -> None:
        pass


NO_WATCH = _NoWatch()

_watchers: weakref.WeakKeyDictionary[Any, Watcher] = weakref.WeakKeyDictionary()
_watchers_lock = threading.Lock()


@at_fork_child
def _after_fork_in_child() -> None:
    global _watchers_lock
    _watchers_lock = threading.Lock()
    _watchers.clear()  # their threads did not survive the fork


def stop(store: object) -> None:
    """Stop ``store``'s watcher in this process, if it has one (``RedisStore.close``): every
    clean ticket of the store is zeroed, and no new one is handed out."""
    with _watchers_lock:
        try:
            watcher = _watchers.pop(store, None)
        except TypeError:
            return
    if watcher is not None:
        watcher.close()


def watch(store: object) -> Watcher | _NoWatch:
    """The watcher of ``store`` in this process (made on first use), or :data:`NO_WATCH`
    for a store that publishes no events or has no sync client to listen with."""
    channel = getattr(store, "events_channel", None)
    client = getattr(store, "client", None)
    if not isinstance(channel, str) or client is None:
        return NO_WATCH
    with _watchers_lock:
        try:
            watcher = _watchers.get(store)
            if watcher is None:
                interval = float(getattr(store, "sync_interval", 1.0))
                watcher = _watchers[store] = Watcher(store, client, channel, interval)
        except TypeError:  # not weak-referenceable: no push
            return NO_WATCH
    return watcher
