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

from collections.abc import Awaitable, Callable
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
from ..config import ResilientConfig, Upstreams
from ..engine import FAILURE, IGNORED, Outcome, Policy, run_async, run_sync
from ..errors import CircuitOpenError, ConfigError, ConfigTypeError, LoadShedError
from ._happy import settle
from ._httpx_body import adrain, drain
from ._httpx_call import Call
from ._transport import ATTEMPTS, MountPoint, origin_name

__all__ = [
    "AsyncResilientTransport",
    "CircuitOpenTransportError",
    "LoadShedTransportError",
    "ResilientTransport",
]

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


class LoadShedTransportError(LoadShedError, httpx.TransportError):
    """A load-control stage shed the request: a LoadShedError and an ``httpx.TransportError``."""

    def __init__(
        self, name: str, stage: str, retry_after: float = 0.0, request: httpx.Request | None = None
    ) -> None:
        LoadShedError.__init__(self, name, stage, retry_after)
        self._request = request


def _classify_error(exc: BaseException) -> Outcome:
    if isinstance(exc, Exception) and is_transport_error(exc):
        return Outcome(FAILURE, error=exc, sent=not isinstance(exc, _NOT_SENT))
    return Outcome(IGNORED, error=exc)


def _aclose(response: httpx.Response) -> Awaitable[None]:
    """Close a response nobody will read (its connection is dropped if the body is unread)."""
    return response.aclose()


def _once(response: httpx.Response) -> httpx.Response:
    """A response that took one attempt."""
    response.extensions[ATTEMPTS] = 1
    return response


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


class _Base(MountPoint):
    """What the two transports share: all but the ``await`` (see :mod:`._httpx_call`)."""

    transport: Any

    def __init__(  # noqa: PLR0917 - the two public constructors' arguments
        self,
        config: ResilientConfig | Upstreams | None,
        transport: Any,
        breaker: CircuitBreaker | None,
        max_breakers: int,
        fallback: Callable[..., Any] | None,
        kwargs: dict[str, Any],
        *,
        is_async: bool,
    ) -> None:
        owner = type(self).__name__
        default = httpx.AsyncHTTPTransport if is_async else httpx.HTTPTransport
        _refuse_retries(owner, kwargs)
        if transport is not None and kwargs:
            raise ConfigError(
                f"pass either transport= or {default.__name__} options, not both "
                f"(got {sorted(kwargs)})"
            )
        _check_inner(transport, is_async=is_async)
        self._mount(
            config,
            breaker,
            max_breakers,
            fallback,
            _classify_error,
            CircuitOpenTransportError,
            drain,
            adrain if is_async else None,
            _aclose if is_async else None,
            hedges=is_async,
        )
        self.transport = transport if transport is not None else default(**kwargs)
        # httpx's own connection layer calls no user code, so no mount point can run
        # inside our attempt: skip the attempt mark (a context-variable set) then.
        self._leaf = type(self.transport) is default

    def _policy(self, url: httpx.URL) -> Policy:
        # httpx's public URL properties re-derive their value on every access (about
        # 0.4 us for the three); the parsed reference they derive it from is ~10x cheaper.
        ref = getattr(url, "_uri_reference", None)
        if ref is None:  # pragma: no cover - an httpx without the private attribute
            ref = url
        key = (ref.scheme, ref.host, ref.port)
        policy = self._aliases.get(key)
        return self._core.policy(key, _origin_of, url) if policy is None else policy

    def breaker_for(self, url: str | httpx.URL) -> CircuitBreaker:
        """The breaker that guards ``url``'s origin."""
        return self._policy(httpx.URL(url)).breaker

    def _retried(
        self,
        policy: Policy,
        ticket: int,
        request: httpx.Request,
        response: httpx.Response,
        began: float | None,
    ) -> Outcome | None:
        """The happy path's response: settled (None) if it answers, else the engine's first."""
        if response.status_code in policy.retry_on:
            response.request = request  # its drain caps the body's reads
            return policy.classify_value(response)
        settle(policy, ticket, began)
        response.extensions[ATTEMPTS] = 1
        return None

    def _call(
        self,
        request: httpx.Request,
        inner: Any,
        policy: Policy,
        first: Outcome | None,
        ticket: int,
        *,
        began: float | None,
    ) -> Call:
        """The engine's side of one request (both drivers build it here)."""
        return Call(
            request,
            inner,
            policy,
            first,
            ticket,
            began=began,
            resend=self._core.resend(policy, request.method, request.headers, _replayable(request)),
            fallback=self._fallback_for(request),
            open_error=lambda name, retry_after: CircuitOpenTransportError(
                name, retry_after, request
            ),
            shed_error=lambda shed: LoadShedTransportError(
                shed.name, shed.stage, shed.retry_after, request
            ),
        )


