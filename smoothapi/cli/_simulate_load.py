"""The simulator's load-control stages and hedged requests, on the virtual clock.

Theory of operation
-------------------
With a load-control stage configured, :func:`~smoothapi.flow.retry_flow`
yields ``Gate(left)`` before each attempt and ``Leave(...)`` after it.  The
library's drivers hand them to :class:`~smoothapi.load.LoadControl`, which
waits with real sleeps and, for the bulkhead, a thread's event: the
simulator can do neither.  :class:`VirtualLoad` (one per policy, so one per
breaker) plays the same stages on the event heap instead, in the library's
order and with its pure parts:

1. the throttle - :class:`~smoothapi.load.Throttle`'s probability, drawn
   with the policy's seeded ``rand``;
2. the rate limit - :class:`~smoothapi.load.TokenBucket`'s reservation; a
   wait for the token is a virtual sleep (the call resumes that much later);
3. the bulkhead - a virtual FIFO queue: ``max_concurrent`` permits, at most
   ``max_queue`` waiters, each with a timeout event ``max_wait`` (or the
   deadline's time left) later; a permit given back goes to the head of the
   queue at once, so no newcomer overtakes a waiter.

What the call gets back is what ``LoadControl.enter_sync`` returns: an
:class:`~smoothapi.load.Admission` or a :class:`~smoothapi.LoadShedError`, and
what an earlier stage took is given back on a refusal.  ``Leave`` releases
the virtual permit and hands the rest to ``LoadControl.leave`` itself (the
throttle's count, a refund, following the server's rate limit).

Hedging (:mod:`smoothapi.hedge`, async-only in the library) is simulated
the same way: an attempt is a :class:`_Race`.  Its first request goes out;
if no answer came within the hedge delay, one more request goes out beside
it (up to ``max_hedges`` turns, each a delay after the last was due) - only
while the breaker is CLOSED with no failure counted, the call's deadline has
time left, the stages admit it without waiting and the retry budget (if any)
gives a token; a turn refused is used up all the same.  The first success or
answer wins; a failure waits for the others.  The losers' requests were
sent, so they loaded the upstream (and count in its figures), but their
answers are dropped and their admissions given back when the race ends, as
a cancelled task's are.

Every event of these stages is an ``(time, seq, call, step)`` entry on the
simulator's heap whose ``step`` is a :class:`Step`: run at its time, it
returns the reply to send into the call's flow, or :data:`PARKED` when the
call still waits.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Any, Final

from ..engine import ANSWERED, FAILURE, IGNORED, SUCCESS, Leave, Outcome, Policy
from ..errors import LoadShedError
from ..events import HedgeSent, emit
from ..hedge import HedgeDelay
from ..load import BULKHEAD, RATE_LIMIT, THROTTLE, Admission

if TYPE_CHECKING:
    from ..config import BulkheadConfig, ResilientConfig

__all__ = [
    "PARKED",
    "STAGES",
    "Events",
    "SimResponse",
    "Step",
    "VirtualLoad",
    "describe_stages",
]

#: A step's result when the call goes on waiting (nothing to send into its flow yet).
PARKED: Final = object()

#: The stages in the order a call passes them; a shed call's code is its index + 1.
STAGES: Final = (THROTTLE, RATE_LIMIT, BULKHEAD)
_CODES: Final = {stage: code for code, stage in enumerate(STAGES, 1)}


class SimResponse:
    """A simulated response: what ``server_limit`` reads (``status_code``, ``headers.get``)."""

    __slots__ = ("headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = _Headers(headers)

    def __repr__(self) -> str:
        return f"<SimResponse [{self.status_code}]>"


class _Headers(dict[str, str]):
    """Header names looked up case-insensitively (the keys are stored lowercased)."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__((name.lower(), value) for name, value in headers.items())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class Events:
    """The simulator's event heap and what the stages report to it.

    ``request(now, bound)`` sends one request to the upstream (and counts it),
    returning its outcome and latency, cut short at ``bound`` seconds (None:
    unbounded).  ``shed`` holds, per call, the code of the stage that shed it
    (0: none); ``hedge_times`` the sending time of every hedge.
    """

    __slots__ = ("counter", "heap", "hedge_times", "hedges_won", "request", "shed")

    def __init__(
        self,
        heap: list[tuple[float, int, Any, Any]],
        counter: count[int],
        request: Callable[[float, float | None], tuple[Outcome, float]],
        calls: int,
    ) -> None:
        self.heap = heap
        self.counter = counter
        self.request = request
        self.shed = bytearray(calls)
        self.hedge_times: list[float] = []
        self.hedges_won = 0

    def at(self, when: float, call: Any, value: Any) -> None:
        """Resume ``call`` at ``when`` with ``value`` (a reply, or a :class:`Step` to run)."""
        heapq.heappush(self.heap, (when, next(self.counter), call, value))


