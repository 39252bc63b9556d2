"""Hedged requests: one more attempt beside a slow one, the first good answer wins.

Theory of operation
-------------------
For the async driver only (:func:`hedged`, called by ``engine.run_async`` in
place of one attempt when ``ResilientConfig.hedging`` is set and the request
may be sent again).  The attempt starts; if no answer came within the hedge
delay, one more starts beside it (up to ``max_hedges``, each a delay after
the last).  The first *acceptable* outcome - a success or an answer (a 404)
- wins; a failure waits for the others still running and, when none is
left, the last failure is the attempt's outcome.  The losers are cancelled
(an httpx request cancelled gives its connection back) and a result a loser
returned anyway is discarded like a retried one.  The breaker, the retry
loop and the events see one attempt with one outcome.

A hedge is sent only if it costs nothing that is scarce: the breaker is
CLOSED with no failure counted (its ``clean_ticket``), the retry budget (if
any) gives a token, and the load-control stages admit it without waiting.

The delay is ``HedgingConfig.delay``, or with ``percentile`` that percentile
of the last 128 successful attempts' durations once 20 are known (never
below ``min_delay``), recomputed every 16 samples.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import _runtime
from .events import HedgeSent, emit
from .flow import ANSWERED, FAILURE, IGNORED, SUCCESS, Outcome, Policy
from .load import Admission, percentile

if TYPE_CHECKING:
    from .config import HedgingConfig

__all__ = ["HedgeDelay", "hedged"]

SAMPLES = 128  # the recent attempts the percentile is taken over
KNOWN = 20  # samples needed before the percentile replaces the fixed delay
EVERY = 16  # samples between two recomputations


class HedgeDelay:
    """The delay before a hedge: fixed, or a percentile of recent attempt durations."""

    __slots__ = ("config", "current", "fresh", "next", "samples")

    def __init__(self, config: HedgingConfig) -> None:
        self.config = config
        self.current = max(config.delay, config.min_delay)
        self.samples: list[float] = []
        self.next = 0  # where the next sample goes once the ring is full
        self.fresh = 0  # samples since the last recomputation

    def record(self, seconds: float) -> None:
        """A successful attempt took ``seconds``: a sample for the percentile."""
        share = self.config.percentile
        if share is None:
            return
        samples = self.samples
        if len(samples) < SAMPLES:
            samples.append(seconds)
        else:
            samples[self.next] = seconds
            self.next = (self.next + 1) % SAMPLES
        self.fresh += 1
        if len(samples) >= KNOWN and self.fresh >= EVERY:
            self.fresh = 0
            self.current = max(self.config.min_delay, percentile(samples, share))


def _tracker(policy: Policy) -> HedgeDelay:
    tracker = policy.hedger
    if tracker is None:
        assert policy.hedging is not None
        tracker = policy.hedger = HedgeDelay(policy.hedging)
    return tracker  # type: ignore[no-any-return]


def _may_hedge(policy: Policy) -> Admission | bool:
    """Whether a hedge may go now: its admission (True without stages), else False."""
    if not policy.breaker.clean_ticket:
        return False
    load = policy.load
    admission: Admission | bool = True
    if load is not None:
        entered = load.try_enter()
        if entered is None:
            return False
        admission = entered
    budget = policy.budget
    if budget is not None and not budget.try_spend():
        if isinstance(admission, Admission) and load is not None:
            load.leave(admission, made=False)
        return False
    return admission


def _final(outcome: Outcome) -> bool:
    """An outcome that ends the race: a success, an answer, or a bug (never hedged away)."""
    kind = outcome.kind
    return kind is SUCCESS or kind is ANSWERED or kind is IGNORED


async def hedged(
    policy: Policy,
    makers: tuple[Callable[[], Awaitable[Any]], Callable[[float], Awaitable[Any]] | None],
    within: float | None,
    classify: Callable[..., Awaitable[Outcome]],
    discard: Callable[[Outcome], Awaitable[None]],
) -> Outcome:
    """Make one attempt, hedged; returns the winning (or last) outcome.

    ``makers``: the mount point's ``attempt()`` and ``attempt_within(seconds)``
    (or None); ``classify(policy, make, *args)`` makes one attempt and
    classifies it (the engine's); ``within``: the seconds left of the call's deadline, if any;
    ``discard(outcome)`` lets a loser's result go.
    """
    attempt, attempt_within = makers
    tracker = _tracker(policy)
    now = policy.breaker.now
    deadline = None if within is None else now() + within

    def start() -> Awaitable[Outcome]:
        if attempt_within is not None and deadline is not None:
            return classify(policy, attempt_within, max(0.0, deadline - now()))
        return classify(policy, attempt)

    began = now()
    if _runtime.running_trio():
        outcome = await _race_trio(policy, start, tracker, discard)
    else:
        outcome = await _race_asyncio(policy, start, tracker, discard)
    if outcome.kind is SUCCESS:
        tracker.record(now() - began)
    return outcome


def _leave(policy: Policy, admission: Admission | bool, outcome: Outcome | None) -> None:
    load = policy.load
    if load is None or not isinstance(admission, Admission):
        return
    if outcome is None:  # cancelled before it answered: the request may have been sent
        load.leave(admission, made=True)
        return
    accepted = None if outcome.kind is IGNORED else outcome.kind is not FAILURE
    load.leave(admission, made=True, accepted=accepted)


async def _race_asyncio(
    policy: Policy,
    start: Callable[[], Awaitable[Outcome]],
    tracker: HedgeDelay,
    discard: Callable[[Outcome], Awaitable[None]],
) -> Outcome:
    import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

    config = policy.hedging
    assert config is not None
    first = asyncio.ensure_future(start())
    running: dict[asyncio.Future[Outcome], Admission | bool] = {first: True}
    hedges = 0
    last: Outcome | None = None
    try:
        while running:
            timeout = tracker.current if hedges < config.max_hedges else None
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # no answer within the delay
                hedges += 1
                admission = _may_hedge(policy)
                if admission is not False:
                    emit(HedgeSent(policy.breaker.name, 1, hedges, timeout or 0.0), policy.hooks)
                    running[asyncio.ensure_future(start())] = admission
                continue
            for task in done:
                outcome = task.result()
                if task is not first:
                    _leave(policy, running[task], outcome)
                del running[task]
                if last is not None and _final(last):
                    await discard(outcome)  # two answers at once: keep the first
                elif last is not None:
                    await discard(last)
                    last = outcome
                else:
                    last = outcome
            if last is not None and _final(last):
                return last
        assert last is not None
        return last
    finally:
        for task in running:
            task.cancel()
        for task, admission in list(running.items()):
            try:
                lost: Outcome | None = await task
            except BaseException:
                lost = None
            if lost is not None:
                await discard(lost)
            if task is not first:
                _leave(policy, admission, None)


async def _race_trio(
    policy: Policy,
    start: Callable[[], Awaitable[Outcome]],
    tracker: HedgeDelay,
    discard: Callable[[Outcome], Awaitable[None]],
) -> Outcome:
    import trio  # noqa: PLC0415 - only under trio

    config = policy.hedging
    assert config is not None
    send, receive = trio.open_memory_channel[tuple[int, Outcome]](config.max_hedges + 1)
    admissions: dict[int, Admission | bool] = {0: True}
    finished: set[int] = set()
    last: Outcome | None = None

    async def run(index: int) -> None:
        outcome = await start()
        await send.send((index, outcome))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0)
        hedges = 0
        while len(finished) < len(admissions):
            timeout = tracker.current if hedges < config.max_hedges else float("inf")
            with trio.move_on_after(timeout) as scope:
                index, outcome = await receive.receive()
            if scope.cancelled_caught:
                hedges += 1
                admission = _may_hedge(policy)
                if admission is not False:
                    emit(HedgeSent(policy.breaker.name, 1, hedges, timeout), policy.hooks)
                    admissions[hedges] = admission
                    nursery.start_soon(run, hedges)
                continue
            finished.add(index)
            if index:
                _leave(policy, admissions[index], outcome)
            if last is not None and _final(last):
                await discard(outcome)
            else:
                if last is not None:
                    await discard(last)
                last = outcome
            if _final(last):
                break
        nursery.cancel_scope.cancel()
    for index, admission in admissions.items():
        if index and index not in finished:
            _leave(policy, admission, None)
    # A loser that answered as the others were cancelled: its result is let go.
    send.close()
    while True:
        try:
            _, outcome = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        await discard(outcome)
    assert last is not None
    return last
