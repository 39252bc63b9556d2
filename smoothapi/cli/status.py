"""``python -m smoothapi status``: every breaker in a Redis breaker store, seen from outside.

For the engineer on call: which shared breakers are open right now, how many
failures each has counted, and for how long they stay open - read from the
store (:meth:`RedisStore.breakers() <smoothapi.RedisStore.breakers>`), since
the memory of the processes that use them is out of reach.  Reading changes
nothing.

The table lists one breaker per line, sorted by name::

    NAME      STATE                        FAILURES  OPEN FOR   WINDOW         REASON
    orders    CLOSED                             12  -          12/212 failed  -
    payments  OPEN                                5  9.8s more  -              consecutive failures
    search    HALF_OPEN (2 probes in flight)      3  -          -              probe failed

``WINDOW`` is a failure-rate breaker's sliding window now, fleet-wide: the
failed attempts (slow calls included, and how many were slow) of those that
ended in it; ``-`` for a breaker of the consecutive rule (or one written by a
smoothapi before the trip rules).  ``REASON`` is why it last opened (``-`` if
it never did), as the StateChanged events word it.

``OPEN (probe due)`` is an OPEN breaker whose cooldown has passed: its next
call is let through as the probe.  ``HALF_OPEN (probe in flight)``: a probe
is running somewhere in the fleet and every other call is rejected;
``HALF_OPEN (probe due)``: no probe is running (its prober released it, or
its lease ran out), so the next call probes.  With ``half_open_calls`` > 1,
``HALF_OPEN (2 probes in flight)``, and ``..., probe due`` while a permit is
still free.  Names are printed with control
characters escaped, so a name cannot move the cursor or recolour the
terminal.  ``--json`` prints the same records as a JSON list.

A key shaped like a breaker's whose hash holds something no script writes (a
state such as ``AJAR``, a count that is not a number) does not stop the
listing: the table shows it as ``MALFORMED`` and stderr says what is wrong
with it, one line each (``--json`` leaves it out of the list and reports it
on stderr the same way).

A Redis Cluster is recognised by itself (``INFO cluster``): the URL names any
node, and every primary is read.

Exit status 0 when the store was read (even with no breakers in it), 1 when
it was read but held malformed entries, 2 when it could not be read (a
malformed URL, an unreachable or refusing server), with a one-line message
on stderr.  No message quotes the URL's user name or password (anything
between the scheme's ``:`` and the last ``@``, with or without ``//``).
"""

from __future__ import annotations

import argparse
import json
import os
import unicodedata
from collections.abc import Sequence
from typing import IO, Any

from ..breaker import CircuitState
from ..errors import ConfigError
from ..storage.protocol import BreakerStatus, MalformedBreaker

__all__ = ["ENV_URL", "format_json", "format_table", "run_cli", "status_label"]

#: The environment variable ``--redis`` defaults to.
ENV_URL = "SMOOTHAPI_REDIS_URL"

_NAME_COLUMN = 60  # display columns; a longer name is cut with an ellipsis (JSON keeps it)
_HEADERS = ("NAME", "STATE", "FAILURES", "OPEN FOR", "WINDOW", "REASON")


def status_label(breaker: BreakerStatus) -> str:
    """The state as the table shows it: ``OPEN``, ``OPEN (probe due)``, ``HALF_OPEN (...)``."""
    if breaker.probe_in_flight:
        probes = breaker.probes
        flight = "probe in flight" if probes <= 1 else f"{probes} probes in flight"
        due = ", probe due" if breaker.probe_due else ""
        return f"{breaker.state.value} ({flight}{due})"
    if breaker.probe_due:
        return f"{breaker.state.value} (probe due)"
    return breaker.state.value


def format_table(
    breakers: Sequence[BreakerStatus],
    *,
    where: str,
    malformed: Sequence[MalformedBreaker] = (),
) -> str:
    """The breakers as an aligned table under a line naming ``where`` they were read;
    ``malformed`` entries are listed after them as ``MALFORMED``."""
    if not breakers and not malformed:
        return f"No breakers are stored {where}."
    count = f"{len(breakers)} breaker{'s' if len(breakers) != 1 else ''}"
    if malformed:
        count += f" and {len(malformed)} malformed entr{'ies' if len(malformed) != 1 else 'y'}"
    rows = [_HEADERS]
    rows += [
        (
            _display_name(b),
            status_label(b),
            str(b.failures),
            f"{_duration(b.retry_after)} more"
            if b.state is CircuitState.OPEN and not b.probe_due
            else "-",
            _window_text(b),
            _one_line_text(b.reason) or "-",
        )
        for b in sorted(breakers, key=_by_name)
    ]
    rows += [(_malformed_name(m), "MALFORMED", "-", "-", "-", "-") for m in malformed]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(_HEADERS))]
    lines = [f"{count} stored {where}:", ""]
    for name, state, failures, open_for, window, reason in rows:
        lines.append(
            "  ".join(
                (
                    _pad(name, widths[0]),
                    _pad(state, widths[1]),
                    " " * (widths[2] - len(failures)) + failures,
                    _pad(open_for, widths[3]),
                    _pad(window, widths[4]),
                    reason,
                )
            ).rstrip()
        )
    return "\n".join(lines)


