"""The retry/breaker engine: the sans-I/O core's two drivers.

The core, :func:`~smoothapi.flow.retry_flow`, decides (see
:mod:`smoothapi.flow`, whose names this module also exports); :func:`run_sync`
and :func:`run_async` carry its decisions out - ask the breaker, make an
attempt, report it, send an event, sleep, finish - and are the only retry
loops in smoothapi.  They differ only where one awaits.  Each mount point
(the decorator, the requests adapter, the httpx transports) supplies a
:class:`Policy` that says how to classify an attempt's result and how to
discard a result that will be retried, plus a zero-argument callable that
makes one attempt.

The happy path does not come here at all: a mount point whose breaker is
healthy makes its first attempt directly and enters the engine only when that
attempt fails or the breaker is not CLOSED (see ``mounts/decorator.py``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _runtime
from ._async_hooks import collect, flush, stop_collecting
from .breaker import REJECTED, CircuitBreaker
from .errors import LoadShedError
from .events import emit
from .flow import (
    ACQUIRE,
    ANSWERED,
    ATTEMPT,
    FAILURE,
    IGNORED,
    SUCCESS,
    Decision,
    Emit,
    Finish,
    Flow,
    Gate,
    Leave,
    Outcome,
    OutcomeKind,
    Policy,
    Record,
    Resend,
    Sleep,
    Within,
    retry_flow,
)
from .hedge import hedged
from .load import Admission, LoadControl

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
    "async_sleep",
    "retry_flow",
    "run_async",
    "run_sync",
    "sync_sleep",
]

T = TypeVar("T")


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
    shed_error: Callable[[LoadShedError], BaseException] | None = None,
) -> T:
    """Drive :func:`retry_flow` with blocking sleeps; returns or raises what it decides.

    ``attempt_within(seconds)`` makes an attempt bounded by the deadline's time
    left (see :class:`Within`); without it, ``attempt()`` is used.
    """
    flow = _flow(policy, fallback, first, resend, open_error, first_ticket, started, shed_error)
    breaker = policy.breaker
    last = first
    # The ticket this call holds and has not reported yet: given back on any way out.
    held: int | None = first_ticket if first is not None else None
    admitted: Admission | None = None  # what the call took at the gate and holds
    try:
        decision = next(flow)
        while True:
            reply: Any = None
            if decision is ATTEMPT or isinstance(decision, Within):
                _discard(policy, last, final=True)  # admitted again: now let it go
                if attempt_within is not None and isinstance(decision, Within):
                    last = reply = _attempt(policy, attempt_within, decision.seconds)
                else:
                    last = reply = _attempt(policy, attempt)
            elif decision is ACQUIRE:
                reply = breaker.admit()
                held = None if reply[0] == REJECTED else reply[0]  # nothing else is held here
            elif isinstance(decision, Record):
                report = getattr(breaker, decision.method)
                options = decision.options
                reply = report(decision.ticket, **options) if options else report(decision.ticket)
                held = None
            elif isinstance(decision, Emit):
                emit(decision.event, decision.hooks)
            elif isinstance(decision, Sleep):
                # Free the connection for the sleep, but keep the response whole: if the
                # breaker opens meanwhile, it is what the caller gets back.
                _discard(policy, last, final=False)
                sync_sleep(decision.seconds)
            elif isinstance(decision, Gate):
                reply = _load(policy).enter_sync(decision.left, sync_sleep)
                admitted = None if isinstance(reply, BaseException) else reply
            elif isinstance(decision, Leave):
                admitted = None
                _leave(policy, decision)
            else:
                assert isinstance(decision, Finish)
                if decision.fallback:
                    _discard(policy, last, final=True)
                return _finish(decision)  # type: ignore[no-any-return]
            decision = flow.send(reply)
    except BaseException:
        if held is not None:  # interrupted, or a hook or the flow raised: never strand a probe
            breaker.release(held)
        if admitted is not None:  # nor a bulkhead permit
            _load(policy).leave(admitted, made=True)
        raise
    finally:
        flow.close()


async def run_async(  # noqa: PLR0915 - run_sync's twin, plus hedging and async hooks
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
    shed_error: Callable[[LoadShedError], BaseException] | None = None,
) -> T:
    """Drive :func:`retry_flow` with non-blocking sleeps (asyncio or trio)."""
    flow = _flow(policy, fallback, first, resend, open_error, first_ticket, started, shed_error)
    breaker = policy.breaker
    last = first
    held: int | None = first_ticket if first is not None else None
    admitted: Admission | None = None
    made = 0 if first is None else 1  # attempts made so far (HedgeSent names its attempt)
    # Events are sent from sync code (emit() below, the breaker on a state change): the
    # async hooks' awaitables land in `pending`, awaited before the call's next step.
    pending, token = collect()
    try:
        decision = next(flow)
        while True:
            if pending:
                await flush(pending)  # may be cancelled while we hold the probe
            reply: Any = None
            if decision is ATTEMPT or isinstance(decision, Within):
                await _async_discard(policy, last, final=True)
                made += 1
                if policy.hedging is not None and resend is Resend.ALWAYS:
                    within = decision.seconds if isinstance(decision, Within) else None
                    last = reply = await hedged(
                        policy,
                        (attempt, attempt_within),
                        within,
                        _attempt_async,
                        _hedge_discard(policy),
                        attempt=made,
                    )
                elif attempt_within is not None and isinstance(decision, Within):
                    last = reply = await _attempt_async(policy, attempt_within, decision.seconds)
                else:
                    last = reply = await _attempt_async(policy, attempt)
            elif decision is ACQUIRE:
                reply = await breaker.admit_async()
                held = None if reply[0] == REJECTED else reply[0]  # nothing else is held here
            elif isinstance(decision, Record):
                report = getattr(breaker, decision.method + "_async")
                options = decision.options
                reply = await (
                    report(decision.ticket, **options) if options else report(decision.ticket)
                )
                held = None
            elif isinstance(decision, Emit):
                emit(decision.event, decision.hooks)
            elif isinstance(decision, Sleep):
                await _async_discard(policy, last, final=False)
                await async_sleep(decision.seconds)
            elif isinstance(decision, Gate):
                reply = await _load(policy).enter_async(decision.left, async_sleep)
                admitted = None if isinstance(reply, BaseException) else reply
            elif isinstance(decision, Leave):
                admitted = None
                _leave(policy, decision)
            else:
                assert isinstance(decision, Finish)
                if decision.fallback:
                    await _async_discard(policy, last, final=True)
                result = _finish(decision)
                if decision.fallback and inspect.isawaitable(result):
                    result = await result
                return result  # type: ignore[no-any-return]
            decision = flow.send(reply)
    except BaseException as exc:
        if admitted is not None:  # never strand a bulkhead permit
            _load(policy).leave(admitted, made=True)
        if held is not None:  # cancelled, or a hook or the flow raised: never strand a probe
            await _give_back(breaker, held, exc)
        if last is not None and last.error is None and policy.abandon is not None:
            # A response kept whole for the backoff sleep (it might have been returned):
            # nobody will read it now, so its connection must not stay taken.
            await _abandon(policy.abandon, last.value, exc)
        raise
    finally:
        flow.close()
        stop_collecting(pending, token)


def _flow(  # noqa: PLR0917 - the drivers' arguments, passed on
    policy: Policy,
    fallback: Callable[[BaseException], Any] | None,
    first: Outcome | None,
    resend: Resend,
    open_error: Callable[[str, float], BaseException] | None,
    first_ticket: int,
    started: float | None,
    shed_error: Callable[[LoadShedError], BaseException] | None,
) -> Flow:
    one_attempt = _runtime.outer_retries()  # an outer mount point retries this call
    return retry_flow(
        policy,
        fallback,
        first,
        resend,
        open_error,
        first_ticket,
        started,
        one_attempt=one_attempt,
        shed_error=shed_error,
    )


def _load(policy: Policy) -> LoadControl:
    load = policy.load
    assert load is not None  # the flow yields Gate and Leave only when it has stages
    return load


def _leave(policy: Policy, decision: Leave) -> None:
    _load(policy).leave(decision.admission, decision.made, decision.accepted, decision.limit)


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


async def _abandon(
    abandon: Callable[[Any], Awaitable[None] | None], value: Any, exc: BaseException
) -> None:
    """Let go of ``value`` on the way out of a cancelled (or failed) call, shielded."""
    closing = abandon(value)
    if closing is None:
        return
    if isinstance(exc, GeneratorExit):  # the coroutine is being closed and must not wait
        if inspect.iscoroutine(closing):
            closing.close()
        return
    import anyio  # noqa: PLC0415 - an awaitable abandon belongs to an anyio-based client

    with anyio.CancelScope(shield=True):
        await closing


def _hedge_discard(policy: Policy) -> Callable[[Outcome], Awaitable[None]]:
    async def discard(outcome: Outcome) -> None:
        await _async_discard(policy, outcome, final=True)

    return discard


def _discard(policy: Policy, outcome: Outcome | None, *, final: bool) -> None:
    if policy.discard is not None and outcome is not None and outcome.error is None:
        policy.discard(outcome.value, final)


async def _async_discard(policy: Policy, outcome: Outcome | None, *, final: bool) -> None:
    if policy.async_discard is not None and outcome is not None and outcome.error is None:
        await policy.async_discard(outcome.value, final)
    else:
        _discard(policy, outcome, final=final)


def _finish(decision: Finish) -> Any:
    error = decision.error
    if error is not None:
        raise error
    return decision.value
