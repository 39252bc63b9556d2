"""Typed events that the engine and the breaker send to hooks.

Register a hook per config (``ResilientConfig(hooks=(fn,))``) or for the whole
process (:func:`add_hook`).  Events are sent only on the slow path - a failed
attempt, a state change, a rejection, a fallback - never for a call that
simply succeeds.  A hook that raises is logged on the ``smoothapi`` logger
and never breaks the call.

A hook may be an ``async def``: in async code the call awaits it before its
next step; elsewhere it runs on the loop or thread it belongs to, in order,
never silently dropped (see :mod:`smoothapi._async_hooks`).

Events are immutable named tuples (``event.name``, ``event._asdict()``).
Events name an upstream by breaker name only (a function name or an origin
such as ``https://api.example.com:443``): never a query string, userinfo or a
header value.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._async_hooks import defer
from ._log import logger as _logger
from ._runtime import at_fork_child, before_fork
from ._runtime import first_event_setups as _runtime_first_event_setups

if TYPE_CHECKING:
    from .machine import CircuitState

__all__ = [
    "REASON_KINDS",
    "CallRejected",
    "CallShed",
    "Event",
    "FallbackServed",
    "HedgeSent",
    "RetriesExhausted",
    "RetryBudgetExhausted",
    "RetryScheduled",
    "StateChanged",
    "StoreRecovered",
    "StoreUnavailable",
    "add_hook",
    "on_first_event",
    "reason_kind",
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
    """The breaker ``name`` moved from ``old`` to ``new`` at monotonic time ``at``.

    ``reason`` says why, for a move to OPEN: ``consecutive failures``,
    ``failure rate 0.53 over 212 calls``, ``slow calls``, ``slow call rate
    0.60 over 50 calls``, ``probe failed`` or ``forced open`` ("" for the
    other moves).  ``failures`` is the failed attempts that tripped it.
    """

    name: str
    old: CircuitState
    new: CircuitState
    failures: int
    at: float
    reason: str = ""


class CallRejected(NamedTuple):
    """The breaker rejected a call without I/O; a probe is allowed in ``retry_after`` s."""

    name: str
    retry_after: float


class CallShed(NamedTuple):
    """A load-control stage refused a call without I/O (``stage``: ``"bulkhead"``,
    ``"rate_limit"`` or ``"throttle"``); it may be admitted in ``retry_after`` s (0.0: unknown).
    """

    name: str
    stage: str
    retry_after: float


class HedgeSent(NamedTuple):
    """Attempt ``attempt`` had no answer after ``delay`` s: hedge number ``hedge`` was sent."""

    name: str
    attempt: int
    hedge: int
    delay: float


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
    | CallShed
    | HedgeSent
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
    CallShed,
    HedgeSent,
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


# Setups run once per process, at its first event, before that event is delivered (so it
# is the first they see): the package registers the automatic Prometheus metrics here
# (see smoothapi/__init__.py), since the events sit below every backend and import none.
# A process whose calls all succeed never runs them.  No lock is held across a setup (it
# may import a module, ~30 ms for prometheus_client): Python's import machinery already
# serialises imports, and a setup serialises its own registration, so a thread's first
# event still waits until the setup is done.  _setup_lock guards only the bookkeeping
# below, which lets a fork wait for a setup in progress (see _before_fork).
# The list lives in _runtime so that the package registers without importing this module.
_first_event_setups = _runtime_first_event_setups
_auto_pending = True
_setup_lock = threading.Lock()
_setting_up: set[int] = set()  # the threads running the first-event setup now
_setup_idle = threading.Event()
_setup_idle.set()
# How long a fork waits for another thread's first-event setup to finish.
_FORK_WAIT = 2.0


def on_first_event(setup: Callable[[], object]) -> None:
    """Run ``setup()`` once, at this process's first event, before it is delivered.

    For the layers above the events (the package registers the automatic
    Prometheus metrics this way).  A setup that raises is logged and the
    call goes on.
    """
    _first_event_setups.append(setup)


def emit(event: Event, hooks: tuple[Hook, ...] = (), *, cause: str | None = None) -> None:
    """Send ``event`` to the given hooks and the global ones, and log it; a raising hook is
    logged and the call goes on.  ``cause``: why a breaker moved, when it was not the
    usual reason for that move (``"reset"``, ``"forced open"``), for the log line."""
    if _auto_pending:
        _first_event()
    # The line first: a hook may move the breaker again, and the log must read in order.
    _log(event, cause)
    for hook in (*hooks, *_global_hooks):
        try:
            result = hook(event)
        except Exception:
            _logger().exception("hook %r raised on %s; the call goes on", hook, event)
        else:
            # `hasattr` rather than `inspect.isawaitable`: inspect costs milliseconds to import.
            if result is not None and hasattr(result, "__await__"):
                defer(hook, event, result)


def _first_event() -> None:
    global _auto_pending
    me = threading.get_ident()
    with _setup_lock:
        if not _auto_pending or me in _setting_up:  # done, or a hook of the setup's own
            return
        _setting_up.add(me)
        _setup_idle.clear()
    try:
        _logger()  # imports logging, which a fork must not catch half done either
        for setup in list(_first_event_setups):
            try:
                setup()
            except Exception:
                _logger().exception("first-event setup %r raised; calls go on", setup)
        _auto_pending = False
    finally:
        with _setup_lock:
            _setting_up.discard(me)
            if not _setting_up:
                _setup_idle.set()


@before_fork
def _before_fork() -> None:
    # A child forked while another thread imports prometheus_client (or registers the
    # counters) would hang at its first event on that module's import lock (or on the
    # registry's lock), held for ever by a thread the child does not have.  So the fork
    # waits for that setup to finish: tens of milliseconds, once per process, bounded.
    if threading.get_ident() not in _setting_up:
        _setup_idle.wait(_FORK_WAIT)


@at_fork_child
def _after_fork_in_child() -> None:
    global _auto_pending, _setup_lock, _setting_up, _setup_idle
    if _setting_up:
        # The wait above timed out: the setup is half done here and cannot finish, and
        # importing prometheus_client again would hang.  This child goes without the
        # automatic metrics rather than hang (instrument() would meet the same module).
        _auto_pending = False
    _setup_lock = threading.Lock()
    _setting_up = set()
    _setup_idle = threading.Event()
    _setup_idle.set()


def logger() -> Any:
    """The ``smoothapi`` logger (standard ``logging``), created on first use."""
    return _logger()


_DEBUG, _INFO, _WARNING = 10, 20, 30

#: The kinds of reason a breaker opens for: the ``reason`` label of the openings metric
#: and the ``reason_kind`` of the log line.  A closed set, so that a metric label built
#: from it stays bounded (the words of ``StateChanged.reason`` carry numbers).
REASON_KINDS = ("consecutive", "slow", "rate", "slow_rate", "probe", "forced")

# The words machine.reason() writes, by the kind they belong to; longest prefix first
# ("slow call rate ..." before "slow calls").
_KIND_OF_WORDS = (
    ("slow call rate", "slow_rate"),
    ("slow calls", "slow"),
    ("failure rate", "rate"),
    ("consecutive failures", "consecutive"),
    ("probe failed", "probe"),
    ("forced open", "forced"),
)


def reason_kind(event: StateChanged) -> str:
    """The kind of ``event.reason`` (one of :data:`REASON_KINDS`) for a move to OPEN, else "".

    A breaker that gives no reason (a store written before the trip rules) is read
    the way its log line always was: CLOSED -> OPEN with failures counted is the
    consecutive rule, HALF_OPEN -> OPEN a failed probe, anything else forced.
    """
    if event.new.value != "OPEN":
        return ""
    for words, kind in _KIND_OF_WORDS:
        if event.reason.startswith(words):
            return kind
    if event.old.value == "CLOSED" and event.failures:
        return "consecutive"
    return "probe" if event.old.value == "HALF_OPEN" else "forced"


# Why a breaker makes each move, unless it was made by hand (reset(), force_open()), which
# the breaker says with emit(cause=...).  CLOSED -> OPEN says its count of failures; with
# none counted, only force_open() makes that move.
_REASONS = {
    ("OPEN", "HALF_OPEN"): "cooldown elapsed, probing",
    ("HALF_OPEN", "CLOSED"): "probe succeeded",
    ("HALF_OPEN", "OPEN"): "probe failed",
    ("OPEN", "CLOSED"): "reset",
}


def _log(event: Event, cause: str | None = None) -> None:
    """One line per event on the ``smoothapi`` logger, with the fields in ``extra=``.

    A retry, a rejection, a call shed by a load-control stage, a hedge sent, a
    fallback, a refusal of the retry budget and a give-up are DEBUG; a breaker
    opening is WARNING and its other moves INFO, each line saying why the breaker
    moved.  Store outages are logged where they are detected
    (``smoothapi.storage``).  Errors appear by type only.
    """
    logger = _logger()
    if isinstance(event, StateChanged):
        level = _WARNING if event.new == "OPEN" else _INFO
        if not logger.isEnabledFor(level):
            return
        old, new = event.old.value, event.new.value
        reason, joint = _move_reason(event, cause)
        extra: dict[str, object] = {
            "smoothapi_event": "state_changed",
            "breaker": event.name,
            "old_state": old,
            "new_state": new,
            "failures": event.failures,
            "reason": reason,
        }
        if new == "OPEN":
            extra["reason_kind"] = "forced" if cause == "forced open" else reason_kind(event)
        logger.log(
            level, "breaker %s: %s -> %s%s%s", event.name, old, new, joint, reason, extra=extra
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
            "%s: giving up after %d %s (%s): %s",
            event.name,
            event.attempts,
            "attempt" if event.attempts == 1 else "attempts",
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
    # A shed call and a hedge are DEBUG, like a rejection and a retry: each is one line per
    # call, and under overload (the very time stages shed and attempts run slow) they come
    # by the thousand a second.  The counters (smoothapi.shed, smoothapi.hedges) are the
    # place to watch them; the lines say which call and why when you look for it.
    elif isinstance(event, CallShed):
        # retry_after 0.0: the stage cannot tell when it would admit a call (the bulkhead,
        # the throttle), so the line says nothing of it.
        after = f" (retry in {event.retry_after:.3f}s)" if event.retry_after > 0 else ""
        logger.debug(
            "%s: call shed by %s%s",
            event.name,
            event.stage,
            after,
            extra={
                "smoothapi_event": "call_shed",
                "breaker": event.name,
                "stage": event.stage,
                "retry_after": event.retry_after,
            },
        )
    elif isinstance(event, HedgeSent):
        logger.debug(
            "%s: attempt %d had no answer after %.3fs; hedge %d sent",
            event.name,
            event.attempt,
            event.delay,
            event.hedge,
            extra={
                "smoothapi_event": "hedge_sent",
                "breaker": event.name,
                "attempt": event.attempt,
                "hedge": event.hedge,
                "delay": event.delay,
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


def _move_reason(event: StateChanged, cause: str | None) -> tuple[str, str]:
    """A breaker move's words for its log line, and what joins them to the states.

    The consecutive rule reads as it always did (``CLOSED -> OPEN after 3 consecutive
    failures``; ``after 3 consecutive slow calls`` when every one was slow); the rate
    rules say their verdict (``CLOSED -> OPEN: failure rate 0.53 over 212 calls``).
    """
    old, new = event.old.value, event.new.value
    if cause is None and (old, new) == ("CLOSED", "OPEN") and event.failures:
        kind = reason_kind(event)
        if kind in {"consecutive", "slow"}:
            plural = "" if event.failures == 1 else "s"
            what = "slow call" if kind == "slow" else "failure"
            return f"after {event.failures} consecutive {what}{plural}", " "
        if kind in {"rate", "slow_rate"}:
            return event.reason, ": "
    return cause or _REASONS.get((old, new), "forced open"), ": "


def _type_name(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__qualname__


def _cause(status: int | None, error: BaseException | None) -> str:
    if status is not None:
        return f"status {status}"
    return _type_name(error) or "failure"
