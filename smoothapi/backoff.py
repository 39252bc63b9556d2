"""Backoff arithmetic: pure functions of the attempt number and a random source.

Delay before retry ``n`` (``n = 0`` is the first retry), with ``cap(n) =
min(max_delay, base_delay * 2**n)``:

* ``full`` (default): ``uniform(0, cap(n))``
* ``equal``: ``cap(n) / 2 + uniform(0, cap(n) / 2)``
* ``decorrelated``: ``min(max_delay, uniform(base_delay, 3 * previous))``, with
  ``previous`` starting at ``base_delay`` (the AWS architecture blog's variant)
* ``none``: ``cap(n)``

``base_delay`` may exceed ``max_delay`` (as in the seed): every delay is then
``max_delay`` for ``none`` and ``decorrelated``, and jittered below it for the
others.

``rand`` returns a float in ``[0, 1)``; tests inject their own.

This module sits below :mod:`smoothapi.config` and imports nothing of
ours: the configuration validates with these functions (the longest wait a
schedule can ask for), and re-exports :class:`Jitter` from here.
"""

from __future__ import annotations

import math
import random
from enum import Enum

TYPE_CHECKING = False  # typing's own flag costs an import of typing
if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import BackoffConfig

__all__ = ["Jitter", "capped_exponential", "next_delay"]


class Jitter(str, Enum):
    """How the exponential delay is randomised (see :mod:`smoothapi.backoff`)."""

    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


def capped_exponential(n: int, base_delay: float, max_delay: float) -> float:
    """``min(max_delay, base_delay * 2**n)``, exact and safe for any ``n >= 0``."""
    try:
        return min(max_delay, math.ldexp(base_delay, n))
    except OverflowError:  # base_delay * 2**n is beyond any float, so beyond max_delay
        return max_delay


def next_delay(
    n: int,
    config: BackoffConfig,
    previous: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``n``; ``previous`` is the last delay (decorrelated mode)."""
    jitter = config.jitter
    if jitter is Jitter.DECORRELATED:
        low = config.base_delay
        if low >= config.max_delay:
            # uniform(base_delay, ...) >= max_delay: every delay is the cap (and a huge
            # base_delay cannot overflow the arithmetic below into inf or nan).
            return config.max_delay
        prev = low if previous is None else previous
        high = max(low, prev * 3.0)
        return min(config.max_delay, low + rand() * (high - low))
    cap = capped_exponential(n, config.base_delay, config.max_delay)
    if jitter is Jitter.FULL:
        return rand() * cap
    if jitter is Jitter.EQUAL:
        half = cap / 2.0
        return half + rand() * half
    return cap
