"""RedisStore.from_url's checks of a URL, and how messages about it keep its secrets out.

Stdlib only.  A URL may hold a user name and password; no message quotes
them (:func:`redact`), and a URL a parser could split in the wrong place
(an unencoded ``/``, ``?`` or ``#`` in the password, no ``//`` after the
scheme, a database path that is not a number) is refused without quoting it.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

__all__ = ["check_url", "redact"]


def check_url(url: str) -> None:
    """Refuse a URL that cannot be read unambiguously (see the module docstring)."""
    _check_credentials(url)
    _check_db_path(url)


def _check_db_path(url: str) -> None:
    """redis-py reads ``redis://host/abc`` as database 0 without a word: refuse it."""
    from urllib.parse import urlsplit  # noqa: PLC0415 - once per store

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # never echo the URL: it may hold a password
        raise ConfigError(
            f"RedisStore.from_url could not parse the URL: {redact(str(exc), url)}"
        ) from None
    if parts.scheme not in ("redis", "rediss"):
        return  # unix:// takes the database as ?db=
    path = parts.path.strip("/")
    if path and not path.isdigit():
        # Never the path itself: in a mistyped URL it may hold the password.
        raise ConfigError(
            "RedisStore.from_url: the URL's path names the database and must be a number, "
            "as in redis://host:6379/0 (the path is not shown: it may hold a password)"
        )


#: The schemes redis-py reads; each must be followed by ``//``.
_SCHEMES = ("redis", "rediss", "unix")
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*):")


def _check_scheme(url: str) -> None:
    """Refuse ``redis:/user:pw@host`` and the like: without ``//`` a parser reads the
    credentials as a path, which would reach messages and labels."""
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(1).lower() in _SCHEMES and not url.startswith("//", scheme.end()):
        raise ConfigError(
            f"RedisStore.from_url: the URL must start with {scheme.group(1).lower()}:// "
            "(two slashes after the scheme's ':'; the URL is not shown: it may hold a "
            "password)"
        )


def _credentials(url: str) -> str:
    """The part of ``url`` that may hold a user name and password, however mistyped:
    everything between the scheme's ``://`` (or its ``:`` and whatever slashes or
    backslashes follow it) and the last ``@``; from the start when the URL has no known
    scheme; ``''`` with no ``@``."""
    at = url.rfind("@")
    if at < 0:
        return ""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme and scheme.group(1).lower() in _SCHEMES else 0
    if at <= start:
        return ""
    if url.startswith("//", start):  # a third slash stays: it is refused as a '/' in there
        return url[start + 2 : at]
    return url[start:at].lstrip("/\\ \t")  # mistyped (refused by _check_scheme)


def redact(text: str, url: str) -> str:
    """``text`` with ``url``'s credentials part taken out.

    The credentials part (everything between the scheme's ``:`` and the last
    ``@``, with or without ``//``), and the user name and password in it, raw
    and percent-decoded, are replaced by ``***`` (a piece shorter than three
    characters only where it stands alone).  :func:`_check_credentials`
    has refused any URL whose credentials a parser could split in the wrong
    place, so these are the only pieces of them a parser's message can quote.
    """
    from urllib.parse import unquote  # noqa: PLC0415 - only on error paths

    secret = _credentials(url)
    if not secret:
        return text
    pieces = {secret, unquote(secret)}
    for raw in secret.split(":", 1):
        part = raw.strip("/\\")  # a separator alone is no secret
        pieces |= {part, unquote(part)}
    for piece in sorted((p for p in pieces if p), key=len, reverse=True):
        if len(piece) < 3:  # a user name "u": not the u of every "under" in the message
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(piece)}(?![A-Za-z0-9])", "***", text)
        else:
            text = text.replace(piece, "***")
    return text


def _check_credentials(url: str) -> None:
    """Refuse a ``redis``/``rediss``/``unix`` URL without ``//`` after its scheme, or
    whose credentials part holds an unencoded ``/``, ``?`` or ``#``.

    A URL parser ends the host at the first of them, so such a URL would be
    read with part of the password as the host, the path or the fragment: a
    wrong host, a database "number" that is a piece of the password - or, for
    ``#``, a connection to localhost with half the password.
    """
    _check_scheme(url)
    scheme = _SCHEME.match(url)
    if not scheme or scheme.group(1).lower() not in _SCHEMES:
        return  # refused by redis-py, whose message does not quote the URL
    if any(ch in _credentials(url) for ch in "/?#"):
        raise ConfigError(
            "RedisStore.from_url: the URL's user name or password holds a '/', '?' or '#' "
            "that is not percent-encoded, so the URL cannot be read unambiguously (the URL "
            "is not shown: it may hold a password). Percent-encode the password, e.g. "
            "urllib.parse.quote(password, safe=''), or pass it as password=...; if the '@' "
            "belongs to the path or the query, write it as %40."
        )
