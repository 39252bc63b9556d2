"""The shared breaker's two drivers: a flow (one operation, written once as a generator
of store calls; see :mod:`smoothapi.storage.shared`) run with the store's sync client or
its async one, each store call guarded so that a failing store makes the breaker local
rather than fail the call.  A base class of
:class:`~smoothapi.storage.shared.SharedCircuitBreaker`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NamedTuple, TypeVar

from ..errors import ConfigError
from ..events import Hook
from . import outage
from ._shared_trip import Batcher
from .protocol import Admission, BreakerStore, MalformedState, TripRules

__all__ = ["Flow", "FlowDriver"]

T = TypeVar("T")

# The store calls that carry the trip rules and this process's batched successes.
_BATCHED = frozenset({"acquire", "record", "snapshot"})


class _Ask(NamedTuple):
    """A store call a flow needs: ``store.<method>(*args, **options)`` (or its ``_async``)."""

    method: str
    args: tuple[Any, ...]
    options: dict[str, Any] | None = None


#: An operation: yields the store calls it needs, is sent their replies (None: the store
#: is down or failed), returns its result.
Flow = Generator[_Ask, Any, T]


class FlowDriver:
    """Runs flows against ``store`` (the shared breaker provides the attributes below)."""

    __slots__ = ()

    name: str
    store: BreakerStore
    _batch: Batcher
    _health: outage.Health
    _hooks: tuple[Hook, ...]
    _key: str
    _malformed: bool
    _rate: bool
    _store_rules: TripRules | None

    def release_async(self, ticket: int) -> Coroutine[Any, Any, Any]:
        raise NotImplementedError

    def _run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` with the store's sync client."""
        try:
            ask = next(flow)
            while True:
                ask = flow.send(self._ask(ask))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _run_async(self, flow: Flow[T]) -> T:
        """Drive ``flow`` with the store's async client; a store call runs to its end even
        if the caller is cancelled (see :func:`outage.shielded`)."""
        try:
            ask = next(flow)
            while True:
                ask = flow.send(await self._ask_async(ask))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _ask(self, ask: _Ask) -> Any:
        """One store call, or None (no exception) when the store is down or fails."""
        if not self._may_call():
            return None
        try:
            result = getattr(self.store, ask.method)(*ask.args, **self._options(ask))
        except Exception as exc:
            self._unavailable(exc)
            return None
        outage.store_recovered(self._health, self.store, self._hooks)
        return result

    async def _ask_async(self, ask: _Ask) -> Any:
        """:meth:`_ask` with the async client."""
        if not self._may_call():
            return None
        call = functools.partial(
            getattr(self.store, ask.method + "_async"), *ask.args, **self._options(ask)
        )
        orphan = _orphaned_admission(self) if ask.method == "acquire" else None
        result, error = await outage.shielded(functools.partial(outage.caught, call), orphan)
        if error is not None:
            self._unavailable(error)
            return None
        outage.store_recovered(self._health, self.store, self._hooks)
        return result

    def _options(self, ask: _Ask) -> dict[str, Any]:
        """The keywords of a store call: with a ``trip_rules`` store, ``acquire``,
        ``record`` and ``snapshot`` also take the rules and this process's batch."""
        options = ask.options or {}
        rules = self._store_rules
        if rules is None or ask.method not in _BATCHED:
            return options
        return {**options, "rules": rules, "batch": self._batch.take() if self._rate else None}

    # -- store health ----------------------------------------------------------------

    def _may_call(self) -> bool:
        health = self._health
        return health.down_since is None or health.claim_retry(self.store.retry_interval)

    def _unavailable(self, error: Exception) -> None:
        """The store raised: an outage, unless it is a misuse no retry will fix.

        Not only the errors a store declares: a client library raises more
        (redis-py: ``RedisClusterException``, ``AttributeError`` for a server
        that answers its handshake with nonsense, ``RuntimeError`` for a closed
        event loop...), and a breaker must never fail a call because of its
        store.  :class:`ConfigError` (no sync client, say) reaches the caller;
        :class:`MalformedState` (only this breaker's entry is bad) makes this
        breaker local with one WARNING while the store stays up for the others.
        """
        if isinstance(error, ConfigError):
            raise error
        if isinstance(error, MalformedState):
            if not self._malformed:
                self._malformed = True  # type: ignore[misc]  # a slot of the breaker
                outage.entry_malformed(self.name, self._key, self.store, error)
            return
        outage.store_failed(self._health, self.store, error, self._hooks)


def _orphaned_admission(
    breaker: FlowDriver,
) -> Callable[[tuple[Admission | None, Exception | None]], None]:
    """What to do with an admission whose ``admit_async()`` was cancelled while the store
    answered: give back a probe it claimed at once, rather than leave the fleet waiting for
    the lease."""

    def orphaned(outcome: tuple[Admission | None, Exception | None]) -> None:
        admission = outcome[0]
        if admission is not None and outage.is_probe(admission[0]):
            outage.in_background(breaker.release_async(admission[0]))

    return orphaned
