"""``python -m smoothapi demo``: watch retries, the breaker and the fallback at work.

An embedded flaky server (:mod:`smoothapi.demo_server`) is driven through
four phases, once per client library - ``requests``, ``httpx.Client`` and
``httpx.AsyncClient`` (an ``async def`` run with :func:`asyncio.run`) - each
behind ``@resilient_api``:

1. healthy - every call is answered with one request;
2. transient blip - the server answers 503, 503, then 200: one call retries
   twice and succeeds, and the breaker stays CLOSED;
3. outage - every request gets 503: the first call's failed attempts open
   the breaker (``failure_threshold`` of them), and from then on calls are
   answered at once by the fallback (or ``CircuitOpenError``) with no request
   reaching the server;
4. recovery - the server comes back during the cooldown; once it has passed,
   one probe call goes through, the breaker closes and calls succeed again.

Retries, transitions, rejections and fallbacks come from smoothapi's event
hooks; attempts are logged from inside the decorated function; requests are
counted by the server.  The demo checks what it observes against what the
contract promises and returns 1 if they disagree, so it doubles as an
end-to-end test.  ``requests`` and ``httpx`` are imported only here, inside
functions; a missing one is skipped with a note.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from .breaker import CircuitBreaker, CircuitState
from .classify import http_status
from .config import BackoffConfig, CircuitBreakerConfig, ResilientConfig
from .decorator import resilient_api
from .demo_server import FlakyServer, Mode
from .errors import CircuitOpenError
from .events import (
    CallRejected,
    Event,
    FallbackServed,
    RetriesExhausted,
    RetryScheduled,
    StateChanged,
)

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

    def add(self, other: _Tally) -> None:
        self.calls += other.calls
        self.requests += other.requests
        self.successes += other.successes
        self.fallbacks += other.fallbacks
        self.errors += other.errors

    def line(self, width: int) -> str:
        amplification = f"{self.requests / self.calls:.2f}x" if self.calls else "n/a"
        return (
            f"summary: {self.label + ':':<{width}} {_plural(self.calls, 'call')}, "
            f"{_plural(self.requests, 'upstream request')} "
            f"(amplification {amplification}), "
            f"{_plural(self.successes, 'success', 'successes')}, "
            f"{_plural(self.fallbacks, 'fallback')} served, "
            f"{_plural(self.errors, 'error')} raised"
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


_Step = _Call | _Pause
_Script = Generator[_Step, "_Result | None", None]


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
            fallback=DEMO_CONFIG.fallback,
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
            raise RuntimeError("the section's breaker is set once the function is decorated")
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

    def end(self, step: _Call, value: object, error: Exception | None) -> _Result:
        took = (time.monotonic() - self._started) * 1000
        result = _Result(value, error, self.server.total - self._before)
        tally = self.tally
        tally.calls += 1
        tally.requests += result.requests
        call = f"get_user({step.user_id}{', fallback=None' if step.no_fallback else ''})"
        cost = f"[{_plural(result.requests, 'upstream request')}, {took:.1f} ms]"
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


# -- the scenario: written once, driven by a sync and an async driver ----------------


def _call(sec: _Section, *, no_fallback: bool = False) -> Generator[_Step, _Result | None, _Result]:
    """Step: one call for the next user id; evaluates to its :class:`_Result`."""
    sec.user += 1
    result = yield _Call(sec.user, no_fallback)
    assert result is not None
    return result


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
    wait = breaker.retry_after + PROBE_MARGIN
    sec.printer.event(f"(waiting {wait:.2f}s for the cooldown to end)", _DIM)
    yield _Pause(wait)
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


def _drive_sync(sec: _Section, fn: Callable[..., object]) -> None:
    script = _scenario(sec)
    sent: _Result | None = None
    while True:
        try:
            step = script.send(sent)
        except StopIteration:
            return
        sent = None
        if isinstance(step, _Pause):
            time.sleep(step.seconds)
            continue
        kwargs: dict[str, Any] = {"fallback": None} if step.no_fallback else {}
        sec.begin()
        try:
            value = fn(step.user_id, **kwargs)
        except Exception as exc:
            sent = sec.end(step, None, exc)
        else:
            sent = sec.end(step, value, None)


async def _drive_async(sec: _Section, fn: Callable[..., Awaitable[object]]) -> None:
    script = _scenario(sec)
    sent: _Result | None = None
    while True:
        try:
            step = script.send(sent)
        except StopIteration:
            return
        sent = None
        if isinstance(step, _Pause):
            await asyncio.sleep(step.seconds)
            continue
        kwargs: dict[str, Any] = {"fallback": None} if step.no_fallback else {}
        sec.begin()
        try:
            value = await fn(step.user_id, **kwargs)
        except Exception as exc:
            sent = sec.end(step, None, exc)
        else:
            sent = sec.end(step, value, None)


# -- the three clients -------------------------------------------------------------------

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
        _drive_sync(sec, get_user)
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
        _drive_sync(sec, get_user)
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
            await _drive_async(sec, get_user)

    asyncio.run(main())
    return sec.finish()


_CLIENTS: tuple[tuple[str, str, Callable[[_Make], _Tally]], ...] = (
    ("requests", "requests", _run_requests),
    ("httpx", "httpx.Client", _run_httpx),
    ("httpx", "httpx.AsyncClient", _run_httpx_async),
)


def _installed(module: str) -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec(module) is not None


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
    tallies: list[_Tally] = []
    with FlakyServer() as server:
        printer.write(
            "smoothapi demo: a flaky upstream, @resilient_api over requests, httpx.Client "
            "and httpx.AsyncClient",
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
        printer.write(f"  fallback  {cfg.fallback}")

        def section(key: str, label: str, title: str) -> _Section:
            return _Section(key, label, title, server=server, printer=printer, checks=checks)

        noted = False
        for module, label, run in _CLIENTS:
            if not _installed(module):
                if not noted:
                    printer.write()
                noted = True
                printer.write(
                    f"note: skipping {label}: {module} is not installed "
                    "(pip install 'smoothapi-py[demo]')",
                    _YELLOW,
                )
                continue
            noted = False
            tallies.append(run(section))
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
        f"({_plural(len(tallies), 'client')})",
        _BOLD,
        _GREEN,
    )
    return 0
