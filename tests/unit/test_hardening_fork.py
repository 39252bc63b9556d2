"""Issue 11, defects 2 and 3: classification never raises, and a forked child never hangs.

2. Classifying an error read ``sys.modules["ssl"].SSLError`` (and requests'/httpx's
   error classes) while another thread could still be running that module's body: a
   user's ``ConnectionError`` became an ``AttributeError``, and a probe hit by it
   stranded the breaker.  Now every lookup tolerates a half-imported module, and an
   error that cannot be examined is classified by its builtin type.
3. A child of ``os.fork()`` inherited every lock as it was: one held by another thread
   at that moment (the first event's ~30 ms import of prometheus_client, a breaker's
   bookkeeping, a retry budget...) stayed held for ever and the child hung on its first
   call.  Now no lock is held across an import, a fork waits for the first event's setup
   to finish, and every lock of ours is re-created in the child.

The fork tests never hang: each child is waited for with a deadline and killed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
import requests
from httpserver import Reply, ScriptedServer

import smoothapi
from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    CircuitState,
    ResilientConfig,
    ResilientTransport,
    RetryBudgetConfig,
    _async_hooks,
    breaker,
    budget,
    classify,
    events,
    otel,
    prometheus,
    resilient_api,
)
from smoothapi.engine import FAILURE, IGNORED
from smoothapi.storage import outage
from smoothapi.testing import FakeClock

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# -- 2. classification never raises --------------------------------------------------------

_HALF_IMPORTED = ("ssl", "requests", "httpx", "urllib3")


def _half_imported(name: str) -> types.ModuleType:
    """A module as another thread's first import leaves it in ``sys.modules`` at first:
    registered, its body not yet run (no SSLError, no exceptions submodule)."""
    return types.ModuleType(name)


@pytest.mark.parametrize("name", _HALF_IMPORTED)
def test_a_half_imported_module_does_not_make_classification_raise(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With any client module (or ssl) half imported, a ConnectionError is still a
    retryable failure and an unknown error is still ignored: nothing raises."""
    # Blocked first, so the cached error types are looked up again with the half module.
    monkeypatch.setitem(sys.modules, name, None)
    classify.classify_exception(ConnectionError(), {503})
    monkeypatch.setitem(sys.modules, name, _half_imported(name))
    assert classify.classify_exception(ConnectionError("refused"), {503}).kind is FAILURE
    assert classify.classify_exception(TimeoutError(), {503}).kind is FAILURE
    assert classify.classify_exception(ValueError(), {503}).kind is IGNORED
    assert classify.is_transport_error(ConnectionError())
    assert not classify.is_transport_error(KeyError())
    assert classify.http_status(ConnectionError()) is None