class ResilientTransport(_Base, httpx.BaseTransport):
    """An httpx transport that retries, breaks per origin and can fall back.

    ``transport`` is the inner transport (default ``httpx.HTTPTransport(**kwargs)``);
    ``breaker`` makes every origin share one breaker; ``fallback(request,
    error)`` returns the ``httpx.Response`` served while the breaker rejects.
    ``config.fallback`` is for decorated functions and is not used here.
    """

    def __init__(
        self,
        config: ResilientConfig | Upstreams | None = None,
        transport: httpx.BaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        fallback: HTTPXFallback | None = None,
        max_breakers: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, transport, breaker, max_breakers, fallback, kwargs, is_async=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        inner: httpx.BaseTransport = self.transport
        if _runtime.tracing is not None:  # smoothapi.otel: a span per attempt
            inner = _runtime.tracing.httpx(inner)
        if self._shared is not None and _runtime.holds(self._shared):
            # A mount point sharing our breaker is making this attempt: it keeps the books.
            return _once(inner.handle_request(request))
        policy = self._policy(request.url)
        first = began = None
        ticket = policy.breaker.clean_ticket if policy.direct else 0
        if ticket:  # the happy path (see _happy); httpx's own layer needs no mark
            if policy.timed:
                began = policy.breaker.now()
            cell = None if self._leaf else _runtime.enter(policy.mark)
            try:
                response = inner.handle_request(request)
            except BaseException as exc:
                first = _classify_error(exc)
            else:
                first = self._retried(policy, ticket, request, response, began)
                if first is None:  # answered, and settled
                    return response
            finally:
                if cell is not None:
                    _runtime.leave(cell)
        call = self._call(request, inner, policy, first, ticket, began=began)
        attempt, within = call.attempt, call.attempt_within
        response = run_sync(policy, attempt, attempt_within=within, **call.engine)
        return call.returned(response, is_async=False)

    def close(self) -> None:
        self.transport.close()


class AsyncResilientTransport(_Base, httpx.AsyncBaseTransport):
    """The async twin of :class:`ResilientTransport` (asyncio and trio).

    ``fallback`` may be a plain or an ``async`` callable.
    """

    def __init__(
        self,
        config: ResilientConfig | Upstreams | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        fallback: AsyncHTTPXFallback | None = None,
        max_breakers: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, transport, breaker, max_breakers, fallback, kwargs, is_async=True)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        inner: httpx.AsyncBaseTransport = self.transport
        if _runtime.tracing is not None:  # smoothapi.otel: a span per attempt
            inner = _runtime.tracing.httpx(inner)
        if self._shared is not None and _runtime.holds(self._shared):
            # A mount point sharing our breaker is making this attempt: it keeps the books.
            return _once(await inner.handle_async_request(request))
        policy = self._policy(request.url)
        first = began = None
        ticket = policy.breaker.clean_ticket if policy.direct else 0
        if ticket:  # the happy path (see _happy); httpx's own layer needs no mark
            if policy.timed:
                began = policy.breaker.now()
            cell = None if self._leaf else _runtime.enter(policy.mark)
            try:
                response = await inner.handle_async_request(request)
            except BaseException as exc:
                first = _classify_error(exc)
            else:
                first = self._retried(policy, ticket, request, response, began)
                if first is None:  # answered, and settled
                    return response
            finally:
                if cell is not None:
                    _runtime.leave(cell)
        call = self._call(request, inner, policy, first, ticket, began=began)
        attempt, within = call.attempt_async, call.attempt_within_async
        response = await run_async(policy, attempt, attempt_within=within, **call.engine)
        return call.returned(response, is_async=True)

    async def aclose(self) -> None:
        await self.transport.aclose()
