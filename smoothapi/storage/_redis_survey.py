"""Reading every breaker a RedisStore holds (``RedisStore.survey()``, ``smoothapi status``).

Read-only: SCAN for the keys under the prefix (never KEYS), then a small
script per key that reads the hash and the server's TIME together, one
pipelined round trip per page (per node in a cluster).  Imported by
:mod:`smoothapi.storage.redis` once redis-py is known to be installed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from .. import machine
from ..breaker import CircuitState, WindowCounts
from . import lua
from ._redis_clients import _is_cluster
from ._redis_replies import _text
from .protocol import BreakerStatus, MalformedBreaker, Survey

__all__ = ["survey"]

T = TypeVar("T")

# Keys asked of SCAN per call (a hint), and read per pipelined round trip.
_SCAN_PAGE = 500


def survey(client: Any, prefix: str) -> Survey:
    """Every breaker under ``prefix``, and the malformed entries beside them (see
    :meth:`RedisStore.survey <smoothapi.RedisStore.survey>`)."""
    shape = re.compile(rf"{re.escape(prefix)}:breaker:\{{[0-9a-f]{{40}}\}}")
    match = f"{_glob_escape(prefix)}:breaker:*"
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
                pipe.eval(lua.READ_BREAKER, 1, key)
            for key, answer in zip(node_keys, pipe.execute(raise_on_error=False), strict=True):
                moved = isinstance(answer, redis.exceptions.ResponseError)
                replies[key] = client.eval(lua.READ_BREAKER, 1, key) if moved else answer
    else:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(lua.READ_BREAKER, 1, key)
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
    now_ms, state, failures, open_until, lease_until, has_name, _ = reply[:7]
    why, slow, calls, live, passed, permits, window_calls, window_failed, window_slow = reply[7:]
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
        _field("lease_until", lease_until, _finite)
        # A probe runs somewhere while a lease is live; the next call probes while a
        # permit is free (half_open_calls, less the probes that ran or run).
        probe_in_flight = int(live) > 0
        probe_due = int(live) + int(passed) < int(permits)
    window = None
    if int(window_calls) >= 0:
        window = WindowCounts(int(window_calls), int(window_failed), int(window_slow))
    last = machine.INITIAL._replace(
        why=_text(why),
        failures=count,
        slow=_field("slow", slow, int),
        calls=_field("calls", calls, int),
    )
    if window is not None and current is CircuitState.CLOSED:
        count = window.failures  # what failure_count reports: the rate rule's window
    return BreakerStatus(
        name=_stored_name(reply) if int(has_name) else None,
        key=key,
        state=current,
        failures=count,
        retry_after=retry_after,
        probe_due=probe_due,
        probe_in_flight=probe_in_flight,
        probes=int(live),
        reason=machine.reason(last),
        window=window,
    )


def _by_name(status: BreakerStatus) -> tuple[bool, str, str]:
    return (status.name is None, status.name or "", status.key)
