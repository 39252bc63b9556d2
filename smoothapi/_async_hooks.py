"""Where an ``async def`` hook's awaitable goes, so that it runs once, in order, and is
never dropped without a word.

Events are sent by ``events.emit``, a sync function: the engine's drivers
deliver the flow's events with it, and a breaker its state changes from inside
its own (sync) bookkeeping, in the middle of an ``await breaker.admit_async()``.
So an async hook only returns an awaitable there.  It then goes, in this order
of choice:

1. to the async call that sent the event: ``run_async`` collects awaitables
   for its own task (:func:`collect`) and awaits them before its next step
   (:func:`flush`).  Tasks and threads started inside the call inherit the
   context but not the collection: it belongs to one task, while it is open;
2. inside a running trio or asyncio loop (a sync call made from async code):
   to one runner task per loop that awaits them in order - blocking the loop
   could deadlock whatever the hook waits for;
3. in a thread that trio started (``trio.to_thread``): to that trio loop,
   the thread waiting for it;
4. anywhere else (plain sync code): to a private event loop, run to
   completion before the call goes on.

A hook that raises is logged on ``smoothapi`` as an ERROR; one cancelled
before it finished (a cancelled call, a loop shutting down) as a WARNING.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from typing import Any

from ._log import logger as _logger
from ._runtime import at_fork_child, running_trio

__all__ = ["Pending", "collect", "defer", "flush", "stop_collecting"]

Item = tuple[Callable[..., object], object, Awaitable[object]]


class Pending:
    """The awaitables an async call's hooks returned, for that call's task only."""

    __slots__ = ("items", "open", "owner")

    def __init__(self, owner: object) -> None:
        self.items: deque[Item] = deque()
        self.owner = owner
        self.open = True

    def __bool__(self) -> bool:
        return bool(self.items)


_pending: ContextVar[Pending | None] = ContextVar("smoothapi_pending_hooks", default=None)


def collect() -> tuple[Pending, Token[Pending | None]]:
    """Collect the current task's async hooks until :func:`stop_collecting`."""
    pending = Pending(_current_task())
    return pending, _pending.set(pending)


def stop_collecting(pending: Pending, token: Token[Pending | None]) -> None:
    """End :func:`collect`; anything not flushed (the call was cancelled) still runs."""
    pending.open = False
    _pending.reset(token)
    while pending.items:
        defer(*pending.items.popleft())


async def flush(pending: Pending) -> None:
    """Await the hooks collected so far, in the order their events were sent."""
    while pending.items:
        await guarded(*pending.items.popleft())


async def guarded(hook: Callable[..., object], event: object, awaitable: Awaitable[object]) -> None:
    """Await one hook: an error is logged, a cancellation logged and passed on."""
    try:
        await awaitable
    except Exception:
        _logger().exception("hook %r raised on %s; the call goes on", hook, event)
    except BaseException:
        _cancelled(hook, event)
        raise


def _cancelled(hook: object, event: object) -> None:
    _logger().warning("async hook %r was cancelled before it finished on %s", hook, event)


def defer(hook: Callable[..., object], event: object, awaitable: Awaitable[object]) -> None:
    """Run an async hook's awaitable where it belongs (see the module docstring)."""
    pending = _pending.get()
    if pending is not None and pending.open and pending.owner is _current_task():
        pending.items.append((hook, event, awaitable))
        return
    if running_trio():
        _runner_for_trio().push((hook, event, awaitable))
        return
    loop = _running_asyncio_loop()
    if loop is not None:
        _runner_for_asyncio(loop).push((hook, event, awaitable))
        return
    if _in_trio_thread(hook, event, awaitable):
        return
    import asyncio  # noqa: PLC0415 - only for an async hook called from plain sync code

    # Not asyncio.run(): it would unset an event loop the application set for this thread.
    private = asyncio.new_event_loop()
    try:
        private.run_until_complete(guarded(hook, event, awaitable))
    finally:
        private.close()


def _current_task() -> object:
    if running_trio():
        import trio  # noqa: PLC0415 - already imported: trio is running

        return trio.lowlevel.current_task()
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None


def _running_asyncio_loop() -> Any:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _in_trio_thread(
    hook: Callable[..., object], event: object, awaitable: Awaitable[object]
) -> bool:
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.from_thread.run(guarded, hook, event, awaitable)
    except RuntimeError:  # not a thread that trio started
        return False
    return True


class _Runner:
    """Awaits one loop's deferred hooks in order, one task at a time."""

    def __init__(self, key: object, start: Callable[[_Runner], None]) -> None:
        self.key = key
        self.queue: deque[Item] = deque()
        self.running = False
        self._start = start

    def push(self, item: Item) -> None:
        with _lock:
            self.queue.append(item)
            if self.running:
                return
            self.running = True
        self._start(self)

    async def drain(self) -> None:
        try:
            while True:
                with _lock:
                    if not self.queue:
                        self.running = False
                        _runners.pop(self.key, None)
                        return
                    item = self.queue.popleft()
                await guarded(*item)
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """The runner was cancelled (its loop is shutting down): say what will not run."""
        with _lock:
            left = list(self.queue)
            self.queue.clear()
            self.running = False
            if _runners.get(self.key) is self:
                del _runners[self.key]
        for hook, event, awaitable in left:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # never started: no "never awaited" warning
            _cancelled(hook, event)


_lock = threading.Lock()
_runners: dict[object, _Runner] = {}
# The asyncio tasks running runners: held, since a loop keeps only weak references.
_tasks: set[Any] = set()


@at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child, and the loops of the
    # other threads never run there (see _runtime): keep only this thread's runner.
    global _lock
    _lock = threading.Lock()
    here = _running_asyncio_loop()
    for key in [key for key in _runners if key is not here]:
        del _runners[key]
    _tasks.difference_update([task for task in _tasks if task.get_loop() is not here])


def _runner(key: object, start: Callable[[_Runner], None]) -> _Runner:
    with _lock:
        runner = _runners.get(key)
        if runner is None:
            runner = _runners[key] = _Runner(key, start)
        return runner


def _runner_for_trio() -> _Runner:
    import trio  # noqa: PLC0415 - already imported: trio is running

    def start(runner: _Runner) -> None:
        trio.lowlevel.spawn_system_task(runner.drain)

    return _runner(trio.lowlevel.current_trio_token(), start)


def _runner_for_asyncio(loop: Any) -> _Runner:
    def start(runner: _Runner) -> None:
        task = loop.create_task(runner.drain())
        _tasks.add(task)

        def done(task: Any) -> None:
            _tasks.discard(task)
            if task.cancelled():  # perhaps before it ever ran
                runner.abandon()

        task.add_done_callback(done)

    return _runner(loop, start)