def _window_text(breaker: BreakerStatus) -> str:
    """``12/212 failed`` (and ``, 3 slow``): a rate breaker's window; ``-`` for none."""
    window = breaker.window
    if window is None:
        return "-"
    text = f"{window.failures}/{window.calls} failed"
    return f"{text}, {window.slow} slow" if window.slow else text


def format_json(breakers: Sequence[BreakerStatus], *, ensure_ascii: bool = False) -> str:
    """The breakers as a JSON list of objects, sorted by name (``[]`` for none).

    Each object has the fields of :class:`~smoothapi.storage.protocol.BreakerStatus`,
    ``state`` as its name and ``retry_after`` in seconds.
    """
    records = [_as_dict(b) for b in sorted(breakers, key=_by_name)]
    return json.dumps(records, indent=2, ensure_ascii=ensure_ascii)


def run_cli(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``smoothapi status``: returns the exit status (1: malformed entries, 2: unreadable)."""
    url = args.redis or os.environ.get(ENV_URL)
    if not url:
        err.write(f"smoothapi status: error: no Redis to read: pass --redis URL or set {ENV_URL}\n")
        return 2
    try:
        from ..storage.redis import RedisStore, redact  # noqa: PLC0415 - redis-py only here
    except ImportError:
        err.write(
            "smoothapi status: error: reading a Redis store needs redis-py, which is not "
            "installed (the 'redis' extra: pip install redis)\n"
        )
        return 2

    options: dict[str, Any] = {"timeout": args.timeout}
    if args.prefix is not None:
        options["prefix"] = args.prefix
    try:
        store = RedisStore.from_url(url, **options)
    except ConfigError as exc:  # never echoes the URL's credentials: see from_url
        err.write(f"smoothapi status: error: {redact(_one_line(exc), url)}\n")
        return 2
    where = f"under prefix {store.prefix!r} on {store.label}"
    try:
        if _in_cluster(store):
            store.close()
            store = RedisStore.from_url(url, cluster=True, **options)
            where = f"under prefix {store.prefix!r} on {store.label} (every primary)"
        survey = store.survey()
    except Exception as exc:
        # The whole line: the store's label names a unix socket by its path.
        line = f"cannot read the breakers {where}: {type(exc).__name__}: {_one_line(exc)}"
        err.write(f"smoothapi status: error: {redact(line, url)}\n")
        return 2
    finally:
        store.close()
    breakers, malformed = survey
    if args.json:
        text = format_json(breakers)
        fallback = format_json(breakers, ensure_ascii=True)
    else:
        text = format_table(breakers, where=where, malformed=malformed)
        fallback = None
    _write(out, text + "\n", None if fallback is None else fallback + "\n")
    for entry in malformed:
        line = (
            f"smoothapi status: warning: {_malformed_name(entry)} does not hold a breaker's "
            f"state ({_one_line_text(entry.problem)}); the other breakers are listed\n"
        )
        _write(err, line, line.encode("ascii", "backslashreplace").decode("ascii"))
    return 1 if malformed else 0


def _in_cluster(store: Any) -> bool:
    """Whether the server behind a (non-cluster) store is a Redis Cluster node."""
    from redis.exceptions import ResponseError  # noqa: PLC0415 - redis-py only here

    try:
        info = store.client.info("cluster")
    except ResponseError:  # a server or proxy without INFO cluster: not a cluster
        return False
    return str(info.get("cluster_enabled", "0")) == "1"


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
        "probes": breaker.probes,
        "reason": breaker.reason,
        "window": None if breaker.window is None else breaker.window._asdict(),
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


def _one_line_text(text: str) -> str:
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _malformed_name(entry: MalformedBreaker) -> str:
    if entry.name is None:
        return f"(no name) {entry.key}"
    return f"{_one_line_text(entry.name)[:_NAME_COLUMN]} ({entry.key})"


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
