"""What a shared breaker needs besides the rules: a store's outages, and awaiting it safely.

* :class:`Health` - whether a store is down, one record per store, shared by
  every breaker that uses it; only one caller per ``retry_interval`` tries a
  store that is down.
* :func:`store_failed` / :func:`store_recovered` / :func:`entry_malformed` -
  one WARNING and one :class:`~smoothapi.events.StoreUnavailable` per outage,
  one INFO and one :class:`~smoothapi.events.StoreRecovered` when it ends.
* :func:`count` / :func:`counted` - the failure count each shared breaker last
  reported to this process (whether a success must be reported at all).
* :func:`shielded` - await a store call that cancelling the caller cannot cut
  in half.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._runtime import at_fork_child
from .._runtime import running_trio as _running_trio
from ..events import Hook, StoreRecovered, StoreUnavailable, emit
from ..events import logger as smoothapi_logger
from .protocol import BreakerStore, MalformedState

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "Health",
    "caught",
    "count",
    "counted",
    "entry_malformed",
    "health_of",
    "in_background",
    "is_probe",
    "shielded",
    "store_failed",
    "store_recovered",
]

_log = smoothapi_logger()  # the library's logger, with its NullHandler

T = TypeVar("T")


# -- outage bookkeeping, one per store ---------------------------------------------------


class Health:
    """Whether a store is down, shared by every breaker that uses the store."""

    __slots__ = ("__weakref__", "down_since", "lock", "retry_at")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_since: float | None = None
        self.retry_at = 0.0

    def mark_down(self, interval: float) -> bool:
        """Record an error; True when it starts an outage."""
        now = time.monotonic()
        with self.lock:
            first = self.down_since is None
            if first:
                self.down_since = now
            self.retry_at = now + interval
        return first

    def mark_up(self) -> float | None:
        """Record an answer; the seconds the store was down if this ends an outage."""
        with self.lock:
            since = self.down_since
            self.down_since = None
        return None if since is None else time.monotonic() - since

    def claim_retry(self, interval: float) -> bool:
        # Only one caller per interval tries a store that was down: a dead
        # store then costs one timeout per interval, not one per call.
        now = time.monotonic()
        with self.lock:
            if self.down_since is None:
                return True
            if now < self.retry_at:
                return False
            self.retry_at = now + interval
            return True


_healths: weakref.WeakKeyDictionary[Any, Health] = weakref.WeakKeyDictionary()

# The failure count each shared breaker last reported to this process, by (store label,
# key), for the breakers whose count was not 0: whether a success must be reported.
# Bounded, least recently used first out: every acquire and report of a breaker with a
# count moves it to the end, so beyond _COUNTED_MAX only breakers no call has touched
# while _COUNTED_MAX others counted failures are forgotten (abandoned breakers must not
# pile up).  A forgotten breaker is learnt again at its next acquire; only a call admitted
# before it was forgotten skips its success's reset report.
_counted: dict[tuple[str, str], int] = {}
_COUNTED_MAX = 10_000
_healths_lock = threading.Lock()


@at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child (see _runtime).
    global _healths_lock
    _healths_lock = threading.Lock()
    for health in list(_healths.values()):
        health.lock = threading.Lock()


def health_of(store: object) -> Health:
    with _healths_lock:
        try:
            health = _healths.get(store)
            if health is None:
                health = _healths[store] = Health()
        except TypeError:  # unhashable or not weak-referenceable: one record per breaker
            return Health()
        return health


# -- cancellation-safe awaiting --------------------------------------------------------

# Background releases of probes whose acquirer was cancelled; kept so they are not collected.
_background: set[asyncio.Future[Any]] = set()


async def caught(make: Callable[[], Awaitable[T]]) -> tuple[T | None, Exception | None]:
    """``(result, None)``, or ``(None, error)`` if ``make()`` raised.

    A store call awaited through :func:`shielded` runs in a task of its own;
    an error it raised would be kept by that task, and the error's traceback
    by the task's awaiting frame: a reference cycle holding the breaker that
    asked until the garbage collector runs.  Returned, it forms none.
    """
    try:
        return (await make(), None)
    except Exception as exc:
        return (None, exc)


def in_background(work: Awaitable[object]) -> None:
    """Run ``work`` as an asyncio task that nothing awaits (kept until it is done)."""
    import asyncio  # noqa: PLC0415 - orphans exist only under asyncio

    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def is_probe(ticket: int) -> bool:
    """A store's probe ticket (odd and positive); local and rejected ones are negative."""
    return ticket > 0 and ticket % 2 == 1


