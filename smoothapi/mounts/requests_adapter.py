"""``ResilientAdapter``: the engine mounted on a ``requests.Session``.

::

    session = requests.Session()
    session.mount("https://", ResilientAdapter(config))

It is an ``HTTPAdapter``: pool and TLS options pass through, urllib3's own
retries stay at zero (no stacked retries), and test mocks that patch
``HTTPAdapter.send`` (``responses``) still see every attempt.  Statuses are
read from responses; a retried response is drained (up to 64 KiB) or closed
before the retry, so its connection goes back to the pool.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

try:
    import requests
    import urllib3
except ModuleNotFoundError as _missing:  # pragma: no cover - tested in a subprocess
    raise ModuleNotFoundError(
        f"smoothapi's ResilientAdapter needs the 'requests' extra ({_missing}): "
        "pip install requests",
        name=_missing.name,
    ) from _missing
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response
from requests.utils import rewind_body

from .. import _runtime
from ..breaker import CircuitBreaker
from ..classify import is_transport_error
from ..config import ResilientConfig, Upstreams
from ..engine import FAILURE, IGNORED, Outcome, Policy, run_sync
from ..errors import CircuitOpenError, ConfigError, LoadShedError
from ._happy import settle
from ._transport import (
    DRAIN_LIMIT,
    LEFT,
    Left,
    MountPoint,
    deadline_left,
    drain_plan,
    drain_time,
    origin_name,
)
from ._watchdog import watch

__all__ = ["CircuitOpenConnectionError", "LoadShedConnectionError", "ResilientAdapter"]

#: ``fallback(request, error)`` builds the response served while the breaker rejects.
RequestsFallback = Callable[[PreparedRequest, BaseException], Response]

_NOT_SENT = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.EmptyPoolError,
)


class CircuitOpenConnectionError(CircuitOpenError, requests.exceptions.ConnectionError):
    """The breaker rejected the request: a CircuitOpenError and requests' ConnectionError."""

    def __init__(
        self, name: str, retry_after: float, request: PreparedRequest | None = None
    ) -> None:
        CircuitOpenError.__init__(self, name, retry_after)
        self.request = request
        self.response = None


class LoadShedConnectionError(LoadShedError, requests.exceptions.ConnectionError):
    """A load-control stage shed the request: a LoadShedError and requests' ConnectionError."""

    def __init__(
        self,
        name: str,
        stage: str,
        retry_after: float = 0.0,
        request: PreparedRequest | None = None,
    ) -> None:
        LoadShedError.__init__(self, name, stage, retry_after)
        self.request = request
        self.response = None


