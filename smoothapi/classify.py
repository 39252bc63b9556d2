"""What an exception means: DESIGN.md's failure table as code.

===========================================  =========  =========================
the call raised                              kind       retried
===========================================  =========  =========================
HTTP error, status in ``retry_on``           FAILURE    yes
HTTP error, other status (400, 404, ...)     ANSWERED   no (a success for the breaker)
transport error (timeout, refused, reset,    FAILURE    yes
protocol error)
anything else, cancellation, interrupt       IGNORED    no (nothing recorded)
===========================================  =========  =========================

HTTP errors are requests' ``HTTPError``, httpx's ``HTTPStatusError`` (their
status comes from ``exc.response.status_code``) and aiohttp's
``ClientResponseError`` (``raise_for_status()``; its ``exc.status``).  An
``HTTPError`` without a response carries no status and is treated as
"anything else".
Client libraries are never imported here: an exception of theirs can only
exist if they were already imported, so we look in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Collection

from ._log import logger
from .engine import ANSWERED, FAILURE, IGNORED, Outcome
from .errors import CircuitOpenError, LoadShedError
from .retry_after import parse_retry_after

__all__ = ["classify_exception", "http_status", "is_transport_error"]

_Types = tuple[type[BaseException], ...]
_BUILTIN: tuple[_Types, _Types] = ((ConnectionError, TimeoutError), ())
# (which client libraries were loaded, their error types): one tuple, swapped whole, so a
# reader never pairs one key with another key's types.
_cache: tuple[tuple[bool, ...], tuple[_Types, _Types]] = ((), _BUILTIN)


def _types(module: object, *names: str) -> list[type[BaseException]] | None:
    """``module``'s exception classes ``names``, or None if one is missing.

    A module in ``sys.modules`` may still be running its body in another thread
    (a first ``import requests`` racing our call), so an attribute may not exist yet.
    """
    found: list[type[BaseException]] = []
    for name in names:
        value = getattr(module, name, None)
        if not (isinstance(value, type) and issubclass(value, BaseException)):
            return None
        found.append(value)
    return found


def _error_types() -> tuple[_Types, _Types]:
    """(transport error types, excluded subtypes) for the client libraries loaded so far."""
    global _cache
    modules = sys.modules
    # A None entry means "blocked": present in sys.modules but not importable.
    requests = modules.get("requests")
    httpx = modules.get("httpx")
    urllib3 = modules.get("urllib3")
    aiohttp = modules.get("aiohttp")
    key = (requests is not None, httpx is not None, urllib3 is not None, aiohttp is not None)
    cached_key, cached = _cache
    if key == cached_key:
        return cached
    retry: list[type[BaseException]] = [ConnectionError, TimeoutError]
    never: list[type[BaseException]] = [CircuitOpenError, LoadShedError]
    complete = True
    # Read from the module objects, never with `import`: an import of a module another
    # thread is still importing waits for it (and for ever in a child forked meanwhile).
    if requests is not None:
        exc = getattr(requests, "exceptions", None)
        found = _types(exc, "ConnectionError", "Timeout", "ChunkedEncodingError")
        # A certificate or TLS setup failure will fail the same way next time.
        excluded = _types(exc, "SSLError", "InvalidURL", "InvalidSchema", "MissingSchema")
        complete = _add(retry, found, never, excluded) and complete
    if httpx is not None:
        found = _types(httpx, "TransportError")
        # Our own request was malformed, or the URL scheme is unsupported.
        excluded = _types(httpx, "UnsupportedProtocol", "LocalProtocolError")
        complete = _add(retry, found, never, excluded) and complete
    if urllib3 is not None:
        u = getattr(urllib3, "exceptions", None)
        found = _types(u, "ProtocolError", "TimeoutError", "NewConnectionError")
        complete = _add(retry, found, never, _types(u, "SSLError")) and complete
    if aiohttp is not None:
        # A truncated body (ClientPayloadError) is a broken connection too; a TLS failure
        # or a URL aiohttp cannot use will fail the same way next time.
        found = _types(aiohttp, "ClientConnectionError", "ClientPayloadError")
        excluded = _types(aiohttp, "ClientSSLError", "ClientConnectorCertificateError")
        complete = _add(retry, found, never, excluded) and complete
    types = (tuple(retry), tuple(never))
    if complete:  # a half-imported library is looked at again on the next call
        _cache = (key, types)
    return types


def _add(
    retry: list[type[BaseException]],
    found: list[type[BaseException]] | None,
    never: list[type[BaseException]],
    excluded: list[type[BaseException]] | None,
) -> bool:
    # A library's retryable types count only with its exclusions (an SSLError is a
    # ConnectionError in requests): all of them or none.
    if found is None or excluded is None:
        return False
    retry += found
    never += excluded
    return True


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an error from ``raise_for_status()`` carries, or None (never raises)."""
    try:
        return _http_status(exc)
    except Exception:  # an exception object we cannot read: no status
        return None


