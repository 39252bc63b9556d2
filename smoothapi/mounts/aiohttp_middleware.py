"""``ResilientMiddleware``: the engine mounted on aiohttp's client middlewares (aiohttp 3.12+).

::

    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(config),)) as session:
        async with session.get(url) as response:
            ...

The transports' rules (see :mod:`._transport`): statuses read from responses,
per-origin breakers in a bounded registry (or one shared ``breaker=``), which
requests may be resent, ``Retry-After`` with its cap, a retried response
released before the retry (read into memory up to 64 KiB within 0.5 s, or its
connection closed), one-shot bodies sent once, the deadline cutting each
attempt and the body of the response returned.  aiohttp runs on asyncio only,
so only the async driver is used here.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json as _json
import sys
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

try:
    import aiohttp
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL
except ModuleNotFoundError as _missing:  # pragma: no cover - tested in a subprocess
    raise ModuleNotFoundError(
        f"smoothapi's aiohttp middleware needs the 'aiohttp' extra ({_missing}): "
        "pip install 'aiohttp>=3.12'",
        name=_missing.name,
    ) from _missing

if not hasattr(aiohttp, "ClientMiddlewareType"):  # pragma: no cover - an aiohttp before 3.12
    raise ImportError(
        f"smoothapi's aiohttp middleware needs aiohttp 3.12 or later (client middlewares); "
        f"aiohttp {aiohttp.__version__} is installed: pip install 'aiohttp>=3.12'"
    )

from .. import _runtime
from ..breaker import CircuitBreaker
from ..classify import is_transport_error
from ..config import ResilientConfig, Upstreams
from ..engine import FAILURE, IGNORED, Outcome, Policy, run_async
from ..errors import CircuitOpenError, ConfigError, LoadShedError
from ._happy import settle
from ._transport import (
    ATTEMPTS,
    DRAIN_LIMIT,
    LEFT,
    Left,
    MountPoint,
    deadline_left,
    drain_plan,
    drain_time,
    origin_name,
)

_T = TypeVar("_T")

__all__ = ["CircuitOpenClientError", "LoadShedClientError", "ResilientMiddleware"]

#: ``fallback(request, error)`` builds the response served while the breaker rejects
#: (:meth:`ResilientMiddleware.response` makes one), plain or ``async``.
AIOHTTPFallback = Callable[
    [aiohttp.ClientRequest, BaseException],
    "aiohttp.ClientResponse | Awaitable[aiohttp.ClientResponse]",
]

# The errors on which aiohttp itself sends an idempotent request again (client.py).
_RESENT_ON = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)
_RESENT_METHODS: frozenset[str] = getattr(
    aiohttp.client,
    "IDEMPOTENT_METHODS",
    frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}),
)
_MAX_RAISED = 64

# Nothing of the request can have reached the server.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class CircuitOpenClientError(CircuitOpenError, aiohttp.ClientConnectionError):
    """The breaker rejected the request: a CircuitOpenError and an aiohttp ClientConnectionError."""


class LoadShedClientError(LoadShedError, aiohttp.ClientConnectionError):
    """A load-control stage shed the request: a LoadShedError and a ClientConnectionError."""


def _classify_error(exc: BaseException) -> Outcome:
    if isinstance(exc, Exception) and is_transport_error(exc):
        return Outcome(FAILURE, error=exc, sent=not isinstance(exc, _NOT_SENT))
    return Outcome(IGNORED, error=exc)


def _replayable(body: object) -> bool:
    """Whether the request's body can be sent again whole.

    Bytes, strings, JSON and form data are kept in memory; a file is re-read
    from where it started only if it can seek; an async iterator or a stream
    is read once.  Multipart bodies are replayable when every part is.
    """
    if body is None or body == b"":
        return True
    if getattr(body, "consumed", False):
        return False
    if isinstance(body, aiohttp.MultipartWriter):
        return all(_replayable(part[0] if isinstance(part, tuple) else part) for part in body)
    if isinstance(body, aiohttp.payload.BytesPayload):
        return True
    if isinstance(body, aiohttp.payload.IOBasePayload):
        seekable = getattr(getattr(body, "_value", None), "seekable", None)
        try:
            return callable(seekable) and bool(seekable())
        except Exception:  # a closed file, or one whose seekable() raises
            return False
    return False


def _origin_of(url: URL) -> str:
    return origin_name(url.scheme, url.host or "", url.port)


if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[_T], seconds: float) -> _T:
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _within(awaitable: Awaitable[_T], seconds: float) -> _T:
        return await asyncio.wait_for(awaitable, seconds)


def _cut(url: URL) -> aiohttp.ServerTimeoutError:
    return aiohttp.ServerTimeoutError(
        # Origin and path only: never userinfo or the query (keys live there).
        f"the attempt to {url.with_user(None).with_query(None).with_fragment(None)} was cut "
        "at the call's deadline "
        "(ResilientConfig.deadline)"
    )


async def _release(response: aiohttp.ClientResponse, final: bool) -> None:
    """Give a retried response's connection back to the pool, in bounded memory and time.

    A small body is read into memory (the response stays readable: it is
    returned whole if the breaker opens before the retry); a large one, or one
    that does not arrive within :func:`~._transport.drain_time`, is dropped
    with its connection.
    """
    if response.closed:
        return
    plan = drain_plan(response.headers.get("Content-Length"), final)
    if plan == "keep":
        return
    if plan == "close":
        response.close()
        return
    try:
        body = await _within(_read_small(response), drain_time(response))
    except (Exception, asyncio.TimeoutError):  # a broken connection, or too slow
        body = None
    if body is None:
        response.close()
    else:
        # What read() returns from now on; reading to the end gave the connection back
        # (release() would make read() refuse the body).
        response._body = body


async def _read_small(response: aiohttp.ClientResponse) -> bytes | None:
    """The whole body, or None once it is larger than :data:`~._transport.DRAIN_LIMIT`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await response.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > DRAIN_LIMIT:
            return None
        chunks.append(chunk)