class Step:
    """An event that is not a reply yet: :meth:`run` at its time gives the call's reply."""

    __slots__ = ()

    def run(self, now: float) -> Any:  # pragma: no cover - every step overrides it
        raise NotImplementedError


class VirtualLoad:
    """One policy's load-control stages and hedging on the virtual clock (see the module doc)."""

    __slots__ = (
        "active",
        "bucket",
        "bulkhead",
        "events",
        "load",
        "policy",
        "queue",
        "rate",
        "throttle",
        "tracker",
    )

    def __init__(self, policy: Policy, events: Events) -> None:
        self.policy = policy
        self.events = events
        load = policy.load
        self.load = load
        self.throttle = None if load is None else load.throttle
        self.bucket = None if load is None else load.bucket
        self.rate = None if load is None else load.rate
        bulkhead = None if load is None else load.bulkhead
        self.bulkhead: BulkheadConfig | None = None if bulkhead is None else bulkhead.config
        self.active = 0  # permits taken
        self.queue: deque[_Queued] = deque()
        self.tracker: HedgeDelay | None = None
        if policy.hedging is not None:
            # The library's tracker, where the async driver keeps it.
            self.tracker = policy.hedger = HedgeDelay(policy.hedging)

    # -- the gate ----------------------------------------------------------------------------

    def gate(self, call: Any, left: float | None, now: float) -> Any:
        """``Gate(left)``: an Admission or a LoadShedError now, or PARKED (it comes later)."""
        if self._throttled(now):
            return self.shed(call, THROTTLE, 0.0)
        bucket, rate = self.bucket, self.rate
        wait = 0.0
        if bucket is not None and rate is not None:
            longest = rate.max_wait if left is None else min(rate.max_wait, max(0.0, left))
            reserved = bucket.reserve(now, longest)
            if reserved is None:
                return self.shed(call, RATE_LIMIT, bucket.next_token(now))
            wait = reserved
        token = bucket is not None
        if self.bulkhead is None:
            admission = Admission(token, permit=False)
            if wait > 0:
                self.events.at(now + wait, call, admission)  # the token's wait, slept
                return PARKED
            return admission
        if wait > 0:
            after = None if left is None else left - wait
            self.events.at(now + wait, call, _Enter(self, call, token, after))
            return PARKED
        return self.enter(call, token, left, now)

    def _throttled(self, now: float) -> bool:
        throttle, load = self.throttle, self.load
        if throttle is None or load is None:
            return False
        p = throttle.reject_probability(now)
        if p > 0.0 and load.rand() < p:
            throttle.count(now, accepted=False)  # a shed call is a request not accepted
            return True
        return False

    def shed(self, call: Any, stage: str, retry_after: float) -> LoadShedError:
        self.events.shed[call.index] = _CODES[stage]
        load = self.load
        assert load is not None
        return LoadShedError(load.name, stage, retry_after)

    def refund(self, token: bool, now: float) -> None:
        if token and self.bucket is not None:
            self.bucket.refund(now)

    def enter(self, call: Any, token: bool, left: float | None, now: float) -> Any:
        """The bulkhead: a permit now, a place in its queue (PARKED), or shed."""
        config = self.bulkhead
        assert config is not None
        if self.active < config.max_concurrent and not self.queue:
            self.active += 1
            return Admission(token, permit=True)
        if len(self.queue) >= config.max_queue:
            self.refund(token, now)
            return self.shed(call, BULKHEAD, 0.0)
        waiter = _Queued(self, call, token)
        self.queue.append(waiter)
        longest = config.max_wait if left is None else min(config.max_wait, max(0.0, left))
        self.events.at(now + longest, call, waiter)  # its timeout
        return PARKED

    def release(self, now: float) -> None:
        """A permit given back: to the longest waiter (resumed now), else to the pool."""
        if self.queue:
            waiter = self.queue.popleft()
            waiter.granted = True
            self.events.at(now, waiter.call, Admission(waiter.token, permit=True))
        else:
            self.active -= 1

    def leave(self, decision: Leave) -> None:
        """``Leave``: the virtual permit back, the rest by ``LoadControl.leave`` itself."""
        self._give_back(decision.admission, decision.made, decision.accepted, decision)

    def _give_back(
        self, admission: Admission, made: bool, accepted: bool | None, decision: Leave | None
    ) -> None:
        load = self.load
        assert load is not None
        if admission.permit:
            self.release(load.now())
            admission = Admission(admission.token, permit=False)  # the library's has none
        limit = None if decision is None else decision.limit
        load.leave(admission, made, accepted, limit)

    # -- hedging -----------------------------------------------------------------------------

    def race(self, call: Any, within: float | None, now: float) -> None:
        """An attempt, hedged (``within``: the deadline's time left); its outcome comes later."""
        race = _Race(self, call, now, None if within is None else now + within)
        race.send(0, True, now)
        race.arm(now)

    def may_hedge(self, now: float) -> Admission | bool:
        """``hedge._may_hedge``: the hedge's admission (True without stages), else False."""
        policy = self.policy
        if not policy.breaker.clean_ticket:
            return False
        admission: Admission | bool = True
        if self.load is not None:
            entered = self._try_enter(now)
            if entered is None:
                return False
            admission = entered
        budget = policy.budget
        if budget is not None and not budget.try_spend():
            if isinstance(admission, Admission):
                self._give_back(admission, False, None, None)
            return False
        return admission

    def _try_enter(self, now: float) -> Admission | None:
        """``LoadControl.try_enter``: pass the stages only if none would wait."""
        if self._throttled(now):
            return None
        bucket = self.bucket
        if bucket is not None and bucket.reserve(now, 0.0) is None:
            return None
        config = self.bulkhead
        if config is not None:
            if self.active >= config.max_concurrent or self.queue:
                self.refund(bucket is not None, now)
                return None
            self.active += 1
        return Admission(bucket is not None, config is not None)

    def hedge_done(self, admission: Admission | bool, outcome: Outcome | None) -> None:
        """``hedge._leave``: a hedge's admission back (``outcome`` None: it was cancelled)."""
        if self.load is None or not isinstance(admission, Admission):
            return
        accepted = None
        if outcome is not None and outcome.kind is not IGNORED:
            accepted = outcome.kind is not FAILURE
        self._give_back(admission, True, accepted, None)