async def shielded(
    make: Callable[[], Awaitable[T]], orphan: Callable[[T], object] | None = None
) -> T:
    """Await ``make()`` so that cancelling the caller cannot cut the store call in half.

    A store call cut in half may have changed state on the server (claimed
    the probe, say) without anyone hearing about it, and leaves the client's
    connection unusable.  Under trio the call is shielded and finishes (it is
    bounded by the client's socket timeout); under asyncio it runs on as a
    task, and ``orphan`` receives its result if the caller was cancelled.
    """
    if _running_trio():
        import trio  # noqa: PLC0415 - only under trio

        with trio.CancelScope(shield=True):
            return await make()
    import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

    task = asyncio.ensure_future(make())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(functools.partial(_settle_orphan, orphan))
        raise


def _settle_orphan(orphan: Callable[[Any], object] | None, task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        _log.debug("a store call outlived its cancelled caller and failed: %r", error)
    elif orphan is not None:
        orphan(task.result())


def count(seen_key: tuple[str, str], failures: int) -> None:
    """Remember the failure count the store just reported for a breaker."""
    if not failures:
        _counted.pop(seen_key, None)
        return
    # Re-inserted, not updated in place: a dict keeps insertion order, so the front
    # is the least recently used breaker.
    _counted.pop(seen_key, None)
    _counted[seen_key] = failures
    while len(_counted) > _COUNTED_MAX:
        try:
            del _counted[next(iter(_counted))]
        except (KeyError, StopIteration, RuntimeError):  # another thread got there first
            break


def counted(seen_key: tuple[str, str]) -> bool:
    """Whether this process heard of a failure counted for the breaker (and not reset)."""
    return seen_key in _counted


def store_failed(
    health: Health, store: BreakerStore, error: BaseException, hooks: tuple[Hook, ...]
) -> None:
    """The store raised: start an outage (one WARNING, one event), or note it at DEBUG."""
    interval = store.retry_interval
    label = store.label
    if not health.mark_down(interval):
        _log.debug("breaker store %s still unreachable: %r", label, error)
        return
    _log.warning(
        "breaker store %s is unreachable (%s: %s); breakers fall back to "
        "in-process state and try the store again every %gs. Check the server, or the "
        "client's address and credentials.",
        label,
        type(error).__name__,
        error,
        interval,
        extra={
            "smoothapi_event": "store_unavailable",
            "store": label,
            "error_type": type(error).__qualname__,
            "retry_interval": interval,
        },
    )
    emit(StoreUnavailable(label, error), hooks)


def store_recovered(health: Health, store: BreakerStore, hooks: tuple[Hook, ...]) -> None:
    """The store answered: end the outage, if there was one (one INFO, one event)."""
    if health.down_since is None:
        return
    down_for = health.mark_up()
    if down_for is None:  # another thread reported the recovery
        return
    label = store.label
    _log.info(
        "breaker store %s answers again after %.1fs; breakers share its state again",
        label,
        down_for,
        extra={"smoothapi_event": "store_recovered", "store": label, "down_for": down_for},
    )
    emit(StoreRecovered(label, down_for), hooks)


def entry_malformed(name: str, key: str, store: BreakerStore, error: MalformedState) -> None:
    """Only this breaker's entry is bad: it goes local (one WARNING), the store stays up."""
    _log.warning(
        "breaker %s: its entry %s in store %s is malformed (%s); this breaker runs on "
        "in-process state until the entry is fixed or deleted (smoothapi status shows it)",
        name,
        key,
        store.label,
        error,
        extra={"smoothapi_event": "store_entry_malformed", "breaker": name, "store": store.label},
    )
