"""Hedged requests: one more attempt beside a slow one, the first good answer wins.

Theory of operation
-------------------
For the async driver only (:func:`hedged`, called by ``engine.run_async`` in
place of one attempt when ``ResilientConfig.hedging`` is set and the request
may be sent again).  The attempt starts; if no answer came within the hedge
delay, one more starts beside it (up to ``max_hedges``, each a delay after
the last was due).  The first *final* outcome - a success, an answer (a
404), or an ignored one (a bug, never hedged away) - wins; a failure waits
for the others still running and, when none is left, the last failure is
the attempt's outcome.  The losers are cancelled (an httpx request cancelled
closes its connection) and waited for, and a result a loser returned anyway
- or a failure a later outcome replaced - is discarded like a retried one
(its connection goes back to the pool).  The breaker, the retry loop and the
events see one attempt with one outcome.

The bookkeeping is written once (:class:`_Race`, no I/O); the asyncio and
trio drivers add the waiting.  Whatever ends the race - a winner, the
caller's cancellation, an error - the drivers cancel and wait for every
attempt still running, give back what each hedge took at the load-control
stages, and let go of every result that is not returned - a 503 in hand
when the caller is cancelled too.  A result is let go to the end even if
the caller is cancelled meanwhile (a drain cut short would leave its
connection active; a drain is bounded by itself): under asyncio it runs as
a task that is waited for, under trio in a shielded scope.  An asyncio
caller cancelled while the losers wind down stays cancelled: the losers are
cancelled once more (as an asyncio ``TaskGroup`` does), waited for, then
``CancelledError`` is raised.  Under trio the caller's ``Cancelled`` is
raised as itself, not in an exception group, as an attempt that is not
hedged raises it.

A hedge is sent only if it costs nothing that is scarce: the breaker is
on its happy path (its ``clean_ticket``: CLOSED, and for the consecutive
rule with no failure counted; the failure-rate rule keeps it while its
window counts failures, as in memory), the call's deadline
(if any) has time left, the load-control stages admit it without waiting,
and the retry budget (if any) gives a token.  A hedge refused still uses up
its turn (``max_hedges`` counts the turns).

Time is the event loop's (``loop.time()`` or ``trio.current_time()``): the
delays are waited on that clock, so the attempts' durations that feed the
percentile are measured on it too.  The delay is ``HedgingConfig.delay``,
or with ``percentile`` that percentile of the last 128 successful
attempts' durations once 20 are known (never below ``min_delay``),
recomputed every 16 samples.  A hedged attempt's duration is the caller's:
from its start to the winner's answer.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import _runtime
from .events import HedgeSent, emit
from .flow import ANSWERED, IGNORED, SUCCESS, Outcome, Policy, upstream_accepted
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


def _leave(policy: Policy, admission: Admission | bool, outcome: Outcome | None) -> None:
    """A hedge is over: give back what it took at the stages, counting its verdict if known."""
    load = policy.load
    if load is None or not isinstance(admission, Admission):
        return
    if outcome is None:  # cancelled before it answered: the request may have been sent
        load.leave(admission, made=True)
        return
    load.leave(admission, made=True, accepted=upstream_accepted(outcome))


class _Race:
    """One hedged attempt's bookkeeping, shared by both drivers (no I/O, no waiting).

    ``running`` maps each attempt still running (0 is the first, ``n`` the
    ``n``-th hedge) to what it took at the stages; ``last`` is the outcome the
    race returns so far.  The drivers start attempt 0, then call :meth:`wait`
    (how long to wait for an answer), :meth:`hedge` when that ran out,
    :meth:`answered` for each outcome, until :attr:`over`; then
    :meth:`lost` for each attempt they cancelled.
    """

    __slots__ = (
        "attempt",
        "clock",
        "deadline",
        "delay",
        "due",
        "hedges",
        "last",
        "policy",
        "running",
        "tracker",
    )

    def __init__(
        self,
        policy: Policy,
        tracker: HedgeDelay,
        clock: Callable[[], float],
        within: float | None,
        attempt: int = 1,
    ) -> None:
        self.policy = policy
        self.attempt = attempt  # which of the call's attempts this is
        self.tracker = tracker
        self.clock = clock
        now = clock()
        self.deadline = None if within is None else now + within
        self.delay = tracker.current  # the delay before the next hedge
        self.due = now + self.delay  # when it is sent, on the driver's clock
        self.hedges = 0  # the hedges' turns taken, sent or refused
        self.running: dict[int, Admission | bool] = {0: True}
        self.last: Outcome | None = None

    @property
    def over(self) -> bool:
        """A final outcome came in, or every attempt failed."""
        last = self.last
        return last is not None and (_final(last) or not self.running)

    def left(self) -> float | None:
        """Seconds of the call's deadline left (None: no deadline)."""
        deadline = self.deadline
        return None if deadline is None else max(0.0, deadline - self.clock())

    def wait(self) -> float | None:
        """Seconds to wait for an answer before the next hedge is due (None: no more hedges)."""
        config = self.policy.hedging
        assert config is not None
        if self.hedges >= config.max_hedges:
            return None
        return max(0.0, self.due - self.clock())

    def hedge(self) -> int | None:
        """The delay ran out: the index of a hedge to start (admitted, announced), or None."""
        self.hedges += 1
        delay, self.delay = self.delay, self.tracker.current
        self.due = self.clock() + self.delay
        policy = self.policy
        left = self.left()
        if left is not None and left <= 0:  # no time left for one more request
            return None
        admission = _may_hedge(policy)
        if admission is False:
            return None
        index = self.hedges
        self.running[index] = admission
        emit(HedgeSent(policy.breaker.name, self.attempt, index, delay), policy.hooks)
        return index

    def answered(self, index: int, outcome: Outcome) -> Outcome | None:
        """Attempt ``index`` answered ``outcome``: returns an outcome to let go, if any."""
        admission = self.running.pop(index)
        if index:
            _leave(self.policy, admission, outcome)
        last = self.last
        if last is not None and _final(last):
            return outcome  # the race is won already: a loser's answer
        self.last = outcome
        return last  # an earlier failure, replaced (None at first)

    def lost(self, index: int, outcome: Outcome | None) -> None:
        """Attempt ``index`` was cancelled (``outcome``: what it returned anyway, if known)."""
        admission = self.running.pop(index, None)
        if index and admission is not None:
            _leave(self.policy, admission, outcome)

    def spare(self, ok: bool) -> Outcome | None:
        """The race ended (``ok``: it returns :attr:`last`): the outcome to let go, if any."""
        last = self.last
        return None if ok or last is None else last