class _Enter(Step):
    """A call whose token wait is over: now the bulkhead."""

    __slots__ = ("call", "left", "stages", "token")

    def __init__(self, stages: VirtualLoad, call: Any, token: bool, left: float | None) -> None:
        self.stages = stages
        self.call = call
        self.token = token
        self.left = left

    def run(self, now: float) -> Any:
        return self.stages.enter(self.call, self.token, self.left, now)


class _Queued(Step):
    """A call in the bulkhead's queue; run, it is the timeout of its wait."""

    __slots__ = ("call", "granted", "stages", "token")

    def __init__(self, stages: VirtualLoad, call: Any, token: bool) -> None:
        self.stages = stages
        self.call = call
        self.token = token
        self.granted = False

    def run(self, now: float) -> Any:
        if self.granted:  # a permit came first: its own event resumes the call
            return PARKED
        stages = self.stages
        stages.queue.remove(self)
        stages.refund(self.token, now)
        return stages.shed(self.call, BULKHEAD, 0.0)


def _final(outcome: Outcome) -> bool:
    kind = outcome.kind
    return kind is SUCCESS or kind is ANSWERED or kind is IGNORED


class _Race:
    """One hedged attempt: the library's race (:mod:`smoothapi.hedge`), one event at a time."""

    __slots__ = (
        "began",
        "call",
        "deadline",
        "done",
        "hedges",
        "last",
        "running",
        "stages",
    )

    def __init__(
        self, stages: VirtualLoad, call: Any, began: float, deadline: float | None
    ) -> None:
        self.stages = stages
        self.call = call
        self.began = began
        self.deadline = deadline
        self.running: dict[int, Admission | bool] = {}  # request number -> its admission
        self.hedges = 0
        self.last: Outcome | None = None
        self.done = False

    def send(self, index: int, admission: Admission | bool, now: float) -> None:
        bound = None if self.deadline is None else max(0.0, self.deadline - now)
        outcome, latency = self.stages.events.request(now, bound)
        self.running[index] = admission
        self.stages.events.at(now + latency, self.call, _Answer(self, index, outcome))

    def arm(self, now: float) -> None:
        """The next hedge's turn, a delay from now, while turns are left.

        Only at the start and after a turn: an answer that does not end the
        race leaves the turn where it was due (``hedge._Race.wait``).
        """
        hedging = self.stages.policy.hedging
        tracker = self.stages.tracker
        assert hedging is not None
        assert tracker is not None
        if self.hedges < hedging.max_hedges:
            delay = tracker.current
            self.stages.events.at(now + delay, self.call, _Tick(self, delay))

    def tick(self, delay: float, now: float) -> Any:
        """A hedge's turn: sent if the deadline has time left and ``may_hedge`` admits it."""
        if self.done:
            return PARKED
        self.hedges += 1  # a turn refused is a turn taken
        stages = self.stages
        late = self.deadline is not None and self.deadline - now <= 0
        admission = False if late else stages.may_hedge(now)
        if admission is not False:
            policy = stages.policy
            emit(HedgeSent(policy.breaker.name, 1, self.hedges, delay), policy.hooks)
            stages.events.hedge_times.append(now)
            self.send(self.hedges, admission, now)
        self.arm(now)
        return PARKED

    def answer(self, index: int, outcome: Outcome, now: float) -> Any:
        if self.done:  # a loser's answer: its request loaded the upstream, the answer is dropped
            return PARKED
        admission = self.running.pop(index)
        stages = self.stages
        if index:
            stages.hedge_done(admission, outcome)
        self.last = outcome  # a failure gives way to a later answer
        if _final(outcome):
            if index:
                stages.events.hedges_won += 1
            return self.finish(now)
        if not self.running:
            return self.finish(now)
        return PARKED  # a failure: wait for the others (and the next turn, as it was due)

    def finish(self, now: float) -> Outcome:
        self.done = True
        stages = self.stages
        for index, admission in self.running.items():
            if index:  # cancelled: its admission back (the first's is the flow's)
                stages.hedge_done(admission, None)
        self.running.clear()
        last = self.last
        assert last is not None
        assert stages.tracker is not None
        if last.kind is SUCCESS:
            stages.tracker.record(now - self.began)
        return last


