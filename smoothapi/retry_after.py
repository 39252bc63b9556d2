"""Parsing ``Retry-After`` (RFC 9110 section 10.2.3) with the standard library only."""

from __future__ import annotations

import re
import time

__all__ = ["parse_retry_after"]

# Longer than any HTTP-date or sane number; a longer header is garbage, not parsed.
_MAX_RETRY_AFTER_LEN = 64
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for, or None when absent or garbage.

    Accepts delta-seconds (``"120"``, also ``"1.5"``) and an HTTP-date
    (relative to ``now``, a Unix time, default ``time.time()``; a date in the
    past means 0).  Negative, non-finite and unparseable values are None; a
    huge value is returned as is, for the caller to compare with its cap.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_RETRY_AFTER_LEN:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        # ASCII digits only (float() would also take "1e3", "1_0" or "²").  A value
        # too large for a float becomes inf: absurd, so over any cap.
        return float(text)
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 - costly, and rarely needed

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        target = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, target - current)