async def hedged(
    policy: Policy,
    makers: tuple[Callable[[], Awaitable[Any]], Callable[[float], Awaitable[Any]] | None],
    within: float | None,
    classify: Callable[..., Awaitable[Outcome]],
    discard: Callable[[Outcome], Awaitable[None]],
    *,
    attempt: int = 1,
) -> Outcome:
    """Make one attempt, hedged; returns the winning (or last) outcome.

    ``makers``: the mount point's ``attempt()`` and ``attempt_within(seconds)``
    (or None); ``classify(policy, make, *args)`` makes one attempt and
    classifies it (the engine's); ``within``: the seconds left of the call's deadline, if any;
    ``discard(outcome)`` lets a loser's result go; ``attempt``: which of the
    call's attempts this is (1 for the first), as ``HedgeSent`` reports it.
    """
    make, make_within = makers
    tracker = _tracker(policy)
    trio = _runtime.running_trio()
    if trio:
        import trio as trio_module  # noqa: PLC0415 - only under trio

        clock: Callable[[], float] = trio_module.current_time
    else:
        import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

        clock = asyncio.get_running_loop().time
    race = _Race(policy, tracker, clock, within, attempt)

    def start() -> Awaitable[Outcome]:
        if make_within is not None and race.deadline is not None:
            return classify(policy, make_within, race.left())
        return classify(policy, make)

    began = clock()
    if trio:
        outcome = await _race_trio(race, start, discard)
    else:
        outcome = await _race_asyncio(race, start, discard)
    if outcome.kind is SUCCESS:
        tracker.record(clock() - began)
    return outcome


