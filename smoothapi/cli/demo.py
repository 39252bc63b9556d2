"""``python -m smoothapi demo``: watch retries, the breaker and the fallback at work.

An embedded flaky server (:mod:`smoothapi.cli.demo_server`) is driven through
four phases, once per mount point and client library.  First the decorator,
``@resilient_api`` around a function that calls ``requests``, ``httpx.Client``
or ``httpx.AsyncClient`` (an ``async def`` run with :func:`asyncio.run`); then
the three transports and the aiohttp middleware, mounted under the client so
that plain ``session.get(...)`` / ``client.get(...)`` calls are resilient:
``session.mount("http://", ResilientAdapter(config))``,
``httpx.Client(transport=ResilientTransport(config))``,
``httpx.AsyncClient(transport=AsyncResilientTransport(config))`` and
``aiohttp.ClientSession(middlewares=(ResilientMiddleware(config),))``.

1. healthy - every call is answered with one request;
2. transient blip - the server answers 503, 503, then 200: one call retries
   twice and succeeds, and the breaker stays CLOSED (a transport hands back
   one 200 response and says how many attempts it took);
3. outage - every request gets 503: the first call's failed attempts open
   the breaker (``failure_threshold`` of them).  The decorated function then
   answers with its fallback; a transport returns that last 503 response as
   it is.  From then on calls are rejected with no request reaching the
   server: the decorator serves the fallback or raises ``CircuitOpenError``;
   a transport raises an error that is both ``CircuitOpenError`` and the
   client's own error (``requests.ConnectionError``, ``httpx.TransportError``,
   ``aiohttp.ClientConnectionError``),
   or - for a second client whose transport has ``fallback=`` and shares the
   origin's breaker - answers with a synthetic 200 ``{"status": "degraded"}``;
4. recovery - the server comes back during the cooldown; once it has passed,
   one probe call goes through, the breaker closes and calls succeed again.

Retries, transitions, rejections and fallbacks come from smoothapi's event
hooks; attempts are logged from inside the decorated function (a transport
reports them on the response); requests are counted by the server.  The demo
checks what it observes against what the contract promises and returns 1 if
they disagree, so it doubles as an end-to-end test.  ``requests``,
``httpx`` and ``aiohttp`` are imported only here, inside functions; a missing
one is skipped with a note.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TextIO, TypeVar

from ..breaker import CircuitBreaker, CircuitState
from ..classify import http_status
from ..config import BackoffConfig, CircuitBreakerConfig, ResilientConfig
from ..errors import CircuitOpenError
from ..events import (
    CallRejected,
    Event,
    FallbackServed,
    RetriesExhausted,
    RetryScheduled,
    StateChanged,
)
from ..mounts._transport import attempts
from ..mounts.decorator import resilient_api
from .demo_server import FlakyServer, Mode

__all__ = ["DEMO_CONFIG", "FALLBACK", "run_demo"]

#: What every demo call falls back to while the breaker is open.
FALLBACK: dict[str, str] = {"status": "degraded"}
#: Small numbers, so the whole demo runs in a few seconds of real time.
DEMO_CONFIG = ResilientConfig(
    backoff=BackoffConfig(base_delay=0.05, max_delay=0.4, max_retries=3),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=1500),
    fallback=FALLBACK,
)
#: In phase 4 the server answers 503 for this long, then recovers (well inside the cooldown).
RECOVERS_AFTER = 0.5
#: Margin added to the breaker's ``retry_after`` before the probe call.
PROBE_MARGIN = 0.05
#: Per-request timeout for the clients (the local server answers in milliseconds).
TIMEOUT = 5.0

OPEN = CircuitState.OPEN
CLOSED = CircuitState.CLOSED
HALF_OPEN = CircuitState.HALF_OPEN


# -- output ------------------------------------------------------------------

_BOLD, _DIM, _RED, _GREEN, _YELLOW, _MAGENTA, _CYAN = "1", "2", "31", "32", "33", "35", "36"


def _wants_color(out: TextIO, color: bool | None) -> bool:
    """``color`` if given; else ANSI only for a TTY (and not with ``NO_COLOR`` or ``TERM=dumb``)."""
    if color is not None:
        return color
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class _Printer:
    """Writes the timeline: ``+0.412s  attempt 2 -> 503``, relative to :meth:`restart`."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        self.t0 = time.monotonic()

    def restart(self) -> None:
        self.t0 = time.monotonic()

    def paint(self, text: str, *codes: str) -> str:
        if not self.color or not codes:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def write(self, text: str = "", *codes: str) -> None:
        self.out.write(self.paint(text, *codes) + "\n")

    def event(self, text: str, *codes: str) -> None:
        stamp = f"+{time.monotonic() - self.t0:.3f}s"
        self.out.write(f"  {self.paint(f'{stamp:>8}', _DIM)}  {self.paint(text, *codes)}\n")


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {plural or word + 's'}"


def _reason(error: BaseException | None, status: int | None = None) -> str:
    """A short, secret-free description of why an attempt or a call failed."""
    if status is None and error is not None:
        status = http_status(error)
    if status is not None:
        return str(status)
    if isinstance(error, CircuitOpenError):
        return "breaker OPEN, call not made"
    return type(error).__name__ if error is not None else "unknown"


# -- bookkeeping ---------------------------------------------------------------


