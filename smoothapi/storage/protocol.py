"""What a breaker store is: the protocol and the values that cross it.

:class:`BreakerStore` is what :class:`~smoothapi.SharedCircuitBreaker` asks
(``acquire``, ``record``, ``reset``, ``force_open``, ``snapshot``, and their
``*_async`` twins); :class:`Admission`, :class:`Report`, :class:`Opening` and
:class:`Snapshot` are the values that cross it; :class:`BreakerStatus`,
:class:`Survey` and :class:`MalformedBreaker` are what a store reports to
readers outside the fleet (``smoothapi status``).  The rules that decide the
replies are :mod:`smoothapi.machine`'s; a store only keeps the state and
applies them atomically.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

from ..breaker import CircuitState, WindowCounts
from ..errors import SmoothAPIError

__all__ = [
    "Admission",
    "Batch",
    "BreakerStatus",
    "BreakerStore",
    "MalformedBreaker",
    "MalformedState",
    "Op",
    "Opening",
    "Report",
    "Snapshot",
    "Survey",
    "Trip",
    "TripRules",
]

#: What ``record`` reports.  ``"slow"`` (a success that took longer than ``slow_call_ms``:
#: a failure for the breaker, counted as slow) reaches only a store with ``trip_rules``.
Op = Literal["success", "failure", "slow", "release"]


class MalformedState(SmoothAPIError, ValueError):
    """One breaker's entry in the store holds what no script writes (a state ``AJAR``, say).

    Not an outage: the store answers, and every other breaker keeps sharing it.
    That one breaker runs on its in-process state until the entry is fixed or
    deleted (``smoothapi status`` shows it as MALFORMED).
    """


class Trip(NamedTuple):
    """The breaker's last opening, as the store keeps it: ``why`` ("consecutive",
    "rate", "probe", "forced", or "" if it never opened), the failed attempts that
    tripped it (``failures``, the stored count), how many of them were ``slow`` calls,
    and the window's size at a rate trip (``calls``).  What
    :func:`smoothapi.machine.reason` words."""

    why: str
    failures: int
    slow: int
    calls: int


class TripRules(NamedTuple):
    """The trip rules a store with ``trip_rules = True`` applies (see
    :class:`BreakerStore`): ``failure_rate`` (None: consecutive failures),
    ``window_ms``, ``minimum_calls`` and ``half_open_calls``, from the config."""

    failure_rate: float | None
    window_ms: float
    minimum_calls: int
    half_open_calls: int


class Batch(NamedTuple):
    """Successes of ordinary calls admitted in CLOSED ``period`` that a process counted
    locally (the failure-rate rule), for the store to add to its window at once."""

    period: int
    successes: int


class Admission(NamedTuple):
    """A store's answer to ``acquire``.

    ``ticket``: even and >= 0 (an ordinary call: the CLOSED period it was
    admitted in), odd (the probe's generation), or -1 (rejected).
    ``retry_after``: seconds until a probe is allowed (0.0 while every probe
    permit is taken).  ``changed``: this call moved the breaker OPEN ->
    HALF_OPEN.  A store with ``trip_rules`` also answers ``trip`` (the last
    opening) and, for the failure-rate rule, ``window`` (its counts now).
    """

    ticket: int
    retry_after: float
    failures: int
    state: CircuitState
    changed: bool
    trip: Trip | None = None
    window: WindowCounts | None = None


class Report(NamedTuple):
    """A store's answer to ``record``/``reset``/``force_open``: the state after and
    before; ``trip`` and ``window`` as in :class:`Admission`."""

    state: CircuitState
    old_state: CircuitState
    failures: int
    trip: Trip | None = None
    window: WindowCounts | None = None


class Opening(NamedTuple):
    """How long a failure that opens the breaker keeps it open, for a store that grows
    the open time (``adaptive = True``): the memory breaker's rule, computed atomically
    with the store's own growth level.

    ``multiplier``, ``max_cooldown_ms`` and ``reset_ms`` come from the config
    (``cooldown_multiplier``, ``max_cooldown``, ``cooldown_reset``); ``rand``
    in [0, 1] is the jitter's draw; ``retry_after_ms`` the server's Retry-After
    (None: none).
    """

    multiplier: float
    max_cooldown_ms: int
    reset_ms: int
    rand: float
    retry_after_ms: int | None


class Snapshot(NamedTuple):
    """A read of a shared breaker that changes no state (an elapsed cooldown still reads
    OPEN).  ``failures`` is what ``failure_count`` reports: for the failure-rate rule
    while CLOSED, the failures in the window.  ``trip`` and ``window`` as in
    :class:`Admission`."""

    state: CircuitState
    failures: int
    retry_after: float
    trip: Trip | None = None
    window: WindowCounts | None = None


class BreakerStatus(NamedTuple):
    """One breaker as its store holds it, read from outside the processes that use it.

    What :meth:`RedisStore.breakers() <smoothapi.RedisStore.breakers>` returns
    (and ``python -m smoothapi status`` prints).  ``state`` is the stored
    state, which is what the next call finds; the flags say what that call
    will do:

    * ``name`` - the readable name the breaker wrote (cut to 1024
      characters), or None if the store holds none; ``key`` - its key.
    * ``retry_after`` - seconds until the cooldown ends, on the store's
      clock; 0.0 unless OPEN.
    * ``probe_due`` - the next call is admitted as the probe: an OPEN
      breaker whose cooldown has passed (it still reads OPEN, with
      ``retry_after`` 0.0, until that call moves it to HALF_OPEN), or a
      HALF_OPEN one with no live probe lease (its prober released the probe,
      or crashed and its lease ran out).
    * ``probe_in_flight`` - HALF_OPEN with a live lease: a probe is running
      somewhere in the fleet (with ``half_open_calls`` > 1, calls are
      rejected only once every permit is taken: see ``probe_due``).
    * ``failures`` - what ``failure_count`` reports: consecutive failures,
      the failures that tripped it, or a CLOSED rate breaker's window's.
    * ``probes`` - how many probe leases are live (HALF_OPEN).
    * ``reason`` - why it last opened (:func:`smoothapi.machine.reason`'s
      words: ``failure rate 0.53 over 212 calls``...), "" if it never did.
    * ``window`` - a failure-rate breaker's window now (calls, failures,
      slow), None for the consecutive rule.
    """

    name: str | None
    key: str
    state: CircuitState
    failures: int
    retry_after: float
    probe_due: bool
    probe_in_flight: bool
    probes: int = 0
    reason: str = ""
    window: WindowCounts | None = None


class MalformedBreaker(NamedTuple):
    """A key under the prefix, shaped like a breaker's, whose hash holds something no
    script writes (``problem`` says what); ``name`` is its stored name, if readable."""

    key: str
    name: str | None
    problem: str


class Survey(NamedTuple):
    """What :meth:`RedisStore.survey() <smoothapi.RedisStore.survey>` found: the
    breakers, sorted by name, and the malformed entries beside them."""

    breakers: list[BreakerStatus]
    malformed: list[MalformedBreaker]


class BreakerStore(Protocol):
    """Where a :class:`SharedCircuitBreaker` keeps its state (e.g. :class:`~smoothapi.RedisStore`).

    Every method that changes state must do so atomically on the store's own
    clock.  ``cooldown_ms`` arrives in whole milliseconds.  A store whose class
    sets ``adaptive = True`` also takes ``opening=`` (an :class:`Opening`) in
    ``record``/``record_async`` for failures, and grows the open time as the
    memory breaker does; without it, an opening lasts the plain ``cooldown_ms``.  The ``*_async``
    methods are the same operations for the async driver.  Any exception but
    :class:`~smoothapi.errors.ConfigError` means the store cannot answer: the
    breaker then falls back to local state; raise ``ConfigError`` for a misuse
    that no retry will fix (it reaches the caller).  A store may set
    ``max_open_ms``: the longest open time it holds (a breaker configured for
    more is refused when it is built).

    Tickets: ``acquire`` answers an ordinary call with an even ticket (the
    CLOSED period's number) and the probe with an odd one (its generation);
    neither may ever repeat for a key.  ``record`` with an even ticket counts
    only in CLOSED and only in that period (``0``: the current one).

    Trip rules: a store whose class sets ``trip_rules = True`` takes
    ``rules=`` (a :class:`TripRules`) and ``batch=`` (a :class:`Batch` or
    None) in ``acquire``, ``record`` and ``snapshot`` (and their ``_async``
    twins), takes op ``"slow"`` in ``record``, and applies
    :mod:`smoothapi.machine`'s failure-rate window, slow calls and
    ``half_open_calls`` probes (each its own generation and lease) atomically;
    it adds a batch's successes to its window first, if the breaker is still
    CLOSED in the batch's period.  Its replies carry ``trip`` and ``window``.
    A breaker passes them only when its config uses ``failure_rate``,
    ``slow_call_ms`` or ``half_open_calls > 1``, and refuses, when it is
    built, a store that does not set ``trip_rules`` for such a config; with
    any other config it calls every store with the protocol above (no
    ``rules=``, no ``batch=``, no ``"slow"``), and the store applies the
    seed's rule with one probe.
    """

    @property
    def label(self) -> str:
        """Names the store in logs and events (``redis://host:port/db``); never a secret."""
        ...

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions that mean "the store is unavailable"."""
        ...

    @property
    def retry_interval(self) -> float:
        """Seconds without any store call after an error."""
        ...

    @property
    def supports_sync(self) -> bool:
        """Whether the sync methods can run (else sync reads answer from the last reply)."""
        ...

    def key(self, name: str) -> str:
        """The storage key for the breaker ``name``."""
        ...

    def acquire(self, key: str, threshold: int, cooldown_ms: int) -> Admission:
        """Ask to make one attempt (may claim the probe)."""
        ...

    def record(
        self, key: str, op: Op, ticket: int, *, threshold: int, cooldown_ms: int, name: str
    ) -> Report:
        """Report a ticket's outcome; a stale ticket changes nothing."""
        ...

    def reset(self, key: str, name: str) -> Report:
        """Close the breaker, forget failures, invalidate any probe in flight."""
        ...

    def force_open(self, key: str, cooldown_ms: int, name: str) -> Report:
        """Open the breaker for ``cooldown_ms``, invalidating any probe in flight."""
        ...

    def snapshot(self, key: str) -> Snapshot:
        """Read the state without changing it."""
        ...

    async def acquire_async(self, key: str, threshold: int, cooldown_ms: int) -> Admission:
        """:meth:`acquire` for the async driver."""
        ...

    async def record_async(
        self, key: str, op: Op, ticket: int, *, threshold: int, cooldown_ms: int, name: str
    ) -> Report:
        """:meth:`record` for the async driver."""
        ...

    async def reset_async(self, key: str, name: str) -> Report:
        """:meth:`reset` for the async driver."""
        ...

    async def force_open_async(self, key: str, cooldown_ms: int, name: str) -> Report:
        """:meth:`force_open` for the async driver."""
        ...

    async def snapshot_async(self, key: str) -> Snapshot:
        """:meth:`snapshot` for the async driver."""
        ...
