"""The retry loop as decisions: :func:`retry_flow`, the sans-I/O core of the engine.

Theory of operation
-------------------
:func:`retry_flow` is a generator in the style of httpx's ``Auth.auth_flow``:
it yields *decisions* and is sent *replies*.  It never sleeps, never touches a
socket, never calls a hook or a logger, and never reads a breaker property
(for a shared breaker, a property may be a round trip to Redis): what it
needs to know comes back in the replies.  A driver carries each decision out
(``engine.run_sync``, ``engine.run_async``, and the simulator of
``smoothapi.cli.simulate``)::

    decision        the driver                              sends back
    ACQUIRE         breaker.admit()                         (ticket, retry_after)
    ATTEMPT         makes one attempt                       its Outcome
    Within(s)       makes one attempt, bounded to s seconds its Outcome
    Record(m, t)    breaker.<m>(t): report a verdict        the breaker's state after it
    Emit(e, hooks)  events.emit(e, hooks); an async driver  None
                    also awaits the async hooks
    Sleep(s)        lets the last result go, waits s        None
    Finish          returns value or raises error           (the flow is over)

One call: admit, attempt, report the verdict.  A success or an answer (a
404) finishes; so does an ignored result (a cancellation, a bug), whose
ticket is released.  After a failure the stop rules (:func:`stop_rule`) are
tried in order; the first that holds ends the call with a
``RetriesExhausted`` event whose ``reason`` names it.  If none holds, the
call announces the retry (``RetryScheduled``), sleeps, asks the breaker
again and makes the next attempt.  Events are decisions like the others, so
they reach hooks in the order the call meets them, and an async call awaits
its async hooks before its next step.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Generator
from enum import Enum
from typing import Any, Final

from . import _runtime
from .backoff import next_delay
from .breaker import REJECTED, CircuitBreaker, CircuitState
from .budget import RetryBudget
from .config import ResilientConfig
from .errors import CircuitOpenError
from .events import (
    CallRejected,
    Event,
    FallbackServed,
    Hook,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
)

__all__ = [
    "ACQUIRE",
    "ANSWERED",
    "ATTEMPT",
    "FAILURE",
    "IGNORED",
    "SUCCESS",
    "Decision",
    "Emit",
    "Finish",
    "Flow",
    "Outcome",
    "OutcomeKind",
    "Policy",
    "Record",
    "Resend",
    "Sleep",
    "Within",
    "retry_flow",
    "stop_rule",
]


class OutcomeKind(Enum):
    """What one attempt means to the breaker and to the retry decision."""

    SUCCESS = "success"  # recorded as a success, returned
    FAILURE = "failure"  # recorded as a failure, retried while allowed
    ANSWERED = "answered"  # the service answered (e.g. a 404): a success, handed back as is
    IGNORED = "ignored"  # neither (a bug, a cancellation): permit given back, re-raised at once


SUCCESS: Final = OutcomeKind.SUCCESS
FAILURE: Final = OutcomeKind.FAILURE
ANSWERED: Final = OutcomeKind.ANSWERED
IGNORED: Final = OutcomeKind.IGNORED


class Outcome:
    """The classified result of one attempt.

    Exactly one of ``value``/``error`` is meaningful: ``error`` is not None
    when the attempt raised.  ``retry_after`` is the server's requested wait
    in seconds (already parsed); ``retryable`` is False for a failure that
    must not be retried whatever the request; ``sent`` is False when the
    request certainly never reached the server (a refused connection), which
    makes any request safe to resend (see :class:`Resend`).
    """

    # A plain slotted class: built only on the slow path, and cheaper to define
    # at import time than a dataclass.
    __slots__ = ("error", "kind", "retry_after", "retryable", "sent", "status", "value")

    def __init__(
        self,
        kind: OutcomeKind,
        value: Any = None,
        *,
        error: BaseException | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = True,
        sent: bool = True,
    ) -> None:
        self.kind = kind
        self.value = value
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable
        self.sent = sent

    def __repr__(self) -> str:
        return (
            f"Outcome({self.kind.name}, value={self.value!r}, error={self.error!r}, "
            f"status={self.status!r}, retry_after={self.retry_after!r})"
        )


class Resend(Enum):
    """Which failed attempts of *this* call may be sent again."""

    ALWAYS = "always"  # idempotent requests, plain function calls
    IF_NOT_SENT = "if-not-sent"  # POST/PATCH without Idempotency-Key: only after a connect error
    NEVER = "never"  # a one-shot body: exactly one attempt


# -- decisions ------------------------------------------------------------------------------


class _Attempt:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ATTEMPT"


#: Make one attempt and send back its :class:`Outcome`.
ATTEMPT: Final = _Attempt()


class _Acquire:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ACQUIRE"


#: Ask the breaker for a ticket (``breaker.admit()``) and send back ``(ticket, retry_after)``.
ACQUIRE: Final = _Acquire()


class Within:
    """ATTEMPT, with at most ``seconds`` left of the call's deadline.

    A mount point that can bound one attempt (a transport's timeouts) makes it
    finish within ``seconds``; one that cannot (a decorated function) simply
    makes the attempt.
    """

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Within({self.seconds!r})"


class Record:
    """Report an attempt's verdict to the breaker: ``breaker.<method>(ticket, **options)``.

    ``method`` is ``"record_success"``, ``"record_failure"`` or ``"release"``;
    the driver sends back the breaker's state after the report.  A breaker
    whose state lives elsewhere (Redis) answers from that store, so the core
    never reads a state it did not just get.  ``options`` holds the keywords
    to pass, or is None: a failure's ``retry_after`` (the server's
    Retry-After, which may hold an opening breaker open) and a success's
    ``elapsed`` (the attempt's duration, for the slow-call rule).
    """

    __slots__ = ("method", "options", "retry_after", "ticket")

    def __init__(
        self,
        method: str,
        ticket: int,
        retry_after: float | None = None,
        elapsed: float | None = None,
    ) -> None:
        self.method = method
        self.ticket = ticket
        self.retry_after = retry_after
        options: dict[str, float] | None = None
        if retry_after is not None:
            options = {"retry_after": retry_after}
        elif elapsed is not None:
            options = {"elapsed": elapsed}
        self.options = options

    def __repr__(self) -> str:
        return f"Record({self.method}, {self.ticket})"


class Emit:
    """Send ``event`` to ``hooks`` and the global ones (``events.emit``); send back None.

    An async driver also awaits the async hooks' awaitables before its next step.
    """

    __slots__ = ("event", "hooks")

    def __init__(self, event: Event, hooks: tuple[Hook, ...]) -> None:
        self.event = event
        self.hooks = hooks

    def __repr__(self) -> str:
        return f"Emit({self.event!r})"


class Sleep:
    """Discard the last result and wait ``seconds`` before the next attempt."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Sleep({self.seconds!r})"


class Finish:
    """The call is over: raise ``error`` if set, else return ``value``.

    ``fallback`` is True when ``value`` came from the fallback (the async
    driver awaits it if it is awaitable, and the last result is discarded).
    """

    __slots__ = ("attempts", "error", "fallback", "value")

    def __init__(
        self, value: Any, error: BaseException | None, attempts: int, fallback: bool = False
    ) -> None:
        self.value = value
        self.error = error
        self.attempts = attempts
        self.fallback = fallback

    def __repr__(self) -> str:
        return (
            f"Finish(value={self.value!r}, error={self.error!r}, attempts={self.attempts}, "
            f"fallback={self.fallback})"
        )


Decision = _Attempt | Within | _Acquire | Record | Emit | Sleep | Finish
Flow = Generator[Decision, Any, None]


class Policy:
    """What one mount point tells the engine; built once, shared by every call.

    ``classify_error(exc)`` and ``classify_value(value)`` turn an attempt's
    result into an :class:`Outcome`; ``discard(value, final)`` releases a
    result that will be retried or replaced by a fallback: before the backoff
    sleep with ``final=False`` (free the connection but keep the value whole,
    e.g. drain a small body into memory, since it may still be returned), and
    before the next attempt or a fallback with ``final=True`` (let go of it
    entirely); ``async_discard`` is its awaitable twin for the async driver;
    ``rand`` is the jitter's random source;
    ``open_error(name, retry_after)`` builds the rejection error;
    ``fallback_midway`` says whether a breaker that opens while a call is
    retrying yields the fallback (the decorator) or the last result (the
    transports, whose fallback answers only calls rejected up front);
    ``mark`` is what this mount point's attempts tell the mount points called
    inside them (its breaker, whether it retries: see ``_runtime.Mark``).
    """

    __slots__ = (
        "async_discard",
        "backoff",
        "breaker",
        "budget",
        "classify_error",
        "classify_value",
        "cooldown",
        "counts",
        "deadline",
        "discard",
        "fallback_midway",
        "hooks",
        "mark",
        "open_error",
        "rand",
        "settles",
        "sleep_cap",
        "timed",
    )

    def __init__(
        self,
        config: ResilientConfig,
        breaker: CircuitBreaker,
        *,
        classify_error: Callable[[BaseException], Outcome],
        classify_value: Callable[[Any], Outcome],
        discard: Callable[[Any, bool], None] | None = None,
        async_discard: Callable[[Any, bool], Awaitable[None]] | None = None,
        rand: Callable[[], float] = random.random,
        open_error: Callable[[str, float], BaseException] = CircuitOpenError,
        fallback_midway: bool = True,
        budget: RetryBudget | None = None,
    ) -> None:
        self.backoff = config.backoff
        self.sleep_cap = config.sleep_cap
        self.hooks: tuple[Hook, ...] = config.hooks
        self.breaker = breaker
        # The seconds until a probe, as far as the core can tell without asking the breaker
        # again: a failure that opened it reports only the state after it.
        self.cooldown: float = breaker.config.cooldown
        # The slow-call rule needs each attempt's duration, on the breaker's clock.
        self.timed = breaker.config.slow_call_ms is not None
        # The failure-rate rule counts every success, also on the happy path.
        self.counts = breaker.config.failure_rate is not None
        # Either way the happy path reports every success (``CircuitBreaker.settle``).
        self.settles = self.timed or self.counts
        self.classify_error = classify_error
        self.classify_value = classify_value
        self.discard = discard
        self.async_discard = async_discard
        self.rand = rand
        self.open_error = open_error
        self.fallback_midway = fallback_midway
        self.deadline = config.deadline
        if budget is None and config.retry_budget is not None:
            budget = RetryBudget(config.retry_budget, breaker.name)
        self.budget = budget
        self.mark = _runtime.Mark((breaker,), config.backoff.max_retries > 0)


# -- the stop rules ---------------------------------------------------------------------------

BREAKER_OPEN: Final = "breaker open"
NOT_SAFE_TO_RESEND: Final = "not safe to resend"
RETRIES_EXHAUSTED: Final = "retries exhausted"
OUTER_RETRIES: Final = "outer mount point retries"
OVER_CAP: Final = "Retry-After over cap"
DEADLINE: Final = "deadline"
BUDGET_EXHAUSTED: Final = "retry budget exhausted"


def stop_rule(  # noqa: PLR0917 - the flow's call reads on one line
    policy: Policy,
    outcome: Outcome,
    state: CircuitState,
    attempts: int,
    max_retries: int,
    resend: Resend,
    deadline_at: float | None,
    previous: float | None,
) -> tuple[str | None, float, float]:
    """After failed attempt number ``attempts``: ``(reason, backoff, delay)``.

    ``reason`` is the ``RetriesExhausted.reason`` of the first stop rule that
    holds, or None to retry after ``delay`` seconds; ``backoff`` is the
    backoff's own delay (the next one grows from it, after ``previous``; 0.0
    when a rule held before it was drawn).  ``state`` is the breaker's reply
    to the failure's report; ``deadline_at`` is on the breaker's clock.  The
    rules are tried in this order, and the jitter is drawn only once the
    first three passed, so that a seeded run draws the same numbers as before.
    """
    if state is not CircuitState.CLOSED:  # our failure (or someone else's) opened it
        return BREAKER_OPEN, 0.0, 0.0
    if not outcome.retryable or not (
        resend is Resend.ALWAYS or (resend is Resend.IF_NOT_SENT and not outcome.sent)
    ):
        return NOT_SAFE_TO_RESEND, 0.0, 0.0
    if attempts > max_retries:
        ours = attempts > policy.backoff.max_retries
        return (RETRIES_EXHAUSTED if ours else OUTER_RETRIES), 0.0, 0.0
    backoff = delay = next_delay(attempts - 1, policy.backoff, previous, policy.rand)
    wanted = outcome.retry_after
    if wanted is not None:
        cap = policy.sleep_cap
        if wanted > cap:
            return OVER_CAP, backoff, delay
        # At least what the server asked, plus a little jitter so that clients told
        # the same thing do not come back in lockstep.
        spread = policy.rand() * min(1.0, max(0.05, 0.1 * wanted))
        delay = min(cap, max(delay, wanted + spread))
    if deadline_at is not None and policy.breaker.now() + delay >= deadline_at:
        return DEADLINE, backoff, delay
    # Last: a refusal is the only rule with a cost (a token of the budget is spent).
    if policy.budget is not None and not policy.budget.try_spend():
        return BUDGET_EXHAUSTED, backoff, delay
    return None, backoff, delay


# -- the flow ---------------------------------------------------------------------------------


def retry_flow(  # noqa: PLR0917 - mount points pass these positionally
    policy: Policy,
    fallback: Callable[[BaseException], Any] | None,
    first: Outcome | None = None,
    resend: Resend = Resend.ALWAYS,
    open_error: Callable[[str, float], BaseException] | None = None,
    first_ticket: int = 0,
    started: float | None = None,
    *,
    one_attempt: bool = False,
) -> Flow:
    """The one retry loop, as decisions (see the module docstring).

    ``first`` is an attempt the mount point already made on its happy path,
    holding ``first_ticket`` (the breaker's ``clean_ticket`` value it read);
    ``fallback`` maps the final error to a value, or is None;
    ``open_error`` overrides the policy's rejection error for this call;
    ``started`` is when the mount point read the clock, before its happy-path
    attempt (the deadline counts from there, else from now; a timed policy
    times ``first`` from there, and does not time it without);
    ``one_attempt``: an outer mount point retries this call, so make one
    attempt whatever ``max_retries`` says (the breaker still counts it).
    """
    breaker, hooks = policy.breaker, policy.hooks
    name = breaker.name
    rejection = policy.open_error if open_error is None else open_error
    max_retries = 0 if one_attempt else policy.backoff.max_retries
    deadline_at = None
    if policy.deadline is not None:
        deadline_at = (breaker.now() if started is None else started) + policy.deadline

    timed = policy.timed
    began: float | None = None  # when the attempt in hand began (timed only)
    if first is None:
        ticket, wait = yield ACQUIRE
        if ticket == REJECTED:
            yield Emit(CallRejected(name, wait), hooks)
            yield from _give_up(policy, fallback, rejection(name, wait), None, 0)
            return
        decision = ATTEMPT if deadline_at is None else Within(policy.deadline or 0.0)
        outcome, began = yield from _attempt(breaker, decision, timed)
    else:
        ticket, outcome = first_ticket, first
        if timed:
            began = started  # the happy path's attempt began when the mount point read the clock
    attempts, backoff = 1, None

    while True:
        if outcome.kind is not FAILURE:  # a success, an answer or an ignored result: done
            yield from _done(policy, outcome, ticket, began, attempts)
            return
        state = yield Record("record_failure", ticket, outcome.retry_after)
        wait = policy.cooldown if state is CircuitState.OPEN else 0.0
        reason, backoff, delay = stop_rule(
            policy, outcome, state, attempts, max_retries, resend, deadline_at, backoff
        )
        if reason is None:
            yield Emit(RetryScheduled(name, attempts, delay, outcome.status, outcome.error), hooks)
            yield Sleep(delay)
            ticket, wait = yield ACQUIRE
            if ticket == REJECTED:  # the first rule again, after the sleep
                reason = BREAKER_OPEN
            elif deadline_at is not None and (left := deadline_at - breaker.now()) <= 0:
                yield Record("release", ticket)
                reason = DEADLINE
            else:
                decision = ATTEMPT if deadline_at is None else Within(left)
                outcome, began = yield from _attempt(breaker, decision, timed)
                attempts += 1
                continue

        # Stopped: say why, then give up.
        if reason == BUDGET_EXHAUSTED:
            yield Emit(RetryBudgetExhausted(name, attempts, outcome.status, outcome.error), hooks)
        yield Emit(RetriesExhausted(name, attempts, outcome.status, outcome.error, reason), hooks)
        if reason == BREAKER_OPEN:
            error = outcome.error or rejection(name, wait)
            yield from _give_up(policy, fallback, error, outcome, attempts)
        else:
            yield Finish(outcome.value, outcome.error, attempts)
        return


def _attempt(
    breaker: CircuitBreaker, decision: _Attempt | Within, timed: bool
) -> Generator[Decision, Any, tuple[Outcome, float | None]]:
    """One attempt: its outcome, and when it began on the breaker's clock (if ``timed``)."""
    began = breaker.now() if timed else None
    outcome: Outcome = yield decision
    return outcome, began


def _done(
    policy: Policy, outcome: Outcome, ticket: int, began: float | None, attempts: int
) -> Flow:
    """Finish a call whose attempt succeeded, was answered or is ignored."""
    if outcome.kind is IGNORED:
        yield Record("release", ticket)
    else:
        if policy.budget is not None:
            policy.budget.deposit()
        elapsed = None if began is None else policy.breaker.now() - began
        yield Record("record_success", ticket, elapsed=elapsed)
    yield Finish(outcome.value, outcome.error, attempts)


def _give_up(
    policy: Policy,
    fallback: Callable[[BaseException], Any] | None,
    error: BaseException,
    outcome: Outcome | None,
    attempts: int,
) -> Flow:
    """Finish a call the breaker stopped: with the fallback, or the last result or error.

    Transports hand back the last response when the breaker opens mid-call,
    and answer with their fallback only when rejected up front.
    """
    if fallback is not None and (outcome is None or policy.fallback_midway):
        yield Emit(FallbackServed(policy.breaker.name, error), policy.hooks)
        yield Finish(fallback(error), None, attempts, fallback=True)
    elif outcome is None:
        yield Finish(None, error, attempts)
    else:
        # Unwrapped: the caller sees the last error (or the last response) itself.
        yield Finish(outcome.value, outcome.error, attempts)
