"""Exceptions raised by smoothapi.

The tree::

    SmoothAPIError
    ├── ConfigError                (also ValueError)  a configuration value is out of range
    │   └── ConfigTypeError        (also TypeError)   a configuration value has the wrong type
    └── CircuitOpenError           (also RuntimeError) the breaker rejected the call without I/O

The transports raise subclasses of :class:`CircuitOpenError` that are also the
client library's own request error (``requests.exceptions.ConnectionError``,
``httpx.TransportError``), so ``except`` clauses written for the client keep
working.  Errors from the wrapped call itself (an ``HTTPError``, a timeout) are
never wrapped: smoothapi re-raises the original exception.
"""

from __future__ import annotations

__all__ = ["CircuitOpenError", "ConfigError", "ConfigTypeError", "SmoothAPIError"]


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
