"""RedisStore's async operations: the scripts of :mod:`smoothapi.storage.lua` run with the
running event loop's async client, or under trio with the sync client in a worker thread
(redis.asyncio runs only under asyncio).  Imported by :mod:`smoothapi.storage.redis` once
redis-py is known to be installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .._runtime import running_trio as _running_trio
from ._redis_clients import _Scripts
from ._redis_replies import (
    _admission,
    _decode,
    _name_field,
    _record_args,
    _report,
    _snapshot,
    _snapshot_args,
    _ttl,
)
from .protocol import Admission, Batch, Op, Opening, Report, Snapshot, TripRules

__all__ = ["AsyncOperations"]

T = TypeVar("T")


class AsyncOperations:
    """The ``*_async`` half of :class:`~smoothapi.RedisStore` (a base class of it)."""

    __slots__ = ()

    # What RedisStore provides.
    acquire: Callable[..., Admission]
    record: Callable[..., Report]
    reset: Callable[..., Report]
    force_open: Callable[..., Report]
    snapshot: Callable[..., Snapshot]

    def _scripts_async(self) -> _Scripts:
        raise NotImplementedError

    def _acquire_args(
        self,
        threshold: int,
        cooldown_ms: int,
        rules: TripRules | None = None,
        batch: Batch | None = None,
    ) -> list[Any]:
        raise NotImplementedError

    def _with_now(self, args: list[Any], pad_to: int = 0) -> list[Any]:
        raise NotImplementedError

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def acquire_async(
        self,
        key: str,
        threshold: int,
        cooldown_ms: int,
        *,
        rules: TripRules | None = None,
        batch: Batch | None = None,
    ) -> Admission:
        """:meth:`acquire` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            call = functools.partial(self.acquire, rules=rules, batch=batch)
            return await self._in_thread(call, key, threshold, cooldown_ms)
        script = self._scripts_async().acquire
        args = self._acquire_args(threshold, cooldown_ms, rules, batch)
        return _decode(await script(keys=[key], args=args), _admission)

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
        rules: TripRules | None = None,
        batch: Batch | None = None,
    ) -> Report:
        """:meth:`record` with the async client (the sync one in a thread under trio)."""
        options = {"opening": opening, "rules": rules, "batch": batch}
        if _running_trio():
            call = functools.partial(
                self.record, threshold=threshold, cooldown_ms=cooldown_ms, name=name, **options
            )
            return await self._in_thread(call, key, op, ticket)
        script = self._scripts_async().record
        args = _record_args(op, ticket, threshold, cooldown_ms, name, **options)  # type: ignore[arg-type]
        return _decode(await script(keys=[key], args=self._with_now(args)), _report)

    async def reset_async(self, key: str, name: str) -> Report:
        """:meth:`reset` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(self.reset, key, name)
        script = self._scripts_async().reset
        reply = await script(keys=[key], args=self._with_now([_ttl(0), _name_field(name)]))
        return _decode(reply, _report)

    async def force_open_async(self, key: str, cooldown_ms: int, name: str) -> Report:
        """:meth:`force_open` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(self.force_open, key, cooldown_ms, name)
        script = self._scripts_async().force_open
        reply = await script(
            keys=[key], args=self._with_now([cooldown_ms, _ttl(cooldown_ms), _name_field(name)])
        )
        return _decode(reply, _report)

    async def snapshot_async(
        self, key: str, *, rules: TripRules | None = None, batch: Batch | None = None
    ) -> Snapshot:
        """:meth:`snapshot` with the async client (the sync one in a thread under trio)."""
        if _running_trio():
            return await self._in_thread(
                functools.partial(self.snapshot, rules=rules, batch=batch), key
            )
        args = self._with_now(_snapshot_args(rules, batch))
        reply = await self._scripts_async().snapshot(keys=[key], args=args)
        return _decode(reply, _snapshot)
