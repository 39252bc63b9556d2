"""Typed events that the engine and the breaker send to hooks.

Register a hook per config (``ResilientConfig(hooks=(fn,))``) or for the whole
process (:func:`add_hook`).  Events are sent only on the slow path - a failed
attempt, a state change, a rejection, a fallback - never for a call that
simply succeeds.  A hook that raises is logged on the ``smoothapi`` logger
and never breaks the call.

Events are immutable named tuples (``event.name``, ``event._asdict()``).
Events name an upstream by breaker name only (a function name or an origin
such as ``https://api.example.com:443``): never a query string, userinfo or a
header value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .breaker import CircuitState

__all__ = [
    "CallRejected",
    "Event",
    "FallbackServed",
    "RetriesExhausted",
    "RetryScheduled",
    "StateChanged",
    "StoreRecovered",
    "StoreUnavailable",
    "add_hook",
    "remove_hook",
]


class RetryScheduled(NamedTuple):
    """Attempt ``attempt`` (1-based) failed; the call sleeps ``delay`` seconds and retries."""

    name: str
    attempt: int
    delay: float
    status: int | None
    error: BaseException | None


class RetriesExhausted(NamedTuple):
    """The call gives up after ``attempts`` attempts with this status or error."""

    name: str
    attempts: int
    status: int | None
    error: BaseException | None
    reason: str


class StateChanged(NamedTuple):
    """The breaker ``name`` moved from ``old`` to ``new`` at monotonic time ``at``."""

    name: str
    old: CircuitState
    new: CircuitState
    failures: int
    at: float


class CallRejected(NamedTuple):
    """The breaker rejected a call without I/O; a probe is allowed in ``retry_after`` s."""

    name: str
    retry_after: float


class FallbackServed(NamedTuple):
    """The call answered with its fallback because of ``error``."""

    name: str
    error: BaseException


class StoreUnavailable(NamedTuple):
    """The shared breaker store ``store`` failed with ``error``; breakers use local state meanwhile.

    Sent once per outage (on the first error, not per call).  ``store`` names
    the server (``redis://host:port/db``), never a password.
    """

    store: str
    error: BaseException


class StoreRecovered(NamedTuple):
    """The shared breaker store ``store`` answers again after ``down_for`` seconds."""

    store: str
    down_for: float


Event = (
    RetryScheduled
    | RetriesExhausted
    | StateChanged
    | CallRejected
    | FallbackServed
    | StoreUnavailable
    | StoreRecovered
)
Hook = Callable[[Event], object]


def _safe_repr(self: tuple[object, ...]) -> str:
    # An exception's text often holds the URL it failed on, query string and
    # userinfo included (requests' "... for url: https://user:pw@host/?api_key=...").
    # Events name an upstream by breaker name only, so their text shows an error's
    # type; the exception object itself is still in the field for hooks that want it.
    fields = getattr(self, "_fields", ())
    shown = ", ".join(
        f"{field}={type(value).__qualname__ if isinstance(value, BaseException) else repr(value)}"
        for field, value in zip(fields, self, strict=False)
    )
    return f"{type(self).__name__}({shown})"


for _event_type in (
    RetryScheduled,
    RetriesExhausted,
    StateChanged,
    CallRejected,
    FallbackServed,
    StoreUnavailable,
    StoreRecovered,
):
    _event_type.__repr__ = _safe_repr  # type: ignore[assignment, method-assign]

_global_hooks: list[Hook] = []


def add_hook(hook: Hook) -> None:
    """Send every event of every breaker and config in this process to ``hook``."""
    if not callable(hook):
        raise TypeError(f"add_hook() needs a callable, got {hook!r}")
    _global_hooks.append(hook)


def remove_hook(hook: Hook) -> None:
    """Stop sending events to a hook registered with :func:`add_hook` (no error if absent)."""
    with contextlib.suppress(ValueError):
        _global_hooks.remove(hook)


def emit(event: Event, hooks: tuple[Hook, ...] = ()) -> None:
    """Send ``event`` to the given hooks and the global ones; a raising hook is logged."""
    for hook in (*hooks, *_global_hooks):
        try:
            hook(event)
        except Exception:
            import logging  # noqa: PLC0415 - only when a hook misbehaves

            logging.getLogger("smoothapi").exception(
                "smoothapi hook %r raised on %s; the call goes on", hook, event
            )
