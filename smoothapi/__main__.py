"""The ``smoothapi`` command (also ``python -m smoothapi``).

Subcommands:

* ``demo`` - run the embedded flaky-server demonstration (:mod:`smoothapi.demo`).

Each subcommand is a ``_cmd_*`` function registered in :func:`_build_parser`
with ``set_defaults(handler=...)``; it takes the parsed arguments and returns
the exit status.  Handlers import what they need lazily, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable

from . import __version__

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415 - keeps `smoothapi --help` light

    # sys.stdout read now, not at import: it may have been replaced (pytest, a caller).
    return run_demo(out=sys.stdout, color=False if args.no_color else None)


def _prog() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m smoothapi" if argv0 in {"__main__.py", "-m", ""} else "smoothapi"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description=(
            "smoothapi: retries with exponential backoff and full jitter, a circuit breaker "
            "and fallbacks for requests, httpx and plain functions."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="watch retries, the breaker and the fallback against an embedded flaky server",
        description=(
            "Start a local flaky HTTP server and drive it through four phases - healthy, a "
            "transient blip, an outage, recovery - with @resilient_api over requests, "
            "httpx.Client and httpx.AsyncClient, then with ResilientAdapter, "
            "ResilientTransport and AsyncResilientTransport, printing a timeline and a "
            "summary. Exits 1 "
            "if what happens contradicts smoothapi's contract. Needs no network access; "
            "clients that are not installed are skipped."
        ),
    )
    demo.add_argument("--no-color", action="store_true", help="never use ANSI colors")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`smoothapi demo | head`): stop quietly, without a
        # second error when the interpreter flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
