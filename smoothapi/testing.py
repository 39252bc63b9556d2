"""Helpers for *your* test suite: instant retries and a clock you move by hand.

::

    from smoothapi.testing import FakeClock, set_testing

    def test_recovers():
        clock = FakeClock()
        with set_testing(clock=clock):      # retries sleep 0 s; breakers read `clock`
            ...                             # drive the code until the breaker opens
            clock.advance(10)               # the cooldown passes without sleeping
            ...                             # the next call is the probe

``set_testing()`` works as a plain call (``set_testing(True)`` /
``set_testing(False)``) or as a context manager that restores the previous
settings on exit.  While it is on, every backoff or ``Retry-After`` sleep is
skipped - and, with a :class:`FakeClock`, added to the clock, so time still
"passes" as far as breakers can tell.  Breakers built with their own
``clock=`` keep it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType

from . import _runtime

__all__ = ["FakeClock", "set_testing"]

_LIVE_CLOCKS: weakref.WeakSet[FakeClock] = weakref.WeakSet()  # for the fork hook below


@_runtime.at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child (see _runtime).
    for clock in list(_LIVE_CLOCKS):
        clock._lock = threading.Lock()


class FakeClock:
    """A monotonic clock that moves only when told to (thread-safe)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        _LIVE_CLOCKS.add(self)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance() takes seconds >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds

    @property
    def now(self) -> float:
        return self._now


class set_testing:  # used like a function, and as a context manager
    """Make retries instant (and optionally install a fake clock) for the whole process."""

    def __init__(self, instant: bool = True, *, clock: Callable[[], float] | None = None) -> None:
        self._saved = (_runtime.instant_sleep, _runtime.clock, _runtime.on_skipped_sleep)
        _runtime.instant_sleep = instant
        if not instant and clock is None:
            _runtime.clock = time.monotonic
            _runtime.on_skipped_sleep = None
            return
        if clock is not None:
            _runtime.clock = clock
            advance = getattr(clock, "advance", None)
            _runtime.on_skipped_sleep = advance if callable(advance) else None
        else:
            _runtime.on_skipped_sleep = None

    def __enter__(self) -> set_testing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _runtime.instant_sleep, _runtime.clock, _runtime.on_skipped_sleep = self._saved