@dataclass
class _Tally:
    label: str
    calls: int = 0
    requests: int = 0
    successes: int = 0
    fallbacks: int = 0
    errors: int = 0
    failed_responses: int = 0  # a transport handing back the last 503 when retries stop

    def add(self, other: _Tally) -> None:
        self.calls += other.calls
        self.requests += other.requests
        self.successes += other.successes
        self.fallbacks += other.fallbacks
        self.errors += other.errors
        self.failed_responses += other.failed_responses

    def line(self, width: int) -> str:
        amplification = f"{self.requests / self.calls:.2f}x" if self.calls else "n/a"
        returned = ""
        if self.failed_responses:
            returned = f", {_plural(self.failed_responses, 'failed response')} returned"
        return (
            f"summary: {self.label + ':':<{width}} {_plural(self.calls, 'call')}, "
            f"{_plural(self.requests, 'upstream request')} "
            f"(amplification {amplification}), "
            f"{_plural(self.successes, 'success', 'successes')}, "
            f"{_plural(self.fallbacks, 'fallback')} served, "
            f"{_plural(self.errors, 'error')} raised{returned}"
        )


class _Checks:
    """The demo's self-verification: every expectation is counted; a failed one is printed."""

    def __init__(self, printer: _Printer) -> None:
        self.printer = printer
        self.passed = 0
        self.failed: list[str] = []

    def __call__(self, ok: bool, expectation: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(expectation)
            self.printer.event(f"CHECK FAILED: {expectation}", _BOLD, _RED)
        return ok


@dataclass(frozen=True)
class _Call:
    """Step: call the decorated function for ``user_id`` (optionally with ``fallback=None``)."""

    user_id: int
    no_fallback: bool = False


@dataclass(frozen=True)
class _Get:
    """Step: ``GET /users/<user_id>`` through the client (or through the fallback client)."""

    user_id: int
    via_fallback: bool = False


@dataclass(frozen=True)
class _Pause:
    """Step: sleep ``seconds`` of real time."""

    seconds: float


@dataclass(frozen=True)
class _Result:
    value: object
    error: Exception | None
    requests: int  # requests that reached the server during the call

    @property
    def answered(self) -> bool:
        """The upstream's own 200 answer came back."""
        return self.error is None and isinstance(self.value, dict) and self.value.get("ok") is True

    @property
    def fell_back(self) -> bool:
        return self.error is None and self.value == FALLBACK


@dataclass(frozen=True)
class _Answer:
    """What one GET through a mounted transport gave: a response, or the error caught."""

    status: int | None = None
    body: object = None
    attempts: int | None = None  # what the transport wrote on the response
    error: Exception | None = None
    caught: bool = False  # the client's own ``except`` clause caught ``error``
    requests: int = 0  # requests that reached the server during the call

    @property
    def answered(self) -> bool:
        """The upstream's own 200 answer came back."""
        body = self.body
        return self.status == 200 and isinstance(body, dict) and body.get("ok") is True

    @property
    def fell_back(self) -> bool:
        return self.status == 200 and self.body == FALLBACK


StepT = TypeVar("StepT")
ResultT = TypeVar("ResultT")
_Script = Generator[_Call | _Pause, "_Result | None", None]
_TransportScript = Generator[_Get | _Pause, "_Answer | None", None]


class _Section:
    """One client's run: its config (with our hook), timeline, counters and checks."""

    def __init__(
        self,
        key: str,
        label: str,
        title: str,
        *,
        server: FlakyServer,
        printer: _Printer,
        checks: _Checks,
        fallback: object = DEMO_CONFIG.fallback,
    ) -> None:
        self.key = key
        self.label = label
        self.name = f"{key}-demo"  # the breaker's name
        self.server = server
        self.printer = printer
        self.check = checks
        self.tally = _Tally(label)
        self.events: list[Event] = []
        self.config = ResilientConfig(
            backoff=DEMO_CONFIG.backoff,
            circuit_breaker=DEMO_CONFIG.circuit_breaker,
            fallback=fallback,
            hooks=(self.on_event,),
        )
        self._breaker: CircuitBreaker | None = None
        self.attempt = 0
        self.user = 0  # the last user id asked for
        self._before = 0
        self._started = 0.0
        self._opened_at_total: int | None = None
        self.requests_while_open = 0
        printer.write()
        printer.write(f"== {label}: {title} ==", _BOLD)

    @property
    def base(self) -> str:
        return self.server.url

    @property
    def breaker(self) -> CircuitBreaker:
        if self._breaker is None:
            raise RuntimeError("the section's breaker is set once its function or transport exists")
        return self._breaker

    @breaker.setter
    def breaker(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def phase(self, number: int, title: str, what: str) -> None:
        self.printer.write(f" phase {number}: {title} - {what}", _BOLD)

    def set_mode(
        self, mode: Mode, phase: str, *, script: Iterable[int] = (), ready_in: float = 0.0
    ) -> str:
        """Switch the server; its requests are counted under ``<client>:<phase>``."""
        label = f"{self.key}:{phase}"
        self.server.set_mode(mode, phase=label, script=script, ready_in=ready_in)
        return label

    # -- what the decorated function reports -----------------------------------

    def attempted(self, status: int) -> None:
        self.attempt += 1
        codes = (_GREEN,) if status < 400 else (_RED,)
        self.printer.event(f"attempt {self.attempt} -> {status}", *codes)

    # -- smoothapi's event hook --------------------------------------------------

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        show = self.printer.event
        if isinstance(event, RetryScheduled):
            why = _reason(event.error, event.status)
            show(f"retry in {event.delay:.3f}s (attempt {event.attempt} failed: {why})", _YELLOW)
        elif isinstance(event, RetriesExhausted):
            show(
                f"stop retrying after {_plural(event.attempts, 'attempt')}: {event.reason}",
                _YELLOW,
            )
        elif isinstance(event, StateChanged):
            self._track_open(event)
            color = {OPEN: _RED, HALF_OPEN: _YELLOW, CLOSED: _GREEN}[event.new]
            why = ""
            if event.old is CLOSED and event.new is OPEN:
                why = f" ({_plural(event.failures, 'consecutive failed attempt')})"
            elif event.new is HALF_OPEN:
                why = " (cooldown over: this call is the probe)"
            show(f"breaker {event.name}: {event.old} -> {event.new}{why}", _BOLD, color)
        elif isinstance(event, CallRejected):
            show(f"rejected without I/O: probe allowed in {event.retry_after:.3f}s", _MAGENTA)
        elif isinstance(event, FallbackServed):
            show(f"fallback served: {FALLBACK} (instead of: {_reason(event.error)})", _CYAN)

    def _track_open(self, event: StateChanged) -> None:
        # Self-check: while the breaker is OPEN no request may reach the server.
        if event.new is OPEN:
            self._opened_at_total = self.server.total
        elif event.old is OPEN and self._opened_at_total is not None:
            self.requests_while_open += self.server.total - self._opened_at_total
            self._opened_at_total = None

    # -- one call, as the drivers report it -----------------------------------------

    def begin(self) -> None:
        self.attempt = 0
        self._before = self.server.total
        self._started = time.monotonic()

    def _cost(self, requests: int) -> str:
        took = (time.monotonic() - self._started) * 1000
        return f"[{_plural(requests, 'upstream request')}, {took:.1f} ms]"

    def end(self, step: _Call, value: object, error: Exception | None) -> _Result:
        result = _Result(value, error, self.server.total - self._before)
        cost = self._cost(result.requests)
        tally = self.tally
        tally.calls += 1
        tally.requests += result.requests
        call = f"get_user({step.user_id}{', fallback=None' if step.no_fallback else ''})"
        if error is not None:
            tally.errors += 1
            message = str(error).split(";", 1)[0]
            self.printer.event(f"{call} raised {type(error).__name__}: {message}  {cost}", _RED)
        elif result.fell_back:
            tally.fallbacks += 1
            self.printer.event(f"{call} => fallback {value}  {cost}", _CYAN)
        else:
            tally.successes += 1
            self.printer.event(f"{call} => {value}  {cost}", _GREEN)
        return result

    def call_sync(self, fn: Callable[..., object], step: _Call) -> _Result:
        kwargs: dict[str, Any] = {"fallback": None} if step.no_fallback else {}
        self.begin()
        try:
            value = fn(step.user_id, **kwargs)
        except Exception as exc:
            return self.end(step, None, exc)
        return self.end(step, value, None)

    async def call_async(self, fn: Callable[..., Awaitable[object]], step: _Call) -> _Result:
        kwargs: dict[str, Any] = {"fallback": None} if step.no_fallback else {}
        self.begin()
        try:
            value = await fn(step.user_id, **kwargs)
        except Exception as exc:
            return self.end(step, None, exc)
        return self.end(step, value, None)

    def finish(self) -> _Tally:
        if self._opened_at_total is not None:  # still OPEN at the end
            self.requests_while_open += self.server.total - self._opened_at_total
            self._opened_at_total = None
        self.check(
            self.requests_while_open == 0,
            f"{self.label}: no request reached the server while the breaker was OPEN "
            f"(saw {self.requests_while_open})",
        )
        served = sum(isinstance(e, FallbackServed) for e in self.events)
        self.check(
            served == self.tally.fallbacks,
            f"{self.label}: every fallback returned was announced by a FallbackServed event "
            f"({served} events, {self.tally.fallbacks} fallbacks)",
        )
        return self.tally


class _TransportSection(_Section):
    """A transport's run: plain ``client.get`` calls; the transport does the rest.

    ``client`` / ``fallback_client`` name the two clients in the timeline,
    ``attempts`` is how the response reports its attempts, ``client_error``
    the client library's error that a rejection is caught as.
    """

    def __init__(
        self,
        key: str,
        label: str,
        title: str,
        *,
        server: FlakyServer,
        printer: _Printer,
        checks: _Checks,
        client: str,
        attempts: str,
        client_error: type[Exception],
        client_error_name: str,
        fallback_setup: str,
    ) -> None:
        # The transports do not read config.fallback: their fallback= is a response builder.
        super().__init__(
            key, label, title, server=server, printer=printer, checks=checks, fallback=None
        )
        self.name = self.base  # a transport's breaker is named after the origin
        self.client = client
        self.attempts = attempts
        self.client_error = client_error
        self.client_error_name = client_error_name
        printer.write(f"  and {fallback_setup}", _DIM)
        printer.write(
            "      (shares the origin's breaker; answers with fallback= while it is OPEN)", _DIM
        )

    def got(self, step: _Get, answer: _Answer) -> _Answer:
        answer = replace(answer, requests=self.server.total - self._before)
        cost = self._cost(answer.requests)
        tally = self.tally
        tally.calls += 1
        tally.requests += answer.requests
        call = f"{'fallback_' if step.via_fallback else ''}{self.client}.get(/users/{step.user_id})"
        error = answer.error
        if error is not None:
            tally.errors += 1
            if answer.caught:
                kind = (
                    " (a smoothapi.CircuitOpenError)" if isinstance(error, CircuitOpenError) else ""
                )
                name = getattr(error, "name", None)
                retry_after = getattr(error, "retry_after", None)
                about = "" if name is None else f": name={name!r}"
                if retry_after is not None:
                    about += f", retry_after={retry_after:.3f}s"
                self.printer.event(
                    f"{call} raised {type(error).__name__}{kind}, "
                    f"caught by `except {self.client_error_name}`{about}  {cost}",
                    _RED,
                )
            else:
                self.printer.event(
                    f"{call} raised {type(error).__name__}: {error} (not the client's error)"
                    f"  {cost}",
                    _BOLD,
                    _RED,
                )
            return answer
        said = f"{call} -> {answer.status} {answer.body}"
        attempts = f"{self.attempts}={answer.attempts}"
        if answer.fell_back:
            tally.fallbacks += 1
            self.printer.event(f"{said} (built by fallback=)  {attempts}  {cost}", _CYAN)
        elif answer.answered:
            tally.successes += 1
            self.printer.event(f"{said}  {attempts}  {cost}", _GREEN)
        else:
            tally.failed_responses += 1
            self.printer.event(f"{said} (the last response, as is)  {attempts}  {cost}", _RED)
        return answer

    def get_sync(self, get: Callable[[_Get], _Answer], step: _Get) -> _Answer:
        self.begin()
        try:
            answer = get(step)
        except Exception as exc:  # escaped the client's own except clause: a failed check
            answer = _Answer(error=exc)
        return self.got(step, answer)

    async def get_async(self, get: Callable[[_Get], Awaitable[_Answer]], step: _Get) -> _Answer:
        self.begin()
        try:
            answer = await get(step)
        except Exception as exc:
            answer = _Answer(error=exc)
        return self.got(step, answer)


# -- the scenarios: written once, driven by a sync and an async driver ----------------


def _call(sec: _Section, *, no_fallback: bool = False) -> Generator[_Call, _Result | None, _Result]:
    """Step: one call for the next user id; evaluates to its :class:`_Result`."""
    sec.user += 1
    result = yield _Call(sec.user, no_fallback)
    assert result is not None
    return result


def _get(sec: _Section, *, via_fallback: bool = False) -> Generator[_Get, _Answer | None, _Answer]:
    """Step: one GET for the next user id; evaluates to its :class:`_Answer`."""
    sec.user += 1
    answer = yield _Get(sec.user, via_fallback)
    assert answer is not None
    return answer


def _count(events: list[Event], kind: type[Any], since: int) -> int:
    return sum(isinstance(e, kind) for e in events[since:])


def _transition(events: list[Event], old: CircuitState, new: CircuitState, since: int) -> bool:
    return any(
        isinstance(e, StateChanged) and e.old is old and e.new is new for e in events[since:]
    )


def _scenario(sec: _Section) -> _Script:
    """The four phases, as steps (the drivers make the calls and the pauses)."""
    sec.printer.restart()  # timestamps count from the first call, not from client set-up
    yield from _healthy(sec)
    yield from _blip(sec)
    yield from _outage(sec)
    yield from _recovery(sec)


def _healthy(sec: _Section) -> _Script:
    check, who = sec.check, sec.label
    sec.phase(1, "healthy", "the upstream answers 200")
    sec.set_mode("healthy", phase="healthy")
    for _ in range(3):
        r = yield from _call(sec)
        check(r.answered and r.requests == 1, f"{who}: a healthy call costs exactly one request")
    check(not sec.events, f"{who}: the happy path sends no events")


def _blip(sec: _Section) -> _Script:
    check, who, breaker, events = sec.check, sec.label, sec.breaker, sec.events
    sec.phase(2, "transient blip", "the upstream answers 503, 503, then 200")
    mark = len(events)
    sec.set_mode("flaky", phase="blip", script=(503, 503, 200))
    r = yield from _call(sec)
    check(r.answered, f"{who}: the call survives the blip")
    check(r.requests == 3, f"{who}: it took 3 requests (2 retries), saw {r.requests}")
    check(_count(events, RetryScheduled, mark) == 2, f"{who}: 2 RetryScheduled events")
    check(
        breaker.state is CLOSED and breaker.failure_count == 0,
        f"{who}: the breaker stays CLOSED and the success resets its failure count",
    )


def _outage(sec: _Section) -> _Script:
    check, who, breaker, events = sec.check, sec.label, sec.breaker, sec.events
    threshold = breaker.config.failure_threshold
    sec.phase(3, "outage", "the upstream answers 503 to everything")
    mark = len(events)
    outage = sec.set_mode("outage", phase="outage")
    r = yield from _call(sec)
    check(r.fell_back, f"{who}: the call that hits the outage gets the fallback")
    check(
        r.requests == threshold,
        f"{who}: the breaker opened after {threshold} failed attempts (saw {r.requests})",
    )
    check(_transition(events, CLOSED, OPEN, mark), f"{who}: StateChanged CLOSED -> OPEN")
    check(breaker.state is OPEN, f"{who}: the breaker is OPEN")
    r = yield from _call(sec)
    check(
        r.fell_back and r.requests == 0,
        f"{who}: while OPEN a call gets the fallback with no request",
    )
    r = yield from _call(sec, no_fallback=True)
    check(
        isinstance(r.error, CircuitOpenError)
        and r.error.name == sec.name
        and r.error.retry_after > 0
        and r.requests == 0,
        f"{who}: with fallback=None an OPEN breaker raises CircuitOpenError, no request",
    )
    check(_count(events, CallRejected, mark) == 2, f"{who}: 2 CallRejected events")
    seen = sec.server.count(outage)
    check(seen == threshold, f"{who}: the server saw {threshold} requests in the outage ({seen})")


def _wait_for_cooldown(sec: _Section) -> Generator[_Pause, object, None]:
    wait = sec.breaker.retry_after + PROBE_MARGIN
    sec.printer.event(f"(waiting {wait:.2f}s for the cooldown to end)", _DIM)
    yield _Pause(wait)


def _recovery(sec: _Section) -> _Script:
    check, who, breaker, events = sec.check, sec.label, sec.breaker, sec.events
    sec.phase(4, "recovery", f"the upstream is back {RECOVERS_AFTER}s into the breaker's cooldown")
    mark = len(events)
    recovery = sec.set_mode("recovering", phase="recovery", ready_in=RECOVERS_AFTER)
    r = yield from _call(sec)
    check(
        r.fell_back and r.requests == 0,
        f"{who}: inside the cooldown the breaker still answers with the fallback",
    )
    yield from _wait_for_cooldown(sec)
    r = yield from _call(sec)
    check(r.answered and r.requests == 1, f"{who}: the probe call goes through with one request")
    check(
        _transition(events, OPEN, HALF_OPEN, mark) and _transition(events, HALF_OPEN, CLOSED, mark),
        f"{who}: StateChanged OPEN -> HALF_OPEN -> CLOSED",
    )
    for _ in range(2):
        r = yield from _call(sec)
        check(r.answered and r.requests == 1, f"{who}: after recovery a call costs one request")
    check(breaker.state is CLOSED, f"{who}: the breaker ends CLOSED")
    seen = sec.server.count(recovery)
    check(seen == 3, f"{who}: the server saw 3 requests in the recovery phase ({seen})")


# -- the same four phases through a mounted transport ------------------------------------


def _transport_scenario(sec: _TransportSection) -> _TransportScript:
    sec.printer.restart()
    yield from _t_healthy(sec)
    yield from _t_blip(sec)
    yield from _t_outage(sec)
    yield from _t_recovery(sec)


def _t_healthy(sec: _TransportSection) -> _TransportScript:
    check, who = sec.check, sec.label
    sec.phase(1, "healthy", "the upstream answers 200")
    sec.set_mode("healthy", phase="healthy")
    for _ in range(3):
        r = yield from _get(sec)
        check(
            r.answered and r.requests == 1 and r.attempts == 1,
            f"{who}: a healthy GET costs exactly one request and reports 1 attempt",
        )
    check(not sec.events, f"{who}: the happy path sends no events")


def _t_blip(sec: _TransportSection) -> _TransportScript:
    check, who, breaker, events = sec.check, sec.label, sec.breaker, sec.events
    sec.phase(2, "transient blip", "503, 503, then 200: retried inside the transport")
    mark = len(events)
    sec.set_mode("flaky", phase="blip", script=(503, 503, 200))
    r = yield from _get(sec)
    check(r.answered, f"{who}: the caller gets the 200, never sees the 503s")
    check(
        r.requests == 3 and r.attempts == 3,
        f"{who}: 3 requests, and {sec.attempts} says 3 (saw {r.requests}, {r.attempts})",
    )
    check(_count(events, RetryScheduled, mark) == 2, f"{who}: 2 RetryScheduled events")
    check(
        breaker.state is CLOSED and breaker.failure_count == 0,
        f"{who}: the breaker stays CLOSED and the success resets its failure count",
    )
    check(breaker.name == sec.base, f"{who}: the breaker is named after the origin {sec.base}")


def _t_outage(sec: _TransportSection) -> _TransportScript:
    check, who, breaker, events = sec.check, sec.label, sec.breaker, sec.events
    threshold = breaker.config.failure_threshold
    sec.phase(3, "outage", "the upstream answers 503 to everything")
    mark = len(events)
    outage = sec.set_mode("outage", phase="outage")
    r = yield from _get(sec)
    check(
        r.status == 503 and r.error is None,
        f"{who}: when the breaker opens mid-request the last 503 response is returned as is",
    )
    check(
        r.requests == threshold and r.attempts == threshold,
        f"{who}: the breaker opened after {threshold} failed attempts (saw {r.requests})",
    )
    check(_transition(events, CLOSED, OPEN, mark), f"{who}: StateChanged CLOSED -> OPEN")
    check(
        any(isinstance(e, RetriesExhausted) and e.reason == "breaker open" for e in events[mark:]),
        f"{who}: RetriesExhausted says the breaker opened",
    )
    check(breaker.state is OPEN, f"{who}: the breaker is OPEN")
    r = yield from _get(sec)
    error = r.error
    check(
        r.caught
        and isinstance(error, CircuitOpenError)
        and isinstance(error, sec.client_error)
        and error.name == sec.base
        and error.retry_after > 0
        and r.requests == 0,
        f"{who}: while OPEN a GET raises an error that is both CircuitOpenError and "
        f"{sec.client_error_name}, with no request",
    )
    r = yield from _get(sec, via_fallback=True)
    check(
        r.fell_back and r.requests == 0,
        f"{who}: while OPEN the fallback client's GET is answered by fallback=, no request",
    )
    check(_count(events, CallRejected, mark) == 2, f"{who}: 2 CallRejected events")
    seen = sec.server.count(outage)
    check(seen == threshold, f"{who}: the server saw {threshold} requests in the outage ({seen})")


def _t_recovery(sec: _TransportSection) -> _TransportScript:
    check, who, breaker, events = sec.check, sec.label, sec.breaker, sec.events
    sec.phase(4, "recovery", f"the upstream is back {RECOVERS_AFTER}s into the breaker's cooldown")
    mark = len(events)
    recovery = sec.set_mode("recovering", phase="recovery", ready_in=RECOVERS_AFTER)
    r = yield from _get(sec, via_fallback=True)
    check(
        r.fell_back and r.requests == 0,
        f"{who}: inside the cooldown the fallback client still gets the fallback",
    )
    yield from _wait_for_cooldown(sec)
    r = yield from _get(sec)
    check(
        r.answered and r.requests == 1 and r.attempts == 1,
        f"{who}: the probe GET goes through with one request",
    )
    check(
        _transition(events, OPEN, HALF_OPEN, mark) and _transition(events, HALF_OPEN, CLOSED, mark),
        f"{who}: StateChanged OPEN -> HALF_OPEN -> CLOSED",
    )
    for via_fallback in (False, True):
        r = yield from _get(sec, via_fallback=via_fallback)
        check(
            r.answered and r.requests == 1,
            f"{who}: after recovery a GET (through either client) costs one request",
        )
    check(breaker.state is CLOSED, f"{who}: the breaker ends CLOSED")
    seen = sec.server.count(recovery)
    check(seen == 3, f"{who}: the server saw 3 requests in the recovery phase ({seen})")


# -- drivers: run a scenario's steps ------------------------------------------------------


def _drive_sync(
    script: Generator[StepT | _Pause, ResultT | None, None], perform: Callable[[StepT], ResultT]
) -> None:
    sent: ResultT | None = None
    while True:
        try:
            step = script.send(sent)
        except StopIteration:
            return
        if isinstance(step, _Pause):
            sent = None
            time.sleep(step.seconds)
        else:
            sent = perform(step)


async def _drive_async(
    script: Generator[StepT | _Pause, ResultT | None, None],
    perform: Callable[[StepT], Awaitable[ResultT]],
) -> None:
    sent: ResultT | None = None
    while True:
        try:
            step = script.send(sent)
        except StopIteration:
            return
        if isinstance(step, _Pause):
            sent = None
            await asyncio.sleep(step.seconds)
        else:
            sent = await perform(step)


# -- the decorator over three clients ------------------------------------------------------

_Make = Callable[[str, str, str], _Section]


def _run_requests(section: _Make) -> _Tally:
    import requests  # noqa: PLC0415 - optional dependency, loaded only for the demo

    sec = section("requests", "requests (sync)", "@resilient_api over requests.Session")
    with requests.Session() as session:

        @resilient_api(sec.config, name=sec.name)
        def get_user(user_id: int) -> Any:
            response = session.get(f"{sec.base}/users/{user_id}", timeout=TIMEOUT)
            sec.attempted(response.status_code)
            response.raise_for_status()
            return response.json()

        sec.breaker = get_user.breaker
        _drive_sync(_scenario(sec), functools.partial(sec.call_sync, get_user))
    return sec.finish()


def _run_httpx(section: _Make) -> _Tally:
    import httpx  # noqa: PLC0415 - optional dependency, loaded only for the demo

    sec = section("httpx", "httpx.Client (sync)", "@resilient_api over httpx.Client")
    with httpx.Client(timeout=TIMEOUT) as client:

        @resilient_api(sec.config, name=sec.name)
        def get_user(user_id: int) -> Any:
            response = client.get(f"{sec.base}/users/{user_id}")
            sec.attempted(response.status_code)
            response.raise_for_status()
            return response.json()

        sec.breaker = get_user.breaker
        _drive_sync(_scenario(sec), functools.partial(sec.call_sync, get_user))
    return sec.finish()


def _run_httpx_async(section: _Make) -> _Tally:
    import httpx  # noqa: PLC0415 - optional dependency, loaded only for the demo

    sec = section(
        "httpx-async",
        "httpx.AsyncClient (async)",
        "@resilient_api on an async def over httpx.AsyncClient, run with asyncio.run",
    )

    async def main() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:

            @resilient_api(sec.config, name=sec.name)
            async def get_user(user_id: int) -> Any:
                response = await client.get(f"{sec.base}/users/{user_id}")
                sec.attempted(response.status_code)
                response.raise_for_status()
                return response.json()

            sec.breaker = get_user.breaker
            await _drive_async(_scenario(sec), functools.partial(sec.call_async, get_user))

    asyncio.run(main())
    return sec.finish()


# -- the three transports -----------------------------------------------------------------
#
# Each section has two clients on the same origin: `session` / `client`, whose
# transport has no fallback (a rejected request raises), and `fallback_<name>`,
# whose transport has fallback= and shares the origin's breaker (breaker=), so
# one outage opens the breaker for both.


class _MakeTransport(Protocol):
    def __call__(
        self,
        key: str,
        label: str,
        title: str,
        *,
        client: str,
        attempts: str,
        client_error: type[Exception],
        client_error_name: str,
        fallback_setup: str,
    ) -> _TransportSection: ...


def _run_requests_adapter(section: _MakeTransport) -> _Tally:
    import requests  # noqa: PLC0415 - optional dependency, loaded only for the demo

    from ..mounts.requests_adapter import ResilientAdapter  # noqa: PLC0415

    sec = section(
        "requests-adapter",
        "requests.Session + ResilientAdapter",
        'session.mount("http://", ResilientAdapter(config))',
        client="session",
        attempts="response.smoothapi_attempts",
        client_error=requests.ConnectionError,
        client_error_name="requests.ConnectionError",
        fallback_setup=(
            'fallback_session.mount("http://", ResilientAdapter(config, fallback=degraded, '
            "breaker=adapter.breaker_for(url)))"
        ),
    )

    def degraded(request: requests.PreparedRequest, error: BaseException) -> requests.Response:
        """The fallback: a 200 ``{"status": "degraded"}`` built without I/O."""
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(FALLBACK).encode()
        response.url, response.request = request.url or "", request
        return response

    adapter = ResilientAdapter(sec.config)
    sec.breaker = adapter.breaker_for(sec.base)
    fallback_adapter = ResilientAdapter(sec.config, fallback=degraded, breaker=sec.breaker)
    with requests.Session() as session, requests.Session() as fallback_session:
        session.mount("http://", adapter)
        fallback_session.mount("http://", fallback_adapter)

        def get(step: _Get) -> _Answer:
            client = fallback_session if step.via_fallback else session
            try:
                response = client.get(f"{sec.base}/users/{step.user_id}", timeout=TIMEOUT)
            except requests.ConnectionError as exc:  # the breaker's rejection is one too
                return _Answer(error=exc, caught=True)
            attempts: int = response.smoothapi_attempts  # type: ignore[attr-defined]
            return _Answer(response.status_code, response.json(), attempts)

        _drive_sync(_transport_scenario(sec), functools.partial(sec.get_sync, get))
    return sec.finish()


def _run_httpx_transport(section: _MakeTransport) -> _Tally:
    import httpx  # noqa: PLC0415 - optional dependency, loaded only for the demo

    from ..mounts.httpx_transport import ResilientTransport  # noqa: PLC0415

    sec = section(
        "httpx-transport",
        "httpx.Client + ResilientTransport",
        "httpx.Client(transport=ResilientTransport(config))",
        client="client",
        attempts='response.extensions["smoothapi_attempts"]',
        client_error=httpx.TransportError,
        client_error_name="httpx.TransportError",
        fallback_setup=(
            "fallback_client = httpx.Client(transport=ResilientTransport(config, "
            "fallback=degraded, breaker=transport.breaker_for(url)))"
        ),
    )

    def degraded(request: httpx.Request, error: BaseException) -> httpx.Response:
        """The fallback: a 200 ``{"status": "degraded"}`` built without I/O."""
        return httpx.Response(200, json=FALLBACK, request=request)

    transport = ResilientTransport(sec.config)
    sec.breaker = transport.breaker_for(sec.base)
    fallback_transport = ResilientTransport(sec.config, fallback=degraded, breaker=sec.breaker)
    with (
        httpx.Client(transport=transport, timeout=TIMEOUT) as client,
        httpx.Client(transport=fallback_transport, timeout=TIMEOUT) as fallback_client,
    ):

        def get(step: _Get) -> _Answer:
            chosen = fallback_client if step.via_fallback else client
            try:
                response = chosen.get(f"{sec.base}/users/{step.user_id}")
            except httpx.TransportError as exc:  # the breaker's rejection is one too
                return _Answer(error=exc, caught=True)
            attempts = response.extensions["smoothapi_attempts"]
            return _Answer(response.status_code, response.json(), attempts)

        _drive_sync(_transport_scenario(sec), functools.partial(sec.get_sync, get))
    return sec.finish()


def _run_httpx_async_transport(section: _MakeTransport) -> _Tally:
    import httpx  # noqa: PLC0415 - optional dependency, loaded only for the demo

    from ..mounts.httpx_transport import AsyncResilientTransport  # noqa: PLC0415

    sec = section(
        "httpx-async-transport",
        "httpx.AsyncClient + AsyncResilientTransport",
        "httpx.AsyncClient(transport=AsyncResilientTransport(config)), run with asyncio.run",
        client="client",
        attempts='response.extensions["smoothapi_attempts"]',
        client_error=httpx.TransportError,
        client_error_name="httpx.TransportError",
        fallback_setup=(
            "fallback_client = httpx.AsyncClient(transport=AsyncResilientTransport(config, "
            "fallback=degraded, "
            "breaker=transport.breaker_for(url)))"
        ),
    )

    def degraded(request: httpx.Request, error: BaseException) -> httpx.Response:
        """The fallback: a 200 ``{"status": "degraded"}`` built without I/O."""
        return httpx.Response(200, json=FALLBACK, request=request)

    async def main() -> None:
        transport = AsyncResilientTransport(sec.config)
        sec.breaker = transport.breaker_for(sec.base)
        fallback_transport = AsyncResilientTransport(
            sec.config, fallback=degraded, breaker=sec.breaker
        )
        async with (
            httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client,
            httpx.AsyncClient(transport=fallback_transport, timeout=TIMEOUT) as fallback_client,
        ):

            async def get(step: _Get) -> _Answer:
                chosen = fallback_client if step.via_fallback else client
                try:
                    response = await chosen.get(f"{sec.base}/users/{step.user_id}")
                except httpx.TransportError as exc:  # the breaker's rejection is one too
                    return _Answer(error=exc, caught=True)
                attempts = response.extensions["smoothapi_attempts"]
                return _Answer(response.status_code, response.json(), attempts)

            await _drive_async(_transport_scenario(sec), functools.partial(sec.get_async, get))

    asyncio.run(main())
    return sec.finish()


def _run_aiohttp_middleware(section: _MakeTransport) -> _Tally:
    import aiohttp  # noqa: PLC0415 - optional dependency, loaded only for the demo

    from ..mounts.aiohttp_middleware import ResilientMiddleware  # noqa: PLC0415

    sec = section(
        "aiohttp-middleware",
        "aiohttp.ClientSession + ResilientMiddleware",
        "aiohttp.ClientSession(middlewares=(ResilientMiddleware(config),)), run with asyncio.run",
        client="session",
        attempts="smoothapi.attempts(response)",
        client_error=aiohttp.ClientConnectionError,
        client_error_name="aiohttp.ClientConnectionError",
        fallback_setup=(
            "fallback_session = aiohttp.ClientSession(middlewares=(ResilientMiddleware(config, "
            "fallback=degraded, breaker=middleware.breaker_for(url)),))"
        ),
    )

    def degraded(request: aiohttp.ClientRequest, error: BaseException) -> aiohttp.ClientResponse:
        """The fallback: a 200 ``{"status": "degraded"}`` built without I/O."""
        return ResilientMiddleware.response(request, json=FALLBACK)

    async def main() -> None:
        middleware = ResilientMiddleware(sec.config)
        sec.breaker = middleware.breaker_for(sec.base)
        fallback_middleware = ResilientMiddleware(
            sec.config, fallback=degraded, breaker=sec.breaker
        )
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with (
            aiohttp.ClientSession(middlewares=(middleware,), timeout=timeout) as session,
            aiohttp.ClientSession(
                middlewares=(fallback_middleware,), timeout=timeout
            ) as fallback_session,
        ):

            async def get(step: _Get) -> _Answer:
                chosen = fallback_session if step.via_fallback else session
                try:
                    async with chosen.get(f"{sec.base}/users/{step.user_id}") as response:
                        body = await response.json()
                except aiohttp.ClientConnectionError as exc:  # the rejection is one too
                    return _Answer(error=exc, caught=True)
                return _Answer(response.status, body, attempts(response))

            await _drive_async(_transport_scenario(sec), functools.partial(sec.get_async, get))

    asyncio.run(main())
    return sec.finish()


_DECORATED: tuple[tuple[str, str, Callable[[_Make], _Tally]], ...] = (
    ("requests", "requests", _run_requests),
    ("httpx", "httpx.Client", _run_httpx),
    ("httpx", "httpx.AsyncClient", _run_httpx_async),
)
_TRANSPORTS: tuple[tuple[str, str, Callable[[_MakeTransport], _Tally]], ...] = (
    ("requests", "ResilientAdapter", _run_requests_adapter),
    ("httpx", "ResilientTransport", _run_httpx_transport),
    ("httpx", "AsyncResilientTransport", _run_httpx_async_transport),
    ("aiohttp", "ResilientMiddleware", _run_aiohttp_middleware),
)


def _installed(module: str) -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec(module) is not None


class _Skipper:
    """Notes a client library that is not installed (once per run of skipped sections)."""

    def __init__(self, printer: _Printer) -> None:
        self.printer = printer
        self.noted = False

    def __call__(self, module: str, label: str) -> bool:
        if _installed(module):
            self.noted = False
            return False
        if not self.noted:
            self.printer.write()
        self.noted = True
        self.printer.write(
            f"note: skipping {label}: {module} is not installed "
            f"(the 'demo' extra: pip install {module})",
            _YELLOW,
        )
        return True


# -- entry point ------------------------------------------------------------------------


def run_demo(*, out: TextIO = sys.stdout, color: bool | None = None) -> int:
    """Run the demo, printing a timeline to ``out``; 0 if everything behaved as promised.

    ``color``: ``None`` uses ANSI colors only when ``out`` is a TTY (and
    ``NO_COLOR`` is unset), ``False`` never, ``True`` always.  Returns 1 if an
    observed behaviour contradicts the contract (the breaker never opened, a
    request reached the server while it was OPEN, ...).
    """
    printer = _Printer(out, _wants_color(out, color))
    checks = _Checks(printer)
    started = time.monotonic()
    cfg = DEMO_CONFIG
    backoff, breaker = cfg.backoff, cfg.circuit_breaker
    decorated: list[_Tally] = []
    transports: list[_Tally] = []
    with FlakyServer() as server:
        printer.write(
            "smoothapi demo: a flaky upstream; @resilient_api, then the transports, over "
            "requests, httpx.Client and httpx.AsyncClient",
            _BOLD,
        )
        printer.write(f"  server    {server.url} (embedded; counts every request that reaches it)")
        printer.write(
            f"  backoff   base_delay={backoff.base_delay}s max_delay={backoff.max_delay}s "
            f"max_retries={backoff.max_retries} jitter={backoff.jitter}"
        )
        printer.write(
            f"  breaker   failure_threshold={breaker.failure_threshold} "
            f"cooldown={breaker.cooldown:g}s"
        )
        printer.write(
            f"  fallback  {cfg.fallback} (the decorator's config.fallback; a transport's "
            "fallback= returns it as a 200 response)"
        )

        def section(key: str, label: str, title: str) -> _Section:
            return _Section(key, label, title, server=server, printer=printer, checks=checks)

        def transport_section(key: str, label: str, title: str, **kwargs: Any) -> _TransportSection:
            return _TransportSection(
                key, label, title, server=server, printer=printer, checks=checks, **kwargs
            )

        skip = _Skipper(printer)
        for module, label, run in _DECORATED:
            if skip(module, label):
                continue
            decorated.append(run(section))
        for module, label, run_transport in _TRANSPORTS:
            if skip(module, label):
                continue
            transports.append(run_transport(transport_section))
        tallies = [*decorated, *transports]
        leftover = server.total - sum(t.requests for t in tallies)

    total = _Tally("total")
    for tally in tallies:
        total.add(tally)
    checks(
        leftover == 0, f"every request the server saw was made by a demo call ({leftover} extra)"
    )
    elapsed = time.monotonic() - started

    printer.write()
    width = max(len(t.label) for t in (*tallies, total)) + 1
    for tally in (*tallies, total):
        printer.write(tally.line(width), _BOLD)
    if checks.failed:
        printer.write(
            f"summary: FAILED {len(checks.failed)} of {checks.passed + len(checks.failed)} "
            f"checks in {elapsed:.1f}s:",
            _BOLD,
            _RED,
        )
        for expectation in checks.failed:
            printer.write(f"  - {expectation}", _RED)
        return 1
    if not tallies:
        printer.write(
            "summary: nothing to demonstrate: neither requests nor httpx is installed", _BOLD
        )
        return 0
    printer.write(
        f"summary: all {checks.passed} checks passed in {elapsed:.1f}s "
        f"({_plural(len(decorated), 'decorated client')}, "
        f"{_plural(len(transports), 'mount point')} under a client)",
        _BOLD,
        _GREEN,
    )
    return 0
