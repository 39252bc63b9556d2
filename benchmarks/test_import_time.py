"""Import cost: `import smoothapi` beside the peers, from `python -X importtime`.

Each import runs in a fresh interpreter, several times, with bytecode caching
on (PYTHONDONTWRITEBYTECODE unset, one warm-up run first); the figure is the
median cumulative microseconds that -X importtime reports for the top-level
package, which includes the standard-library modules it pulls in.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from typing import Any

import pytest

RUNS = 9
MODULES = ["smoothapi", "tenacity", "stamina", "backoff", "pybreaker", "circuitbreaker"]


def _cumulative_us(module: str) -> float | None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    samples = []
    for run in range(RUNS + 1):
        result = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            return None
        match = re.search(rf"\|\s*(\d+)\s*\|\s*{re.escape(module)}\s*$", result.stderr, re.M)
        if match and run:  # run 0 writes the bytecode caches
            samples.append(float(match.group(1)))
    return statistics.median(samples) if samples else None


@pytest.mark.benchmark(group="import-time")
def test_import_time(benchmark: Any) -> None:
    """Median cumulative import time per package, in µs (`extra_info["paired"]`)."""
    figures: dict[str, float] = {}

    def run() -> None:
        for module in MODULES:
            us = _cumulative_us(module)
            if us is not None:
                figures[module] = us

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["paired"] = figures
    for module, us in figures.items():
        print(f"\nimport {module}: {us / 1000:.1f} ms")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, smoothapi; print('requests' in sys.modules, 'httpx' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert loaded == ["False", "False"], "import smoothapi must import neither requests nor httpx"