class _Tick(Step):
    __slots__ = ("delay", "race")

    def __init__(self, race: _Race, delay: float) -> None:
        self.race = race
        self.delay = delay

    def run(self, now: float) -> Any:
        return self.race.tick(self.delay, now)


class _Answer(Step):
    __slots__ = ("index", "outcome", "race")

    def __init__(self, race: _Race, index: int, outcome: Outcome) -> None:
        self.race = race
        self.index = index
        self.outcome = outcome

    def run(self, now: float) -> Any:
        return self.race.answer(self.index, self.outcome, now)


# -- describing a config's stages ------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1.0 else f"{seconds:g} s"


def describe_stages(config: ResilientConfig) -> list[str]:
    """The load-control stages and hedging in words, for a config's one-line description."""
    parts: list[str] = []
    throttle = config.throttle
    if throttle is not None:
        parts.append(f"adaptive throttling (k={throttle.k:g} over {throttle.window_ms / 1000:g} s)")
    rate = config.rate_limit
    if rate is not None:
        assert rate.burst is not None
        follows = ", follows the server" if rate.follow_server else ""
        parts.append(
            f"rate limit {rate.rate:g}/s (burst {rate.burst:g}, waits up to "
            f"{_ms(rate.max_wait)}{follows})"
        )
    bulkhead = config.bulkhead
    if bulkhead is not None:
        parts.append(
            f"bulkhead {bulkhead.max_concurrent} in flight (queue {bulkhead.max_queue}, "
            f"waits up to {_ms(bulkhead.max_wait)})"
        )
    hedging = config.hedging
    if hedging is not None:
        if hedging.percentile is None:
            after = _ms(max(hedging.delay, hedging.min_delay))
        else:
            after = (
                f"the p{hedging.percentile:g} of recent attempts "
                f"(>= {_ms(hedging.min_delay)}, {_ms(max(hedging.delay, hedging.min_delay))} "
                "until known)"
            )
        many = "1 hedge" if hedging.max_hedges == 1 else f"up to {hedging.max_hedges} hedges"
        parts.append(f"{many} after {after}")
    return parts
