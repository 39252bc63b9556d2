"""What smoothapi measures, said once for every metrics backend.

:mod:`smoothapi.otel` and :mod:`smoothapi.prometheus` translate this table
into their own instruments.  Counters advance from events (so they cost
nothing while calls succeed); gauges are read from the live breakers when
the backend collects.  Labels are low-cardinality on purpose: a breaker name
(a function name or an origin such as ``https://api.example.com:443``), a
state, a reason, a load-control stage, a status code or an exception type -
never a URL path, query or header.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from ..breaker import CircuitBreaker, CircuitState, WindowCounts, live_breakers
from ..events import (
    CallRejected,
    CallShed,
    Event,
    FallbackServed,
    HedgeSent,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
    StateChanged,
    StoreUnavailable,
    add_hook,
    reason_kind,
    remove_hook,
)
from ..load import BULKHEAD, RATE_LIMIT, THROTTLE

__all__ = [
    "COUNTERS",
    "GAUGES",
    "STAGES",
    "Counter",
    "Gauge",
    "Reading",
    "Subscription",
    "counts",
    "readings",
]


class Counter(NamedTuple):
    """A counter: OpenTelemetry ``name`` (Prometheus: dots become ``_``, plus ``_total``)."""

    name: str
    description: str
    unit: str
    labels: tuple[str, ...]


class Gauge(NamedTuple):
    """A gauge read from every live breaker when the backend collects."""

    name: str
    description: str
    unit: str
    labels: tuple[str, ...]


RETRIES = Counter(
    "smoothapi.retries",
    "Retries scheduled after a failed attempt",
    "{retry}",
    ("breaker", "cause"),
)
GAVE_UP = Counter(
    "smoothapi.gave_up",
    "Calls that stopped retrying and returned or raised their last failure",
    "{call}",
    ("breaker", "reason"),
)
REJECTED = Counter(
    "smoothapi.rejected",
    "Calls rejected by an open breaker without any I/O",
    "{call}",
    ("breaker",),
)
FALLBACKS = Counter(
    "smoothapi.fallbacks",
    "Calls answered by their fallback",
    "{call}",
    ("breaker",),
)
BUDGET_EXHAUSTED = Counter(
    "smoothapi.retry_budget.exhausted",
    "Retries refused by the retry budget",
    "{retry}",
    ("breaker",),
)
TRANSITIONS = Counter(
    "smoothapi.breaker.transitions",
    "Breaker state changes",
    "{transition}",
    ("breaker", "from_state", "to_state"),
)
STORE_OUTAGES = Counter(
    "smoothapi.store.outages",
    "Times a shared breaker store stopped answering (breakers used local state meanwhile)",
    "{outage}",
    ("store",),
)
OPENINGS = Counter(
    "smoothapi.breaker.openings",
    "Times a breaker opened, by the kind of reason: consecutive, slow, rate, slow_rate, "
    "probe or forced",
    "{opening}",
    ("breaker", "reason"),
)
#: The load-control stages that shed calls: the ``stage`` label of the shed counter.  A
#: closed set, so that the label stays bounded (a stage outside it is counted as "other").
STAGES = (BULKHEAD, RATE_LIMIT, THROTTLE)
SHED = Counter(
    "smoothapi.shed",
    "Calls shed by a load-control stage without any I/O: bulkhead, rate_limit or throttle",
    "{call}",
    ("breaker", "stage"),
)
HEDGES = Counter(
    "smoothapi.hedges",
    "Hedges sent: extra attempts started beside one that had no answer within the hedge delay",
    "{hedge}",
    ("breaker",),
)
COUNTERS = (
    RETRIES,
    GAVE_UP,
    REJECTED,
    FALLBACKS,
    BUDGET_EXHAUSTED,
    TRANSITIONS,
    OPENINGS,
    STORE_OUTAGES,
    SHED,
    HEDGES,
)

STATE = Gauge(
    "smoothapi.breaker.state",
    "1 for the state each live breaker is in, 0 for the other two",
    "1",
    ("breaker", "state"),
)
FAILURES = Gauge(
    "smoothapi.breaker.failures",
    "Failed attempts each live breaker has counted: consecutive ones, or those in a "
    "failure-rate breaker's window",
    "{failure}",
    ("breaker",),
)
OPEN_REMAINING = Gauge(
    "smoothapi.breaker.open_remaining",
    "Seconds until an open breaker lets a probe through (0 unless OPEN)",
    "s",
    ("breaker",),
)
# A failure-rate breaker's window, read at collection; a breaker of the consecutive rule
# has none and reports no sample of these.
WINDOW_CALLS = Gauge(
    "smoothapi.breaker.window.calls",
    "Attempts that ended in a failure-rate breaker's sliding window",
    "{call}",
    ("breaker",),
)
WINDOW_FAILURES = Gauge(
    "smoothapi.breaker.window.failures",
    "Failed attempts (slow calls included) in a failure-rate breaker's sliding window",
    "{call}",
    ("breaker",),
)
WINDOW_SLOW = Gauge(
    "smoothapi.breaker.window.slow_calls",
    "Slow calls (successes over slow_call_ms) in a failure-rate breaker's sliding window",
    "{call}",
    ("breaker",),
)
GAUGES = (STATE, FAILURES, OPEN_REMAINING, WINDOW_CALLS, WINDOW_FAILURES, WINDOW_SLOW)

Counted = tuple[tuple[Counter, tuple[str, ...]], ...]


def counts(event: Event) -> Counted:
    """The counters an event advances by one, with their label values."""
    if isinstance(event, RetryScheduled):
        return ((RETRIES, (event.name, _cause(event.status, event.error))),)
    if isinstance(event, RetriesExhausted):
        return ((GAVE_UP, (event.name, event.reason)),)
    if isinstance(event, CallRejected):
        return ((REJECTED, (event.name,)),)
    if isinstance(event, CallShed):
        return ((SHED, (event.name, event.stage if event.stage in STAGES else "other")),)
    if isinstance(event, HedgeSent):
        return ((HEDGES, (event.name,)),)
    if isinstance(event, FallbackServed):
        return ((FALLBACKS, (event.name,)),)
    if isinstance(event, RetryBudgetExhausted):
        return ((BUDGET_EXHAUSTED, (event.name,)),)
    if isinstance(event, StateChanged):
        moved = (TRANSITIONS, (event.name, event.old.value, event.new.value))
        kind = reason_kind(event)
        # The kind, never the reason's words: those carry numbers, a label value each.
        return (moved, (OPENINGS, (event.name, kind))) if kind else (moved,)
    if isinstance(event, StoreUnavailable):
        return ((STORE_OUTAGES, (event.store,)),)
    return ()  # StoreRecovered: the outage was counted when it began


class Reading(NamedTuple):
    """One live breaker, read once for every gauge."""

    name: str
    state: CircuitState
    failures: int
    open_remaining: float
    window: WindowCounts | None = None


_SEVERITY = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


def readings() -> Iterator[Reading]:
    """Every live breaker's state, failure count and time left open.

    Breakers may share a name (a sync and an async transport to one origin each
    keep their own breaker): a metric holds one value per label set, so those
    are reported as one - the worst state, the most failures, the longest wait,
    and of their failure-rate windows the one with the most failures (then the
    most calls), whole, so that its counts stay one window's.
    """
    merged: dict[str, Reading] = {}
    for breaker in live_breakers():
        reading = _read(breaker)
        seen = merged.get(reading.name)
        if seen is not None:
            reading = Reading(
                reading.name,
                max(seen.state, reading.state, key=_SEVERITY.__getitem__),
                max(seen.failures, reading.failures),
                max(seen.open_remaining, reading.open_remaining),
                _worse(seen.window, reading.window),
            )
        merged[reading.name] = reading
    yield from merged.values()


def gauge_values(reading: Reading) -> Iterator[tuple[Gauge, tuple[str, ...], float]]:
    """The value each gauge takes for one breaker, with its label values."""
    for state in CircuitState:
        yield STATE, (reading.name, state.value), 1.0 if reading.state is state else 0.0
    yield FAILURES, (reading.name,), float(reading.failures)
    yield OPEN_REMAINING, (reading.name,), reading.open_remaining
    window = reading.window
    if window is not None:
        yield WINDOW_CALLS, (reading.name,), float(window.calls)
        yield WINDOW_FAILURES, (reading.name,), float(window.failures)
        yield WINDOW_SLOW, (reading.name,), float(window.slow)


def _worse(seen: WindowCounts | None, other: WindowCounts | None) -> WindowCounts | None:
    if seen is None or other is None:
        return other if seen is None else seen
    return max(seen, other, key=lambda w: (w.failures, w.calls))


def _read(breaker: CircuitBreaker) -> Reading:
    snapshot = getattr(breaker, "snapshot", None)
    if snapshot is not None:
        # A shared breaker: one round trip to its store (or its local state while the
        # store is down) rather than one per property.  A store that keeps a window
        # answers it in the snapshot; by name, as the snapshot may grow more fields.
        snap = snapshot()
        state, failures, retry_after = snap.state, snap.failures, snap.retry_after
        window = getattr(snap, "window", None)
    else:
        state, failures, retry_after = breaker.state, breaker.failure_count, breaker.retry_after
        window = breaker.window
    open_remaining = retry_after if state is CircuitState.OPEN else 0.0
    return Reading(breaker.name, state, failures, open_remaining, window)


def _cause(status: int | None, error: BaseException | None) -> str:
    if status is not None:
        return str(status)
    return "unknown" if error is None else type(error).__qualname__


class Subscription:
    """A global hook that a backend installs once and removes on ``close``."""

    def __init__(self, on_count: Callable[[Counter, tuple[str, ...]], None]) -> None:
        self._on_count = on_count
        self._closed = False
        add_hook(self._hook)

    def _hook(self, event: Event) -> None:
        for counter, values in counts(event):
            if self._closed:
                return
            self._on_count(counter, values)

    def close(self) -> None:
        self._closed = True  # a hook already running when we remove it counts nothing more
        remove_hook(self._hook)