def test_half_imported_types_are_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the other thread's import completes, its library's errors are recognised:
    what was read from the half-imported module is not kept."""
    monkeypatch.setitem(sys.modules, "requests", None)
    classify.is_transport_error(ConnectionError())
    monkeypatch.setitem(sys.modules, "requests", _half_imported("requests"))
    assert not classify.is_transport_error(requests.exceptions.ReadTimeout())
    monkeypatch.setitem(sys.modules, "requests", requests)  # the import finished
    assert classify.is_transport_error(requests.exceptions.ReadTimeout())
    assert not classify.is_transport_error(requests.exceptions.SSLError())


class _UnreadableResponse(Exception):
    """An exception whose ``response`` attribute raises something else than AttributeError."""

    @property
    def response(self) -> object:
        raise RuntimeError("a property with a bug")


class _UnreadableConnectionError(ConnectionError):
    @property
    def __cause__(self) -> BaseException | None:  # type: ignore[override]
        raise RuntimeError("a cause chain that cannot be walked")


def test_an_exception_that_cannot_be_examined_is_classified_by_its_builtin_type() -> None:
    """A property that raises while we look at the error does not escape classification."""
    assert classify.classify_exception(_UnreadableResponse(), {503}).kind is IGNORED
    assert classify.http_status(_UnreadableResponse()) is None
    assert classify.classify_exception(_UnreadableConnectionError(), {503}).kind is FAILURE
    assert classify.is_transport_error(_UnreadableConnectionError())


def test_an_exception_whose_class_cannot_be_read_is_classified_and_returned_as_is() -> None:
    """The last resort itself must not raise: the caller gets its own exception back and the
    breaker records nothing (it is neither a transport error nor an HTTP error)."""

    class _ClassUnreadable(Exception):
        """A proxy or mock gone wrong: even ``isinstance`` raises on it."""

        @property  # type: ignore[misc]
        def __class__(self) -> type:  # type: ignore[override]
            raise RuntimeError("boom from __class__")

    assert classify.classify_exception(_ClassUnreadable(), {503}).kind is IGNORED
    assert not classify.is_transport_error(_ClassUnreadable())

    @resilient_api(ResilientConfig())
    def call() -> None:
        raise _ClassUnreadable("mine")

    # Not pytest.raises: formatting such an exception makes pytest's own isinstance raise.
    caught: list[type] = []
    try:
        call()
    except Exception as exc:
        caught.append(type(exc))
    assert caught == [_ClassUnreadable]
    assert call.breaker.state == "CLOSED"
    assert call.breaker.failure_count == 0


def test_classification_racing_first_imports_never_raises() -> None:
    """Threads classify while another flips ssl, requests, httpx and urllib3 between their
    real, half-imported and blocked states as fast as it can: thousands of
    classifications, every ConnectionError a FAILURE, no exception (on the old code an
    AttributeError or ImportError escaped within the first few)."""
    real = {name: sys.modules[name] for name in _HALF_IMPORTED}
    half = {name: _half_imported(name) for name in _HALF_IMPORTED}
    states: list[dict[str, types.ModuleType | None]] = [
        {name: half[name] for name in _HALF_IMPORTED},
        dict.fromkeys(("requests", "httpx", "urllib3")) | {"ssl": half["ssl"]},
        real,
    ]
    stop = threading.Event()
    problems: list[BaseException | str] = []
    counts = [0, 0]

    def flip() -> None:
        i = 0
        while not stop.is_set():
            sys.modules.update(states[i % len(states)])
            i += 1

    def classify_many(slot: int) -> None:
        errors = (ConnectionError("refused"), TimeoutError(), httpx.ConnectError("x"))
        while not stop.is_set():
            for error in errors:
                try:
                    kind = classify.classify_exception(error, {503}).kind
                except BaseException as exc:
                    problems.append(exc)
                    stop.set()
                    return
                if error.__class__ in (ConnectionError, TimeoutError) and kind is not FAILURE:
                    problems.append(f"{error!r} classified {kind}")
            counts[slot] += 1

    threads = [threading.Thread(target=flip)] + [
        threading.Thread(target=classify_many, args=(slot,)) for slot in (0, 1)
    ]
    deadline = time.monotonic() + 1.5
    try:
        for thread in threads:
            thread.start()
        while time.monotonic() < deadline and not stop.is_set() and min(counts) < 20_000:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        sys.modules.update(real)
    assert problems == []
    assert min(counts) > 100  # both classifiers really ran against the flipping modules
    # The real modules are back and recognised again.
    assert classify.is_transport_error(requests.exceptions.ConnectionError())
    assert not classify.is_transport_error(httpx.UnsupportedProtocol("x"))


def test_a_probe_classified_during_a_half_import_does_not_strand_the_breaker(
    instant: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's ConnectionError, classified while ssl is half imported, is a failure that
    re-opens the breaker; a probe whose error cannot be examined gives its permit back."""
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_ms=1_000),
    )
    errors: list[BaseException] = [ConnectionError("down")]

    @resilient_api(config, name="probe-classify")
    def call() -> None:
        raise errors[-1]

    with pytest.raises(ConnectionError):
        call()
    assert call.breaker.state is CircuitState.OPEN
    instant.advance(1)
    monkeypatch.setitem(sys.modules, "ssl", _half_imported("ssl"))
    monkeypatch.setitem(sys.modules, "_ssl", _half_imported("_ssl"))
    with pytest.raises(ConnectionError):  # not an AttributeError
        call()
    assert call.breaker.state is CircuitState.OPEN  # the probe failed: open again
    instant.advance(10)
    errors.append(_UnreadableResponse())
    with pytest.raises(_UnreadableResponse):  # the caller's own error, not RuntimeError
        call()
    # Nothing was recorded, and the permit is free: the next call is the probe.
    errors.append(ConnectionError("still down"))
    with pytest.raises(ConnectionError):
        call()
    assert call.breaker.state is CircuitState.OPEN


