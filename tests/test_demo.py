"""``python -m smoothapi demo`` runs end to end and verifies itself.

The demo drives a real local server through healthy, blip, outage and
recovery phases with requests, httpx.Client and httpx.AsyncClient; it exits
non-zero when what it observes contradicts the contract.  These tests run it
as a user would (a subprocess) and in-process.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest

from smoothapi.__main__ import main
from smoothapi.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent

PHASES = (
    "phase 1: healthy",
    "phase 2: transient blip",
    "phase 3: outage",
    "phase 4: recovery",
)
CLIENTS = {
    "requests": ("requests (sync)",),
    "httpx": ("httpx.Client (sync)", "httpx.AsyncClient (async)"),
}

needs_a_client = pytest.mark.skipif(
    all(importlib.util.find_spec(name) is None for name in CLIENTS),
    reason="the demo needs requests or httpx",
)


def _expected_clients() -> list[str]:
    return [
        label
        for module, labels in CLIENTS.items()
        if importlib.util.find_spec(module) is not None
        for label in labels
    ]


def _assert_demo_output(output: str) -> None:
    for heading in PHASES:
        assert heading in output, f"missing phase heading {heading!r}"
    assert "CLOSED -> OPEN" in output
    assert "OPEN -> HALF_OPEN" in output
    assert "HALF_OPEN -> CLOSED" in output
    assert "retry in " in output
    assert "fallback served: {'status': 'degraded'}" in output
    assert "CHECK FAILED" not in output
    summaries = [line for line in output.splitlines() if line.startswith("summary:")]
    for label in _expected_clients():
        assert any(line.startswith(f"summary: {label}:") for line in summaries), label
    assert any(line.startswith("summary: total:") for line in summaries)
    assert any("checks passed" in line for line in summaries)
    assert "\x1b[" not in output, "no ANSI colors when the output is not a TTY"


@needs_a_client
def test_demo_command_exits_0_and_prints_the_timeline() -> None:
    """`python -m smoothapi demo --no-color` succeeds and shows every phase, both transitions
    and the summary lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "smoothapi", "demo", "--no-color"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    _assert_demo_output(proc.stdout)


@needs_a_client
def test_run_demo_in_process_returns_0() -> None:
    """run_demo() writes to the given stream, without colors for a non-TTY, and returns 0."""
    out = io.StringIO()
    assert run_demo(out=out) == 0, out.getvalue()
    _assert_demo_output(out.getvalue())


def test_cli_needs_a_subcommand_and_documents_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """`smoothapi` with no subcommand is a usage error; `demo --help` documents --no-color."""
    with pytest.raises(SystemExit) as missing:
        main([])
    assert missing.value.code == 2
    with pytest.raises(SystemExit) as helped:
        main(["demo", "--help"])
    assert helped.value.code == 0
    assert "--no-color" in capsys.readouterr().out
