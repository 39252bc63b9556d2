"""The body watchdog: one process-wide thread that cuts sync body reads that must end in time.

A socket timeout bounds each recv(), but one read of a sync client may loop over many
recv()s (urllib3's decoding read1, http.client's chunk-size readline, h11 waiting for a
whole chunk-size line), so a body that trickles a byte at a time never trips it.  A body
read that must end in time is therefore watched: at its end in time, the thread shuts the
connection's socket down, the blocked read fails at once, and the mount point raises the
client's timeout (or drops a drained body).  The thread exists only while something is
watched (and a little after), so a process that never sets a deadline, nor retries a
response with a body, never starts it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time

from .._runtime import at_fork_child

__all__ = ["Watch", "watch"]


class Watch:
    """One watched body read: call :meth:`stop` when the read is over."""

    __slots__ = ("fired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self.fired = False

    def stop(self) -> bool:
        """End the watch; True if time ran out and the socket was shut down.

        Once it returns, the socket is never touched again: the connection
        may go back to its pool.
        """
        global _stopped
        # Always under the lock: the watchdog fires holding it, so once we have it a fire
        # that began has finished (its shutdown done) and ``fired`` tells the truth.
        with _wake:
            if self.sock is not None:
                self.sock = None
                _stopped += 1
                if _stopped > _COMPACT and 2 * _stopped > len(_watches):
                    _compact()
        return self.fired


# (when, sequence, watch), earliest first; a stopped watch stays until popped or compacted.
_watches: list[tuple[float, int, Watch]] = []
_stopped = 0  # how many entries of _watches are stopped
_COMPACT = 64
_IDLE = 10.0  # seconds the thread waits with nothing to watch before it ends
_wake = threading.Condition(threading.Lock())
_sequence = itertools.count()
_watcher: threading.Thread | None = None


def watch(sock: socket.socket, seconds: float) -> Watch:
    """Shut ``sock`` down if the returned :class:`Watch` is not stopped within ``seconds``."""
    global _watcher
    entry = Watch(sock)
    when = time.monotonic() + max(seconds, 0.0)
    with _wake:
        heapq.heappush(_watches, (when, next(_sequence), entry))
        if _watcher is None:
            _watcher = threading.Thread(
                target=_watch_loop, name="smoothapi-body-watchdog", daemon=True
            )
            _watcher.start()
        elif _watches[0][2] is entry:  # earlier than what the thread waits for
            _wake.notify()
    return entry


def _compact() -> None:
    """Drop stopped entries (lock held): the heap stays within twice the live watches."""
    global _stopped
    _watches[:] = [item for item in _watches if item[2].sock is not None]
    heapq.heapify(_watches)
    _stopped = 0


def _watch_loop() -> None:
    global _watcher, _stopped
    with _wake:
        while True:
            if not _watches:
                if not _wake.wait(_IDLE) and not _watches:
                    _watcher = None  # a later watch() starts a new thread
                    return
                continue
            when, _, entry = _watches[0]
            sock = entry.sock
            if sock is not None:
                wait = when - time.monotonic()
                if wait > 0:
                    _wake.wait(wait)
                    continue
            heapq.heappop(_watches)
            if sock is None:
                _stopped -= 1
                continue
            entry.sock = None
            entry.fired = True
            # The plain socket's shutdown, also for an SSLSocket (whose own shutdown would
            # drop its TLS state under the reading thread): the read sees end-of-file.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


@at_fork_child
def _reset_watchdog() -> None:
    # The child has no watchdog thread, and none of the parent's reads to watch.
    global _wake, _watcher, _stopped
    _wake = threading.Condition(threading.Lock())
    _watches.clear()
    _stopped = 0
    _watcher = None
