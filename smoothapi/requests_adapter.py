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

from collections.abc import Callable, Mapping
from typing import Any

try:
    import requests
    import urllib3
except ModuleNotFoundError as _missing:  # pragma: no cover - tested in a subprocess
    raise ModuleNotFoundError(
        f"smoothapi's ResilientAdapter needs requests ({_missing}): "
        "pip install 'smoothapi-py[requests]'",
        name=_missing.name,
    ) from _missing
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response
from requests.utils import rewind_body

from . import _runtime
from ._transport import DRAIN_LIMIT, TransportCore, drain_plan, origin_name
from .breaker import CircuitBreaker
from .classify import is_transport_error
from .config import ResilientConfig
from .engine import FAILURE, IGNORED, Outcome, Policy, run_sync
from .errors import CircuitOpenError, ConfigError

__all__ = ["CircuitOpenConnectionError", "ResilientAdapter"]

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
    """Give a retried response's connection back to the pool, in bounded memory.

    See :func:`smoothapi._transport.drain_plan`: a small body is read and kept
    (``response.content`` still works); a large one is left whole until the
    retry is certain, then its connection is closed rather than read.
    """
    if getattr(response, "_content_consumed", False):  # requests' own flag: already read
        return
    plan = drain_plan(response.headers.get("Content-Length"), final)
    if plan == "keep":
        return
    data = b""
    if plan != "close":
        try:
            data = response.raw.read(DRAIN_LIMIT + 1, decode_content=True)
        except Exception:  # a broken connection or a bad encoding: drop the connection
            plan, data = "close", b""
        if len(data) > DRAIN_LIMIT:
            plan = "close"
    if plan == "close":
        response.close()  # closes the socket and frees the pool slot
        data = b""
    response._content = data  # what requests' own .content sets
    setattr(response, "_content_consumed", True)  # noqa: B010 - not in the type stubs
    release = getattr(response.raw, "release_conn", None)
    if release is not None:
        release()


def _replayable(request: PreparedRequest) -> bool:
    body: object = request.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    # A file object whose start position requests recorded can be rewound.
    return isinstance(getattr(request, "_body_position", None), int)


class ResilientAdapter(HTTPAdapter):
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
        config: ResilientConfig | None = None,
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
        if fallback is not None and not callable(fallback):
            raise ConfigError(
                f"ResilientAdapter(fallback=...) takes a callable (request, error) -> Response, "
                f"got {fallback!r}"
            )
        super().__init__(max_retries=0, **kwargs)
        self._core = TransportCore(
            config,
            breaker=breaker,
            max_breakers=max_breakers,
            classify_error=_classify_error,
            classify_value=self._classify_response,
            discard=_drain,
            open_error=CircuitOpenConnectionError,
        )
        self.config = self._core.config
        self._retry_on = self._core.retry_on
        self._aliases = self._core.aliases
        self._shared = breaker
        self._fallback = fallback

    def _classify_response(self, response: Response) -> Outcome:
        return self._core.classify_status(
            response, response.status_code, response.headers.get("Retry-After")
        )

    def breaker_for(self, url: str) -> CircuitBreaker:
        """The breaker that guards ``url``'s origin."""
        return self._policy(url).breaker

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker this adapter holds, by origin."""
        return self._core.breakers()

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
        breaker = policy.breaker
        first: Outcome | None = None
        ticket = breaker._healthy
        if ticket and policy.deadline is None:
            try:
                response = send(request, stream, timeout, verify, cert, proxies)
            except BaseException as exc:
                first = _classify_error(exc)
            else:
                if response.status_code not in self._retry_on:
                    if breaker._healthy != ticket:
                        breaker.record_success(ticket)
                    if policy.budget is not None:
                        policy.budget.deposit()
                    response.smoothapi_attempts = 1  # type: ignore[attr-defined]
                    return response
                first = self._classify_response(response)

        attempts = 0 if first is None else 1
        first_ticket = ticket if first is not None else 0
        rewind = getattr(request, "_body_position", None) is not None

        def attempt(limit: Any = timeout) -> Response:
            nonlocal attempts
            if attempts and rewind:
                rewind_body(request)
            attempts += 1
            return send(request, stream, limit, verify, cert, proxies)

        def attempt_within(seconds: float) -> Response:
            return attempt(_shrink(timeout, seconds))

        fallback = self._fallback
        resend = self._core.resend(request.method or "GET", request.headers, _replayable(request))
        response = run_sync(
            policy,
            attempt,
            None if fallback is None else (lambda error: fallback(request, error)),
            first,
            resend,
            open_error=lambda name, retry_after: CircuitOpenConnectionError(
                name, retry_after, request
            ),
            first_ticket=first_ticket,
            attempt_within=attempt_within,
        )
        response.smoothapi_attempts = attempts  # type: ignore[attr-defined]
        return response


def _shrink(timeout: Any, seconds: float) -> Any:
    """requests' ``timeout`` (None, seconds or a (connect, read) pair), capped at ``seconds``."""
    if timeout is None:
        return seconds
    if isinstance(timeout, tuple) and len(timeout) == 2:
        return tuple(seconds if t is None else min(t, seconds) for t in timeout)
    if isinstance(timeout, (int, float)):
        return min(timeout, seconds)
    return timeout  # a urllib3 Timeout object: the caller's own precise setting


def _name(url: str) -> str:
    from urllib.parse import urlsplit  # noqa: PLC0415 - once per new origin

    parts = urlsplit(url)
    return origin_name(parts.scheme, parts.hostname or "", parts.port)