@functools.cache
def _response_parameters() -> frozenset[str]:
    """What this aiohttp's ClientResponse() takes (its keyword arguments changed in 3.12-3.14)."""
    return frozenset(inspect.signature(aiohttp.ClientResponse.__init__).parameters)


class _StreamWriterStub:
    # What a built response asks of the writer of a request that was never sent.
    output_size = 0


def _build_response(
    request: aiohttp.ClientRequest, status: int, body: bytes, headers: CIMultiDict[str]
) -> aiohttp.ClientResponse:
    loop = asyncio.get_running_loop()
    offered: dict[str, Any] = {
        "writer": None,
        "continue100": None,
        "timer": None,
        "request_info": request.request_info,
        "traces": [],
        "loop": loop,
        "session": None,
        "stream_writer": _StreamWriterStub(),
    }
    accepted = _response_parameters()
    response = aiohttp.ClientResponse(
        request.method, request.url, **{k: v for k, v in offered.items() if k in accepted}
    )
    response.status = status
    response.reason = _REASONS.get(status, "")
    response._headers = CIMultiDictProxy(headers)
    response._raw_headers = tuple(
        (key.encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()
    )
    response._body = body
    # read() returns _body; the streaming API (content.read(), iter_chunked...) the same.
    reader = aiohttp.StreamReader(
        aiohttp.base_protocol.BaseProtocol(loop), max(len(body), 2**16), loop=loop
    )
    if body:
        reader.feed_data(body)
    reader.feed_eof()
    response.content = reader
    response._closed = True  # no connection to give back (read() refuses a "released" one)
    setattr(response, ATTEMPTS, 0)
    return response


_REASONS = {200: "OK", 202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content"}


class _Bounded:
    """The next handler, each attempt cut at the seconds the deadline leaves it.

    Below the span wrapper (smoothapi.otel), so an attempt's span ends with the
    ``ServerTimeoutError`` its caller gets, not with the cancellation that cut it.
    """

    __slots__ = ("handler", "left", "seconds")

    def __init__(
        self,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
        left: Left,
    ) -> None:
        self.handler = handler
        self.left = left
        self.seconds: float | None = None

    async def __call__(self, request: aiohttp.ClientRequest) -> aiohttp.ClientResponse:
        seconds = self.seconds
        if seconds is None:
            return await self.handler(request)
        try:
            return await _within(self.handler(request), seconds)
        except asyncio.TimeoutError:
            if self.left() > 0:
                raise  # aiohttp's own timeout (ClientTimeout), not the deadline
            raise _cut(request.url) from None


class _Call:
    """One request's attempts after its first, or all of them: counted, timed, bounded."""

    __slots__ = ("attempts", "bounded", "left", "request", "send")

    def __init__(
        self,
        request: aiohttp.ClientRequest,
        send: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
        left: Left | None,
        attempts: int,
        bounded: _Bounded | None = None,
    ) -> None:
        self.request = request
        self.send = send
        self.left = left
        self.attempts = attempts
        self.bounded = bounded

    async def attempt(self) -> aiohttp.ClientResponse:
        self.attempts += 1
        response = await self.send(self.request)
        if self.left is not None:
            setattr(response, LEFT, self.left)  # the drain stops at the deadline
        return response

    async def attempt_within(self, seconds: float) -> aiohttp.ClientResponse:
        bounded = self.bounded
        assert bounded is not None  # a call with a deadline sends through one
        bounded.seconds = seconds
        try:
            return await self.attempt()
        finally:
            bounded.seconds = None


def _close_unread(ref: weakref.ref[aiohttp.ClientResponse]) -> None:
    """The deadline has passed: a body still being received is cut, its reads raise.

    Held weakly: a response its caller has dropped is not kept alive (nor its body)
    until the deadline.
    """
    response = ref()
    if response is None or response.closed:  # gone, or read whole (or released) in time
        return
    content = response.content
    if content is not None and content.exception() is None:
        content.set_exception(
            aiohttp.ServerTimeoutError(
                "the response body was not read within the call's deadline "
                "(ResilientConfig.deadline); the connection was closed"
            )
        )
    response.close()


class ResilientMiddleware(MountPoint):
    """An aiohttp client middleware that retries, breaks per origin and can fall back.

    ``aiohttp.ClientSession(middlewares=(ResilientMiddleware(config),))``, or
    per request with ``session.get(url, middlewares=(...))``.  ``breaker``
    makes every origin share one breaker; ``fallback(request, error)`` returns
    the ``aiohttp.ClientResponse`` served while the breaker rejects (build it
    with :meth:`response`); ``max_breakers`` bounds the per-origin registry.
    ``config.fallback`` is for decorated functions and is not used here.
    Hedging (``ResilientConfig.hedging``) is refused: aiohttp sends one
    request object at a time.
    """

    _no_hedging = (
        "aiohttp sends one request object at a time, so two attempts of one request cannot race."
    )

    def __init__(
        self,
        config: ResilientConfig | Upstreams | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        fallback: AIOHTTPFallback | None = None,
        max_breakers: int = 1024,
    ) -> None:
        self._mount(
            config,
            breaker,
            max_breakers,
            fallback,
            _classify_error,
            CircuitOpenClientError,
            None,  # aiohttp is async only: the async driver releases (below), never a sync one
            _release,
            _close,
            hedges=False,
        )
        # aiohttp sends an idempotent request once more when it fails with one of
        # _RESENT_ON (meant for a keep-alive connection the server had closed), running
        # the middlewares again: the error our retries ended with, by the request's
        # timer (one per session.request call), so the second run raises it at once.
        self._raised: OrderedDict[int, tuple[object, BaseException]] = OrderedDict()

    @staticmethod
    def _status(response: Any) -> tuple[int, str | None]:
        return response.status, response.headers.get("Retry-After")

    def _policy(self, url: URL) -> Policy:
        key = (url.scheme, url.raw_host, url.port)
        policy = self._aliases.get(key)
        return self._core.policy(key, _origin_of, url) if policy is None else policy

    def breaker_for(self, url: str | URL) -> CircuitBreaker:
        """The breaker that guards ``url``'s origin."""
        return self._policy(URL(url)).breaker

    @staticmethod
    def response(
        request: aiohttp.ClientRequest,
        status: int = 200,
        *,
        body: bytes | str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """A response built in memory, for a ``fallback``: nothing is sent.

        ``json`` is serialised (``Content-Type: application/json``), ``body``
        sent as is (a ``str`` as UTF-8); ``read()``, ``text()`` and ``json()``
        work on it, and ``smoothapi.attempts()`` of it is 0.
        """
        if json is not None and body is not None:
            raise ConfigError("ResilientMiddleware.response() takes body= or json=, not both")
        fields: CIMultiDict[str] = CIMultiDict(headers or {})
        if json is not None:
            data = _json.dumps(json).encode()
            fields.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
            fields.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = body or b""
        fields["Content-Length"] = str(len(data))
        return _build_response(request, status, data, fields)

    async def __call__(
        self,
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        if self._raised:
            raised = self._raised.pop(id(getattr(request, "_timer", None)), None)
            if raised is not None and raised[0] is getattr(request, "_timer", None):
                raise raised[1]  # our retries are spent: no second round from aiohttp
        send = handler
        if _runtime.tracing is not None:  # smoothapi.otel: a span per attempt
            send = _runtime.tracing.aiohttp(handler)
        if self._shared is not None and _runtime.holds(self._shared):
            # A mount point sharing our breaker is making this attempt: it keeps the books.
            response = await send(request)
            setattr(response, ATTEMPTS, 1)
            return response
        policy = self._policy(request.url)
        first = began = None
        ticket = policy.breaker.clean_ticket if policy.direct else 0
        if ticket:  # the happy path (see _happy)
            if policy.timed:
                began = policy.breaker.now()
            cell = _runtime.enter(policy.mark)  # a middleware after us may call a mount point
            try:
                response = await send(request)
            except BaseException as exc:
                first = _classify_error(exc)
            else:
                if response.status not in policy.retry_on:
                    settle(policy, ticket, began)
                    setattr(response, ATTEMPTS, 1)
                    return response
                first = policy.classify_value(response)
            finally:
                _runtime.leave(cell)
        left = deadline_left(policy)
        bounded = None
        if left is not None:  # no happy path ran: cut each attempt below its span
            bounded = _Bounded(handler, left)
            send = bounded if _runtime.tracing is None else _runtime.tracing.aiohttp(bounded)
        return await self._engine(
            request, send, policy, first, ticket=ticket, began=began, left=left, bounded=bounded
        )

    async def _engine(
        self,
        request: aiohttp.ClientRequest,
        send: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
        policy: Policy,
        first: Outcome | None,
        *,
        ticket: int,
        began: float | None,
        left: Left | None = None,
        bounded: _Bounded | None = None,
    ) -> aiohttp.ClientResponse:
        call = _Call(request, send, left, 0 if first is None else 1, bounded)
        resend = self._core.resend(
            policy, request.method, request.headers, _replayable(request.body)
        )
        try:
            response = await run_async(
                policy,
                call.attempt,
                attempt_within=call.attempt_within,
                fallback=self._fallback_for(request),
                first=first,
                resend=resend,
                open_error=CircuitOpenClientError,
                shed_error=lambda shed: LoadShedClientError(
                    shed.name, shed.stage, shed.retry_after
                ),
                first_ticket=0 if first is None else ticket,
                started=began if left is None else left.started,
            )
        except _RESENT_ON as exc:
            timer = getattr(request, "_timer", None)
            if timer is not None and request.method in _RESENT_METHODS:
                raised = self._raised
                if len(raised) >= _MAX_RAISED:  # a session that does not resend leaves them
                    raised.popitem(last=False)
                raised[id(timer)] = (timer, exc)  # the timer is held: its id stays unique
            raise
        setattr(response, ATTEMPTS, call.attempts)
        if left is not None and not response.closed and response.status != 101:
            # The body must be read within the deadline: an unread response is closed then.
            # (A WebSocket's 101: the deadline bounded its handshake; its life is the user's.)
            delay = max(left(), 0.0)
            asyncio.get_running_loop().call_later(delay, _close_unread, weakref.ref(response))
        return response


def _close(response: aiohttp.ClientResponse) -> None:
    """Let go of a response nobody will read: its connection is closed unless read whole."""
    response.close()