# -- 3. a forked child never hangs ---------------------------------------------------------

_CHILD_DEADLINE = 10.0  # seconds a child gets to make its calls and exit


def _fork(child: Callable[[Callable[[str], None]], None]) -> tuple[int, int]:
    """Fork; the child runs ``child(step)`` then exits 0 (1 on an error).  Returns
    (pid, read end of a pipe where the child wrote the name of each step it began)."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that has threads: that is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, which never returns into pytest
        code = 1
        try:
            os.close(read)
            child(lambda name: os.write(write, f"{name}\n".encode()) and None)
            code = 0
        except BaseException as exc:
            os.write(write, f"error: {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _wait(pid: int, read: int, timeout: float = _CHILD_DEADLINE) -> tuple[str, list[str]]:
    """("exited N" or "HUNG", the steps the child began); a hung child is killed."""
    deadline = time.monotonic() + timeout
    outcome = "HUNG"
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            outcome = f"exited {os.waitstatus_to_exitcode(status)}"
            break
        time.sleep(0.005)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        steps = pipe.read().splitlines()
    return outcome, steps


@contextmanager
def _held(locks: dict[str, Callable[[], threading.Lock]]) -> Iterator[None]:
    """Another thread holds every one of ``locks`` until the block ends (as a thread
    preempted inside its bookkeeping would at the moment of a fork)."""
    got, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks.values():
                stack.enter_context(lock())
            got.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert got.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join(10)


@needs_fork
def test_a_child_forked_while_another_thread_holds_every_lock_makes_its_calls(
    server: ScriptedServer,
) -> None:
    """Every lock of ours - module locks and the locks of live objects - is held by another
    thread at the fork; the child's calls take each of them and exit 0 in time (on the old
    code the child hung at its first failed attempt, on the breaker's lock)."""
    clock = FakeClock()
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=2, base_delay=0.001, max_delay=0.001),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5),
        retry_budget=RetryBudgetConfig(),
    )
    failures = [1]
    the_breaker = smoothapi.CircuitBreaker(config.circuit_breaker, name="fork-held", clock=clock)
    the_budget = budget.shared_budget(the_breaker, config)
    assert the_budget is not None

    @resilient_api(config, breaker=the_breaker)
    def call() -> str:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("once")
        return "ok"

    transport = ResilientTransport(config)
    server.script("/child", Reply(503), Reply(200, b"from the child"))
    locks: dict[str, Callable[[], threading.Lock]] = {
        "breaker": lambda: the_breaker._lock,
        "budget": lambda: the_budget._lock,
        "shared budgets": lambda: budget._shared_lock,
        "breaker hooks": lambda: breaker._HOOKS_LOCK,
        "transport registry": lambda: transport._core._lock,
        "fake clock": lambda: clock._lock,
        "async hooks": lambda: _async_hooks._lock,
        "store healths": lambda: outage._healths_lock,
        "prometheus": lambda: prometheus._lock,
        "otel": lambda: otel._lock,
        "first event": lambda: events._setup_lock,
    }

    def child(step: Callable[[str], None]) -> None:
        step("call")  # a failed attempt: the breaker's and the budget's locks
        assert call() == "ok"
        step("breaker hooks")
        call.breaker.add_hook(lambda event: None, owner=call)
        step("shared budgets")
        budget.shared_budget(call.breaker, config)
        step("fake clock")
        clock.advance(1)
        step("transport registry")  # a new origin, a retried 503
        with httpx.Client(transport=transport) as client:
            assert client.get(server.url + "/child").text == "from the child"
        step("async hooks")  # a sync call from a coroutine: its async hook goes to a runner

        async def hook(event: object) -> None:
            return None

        @resilient_api(ResilientConfig(backoff=BackoffConfig(max_retries=0), hooks=(hook,)))
        def hooked() -> None:
            raise ConnectionError

        async def main() -> None:
            with pytest.raises(ConnectionError):
                hooked()
            await asyncio.sleep(0.01)

        asyncio.run(main())
        step("store healths")
        outage.health_of(object())
        step("prometheus")
        prometheus.uninstrument()
        step("otel")
        otel.uninstrument()
        step("done")

    with _held(locks):
        pid, read = _fork(child)
    outcome, steps = _wait(pid, read)
    assert outcome == "exited 0", f"child {outcome} at step {steps[-1:]} (steps: {steps})"
    assert steps[-1] == "done"


