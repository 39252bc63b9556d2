"""The retry/breaker engine: a sans-I/O core and two thin drivers.

The core, :func:`retry_flow`, is a generator in the style of httpx's
``Auth.auth_flow``: it yields *decisions* and is sent *outcomes*.

* ``ACQUIRE`` - ask the breaker for a ticket and send it back;
* ``ATTEMPT`` - make one attempt and send back its :class:`Outcome`;
* :class:`Record` - report a verdict to the breaker, send back its state;
* :class:`Sleep` - discard the last result (it will be retried), wait
  ``seconds``, send ``None``;
* :class:`Finish` - the call is over: return ``value`` or raise ``error``.

It never sleeps and never touches a socket.  :func:`run_sync` and
:func:`run_async` are the only retry loops in smoothapi; each mount point
(the decorator, the requests adapter, the httpx transports) supplies a
:class:`Policy` that says how to classify an attempt's result and how to
discard a result that will be retried, plus a zero-argument callable that
makes one attempt.

The happy path does not come here at all: a mount point whose breaker is
healthy makes its first attempt directly and enters the engine only when that
attempt fails or the breaker is not CLOSED (see ``decorator.py``).
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Awaitable, Callable, Generator
from enum import Enum
from typing import Any, Final, TypeVar

from . import _runtime
from ._async_hooks import collect, flush, stop_collecting
from .backoff import next_delay
from .breaker import REJECTED, CircuitBreaker, CircuitState
from .budget import RetryBudget
from .config import ResilientConfig
from .errors import CircuitOpenError
from .events import (
    CallRejected,
    FallbackServed,
    Hook,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
    emit,
)

__all__ = [
    "ATTEMPT",
    "Finish",
    "Outcome",
    "OutcomeKind",
    "Policy",
    "Resend",
    "Sleep",
    "async_sleep",
    "retry_flow",
    "run_async",
    "run_sync",
    "sync_sleep",
]

T = TypeVar("T")


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


class _Attempt:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ATTEMPT"


ATTEMPT: Final = _Attempt()


class _Acquire:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ACQUIRE"


#: Ask the breaker for a ticket (``breaker.acquire()``) and send it back.
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
    """Report an attempt's verdict to the breaker: ``breaker.<method>(ticket)``.

    ``method`` is ``"record_success"``, ``"record_failure"`` or ``"release"``;
    the driver sends back the breaker's state after the report.  A breaker
    whose state lives elsewhere (Redis) answers from that store, so the core
    never reads a state it did not just get.
    """

    __slots__ = ("method", "retry_after", "ticket")

    def __init__(self, method: str, ticket: int, retry_after: float | None = None) -> None:
        self.method = method
        self.ticket = ticket
        # With a failure: the server's Retry-After, which may hold an opening breaker open.
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"Record({self.method}, {self.ticket})"


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


Decision = _Attempt | Within | _Acquire | Record | Sleep | Finish
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
        "deadline",
        "discard",
        "fallback_midway",
        "hooks",
        "mark",
        "open_error",
        "rand",
        "sleep_cap",
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
        self.classify_error = classify_error
        self.classify_value = classify_value
        self.discard = discard
        self.async_discard = async_discard
        self.rand = rand
        self.open_error = open_error
        self.fallback_midway = fallback_midway
        self.deadline = config.deadline
        if budget is None and config.retry_budget is not None:
            budget = RetryBudget(config.retry_budget)
        self.budget = budget
        self.mark = _runtime.Mark((breaker,), config.backoff.max_retries > 0)


def retry_flow(  # noqa: PLR0915, PLR0917 - one state machine reads best in one place
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
    """The one retry loop, as decisions.

    ``first`` is an attempt the mount point already made on its happy path,
    holding ``first_ticket`` (the breaker's ``clean_ticket`` value it read);
    ``fallback`` maps the final error to a value, or is None;
    ``open_error`` overrides the policy's rejection error for this call;
    ``one_attempt``: an outer mount point retries this call, so make one
    attempt whatever ``max_retries`` says (the breaker still counts it).
    """
    breaker = policy.breaker
    name = breaker.name
    hooks = policy.hooks
    backoff = policy.backoff
    max_retries = 0 if one_attempt else backoff.max_retries

    if open_error is None:
        open_error = policy.open_error
    budget = policy.budget
    # The deadline counts from ``started`` (the mount point read the clock before its
    # happy-path attempt), else from here.
    deadline_at = None
    if policy.deadline is not None:
        deadline_at = (breaker.now() if started is None else started) + policy.deadline

    def give_up(error: BaseException, outcome: Outcome | None, attempts: int) -> Finish:
        # Transports hand back the last response when the breaker opens mid-call,
        # and answer with their fallback only when rejected up front.
        if fallback is not None and (outcome is None or policy.fallback_midway):
            emit(FallbackServed(name, error), hooks)
            return Finish(fallback(error), None, attempts, fallback=True)
        if outcome is None:
            return Finish(None, error, attempts)
        # Unwrapped: the caller sees the last error (or the last response) itself.
        return Finish(outcome.value, outcome.error, attempts)

    attempts = 0
    if first is None:
        ticket = yield ACQUIRE
        if ticket == REJECTED:
            retry_after = breaker.retry_after
            emit(CallRejected(name, retry_after), hooks)
            rejected = open_error(name, retry_after)
            yield give_up(rejected, None, 0)
            return
        outcome = yield (ATTEMPT if deadline_at is None else Within(policy.deadline or 0.0))
        assert outcome is not None
    else:
        ticket = first_ticket
        outcome = first
    attempts = 1
    previous_delay: float | None = None

    while True:
        kind = outcome.kind
        if kind is SUCCESS or kind is ANSWERED:
            if budget is not None:
                budget.deposit()
            yield Record("record_success", ticket)
            yield Finish(outcome.value, outcome.error, attempts)
            return
        if kind is IGNORED:
            yield Record("release", ticket)
            yield Finish(outcome.value, outcome.error, attempts)
            return

        state = yield Record("record_failure", ticket, outcome.retry_after)
        last_error = outcome.error
        if state is not CircuitState.CLOSED:
            # Our failure (or someone else's) opened it: stop hammering now.
            emit(
                RetriesExhausted(name, attempts, outcome.status, last_error, "breaker open"), hooks
            )
            yield give_up(last_error or open_error(name, breaker.retry_after), outcome, attempts)
            return
        retryable = outcome.retryable and (
            resend is Resend.ALWAYS or (resend is Resend.IF_NOT_SENT and not outcome.sent)
        )
        if not retryable or attempts > max_retries:
            if not retryable:
                reason = "not safe to resend"
            elif attempts > backoff.max_retries:
                reason = "retries exhausted"
            else:
                reason = "outer mount point retries"
            emit(RetriesExhausted(name, attempts, outcome.status, last_error, reason), hooks)
            yield Finish(outcome.value, last_error, attempts)
            return

        delay = next_delay(attempts - 1, backoff, previous_delay, policy.rand)
        previous_delay = delay
        wanted = outcome.retry_after
        if wanted is not None:
            cap = policy.sleep_cap
            if wanted > cap:
                emit(
                    RetriesExhausted(
                        name, attempts, outcome.status, last_error, "Retry-After over cap"
                    ),
                    hooks,
                )
                yield Finish(outcome.value, last_error, attempts)
                return
            # At least what the server asked, plus a little jitter so that
            # clients told the same thing do not come back in lockstep.
            spread = policy.rand() * min(1.0, max(0.05, 0.1 * wanted))
            delay = min(cap, max(delay, wanted + spread))

        if deadline_at is not None and breaker.now() + delay >= deadline_at:
            emit(RetriesExhausted(name, attempts, outcome.status, last_error, "deadline"), hooks)
            yield Finish(outcome.value, last_error, attempts)
            return
        if budget is not None and not budget.try_spend():
            emit(RetryBudgetExhausted(name, attempts, outcome.status, last_error), hooks)
            emit(
                RetriesExhausted(
                    name, attempts, outcome.status, last_error, "retry budget exhausted"
                ),
                hooks,
            )
            yield Finish(outcome.value, last_error, attempts)
            return

        emit(RetryScheduled(name, attempts, delay, outcome.status, last_error), hooks)
        sent = yield Sleep(delay)
        assert sent is None

        ticket = yield ACQUIRE
        if ticket == REJECTED:
            emit(
                RetriesExhausted(name, attempts, outcome.status, last_error, "breaker open"), hooks
            )
            yield give_up(last_error or open_error(name, breaker.retry_after), outcome, attempts)
            return
        if deadline_at is None:
            outcome = yield ATTEMPT
        else:
            left = deadline_at - breaker.now()
            if left <= 0:
                yield Record("release", ticket)
                emit(
                    RetriesExhausted(name, attempts, outcome.status, last_error, "deadline"), hooks
                )
                yield Finish(outcome.value, last_error, attempts)
                return
            outcome = yield Within(left)
        assert outcome is not None
        attempts += 1


# -- sleeping --------------------------------------------------------------


def sync_sleep(seconds: float) -> None:
    """``time.sleep`` unless :mod:`smoothapi.testing` made sleeps instant."""
    if _runtime.instant_sleep:
        hook = _runtime.on_skipped_sleep
        if hook is not None:
            hook(seconds)
        return
    time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """Sleep without blocking the event loop, under asyncio or trio."""
    if _runtime.instant_sleep:
        hook = _runtime.on_skipped_sleep
        if hook is not None:
            hook(seconds)
        seconds = 0.0
    if _runtime.running_trio():
        import trio  # noqa: PLC0415 - only when running under trio

        await trio.sleep(seconds)
    else:
        import asyncio  # noqa: PLC0415 - keeps `import smoothapi` light

        await asyncio.sleep(seconds)


# -- drivers -----------------------------------------------------------------


def run_sync(
    policy: Policy,
    attempt: Callable[[], T],
    fallback: Callable[[BaseException], Any] | None = None,
    first: Outcome | None = None,
    resend: Resend = Resend.ALWAYS,
    *,
    open_error: Callable[[str, float], BaseException] | None = None,
    first_ticket: int = 0,
    attempt_within: Callable[[float], T] | None = None,
    started: float | None = None,
) -> T:
    """Drive :func:`retry_flow` with blocking sleeps; returns or raises what it decides.

    ``attempt_within(seconds)`` makes an attempt bounded by the deadline's time
    left (see :class:`Within`); without it, ``attempt()`` is used.
    """
    one_attempt = _runtime.outer_retries()  # an outer mount point retries this call
    flow = retry_flow(
        policy, fallback, first, resend, open_error, first_ticket, started, one_attempt=one_attempt
    )
    breaker = policy.breaker
    last = first
    # The ticket this call holds and has not reported yet: given back on any way out.
    held: int | None = first_ticket if first is not None else None
    try:
        decision = next(flow)
        while True:
            if decision is ATTEMPT or isinstance(decision, Within):
                _discard(policy, last, final=True)  # admitted again: now let it go
                if attempt_within is not None and isinstance(decision, Within):
                    last = _attempt(policy, attempt_within, decision.seconds)
                else:
                    last = _attempt(policy, attempt)
                decision = flow.send(last)
            elif decision is ACQUIRE:
                ticket = breaker.acquire()
                held = None if ticket == REJECTED else ticket  # nothing else is held here
                decision = flow.send(ticket)
            elif isinstance(decision, Record):
                report = getattr(breaker, decision.method)
                if decision.retry_after is None:
                    state = report(decision.ticket)
                else:
                    state = report(decision.ticket, retry_after=decision.retry_after)
                held = None
                decision = flow.send(state)
            elif isinstance(decision, Sleep):
                # Free the connection for the sleep, but keep the response whole: if the
                # breaker opens meanwhile, it is what the caller gets back.
                _discard(policy, last, final=False)
                sync_sleep(decision.seconds)
                decision = flow.send(None)
            else:
                assert isinstance(decision, Finish)
                return _finish(policy, decision, last)  # type: ignore[no-any-return]
    except BaseException:
        if held is not None:  # interrupted, or a hook or the flow raised: never strand a probe
            breaker.release(held)
        raise
    finally:
        flow.close()


async def run_async(
    policy: Policy,
    attempt: Callable[[], Awaitable[T]],
    fallback: Callable[[BaseException], Any] | None = None,
    first: Outcome | None = None,
    resend: Resend = Resend.ALWAYS,
    *,
    open_error: Callable[[str, float], BaseException] | None = None,
    first_ticket: int = 0,
    attempt_within: Callable[[float], Awaitable[T]] | None = None,
    started: float | None = None,
) -> T:
    """Drive :func:`retry_flow` with non-blocking sleeps (asyncio or trio)."""
    one_attempt = _runtime.outer_retries()  # an outer mount point retries this call
    flow = retry_flow(
        policy, fallback, first, resend, open_error, first_ticket, started, one_attempt=one_attempt
    )
    breaker = policy.breaker
    last = first
    held: int | None = first_ticket if first is not None else None
    # Events are sent from sync code (the flow, the breaker); async hooks' awaitables
    # land in `hooks` and are awaited here, before the call takes its next step.
    hooks, token = collect()
    try:
        decision = next(flow)
        while True:
            if hooks:
                await flush(hooks)  # may be cancelled while we hold the probe
            if decision is ATTEMPT or isinstance(decision, Within):
                await _async_discard(policy, last, final=True)
                if attempt_within is not None and isinstance(decision, Within):
                    last = await _attempt_async(policy, attempt_within, decision.seconds)
                else:
                    last = await _attempt_async(policy, attempt)
                decision = flow.send(last)
            elif decision is ACQUIRE:
                ticket = await breaker.acquire_async()
                held = None if ticket == REJECTED else ticket  # nothing else is held here
                decision = flow.send(ticket)
            elif isinstance(decision, Record):
                report = getattr(breaker, decision.method + "_async")
                if decision.retry_after is None:
                    state = await report(decision.ticket)
                else:
                    state = await report(decision.ticket, retry_after=decision.retry_after)
                held = None
                decision = flow.send(state)
            elif isinstance(decision, Sleep):
                await _async_discard(policy, last, final=False)
                await async_sleep(decision.seconds)
                decision = flow.send(None)
            else:
                assert isinstance(decision, Finish)
                if decision.fallback:
                    await _async_discard(policy, last, final=True)
                result = _finish(policy, decision, last)
                if decision.fallback and inspect.isawaitable(result):
                    result = await result
                return result  # type: ignore[no-any-return]
    except BaseException as exc:
        if held is not None:  # cancelled, or a hook or the flow raised: never strand a probe
            await _give_back(breaker, held, exc)
        raise
    finally:
        flow.close()
        stop_collecting(hooks, token)


def _attempt(policy: Policy, make: Callable[..., Any], *args: Any) -> Outcome:
    """Make one attempt under the policy's mark (see ``_runtime.scope``) and classify it."""
    cell = _runtime.enter(policy.mark)
    try:
        value = make(*args)
    except BaseException as exc:
        return policy.classify_error(exc)
    finally:
        _runtime.leave(cell)
    return policy.classify_value(value)


async def _attempt_async(
    policy: Policy, make: Callable[..., Awaitable[Any]], *args: Any
) -> Outcome:
    """:func:`_attempt` for the async driver."""
    cell = _runtime.enter(policy.mark)
    try:
        value = await make(*args)
    except BaseException as exc:
        return policy.classify_error(exc)
    finally:
        _runtime.leave(cell)
    return policy.classify_value(value)


async def _give_back(breaker: CircuitBreaker, ticket: int, exc: BaseException) -> None:
    """Free the permit of a ticket the call holds but never reported."""
    if isinstance(exc, GeneratorExit):
        # The coroutine is being closed and must not wait: only a breaker kept in memory
        # can be released at once (a shared breaker's probe lease runs out by itself).
        if type(breaker).release_async is CircuitBreaker.release_async:
            breaker.release(ticket)
        return
    await breaker.release_async(ticket)


def _discard(policy: Policy, outcome: Outcome | None, *, final: bool) -> None:
    if policy.discard is not None and outcome is not None and outcome.error is None:
        policy.discard(outcome.value, final)


async def _async_discard(policy: Policy, outcome: Outcome | None, *, final: bool) -> None:
    if policy.async_discard is not None and outcome is not None and outcome.error is None:
        await policy.async_discard(outcome.value, final)
    else:
        _discard(policy, outcome, final=final)


def _finish(policy: Policy, decision: Finish, last: Outcome | None) -> Any:
    if decision.fallback:
        _discard(policy, last, final=True)
    error = decision.error
    if error is not None:
        raise error
    return decision.value
