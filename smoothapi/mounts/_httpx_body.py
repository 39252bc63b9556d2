"""The httpx transports' response bodies: drains, and bodies bounded by a deadline.

A retried response is drained (up to :data:`~._transport.DRAIN_LIMIT`, for up to
:func:`~._transport.drain_time`) or closed before the retry, so its connection
goes back to the pool; a call with a deadline returns a body that must be read
within it.  The sync side cuts a trickling read by shutting its socket down
(:func:`~._watchdog.watch`), the async side by cancelling it (anyio).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx

from ._transport import DRAIN_LIMIT, Left, drain_plan, drain_time
from ._watchdog import Watch, watch

__all__ = ["adrain", "bounded", "drain"]


def _read_into(response: httpx.Response, chunks: list[bytes], ok: bool) -> None:
    # A body read whole becomes the response's stream again: the response is
    # returned readable if the breaker opens before the retry.  Anything else
    # reads as empty (it was too large to keep, or the connection broke).
    response.stream = httpx.ByteStream(b"".join(chunks) if ok else b"")


def _request_of(response: httpx.Response) -> httpx.Request | None:
    try:
        return response.request
    except RuntimeError:  # an inner transport's response that nobody gave its request
        return None


def _cap_read(request: httpx.Request | None, seconds: float) -> Callable[[], None]:
    """Cap the read timeout of the body reads about to start at ``seconds``; returns the undo.

    httpcore reads a request's timeouts when the body's reading starts, so this
    bounds each read of that body; a total is checked between reads.
    """
    if request is None:
        return lambda: None
    extensions = request.extensions
    before = extensions.get("timeout")
    capped = dict(before) if isinstance(before, dict) else {}
    read = capped.get("read")
    capped["read"] = seconds if read is None else min(read, seconds)
    extensions["timeout"] = capped

    def undo() -> None:
        if before is None:
            extensions.pop("timeout", None)
        else:
            extensions["timeout"] = before

    return undo


def _socket_of(response: httpx.Response) -> socket.socket | None:
    """The socket under ``response``, if shutting it down cuts this response alone.

    An HTTP/1 connection carries one response at a time; an HTTP/2 one may
    carry others (then, as for a transport that is not httpx's own, reads are
    bounded only by the read timeout cap and the check between reads).
    """
    extensions = response.extensions
    if extensions.get("http_version", b"HTTP/1.1") not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    get_extra_info = getattr(extensions.get("network_stream"), "get_extra_info", None)
    if not callable(get_extra_info):
        return None
    try:
        sock = get_extra_info("socket")
    except Exception:
        return None
    return sock if isinstance(sock, socket.socket) else None


def _drain_seconds(response: httpx.Response, final: bool) -> float | None:
    """How long a drain of ``response`` may read it: None, not at all (read already,
    or too large to read before the retry is certain: see
    :func:`~._transport.drain_plan`); 0, close it unread; else the seconds."""
    if isinstance(response.stream, httpx.ByteStream):  # read already
        return None
    plan = drain_plan(response.headers.get("Content-Length"), final)
    if plan == "keep":
        return None
    return 0.0 if plan == "close" else drain_time(response)


def drain(response: httpx.Response, final: bool) -> None:
    """Give a retried response's connection back to the pool, in bounded memory and time.

    A body not read within :func:`~._transport.drain_time` (one that
    trickles or stalls) is dropped with its connection, and reads as empty:
    the socket is shut down when the time is up, since h11 may wait on many
    socket reads before it has a chunk to give (a trickling chunk-size line).
    """
    seconds = _drain_seconds(response, final)
    if seconds is None:
        return
    stream = response.stream
    assert isinstance(stream, httpx.SyncByteStream)
    chunks: list[bytes] = []
    ok = seconds > 0
    sock = _socket_of(response) if ok else None
    stopwatch = None if sock is None else watch(sock, seconds)
    try:
        if ok:
            until = time.monotonic() + seconds
            undo = _cap_read(_request_of(response), seconds)
            size = 0
            try:
                for chunk in stream:
                    size += len(chunk)
                    if size > DRAIN_LIMIT or time.monotonic() > until:
                        ok = False  # too large, or too slow: drop the connection instead
                        break
                    chunks.append(chunk)
            finally:
                undo()
    except Exception:  # a broken connection, or the read cap hit: closing drops it
        ok = False
    finally:
        # The watch ends before the connection can go back to the pool.
        if stopwatch is not None and stopwatch.stop():
            ok = False  # cut: the socket is shut down
        stream.close()  # fully read: back to the pool; otherwise the connection is dropped
    _read_into(response, chunks, ok)


async def adrain(response: httpx.Response, final: bool) -> None:
    """The async twin of :func:`drain`: a read still waiting when the time is up is cancelled."""
    seconds = _drain_seconds(response, final)
    if seconds is None:
        return
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    import anyio  # noqa: PLC0415 - httpx depends on it; loaded on the slow path only

    chunks: list[bytes] = []
    ok = seconds > 0
    try:
        if ok:
            # Stopped by cancelling the read in progress, never by leaving the loop:
            # the stream's async generators then end (trio warns about abandoned ones).
            with anyio.move_on_after(seconds) as scope:
                size = 0
                async for chunk in stream:
                    size += len(chunk)
                    if size > DRAIN_LIMIT:
                        ok = False
                        scope.cancel()  # too large: the next read is cancelled
                    elif ok:
                        chunks.append(chunk)
            if scope.cancelled_caught:
                ok = False
    except Exception:
        ok = False
    finally:
        await stream.aclose()
    _read_into(response, chunks, ok)


class _BoundedStream(httpx.SyncByteStream):
    """A response body that must be read within the call's deadline.

    Each read is capped by the time left when the body's reading starts, and
    once the deadline has passed the next read raises ``httpx.ReadTimeout``
    (the connection is closed).  Over an HTTP/1 connection of httpx's own, the
    socket is also shut down at the deadline, so a read that waits on a
    trickle (h11 has no chunk to give until a whole chunk-size line is in)
    ends there too.  A body read whole in time is untouched.
    """

    def __init__(
        self,
        stream: httpx.SyncByteStream,
        request: httpx.Request,
        left: Callable[[], float],
        sock: socket.socket | None,
    ) -> None:
        self._stream = stream
        self._request = request
        self._left = left
        self._sock = sock
        self._watch: Watch | None = None

    def __iter__(self) -> Iterator[bytes]:
        left = self._left()
        undo = _cap_read(self._request, max(left, _MIN_READ))
        if self._sock is not None and self._watch is None:
            self._watch = watch(self._sock, left)
        try:
            try:
                for chunk in self._stream:
                    if self._left() <= 0:
                        self._stream.close()
                        raise _expired(self._request)  # noqa: TRY301 - not cut: passes through
                    yield chunk
                if self._stop():  # cut: h11 took the shutdown for a close-delimited body's end
                    self._stream.close()
                    raise _expired(self._request)  # noqa: TRY301 - not cut: passes through
            except Exception:
                if self._stop():  # the read failed because the socket was cut: a timeout
                    self._stream.close()
                    raise _expired(self._request) from None
                raise
        finally:
            self._stop()
            undo()

    def _stop(self) -> bool:
        stopwatch = self._watch
        return stopwatch is not None and stopwatch.stop()

    def close(self) -> None:
        self._stop()  # before the connection can go back to the pool
        self._stream.close()


class _AsyncBoundedStream(httpx.AsyncByteStream):
    """The async twin of :class:`_BoundedStream`: a read still waiting at the
    deadline is cancelled (so a stalled read is cut at the deadline too)."""

    def __init__(
        self, stream: httpx.AsyncByteStream, request: httpx.Request, left: Callable[[], float]
    ) -> None:
        self._stream = stream
        self._request = request
        self._left = left

        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        # An iterator, not an async generator: one more generator to abandon would
        # make trio warn when a caller stops reading early.
        return self

    async def __anext__(self) -> bytes:
        import anyio  # noqa: PLC0415 - httpx depends on it; loaded on the slow path only

        if self._chunks is None:
            self._chunks = self._stream.__aiter__()
        # The read in progress is cancelled at the deadline: the stream's own async
        # generators then end, rather than being left suspended.
        with anyio.move_on_after(max(self._left(), 0.0)):
            return await self._chunks.__anext__()
        await self._stream.aclose()
        raise _expired(self._request)

    async def aclose(self) -> None:
        await self._stream.aclose()


# A read timeout of 0 would make the socket non-blocking: the shortest cap is this.
_MIN_READ = 0.001


def bounded(
    response: httpx.Response, request: httpx.Request, left: Left, *, is_async: bool
) -> httpx.Response:
    """The response a call with a deadline returns: its body must be read within it."""
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):  # in memory already (drained, or built)
        return response
    if is_async and isinstance(stream, httpx.AsyncByteStream):
        response.stream = _AsyncBoundedStream(stream, request, left)
    elif not is_async and isinstance(stream, httpx.SyncByteStream):
        response.stream = _BoundedStream(stream, request, left, _socket_of(response))
    return response


def _expired(request: httpx.Request) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(
        "the response body was not read within the call's deadline "
        "(ResilientConfig.deadline); the connection was closed",
        request=request,
    )
