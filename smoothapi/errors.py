"""Exceptions raised by smoothapi.

The tree:

    SmoothAPIError
    ├── ConfigError                (also ValueError)  a configuration value is out of range
    │   └── ConfigTypeError        (also TypeError)   a configuration value has the wrong type
    ├── CircuitOpenError           (also RuntimeError) the breaker rejected the call without I/O
    └── LoadShedError              (also RuntimeError) a load-control stage (bulkhead, rate
                                                       limit, adaptive throttling) refused it

The transports raise subclasses of :class:`CircuitOpenError` and
:class:`LoadShedError` that are also the client library's own request error
(``requests.exceptions.ConnectionError``, ``httpx.TransportError``,
``aiohttp.ClientConnectionError``), so ``except`` clauses written for the
client keep working.  Errors from the wrapped call itself (an ``HTTPError``, a timeout) are
never wrapped: smoothapi re-raises the original exception.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "ConfigTypeError",
    "LoadShedError",
    "SmoothAPIError",
]


class SmoothAPIError(Exception):
    """Base class of every exception that smoothapi itself raises."""


class ConfigError(SmoothAPIError, ValueError):
    """A configuration value is out of range; the message names the field and the value."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value has the wrong type; the message names the field and the value."""


class CircuitOpenError(SmoothAPIError, RuntimeError):
    """The circuit breaker is OPEN (or a probe is already in flight): the call was not made.

    ``name`` is the breaker's name; ``retry_after`` is the number of seconds
    until the breaker lets a probe through (0.0 while another caller's probe
    is in flight).
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(
            f"Circuit breaker is OPEN for: {name} (retry after {retry_after:.3f}s); "
            "the call was not made. Configure a fallback to answer instead, or catch "
            "CircuitOpenError and use .retry_after."
        )

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float]]:
        return (type(self), (self.name, self.retry_after))


_ADVICE = {
    "bulkhead": "every permit of BulkheadConfig.max_concurrent was taken and the queue was full "
    "or the wait ran out",
    "rate_limit": "no token of RateLimitConfig came (or the server's limit did not reset) "
    "within its max_wait or the call's deadline",
    "throttle": "adaptive throttling rejected it: the upstream has been refusing a large share "
    "of requests lately",
}


class LoadShedError(SmoothAPIError, RuntimeError):
    """A load-control stage refused the call without I/O: the request was not sent.

    ``name`` is the breaker's (for a transport: the origin's); ``stage`` is
    ``"bulkhead"``, ``"rate_limit"`` or ``"throttle"``; ``retry_after`` is
    the seconds until the stage expects to admit a call (the rate limit's
    next token or the server's reset; 0.0 when it cannot tell).
    """

    def __init__(self, name: str, stage: str, retry_after: float = 0.0) -> None:
        self.name = name
        self.stage = stage
        self.retry_after = retry_after
        advice = _ADVICE.get(stage, "a load-control stage refused it")
        super().__init__(
            f"Call shed by the {stage} stage for: {name} (retry after {retry_after:.3f}s): "
            f"{advice}; the call was not made. Configure a fallback to answer instead, or "
            "catch LoadShedError and use .stage and .retry_after."
        )

    def __reduce__(self) -> tuple[type[LoadShedError], tuple[str, str, float]]:
        return (type(self), (self.name, self.stage, self.retry_after))