def _http_status(exc: BaseException) -> int | None:
    modules = sys.modules
    response_error = getattr(modules.get("aiohttp"), "ClientResponseError", None)
    if isinstance(response_error, type) and isinstance(exc, response_error):
        if _malformed_response(exc):  # no status was received: aiohttp's 400 is its own
            return None
        status = getattr(exc, "status", None)  # aiohttp's error carries no response
        return status if isinstance(status, int) and not isinstance(status, bool) else None
    response = getattr(exc, "response", None)
    if response is None:
        return None
    kinds = (
        getattr(modules.get("requests"), "HTTPError", None),
        getattr(modules.get("httpx"), "HTTPStatusError", None),
    )
    if any(isinstance(kind, type) and isinstance(exc, kind) for kind in kinds):
        status = getattr(response, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def _retry_after(exc: BaseException) -> float | None:
    try:
        response = getattr(exc, "response", None)
        # aiohttp's ClientResponseError carries the response's headers itself.
        headers = getattr(exc, "headers", None) if response is None else response.headers
        if headers is None:
            return None
        value = headers.get("Retry-After")
    except Exception:  # a response or headers object we do not understand: no hint
        return None
    return parse_retry_after(value) if isinstance(value, str) else None


def is_transport_error(exc: BaseException) -> bool:
    """True for timeouts, refused/reset connections and protocol errors of any client.

    A TLS failure (a bad certificate, a failed handshake) is not one of them,
    however the client wraps it (httpx raises ``ConnectError`` from the
    ``ssl.SSLError``): the next try would fail the same way.

    Never raises: if the error cannot be examined (a client library half
    imported by another thread, an exception object whose attributes raise),
    the answer is the builtin one - a ``ConnectionError`` or ``TimeoutError``.
    """
    try:
        retry, never = _error_types()
        if isinstance(exc, retry):
            return not isinstance(exc, never) and not _caused_by_tls(exc)
        return _malformed_response(exc)
    except Exception as error:
        _examined_badly(exc, error)
        return _is_builtin_transport_error(exc)


def _malformed_response(exc: BaseException) -> bool:
    """aiohttp reports a response it cannot parse (a garbage status line, a bad header)
    as a ``ClientResponseError`` (status 400) caused by its ``HttpProcessingError``: a
    protocol error of the server's, as httpx's ``RemoteProtocolError`` is."""
    aiohttp = sys.modules.get("aiohttp")
    response_error = getattr(aiohttp, "ClientResponseError", None)
    processing = getattr(getattr(aiohttp, "http_exceptions", None), "HttpProcessingError", None)
    return (
        isinstance(response_error, type)
        and isinstance(processing, type)
        and isinstance(exc, response_error)
        and isinstance(exc.__cause__, processing)
    )


def _caused_by_tls(exc: BaseException) -> bool:
    modules = sys.modules
    # `ssl` may be half imported by another thread (its SSLError not yet bound), while
    # `_ssl`, a C module, appears in sys.modules only once complete.
    ssl_error = getattr(modules.get("_ssl"), "SSLError", None) or getattr(
        modules.get("ssl"), "SSLError", None
    )
    if not isinstance(ssl_error, type):
        return False
    zero_return = getattr(modules.get("_ssl"), "SSLZeroReturnError", None) or getattr(
        modules.get("ssl"), "SSLZeroReturnError", None
    )
    clean_close: type | tuple[()] = zero_return if isinstance(zero_return, type) else ()
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:  # a bounded walk down the cause chain
        if isinstance(current, ssl_error) and not isinstance(current, clean_close):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def classify_exception(exc: BaseException, retry_on: Collection[int]) -> Outcome:
    """Classify an exception raised by a decorated call.

    Never raises (a raising classifier would turn the caller's error into its
    own, and a probe's into a stuck breaker): an error that cannot be examined
    is classified by its builtin type alone.
    """
    try:
        status = http_status(exc)
        if status is not None:
            if status not in retry_on:
                return Outcome(ANSWERED, error=exc, status=status)
            return Outcome(FAILURE, error=exc, status=status, retry_after=_retry_after(exc))
        if isinstance(exc, Exception) and is_transport_error(exc):
            return Outcome(FAILURE, error=exc)
        return Outcome(IGNORED, error=exc)
    except Exception as error:
        _examined_badly(exc, error)
        return _builtin_outcome(exc)


def _builtin_outcome(exc: BaseException) -> Outcome:
    kind = FAILURE if _is_builtin_transport_error(exc) else IGNORED
    return Outcome(kind, error=exc)


def _is_builtin_transport_error(exc: BaseException) -> bool:
    # type(), not isinstance(): an object whose ``__class__`` raises must not make the
    # last resort raise too.  Anything still odd is not a transport error.
    try:
        return issubclass(type(exc), _BUILTIN[0])
    except Exception:
        return False


def _examined_badly(exc: BaseException, error: Exception) -> None:
    with contextlib.suppress(Exception):
        logger().debug(
            "could not classify a %s (%s while examining it); classified by its builtin type",
            type(exc).__qualname__,
            type(error).__qualname__,
        )
