"""What crosses the wire to the scripts of :mod:`smoothapi.storage.lua`: their arguments,
and their replies decoded into the store protocol's values.

A reply that does not decode (a state no script writes, a count that is not
a number: something else wrote the key, or a proxy mangled the reply) raises
:class:`~smoothapi.storage.protocol.MalformedState`, which takes that one
breaker off the store; the store stays up for the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..breaker import CircuitState
from .protocol import Admission, MalformedState, Op, Opening, Report, Snapshot

T = TypeVar("T")

# An abandoned breaker's key lives at least a day after its last write.
_MIN_TTL_MS = 24 * 60 * 60 * 1000
# The readable name kept beside the state is for humans; the key never holds it.
_NAME_FIELD_CHARS = 1024


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
