"""Typed events that the engine and the breaker send to hooks.

Register a hook per config (``ResilientConfig(hooks=(fn,))``) or for the whole
process (:func:`add_hook`).  Events are sent only on the slow path - a failed
attempt, a state change, a rejection, a fallback - never for a call that
simply succeeds.  A hook that raises is logged on the ``smoothapi`` logger
and never breaks the call.

A hook may be an ``async def``: in async code (an ``async def`` decorated
function, ``AsyncResilientTransport``) the call awaits it before going on;
in sync code it runs to completion on a fresh event loop, or - when the sync
call is made from inside a running event loop, which must not be blocked -
as a task on that loop (a trio system task under trio).  A task that the loop
cancels before it finishes (the loop shut down) is logged as a WARNING.

Events are immutable named tuples (``event.name``, ``event._asdict()``).
Events name an upstream by breaker name only (a function name or an origin
such as ``https://api.example.com:443``): never a query string, userinfo or a
header value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, NamedTuple

from ._runtime import running_trio

if TYPE_CHECKING:
    from .breaker import CircuitState

__all__ = [
    "CallRejected",
    "Event",
    "FallbackServed",
    "RetriesExhausted",
    "RetryBudgetExhausted",
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


class RetryBudgetExhausted(NamedTuple):
    """The retry budget refused the retry after attempt ``attempts``; the call gives up.

    Sent before the call's :class:`RetriesExhausted` (reason ``"retry budget
    exhausted"``): many of these in a short time mean the upstream is failing
    for many callers at once and retries are being shed.
    """

    name: str
    attempts: int
    status: int | None
    error: BaseException | None


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
    | RetryBudgetExhausted
    | StateChanged
    | CallRejected
    | FallbackServed
    | StoreUnavailable
    | StoreRecovered
)
#: A hook: a plain callable, or an ``async def`` (its awaitable is awaited, see above).
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
    RetryBudgetExhausted,
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


# Prometheus metrics need no glue when prometheus_client is installed (as in stamina):
# decided at the first event, so a process whose calls all succeed never imports it.
_auto_pending = True


def emit(event: Event, hooks: tuple[Hook, ...] = ()) -> None:
    """Send ``event`` to the given hooks and the global ones, and log it; a raising hook is
    logged and the call goes on."""
    global _auto_pending
    if _auto_pending:
        _auto_pending = False
        _auto_instrument()
    for hook in (*hooks, *_global_hooks):
        try:
            result = hook(event)
        except Exception:
            _logger().exception("smoothapi hook %r raised on %s; the call goes on", hook, event)
        else:
            # `hasattr` rather than `inspect.isawaitable`: inspect costs milliseconds to import.
            if result is not None and hasattr(result, "__await__"):
                _defer(hook, event, result)
    _log(event)


def _auto_instrument() -> None:
    import os  # noqa: PLC0415 - once, at the first event

    if os.environ.get("SMOOTHAPI_PROMETHEUS", "").strip().lower() in ("0", "false", "no", "off"):
        return
    from importlib.util import find_spec  # noqa: PLC0415

    if find_spec("prometheus_client") is None:
        return
    try:
        from .prometheus import auto_instrument  # noqa: PLC0415

        auto_instrument()
    except Exception:
        _logger().exception("smoothapi could not register its Prometheus metrics; calls go on")


# The async driver that is running this call collects async hooks' awaitables here
# and awaits them before its next step; None outside such a driver.
_pending: ContextVar[list[tuple[Hook, Event, Awaitable[object]]] | None] = ContextVar(
    "smoothapi_pending_hooks", default=None
)
# Tasks started for async hooks from sync code inside a running loop: held so that
# the loop's weak references do not let them be collected mid-flight.
_tasks: set[Any] = set()


Pending = list[tuple[Hook, Event, Awaitable[object]]]


def collect() -> tuple[Pending, Token[Pending | None]]:
    """Collect async hooks' awaitables for the current async call, until :func:`stop_collecting`.

    The async driver awaits them with :func:`flush` before each step.
    """
    pending: Pending = []
    return pending, _pending.set(pending)


def stop_collecting(pending: Pending, token: Token[Pending | None]) -> None:
    """End :func:`collect`; anything not flushed (the call was cancelled) still runs."""
    _pending.reset(token)
    while pending:
        _defer(*pending.pop(0))


async def flush(pending: Pending) -> None:
    """Await the async hooks collected so far, in the order their events were sent."""
    while pending:
        hook, event, awaitable = pending.pop(0)
        await _guarded(hook, event, awaitable)


async def _guarded(hook: Hook, event: Event, awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:
        _logger().exception("smoothapi hook %r raised on %s; the call goes on", hook, event)


def _defer(hook: Hook, event: Event, awaitable: Awaitable[object]) -> None:
    pending = _pending.get()
    if pending is not None:
        pending.append((hook, event, awaitable))
        return
    # A sync call made from inside a running loop: blocking the loop to await the hook
    # would deadlock anything the hook waits for, so the hook runs as a task of that loop.
    if running_trio():
        import trio  # noqa: PLC0415 - already imported: trio is running

        trio.lowlevel.spawn_system_task(_guarded, hook, event, awaitable)
        return
    import asyncio  # noqa: PLC0415 - only for an async hook called from sync code

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_guarded(hook, event, awaitable))
        return
    task = loop.create_task(_guarded(hook, event, awaitable))
    _tasks.add(task)

    def done(task: Any) -> None:
        _tasks.discard(task)
        if task.cancelled():
            # The loop shut down (or someone cancelled the task) before the hook finished.
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # a coroutine never started: no "never awaited" warning
            _logger().warning(
                "smoothapi async hook %r was cancelled before it finished on %s", hook, event
            )

    task.add_done_callback(done)


_LOGGER: Any = None


def logger() -> Any:
    """The ``smoothapi`` logger (standard ``logging``), created on first use."""
    return _logger()


def _logger() -> Any:
    # `logging` costs milliseconds to import; it loads with the first event.
    global _LOGGER
    if _LOGGER is None:
        import logging  # noqa: PLC0415

        logger = logging.getLogger("smoothapi")
        # A library configures no output: without a handler of the application's,
        # logging's "last resort" would print our warnings to stderr.
        logger.addHandler(logging.NullHandler())
        _LOGGER = logger
    return _LOGGER


_DEBUG, _INFO, _WARNING = 10, 20, 30


def _log(event: Event) -> None:
    """One line per event on the ``smoothapi`` logger, with the fields in ``extra=``.

    A retry, a rejection, a fallback, a refusal of the retry budget and a give-up
    are DEBUG; a breaker opening is WARNING and its other moves INFO.  Store
    outages are logged where they are detected (``smoothapi.storage``).  Errors
    appear by type only.
    """
    logger = _logger()
    if isinstance(event, StateChanged):
        level = _WARNING if event.new == "OPEN" else _INFO
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "breaker %s: %s -> %s (%d consecutive failures)",
            event.name,
            event.old.value,
            event.new.value,
            event.failures,
            extra={
                "smoothapi_event": "state_changed",
                "breaker": event.name,
                "old_state": event.old.value,
                "new_state": event.new.value,
                "failures": event.failures,
            },
        )
        return
    if isinstance(event, (StoreUnavailable, StoreRecovered)) or not logger.isEnabledFor(_DEBUG):
        return
    if isinstance(event, RetryScheduled):
        logger.debug(
            "%s: attempt %d failed (%s); retry in %.3fs",
            event.name,
            event.attempt,
            _cause(event.status, event.error),
            event.delay,
            extra={
                "smoothapi_event": "retry_scheduled",
                "breaker": event.name,
                "attempt": event.attempt,
                "delay": event.delay,
                "status": event.status,
                "error_type": _type_name(event.error),
            },
        )
    elif isinstance(event, RetriesExhausted):
        logger.debug(
            "%s: giving up after %d attempts (%s): %s",
            event.name,
            event.attempts,
            _cause(event.status, event.error),
            event.reason,
            extra={
                "smoothapi_event": "retries_exhausted",
                "breaker": event.name,
                "attempts": event.attempts,
                "status": event.status,
                "error_type": _type_name(event.error),
                "reason": event.reason,
            },
        )
    elif isinstance(event, RetryBudgetExhausted):
        logger.debug(
            "%s: retry budget exhausted after attempt %d (%s); not retrying",
            event.name,
            event.attempts,
            _cause(event.status, event.error),
            extra={
                "smoothapi_event": "retry_budget_exhausted",
                "breaker": event.name,
                "attempts": event.attempts,
                "status": event.status,
                "error_type": _type_name(event.error),
            },
        )
    elif isinstance(event, CallRejected):
        logger.debug(
            "%s: call rejected, breaker open (probe in %.3fs)",
            event.name,
            event.retry_after,
            extra={
                "smoothapi_event": "call_rejected",
                "breaker": event.name,
                "retry_after": event.retry_after,
            },
        )
    elif isinstance(event, FallbackServed):
        logger.debug(
            "%s: fallback served (%s)",
            event.name,
            _type_name(event.error),
            extra={
                "smoothapi_event": "fallback_served",
                "breaker": event.name,
                "error_type": _type_name(event.error),
            },
        )


def _type_name(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__qualname__


def _cause(status: int | None, error: BaseException | None) -> str:
    if status is not None:
        return f"status {status}"
    return _type_name(error) or "failure"
