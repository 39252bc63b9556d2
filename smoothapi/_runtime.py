"""Process-wide switches that :mod:`smoothapi.testing` flips, and the context a
running attempt leaves for the mount points called inside it (:class:`Mark`).

Kept in their own module so the engine reads them with one attribute lookup
on the slow path, and never on the happy path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

# The clock every breaker without an injected clock reads.
clock: Callable[[], float] = time.monotonic
# When True, backoff sleeps return at once (and advance ``clock`` if it can be advanced).
instant_sleep: bool = False
# Called with the seconds a sleep would have taken while ``instant_sleep`` is on.
on_skipped_sleep: Callable[[float], object] | None = None


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

    def under(self, outer: Mark) -> Mark:
        """This mark inside ``outer``'s attempt: both keep their books, either retries."""
        return Mark(self.breakers + outer.breakers, self.retries or outer.retries)


# The mark of the mount point whose attempt is running, in a one-item list that the
# attempt empties ([None]) when it ends.  Tasks and threads started inside the attempt
# inherit the context, hence the list: they see it empty once the attempt is over,
# so a mark never outlives the call that set it.
scope: ContextVar[list[Mark | None] | None] = ContextVar("smoothapi_scope", default=None)


def live_mark() -> Mark | None:
    """The mark of the outer mount point whose attempt is running here, if any."""
    current = scope.get()
    return None if current is None else current[0]


def holds(breaker: object) -> bool:
    """Whether an outer mount point's running attempt keeps ``breaker``'s books."""
    current = scope.get()
    if current is None:
        return False
    mark = current[0]
    return mark is not None and breaker in mark.breakers


def enter(mark: Mark) -> tuple[list[Mark | None], Token[list[Mark | None] | None] | None]:
    """Mark an attempt as running in this context (inside any live outer one); see :func:`leave`."""
    outer = scope.get()
    outer_mark = None if outer is None else outer[0]
    current: list[Mark | None] = [mark if outer_mark is None else mark.under(outer_mark)]
    token = scope.set(current)
    return current, None if outer_mark is None else token


def leave(current: list[Mark | None], token: Token[list[Mark | None] | None] | None) -> None:
    """End :func:`enter`: the mark is dead for every context that inherited it.

    The outer mark, if there was a live one, is restored; otherwise the dead
    mark stays, which reads as none (and saves a reset on the happy path).
    """
    current[0] = None
    if token is not None:
        scope.reset(token)


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
