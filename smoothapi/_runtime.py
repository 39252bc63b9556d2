"""Process-wide switches that :mod:`smoothapi.testing` flips, and the context a
running attempt leaves for the mount points called inside it (:class:`Mark`).

Kept in their own module so the engine reads them with one attribute lookup
on the slow path, and never on the happy path.
"""

from __future__ import annotations

import sys
import time
from contextvars import ContextVar

# `import smoothapi` loads this module: typing and collections.abc (~10 ms with re) are
# for the type checker only, as in every module the package loads at import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# The clock every breaker without an injected clock reads.
clock: Callable[[], float] = time.monotonic
# When True, backoff sleeps return at once (and advance ``clock`` if it can be advanced).
instant_sleep: bool = False
# Called with the seconds a sleep would have taken while ``instant_sleep`` is on.
on_skipped_sleep: Callable[[float], object] | None = None
# Returns the class of a breaker kept in a store (SharedCircuitBreaker).  Set by the
# package (smoothapi/__init__.py), above every layer: the breaker builds one when given a
# store without importing the stores, which sit above it.
shared_breaker_class: Callable[[], type] | None = None
# Returns the class of a retry budget kept in a store (SharedRetryBudget), set by the
# package for the same reason: the budget sits below the stores.
shared_budget_class: Callable[[], type] | None = None
# Returns the class of a rate limit's token bucket kept in a store (SharedTokenBucket),
# for the same reason: the load-control stages sit below the stores.
shared_bucket_class: Callable[[], type] | None = None
# Run once per process at its first event, before that event is delivered: the package
# registers its automatic telemetry here without importing the events (see
# smoothapi.events.on_first_event, which adds to the same list).
first_event_setups: list[Callable[[], object]] = []


class Mark:
    """What a mount point making an attempt tells the mount points called inside it.

    ``breakers``: the breakers whose books it keeps - a transport given one of
    them (``breaker=``) leaves the bookkeeping to it: one attempt is counted
    once, and the outer probe is not rejected by its own transport.
    ``retries``: it will retry a failed attempt, so an inner mount point makes
    one attempt per request (its breaker still counts and rejects): nested
    mount points do not multiply retries.
    """

    __slots__ = ("breakers", "retries")

    def __init__(self, breakers: tuple[object, ...], retries: bool) -> None:
        self.breakers = breakers
        self.retries = retries


# A running attempt's cell is a two-item list ``[mark, parent]``: the attempt empties it
# (``[None, parent]``) when it ends; ``parent`` is the cell of the attempt it runs inside,
# if that one was live.  (A list, so that ending it is one store; typed Any to stay cheap.)
#
# The cell of the innermost running attempt.  Tasks and threads started inside an attempt
# inherit the context, hence cells rather than marks: once an attempt is over its cell is
# empty for everyone holding it, so a mark never outlives the call that set it - and an
# inner attempt never carries an outer one's mark past the outer's end (it links to the
# outer cell instead of copying its mark).
scope: ContextVar[Any] = ContextVar("smoothapi_scope", default=None)


def live_cell(cell: Any) -> Any:
    """``cell`` or its nearest live ancestor (None when no attempt runs around us)."""
    while cell is not None and cell[0] is None:
        cell = cell[1]
    return cell


def holds(breaker: object) -> bool:
    """Whether a running outer attempt keeps ``breaker``'s books."""
    cell = live_cell(scope.get())
    while cell is not None:
        if breaker in cell[0].breakers:
            return True
        cell = live_cell(cell[1])
    return False


def outer_retries() -> bool:
    """Whether a running outer attempt belongs to a mount point that will retry it."""
    cell = live_cell(scope.get())
    while cell is not None:
        if cell[0].retries:
            return True
        cell = live_cell(cell[1])
    return False


def enter(mark: Mark) -> Any:
    """Mark an attempt as running in this context, inside any live outer one; see :func:`leave`.

    Links only to a live ancestor, so repeated attempts never grow a chain of dead cells.
    """
    cell = [mark, live_cell(scope.get())]
    scope.set(cell)
    return cell


def leave(cell: Any) -> None:
    """End :func:`enter`: the mark is dead for every context that inherited it.

    The context keeps the dead cell (cheaper than a reset): it reads as its live parent.
    """
    cell[0] = None


# Set by smoothapi.otel.instrument(): wraps each transport attempt in a client span.
# None (the default) costs a transport one attribute read per call.
tracing: Any = None


def running_trio() -> bool:
    """Whether this code runs inside a trio event loop (trio is imported only if it is)."""
    if sys.modules.get("trio") is None:
        return False
    try:
        import sniffio  # noqa: PLC0415
    except ImportError:  # pragma: no cover - trio always ships sniffio
        return False
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


# -- fork safety --------------------------------------------------------------------------
# A child of os.fork() (gunicorn's and multiprocessing's "fork") gets a copy of every lock
# in the state it had, but only the thread that forked: a lock another thread held at that
# moment stays held for ever in the child, and the child's first call would hang on it.
# Every module of ours that owns a lock (or per-process state such as a runner task)
# registers here what to re-create in the child; one os.register_at_fork runs them all,
# in registration order, before the child runs anything else of ours.

_before_fork: list[Callable[[], object]] = []
_after_fork_child: list[Callable[[], object]] = []


def before_fork(callback: Callable[[], object]) -> Callable[[], object]:
    """Run ``callback`` in the forking thread just before ``os.fork()`` (keep it short)."""
    _before_fork.append(callback)
    return callback


def at_fork_child(callback: Callable[[], object]) -> Callable[[], object]:
    """Run ``callback`` in a forked child to re-create the locks and state it owns."""
    _after_fork_child.append(callback)
    return callback


def _run(callbacks: list[Callable[[], object]]) -> None:
    for callback in list(callbacks):
        try:
            callback()
        except Exception:  # noqa: S112 - one failing callback must not stop the rest, nor the fork
            continue


def _register_at_fork() -> None:
    import os  # noqa: PLC0415 - always loaded already; kept out of the module's namespace

    register = getattr(os, "register_at_fork", None)
    if register is not None:  # not on Windows, which cannot fork
        register(before=lambda: _run(_before_fork), after_in_child=lambda: _run(_after_fork_child))


_register_at_fork()