async def _race_asyncio(
    race: _Race,
    start: Callable[[], Awaitable[Outcome]],
    discard: Callable[[Outcome], Awaitable[None]],
) -> Outcome:
    import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

    tasks: dict[asyncio.Future[Outcome], int] = {asyncio.ensure_future(start()): 0}
    ok = closing = False
    try:
        while not race.over:
            done, _ = await asyncio.wait(
                tasks, timeout=race.wait(), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # no answer within the delay
                index = race.hedge()
                if index is not None:
                    tasks[asyncio.ensure_future(start())] = index
                continue
            for task in sorted(done, key=tasks.__getitem__):  # two at once: the first wins
                let_go = race.answered(tasks.pop(task), task.result())
                if let_go is not None and await _let_go_asyncio(discard, [let_go]):
                    raise asyncio.CancelledError
        ok = True
    except GeneratorExit:  # the coroutine is being closed: nothing may be awaited
        closing = True
        for task, index in tasks.items():
            task.cancel()
            race.lost(index, None)
        raise
    finally:
        if not closing and (tasks or not ok):
            await _wind_down_asyncio(race, tasks, discard, ok)
    last = race.last
    assert last is not None
    return last


async def _wait_all_asyncio(pending: set[Any], *, cut: bool = False) -> bool:
    """Wait until every task in ``pending`` is done; True if the caller was cancelled meanwhile.

    A cancellation does not stop the wait (anyio's cancel scopes deliver it again
    at every step): the tasks are bounded by themselves - cancelled attempts,
    drains.  With ``cut``, the first one cancels the tasks again, once (as an
    asyncio TaskGroup does), to cut a slow cleanup short.
    """
    import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

    cancelled = False
    while pending := {task for task in pending if not task.done()}:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            if cut and not cancelled:
                for task in pending:
                    task.cancel()
            cancelled = True
    return cancelled


async def _let_go_asyncio(
    discard: Callable[[Outcome], Awaitable[None]], outcomes: list[Outcome]
) -> bool:
    """Let ``outcomes`` go, each to the end even if the caller is cancelled meanwhile (a
    drain cut short leaves its connection active); True if it was."""
    import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

    drains = {asyncio.ensure_future(discard(outcome)) for outcome in outcomes}
    cancelled = await _wait_all_asyncio(drains)
    for drain in drains:  # a drain's own error is the drain's business: retrieved, dropped
        if not drain.cancelled():
            drain.exception()
    return cancelled


async def _wind_down_asyncio(
    race: _Race,
    tasks: dict[Any, int],
    discard: Callable[[Outcome], Awaitable[None]],
    ok: bool,
) -> None:
    """Cancel the attempts still running, wait for them all, let their results go.

    A cancellation of the caller meanwhile is raised once they are done: no
    task is left behind, no cancellation lost.  ``ok``: the race is over and
    its outcome is to be returned (else an error or a cancellation ended it).
    """
    import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

    for task in tasks:
        task.cancel()
    # A cancellation that arrives now, once the race is over, cuts the losers' cleanup
    # short; one that ended the race (anyio delivers it again and again) does not.
    cancelled = await _wait_all_asyncio(set(tasks), cut=ok)
    let_go: list[Outcome] = []
    for task, index in tasks.items():
        outcome = None if task.cancelled() or task.exception() is not None else task.result()
        race.lost(index, outcome)
        if outcome is not None:
            let_go.append(outcome)
    tasks.clear()
    kept = ok and not cancelled  # the winner goes to the caller, unless it was cancelled
    spare = race.spare(kept)
    if spare is not None:
        let_go.append(spare)
    if let_go and await _let_go_asyncio(discard, let_go):
        cancelled = True
        if kept and race.last is not None:  # cancelled while letting go: not returned either
            await _let_go_asyncio(discard, [race.last])
    if cancelled:
        raise asyncio.CancelledError


async def _race_trio(
    race: _Race,
    start: Callable[[], Awaitable[Outcome]],
    discard: Callable[[Outcome], Awaitable[None]],
) -> Outcome:
    import trio  # noqa: PLC0415 - only under trio

    # Unbounded, and sent to without a checkpoint: an answer is never lost to a
    # cancellation between the attempt's return and its report.
    send, receive = trio.open_memory_channel[tuple[int, Outcome]](math.inf)

    async def run(index: int) -> None:
        send.send_nowait((index, await start()))

    ok = False
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(run, 0)
                while not race.over:
                    wait = race.wait()
                    answer: tuple[int, Outcome] | None = None
                    with trio.move_on_after(math.inf if wait is None else wait):
                        answer = await receive.receive()
                    if answer is None:  # no answer within the delay
                        index = race.hedge()
                        if index is not None:
                            nursery.start_soon(run, index)
                        continue
                    let_go = race.answered(*answer)
                    if let_go is not None:
                        with trio.CancelScope(shield=True):  # a drain is bounded by itself
                            await discard(let_go)
                ok = True
            except BaseException as exc:  # raised below, as itself
                # A nursery would wrap it in an exception group; a call that is not
                # hedged raises the bare exception (the caller's Cancelled, above all).
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
    finally:
        # The nursery waited for every attempt.  What they answered as they were
        # cancelled, the attempts that never answered, a failure not returned: let go.
        send.close()
        let_go_all: list[Outcome] = []
        while True:
            try:
                index, outcome = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            race.lost(index, outcome)
            let_go_all.append(outcome)
        for index in list(race.running):
            race.lost(index, None)
        spare = race.spare(ok)
        if spare is not None:
            let_go_all.append(spare)
        if let_go_all:
            with trio.CancelScope(shield=True):  # a drain is bounded by itself
                for outcome in let_go_all:
                    await discard(outcome)
    last = race.last
    assert last is not None
    return last
