"""``ResilientTransport`` / ``AsyncResilientTransport``: the engine mounted on httpx.

::

    client = httpx.Client(transport=ResilientTransport(config))
    async_client = httpx.AsyncClient(transport=AsyncResilientTransport(config))

Each wraps an inner transport (default ``httpx.HTTPTransport(**kwargs)``, so
``limits=``, ``verify=``, ``proxy=`` work) and so composes with ``respx`` and
``httpx.MockTransport``.  Statuses are read from responses; a retried
response is drained (up to 64 KiB, for up to 0.5 s) or closed before the
retry, so its connection goes back to the pool.  With a deadline, the body
of the response returned must be read within it too.
``smoothapi.attempts(response)`` says how many attempts the response took.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

try:
    import httpx
except ModuleNotFoundError as _missing:  # pragma: no cover - tested in a subprocess
    raise ModuleNotFoundError(
        f"smoothapi's httpx transports need the 'httpx' extra ({_missing}): pip install httpx",
        name=_missing.name,
    ) from _missing

from .. import _runtime
from ..breaker import CircuitBreaker
from ..classify import is_transport_error
from ..config import ResilientConfig
from ..engine import FAILURE, IGNORED, Outcome, Policy, run_async, run_sync
from ..errors import CircuitOpenError, ConfigError, ConfigTypeError
from ._transport import (
    ATTEMPTS,
    DRAIN_LIMIT,
    LEFT,
    Left,
    TransportCore,
    Watch,
    deadline_left,
    drain_plan,
    drain_time,
    origin_name,
    watch,
)

__all__ = ["AsyncResilientTransport", "CircuitOpenTransportError", "ResilientTransport"]

#: ``fallback(request, error)`` builds the response served while the breaker rejects.
HTTPXFallback = Callable[[httpx.Request, BaseException], httpx.Response]
AsyncHTTPXFallback = Callable[
    [httpx.Request, BaseException], "httpx.Response | Awaitable[httpx.Response]"
]

# Nothing of the request can have reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class CircuitOpenTransportError(CircuitOpenError, httpx.TransportError):
    """The breaker rejected the request: a CircuitOpenError and an ``httpx.TransportError``."""

    def __init__(self, name: str, retry_after: float, request: httpx.Request | None = None) -> None:
        CircuitOpenError.__init__(self, name, retry_after)
        self._request = request


def _classify_error(exc: BaseException) -> Outcome:
    if isinstance(exc, Exception) and is_transport_error(exc):
        return Outcome(FAILURE, error=exc, sent=not isinstance(exc, _NOT_SENT))
    return Outcome(IGNORED, error=exc)


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


def _drain(response: httpx.Response, final: bool) -> None:
    """Give a retried response's connection back to the pool, in bounded memory and time.

    A body not read within :func:`~smoothapi._transport.drain_time` (one that
    trickles or stalls) is dropped with its connection, and reads as empty:
    the socket is shut down when the time is up, since h11 may wait on many
    socket reads before it has a chunk to give (a trickling chunk-size line).
    """
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):  # read already
        return
    plan = drain_plan(response.headers.get("Content-Length"), final)
    if plan == "keep":
        return
    assert isinstance(stream, httpx.SyncByteStream)
    chunks: list[bytes] = []
    seconds = drain_time(response)
    ok = plan != "close" and seconds > 0
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


async def _adrain(response: httpx.Response, final: bool) -> None:
    """The async twin of :func:`_drain`."""
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):
        return
    plan = drain_plan(response.headers.get("Content-Length"), final)
    if plan == "keep":
        return
    assert isinstance(stream, httpx.AsyncByteStream)
    import anyio  # noqa: PLC0415 - httpx depends on it; loaded on the slow path only

    chunks: list[bytes] = []
    seconds = drain_time(response)
    ok = plan != "close" and seconds > 0
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


def _attempted(
    response: httpx.Response, request: httpx.Request, left: Left | None
) -> httpx.Response:
    """An attempt's response, told what its drain needs: its request, the deadline."""
    response.request = request  # the drain caps the body's reads through it
    if left is not None:
        setattr(response, LEFT, left)  # the drain stops at the deadline
    return response


