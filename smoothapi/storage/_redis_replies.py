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

from ..breaker import CircuitState, WindowCounts
from .protocol import (
    Admission,
    Batch,
    MalformedState,
    Op,
    Opening,
    Report,
    Snapshot,
    Trip,
    TripRules,
)

T = TypeVar("T")

# An abandoned breaker's key lives at least a day after its last write.
_MIN_TTL_MS = 24 * 60 * 60 * 1000
# The readable name kept beside the state is for humans; the key never holds it.
_NAME_FIELD_CHARS = 1024


def _ttl(cooldown_ms: float) -> int:
    return max(_MIN_TTL_MS, math.ceil(10 * cooldown_ms))


def _name_field(name: str) -> bytes:
    return name[:_NAME_FIELD_CHARS].encode("utf-8", "backslashreplace")


def _window_ms(rules: TripRules | None) -> float:
    """How long the key must outlive its last write for the rules' window: 0 without one."""
    return 0 if rules is None or rules.failure_rate is None else rules.window_ms


def _rules_args(rules: TripRules | None, batch: Batch | None) -> list[int | str]:
    """The scripts' rules block: rate ('' for none), window_ms, minimum_calls,
    half_open_calls, the batch's period and successes ('' for none)."""
    if rules is None:
        block: list[int | str] = ["", "", "", ""]
    else:
        rate = rules.failure_rate
        window = rules.window_ms
        block = [
            "" if rate is None else repr(float(rate)),
            str(window) if isinstance(window, int) else repr(float(window)),
            rules.minimum_calls,
            rules.half_open_calls,
        ]
    if batch is None or batch.successes <= 0:
        return [*block, "", ""]
    return [*block, batch.period, batch.successes]


def _acquire_args(
    threshold: int, cooldown_ms: int, lease_ms: int, rules: TripRules | None, batch: Batch | None
) -> list[int | str]:
    ttl = _ttl(max(cooldown_ms, _window_ms(rules)))
    if rules is None and batch is None:  # the seed's rule: the arguments before the trip rules
        return [threshold, cooldown_ms, lease_ms, ttl]
    return [threshold, cooldown_ms, lease_ms, ttl, *_rules_args(rules, batch)]


def _snapshot_args(rules: TripRules | None, batch: Batch | None) -> list[int | str]:
    return [*_rules_args(rules, batch), _ttl(_window_ms(rules))]


def _record_args(
    op: Op,
    ticket: int,
    threshold: int,
    cooldown_ms: int,
    name: str,
    *,
    opening: Opening | None,
    rules: TripRules | None = None,
    batch: Batch | None = None,
) -> list[int | float | str | bytes]:
    longest = max(cooldown_ms, _window_ms(rules))
    args: list[int | float | str | bytes] = [op, ticket, threshold, cooldown_ms]
    if opening is None:
        args += [_ttl(longest), _name_field(name), "", "", "", "", ""]
    else:
        args += [
            _ttl(max(longest, opening.max_cooldown_ms)),
            _name_field(name),
            repr(float(opening.multiplier)),
            opening.max_cooldown_ms,
            opening.reset_ms,
            repr(float(opening.rand)),
            -1 if opening.retry_after_ms is None else opening.retry_after_ms,
        ]
    return args + _rules_args(rules, batch)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _tail(failures: int, tail: Sequence[Any]) -> tuple[Trip | None, WindowCounts | None]:
    """The six elements every reply ends with (see :mod:`smoothapi.storage.lua`); none
    for ACQUIRE's happy path without the rate rule."""
    if not tail:
        return None, None
    why, slow, calls, window_calls, window_failed, window_slow = tail
    trip = Trip(_text(why), failures, int(slow), int(calls))
    if int(window_calls) < 0:
        return trip, None
    return trip, WindowCounts(int(window_calls), int(window_failed), int(window_slow))


def _admission(reply: Sequence[Any]) -> Admission:
    ticket, retry_ms, failures, state, changed, *tail = reply
    count = int(failures)
    trip, window = _tail(count, tail)
    return Admission(
        int(ticket),
        int(retry_ms) / 1000.0,
        count,
        CircuitState(_text(state)),
        changed == 1,
        trip,
        window,
    )


def _report(reply: Sequence[Any]) -> Report:
    state, old, failures, *tail = reply
    count = int(failures)
    return Report(CircuitState(_text(state)), CircuitState(_text(old)), count, *_tail(count, tail))


def _snapshot(reply: Sequence[Any]) -> Snapshot:
    now_ms, state, failures, open_until, *tail = reply
    current = CircuitState(_text(state))
    retry = 0.0
    if current is CircuitState.OPEN:
        retry = max(0.0, (float(_text(open_until)) - int(now_ms)) / 1000.0)
    count = int(_text(failures))
    trip, window = _tail(count, tail)
    if window is not None and current is CircuitState.CLOSED:
        count = window.failures  # the rate rule counts its failures in the window
    return Snapshot(current, count, retry, trip, window)


def _decode(reply: Any, build: Callable[[Any], T]) -> T:
    try:
        return build(reply)
    except (ValueError, TypeError, IndexError) as exc:
        # Something else wrote the key (or a proxy mangled the reply): that one breaker
        # falls back to its in-process state; the store is not down for the others.
        raise MalformedState(f"unexpected reply from Redis for a breaker: {reply!r:.200}") from exc