@needs_fork
def test_forking_while_other_threads_make_failing_calls_never_hangs_a_child() -> None:
    """A hundred forks while two threads hammer one breaker, its retry budget and the hook
    table: every child makes a decorated call with a failed attempt and exits 0."""
    config = ResilientConfig(
        backoff=BackoffConfig(max_retries=1, base_delay=0.0001, max_delay=0.0001),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1_000_000),
        retry_budget=RetryBudgetConfig(max_tokens=1_000_000),
    )

    @resilient_api(config, name="fork-busy")
    def busy(failures: list[int]) -> str:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError
        return "ok"

    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            with contextlib.suppress(ConnectionError):
                busy([2])
            busy.breaker.add_hook(print, owner=busy)

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()

    def child(step: Callable[[str], None]) -> None:
        step("call")
        assert busy([1]) == "ok"
        step("done")

    hung: list[tuple[int, str, list[str]]] = []
    started = time.monotonic()
    try:
        for i in range(100):
            pid, read = _fork(child)
            outcome, steps = _wait(pid, read)
            if outcome != "exited 0":
                hung.append((i, outcome, steps))
                break
            if time.monotonic() - started > 60:  # bounded: fewer forks on a slow machine
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert hung == []


_IMPORT_RACE = textwrap.dedent(
    """
    import os, random, sys, threading, time, warnings
    import smoothapi
    from smoothapi import BackoffConfig, ResilientConfig, events, resilient_api
    from smoothapi.testing import set_testing

    set_testing(True)
    config = ResilientConfig(backoff=BackoffConfig(max_retries=2))
    failures = {"left": 0}

    @resilient_api(config, name="import-race")
    def call():
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("once")
        return "ok"

    def fresh():
        # This process's first event, again: prometheus_client not yet imported.
        for name in [n for n in sys.modules if n.split(".")[0] == "prometheus_client"]:
            del sys.modules[name]
        sys.modules.pop("smoothapi.prometheus", None)
        sys.modules.pop("smoothapi.telemetry.prometheus", None)
        smoothapi.__dict__.pop("prometheus", None)
        events._auto_pending = True

    hung = 0
    rounds = int(sys.argv[1])
    started = time.monotonic()
    for i in range(rounds):
        fresh()
        failures["left"] = 1
        begun = threading.Event()

        def first_event():
            begun.set()
            call()  # a failed attempt: the first event imports prometheus_client

        thread = threading.Thread(target=first_event)
        thread.start()
        begun.wait()
        time.sleep(random.uniform(0, 0.02))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            code = 1
            try:
                failures["left"] = 1
                code = 0 if call() == "ok" else 2  # the child's own first events
            finally:
                os._exit(code)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if os.waitstatus_to_exitcode(status) != 0:
                    print(f"round {i}: child exited {status}")
                    sys.exit(1)
                break
            time.sleep(0.005)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print(f"round {i}: child HUNG")
            hung += 1
        thread.join()
        if hung or time.monotonic() - started > 60:
            break
    print(f"rounds={i + 1} hung={hung}")
    sys.exit(1 if hung else 0)
    """
)


@needs_fork
def test_a_child_forked_during_the_first_events_prometheus_import_makes_its_call() -> None:
    """Forty times, in a fresh process: a thread's first event imports prometheus_client
    while the main thread forks at a random moment of it; the child's call (with a failed
    attempt, so events of its own) returns and the child exits 0 in time.  On the old code
    the child hung on the module lock held across the import within the first rounds."""
    pytest.importorskip("prometheus_client")
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", _IMPORT_RACE, "40"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hung=0" in result.stdout
