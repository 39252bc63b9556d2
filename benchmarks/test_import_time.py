"""Import cost: smoothapi beside the peers, from `python -X importtime`, in one run.

Two figures for smoothapi, since its public names load on first use (PEP 562):

* ``import smoothapi`` - the package alone;
* ``from smoothapi import resilient_api, ResilientConfig, CircuitBreaker`` -
  what a program using the decorator loads (the core: config, breaker,
  events, engine), which is the figure to set beside a peer's import.

Each statement runs in a fresh interpreter with bytecode caching on
(PYTHONDONTWRITEBYTECODE unset; one warm-up round writes the caches first).
A sample is the sum of the cumulative microseconds that -X importtime reports
for the statement's top-level imports, standard-library modules included
(a marker line separates them from the interpreter's own start-up imports).
The rounds interleave the contenders, so a busy moment of the machine hits
them all alike; the figure is each contender's minimum over the rounds.

pybreaker imports redis when it is installed (as here, for RedisStore), so it
is measured twice: as installed, and with redis blocked, as on a machine
without redis.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest

RUNS = 9
_FULL = "from smoothapi import resilient_api, ResilientConfig, CircuitBreaker"
CONTENDERS = {
    "smoothapi (import smoothapi)": "import smoothapi",
    f"smoothapi ({_FULL})": _FULL,
    "tenacity": "import tenacity",
    "stamina": "import stamina",
    "backoff": "import backoff",
    "pybreaker": "import pybreaker",
    "pybreaker (redis blocked)": "sys.modules['redis'] = None; import pybreaker",
    "circuitbreaker": "import circuitbreaker",
}
_MARK = "@@smoothapi-import-time@@"
_LINE = re.compile(r"import time:\s*\d+\s*\|\s*(\d+)\s*\|( *)\S")


def _sample_us(statement: str) -> float | None:
    """Cumulative µs of what ``statement`` imports in a fresh interpreter (None: it failed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = f"import sys; sys.stderr.write({_MARK!r} + '\\n'); {statement}"
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0 or _MARK not in result.stderr:
        return None
    total = 0
    for line in result.stderr.split(_MARK, 1)[1].splitlines():
        match = _LINE.match(line)
        if match and len(match.group(2)) == 1:  # a top-level import of the statement
            total += int(match.group(1))
    return float(total)


def measure(runs: int = RUNS) -> dict[str, float]:
    """Each contender's minimum over ``runs`` interleaved rounds, in µs."""
    samples: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for round_ in range(runs + 1):
        for name, statement in CONTENDERS.items():
            us = _sample_us(statement)
            if us is not None and round_:  # round 0 writes the bytecode caches
                samples[name].append(us)
    return {name: min(values) for name, values in samples.items() if values}


@pytest.mark.benchmark(group="import-time")
def test_import_time(benchmark: Any) -> None:
    """Minimum cumulative import time per contender, in µs (`extra_info["paired"]`)."""
    figures: dict[str, float] = {}

    def run() -> None:
        figures.update(measure())

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["paired"] = figures
    for name, us in sorted(figures.items(), key=lambda kv: kv[1]):
        print(f"\n{name}: {us / 1000:.1f} ms")
    assert "smoothapi (import smoothapi)" in figures
    assert f"smoothapi ({_FULL})" in figures
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, smoothapi; print(sorted(m for m in ('requests', 'httpx', 'redis', "
            "'opentelemetry', 'prometheus_client') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "[]", f"import smoothapi must import no client or backend: {loaded}"


if __name__ == "__main__":  # python benchmarks/test_import_time.py: the table alone
    for name, us in sorted(measure().items(), key=lambda kv: kv[1]):
        print(f"{us / 1000:6.1f} ms  {name}")
