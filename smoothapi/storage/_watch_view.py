"""A shared breaker's local view: the happy path that asks the store nothing.

With a store that publishes its state changes (``RedisStore``: see
:mod:`smoothapi.storage._watch`), a breaker whose last store reply said
CLOSED with no failure counted (for the failure-rate rule: CLOSED) sets
``clean_ticket`` to that CLOSED period's ticket while this process's
watcher is subscribed, so the mount points make the call without asking
the store, and ``admit`` answers from it too.  Any change that makes the
breaker not clean is published by the script that makes it, and the
watcher zeroes the clean ticket; a failure this process reports zeroes it
at once.  While the watcher is not subscribed, ``admit`` answers from the
last clean reply for at most ``store.sync_interval`` seconds before asking
again (the bounded-staleness fallback).  The state-changing decisions are
still each one script on the store: a failure is reported at once, and
its reply is the breaker's new view.  With the rate rule, a success on the
clean ticket is batched (see "Trip rules"); once the batch holds
:data:`~smoothapi.storage._shared_trip.BATCH_MAX` successes or is a
window bucket (``window_ms / 10``) old, the clean ticket is zeroed so the
next call's ``acquire`` carries it.  Other stores (and a RedisStore with
only an async client) publish nothing: ``clean_ticket`` stays 0 and every
call is asked, as before.

A base class of :class:`~smoothapi.storage.shared.SharedCircuitBreaker` (which
provides the attributes below); the watcher is :mod:`smoothapi.storage._watch`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..breaker import CircuitState
from . import _watch
from ._shared_trip import Batcher

__all__ = ["LocalView"]

CLOSED = CircuitState.CLOSED


class LocalView:
    """``settle`` and the clean ticket's bookkeeping of a shared breaker."""

    __slots__ = ()

    clean_ticket: int
    _batch: Batcher
    _flush_after: float
    _fresh: int
    _fresh_until: float
    _rate: bool
    _slow: float | None

    if TYPE_CHECKING:  # the breaker's own (this class comes first in its bases)

        def now(self) -> float: ...

        def record_success(self, ticket: int, elapsed: float | None = None) -> CircuitState: ...

    def settle(self, ticket: int, began: float | None = None) -> CircuitState:
        """A happy-path success under ``ticket``, the clean ticket the mount point read
        (``began``: when the attempt started, on this breaker's clock, for
        ``slow_call_ms``): nothing to send unless it was slow, the ticket moved, or a
        rate breaker's batch of successes is due (then the next call sends it)."""
        slow = self._slow
        if slow is not None and began is not None:
            elapsed = self.now() - began
            if elapsed > slow:
                return self.record_success(ticket, elapsed)
        if ticket and ticket == self.clean_ticket:
            if self._rate:
                self._count(ticket)
            return CLOSED
        return self.record_success(ticket)

    def _count(self, ticket: int) -> None:
        """Batch one success of an ordinary call; once the batch is due, the next call
        asks the store (and its ``acquire`` carries the batch)."""
        if self._batch.add(ticket, self._flush_after):
            self._unclean()

    def _learn(self, period: int, watcher: _watch.Watcher | _watch._NoWatch, seq: int) -> None:
        """The store just said CLOSED and clean in ``period``: the happy path may take it,
        unless the watcher heard anything (``seq`` moved) since the store call began."""
        interval = watcher.interval
        if not interval:
            return  # a store without push: every call asks, as before
        self._fresh = period  # type: ignore[misc]  # slots of the breaker
        self._fresh_until = time.monotonic() + interval  # type: ignore[misc]
        if watcher.subscribed and watcher.seq == seq:
            self.clean_ticket = period  # type: ignore[misc]
        if watcher.seq != seq:  # a message came as we set it: ask again next time
            self._unclean()

    def _unclean(self) -> None:
        self.clean_ticket = 0  # type: ignore[misc]  # slots of the breaker
        self._fresh_until = 0.0  # type: ignore[misc]
