"""Checks of user-given values, shared by the configs and the stores.

At the bottom of the layers, beside the errors they raise: the configs
(``smoothapi.config``) and the stores (``smoothapi.storage``) validate
their arguments with the same wording, and neither reaches into the other.
Each check names the owner and the field, and the value it was given.
"""

from __future__ import annotations

import math

from .errors import ConfigError, ConfigTypeError

TYPE_CHECKING = False  # typing's own flag costs an import of typing (~10 ms with re)
if TYPE_CHECKING:
    from typing import Any, TypeGuard

__all__ = ["MAX_DELAY_SECONDS", "finite", "flag", "integer", "integral", "number", "real"]

#: The longest single wait a config may ask for: one day.
MAX_DELAY_SECONDS = 86_400.0


def number(
    owner: str, name: str, value: object, *, minimum: float = 0.0, one_day: bool = True
) -> float:
    """A finite number of seconds >= ``minimum`` (at most one day unless ``one_day=False``)."""
    where = f"{owner}.{name}"
    if not real(value):
        raise ConfigTypeError(
            f"{where} must be a number of seconds, got {value!r} ({type(value).__name__})"
        )
    if not finite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum:g}, got {value!r}")
    if one_day and value > MAX_DELAY_SECONDS:
        # A longer wait is a unit mistake (ms for s?), and past ~292 years the OS
        # sleep itself overflows.
        raise ConfigError(
            f"{where} must be at most {MAX_DELAY_SECONDS:g} seconds (one day), got {value!r}"
        )
    return float(value)


def real(value: object) -> TypeGuard[float]:
    """A real number that is not a bool: int, float, or any numbers.Real (numpy's, Fraction)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    import numbers  # noqa: PLC0415 - only for exotic number types, off the import path

    return isinstance(value, numbers.Real)


def integral(value: object) -> TypeGuard[int]:
    """An integer that is not a bool: int or any numbers.Integral (numpy's)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    import numbers  # noqa: PLC0415 - only for exotic number types, off the import path

    return isinstance(value, numbers.Integral)


def finite(value: Any) -> bool:
    """Whether ``value`` (a real number) is finite; an int too large for a float is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def integer(owner: str, name: str, value: object, *, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``."""
    where = f"{owner}.{name}"
    if not integral(value):
        raise ConfigTypeError(f"{where} must be an int, got {value!r} ({type(value).__name__})")
    whole = int(value)
    if whole < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {value!r}")
    return whole


def flag(owner: str, name: str, value: object) -> bool:
    """True or False, nothing else (not 0, 1 or "yes")."""
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{owner}.{name} must be True or False, got {value!r}")
    return value