def _never_sent(exc: BaseException) -> bool:
    """True when the request cannot have reached the server (connect failure, no pool slot)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        return isinstance(reason, _NOT_SENT)
    return False


def _classify_error(exc: BaseException) -> Outcome:
    if isinstance(exc, Exception) and is_transport_error(exc):
        return Outcome(FAILURE, error=exc, sent=not _never_sent(exc))
    return Outcome(IGNORED, error=exc)


def _drain(response: Response, final: bool) -> None:
    """Give a retried response's connection back to the pool, in bounded memory and time.

    See :func:`smoothapi._transport.drain_plan`: a small body is read and kept
    (``response.content`` still works); a large one is left whole until the
    retry is certain, then its connection is closed rather than read.  A body
    not read within :func:`~smoothapi._transport.drain_time` (one that
    trickles or stalls) is dropped with its connection, and reads as empty.
    """
    if getattr(response, "_content_consumed", False):  # requests' own flag: already read
        return
    plan = drain_plan(response.headers.get("Content-Length"), final)
    if plan == "keep":
        return
    data: bytes | None = None
    seconds = drain_time(response)
    if plan != "close" and seconds > 0:
        try:
            data = _read_within(response.raw, seconds, DRAIN_LIMIT)
        except Exception:  # a broken connection or a bad encoding: drop the connection
            data = None
    if data is None:
        response.close()  # closes the socket and frees the pool slot
        data = b""
    _keep(response, data)


def _keep(response: Response, data: bytes) -> None:
    """``data`` is the response's whole body: as requests' own ``.content`` leaves it."""
    response._content = data
    setattr(response, "_content_consumed", True)  # noqa: B010 - not in the type stubs
    release = getattr(response.raw, "release_conn", None)
    if release is not None:
        release()


# A socket timeout of 0 would make the socket non-blocking: the shortest wait is this.
_MIN_READ = 0.001
_CHUNK = 64 * 1024


def _read_within(
    raw: Any, seconds: float, limit: int | None = None, read_timeout: float | None = None
) -> bytes | None:
    """Read urllib3's response ``raw`` to its end within ``seconds`` (and ``limit`` bytes).

    None when the body did not end in time (or in size): the caller drops the
    connection.  Each read returns what has arrived (``read1``) and the socket
    waits at most the time left; and since one read may wait on many socket
    reads (a gzip header or a chunk-size line trickling in yields nothing to
    return), the socket is shut down when the time is up (see
    :func:`._watchdog.watch`), so neither a trickling nor a stalled
    body holds the caller longer.  ``read_timeout`` (the caller's own, if
    shorter) raises as requests' reads do.  A urllib3 without ``read1`` (1.x)
    reads in one call, bounded the same way.
    """
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if not isinstance(sock, socket.socket) or not hasattr(raw, "_pool"):
        return _read_until(raw, sock, seconds, limit, read_timeout)
    # urllib3 puts the connection back in its pool as soon as the body's end is read:
    # not before the watch is over, or its socket could be cut under another request.
    pool = raw._pool
    raw._pool = None
    stopwatch = watch(sock, seconds)
    try:
        data = _read_until(raw, sock, seconds, limit, read_timeout)
    except Exception:
        if stopwatch.stop():
            return None  # the read failed because its time was up: a timeout
        raise
    finally:
        stopwatch.stop()
        raw._pool = pool
    return None if stopwatch.fired else data


def _read_until(
    raw: Any, sock: Any, seconds: float, limit: int | None, read_timeout: float | None
) -> bytes | None:
    until = time.monotonic() + seconds
    before = sock.gettimeout() if sock is not None else None
    read1 = getattr(raw, "read1", None)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            left = until - time.monotonic()
            wait = max(left, _MIN_READ)
            by_deadline = read_timeout is None or wait <= read_timeout
            if sock is not None:
                sock.settimeout(wait if by_deadline else read_timeout)
            want = _CHUNK if limit is None else limit + 1 - size
            try:
                if read1 is None:
                    chunk = raw.read(None if limit is None else want, decode_content=True)
                    return None if limit is not None and len(chunk) > limit else chunk
                chunk = read1(want, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                if by_deadline:
                    return None
                raise
            if not chunk:
                return b"".join(chunks)
            if left <= 0:  # the last look (a minimal wait) found more: too slow
                return None
            size += len(chunk)
            if limit is not None and size > limit:
                return None
            chunks.append(chunk)
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(before)


def _read_body(response: Response, left: Left, timeout: Any) -> None:
    """Read a non-streamed body within the call's deadline (requests reads it after us).

    Past the deadline the connection is closed and ``requests.exceptions.ReadTimeout``
    raised; other errors are requests' own, as its ``.content`` raises them.
    """
    raw = response.raw
    if getattr(response, "_content_consumed", False) or not callable(getattr(raw, "read1", None)):
        return  # read already (drained, a fallback's), or a urllib3 1.x: requests reads it
    try:
        data = _read_within(raw, max(left(), 0.0), read_timeout=_read_timeout(timeout))
    except BaseException as exc:
        response.close()
        for urllib3_error, requests_error in _REQUESTS_ERRORS:
            if isinstance(exc, urllib3_error):
                raise requests_error(exc) from exc
        raise
    if data is None:
        response.close()
        raise requests.exceptions.ReadTimeout(
            "the response body was not read within the call's deadline "
            "(ResilientConfig.deadline); the connection was closed",
            request=response.request,
            response=response,
        )
    _keep(response, data)


# How requests' own body reads (Response.iter_content) report urllib3's errors.
_REQUESTS_ERRORS: tuple[tuple[type[Exception], type[requests.exceptions.RequestException]], ...] = (
    (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError),
    (urllib3.exceptions.DecodeError, requests.exceptions.ContentDecodingError),
    (urllib3.exceptions.ReadTimeoutError, requests.exceptions.ConnectionError),
    (urllib3.exceptions.SSLError, requests.exceptions.SSLError),
)


def _read_timeout(timeout: Any) -> float | None:
    """The read part of requests' ``timeout`` (None, seconds, a pair or a urllib3 Timeout)."""
    if isinstance(timeout, tuple) and len(timeout) == 2:
        timeout = timeout[1]
    elif not isinstance(timeout, (int, float)) and timeout is not None:
        timeout = getattr(timeout, "read_timeout", None)
    return float(timeout) if isinstance(timeout, (int, float)) else None


def _replayable(request: PreparedRequest) -> bool:
    body: object = request.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    # A file object whose start position requests recorded can be rewound.
    return isinstance(getattr(request, "_body_position", None), int)


