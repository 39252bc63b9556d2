"""Load control: the stages a call passes before each attempt (issue 15).

Theory of operation
-------------------
Three optional stages guard each attempt, in this order, all off unless
configured (:class:`~smoothapi.config.ResilientConfig`'s ``throttle``,
``rate_limit`` and ``bulkhead``):

1. :class:`Throttle` - adaptive throttling (Google SRE): shed the call
   locally with probability ``max(0, (requests - k * accepts) / (requests +
   1))`` over a sliding window.  First because it is the cheapest and spends
   nothing.
2. :class:`TokenBucket` - the rate limit: reserve a token, then wait for it.
   A reservation is taken in arrival order (the bucket may go negative: the
   n-th caller waits n tokens' time), so waiters are served first come,
   first served without a queue.  It also follows the server
   (:mod:`smoothapi.rate_headers`): "``n`` requests remain until ``t``".
3. :class:`Bulkhead` - at most ``max_concurrent`` attempts in flight; the
   others wait in one FIFO queue, threads and coroutines alike.  Last, so a
   permit is held only while an attempt runs, not while its call waits for
   a token.

A call that a stage refuses gets a :class:`~smoothapi.LoadShedError` (or
the fallback); what an earlier stage took is given back.  The pure parts
(the bucket's and the throttle's arithmetic) take ``now`` as an argument, so
tests drive them with a fake clock; :class:`LoadControl` adds the waiting,
with the driver's ``sleep`` (so :mod:`smoothapi.testing`'s instant sleeps
apply) and, for the bulkhead's queue, a per-waiter event (a
``threading.Event``, an asyncio future or a trio event).  The flow
(:mod:`smoothapi.flow`) calls :meth:`LoadControl.enter_sync` /
:meth:`~LoadControl.enter_async` through its ``Gate`` decision and
:meth:`LoadControl.leave` through ``Leave``.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from . import _runtime
from .config import BulkheadConfig, RateLimitConfig, ResilientConfig, ThrottleConfig
from .errors import ConfigError, LoadShedError

if TYPE_CHECKING:
    from .rate_headers import ServerLimit

__all__ = [
    "BULKHEAD",
    "RATE_LIMIT",
    "THROTTLE",
    "Admission",
    "Bulkhead",
    "LoadControl",
    "Throttle",
    "TokenBucket",
]

BULKHEAD: Final = "bulkhead"
RATE_LIMIT: Final = "rate_limit"
THROTTLE: Final = "throttle"

#: Buckets of the throttle's sliding window (as the breaker's failure-rate window).
BUCKETS: Final = 10


# -- the pure parts ---------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` banked; reservations in arrival order.

    Not thread-safe by itself: :class:`LoadControl` holds a lock around it.
    ``tokens`` may go below zero: it is then the (negative) number of tokens
    reserved ahead, which the next reservation waits out.
    """

    __slots__ = ("allow", "allow_until", "allowed", "burst", "rate", "stamp", "tokens")

    #: False: the caller serialises the calls (LoadControl's lock).  A bucket whose calls
    #: do I/O (the fleet's, in Redis) locks its own state instead, never across the I/O.
    locks_itself = False

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now
        # What the server last said: `allowed` more requests before `allow_until` (None:
        # nothing); `allow` is what is left of it.  Every reservation before the reset
        # takes one, also one that waits for the reset (`allow` then goes below zero), so
        # that giving back a token can never open more than the server allowed.
        self.allow = 0
        self.allowed = 0
        self.allow_until: float | None = None

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def reserve(self, now: float, max_wait: float) -> float | None:
        """Take a token: the seconds to wait before using it, or None (nothing taken).

        None when the token would come later than ``max_wait`` from ``now``.
        """
        self._refill(now)
        wait = 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate
        until = self.allow_until
        server = False
        if until is not None:
            if now >= until:
                self.allow_until = None
            else:
                server = True
                if self.allow <= 0:
                    # The server allows nothing more before its reset: the first token after it.
                    wait = max(wait, until - now)
        if wait > max_wait:
            return None
        self.tokens -= 1.0
        if server:
            self.allow -= 1
        return wait

    def refund(self, now: float) -> None:
        """Give back a token reserved by a call that made no attempt with it.

        Before the server's reset it also goes back to the server's allowance, which
        never grows past what the server said (the token may have been reserved
        before the server spoke, or for after its reset).
        """
        self._refill(now)
        self.tokens = min(self.burst, self.tokens + 1.0)
        if self.allow_until is not None and now < self.allow_until:
            self.allow = min(self.allowed, self.allow + 1)

    def next_token(self, now: float) -> float:
        """Seconds from ``now`` until a reservation would need no wait."""
        self._refill(now)
        wait = 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate
        until = self.allow_until
        if until is not None and now < until and self.allow <= 0:
            wait = max(wait, until - now)
        return wait

    def follow(self, now: float, limit: ServerLimit) -> None:
        """The server said: ``limit.remaining`` more requests until ``limit.reset`` from now."""
        if limit.reset <= 0:
            return
        self.allow = self.allowed = limit.remaining
        self.allow_until = now + limit.reset


