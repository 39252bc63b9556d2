"""What a server says about its rate limit, read from response headers.

Theory of operation: :func:`parse_server_limit` tries these sources in order and
the first that gives a valid reading wins; a garbage source is skipped, never
raised, so a hostile or broken server cannot break the client.

1. ``Retry-After`` on a 429 or 503: an explicit order to wait, which outranks
   any count.
2. ``RateLimit: "name";r=50;t=30`` (draft-ietf-httpapi-ratelimit-headers -07
   and later): the standard; of several policies, the most restrictive.
3. The older drafts of that standard: ``RateLimit-Remaining`` with
   ``RateLimit-Reset``, and ``RateLimit: limit=100, remaining=50, reset=30``.
4. ``X-RateLimit-*`` and ``X-Rate-Limit-*`` (Discord, GitHub, many others):
   common practice, with no standard for the reset (delta seconds, or a Unix
   epoch in seconds or milliseconds), hence last.

A count without a reset is no reading: the client could not bound its pause.
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, NamedTuple

from .retry_after import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ServerLimit", "parse_server_limit"]

# Longer than any honest rate-limit header (several policies included); longer is garbage.
_MAX_HEADER_LEN = 256
# A server that claims to allow more than this is lying or broken; a bucket that size
# would never throttle anyway.
_MAX_REMAINING = 10**9

# What RFC 9110 allows in a field value: visible ASCII, space and tab.  Anything else
# (controls, non-ASCII) is garbage, and rejecting it here keeps the Retry-After parser's
# str.strip() from reading "\u2003 5" or "5\x0c" as 5.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*", re.ASCII)
# ASCII digits only: int() and float() on raw text also take "1_0", "²", " 1e3", "nan".
_UINT = re.compile(r"[0-9]+", re.ASCII)
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)

# RFC 8941 (Structured Field Values) pieces, enough to read a List of Items with
# parameters.  Anything else (inner lists, a bare integer as an item) fails the parse.
_SF_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"'
_SF_TOKEN = r"[A-Za-z*][-!#$%&'*+.^_`|~0-9A-Za-z:/]*"  # noqa: S105 - a grammar, not a secret
_SF_KEY = r"[a-z*][-a-z0-9_.*]*"
# Decimal before integer, so "1.5" is one value and not "1" followed by garbage.
_SF_BARE = (
    rf"-?[0-9]{{1,12}}\.[0-9]{{1,3}}|-?[0-9]{{1,15}}|{_SF_STRING}|{_SF_TOKEN}"
    r"|:[A-Za-z0-9+/=]*:|\?[01]"
)
_SF_PARAM = rf";[ ]*({_SF_KEY})(?:=({_SF_BARE}))?"
_SF_MEMBER = re.compile(rf"(?:{_SF_STRING}|{_SF_TOKEN})((?:{_SF_PARAM})*)", re.ASCII)
_SF_PARAM_RE = re.compile(_SF_PARAM, re.ASCII)
_SF_SEPARATOR = re.compile(r"[ \t]*,[ \t]*", re.ASCII)
# The draft -03..-06 combined form, a Dictionary of integers: "limit=100, remaining=50".
_DICT_MEMBER = re.compile(rf"({_SF_KEY})=([^,;]*)", re.ASCII)

# Below this an X-RateLimit-Reset is delta seconds; within [1e9, 1e11) Unix seconds
# (GitHub: 1e9 is 2001, 1e11 is year 5138); within [1e12, 1e14) Unix milliseconds.
# The gaps between are neither and so garbage.
_EPOCH_SECONDS = 1e9
_EPOCH_SECONDS_END = 1e11
_EPOCH_MILLIS = 1e12
_EPOCH_MILLIS_END = 1e14

_X_SPELLINGS = (
    # (remaining, resets in order of preference): Reset-After is a plain delta, free of
    # clock skew, so it beats the epoch Discord sends next to it.
    ("X-RateLimit-Remaining", ("X-RateLimit-Reset-After", "X-RateLimit-Reset")),
    ("X-Rate-Limit-Remaining", ("X-Rate-Limit-Reset-After", "X-Rate-Limit-Reset")),
)


class ServerLimit(NamedTuple):
    """The server's limit: ``remaining`` requests allowed in the next ``reset`` seconds.

    ``remaining == 0`` means pause until ``reset``; ``0.0 <= reset <= cap``.
    """

    remaining: int
    reset: float


def parse_server_limit(
    get: Callable[[str], object],
    status: int | None,
    *,
    cap: float,
    now: float | None = None,
) -> ServerLimit | None:
    """The server's rate limit from a response's headers, or None when it states none.

    ``get`` looks a header up by name, case-insensitively (``httpx.Headers.get``,
    requests' ``CaseInsensitiveDict.get``); it may return None or garbage, or raise,
    and that header then counts as absent.  ``status`` is the response's status code.
    A reset longer than ``cap`` seconds is cut to ``cap``.  ``now`` is the Unix time
    that epoch resets and HTTP-dates are measured from (default ``time.time()``).

    Never raises for anything the server sent; only a bad ``cap`` (the caller's own
    setting, not finite and positive) is a :class:`ValueError`.
    """
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"cap must be a finite number of seconds > 0, got {cap!r}")
    current = time.time() if now is None else now
    return (
        _from_retry_after(get, status, cap, current)
        or _from_structured(get, cap)
        or _from_old_drafts(get, cap)
        or _from_x_headers(get, cap, current)
    )


def _header(get: Callable[[str], object], name: str) -> str | None:
    """The header's value, stripped, or None when absent, not field text, or too long."""
    try:
        value = get(name)
    except Exception:  # a broken lookup is the same as no header: never our caller's error
        return None
    if (
        not isinstance(value, str)
        or len(value) > _MAX_HEADER_LEN
        or not _FIELD_VALUE.fullmatch(value)
    ):
        return None
    return value.strip(" \t") or None


def _remaining(text: str | None) -> int | None:
    if text is None or not _UINT.fullmatch(text):
        return None
    count = int(text)
    return count if count <= _MAX_REMAINING else None


def _seconds(text: str | None) -> float | None:
    if text is None or not _SECONDS.fullmatch(text):
        return None
    return float(text)


def _clamp(seconds: float, cap: float) -> float | None:
    """``seconds`` within ``[0, cap]``; None for NaN (e.g. from a NaN ``now``)."""
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def _limit(remaining: int | None, reset: float | None, cap: float) -> ServerLimit | None:
    if remaining is None or reset is None:
        return None
    clamped = _clamp(reset, cap)
    return None if clamped is None else ServerLimit(remaining, clamped)


def _from_retry_after(
    get: Callable[[str], object], status: int | None, cap: float, now: float
) -> ServerLimit | None:
    if status not in (429, 503):
        return None
    value = _header(get, "Retry-After")
    if value is None:
        return None
    try:
        seconds = parse_retry_after(value, now)
    except Exception:  # its contract is None for garbage; a bug there must not reach a call
        return None
    return None if seconds is None else _limit(0, seconds, cap)


def _structured_items(text: str) -> list[dict[str, str | None]] | None:
    """The parameters of each item of an RFC 8941 List, or None if it is not one."""
    items: list[dict[str, str | None]] = []
    pos = 0
    while True:
        member = _SF_MEMBER.match(text, pos)
        if member is None:
            return None
        # Later duplicates win, as RFC 8941 says for parameters.
        items.append({p[1]: p[2] for p in _SF_PARAM_RE.finditer(member[1])})
        pos = member.end()
        if pos == len(text):
            return items
        separator = _SF_SEPARATOR.match(text, pos)
        if separator is None or separator.end() == len(text):  # a trailing comma fails too
            return None
        pos = separator.end()


def _from_structured(get: Callable[[str], object], cap: float) -> ServerLimit | None:
    text = _header(get, "RateLimit")
    items = None if text is None else _structured_items(text)
    if not items:
        return None
    best: tuple[int, int] | None = None
    for params in items:
        if "r" not in params or "t" not in params:
            continue  # not a quota this draft defines: skip the item, keep the others
        r, t = params["r"], params["t"]
        # A bad r or t (negative, a decimal, too big) discards the whole field: dropping
        # only that item could leave a laxer policy to win.
        if r is None or t is None or not (_UINT.fullmatch(r) and _UINT.fullmatch(t)):
            return None
        remaining = int(r)
        if remaining > _MAX_REMAINING:
            return None
        # Most restrictive: fewest requests left, then the longest wait for more.
        if best is None or (remaining, -int(t)) < (best[0], -best[1]):
            best = (remaining, int(t))
    return None if best is None else _limit(best[0], float(best[1]), cap)


def _from_old_drafts(get: Callable[[str], object], cap: float) -> ServerLimit | None:
    found = _limit(
        _remaining(_header(get, "RateLimit-Remaining")),
        _seconds(_header(get, "RateLimit-Reset")),
        cap,
    )
    if found is not None:
        return found
    text = _header(get, "RateLimit")
    if text is None:
        return None
    fields: dict[str, str] = {}
    for piece in text.split(","):
        member = _DICT_MEMBER.fullmatch(piece.strip(" \t"))
        if member is None:
            return None
        fields[member[1]] = member[2]
    return _limit(_remaining(fields.get("remaining")), _seconds(fields.get("reset")), cap)


def _epoch_or_delta(seconds: float | None, now: float) -> float | None:
    """Delta seconds from an X-RateLimit-Reset, which servers send in three units."""
    if seconds is None:
        return None
    if seconds < _EPOCH_SECONDS:
        return seconds
    if seconds < _EPOCH_SECONDS_END:
        return seconds - now
    if _EPOCH_MILLIS <= seconds < _EPOCH_MILLIS_END:
        return seconds / 1000.0 - now
    return None


def _from_x_headers(get: Callable[[str], object], cap: float, now: float) -> ServerLimit | None:
    for remaining_name, reset_names in _X_SPELLINGS:
        remaining = _remaining(_header(get, remaining_name))
        if remaining is None:
            continue
        for reset_name in reset_names:
            seconds = _seconds(_header(get, reset_name))
            if not reset_name.endswith("-After"):
                seconds = _epoch_or_delta(seconds, now)
            found = _limit(remaining, seconds, cap)
            if found is not None:
                return found
    return None
