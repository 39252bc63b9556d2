"""``python -m smoothapi status``: every breaker in a Redis breaker store, seen from outside.

For the engineer on call: which shared breakers are open right now, how many
failures each has counted, and for how long they stay open - read from the
store (:meth:`RedisStore.breakers() <smoothapi.RedisStore.breakers>`), since
the memory of the processes that use them is out of reach.  Reading changes
nothing.

The table lists one breaker per line, sorted by name::

    NAME          STATE                        FAILURES  OPEN FOR
    payments api  OPEN                                5  9.8s more
    search        CLOSED                              2  -

``OPEN (probe due)`` is an OPEN breaker whose cooldown has passed: its next
call is let through as the probe.  ``HALF_OPEN (probe in flight)``: a probe
is running somewhere in the fleet and every other call is rejected;
``HALF_OPEN (probe due)``: no probe is running (its prober released it, or
its lease ran out), so the next call probes.  Names are printed with control
characters escaped, so a name cannot move the cursor or recolour the
terminal.  ``--json`` prints the same records as a JSON list.

Exit status 0 when the store was read (even with no breakers in it), 2 when
it could not be (a malformed URL, an unreachable or refusing server), with a
one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import unicodedata
from collections.abc import Sequence
from typing import IO, Any

from .breaker import CircuitState
from .errors import ConfigError
from .storage.shared import BreakerStatus

__all__ = ["ENV_URL", "format_json", "format_table", "run_cli", "status_label"]

#: The environment variable ``--redis`` defaults to.
ENV_URL = "SMOOTHAPI_REDIS_URL"

_NAME_COLUMN = 60  # display columns; a longer name is cut with an ellipsis (JSON keeps it)
_HEADERS = ("NAME", "STATE", "FAILURES", "OPEN FOR")


def status_label(breaker: BreakerStatus) -> str:
    """The state as the table shows it: ``OPEN``, ``OPEN (probe due)``, ``HALF_OPEN (...)``."""
    if breaker.probe_in_flight:
        return f"{breaker.state.value} (probe in flight)"
    if breaker.probe_due:
        return f"{breaker.state.value} (probe due)"
    return breaker.state.value


def format_table(breakers: Sequence[BreakerStatus], *, where: str) -> str:
    """The breakers as an aligned table under a line naming ``where`` they were read."""
    if not breakers:
        return f"No breakers are stored {where}."
    count = f"{len(breakers)} breaker{'s' if len(breakers) != 1 else ''}"
    rows = [_HEADERS]
    rows += [
        (
            _display_name(b),
            status_label(b),
            str(b.failures),
            f"{_duration(b.retry_after)} more"
            if b.state is CircuitState.OPEN and not b.probe_due
            else "-",
        )
        for b in sorted(breakers, key=_by_name)
    ]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(_HEADERS))]
    lines = [f"{count} stored {where}:", ""]
    for name, state, failures, open_for in rows:
        lines.append(
            "  ".join(
                (
                    _pad(name, widths[0]),
                    _pad(state, widths[1]),
                    " " * (widths[2] - len(failures)) + failures,
                    open_for,
                )
            )
        )
    return "\n".join(lines)


def format_json(breakers: Sequence[BreakerStatus], *, ensure_ascii: bool = False) -> str:
    """The breakers as a JSON list of objects, sorted by name (``[]`` for none).

    Each object has the fields of :class:`~smoothapi.storage.shared.BreakerStatus`,
    ``state`` as its name and ``retry_after`` in seconds.
    """
    records = [_as_dict(b) for b in sorted(breakers, key=_by_name)]
    return json.dumps(records, indent=2, ensure_ascii=ensure_ascii)


def run_cli(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``smoothapi status``: returns the exit status (2 when the store cannot be read)."""
    url = args.redis or os.environ.get(ENV_URL)
    if not url:
        err.write(f"smoothapi status: error: no Redis to read: pass --redis URL or set {ENV_URL}\n")
        return 2
    try:
        from .storage.redis import RedisStore  # noqa: PLC0415 - redis-py only for this command
    except ImportError:
        err.write(
            "smoothapi status: error: reading a Redis store needs redis-py, which is not "
            "installed (pip install 'smoothapi-py[redis]')\n"
        )
        return 2
    from redis.exceptions import RedisError  # noqa: PLC0415

    options: dict[str, Any] = {"timeout": args.timeout}
    if args.prefix is not None:
        options["prefix"] = args.prefix
    try:
        store = RedisStore.from_url(url, **options)
    except ConfigError as exc:  # never echoes the URL: it may hold a password
        err.write(f"smoothapi status: error: {_one_line(exc)}\n")
        return 2
    where = f"under prefix {store.prefix!r} on {store.label}"
    try:
        breakers = store.breakers()
    except (RedisError, OSError) as exc:
        err.write(
            f"smoothapi status: error: cannot read the breakers {where}: "
            f"{type(exc).__name__}: {_one_line(exc)}\n"
        )
        return 2
    finally:
        store.close()
    if args.json:
        text = format_json(breakers)
        fallback = format_json(breakers, ensure_ascii=True)
    else:
        text = format_table(breakers, where=where)
        fallback = None
    _write(out, text + "\n", None if fallback is None else fallback + "\n")
    return 0


# -- helpers -------------------------------------------------------------------------------


def _by_name(breaker: BreakerStatus) -> tuple[bool, str, str]:
    return (breaker.name is None, breaker.name or "", breaker.key)


def _as_dict(breaker: BreakerStatus) -> dict[str, object]:
    return {
        "name": breaker.name,
        "key": breaker.key,
        "state": breaker.state.value,
        "failures": breaker.failures,
        "retry_after": round(breaker.retry_after, 3),  # the store keeps milliseconds
        "probe_due": breaker.probe_due,
        "probe_in_flight": breaker.probe_in_flight,
    }


def _display_name(breaker: BreakerStatus) -> str:
    if breaker.name is None:
        return f"(no name) {breaker.key}"
    if not breaker.name:
        return "(empty name)"
    text = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in breaker.name
    )
    if _width(text) <= _NAME_COLUMN:
        return text
    cut = ""
    for ch in text:
        if _width(cut + ch) > _NAME_COLUMN - 1:
            break
        cut += ch
    return cut + "\N{HORIZONTAL ELLIPSIS}"


def _width(text: str) -> int:
    """Terminal columns: wide East Asian characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _write(out: IO[str], text: str, fallback: str | None) -> None:
    """Write ``text``; if the stream cannot encode it (an ASCII-only terminal), write
    ``fallback``, or else ``text`` with the characters it cannot encode escaped."""
    try:
        out.write(text)
    except UnicodeEncodeError:
        if fallback is None:
            encoding = getattr(out, "encoding", None) or "ascii"
            fallback = text.encode(encoding, "backslashreplace").decode(encoding)
        out.write(fallback)