class Throttle:
    """The SRE client-side throttle's counts over a sliding window of ten buckets.

    Not thread-safe by itself: a count lost to a race only nudges a
    probability, so :class:`LoadControl` keeps it lock-free.
    """

    __slots__ = ("accepts", "epochs", "k", "requests", "span")

    def __init__(self, config: ThrottleConfig) -> None:
        self.k = config.k
        self.span = config.window_ms / 1000.0 / BUCKETS
        self.epochs = [-1] * BUCKETS
        self.requests = [0] * BUCKETS
        self.accepts = [0] * BUCKETS

    def _slot(self, now: float) -> int:
        epoch = int(now // self.span)
        slot = epoch % BUCKETS
        if self.epochs[slot] != epoch:
            self.epochs[slot] = epoch
            self.requests[slot] = 0
            self.accepts[slot] = 0
        return slot

    def counts(self, now: float) -> tuple[int, int]:
        """``(requests, accepts)`` over the window ending at ``now``."""
        epoch = int(now // self.span)
        requests = accepts = 0
        for slot in range(BUCKETS):
            if epoch - BUCKETS < self.epochs[slot] <= epoch:
                requests += self.requests[slot]
                accepts += self.accepts[slot]
        return requests, accepts

    def reject_probability(self, now: float) -> float:
        """``max(0, (requests - k * accepts) / (requests + 1))``."""
        requests, accepts = self.counts(now)
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def count(self, now: float, *, accepted: bool) -> None:
        """One request: an attempt made (``accepted`` if the upstream took it) or a shed call."""
        slot = self._slot(now)
        self.requests[slot] += 1
        if accepted:
            self.accepts[slot] += 1


# -- the bulkhead ------------------------------------------------------------------------------


class _Waiter:
    """One queued call: woken with a permit already its own (``granted``)."""

    __slots__ = ("granted", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.granted = False
        self.wake = wake


class Bulkhead:
    """``max_concurrent`` permits and one FIFO queue of waiters (threads and coroutines).

    A permit given back goes straight to the head of the queue (``granted``
    under the lock, then the waiter is woken), so no newcomer can overtake a
    waiter.  A waiter that gives up (its wait ran out, it was cancelled)
    leaves the queue under the same lock; if a permit was granted to it
    meanwhile, it passes the permit on.
    """

    __slots__ = ("_lock", "active", "config", "queue")

    def __init__(self, config: BulkheadConfig) -> None:
        self.config = config
        self.active = 0
        self.queue: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        """Take a permit if one is free and nobody is queued; never waits."""
        with self._lock:
            if self.active < self.config.max_concurrent and not self.queue:
                self.active += 1
                return True
            return False

    def _enqueue(self, wake: Callable[[], None]) -> _Waiter | bool:
        """A permit (True), a place in the queue (the waiter), or False: the queue is full."""
        with self._lock:
            if self.active < self.config.max_concurrent and not self.queue:
                self.active += 1
                return True
            if len(self.queue) >= self.config.max_queue:
                return False
            waiter = _Waiter(wake)
            self.queue.append(waiter)
            return waiter

    def _give_up(self, waiter: _Waiter) -> bool:
        """The waiter stops waiting: True if it holds a permit after all (granted meanwhile)."""
        with self._lock:
            if waiter.granted:
                return True
            self.queue.remove(waiter)  # only a granted waiter has left it
            return False

    def leave(self) -> None:
        """Give a permit back: to the longest waiter, else to the pool."""
        with self._lock:
            if self.queue:
                waiter = self.queue.popleft()
                waiter.granted = True
                wake = waiter.wake
            else:
                self.active -= 1
                return
        wake()

    def enter_sync(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a permit (blocking the thread)."""
        if self.try_enter():  # the usual case: no event to build
            return True
        event = threading.Event()
        place = self._enqueue(event.set)
        if isinstance(place, bool):
            return place
        try:
            event.wait(timeout if timeout > 0 else 0)
        except BaseException:
            if self._give_up(place):
                self.leave()
            raise
        return self._give_up(place)

    async def enter_async(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a permit (under asyncio or trio)."""
        if self.try_enter():  # the usual case: no future to build
            return True
        if _runtime.running_trio():
            return await self._enter_trio(timeout)
        import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            # A permit may be given back from another thread (a sync caller sharing it).
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # its loop is closed: the waiter is gone, pass it on
                self.leave()

        place = self._enqueue(wake)
        if isinstance(place, bool):
            return place
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout if timeout > 0 else 0)
        except asyncio.TimeoutError:
            pass
        except BaseException:
            if self._give_up(place):
                self.leave()
            raise
        return self._give_up(place)

    async def _enter_trio(self, timeout: float) -> bool:
        import trio  # noqa: PLC0415 - only under trio

        event = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake() -> None:
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:  # the run ended: the waiter is gone, pass it on
                self.leave()

        place = self._enqueue(wake)
        if isinstance(place, bool):
            return place
        try:
            with trio.move_on_after(timeout if timeout > 0 else 0):
                await event.wait()
        except BaseException:
            if self._give_up(place):
                self.leave()
            raise
        return self._give_up(place)


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


# -- the stages together ---------------------------------------------------------------------


class Admission:
    """What a call holds after the gate: a reserved token, a permit (either may be absent)."""

    __slots__ = ("permit", "token")

    def __init__(self, token: bool, permit: bool) -> None:
        self.token = token
        self.permit = permit


#: A call that passed stages that hold nothing (the throttle alone).
NOTHING: Final = Admission(token=False, permit=False)


class LoadControl:
    """A mount point's stages for one breaker (decorator) or origin (transports)."""

    __slots__ = (
        "_lock",
        "bucket",
        "bulkhead",
        "follow",
        "name",
        "now",
        "rand",
        "rate",
        "throttle",
    )

    def __init__(
        self,
        config: ResilientConfig,
        name: str,
        now: Callable[[], float],
        rand: Callable[[], float],
    ) -> None:
        self.name = name
        self.now = now
        self.rand = rand
        self.throttle = None if config.throttle is None else Throttle(config.throttle)
        rate: RateLimitConfig | None = config.rate_limit
        self.rate = rate
        self.bucket = None
        self.follow = False
        if rate is not None:
            self.bucket = _bucket(rate, name, now())
            self.follow = rate.follow_server
        self.bulkhead = None if config.bulkhead is None else Bulkhead(config.bulkhead)
        # Serialises the bucket's calls, unless it locks itself (no lock across its I/O).
        self._lock: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext()
            if self.bucket is not None and self.bucket.locks_itself
            else threading.Lock()
        )

    @staticmethod
    def of(
        config: ResilientConfig, name: str, now: Callable[[], float], rand: Callable[[], float]
    ) -> LoadControl | None:
        """The stages ``config`` asks for, or None when it asks for none (nothing to pass)."""
        if config.throttle is None and config.rate_limit is None and config.bulkhead is None:
            return None
        return LoadControl(config, name, now, rand)

    # -- entering --------------------------------------------------------------------------

    def _shed(self, stage: str, retry_after: float = 0.0) -> LoadShedError:
        return LoadShedError(self.name, stage, retry_after)

    def _throttled(self, *, count: bool = True) -> bool:
        """Whether the throttle sheds this call; ``count``: a shed call counts as a request
        (a hedge it refuses does not: the attempt it would have joined is counted)."""
        throttle = self.throttle
        if throttle is None:
            return False
        now = self.now()
        p = throttle.reject_probability(now)
        if p > 0.0 and self.rand() < p:
            if count:  # a shed call is a request that was not accepted
                throttle.count(now, accepted=False)
            return True
        return False

    def _reserve(self, left: float | None) -> float | None:
        """The wait for a token (0.0 without a rate limit), or None: shed."""
        bucket, rate = self.bucket, self.rate
        if bucket is None or rate is None:
            return 0.0
        longest = rate.max_wait if left is None else min(rate.max_wait, max(0.0, left))
        with self._lock:
            return bucket.reserve(self.now(), longest)

    def _next_token(self) -> float:
        bucket = self.bucket
        if bucket is None:
            return 0.0
        with self._lock:
            return bucket.next_token(self.now())

    def _refund(self) -> None:
        bucket = self.bucket
        if bucket is not None:
            with self._lock:
                bucket.refund(self.now())

    def _permit_wait(self, left: float | None) -> float:
        bulkhead = self.bulkhead
        assert bulkhead is not None
        longest = bulkhead.config.max_wait
        return longest if left is None else min(longest, max(0.0, left))

    def _token(self, left: float | None) -> tuple[float, bool] | LoadShedError:
        """The first two stages, which never wait: the throttle's verdict, then a token
        reserved - ``(wait, token)``: the seconds to wait for it, whether one was taken."""
        if self._throttled():
            return self._shed(THROTTLE)
        wait = self._reserve(left)
        if wait is None:
            return self._shed(RATE_LIMIT, self._next_token())
        return wait, self.bucket is not None

    def _permitted(self, admitted: bool, token: bool) -> Admission | LoadShedError:
        """The bulkhead's verdict: the admission, or its token given back and the shed."""
        if admitted:
            return Admission(token, permit=True)
        if token:
            self._refund()
        return self._shed(BULKHEAD)

    def _left_after(self, left: float | None, started: float) -> float:
        """How long the queue may wait: ``max_wait``, cut to the deadline left since ``started``."""
        return self._permit_wait(None if left is None else left - (self.now() - started))

    def enter_sync(
        self, left: float | None, sleep: Callable[[float], None]
    ) -> Admission | LoadShedError:
        """Pass the stages, waiting with ``sleep`` and in the queue; ``left``: the deadline's.

        :meth:`enter_async` is its twin: the two differ only where one awaits.
        """
        started = self.now()
        first = self._token(left)
        if isinstance(first, LoadShedError):
            return first
        wait, token = first
        try:
            if wait > 0:
                sleep(wait)
            if self.bulkhead is None:
                return Admission(token, permit=False) if token else NOTHING
            admitted = self.bulkhead.enter_sync(self._left_after(left, started))
        except BaseException:
            if token:
                self._refund()
            raise
        return self._permitted(admitted, token)

    async def enter_async(
        self, left: float | None, sleep: Callable[[float], Awaitable[None]]
    ) -> Admission | LoadShedError:
        """:meth:`enter_sync` for the async driver (asyncio or trio); cancellable anywhere."""
        started = self.now()
        first = self._token(left)
        if isinstance(first, LoadShedError):
            return first
        wait, token = first
        try:
            if wait > 0:
                await sleep(wait)
            if self.bulkhead is None:
                return Admission(token, permit=False) if token else NOTHING
            admitted = await self.bulkhead.enter_async(self._left_after(left, started))
        except BaseException:
            if token:
                self._refund()
            raise
        return self._permitted(admitted, token)

    def try_enter(self) -> Admission | None:
        """Pass the stages only if none would wait (a hedge): the admission, or None."""
        if self._throttled(count=False):
            return None
        bucket = self.bucket
        if bucket is not None:
            with self._lock:
                if bucket.reserve(self.now(), 0.0) is None:
                    return None
        if self.bulkhead is not None and not self.bulkhead.try_enter():
            if bucket is not None:
                self._refund()
            return None
        return Admission(bucket is not None, self.bulkhead is not None)

    # -- leaving ---------------------------------------------------------------------------

    def leave(
        self,
        admission: Admission,
        made: bool,
        accepted: bool | None = None,
        limit: ServerLimit | None = None,
    ) -> None:
        """The call is done with what it took at the gate.

        ``made``: an attempt was made (else the token is given back, e.g. the
        breaker rejected the call after the gate); ``accepted``: the upstream
        took it (for the throttle; None: do not count it); ``limit``: what the
        response said of the server's rate limit, if anything.
        """
        if admission.permit and self.bulkhead is not None:
            self.bulkhead.leave()
        if not made:
            if admission.token:
                self._refund()
            return
        now = self.now()
        if self.throttle is not None and accepted is not None:
            self.throttle.count(now, accepted=accepted)
        if limit is not None and self.follow and self.bucket is not None:
            with self._lock:
                self.bucket.follow(now, limit)


def _bucket(rate: RateLimitConfig, name: str, now: float) -> TokenBucket:
    """The process's bucket, or with ``rate.store`` the fleet's (found through the package)."""
    if rate.store is None:
        assert rate.burst is not None  # filled in by RateLimitConfig
        return TokenBucket(rate.rate, rate.burst, now)
    find = _runtime.shared_bucket_class
    if find is None:  # cannot happen: importing smoothapi.load runs the package
        raise ConfigError("a rate limit store was given, but smoothapi is not set up")
    shared: TokenBucket = find()(rate, name, now)
    return shared


def percentile(values: list[float], share: float) -> float:
    """The ``share``-th percentile (0-100) of ``values`` (nearest rank; not empty)."""
    ordered = sorted(values)
    # share * n / 100 in that order, less a hair: 7 / 100 * 100 is 7.000000000000001 in
    # floats, whose ceiling would pick the rank above.
    rank = max(1, math.ceil(share * len(ordered) / 100.0 - 1e-9))
    return ordered[rank - 1]