def _bounded(
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


def _shrink(timeout: Any, seconds: float) -> dict[str, float | None]:
    """httpx's per-request timeouts, none longer than the deadline's ``seconds`` left."""
    base = timeout if isinstance(timeout, dict) else {}
    return {
        phase: seconds if base.get(phase) is None else min(base[phase], seconds)
        for phase in ("connect", "read", "write", "pool")
    }


def _restore_timeout(request: httpx.Request, timeout: Any) -> None:
    """Give the request back its caller's timeouts once the attempts are over.

    The attempts cut them to the deadline's time left in ``request.extensions``
    (where httpcore reads them); a request sent again must start from the
    caller's own.  The returned body's reads cap their own (:func:`_cap_read`).
    """
    if timeout is None:
        request.extensions.pop("timeout", None)
    else:
        request.extensions["timeout"] = timeout


def _origin_key(url: httpx.URL) -> tuple[str, str, int | None]:
    # httpx's public URL properties re-derive their value on every access (about
    # 0.4 us for the three); the parsed reference they derive it from is ~10x cheaper.
    ref = getattr(url, "_uri_reference", None)
    if ref is None:  # pragma: no cover - an httpx without the private attribute
        return (url.scheme, url.host, url.port)
    return (ref.scheme, ref.host, ref.port)


def _origin_of(url: httpx.URL) -> str:
    return origin_name(url.scheme, url.host, url.port)


def _replayable(request: httpx.Request) -> bool:
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return True
    if type(stream).__name__ != "MultipartStream":
        return False
    # A multipart body re-renders on each pass and seeks its files back to 0 - which
    # silently does nothing for a pipe or a socket file, so those would be resent empty.
    for field in getattr(stream, "fields", ()):
        file = getattr(field, "file", None)
        if file is None or isinstance(file, (bytes, str)):
            continue
        seekable = getattr(file, "seekable", None)
        if not (callable(seekable) and seekable()):
            return False
    return True


def _refuse_retries(owner: str, kwargs: dict[str, Any]) -> None:
    # httpx's own connect retries would multiply ours: retries=2 under max_retries=3
    # makes 9 connect attempts instead of 4.
    if "retries" in kwargs:
        raise ConfigError(
            f"{owner} does its own retries: set BackoffConfig.max_retries instead of "
            f"retries={kwargs['retries']!r} (httpx's connect retries would multiply them)"
        )


def _check_inner(transport: object, *, is_async: bool) -> None:
    """Refuse an inner transport of the wrong kind now, not at the first request."""
    if transport is None:
        return
    if is_async:
        if callable(getattr(transport, "handle_async_request", None)):
            return
        if callable(getattr(transport, "handle_request", None)):
            raise ConfigTypeError(
                f"AsyncResilientTransport needs an async inner transport "
                f"(httpx.AsyncBaseTransport), got the sync {type(transport).__name__}: "
                "use ResilientTransport with it, or pass httpx.AsyncHTTPTransport(...)"
            )
        raise ConfigTypeError(
            f"AsyncResilientTransport(transport=...) needs an httpx.AsyncBaseTransport, "
            f"got {transport!r}"
        )
    if callable(getattr(transport, "handle_request", None)):
        return
    if callable(getattr(transport, "handle_async_request", None)):
        raise ConfigTypeError(
            f"ResilientTransport needs a sync inner transport (httpx.BaseTransport), "
            f"got the async {type(transport).__name__}: use AsyncResilientTransport with it "
            "(and httpx.AsyncClient), or pass httpx.HTTPTransport(...)"
        )
    raise ConfigTypeError(
        f"ResilientTransport(transport=...) needs an httpx.BaseTransport, got {transport!r}"
    )


class _Base:
    def __init__(
        self,
        config: ResilientConfig | None,
        breaker: CircuitBreaker | None,
        max_breakers: int,
        fallback: Callable[..., Any] | None,
        *,
        is_async: bool,
    ) -> None:
        if fallback is not None and not callable(fallback):
            raise ConfigError(
                f"fallback= takes a callable (request, error) -> httpx.Response, got {fallback!r}"
            )
        self._core = TransportCore(
            config,
            breaker=breaker,
            max_breakers=max_breakers,
            classify_error=_classify_error,
            classify_value=self._classify_response,
            discard=_drain,
            async_discard=_adrain if is_async else None,
            open_error=CircuitOpenTransportError,
        )
        self.config = self._core.config
        self._retry_on = self._core.retry_on
        self._aliases = self._core.aliases
        self._shared = breaker
        self._fallback = fallback

    def _classify_response(self, response: httpx.Response) -> Outcome:
        return self._core.classify_status(
            response, response.status_code, response.headers.get("Retry-After")
        )

    def _policy(self, url: httpx.URL) -> Policy:
        key = _origin_key(url)
        policy = self._aliases.get(key)
        return self._core.policy(key, _origin_of, url) if policy is None else policy

    def breaker_for(self, url: str | httpx.URL) -> CircuitBreaker:
        """The breaker that guards ``url``'s origin."""
        return self._policy(httpx.URL(url)).breaker

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker this transport holds, by origin."""
        return self._core.breakers()

    def _fallback_for(self, request: httpx.Request) -> Callable[[BaseException], Any] | None:
        fallback = self._fallback
        if fallback is None:
            return None
        return lambda error: fallback(request, error)

    def _open_error(self, request: httpx.Request) -> Callable[[str, float], BaseException]:
        return lambda name, retry_after: CircuitOpenTransportError(name, retry_after, request)


class ResilientTransport(_Base, httpx.BaseTransport):
    """An httpx transport that retries, breaks per origin and can fall back.

    ``transport`` is the inner transport (default ``httpx.HTTPTransport(**kwargs)``);
    ``breaker`` makes every origin share one breaker; ``fallback(request,
    error)`` returns the ``httpx.Response`` served while the breaker rejects.
    ``config.fallback`` is for decorated functions and is not used here.
    """

    def __init__(
        self,
        config: ResilientConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        fallback: HTTPXFallback | None = None,
        max_breakers: int = 1024,
        **kwargs: Any,
    ) -> None:
        _refuse_retries("ResilientTransport", kwargs)
        if transport is not None and kwargs:
            raise ConfigError(
                f"pass either transport= or HTTPTransport options, not both (got {sorted(kwargs)})"
            )
        _check_inner(transport, is_async=False)
        super().__init__(config, breaker, max_breakers, fallback, is_async=False)
        self.transport = transport if transport is not None else httpx.HTTPTransport(**kwargs)
        # httpx's own connection layer calls no user code, so no mount point can run
        # inside our attempt: skip the attempt mark (a context-variable set) then.
        self._leaf = type(self.transport) is httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._shared is not None and _runtime.holds(self._shared):
            # A mount point sharing our breaker is making this attempt: it keeps the books.
            inner = self.transport
            if _runtime.tracing is not None:
                inner = _runtime.tracing.httpx(inner)
            response = inner.handle_request(request)
            response.extensions[ATTEMPTS] = 1
            return response
        url = request.url
        key = _origin_key(url)
        policy = self._aliases.get(key) or self._core.policy(key, _origin_of, url)
        breaker = policy.breaker
        inner = self.transport
        if _runtime.tracing is not None:  # smoothapi.otel: a span per attempt
            inner = _runtime.tracing.httpx(inner)
        first: Outcome | None = None
        ticket = breaker.clean_ticket
        if ticket and policy.deadline is None:
            # Mark the attempt for a mount point inside the inner transport (it then makes
            # one attempt); there is none inside httpx's own connection layer.
            cell = None if self._leaf else _runtime.enter(policy.mark)
            try:
                response = inner.handle_request(request)
            except BaseException as exc:
                first = _classify_error(exc)
            else:
                if response.status_code not in self._retry_on:
                    if breaker.clean_ticket != ticket:
                        breaker.record_success(ticket)
                    if policy.budget is not None:
                        policy.budget.deposit()
                    response.extensions[ATTEMPTS] = 1
                    return response
                response.request = request  # its drain caps the body's reads
                first = self._classify_response(response)
            finally:
                if cell is not None:
                    _runtime.leave(cell)

        attempts = 0 if first is None else 1
        first_ticket = ticket if first is not None else 0

        left = deadline_left(policy)

        def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return _attempted(inner.handle_request(request), request, left)

        timeout = request.extensions.get("timeout")

        def attempt_within(seconds: float) -> httpx.Response:
            request.extensions["timeout"] = _shrink(timeout, seconds)
            return attempt()

        resend = self._core.resend(request.method, request.headers, _replayable(request))
        try:
            response = run_sync(
                policy,
                attempt,
                self._fallback_for(request),
                first,
                resend,
                open_error=self._open_error(request),
                first_ticket=first_ticket,
                attempt_within=attempt_within,
                started=None if left is None else left.started,
            )
        finally:
            _restore_timeout(request, timeout)  # the request may be sent again
        response.extensions[ATTEMPTS] = attempts
        return response if left is None else _bounded(response, request, left, is_async=False)

    def close(self) -> None:
        self.transport.close()


class AsyncResilientTransport(_Base, httpx.AsyncBaseTransport):
    """The async twin of :class:`ResilientTransport` (asyncio and trio).

    ``fallback`` may be a plain or an ``async`` callable.
    """

    def __init__(
        self,
        config: ResilientConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        fallback: AsyncHTTPXFallback | None = None,
        max_breakers: int = 1024,
        **kwargs: Any,
    ) -> None:
        _refuse_retries("AsyncResilientTransport", kwargs)
        if transport is not None and kwargs:
            raise ConfigError(
                f"pass either transport= or AsyncHTTPTransport options, not both "
                f"(got {sorted(kwargs)})"
            )
        _check_inner(transport, is_async=True)
        super().__init__(config, breaker, max_breakers, fallback, is_async=True)
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport(**kwargs)
        # httpx's own connection layer calls no user code, so no mount point can run
        # inside our attempt: skip the attempt mark (a context-variable set) then.
        self._leaf = type(self.transport) is httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._shared is not None and _runtime.holds(self._shared):
            inner = self.transport
            if _runtime.tracing is not None:
                inner = _runtime.tracing.httpx(inner)
            response = await inner.handle_async_request(request)
            response.extensions[ATTEMPTS] = 1
            return response
        url = request.url
        key = _origin_key(url)
        policy = self._aliases.get(key) or self._core.policy(key, _origin_of, url)
        breaker = policy.breaker
        inner = self.transport
        if _runtime.tracing is not None:  # smoothapi.otel: a span per attempt
            inner = _runtime.tracing.httpx(inner)
        first: Outcome | None = None
        ticket = breaker.clean_ticket
        if ticket and policy.deadline is None:
            # Mark the attempt for a mount point inside the inner transport (it then makes
            # one attempt); there is none inside httpx's own connection layer.
            cell = None if self._leaf else _runtime.enter(policy.mark)
            try:
                response = await inner.handle_async_request(request)
            except BaseException as exc:
                first = _classify_error(exc)
            else:
                if response.status_code not in self._retry_on:
                    if breaker.clean_ticket != ticket:
                        breaker.record_success(ticket)
                    if policy.budget is not None:
                        policy.budget.deposit()
                    response.extensions[ATTEMPTS] = 1
                    return response
                response.request = request  # its drain caps the body's reads
                first = self._classify_response(response)
            finally:
                if cell is not None:
                    _runtime.leave(cell)

        attempts = 0 if first is None else 1
        first_ticket = ticket if first is not None else 0

        left = deadline_left(policy)

        async def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return _attempted(await inner.handle_async_request(request), request, left)

        timeout = request.extensions.get("timeout")

        async def attempt_within(seconds: float) -> httpx.Response:
            request.extensions["timeout"] = _shrink(timeout, seconds)
            return await attempt()

        resend = self._core.resend(request.method, request.headers, _replayable(request))
        try:
            response = await run_async(
                policy,
                attempt,
                self._fallback_for(request),
                first,
                resend,
                open_error=self._open_error(request),
                first_ticket=first_ticket,
                attempt_within=attempt_within,
                started=None if left is None else left.started,
            )
        finally:
            _restore_timeout(request, timeout)  # the request may be sent again
        response.extensions[ATTEMPTS] = attempts
        return response if left is None else _bounded(response, request, left, is_async=True)

    async def aclose(self) -> None:
        await self.transport.aclose()
