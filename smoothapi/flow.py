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
    Gate(left)      passes the load-control stages          an Admission, or the
                    (``policy.load.enter_*``), waiting at   LoadShedError that shed
                    most ``left`` s (None: no deadline)     the call
    Leave(...)      ``policy.load.leave(...)``: gives back  None
                    the permit, counts for the throttle,
                    follows the server's rate limit
    Finish          returns value or raises error           (the flow is over)

One call: pass the load-control stages (only when configured: ``Gate``),
admit, attempt, leave the stages (``Leave``), report the verdict.  A success or an answer (a
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
from .errors import CircuitOpenError, LoadShedError
from .events import (
    CallRejected,
    CallShed,
    Event,
    FallbackServed,
    Hook,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
)
from .load import Admission, LoadControl
from .rate_headers import ServerLimit, parse_server_limit

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
    "Gate",
    "Leave",
    "Outcome",
    "OutcomeKind",
    "Policy",
    "Record",
    "Resend",
    "Sleep",
    "Within",
    "retry_flow",
    "server_limit",
    "stop_rule",
    "upstream_accepted",
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


class Gate:
    """Pass the load-control stages, waiting at most ``left`` seconds (None: no deadline).

    The driver sends back ``policy.load.enter_sync(left, sleep)`` (or its async
    twin): an :class:`~smoothapi.load.Admission`, or the ``LoadShedError`` that
    shed the call.
    """

    __slots__ = ("left",)

    def __init__(self, left: float | None) -> None:
        self.left = left

    def __repr__(self) -> str:
        return f"Gate({self.left!r})"


class Leave:
    """``policy.load.leave(admission, made, accepted, limit)``; the driver sends back None.

    ``made``: an attempt was made with the admission (else its token is given
    back); ``accepted``: the upstream took it (None: do not count it, e.g. an
    ignored result); ``limit``: what the response said of the server's rate
    limit.
    """

    __slots__ = ("accepted", "admission", "limit", "made")

    def __init__(
        self,
        admission: Admission,
        made: bool,
        accepted: bool | None = None,
        limit: ServerLimit | None = None,
    ) -> None:
        self.admission = admission
        self.made = made
        self.accepted = accepted
        self.limit = limit

    def __repr__(self) -> str:
        return f"Leave(made={self.made}, accepted={self.accepted}, limit={self.limit!r})"


Decision = _Attempt | Within | _Acquire | Record | Emit | Sleep | Gate | Leave | Finish
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
    ``abandon(value)`` lets go of a result at once, without reading it (plain or
    awaitable), when the async driver is cancelled while it holds one;
    ``rand`` is the jitter's random source;
    ``open_error(name, retry_after)`` builds the rejection error;
    ``fallback_midway`` says whether a breaker that opens while a call is
    retrying yields the fallback (the decorator) or the last result (the
    transports, whose fallback answers only calls rejected up front);
    ``mark`` is what this mount point's attempts tell the mount points called
    inside them (its breaker, whether it retries: see ``_runtime.Mark``).
    """

    __slots__ = (
        "abandon",
        "async_discard",
        "backoff",
        "breaker",
        "budget",
        "classify_error",
        "classify_value",
        "config",
        "cooldown",
        "counts",
        "deadline",
        "direct",
        "discard",
        "fallback_midway",
        "hedger",
        "hedging",
        "hooks",
        "load",
        "mark",
        "open_error",
        "rand",
        "retry_on",
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
        abandon: Callable[[Any], Awaitable[None] | None] | None = None,
        rand: Callable[[], float] = random.random,
        open_error: Callable[[str, float], BaseException] = CircuitOpenError,
        fallback_midway: bool = True,
        budget: RetryBudget | None = None,
    ) -> None:
        self.config = config
        # The statuses a transport retries, read on its happy path (one attribute).
        self.retry_on = frozenset(config.retry_on)
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
        self.abandon = abandon
        self.rand = rand
        self.open_error = open_error
        self.fallback_midway = fallback_midway
        self.deadline = config.deadline
        if budget is None and config.retry_budget is not None:
            budget = RetryBudget(config.retry_budget, breaker.name)
        self.budget = budget
        self.mark = _runtime.Mark((breaker,), config.backoff.max_retries > 0)
        # Load control (issue 15): None when no stage is configured, which costs nothing.
        self.load = LoadControl.of(config, breaker.name, breaker.now, rand)
        self.hedging = config.hedging
        self.hedger: Any = None  # the hedge delay's tracker, made at the first hedged call
        # The happy path (``_happy``): no deadline and no load control, so a healthy call
        # makes its attempt at once; otherwise every call goes through the engine.
        self.direct = config.deadline is None and not config.load_control


# -- the stop rules ---------------------------------------------------------------------------

BREAKER_OPEN: Final = "breaker open"
NOT_SAFE_TO_RESEND: Final = "not safe to resend"
RETRIES_EXHAUSTED: Final = "retries exhausted"
OUTER_RETRIES: Final = "outer mount point retries"
OVER_CAP: Final = "Retry-After over cap"
DEADLINE: Final = "deadline"
BUDGET_EXHAUSTED: Final = "retry budget exhausted"
LOAD_SHED: Final = "load shed"


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
    shed_error: Callable[[LoadShedError], BaseException] | None = None,
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
    attempt whatever ``max_retries`` says (the breaker still counts it);
    ``shed_error`` turns a load-control stage's refusal into the error the
    caller sees (the transports' client-flavoured subclass).  A refusal at
    the gate of a retry ends the call with its last result, as the other
    stop rules do (``reason`` ``"load shed"``).
    """
    breaker, hooks = policy.breaker, policy.hooks
    name = breaker.name
    rejection = policy.open_error if open_error is None else open_error
    max_retries = 0 if one_attempt else policy.backoff.max_retries
    deadline_at = _deadline_at(policy, started)

    timed = policy.timed
    began: float | None = None  # when the attempt in hand began (timed only)
    if first is None:
        ticket, wait, admission, shed = yield from _admit(policy, deadline_at)
        if ticket == REJECTED:  # by the breaker, or shed by a stage (``shed``)
            if shed is None:
                yield Emit(CallRejected(name, wait), hooks)
            error = rejection(name, wait) if shed is None else _shed(shed, shed_error)
            yield from _give_up(policy, fallback, error, None, 0)
            return
        decision: _Attempt | Within = ATTEMPT
        if deadline_at is not None:  # the gate may have waited: what is left
            decision = Within(max(0.0, deadline_at - breaker.now()))
        outcome, began = yield from _attempt(policy, decision, admission)
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
            ticket, wait, admission, shed = yield from _admit(policy, deadline_at)
            if shed is not None:
                reason = LOAD_SHED
            elif ticket == REJECTED:  # the first rule again, after the sleep
                reason = BREAKER_OPEN
            elif deadline_at is not None and (left := deadline_at - breaker.now()) <= 0:
                yield Record("release", ticket)
                if admission is not None:
                    yield Leave(admission, made=False)
                reason = DEADLINE
            else:
                decision = ATTEMPT if deadline_at is None else Within(left)
                outcome, began = yield from _attempt(policy, decision, admission)
                attempts += 1
                continue

        yield from _stopped(policy, fallback, rejection, outcome, attempts, reason, wait)
        return


def _stopped(  # noqa: PLR0917 - the flow's state at the stop, passed on
    policy: Policy,
    fallback: Callable[[BaseException], Any] | None,
    rejection: Callable[[str, float], BaseException],
    outcome: Outcome,
    attempts: int,
    reason: str,
    wait: float,
) -> Flow:
    """A stop rule held: say why, then give up."""
    name, hooks = policy.breaker.name, policy.hooks
    if reason == BUDGET_EXHAUSTED:
        yield Emit(RetryBudgetExhausted(name, attempts, outcome.status, outcome.error), hooks)
    yield Emit(RetriesExhausted(name, attempts, outcome.status, outcome.error, reason), hooks)
    if reason == BREAKER_OPEN:
        error = outcome.error or rejection(name, wait)
        yield from _give_up(policy, fallback, error, outcome, attempts)
    else:
        yield Finish(outcome.value, outcome.error, attempts)


def _leave(policy: Policy, admission: Admission, outcome: Outcome) -> Leave:
    """The stages' side of an attempt made: its verdict and the server's rate limit."""
    accepted = upstream_accepted(outcome)
    load = policy.load
    limit = server_limit(outcome, policy.sleep_cap) if load is not None and load.follow else None
    return Leave(admission, made=True, accepted=accepted, limit=limit)


def upstream_accepted(outcome: Outcome) -> bool | None:
    """The throttle's verdict on an attempt: accepted unless it failed; None (not counted)
    for an ignored result (a cancellation, a bug: the upstream said nothing)."""
    kind = outcome.kind
    return None if kind is IGNORED else kind is not FAILURE


def server_limit(outcome: Outcome, cap: float) -> ServerLimit | None:
    """What the attempt's response (or its error's ``.response``) says of the rate limit.

    Any object with ``status_code`` and ``headers.get`` - a requests or httpx
    response, what a decorated function returns - is read; anything else,
    or one that raises when read, says nothing.
    """
    response = outcome.value if outcome.error is None else getattr(outcome.error, "response", None)
    if response is None:
        return None
    try:
        headers = getattr(response, "headers", None)
        get = getattr(headers, "get", None)
        status = getattr(response, "status_code", None)
        if get is None or not isinstance(status, int):
            return None
        return parse_server_limit(get, status, cap=cap)
    except Exception:  # a response object we cannot read says nothing
        return None


def _deadline_at(policy: Policy, started: float | None) -> float | None:
    """When the call's deadline ends on the breaker's clock (None: no deadline)."""
    if policy.deadline is None:
        return None
    return (policy.breaker.now() if started is None else started) + policy.deadline


def _shed(
    shed: LoadShedError, convert: Callable[[LoadShedError], BaseException] | None
) -> BaseException:
    """The error a caller sees for a stage's refusal (a transport's is its client's too)."""
    return shed if convert is None else convert(shed)


def _admit(
    policy: Policy, deadline_at: float | None
) -> Generator[Decision, Any, tuple[int, float, Admission | None, LoadShedError | None]]:
    """Pass the load-control stages (if any), then ask the breaker.

    Returns ``(ticket, wait, admission, shed)``: ``shed`` is the stage's
    refusal (already announced), else the breaker's reply; what the stages
    gave a call the breaker then rejects is given back at once.
    """
    admission: Admission | None = None
    if policy.load is not None:
        breaker = policy.breaker
        passed = yield Gate(None if deadline_at is None else deadline_at - breaker.now())
        if isinstance(passed, LoadShedError):
            yield Emit(CallShed(breaker.name, passed.stage, passed.retry_after), policy.hooks)
            return REJECTED, 0.0, None, passed
        admission = passed
    ticket, wait = yield ACQUIRE
    if ticket == REJECTED and admission is not None:
        yield Leave(admission, made=False)
        admission = None
    return ticket, wait, admission, None


def _attempt(
    policy: Policy, decision: _Attempt | Within, admission: Admission | None
) -> Generator[Decision, Any, tuple[Outcome, float | None]]:
    """One attempt: its outcome, and when it began on the breaker's clock (if timed).

    An attempt that passed the stages leaves them as soon as it is over.
    """
    began = policy.breaker.now() if policy.timed else None
    outcome: Outcome = yield decision
    if admission is not None:
        yield _leave(policy, admission, outcome)
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
