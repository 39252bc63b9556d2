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

HTTP errors are requests' ``HTTPError`` and httpx's ``HTTPStatusError``;
their status comes from ``exc.response.status_code``.  An ``HTTPError``
without a response carries no status and is treated as "anything else".
Client libraries are never imported here: an exception of theirs can only
exist if they were already imported, so we look in ``sys.modules``.
"""

from __future__ import annotations

import sys
from collections.abc import Collection

from .engine import ANSWERED, FAILURE, IGNORED, Outcome
from .errors import CircuitOpenError
from .retry_after import parse_retry_after

__all__ = ["classify_exception", "http_status", "is_transport_error"]

_cache_key: tuple[bool, ...] = ()
_cache: tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]] = (
    (ConnectionError, TimeoutError),
    (),
)


def _error_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(transport error types, excluded subtypes) for the client libraries loaded so far."""
    global _cache_key, _cache
    modules = sys.modules
    # A None entry means "blocked": present in sys.modules but not importable.
    key = (
        modules.get("requests") is not None,
        modules.get("httpx") is not None,
        modules.get("urllib3") is not None,
    )
    if key == _cache_key:
        return _cache
    retry: list[type[BaseException]] = [ConnectionError, TimeoutError]
    never: list[type[BaseException]] = [CircuitOpenError]
    if key[0]:
        import requests  # noqa: PLC0415 - already imported, this is a dict lookup

        exc = requests.exceptions
        retry += [exc.ConnectionError, exc.Timeout, exc.ChunkedEncodingError]
        # A certificate or TLS setup failure will fail the same way next time.
        never += [exc.SSLError, exc.InvalidURL, exc.InvalidSchema, exc.MissingSchema]
    if key[1]:
        import httpx  # noqa: PLC0415

        retry += [httpx.TransportError]
        # Our own request was malformed, or the URL scheme is unsupported.
        never += [httpx.UnsupportedProtocol, httpx.LocalProtocolError]
    if key[2]:
        import urllib3  # noqa: PLC0415

        u = urllib3.exceptions
        retry += [u.ProtocolError, u.TimeoutError, u.NewConnectionError]
        never += [u.SSLError]
    _cache = (tuple(retry), tuple(never))
    _cache_key = key
    return _cache


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an error from ``raise_for_status()`` carries, or None."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    modules = sys.modules
    requests = modules.get("requests")
    httpx = modules.get("httpx")
    if (requests is not None and isinstance(exc, requests.HTTPError)) or (
        httpx is not None and isinstance(exc, httpx.HTTPStatusError)
    ):
        status = getattr(response, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
    except Exception:  # a headers object we do not understand: no hint
        return None
    return parse_retry_after(value) if isinstance(value, str) else None


def is_transport_error(exc: BaseException) -> bool:
    """True for timeouts, refused/reset connections and protocol errors of any client.

    A TLS failure (a bad certificate, a failed handshake) is not one of them,
    however the client wraps it (httpx raises ``ConnectError`` from the
    ``ssl.SSLError``): the next try would fail the same way.
    """
    retry, never = _error_types()
    return isinstance(exc, retry) and not isinstance(exc, never) and not _caused_by_tls(exc)


def _caused_by_tls(exc: BaseException) -> bool:
    ssl = sys.modules.get("ssl")
    if ssl is None:
        return False
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:  # a bounded walk down the cause chain
        if isinstance(current, ssl.SSLError) and not isinstance(current, ssl.SSLZeroReturnError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def classify_exception(exc: BaseException, retry_on: Collection[int]) -> Outcome:
    """Classify an exception raised by a decorated call."""
    status = http_status(exc)
    if status is not None:
        if status not in retry_on:
            return Outcome(ANSWERED, error=exc, status=status)
        return Outcome(FAILURE, error=exc, status=status, retry_after=_retry_after(exc))
    if isinstance(exc, Exception) and is_transport_error(exc):
        return Outcome(FAILURE, error=exc)
    return Outcome(IGNORED, error=exc)