class ResilientAdapter(HTTPAdapter, MountPoint):
    """A ``requests`` transport adapter that retries, breaks per origin and can fall back.

    ``config`` defaults to ``ResilientConfig()``; ``breaker`` makes every
    origin share one breaker (e.g. the one of a decorated function);
    ``fallback(request, error)`` returns a ``Response`` to serve instead of
    raising while the breaker rejects; other keyword arguments
    (``pool_connections``, ``pool_maxsize``, ``pool_block``) go to
    ``HTTPAdapter``.  ``config.fallback`` is for decorated functions and is
    not used here.  Every response carries ``response.smoothapi_attempts``.
    """

    def __init__(
        self,
        config: ResilientConfig | Upstreams | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        fallback: RequestsFallback | None = None,
        max_breakers: int = 1024,
        **kwargs: Any,
    ) -> None:
        if "max_retries" in kwargs:
            raise ConfigError(
                "ResilientAdapter does its own retries: set BackoffConfig.max_retries "
                f"instead of max_retries={kwargs['max_retries']!r} (urllib3 retries stay at 0)"
            )
        super().__init__(max_retries=0, **kwargs)
        rejected = CircuitOpenConnectionError
        self._mount(config, breaker, max_breakers, fallback, _classify_error, rejected, _drain)

    def breaker_for(self, url: str) -> CircuitBreaker:
        """The breaker that guards ``url``'s origin."""
        return self._policy(url).breaker

    def _policy(self, url: str) -> Policy:
        # The origin is the URL up to its path; requests has normalised scheme and host.
        start = url.find("://") + 3
        end = url.find("/", start)
        key = url if end < 0 else url[:end]
        policy = self._aliases.get(key)
        return self._core.policy(key, _name, url) if policy is None else policy

    def send(  # noqa: PLR0917 - HTTPAdapter.send's signature
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        send = super().send
        if _runtime.tracing is not None:
            send = _runtime.tracing.requests(send)
        if self._shared is not None and _runtime.holds(self._shared):
            # A mount point sharing our breaker is making this attempt: it keeps the books.
            response = send(request, stream, timeout, verify, cert, proxies)
            response.smoothapi_attempts = 1  # type: ignore[attr-defined]
            return response
        policy = self._policy(request.url or "")
        first: Outcome | None = None
        began = None
        ticket = policy.breaker.clean_ticket if policy.direct else 0
        if ticket:  # the happy path (see _happy)
            if policy.timed:
                began = policy.breaker.now()
            try:
                response = send(request, stream, timeout, verify, cert, proxies)
            except BaseException as exc:
                first = _classify_error(exc)
            else:
                if response.status_code not in policy.retry_on:
                    settle(policy, ticket, began)
                    response.smoothapi_attempts = 1  # type: ignore[attr-defined]
                    return response
                first = policy.classify_value(response)

        attempts = 0 if first is None else 1
        rewind = getattr(request, "_body_position", None) is not None
        left = deadline_left(policy)

        def attempt(limit: Any = timeout) -> Response:
            nonlocal attempts
            if attempts and rewind:
                rewind_body(request)
            attempts += 1
            response = send(request, stream, limit, verify, cert, proxies)
            if left is not None:
                setattr(response, LEFT, left)  # its drain stops at the deadline
            return response

        def attempt_within(seconds: float) -> Response:
            return attempt(_shrink(timeout, seconds))

        resend = self._core.resend(
            policy, request.method or "GET", request.headers, _replayable(request)
        )
        response = run_sync(
            policy,
            attempt,
            self._fallback_for(request),
            first,
            resend,
            open_error=lambda name, retry_after: CircuitOpenConnectionError(
                name, retry_after, request
            ),
            shed_error=lambda shed: LoadShedConnectionError(
                shed.name, shed.stage, shed.retry_after, request
            ),
            first_ticket=0 if first is None else ticket,
            attempt_within=attempt_within,
            started=began if left is None else left.started,
        )
        response.smoothapi_attempts = attempts  # type: ignore[attr-defined]
        if left is not None and not stream:
            _read_body(response, left, timeout)  # the deadline covers the body too
        return response


def _shrink(timeout: Any, seconds: float) -> Any:
    """requests' ``timeout`` (None, seconds, a (connect, read) pair or a urllib3
    ``Timeout``), capped at ``seconds``."""
    if timeout is None:
        return seconds
    if isinstance(timeout, tuple) and len(timeout) == 2:
        return tuple(seconds if t is None else min(t, seconds) for t in timeout)
    if isinstance(timeout, (int, float)):
        return min(timeout, seconds)
    if isinstance(timeout, urllib3.Timeout):
        total = timeout.total
        return urllib3.Timeout(
            connect=_cap(timeout._connect, seconds),
            read=_cap(timeout._read, seconds),
            total=None if total is None else _cap(total, seconds),
        )
    return timeout  # not a timeout requests knows: it will say so itself


def _cap(value: Any, seconds: float) -> float:
    # None (wait for ever) and urllib3's "the socket's default" sentinel both become the cap.
    return min(value, seconds) if isinstance(value, (int, float)) else seconds


def _name(url: str) -> str:
    from urllib.parse import urlsplit  # noqa: PLC0415 - once per new origin

    parts = urlsplit(url)
    return origin_name(parts.scheme, parts.hostname or "", parts.port)
