"""The ``smoothapi`` command (also ``python -m smoothapi``).

Subcommands:

* ``demo`` - run the embedded flaky-server demonstration (:mod:`smoothapi.cli.demo`).
* ``simulate`` - a fleet of clients through a scripted outage on a virtual clock
  (:mod:`smoothapi.cli.simulate`).
* ``status`` - every shared breaker kept in a Redis breaker store
  (:mod:`smoothapi.cli.status`).

The command-line apps sit on top of the library: they import its core, and nothing in
the core imports them.

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

from .. import __version__

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415 - keeps `smoothapi --help` light

    # sys.stdout read now, not at import: it may have been replaced (pytest, a caller).
    return run_demo(out=sys.stdout, color=False if args.no_color else None)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import run_cli  # noqa: PLC0415 - keeps `smoothapi --help` light

    return run_cli(args, out=sys.stdout, err=sys.stderr)


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import run_cli  # noqa: PLC0415 - keeps `smoothapi --help` light

    return run_cli(args, out=sys.stdout, err=sys.stderr)


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
    _add_simulate(commands)
    _add_status(commands)
    return parser


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="list the shared breakers kept in a Redis store: state, failures, time left open",
        description=(
            "Print every circuit breaker kept in a Redis (or Valkey) breaker store - the "
            "state shared by a fleet through RedisStore - with its state, its failure count "
            "and how long it stays open, measured on the Redis server's clock. Reads only "
            "(SCAN, never KEYS); changes nothing. Exits 2 if the store cannot be read."
        ),
        epilog=(
            "OPEN (probe due): the cooldown has passed and the next call is let through as "
            "the probe. HALF_OPEN (probe in flight): one caller in the fleet is probing and "
            "the others are rejected; HALF_OPEN (probe due): nobody is, the next call probes."
        ),
    )
    status.add_argument(
        "--redis",
        metavar="URL",
        help=(
            "the store's server: redis://[[user]:password@]host:port/db, rediss://... or "
            "unix://path (default: $SMOOTHAPI_REDIS_URL, which keeps a password out of the "
            "process list)"
        ),
    )
    status.add_argument(
        "--prefix",
        help="the key prefix the breakers were stored under, RedisStore(prefix=...) "
        "(default: smoothapi, RedisStore's)",
    )
    # An operator's tool on a possibly slow link may wait longer than a breaker on the
    # hot path does (RedisStore.from_url's default is 0.1 s).
    status.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="bound on connecting and on each command (2.0)",
    )
    status.add_argument("--json", action="store_true", help="print a JSON list of breakers")
    status.set_defaults(handler=_cmd_status)


def _add_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser(
        "simulate",
        help="see what a config does to callers and to the upstream in an outage (virtual time)",
        description=(
            "Simulate N clients calling one upstream through a scripted outage, with the real "
            "smoothapi engine (retries, breaker, fallback) on a virtual clock: nothing sleeps, "
            "and the same seed gives the same figures. Prints, per phase, the upstream's load "
            "relative to healthy, the callers' success rate, latency p50/p95/p99, fallbacks "
            "served and the time to recover once the upstream is back."
        ),
        epilog=(
            "Config files are TOML (Python 3.11+) or JSON, tables as in ResilientConfig: "
            "[backoff] base_delay/max_delay/max_retries/jitter, [circuit_breaker] "
            "failure_threshold/cooldown_ms/failure_rate/window_ms/minimum_calls/slow_call_ms/"
            "half_open_calls, [rate_limit] rate/burst/max_wait/follow_server, [bulkhead] "
            "max_concurrent/max_queue/max_wait, [hedging] delay/max_hedges/percentile/"
            'min_delay, [throttle] k/window_ms, fallback = true, name = "...". Any other '
            "option of the config is settable there or with --set."
        ),
    )
    traffic = sim.add_argument_group("traffic")
    traffic.add_argument("--clients", type=int, default=1000, help="client processes (1000)")
    traffic.add_argument(
        "--rate", type=float, default=1.0, help="calls per second started by each client (1.0)"
    )
    traffic.add_argument(
        "--arrivals",
        choices=("poisson", "fixed"),
        default="poisson",
        help="Poisson arrivals (default) or a fixed interval",
    )
    traffic.add_argument(
        "--shared-breaker",
        action="store_true",
        help="all clients share one breaker (as with RedisStore) instead of one each",
    )
    upstream = sim.add_argument_group("upstream")
    upstream.add_argument(
        "--timeline",
        metavar="SPEC",
        help=(
            "phases in seconds: healthy:S, down:S, degraded:S:FAILURE_RATE, "
            "slow:S:LATENCY_MS, comma-separated; a phase may end with "
            ":tail=SHARE:tail_ms=MS (a slow tail) and :quota=N (at most N requests a "
            "second, a 429 with Retry-After and RateLimit beyond) "
            "(default: healthy, down, healthy, a third of --duration each)"
        ),
    )
    upstream.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="virtual seconds (default: the timeline's length, or 60)",
    )
    upstream.add_argument(
        "--latency", type=float, default=0.05, metavar="S", help="success latency (0.05)"
    )
    upstream.add_argument(
        "--latency-spread",
        type=float,
        default=0.5,
        metavar="F",
        help="latencies spread uniformly over latency*(1+-F) (0.5; 0 for exact)",
    )
    upstream.add_argument(
        "--failure",
        choices=("503", "timeout"),
        default="503",
        help="how a failing upstream fails: a quick 503 (default) or a timeout",
    )
    upstream.add_argument(
        "--error-latency", type=float, default=0.005, metavar="S", help="a 503's latency (0.005)"
    )
    upstream.add_argument(
        "--timeout", type=float, default=1.0, metavar="S", help="the timeout with --failure timeout"
    )
    upstream.add_argument(
        "--retry-after", type=float, metavar="S", help="send Retry-After: S with every 503"
    )
    upstream.add_argument(
        "--capacity",
        type=float,
        metavar="X",
        help="serve at most X times the healthy load per second; 503 the rest (unlimited)",
    )
    cfg = sim.add_argument_group("config (defaults: ResilientConfig's)")
    cfg.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help=(
            "a .toml or .json config, read as smoothapi.load_config reads a file (no "
            "environment variable is read); repeat to compare several"
        ),
    )
    cfg.add_argument("--base-delay", type=float, metavar="S")
    cfg.add_argument("--max-delay", type=float, metavar="S")
    cfg.add_argument("--max-retries", type=int, metavar="N")
    cfg.add_argument("--jitter", choices=("full", "equal", "decorrelated", "none"))
    cfg.add_argument("--threshold", type=int, metavar="N", help="the breaker's failure_threshold")
    cfg.add_argument("--cooldown-ms", type=float, metavar="MS")
    cfg.add_argument(
        "--failure-rate",
        type=float,
        metavar="R",
        help="open at this failed share (0 < R <= 1) over the window instead of --threshold",
    )
    cfg.add_argument("--window-ms", type=float, metavar="MS", help="the rate rule's window")
    cfg.add_argument(
        "--minimum-calls", type=int, metavar="N", help="no rate verdict on fewer calls"
    )
    cfg.add_argument(
        "--slow-call-ms",
        type=float,
        metavar="MS",
        help="a success slower than this counts as a failure for the breaker",
    )
    cfg.add_argument(
        "--half-open-calls", type=int, metavar="N", help="probes that must succeed to close"
    )
    cfg.add_argument(
        "--fallback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve a fallback when the breaker rejects or gives up (default: none)",
    )
    cfg.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any config setting, e.g. circuit_breaker.cooldown_ms=5000 (VALUE as JSON)",
    )
    run = sim.add_argument_group("run")
    run.add_argument(
        "--compare",
        action="store_true",
        help='also run "retries without breaker" and "no retries" on the same traffic',
    )
    run.add_argument("--seed", type=int, default=0, help="the random seed (0)")
    run.add_argument("--json", action="store_true", help="print machine-readable results")
    run.add_argument(
        "--plot", metavar="FILE.png", help="draw load and success over time (needs matplotlib)"
    )
    sim.set_defaults(handler=_cmd_simulate)


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
